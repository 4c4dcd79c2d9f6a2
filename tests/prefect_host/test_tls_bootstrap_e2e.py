"""Issue 6 end to end: scripts/bootstrap.py with TLS on a real booted Debian 13 host of this module's
own, nothing mocked. Caddy comes from the local apt repository (the guest has no internet), S3 from
moto on the gateway, ACME certificates from Pebble on the gateway.

In this order, with every frame on the guest's veth captured meanwhile: fresh install in internal
mode (Caddy on 443/4200/80, Prefect on loopback, the CA pinned in the profile) -> a deployment
runs on the host's worker and a flow runs on the laptop, both through the profile -> a client
without the CA is refused -> a host with Caddy's own (unconstrained) CA, as an earlier release left
it, gets the constrained one with one reload and the profile pins it -> a re-run changes and
reloads nothing -> a teammate pins the CA from a
file or over SSH -> request latency through TLS vs loopback -> the switch to acme reloads Caddy
and leaves the Prefect server running -> the worker runs deployments after the switch and after a
reboot -> no request carrying the auth string crossed the veth in clear text -> no secret printed.

The laptop resolves the test domain through /etc/hosts in a mount namespace of the command's own
(`unshare --mount` + a bind mount): the real resolver path, without touching this machine's file.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import stat
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from e2e_support import (
    CADDY_FRESH_INTERNAL,
    Stack,
    acme_tls,
    basic_credentials,
    caddy_apt_repo,
    completed_run,
    files_state,
    host_outputs,
    https_request,
    internal_tls,
    laptop_env,
    s3_outputs,
)
from packet_capture import PacketCapture
from prefect_host.caddy import (
    CADDY_DATA_DIR,
    CADDY_OWN_CA_DIR,
    CADDY_OWN_CA_ROOT_PATH,
    CADDYFILE_PATH,
    INTERNAL_CA_DIR,
    INTERNAL_CA_ROOT_PATH,
)
from prefect_host.internal_ca import CONFIG_PATH, DROPIN_PATH, SCRIPT_PATH, constrained_to
from prefect_host.local.pebble import FixedAnswerDns, Pebble, free_port
from prefect_host.services.caddy import APPLIED_FILE, caddy_service
from prefect_host.tls import TlsSettings, load_ca_certificate
from tests.prefect_host.internal_ca_support import earlier_release

pytestmark = pytest.mark.e2e

PROFILE = "prefect-host-tls-e2e"
AUTH = "admin:Tls-E2e-'q' $x\\y-93c7"
BUCKET = "prefect-host-tls-e2e"
DOMAIN = "prefect-host.test"
CANARY = "canary:Plaintext-Canary-7731"


def basic(auth: str) -> bytes:
    """The Authorization header's value for `user:password`, as it crosses the wire."""
    return b"Basic " + basic_credentials(auth).encode()


@dataclass
class TlsStack(Stack):
    capture: PacketCapture | None = None  # every frame on the guest's veth, for the whole module
    pebble_root: Path | None = None  # what the acme certificate chains to

    @property
    def ca_file(self) -> Path:
        return self.laptop_home / f"{PROFILE}-ca.pem"


@pytest.fixture(scope="module")
def stack(module_host, module_package_index, module_s3_server, tmp_path_factory) -> TlsStack:
    ip = module_host.address
    outputs = host_outputs(
        module_host,
        **internal_tls(ip),
        prefectAuthString=AUTH,
        **s3_outputs(module_s3_server, BUCKET, user="prefect-host-tls-e2e"),
    )
    needles = [AUTH.encode(), AUTH.split(":", 1)[1].encode(), basic(AUTH), basic(CANARY)]
    with (
        caddy_apt_repo(module_host) as apt,
        PacketCapture(module_host.veth, needles, server_ip=ip, watch_ports={80, 443, 4200}) as capture,
    ):
        result = TlsStack.create(
            module_host,
            tmp_path_factory.mktemp("tls-e2e"),
            profile=PROFILE,
            outputs=outputs,
            bootstrap_args=["--find-links", module_package_index.url, "--apt-source", apt.source_line],
            s3=module_s3_server,
            with_project=True,
        )
        result.capture = capture
        yield result


@pytest.fixture(scope="module")
def pebble(stack) -> Pebble:
    """Pebble on the gateway, validating the test domain at the guest (FixedAnswerDns), for the
    rest of the module: its root changes at every start."""
    gateway = stack.host.gateway
    with (
        FixedAnswerDns(gateway, stack.ip) as dns,
        Pebble(
            gateway, dns_server=dns.server, acme_port=free_port(gateway), management_port=free_port(gateway)
        ) as server,
    ):
        yield server


def deploy_and_run(stack: TlsStack) -> str:
    """deploy.py --run-now through the profile; returns the flow run's name once it completed."""
    run = stack.deploy("--run-now", "--timeout", "240")
    assert run.returncode == 0, run.stdout + run.stderr
    return completed_run(run.stdout).name


def listeners(stack: TlsStack) -> set[str]:
    """Listening TCP sockets in the guest, as address:port (IPv6 wildcard as [::])."""
    found = set()
    for line in stack.guest("cat /proc/net/tcp /proc/net/tcp6").splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            address, port = fields[1].split(":")
            if len(address) == 8:
                ip = socket.inet_ntoa(bytes.fromhex(address)[::-1])
            else:
                ip = "[::]" if set(address) == {"0"} else f"[{address}]"
            found.add(f"{ip}:{int(port, 16)}")
    return found


def https(stack: TlsStack, url: str, cafile: Path | None, **kwargs) -> httpx.Response:
    """A request to the guest whatever name the URL has (DOMAIN is connected to the guest's IP),
    verified against cafile alone or the default store."""
    return https_request(url, cafile, resolve=(DOMAIN, stack.ip), **kwargs)


def assert_ran_on_the_host(stack: TlsStack, flow_run_name: str, cafile: Path) -> None:
    [flow_run] = https(
        stack,
        f"{stack.outputs['apiUrl']}/flow_runs/filter",
        cafile,
        method="POST",
        json={"flow_runs": {"name": {"any_": [flow_run_name]}}},
        auth=stack.auth,
    ).json()
    stack.assert_the_hosts_worker_ran(flow_run)


# --- internal mode ------------------------------------------------------------------------------


def assert_the_profile_pins_the_hosts_constrained_ca(stack: TlsStack, run) -> None:
    """The CA the profile pins is the host's, constrained to its IP, and the summary shows its
    fingerprint, what it can vouch for and how to trust it for this user only."""
    host_ca = load_ca_certificate(stack.guest(f"cat {INTERNAL_CA_ROOT_PATH}"), source="the guest")
    assert constrained_to(host_ca.pem, stack.ip)
    assert stack.ca_file.read_text() == host_ca.pem and stat.S_IMODE(stack.ca_file.stat().st_mode) == 0o644
    assert f"SHA-256 fingerprint: {host_ca.fingerprint}" in run.stdout
    assert f"It can vouch only for {stack.ip} (X.509 name constraints)" in run.stdout
    assert f"certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n {PROFILE}-ca -i {stack.ca_file}" in run.stdout
    assert "login.keychain-db" in run.stdout and "System.keychain" not in run.stdout


def test_fresh_install_serves_https_only_with_the_ca_pinned_in_the_profile(stack, record_property):
    run = stack.measured_bootstrap(
        record_property,
        "fresh_bootstrap_with_caddy_seconds",
        "fresh bootstrap, internal TLS, storage and a worker",
        "--activate",
    )
    # Caddy's install and files overlap Prefect's (concurrent lanes); Caddy starts, and takes ports 80, 443
    # and 4200, only once the Prefect server has started (on loopback).
    changed = run.changed
    caddy = [name for name in changed if "caddy" in name.lower()]
    assert caddy == CADDY_FRESH_INTERNAL
    assert changed.index("start the Prefect server") < changed.index("start Caddy")
    assert changed.index("start Caddy") < changed.index("process work pool 'default'")
    assert run.step("read Caddy's CA certificate") == "ok"
    assert run.step(f"TLS certificate for {stack.ip} from the host's own CA") == "ok"
    assert changed[-3:] == [
        f"CA certificate for profile {PROFILE}",
        f"storage block s3-bucket/{PROFILE}-results",
        f"profile {PROFILE}: write it, reach the server through it",
    ]

    assert_the_profile_pins_the_hosts_constrained_ca(stack, run)
    profile = stack.profile_settings()
    assert profile["PREFECT_API_URL"] == f"https://{stack.ip}/api"
    assert profile["PREFECT_API_SSL_CERT_FILE"] == str(stack.ca_file)
    assert not [key for key in profile if "INSECURE" in key]

    # Prefect on loopback only; Caddy on 80, 443 and 4200; the server env and the worker's.
    listening = listeners(stack)
    assert [entry for entry in listening if entry.endswith(":4201")] == ["127.0.0.1:4201"]
    assert {"[::]:80", "[::]:443", "[::]:4200"} <= listening
    assert "PREFECT_SERVER_API_HOST='127.0.0.1'" in stack.guest("cat /etc/prefect-host/server.env")
    assert "PREFECT_API_URL='http://127.0.0.1:4201/api'" in stack.guest("cat /etc/prefect-host/worker.env")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{stack.ip}:4201/api/health", timeout=5)

    # HTTPS with the pinned CA on both ports; the UI calls the API on its own origin.
    for url in (f"https://{stack.ip}/api/health", f"https://{stack.ip}:4200/api/health"):
        response = https(stack, url, stack.ca_file)
        assert (response.status_code, response.json()) == (200, True)
    assert https(stack, f"https://{stack.ip}:4200/ui-settings", stack.ca_file).json()["api_url"] == "/api"
    # http://<ip>:4200 does not serve the API; port 80 only redirects.
    plain = httpx.get(f"http://{stack.ip}:4200/api/health", timeout=5)
    assert plain.status_code == 400 and "true" not in plain.text
    redirect = httpx.get(f"http://{stack.ip}/api/admin/version", timeout=5)
    assert (redirect.status_code, redirect.headers["location"]) == (308, f"https://{stack.ip}/api/admin/version")


def test_a_deployment_runs_on_the_hosts_worker_and_a_flow_on_the_laptop(stack, record_property):
    started = time.monotonic()
    flow_run = deploy_and_run(stack)
    record_property("deploy_run_now_over_tls_seconds", round(time.monotonic() - started, 1))
    assert_ran_on_the_host(stack, flow_run, stack.ca_file)
    stack.run_flow_on_the_laptop(cwd=stack.project)
    runs = https(
        stack,
        f"{stack.outputs['apiUrl']}/flow_runs/filter",
        stack.ca_file,
        method="POST",
        json={"flows": {"name": {"any_": ["on-the-laptop"]}}},
        auth=stack.auth,
    ).json()
    assert [r["state_type"] for r in runs] == ["COMPLETED"]


def test_a_client_without_the_ca_is_refused(stack, tmp_path):
    """Prefect's own client, with the URL and auth string but without the pinned CA."""
    code = (
        "from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as client:\n"
        "    print(client.api_version())\n"
    )
    env = laptop_env(tmp_path / "stranger", PREFECT_API_URL=stack.outputs["apiUrl"], PREFECT_API_AUTH_STRING=AUTH)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in done.stderr
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://{stack.ip}/api/health", timeout=5)


def snapshot(stack: TlsStack) -> dict:
    files = [
        "/etc/prefect-host/server.env",
        "/etc/prefect-host/worker.env",
        "/etc/caddy/Caddyfile",
        "/etc/prefect-host/caddy.applied",
        "/etc/systemd/system/caddy.service.d/10-prefect-host-hardening.conf",
        CONFIG_PATH,
        INTERNAL_CA_ROOT_PATH,  # the CA is not made again
    ]
    return {
        "files": files_state(stack, files, stat_format="%n %Y"),
        "pids": {
            unit: stack.main_pid(unit)
            for unit in ("caddy.service", "prefect-server.service", "prefect-worker@1.service")
        },
        # systemd logs each `systemctl reload caddy` as Reloading/Reloaded.
        "caddy_reloads": stack.guest("journalctl -u caddy.service -o cat --no-pager | grep -c Reload || true"),
    }


def test_a_host_with_caddys_own_ca_gets_the_constrained_one_and_the_profile_follows(stack, tmp_path):
    """A host an earlier release set up: Caddy issues from a CA of its own making (it can vouch for
    any name) and the profile pins it. The next bootstrap: one Caddy reload, nothing restarted,
    Caddy's own CA deleted, the new CA pinned, and the output says so."""
    earlier = earlier_release(caddy_service(TlsSettings(mode="internal", address=stack.ip)))
    caddyfile = next(file.text for file in earlier.files if file.path == CADDYFILE_PATH)
    stack.host.guest_exec(["sh", "-c", f"cat > {CADDYFILE_PATH}"], input=caddyfile)
    stack.host.guest_exec(["sh", "-c", f"cat > {APPLIED_FILE}"], input=earlier.applied_record() + "\n")
    stack.guest(
        f"rm -rf {CONFIG_PATH} {SCRIPT_PATH} {DROPIN_PATH} {INTERNAL_CA_DIR} {CADDY_DATA_DIR}/certificates/local && "
        "systemctl daemon-reload && systemctl reload caddy.service"
    )
    own = load_ca_certificate(stack.guest(f"cat {CADDY_OWN_CA_ROOT_PATH}"), source="Caddy's own CA")
    assert not constrained_to(own.pem, stack.ip)
    stack.ca_file.write_text(own.pem)  # what an earlier bootstrap pinned
    own_file = tmp_path / "caddys-own-ca.pem"
    own_file.write_text(own.pem)
    deadline = time.monotonic() + 30
    while not served_by(stack, own_file):
        assert time.monotonic() < deadline, "Caddy does not serve a certificate from its own CA"
        time.sleep(0.5)
    pids = {unit: stack.main_pid(unit) for unit in ("caddy.service", "prefect-server.service")}

    run = stack.bootstrap("--activate")
    assert run.returncode == 0, run.stdout + run.stderr
    assert [step for step in run.changed if "caddy" in step.lower()] == [
        "write /etc/caddy/Caddyfile",
        "write /etc/caddy/internal-ca.cnf",
        "write /etc/caddy/internal-ca.sh",
        "internal CA for caddy.service",
        "reload Caddy",
    ]
    assert f"CA certificate for profile {PROFILE}" in run.changed
    assert {unit: stack.main_pid(unit) for unit in pids} == pids  # reloaded, not restarted
    new = load_ca_certificate(stack.guest(f"cat {INTERNAL_CA_ROOT_PATH}"), source="the guest")
    assert constrained_to(new.pem, stack.ip) and stack.ca_file.read_text() == new.pem
    assert "Caddy's own CA, which could vouch for any HTTPS site" in run.stderr
    assert own.fingerprint in run.stderr and new.fingerprint in run.stderr and "remove it there" in run.stderr
    assert stack.guest(f"test -e {CADDY_OWN_CA_DIR} && echo kept || echo deleted").strip() == "deleted"
    assert https(stack, f"https://{stack.ip}/api/health", stack.ca_file).json() is True
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        https(stack, f"https://{stack.ip}/api/health", own_file)


def served_by(stack: TlsStack, cafile: Path) -> bool:
    try:
        return https(stack, f"https://{stack.ip}/api/health", cafile).json() is True
    except httpx.HTTPError:
        return False


def test_a_rerun_changes_nothing_and_reloads_nothing(stack, record_property):
    before = snapshot(stack)
    run = stack.measured_bootstrap(
        record_property,
        "rerun_with_tls_seconds",
        "re-run on a converged host with internal TLS",
        "--activate",
        digits=2,
    )
    assert run.changed == []
    assert snapshot(stack) == before  # no file written, no process restarted, no reload


def test_a_teammate_pins_the_ca_from_the_operators_file_or_over_ssh(stack, tmp_path):
    no_key = dict(stack.outputs)
    del no_key["sshPrivateKey"]
    teammate_outputs = stack.write_outputs(no_key, "teammate-outputs.json")
    refused = stack.bootstrap("--client-only", outputs_path=teammate_outputs, home=tmp_path / "refused")
    assert refused.returncode == 1 and "--ca-file FILE" in refused.stderr
    assert not (tmp_path / "refused" / "profiles.toml").exists()

    shared = tmp_path / "shared-ca.pem"
    shutil.copy(stack.ca_file, shared)
    home = tmp_path / "with-file"
    run = stack.bootstrap("--client-only", "--ca-file", str(shared), outputs_path=teammate_outputs, home=home)
    assert run.returncode == 0, run.stdout + run.stderr
    pinned = home / f"{PROFILE}-ca.pem"
    assert pinned.read_text() == stack.ca_file.read_text()
    fingerprint = load_ca_certificate(stack.ca_file.read_text(), source="test").fingerprint
    assert f"SHA-256 fingerprint: {fingerprint}" in run.stdout

    over_ssh = tmp_path / "over-ssh"
    run = stack.bootstrap("--client-only", home=over_ssh)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.step(f"read the CA certificate from {stack.ip}") == "ok"
    assert (over_ssh / f"{PROFILE}-ca.pem").read_text() == stack.ca_file.read_text()


def test_latency_of_a_small_api_call_through_tls_and_on_loopback(stack, record_property):
    """GET /api/admin/version (authenticated), median of 200 on one kept-alive connection: from
    this machine through Caddy's TLS, and on the host straight to Prefect on loopback."""
    auth = stack.auth
    with httpx.Client(verify=ssl.create_default_context(cafile=str(stack.ca_file)), timeout=10) as client:
        client.get(f"https://{stack.ip}/api/admin/version", auth=auth)
        tls = []
        for _ in range(200):
            started = time.perf_counter()
            assert client.get(f"https://{stack.ip}/api/admin/version", auth=auth).status_code == 200
            tls.append(time.perf_counter() - started)
    loopback_script = (
        "import base64, http.client, statistics, sys, time\n"
        "header = 'Basic ' + base64.b64encode(sys.stdin.read().encode()).decode()\n"
        "conn = http.client.HTTPConnection('127.0.0.1', 4201, timeout=10)\n"
        "def call():\n"
        "    conn.request('GET', '/api/admin/version', headers={'Authorization': header})\n"
        "    response = conn.getresponse(); response.read(); assert response.status == 200\n"
        "call(); times = []\n"
        "for _ in range(200):\n"
        "    started = time.perf_counter(); call(); times.append(time.perf_counter() - started)\n"
        "print(statistics.median(times))\n"
    )
    loopback = float(stack.host.guest_exec(["python3", "-c", loopback_script], input=AUTH).stdout)
    tls_median = statistics.median(tls)
    record_property("api_call_tls_median_ms", round(tls_median * 1000, 2))
    record_property("api_call_loopback_median_ms", round(loopback * 1000, 2))
    print(
        f"\nGET /api/admin/version, median of 200: through TLS {tls_median * 1000:.2f} ms, "
        f"loopback plaintext on the host {loopback * 1000:.2f} ms"
    )
    assert tls_median > 0 and loopback > 0


# --- acme mode, then a reboot -------------------------------------------------------------------


def test_switching_to_acme_reloads_caddy_and_keeps_the_server_running(stack, pebble, tmp_path_factory):
    work = tmp_path_factory.mktemp("acme")
    hosts = work / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{stack.ip} {DOMAIN}\n")
    stack.hosts_file = hosts
    pebble_tls_ca, pebble_root = work / "pebble-tls-ca.pem", work / "pebble-root.pem"
    pebble_tls_ca.write_text(pebble.tls_ca_pem())
    pebble_root.write_text(pebble.root_ca_pem())
    stack.outputs.update(acme_tls(DOMAIN, pebble.directory_url))
    stack.write_outputs()
    internal_ca = Path(shutil.copy(stack.ca_file, work / "internal-ca.pem"))
    before = snapshot(stack)

    run = stack.bootstrap("--acme-ca-root", str(pebble_tls_ca), "--ca-file", str(pebble_root))
    assert run.returncode == 0, run.stdout + run.stderr
    print(f"\nswitch to acme (Pebble): {run.seconds:.1f} s\n{run.stdout}")
    caddy_steps = [step for step in run.changed if "caddy" in step.lower() or "Caddy" in step]
    assert caddy_steps == ["write /etc/caddy/Caddyfile", "write /etc/caddy/acme-ca-root.pem", "reload Caddy"]
    assert run.step(f"TLS certificate for {DOMAIN} from {pebble.directory_url}") == "ok"
    assert not [step for step in run.changed if "Prefect server" in step or "server.env" in step]
    after = snapshot(stack)
    assert after["pids"]["caddy.service"] == before["pids"]["caddy.service"]  # reloaded, not restarted
    assert int(after["caddy_reloads"]) > int(before["caddy_reloads"])
    assert after["pids"]["prefect-server.service"] == before["pids"]["prefect-server.service"]

    # The certificate chains to Pebble's root, on both ports; the profile verifies against it.
    for port in (443, 4200):
        response = https(stack, f"https://{DOMAIN}:{port}/api/health", pebble_root)
        assert response.json() is True
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        https(stack, f"https://{DOMAIN}/api/health", internal_ca)  # the internal CA no longer applies
    assert stack.profile_settings()["PREFECT_API_URL"] == f"https://{DOMAIN}/api"
    assert stack.ca_file.read_text() == pebble_root.read_text()
    assert "certificate obtained successfully" in stack.guest("journalctl -u caddy.service -o cat --no-pager")
    stack.pebble_root = pebble_root

    again = stack.bootstrap("--acme-ca-root", str(pebble_tls_ca), "--ca-file", str(pebble_root))
    assert again.returncode == 0 and again.changed == [], again.stdout


def test_the_worker_runs_deployments_after_the_switch_and_after_a_reboot(stack):
    assert_ran_on_the_host(stack, deploy_and_run(stack), stack.pebble_root)
    stack.host.reboot()
    deadline = time.monotonic() + 120
    while True:
        try:
            if https(stack, f"https://{DOMAIN}/api/health", stack.pebble_root).json() is True:
                break
        except (httpx.HTTPError, ValueError):
            pass
        assert time.monotonic() < deadline, "HTTPS did not come back after the reboot"
        time.sleep(1)
    assert_ran_on_the_host(stack, deploy_and_run(stack), stack.pebble_root)


# --- what crossed the network ---------------------------------------------------------------------


def test_no_request_carrying_the_auth_string_crossed_the_veth_in_clear_text(stack, record_property):
    # The positive control: a plaintext request with a stand-in auth header is seen, so the
    # capture would have seen the real one.
    response = httpx.get(f"http://{stack.ip}:4200/api/health", auth=tuple(CANARY.split(":", 1)), timeout=5)
    assert response.status_code == 400
    time.sleep(1)
    capture = stack.capture
    tls_flows = [f for f in capture.flows.values() if f.tls]
    plaintext = [f for f in capture.flows.values() if not f.tls]
    record_property("captured_frames", capture.frames)
    assert capture.drops() == 0  # the kernel handed every frame to the capture
    print(
        f"\ncaptured {capture.frames} frames; flows to 80/443/4200: {len(tls_flows)} TLS, {len(plaintext)} plain; "
        f"payload bytes by guest port: {dict(capture.bytes_by_port)}"
    )
    assert 4201 not in capture.bytes_by_port  # nobody reached Prefect itself from outside
    canary = basic(CANARY)
    assert [needle for needle, _ in capture.plaintext_hits()] == [canary]
    assert {needle for needle, _, _ in capture.hits} <= {canary}
    assert len(tls_flows) > 50 and {f.server[1] for f in tls_flows} >= {443}
    # Every plaintext flow to the guest's web ports: the redirect, Pebble's validation and this test's probes.
    for flow in plaintext:
        request_line = bytes(flow.client_bytes).split(b"\r\n", 1)[0]
        assert b"authorization" not in bytes(flow.client_bytes).lower() or basic(CANARY) in flow.client_bytes, (
            request_line
        )


def test_no_secret_in_any_output_nor_in_the_hosts_journal(stack):
    assert len(stack.runs) >= 8
    for printed in stack.runs:
        assert not stack.secrets_in(printed)
    journal = stack.guest("journalctl -q --no-pager -o cat")
    assert not stack.secrets_in(journal)
