"""Caddy's service declaration (prefect_host.services.caddy) through the planner and the apply loop
on a real booted Debian 13 guest of their own, nothing mocked: Caddy installed with apt from the
local repository (the guest has no internet), restarted once onto its sandbox and Caddyfile,
internal TLS from the CA made on the host, constrained to its IP, verified with its root read over
SSH, a re-run with no steps, a
switch to ACME (Pebble on the gateway) applied by a reload, a reboot, and tls off.

A stand-in for Prefect (python3's http.server on 127.0.0.1:4201) is the upstream: these tests are
about the front door; the bootstrap's e2e tests run the real server behind it."""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from e2e_support import CADDY_FRESH_INTERNAL, acme_tls, build_outputs, caddy_apt_repo, https_request, internal_tls
from prefect_host.caddy import CADDY_OWN_CA_DIR, HARDENING_DROPIN_PATH, INTERNAL_CA_DIR
from prefect_host.console import Console
from prefect_host.host.apply import apply
from prefect_host.host.facts import gather_facts
from prefect_host.host.planner import all_steps, plan
from prefect_host.internal_ca import constrained_to
from prefect_host.local import LocalHost, build_image
from prefect_host.local.pebble import FixedAnswerDns, Pebble, free_port
from prefect_host.outputs import StackOutputs
from prefect_host.services.caddy import caddy_service, read_internal_ca_root
from prefect_host.ssh import HostSession, PinnedHostKey, load_private_key_file
from prefect_host.tls import UPSTREAM_PORT, load_ca_certificate, settings_from_outputs

pytestmark = pytest.mark.e2e

DOMAIN = "prefect-host.test"
HEALTH = "true"


@dataclass
class Guest:
    host: object  # prefect_host.local.LocalHost
    session: HostSession
    apt_source: str

    @property
    def ip(self) -> str:
        return self.host.address

    def outputs(self, **changes) -> StackOutputs:
        """Internal TLS for the guest's IP, unless `changes` say otherwise."""
        internal = {"hostPublicKey": self.host.host_public_key, **internal_tls(self.ip)}
        return StackOutputs.from_mapping(build_outputs(self.ip, **(internal | changes)))

    def converge(self, settings) -> list[str]:
        """One bootstrap-like pass over Caddy alone: facts, plan, apply; returns the names of the steps run."""
        services = [caddy_service(settings)]
        lanes = plan(gather_facts(self.session, services), services)
        apply(lanes, self.session, Console())
        return [step.name for step in all_steps(lanes)]

    def caddy(self, *properties: str) -> dict[str, str]:
        out = self.session.run(f"systemctl show caddy.service {' '.join('-p ' + p for p in properties)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines())


def connect(host) -> HostSession:
    return HostSession.connect(
        host.address,
        user=host.ssh_user,
        identity=load_private_key_file(host.identity_file),
        host_key=PinnedHostKey.parse(host.host_public_key, setting="test"),
        connect_timeout=60,
    )


def start_upstream(session: HostSession) -> None:
    """The stand-in for Prefect on loopback only, answering GET /api/health."""
    session.run(
        "mkdir -p /srv/fake-prefect/api && printf true > /srv/fake-prefect/api/health && "
        f"systemd-run --quiet --unit=fake-prefect python3 -m http.server --bind 127.0.0.1 "
        f"--directory /srv/fake-prefect {UPSTREAM_PORT}",
        sudo=True,
    )
    session.run(
        f'for i in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('
        f"'http://127.0.0.1:{UPSTREAM_PORT}/api/health')\" 2>/dev/null && exit 0; sleep 0.1; done; exit 1"
    )


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> Iterator[Guest]:
    with LocalHost.create(build_image()) as host:
        host.boot()
        with caddy_apt_repo(host) as apt:
            session = connect(host)
            try:
                start_upstream(session)
                yield Guest(host=host, session=session, apt_source=apt.source_line)
            finally:
                session.close()


def served_chain_verifies(ip: str, port: int, server_name: str, cafile: Path) -> bool:
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with (
            socket.create_connection((ip, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=server_name),
        ):
            return True
    except (ssl.SSLError, OSError):
        return False


def wait_for(condition, what: str, timeout: float = 60) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not {what} within {timeout} s")
        time.sleep(0.25)
    return time.monotonic() - started


def assert_made_on_the_host_for(guest: Guest, root: str) -> None:
    """The internal CA was made in Caddy's sandbox before it started: constrained to the IP, the
    intermediate's key only for caddy, no root key and no CA of Caddy's own anywhere; Caddy serves a
    certificate its intermediate signed."""
    assert constrained_to(root, guest.ip)
    listing = guest.session.run(f"stat -c '%n %U %a' {INTERNAL_CA_DIR} {INTERNAL_CA_DIR}/*", sudo=True).stdout
    assert listing.splitlines() == [
        f"{INTERNAL_CA_DIR} caddy 700",
        f"{INTERNAL_CA_DIR}/intermediate.crt caddy 600",
        f"{INTERNAL_CA_DIR}/intermediate.key caddy 600",
        f"{INTERNAL_CA_DIR}/made-from.cnf caddy 600",
        f"{INTERNAL_CA_DIR}/root.crt caddy 600",
    ]
    assert guest.session.run(f"test -e {CADDY_OWN_CA_DIR}", sudo=True, check=False).exit_status == 1
    journal = guest.session.run("journalctl -u caddy.service -o cat --no-pager", sudo=True).stdout
    assert "internal CA: made a new one" in journal and "PRIVATE KEY" not in journal
    intermediate = x509.load_pem_x509_certificate(
        guest.session.run(f"cat {INTERNAL_CA_DIR}/intermediate.crt", sudo=True).stdout.encode()
    )
    served = ssl.get_server_certificate((guest.ip, 443))
    assert x509.load_pem_x509_certificate(served.encode()).issuer == intermediate.subject


def test_internal_tls_from_a_fresh_host(guest, tmp_path):
    settings = settings_from_outputs(guest.outputs(), apt_source=guest.apt_source)
    started = time.monotonic()
    steps = guest.converge(settings)
    print(f"fresh Caddy (apt install, files, restart): {time.monotonic() - started:.1f} s")
    assert steps == CADDY_FRESH_INTERNAL
    # apt read only the given source, in lists of its own: the guest's apt state holds nothing of it.
    lists = guest.session.run("ls /var/lib/apt/lists").stdout
    assert guest.host.gateway not in lists

    root = guest.session.run(read_internal_ca_root().script, sudo=True).stdout
    ca = load_ca_certificate(base64.b64decode(root).decode(), source="the guest")
    cafile = tmp_path / "ca.pem"
    cafile.write_text(ca.pem)
    wait_for(lambda: served_chain_verifies(guest.ip, 443, guest.ip, cafile), "serving from the internal CA", 30)
    assert_made_on_the_host_for(guest, ca.pem)
    for url in (f"https://{guest.ip}/api/health", f"https://{guest.ip}:4200/api/health"):
        response = httpx.get(url, verify=ssl.create_default_context(cafile=str(cafile)), timeout=10)
        assert (response.status_code, response.text) == (200, HEALTH)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://{guest.ip}/api/health", timeout=10)
    # Port 4200 speaks only TLS; port 80 only redirects; Prefect's port is not reachable from outside.
    plain = httpx.get(f"http://{guest.ip}:4200/api/health", timeout=10)
    assert plain.status_code == 400 and plain.text != HEALTH
    redirect = httpx.get(f"http://{guest.ip}/api/health", timeout=10)
    assert (redirect.status_code, redirect.headers["location"]) == (308, f"https://{guest.ip}/api/health")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{guest.ip}:{UPSTREAM_PORT}/api/health", timeout=5)

    # Sandboxed: the drop-in is in force, Caddy runs as caddy, its admin API is a unix socket only.
    state = guest.caddy("ActiveState", "User", "ProtectSystem", "DropInPaths", "MainPID")
    assert state["ActiveState"] == "active" and state["User"] == "caddy" and state["ProtectSystem"] == "strict"
    assert HARDENING_DROPIN_PATH in state["DropInPaths"]
    admin_tcp = guest.session.run(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 2019), 2)\"", check=False
    )
    assert admin_tcp.exit_status != 0 and "ConnectionRefusedError" in admin_tcp.stderr
    exposure = guest.session.run("systemd-analyze security caddy.service --no-pager | tail -n 1", sudo=True).stdout
    print(f"caddy.service: {exposure.strip()}")

    # Re-run: nothing to do.
    started = time.monotonic()
    assert guest.converge(settings) == []
    print(f"converged re-run (facts + plan): {time.monotonic() - started:.2f} s")
    assert guest.caddy("MainPID") == {"MainPID": state["MainPID"]}


def test_switch_to_acme_with_pebble_is_a_reload(guest, tmp_path):
    before = guest.caddy("MainPID", "ExecMainStartTimestampMonotonic")
    with (
        FixedAnswerDns(guest.host.gateway, guest.ip) as dns,
        Pebble(
            guest.host.gateway,
            dns_server=dns.server,
            acme_port=free_port(guest.host.gateway),
            management_port=free_port(guest.host.gateway),
        ) as pebble,
    ):
        outputs = guest.outputs(**acme_tls(DOMAIN, pebble.directory_url))
        settings = settings_from_outputs(outputs, acme_ca_root_pem=pebble.tls_ca_pem(), apt_source=guest.apt_source)
        assert guest.converge(settings) == [
            "write /etc/caddy/Caddyfile",
            "write /etc/caddy/acme-ca-root.pem",
            "reload Caddy",
        ]
        pebble_root = tmp_path / "pebble-root.pem"
        pebble_root.write_text(pebble.root_ca_pem())
        issued = wait_for(
            lambda: served_chain_verifies(guest.ip, 443, DOMAIN, pebble_root),
            "serving a certificate from Pebble",
            timeout=90,
        )
        print(f"certificate from Pebble served {issued:.1f} s after the reload")
        assert served_chain_verifies(guest.ip, 4200, DOMAIN, pebble_root)
        response = https_request(f"https://{DOMAIN}/api/health", pebble_root, resolve=(DOMAIN, guest.ip), timeout=10)
        assert (response.status_code, response.text) == (200, HEALTH)
        # A reload: the same Caddy process, started at the same time.
        assert guest.caddy("MainPID", "ExecMainStartTimestampMonotonic") == before
        assert guest.converge(settings) == []

        # A reboot keeps HTTPS working: Caddy starts on its own with the stored certificate.
        guest.session.close()
        guest.host.reboot()
        guest.session = connect(guest.host)
        wait_for(lambda: guest.caddy("ActiveState")["ActiveState"] == "active", "active after the reboot", 60)
        wait_for(lambda: served_chain_verifies(guest.ip, 443, DOMAIN, pebble_root), "serving after the reboot", 30)
        assert guest.converge(settings) == []
        log = guest.session.run("journalctl -u caddy.service -o cat --no-pager", sudo=True).stdout
        assert "certificate obtained successfully" in log

        # tls off: Caddy stops for good (it would hold port 4200); a re-run does nothing more.
        off = settings_from_outputs(
            guest.outputs(apiUrl=f"http://{guest.ip}:4200/api", uiUrl=f"http://{guest.ip}:4200", tlsMode="off")
        )
        assert guest.converge(off) == ["stop and disable caddy.service (tls off)"]
        assert guest.converge(off) == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{guest.ip}:4200/", timeout=5)
        assert guest.caddy("ActiveState") == {"ActiveState": "inactive"}
