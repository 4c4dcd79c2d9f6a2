"""A worker host's declarations (what it gets before the server is up, then its workers: the server's
URL, its CA, the host's queue) and the fleet's threads with the SSH side stood in for: a server that
fails fails every host, one host's failure leaves the others alone, secrets stay masked."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
import time
from collections.abc import Callable

import pytest

from prefect_host.bootstrap import checks, converge, worker_hosts
from prefect_host.bootstrap.host_services import host_services
from prefect_host.bootstrap.worker_host_inputs import WorkerHostInputs
from prefect_host.console import MASK, Console
from prefect_host.errors import ConnectError, PrefectHostError
from prefect_host.host.facts import parse_facts
from prefect_host.host.model import File
from prefect_host.local.pebble_tls import make_tls_ca_and_certificate
from prefect_host.services import metadata_guard, workers
from prefect_host.services.python_env import prefect_venv
from prefect_host.tls import load_ca_certificate
from tests.prefect_host.bootstrap.bootstrap_samples import sample_inputs
from tests.prefect_host.host.host_samples import (
    END,
    HOST,
    RecordingSession,
    converged_output,
    fresh_output,
    lanes_for,
    names,
)
from tests.prefect_host.services.service_samples import env_settings, unit_directives

W1 = WorkerHostInputs("w1", "198.51.100.11", "ssh-ed25519 AAAAw1", 2, "default")
W2 = WorkerHostInputs("w2", "198.51.100.12", "ssh-ed25519 AAAAw2", 3, "gpu")
API_URL = "https://203.0.113.7/api"
AUTH = "admin:Fleet-Secret-pw-42"
INPUTS = sample_inputs(
    api_url=API_URL, ui_url="https://203.0.113.7", auth_string=AUTH, workers=0, worker_hosts=(W1, W2)
)
VENV = prefect_venv("3.9.1")


@pytest.fixture(scope="module")
def cas(tmp_path_factory):
    """Two CAs (a server's, and the one that replaced it)."""
    made = []
    for name in ("one", "two"):
        ca_path, _, _ = make_tls_ca_and_certificate(tmp_path_factory.mktemp(name), "203.0.113.7")
        made.append(load_ca_certificate(ca_path.read_text(), source=name))
    return made


# --- the declarations ------------------------------------------------------------------------------
def test_host_inputs_are_the_servers_but_for_the_address_the_key_and_the_count():
    inputs = sample_inputs(workers=0, worker_hosts=(W1, W2), identity_text="KEY", port=2222)
    on_w2 = worker_hosts.host_inputs(inputs, W2)
    assert (on_w2.host, on_w2.host_key, on_w2.workers) == (W2.address, W2.host_key, 3)
    assert dataclasses.replace(on_w2, host=inputs.host, host_key=inputs.host_key, workers=0) == inputs
    assert inputs.host == "203.0.113.7" and inputs.workers == 0  # the server's own are untouched


def test_a_worker_host_gets_the_metadata_guard_and_the_venv_first():
    guard, venv = worker_hosts.base_services(VENV)
    assert guard.name == "metadata-guard" and guard.packages == (metadata_guard.PACKAGE,)
    assert guard.files == (metadata_guard.script_file(),) and guard.units is None and guard.users == ()
    assert venv.name == "prefect-venv" and venv.venv == VENV and venv.users == (workers.flow_user(),)
    assert venv.units is None and venv.files == ()


def test_a_fresh_worker_host_gets_no_server_and_no_caddy():
    base = worker_hosts.base_services(VENV)
    services = [*base, worker_hosts.workers_on(INPUTS, W2, VENV, None)]
    lanes = lanes_for(fresh_output(*services), *services)
    assert [lane.service.name for lane in lanes] == ["metadata-guard", "prefect-venv", workers.NAME]
    everything = [name for lane in lanes for name in names(lane.steps)]
    assert everything.count("create service user prefect-flow") == 1  # declared twice, created once
    assert not [name for name in everything if "caddy" in name or "prefect-server" in name]
    assert names(lanes[2].steps) == [
        f"write {workers.ENV_FILE}",
        f"install {workers.UNIT_TEMPLATE}",
        "enable prefect-worker@{1,2,3}",
        "start prefect-worker@{1,2,3}",
    ]
    # Once the base is converged (before the server is up), only the workers are left.
    rest = lanes_for(converged_output(*base), *services)
    assert [names(lane.steps) for lane in rest[:2]] == [[], []] and names(rest[2].steps) == names(lanes[2].steps)


def test_a_worker_hosts_workers_talk_to_the_servers_public_url_without_a_ca():
    declared = worker_hosts.workers_on(INPUTS, W2, VENV, None)
    settings = env_settings(next(f.text for f in declared.files if f.path == workers.ENV_FILE))
    assert settings["PREFECT_API_URL"] == f"'{API_URL}'"
    assert "PREFECT_API_SSL_CERT_FILE" not in settings
    assert settings["PREFECT_UI_URL"] == "'https://203.0.113.7'"
    assert "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK" not in settings  # the inputs have no storage
    assert [f.path for f in declared.files] == [workers.UNIT_PATH, workers.ENV_FILE]
    assert declared.units.names == tuple(workers.unit_name(i) for i in (1, 2, 3))
    assert unit_directives(next(f.text for f in declared.files if f.path == workers.UNIT_PATH))["ExecStart"] == [
        f"{workers.PREFECT_BIN} worker start --pool default --type process --name %H-%i --work-queue gpu"
    ]


def test_a_pinned_ca_is_written_for_the_workers_and_named_in_their_env(cas):
    ca = cas[0]
    inputs = dataclasses.replace(INPUTS, storage=object(), profile_name="p")  # storage: a results block
    declared = worker_hosts.workers_on(inputs, W1, VENV, ca)
    files = {f.path: f for f in declared.files}
    assert list(files) == [workers.UNIT_PATH, workers.ENV_FILE, worker_hosts.CA_PATH]
    assert files[worker_hosts.CA_PATH] == File(worker_hosts.CA_PATH, ca.pem, mode=0o644)
    settings = env_settings(files[workers.ENV_FILE].text)
    assert settings["PREFECT_API_SSL_CERT_FILE"] == f"'{worker_hosts.CA_PATH}'"
    assert settings["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == "'s3-bucket/p-results'" == f"'{inputs.results_block}'"
    assert "--work-queue default" in unit_directives(files[workers.UNIT_PATH].text)["ExecStart"][0]
    # Readable by the flow user: not under a path the worker unit hides.
    assert not any(worker_hosts.CA_PATH.startswith(hidden.rstrip("/") + "/") for hidden in workers.HIDDEN_PATHS)


def test_a_new_server_ca_restarts_the_workers(cas):
    old, new = (worker_hosts.workers_on(INPUTS, W1, VENV, ca) for ca in cas)
    assert old.restart_digest() != new.restart_digest()
    base = worker_hosts.base_services(VENV)
    lanes = lanes_for(converged_output(*base, old), *base, new)
    assert names(lanes[2].steps) == [f"write {worker_hosts.CA_PATH}", "restart prefect-worker@{1,2}"]
    # From plain verification (acme) to a pinned CA: the env changes too.
    plain = worker_hosts.workers_on(INPUTS, W1, VENV, None)
    lanes = lanes_for(converged_output(*base, plain), *base, new)
    assert names(lanes[2].steps) == [
        f"write {workers.ENV_FILE}",
        f"write {worker_hosts.CA_PATH}",
        "restart prefect-worker@{1,2}",
    ]


def test_with_worker_hosts_the_servers_own_workers_poll_only_the_default_queue():
    def exec_start(inputs) -> str:
        unit = next(f.text for f in host_services(inputs).workers.files if f.path == workers.UNIT_PATH)
        return unit_directives(unit)["ExecStart"][0]

    assert exec_start(INPUTS).endswith("--name %H-%i --work-queue default")
    assert exec_start(sample_inputs()).endswith("--name %H-%i")  # alone, they poll every queue
    # A server without workers of its own declares no flow user.
    assert host_services(INPUTS).workers.users == ()
    assert host_services(dataclasses.replace(INPUTS, workers=1)).workers.users == (workers.flow_user(),)


def test_a_worker_host_does_not_probe_the_bucket(monkeypatch):
    """The server's run probes it once; each host would put and delete an object again."""
    probed = []
    monkeypatch.setattr(converge, "_probe_bucket", lambda storage, console: probed.append(storage))
    inputs = sample_inputs(storage=object())
    console = Console(io.StringIO(), io.StringIO())
    converge.ready_facts(RecordingSession(HOST + END), inputs, (), console, probe=False)
    assert probed == []
    converge.ready_facts(RecordingSession(HOST + END), inputs, (), console)
    assert len(probed) == 1


# --- the fleet, its SSH side stood in for ----------------------------------------------------------
class StandIns:
    """converge.ssh_session / ready_facts, the workers' wait and the guard's check, recorded per host
    (by address). A host in `broken` fails to connect with that message."""

    def __init__(self, facts_output: dict[str, str] | None = None, broken: dict[str, Exception] | None = None):
        self.facts_output = facts_output or {}
        self.broken = broken or {}
        self.sessions: dict[str, RecordingSession] = {}
        self.probes: list[bool] = []
        self.waited: dict[str, dict[str, str]] = {}
        self.guarded: list[str] = []
        self.forgotten: list[str] = []
        self._lock = threading.Lock()

    def output(self, address: str) -> str:
        hostname = {W1.address: "w1-vm", W2.address: "w2-vm"}[address]
        return self.facts_output.get(address, HOST.replace("hostname=ph-7", f"hostname={hostname}") + END)

    @contextlib.contextmanager
    def ssh_session(self, inputs, console):
        if inputs.host in self.broken:
            raise self.broken[inputs.host]
        session = RecordingSession(self.output(inputs.host))
        session.host = inputs.host
        with self._lock:
            self.sessions[inputs.host] = session
        yield session

    def ready_facts(self, session, inputs, services, console, *, probe=True):
        self.probes.append(probe)
        return parse_facts(session.facts_output)

    def wait_for_workers(self, session, client, inputs, facts, worker_set, console, *, clock_skew=0.0):
        assert clock_skew == checks.REMOTE_CLOCK_SKEW_S  # a worker host's clock is not the server's
        with self._lock:
            self.waited[inputs.host] = {unit: f"{facts.hostname}-{unit}" for unit in worker_set.units.names}

    def verify_metadata_guard(self, session, inputs, console):
        with self._lock:
            self.guarded.append(inputs.host)

    def forget_worker(self, client, inputs, name):
        with self._lock:
            self.forgotten.append(name)


@pytest.fixture
def stand_ins(monkeypatch):
    def install(**options) -> StandIns:
        fakes = StandIns(**options)
        monkeypatch.setattr(converge, "ssh_session", fakes.ssh_session)
        monkeypatch.setattr(converge, "ready_facts", fakes.ready_facts)
        monkeypatch.setattr(converge, "_wait_for_workers", fakes.wait_for_workers)
        monkeypatch.setattr(checks, "verify_metadata_guard", fakes.verify_metadata_guard)
        monkeypatch.setattr(checks, "forget_worker", fakes.forget_worker)
        return fakes

    return install


def base_done(fakes, hosts: int) -> bool:
    """`hosts` sessions have installed the base (iptables first)."""
    done = [s for s in list(fakes.sessions.values()) if "apt-get install iptables" in s.labels]
    return len(done) >= hosts


def run_fleet(
    inputs,
    *,
    ca=None,
    failure: str | None = None,
    console: Console | None = None,
    checked: bool = True,
    based: Callable[[], bool] = lambda: True,
):
    """`checked`: the server's run passed its refusals before it failed (else it stopped at one); the
    failure comes once `based()` says the hosts applied their base."""
    out = io.StringIO()
    console = console or Console(out, io.StringIO())
    fleet = worker_hosts.WorkerFleet(inputs, console)
    fleet.start()
    if failure is not None:
        if checked:
            fleet.server_checked()
            deadline = time.monotonic() + 60
            while not based() and time.monotonic() < deadline:
                time.sleep(0.05)
        fleet.server_failed(failure)
    else:
        fleet.server_ready(ca)
    return fleet.join(), out.getvalue()


def test_a_server_that_fails_fails_every_worker_host_after_its_base(stand_ins):
    fakes = stand_ins()
    results, printed = run_fleet(INPUTS, failure="Caddy did not start", based=lambda: base_done(fakes, 2))
    assert [(r.name, r.address, r.hostname) for r in results] == [
        ("w1", W1.address, "w1-vm"),
        ("w2", W2.address, "w2-vm"),
    ]
    for result in results:
        assert result.error == "not finished: the server did not come up (Caddy did not start)."
        assert result.seconds > 0
    assert fakes.probes == [False, False]  # the bucket is the server's run's to probe
    # The base went on (iptables, the venv); no worker was declared, waited for or checked.
    for session in fakes.sessions.values():
        assert "apt-get install iptables" in session.labels
        assert not any(workers.ENV_FILE in label or "prefect-worker@" in label for label in session.labels)
    assert fakes.waited == {} and fakes.guarded == []
    # Each host's steps are printed as one group, in the stack's order.
    lines = printed.splitlines()
    assert lines.index(f"worker host w1 ({W1.address}):") < lines.index(f"worker host w2 ({W2.address}):")
    assert any(line.startswith("    [changed]  install iptables (apt)") for line in lines)


def test_a_server_that_is_up_releases_every_host_to_its_workers(stand_ins, cas):
    fakes = stand_ins()
    results, printed = run_fleet(INPUTS, ca=cas[0])
    assert [r.error for r in results] == [None, None]
    for host in (W1, W2):
        labels = fakes.sessions[host.address].labels
        assert f"write {worker_hosts.CA_PATH}" in labels and f"write {workers.ENV_FILE}" in labels
        assert labels.index("apt-get install iptables") < labels.index(f"write {workers.ENV_FILE}")
        written = next(ran for ran in fakes.sessions[host.address].ran if ran.label == f"write {workers.ENV_FILE}")
        assert f"PREFECT_API_URL='{API_URL}'".encode() in written.stdin
        assert f"PREFECT_API_SSL_CERT_FILE='{worker_hosts.CA_PATH}'".encode() in written.stdin
    assert list(fakes.waited[W2.address]) == [workers.unit_name(i) for i in (1, 2, 3)]
    assert list(fakes.waited[W1.address]) == [workers.unit_name(i) for i in (1, 2)]
    assert sorted(fakes.guarded) == [W1.address, W2.address]
    assert AUTH.split(":", 1)[1] not in printed


def test_a_host_with_no_workers_is_neither_waited_for_nor_checked(stand_ins):
    fakes = stand_ins()
    inputs = dataclasses.replace(INPUTS, worker_hosts=(dataclasses.replace(W1, workers=0),))
    results, _ = run_fleet(inputs)
    assert results[0].error is None and fakes.waited == {} and fakes.guarded == []


def test_one_hosts_failure_leaves_the_others_alone(stand_ins):
    fakes = stand_ins(broken={W1.address: ConnectError("no route to 198.51.100.11")})
    results, printed = run_fleet(INPUTS)
    assert [(r.name, r.hostname, r.error) for r in results] == [
        ("w1", None, "no route to 198.51.100.11"),
        ("w2", "w2-vm", None),
    ]
    assert list(fakes.waited) == [W2.address]
    assert f"worker host w1 ({W1.address}):" in printed.splitlines()


def test_an_unexpected_exception_is_that_hosts_failure_named_by_its_type(stand_ins):
    stand_ins(broken={W2.address: KeyError("facts")})
    results, _ = run_fleet(INPUTS)
    assert results[1].error == "KeyError: 'facts'" and results[0].error is None


def test_a_hosts_error_and_output_are_masked_like_the_servers(stand_ins):
    password = AUTH.split(":", 1)[1]
    fakes = stand_ins(broken={W1.address: PrefectHostError(f"refused {AUTH} at {W1.address}")})
    console = Console(io.StringIO(), io.StringIO())
    console.add_secret(AUTH)
    results, _ = run_fleet(
        INPUTS, failure=f"the server said {password}", console=console, based=lambda: base_done(fakes, 1)
    )
    assert results[0].error == f"refused {MASK} at {W1.address}"
    assert results[1].error == f"not finished: the server did not come up (the server said {MASK})."
    assert all(password not in r.error and password not in r.output for r in results)


def test_a_refused_server_run_changes_nothing_on_the_worker_hosts(stand_ins):
    # A refused downgrade or database switch: the hosts read their facts and change nothing.
    fakes = stand_ins()
    results, _ = run_fleet(INPUTS, failure="prefectVersion 3.8.4 is older", checked=False)
    assert all(
        r.error == "not started: the server's run stopped first (prefectVersion 3.8.4 is older)." for r in results
    )
    for session in fakes.sessions.values():
        assert not any("install" in label or "write" in label for label in session.labels), session.labels


def test_workers_a_worker_host_stops_are_forgotten_on_the_server(stand_ins):
    base = worker_hosts.base_services(VENV)
    three = dataclasses.replace(W1, workers=3)
    output = converged_output(*base, worker_hosts.workers_on(INPUTS, three, VENV, None)).replace(
        "hostname=ph-7", "hostname=w1-vm"
    )
    fakes = stand_ins(facts_output={W1.address: output})
    results, _ = run_fleet(dataclasses.replace(INPUTS, worker_hosts=(dataclasses.replace(W1, workers=1),)))
    assert results[0].error is None
    stop = "systemctl disable --now --quiet prefect-worker@2.service prefect-worker@3.service"
    assert stop in [ran.script for ran in fakes.sessions[W1.address].ran]
    assert sorted(fakes.forgotten) == ["w1-vm-2", "w1-vm-3"]
