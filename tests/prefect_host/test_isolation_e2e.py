"""Issue 10 end to end on a real booted Debian 13 host of this module's own: flow code reaches neither
the server, nor its secrets, nor the cloud's metadata service.

A small flow project written here is deployed and run by the host's worker; from inside that run it
tries to signal the server and Caddy, to read the server's database (directly and through
/proc/<server>/root), every env file, Caddy's CA keys, and to GET the metadata service's user data,
and returns (into the S3 bucket) and logs what happened. The metadata service is a stand-in the test
binds on the guest at 169.254.169.254 and fd00:ec2::254 (port 8080: Caddy holds port 80 of every
address) as root; root on the guest reaches it (the positive control), the server's and Caddy's users
do not, except on port 53 (DNS). Internal TLS, so Caddy and its CA are there. Then a reboot: the rules
are back before any flow can run; and with the rules flushed, a bootstrap fails, naming what is missing.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from e2e_support import DEPLOY, Stack, caddy_apt_repo, completed_run, host_outputs, internal_tls, s3_outputs
from prefect_host.services import metadata_guard as guard

pytestmark = pytest.mark.e2e

PROFILE = "prefect-host-isolation-e2e"
BUCKET = "prefect-host-isolation-e2e"
WORKER = "prefect-worker@1.service"
# What the stand-in metadata service hands out, as a cloud's hands out the user data with the key.
USER_DATA = "user-data: ssh host private key stand-in 5f1c"
# Port 8080, not a cloud's 80: Caddy listens on port 80 of every address (a cloud's metadata address
# is not on the VM), and the guard rejects every port but DNS's.
METADATA_URLS = ("http://169.254.169.254:8080/latest/user-data", "http://[fd00:ec2::254]:8080/latest/user-data")
DNS_PORT_URL = "http://169.254.169.254:53/latest/user-data"
ENTRYPOINT = "isolation_probe.py:probe_isolation"
PROBE = '''\
"""Tries, from inside a flow run on the host's worker, what flow code must not be able to do."""

from __future__ import annotations

import json
import os
import pwd
import urllib.request

from prefect import flow, get_run_logger


def attempt(action) -> str:
    try:
        return f"REACHED: {action()}"
    except Exception as exc:  # every way of failing counts as blocked; the message says which
        return f"blocked: {type(exc).__name__}: {exc}"


def read(path: str) -> str:
    with open(path, "rb") as handle:
        return f"read {len(handle.read(4096))} bytes"


def may_signal(pid: int) -> str:
    os.kill(pid, 0)  # sends nothing: the kernel only checks the permission to signal
    return f"may signal {pid}"


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read(300).decode(errors="replace")


@flow(persist_result=True)
def probe_isolation(pids: dict[str, int], paths: list[str], urls: list[str]) -> dict[str, str]:
    outcomes = {"user": pwd.getpwuid(os.getuid()).pw_name}
    for name, pid in pids.items():
        outcomes[f"signal {name}"] = attempt(lambda pid=pid: may_signal(pid))
    for path in paths:
        outcomes[f"read {path}"] = attempt(lambda path=path: read(path))
    for url in urls:
        outcomes[f"GET {url}"] = attempt(lambda url=url: fetch(url))
    get_run_logger().info("isolation outcomes: %s", json.dumps(outcomes, sort_keys=True))
    return outcomes
'''


class IsolationStack(Stack):
    @property
    def ca_file(self) -> Path:
        return self.laptop_home / f"{PROFILE}-ca.pem"

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        verify = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.request(method, f"{self.api_url}{path}", auth=self.auth, verify=verify, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def stack(module_host, module_package_index, module_s3_server, tmp_path_factory):
    outputs = host_outputs(
        module_host,
        **internal_tls(module_host.address),
        **s3_outputs(module_s3_server, BUCKET, user="prefect-host-isolation-e2e"),
    )
    with caddy_apt_repo(module_host) as apt:
        result = IsolationStack.create(
            module_host,
            tmp_path_factory.mktemp("isolation-e2e"),
            profile=PROFILE,
            outputs=outputs,
            bootstrap_args=["--find-links", module_package_index.url, "--apt-source", apt.source_line],
            s3=module_s3_server,
            extra_secrets=(USER_DATA,),
        )
        result.project.mkdir()
        (result.project / "isolation_probe.py").write_text(PROBE)
        yield result


@pytest.fixture(scope="module")
def metadata_service(stack) -> list[str]:
    """The stand-in metadata service on the guest's loopback (a cloud's is one hop away), run by
    root as a transient unit; the URLs it answers (IPv6 too when the guest has it)."""
    urls = []
    for url, address in zip(METADATA_URLS, ("169.254.169.254/32", "fd00:ec2::254/128"), strict=True):
        # The guest has no `ip`; its network namespace is this machine's to configure (and outlives reboots).
        added = subprocess.run(["ip", "-n", stack.host.netns, "addr", "add", address, "dev", "lo"], check=False)
        if added.returncode == 0:
            urls.append(url)
    start_stand_in(stack, urls)
    return urls


def start_stand_in(stack: Stack, urls: list[str]) -> None:
    stack.guest(f"mkdir -p /srv/metadata/latest && printf '%s' '{USER_DATA}' > /srv/metadata/latest/user-data")
    # And port 53 (where GCP's metadata server answers DNS), which stays open.
    served = [*urls, DNS_PORT_URL]
    for n, url in enumerate(served):
        address = urlsplit(url)
        stack.guest(
            f"systemd-run --quiet --collect --unit=stand-in-metadata-{n} --property=WorkingDirectory=/srv/metadata "
            f"python3 -m http.server {address.port} --bind {address.hostname}"
        )
    for url in served:  # the positive control: root on the host gets the user data
        assert stack.guest(f"curl -sS --retry 20 --retry-connrefused --retry-delay 1 -m 5 '{url}'") == USER_DATA


def as_ids(user: str) -> list[str]:
    """setpriv's options to be `user` (its uid and group, nothing else)."""
    return [f"--reuid={user}", f"--regid={user}", "--clear-groups"]


def as_user(stack: Stack, user: str, url: str) -> subprocess.CompletedProcess:
    """curl as `user` on the guest."""
    return stack.host.guest_exec(["setpriv", *as_ids(user), "curl", "-sS", "-m", "5", url], check=False)


# --- the tests, in order ------------------------------------------------------------------------


def test_bootstrap_converges_the_host(stack, record_property):
    stack.measured_bootstrap(
        record_property, "fresh_bootstrap_isolation_seconds", "fresh bootstrap, internal TLS, a worker", "--activate"
    )


def test_workers_are_a_user_of_their_own(stack):
    pid = stack.main_pid(WORKER)
    assert stack.guest(f"ps -o user= -p {pid}").strip() == "prefect-flow"
    assert stack.guest(f"ps -o user= -p {stack.main_pid('prefect-server.service')}").strip() == "prefect"
    assert stack.guest("id -nG prefect-flow").split() == ["prefect-flow"]  # in no group of the server's
    assert stack.guest("stat -c '%U %a' /var/lib/prefect-worker /var/lib/prefect").splitlines() == [
        "prefect-flow 750",
        "prefect 750",
    ]
    # Its uid alone, outside any sandbox, reads none of the server's, the env files or Caddy's CA key;
    # the server's uid (what workers ran as before) reads the database.
    ca_key = stack.guest("find /var/lib/caddy -name '*.key' | head -n 1").strip()
    for path in ("/var/lib/prefect/prefect.db", "/etc/prefect-host/worker.env", ca_key):
        denied = stack.host.guest_exec(["setpriv", *as_ids("prefect-flow"), "head", "-c", "1", path], check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (path, denied)
    allowed = ["setpriv", *as_ids("prefect"), "head", "-c", "1", "/var/lib/prefect/prefect.db"]
    assert stack.host.guest_exec(allowed, check=False).returncode == 0


def test_root_reaches_the_metadata_service_the_servers_and_caddys_users_do_not(stack, metadata_service):
    for url in metadata_service:
        for user in ("prefect", "caddy", "prefect-flow"):
            denied = as_user(stack, user, url)
            assert denied.returncode != 0 and USER_DATA not in denied.stdout, (user, url, denied)
        assert stack.guest(f"curl -sS -m 5 '{url}'") == USER_DATA
    # Port 53 stays open to them (on GCP the metadata server is the VM's DNS server).
    assert as_user(stack, "prefect-flow", DNS_PORT_URL).stdout == USER_DATA


def test_a_flow_run_reaches_neither_the_server_nor_its_secrets_nor_the_metadata_service(stack, metadata_service):
    server_pid, caddy_pid = stack.main_pid("prefect-server.service"), stack.main_pid("caddy.service")
    database = "/var/lib/prefect/prefect.db"
    assert stack.guest(f"test -s {database} && echo present").strip() == "present"
    env_files = stack.guest("ls -d /etc/prefect-host/*").split()
    ca_keys = stack.guest("find /var/lib/caddy -name '*.key'").split()
    assert "/etc/prefect-host/server.env" in env_files and ca_keys, (env_files, ca_keys)
    paths = [
        database,
        f"/proc/{server_pid}/root{database}",  # the server's own view of its files
        f"/proc/{server_pid}/environ",
        *env_files,
        *ca_keys,
        f"/proc/{caddy_pid}/root{ca_keys[0]}",
    ]
    run = stack.run(
        [
            sys.executable,
            str(DEPLOY),
            ENTRYPOINT,
            "--param",
            "pids=" + json.dumps({"the server": server_pid, "Caddy": caddy_pid}),
            "--param",
            "paths=" + json.dumps(paths),
            "--param",
            "urls=" + json.dumps(metadata_service),
            "--run-now",
            "--timeout",
            "240",
        ],
        cwd=stack.project,
        timeout=400,
    )
    assert run.returncode == 0, run.printed
    completed = completed_run(run.stdout)
    outcomes = result_in_the_bucket(stack, completed.result)  # the flow's ordinary work: its result in S3
    print("\n" + json.dumps(outcomes, indent=2))
    assert outcomes.pop("user") == "prefect-flow"
    expected = {f"signal {name}" for name in ("the server", "Caddy")} | {f"read {p}" for p in paths}
    assert set(outcomes) == expected | {f"GET {url}" for url in metadata_service}
    reached = {check: outcome for check, outcome in outcomes.items() if not outcome.startswith("blocked: ")}
    assert reached == {}
    assert USER_DATA not in json.dumps(outcomes)
    # ... and its log lines reached the server, through the worker, like any run's.
    [flow_run] = stack.api("POST", "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [completed.name]}}}).json()
    stack.assert_the_hosts_worker_ran(flow_run)
    logs = stack.api("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}}).json()
    assert any(log["message"].startswith("isolation outcomes: ") for log in logs)


def result_in_the_bucket(stack: Stack, where: str) -> dict[str, str]:
    from prefect.serializers import PickleSerializer

    match = re.fullmatch(rf"result at s3://{BUCKET}/(results/\w+)", where)
    assert match, where
    body = stack.s3.client("s3").get_object(Bucket=BUCKET, Key=match.group(1))["Body"].read()
    return PickleSerializer().loads(body)


def test_the_units_stay_as_well_rated_by_systemd_analyze_security(stack, record_property):
    scores = {}
    for unit in ("prefect-server.service", WORKER, "caddy.service"):
        analysis = stack.guest(f"systemd-analyze security --no-pager {unit}")
        scores[unit] = float(re.search(rf"Overall exposure level for {re.escape(unit)}: ([\d.]+)", analysis).group(1))
        record_property(f"exposure {unit}", scores[unit])
    print(f"\nsystemd-analyze security: {scores}")
    assert scores["prefect-server.service"] <= 1.2 and scores[WORKER] <= 1.3 and scores["caddy.service"] <= 1.6


def test_after_a_reboot_the_rules_are_back_before_any_flow_can_run(stack, metadata_service):
    stack.host.reboot()
    stack.guest(f"for i in $(seq 90); do systemctl is-active -q {WORKER} && exit 0; sleep 1; done; exit 1")
    # Each unit applies the rules as root before it starts (the worker does not start without them).
    rules = stack.guest("iptables -S OUTPUT; iptables -S PREFECT-HOST-METADATA; ip6tables -S OUTPUT")
    assert "-A OUTPUT -d 169.254.169.254/32 -j PREFECT-HOST-METADATA" in rules, rules
    assert "-A OUTPUT -d fd00:ec2::254/128 -j PREFECT-HOST-METADATA" in rules, rules
    assert rules.count("-j REJECT --reject-with icmp-admin-prohibited") == 3, rules
    start_stand_in(stack, metadata_service)  # its transient units did not survive the reboot
    for url in metadata_service:
        assert as_user(stack, "prefect-flow", url).returncode != 0
        assert stack.guest(f"curl -sS -m 5 '{url}'") == USER_DATA


def test_a_bootstrap_fails_while_the_guard_is_not_in_force(stack):
    """Nothing restarts on a converged host, so nothing puts flushed rules back: the bootstrap's check
    catches it, names the users, and its fix (the guard's script, as root) puts them back."""
    uids = {user: stack.guest(f"id -u {user}").strip() for user in guard.GUARDED_USERS}
    stack.guest(f"iptables -F {guard.CHAIN}")
    try:
        failed = stack.bootstrap()
        assert failed.returncode != 0, failed.printed
        assert failed.changed == [] and failed.step("metadata service guard in force (iptables)") == "failed"
        unguarded = ", ".join(f"{user} (uid {uid})" for user, uid in uids.items())
        assert f"IPv4: no REJECT rule in {guard.CHAIN} for {unguarded}" in failed.stderr, failed.printed
        assert "IPv6" not in failed.stderr and f"sudo {guard.PATH}" in failed.stderr  # only what is missing
    finally:
        stack.guest(guard.PATH)
    assert stack.guest(f"iptables -S {guard.CHAIN}").count("-j REJECT") == len(uids)


def test_a_rerun_changes_nothing(stack):
    again = stack.bootstrap()
    assert again.returncode == 0, again.printed
    assert again.changed == [], again.stdout
