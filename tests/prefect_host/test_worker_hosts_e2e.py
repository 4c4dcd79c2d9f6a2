"""Issue 13 end to end, nothing mocked: a server and two worker hosts (three local guests, this
machine routing between them), the local S3 server for code and results.

In this order: one bootstrap converges all three concurrently (the server runs no workers, each
worker host two, no Prefect server or Caddy there) -> a deployment's runs execute on the worker
hosts, never on the server -> one worker host stopped: later runs go to the other -> a wrong host key
for one worker host fails that host, naming it, while the server and the other converge -> a re-run
changes nothing on any host -> a work queue pins a deployment to one worker host (the other polls
the default queue only) -> a worker host removed from the stack: its workers leave the pool.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import httpx
import pytest

from e2e_support import (
    Stack,
    caddy_apt_repo,
    changed_steps,
    completed_run,
    host_outputs,
    internal_tls,
    prefect_call,
    s3_outputs,
)
from prefect_host.local import LocalHost, build_image
from prefect_host.local.postgres_guest import guest_routing

pytestmark = pytest.mark.e2e

PROFILE = "prefect-host-worker-hosts-e2e"
AUTH = "admin:Worker-Hosts-E2e-secret-5b2e"
BUCKET = "prefect-host-worker-hosts-e2e"
NAMES = ("w-1", "w-2")


@pytest.fixture(scope="module")
def worker_guests(module_host: LocalHost) -> Iterator[list[LocalHost]]:
    """Two more guests the server's operator key may log in to (one key for the stack's VMs, as on a cloud)."""
    operator = module_host.identity_file.with_suffix(".pub").read_text().strip()
    with guest_routing(), LocalHost.create(build_image()) as first, LocalHost.create(build_image()) as second:
        for guest in (first, second):
            guest.boot()
            guest.guest_exec(["sh", "-c", f"echo '{operator}' >> /home/admin/.ssh/authorized_keys"])
        yield [first, second]


def worker_hosts_output(guests: list[LocalHost], **keys: str) -> list[dict[str, str]]:
    return [
        {"name": name, "publicIp": guest.address, "hostPublicKey": keys.get(name, guest.host_public_key)}
        for name, guest in zip(NAMES, guests, strict=True)
    ]


@pytest.fixture(scope="module")
def stack(module_host, module_package_index, module_s3_server, worker_guests, tmp_path_factory) -> Iterator[Stack]:
    outputs = host_outputs(
        module_host,
        prefectAuthString=AUTH,
        **internal_tls(module_host.address),
        **s3_outputs(module_s3_server, BUCKET, user=PROFILE),
    )
    outputs["workerHosts"] = worker_hosts_output(worker_guests)
    extra = tuple(
        line for guest in worker_guests for line in guest.host_private_key_path.read_text().splitlines()[1:-1]
    )
    with caddy_apt_repo(module_host) as apt:
        yield Stack.create(
            module_host,
            tmp_path_factory.mktemp("worker-hosts-e2e"),
            profile=PROFILE,
            outputs=outputs,
            bootstrap_args=["--find-links", module_package_index.url, "--apt-source", apt.source_line, "--activate"],
            s3=module_s3_server,
            extra_secrets=extra,
            with_project=True,
        )


def guest_run(guest: LocalHost, script: str) -> str:
    return guest.guest_exec(["sh", "-c", script], check=False).stdout


def ran_on(stack: Stack, guests: list[LocalHost], flow_run_id: str) -> list[str]:
    """Which running hosts' workers submitted the flow run (their journals say so): "server", "w-1", "w-2".
    Two workers may pick the same run up; the server lets one move it to PENDING and the other logs
    that it aborted the submission, so that one did not run it."""
    hosts = [
        (name, guest) for name, guest in [("server", stack.host), *zip(NAMES, guests, strict=True)] if guest.is_running
    ]
    journal = "journalctl -u 'prefect-worker@*' --no-pager -o cat"
    submitted = f"submitting flow run '{flow_run_id}'"
    aborted = f"Aborted submission of flow run '{flow_run_id}'"
    places = []
    for name, guest in hosts:
        lines = guest_run(guest, journal)
        if lines.count(submitted) > lines.count(aborted):
            places.append(name)
    return places


def api(stack: Stack) -> httpx.Client:
    ca = stack.profile_settings()["PREFECT_API_SSL_CERT_FILE"]
    return httpx.Client(verify=ssl.create_default_context(cafile=ca), auth=stack.auth, timeout=30)


def run_and_wait(stack: Stack, deployment_id: str, count: int, timeout: float = 300) -> list[dict]:
    with api(stack) as client:
        ids = []
        for _ in range(count):
            created = prefect_call(
                client, "POST", f"{stack.api_url}/deployments/{deployment_id}/create_flow_run", json={}
            )
            assert created.is_success, (created.status_code, created.text[:2000])
            ids.append(created.json()["id"])
        deadline = time.monotonic() + timeout
        while True:
            answers = [prefect_call(client, "GET", f"{stack.api_url}/flow_runs/{run_id}") for run_id in ids]
            assert all(answer.is_success for answer in answers), [(a.status_code, a.text[:300]) for a in answers]
            runs = [answer.json() for answer in answers]
            if all(run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for run in runs):
                return runs
            assert time.monotonic() < deadline, [run["state_type"] for run in runs]
            time.sleep(2)


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def test_one_bootstrap_converges_the_server_and_both_worker_hosts(stack: Stack, worker_guests) -> None:
    run = stack.bootstrap()
    assert run.returncode == 0, run.printed
    for name, guest in zip(NAMES, worker_guests, strict=True):
        assert f"worker host {name} ({guest.address}):" in run.stdout
        assert f"worker host {name}: ok, 2 worker(s)" in run.stdout
        assert guest_run(guest, "systemctl is-active prefect-worker@1 prefect-worker@2").split() == ["active"] * 2
        # No server, no Caddy there; the CA the workers verify the server with, the secrets 0600.
        assert guest_run(guest, "systemctl is-active prefect-server caddy; true").split() != ["active", "active"]
        assert "prefect-server.service" not in guest_run(guest, "ls /etc/systemd/system")
        modes = guest_run(guest, "stat -c '%a %U' /etc/prefect-host/worker.env /etc/prefect-host-server-ca.pem")
        assert modes.split("\n")[:2] == ["600 root", "644 root"]
        assert guest_run(guest, "id -u prefect; true").strip() == ""  # the server's user is not there
    assert "workers: 0 on the VM" in run.stdout
    assert stack.guest("systemctl list-units --plain --no-legend 'prefect-worker@*'").strip() == ""


def test_runs_execute_on_the_worker_hosts_never_on_the_server(stack: Stack, worker_guests, state: dict) -> None:
    deployed = stack.deploy("--run-now", "--timeout", "300")
    assert deployed.returncode == 0, deployed.printed
    with api(stack) as client:
        [deployment] = client.post(f"{stack.api_url}/deployments/filter", json={}).json()
        [first] = client.post(
            f"{stack.api_url}/flow_runs/filter",
            json={"flow_runs": {"name": {"any_": [completed_run(deployed.stdout).name]}}},
        ).json()
    state["deployment"] = deployment["id"]
    runs = [first, *run_and_wait(stack, deployment["id"], 3)]
    assert {run["state_type"] for run in runs} == {"COMPLETED"}
    places = [ran_on(stack, worker_guests, run["id"]) for run in runs]
    assert all(len(where) == 1 and where[0] in NAMES for where in places), places


def test_a_stopped_worker_host_sends_later_runs_to_the_other(stack: Stack, worker_guests, state: dict) -> None:
    worker_guests[0].stop()
    runs = run_and_wait(stack, state["deployment"], 2)
    assert {run["state_type"] for run in runs} == {"COMPLETED"}
    assert [ran_on(stack, worker_guests, run["id"]) for run in runs] == [["w-2"], ["w-2"]]
    worker_guests[0].boot()


def test_a_wrong_host_key_fails_that_host_only(stack: Stack, worker_guests) -> None:
    wrong = {**stack.outputs, "workerHosts": worker_hosts_output(worker_guests, **{"w-1": stack.host.host_public_key})}
    run = stack.bootstrap(outputs_path=stack.write_outputs(wrong, "wrong-key.json"))
    assert run.returncode == 1
    assert "worker host w-1: FAILED" in run.stdout and "host key" in run.stdout.lower(), run.printed
    assert "worker host w-2: ok, 2 worker(s)" in run.stdout
    assert "w-1" in run.stderr and "w-2" not in run.stderr.split("error:", 1)[1]


def test_a_rerun_changes_nothing_on_any_host(stack: Stack, worker_guests) -> None:
    pids = [guest_run(guest, "systemctl show -p MainPID --value prefect-worker@1") for guest in worker_guests]
    run = stack.bootstrap()
    assert run.returncode == 0, run.printed
    assert changed_steps(run.stdout) == [], run.stdout
    assert "[changed]" not in run.stdout
    assert [guest_run(g, "systemctl show -p MainPID --value prefect-worker@1") for g in worker_guests] == pids


def test_a_queue_pins_a_deployment_to_one_worker_host(stack: Stack, worker_guests) -> None:
    run = stack.bootstrap("--queue", "w-2=gpu")
    assert run.returncode == 0, run.printed
    assert "--work-queue gpu" in guest_run(worker_guests[1], "systemctl cat prefect-worker@1")
    # The other host's workers poll the pool's default queue only, so runs pinned to gpu stay on w-2.
    assert "--work-queue default" in guest_run(worker_guests[0], "systemctl cat prefect-worker@1")
    deployed = stack.deploy("--name", "on-gpu", "--queue", "gpu", "--run-now", "--timeout", "300")
    assert deployed.returncode == 0, deployed.printed
    with api(stack) as client:
        [gpu_run] = client.post(
            f"{stack.api_url}/flow_runs/filter",
            json={"flow_runs": {"name": {"any_": [completed_run(deployed.stdout).name]}}},
        ).json()
    assert ran_on(stack, worker_guests, gpu_run["id"]) == ["w-2"]


def test_a_worker_host_removed_from_the_stack_leaves_the_pool(stack: Stack, worker_guests) -> None:
    hostname = guest_run(worker_guests[0], "uname -n").strip()
    worker_guests[0].stop()  # as `pulumi destroy` of that VM would
    fewer = {**stack.outputs, "workerHosts": worker_hosts_output(worker_guests)[1:]}
    run = stack.bootstrap("--queue", "w-2=gpu", outputs_path=stack.write_outputs(fewer, "fewer.json"))
    assert run.returncode == 0, run.printed
    assert f"forget the workers of removed worker hosts ({hostname})" in run.stdout
    with api(stack) as client:
        names = [w["name"] for w in client.post(f"{stack.api_url}/work_pools/default/workers/filter", json={}).json()]
    assert not [name for name in names if name.startswith(f"{hostname}-")], names
    assert f"{guest_run(worker_guests[1], 'uname -n').strip()}-1" in names
