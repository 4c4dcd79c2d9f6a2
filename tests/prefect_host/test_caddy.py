"""The Caddy front door: the rendered Caddyfile, checked by Debian's caddy 2.6.2 itself, and real
Caddy processes on loopback: issuing from the constrained internal CA (also after moving to it from
a CA of its own making, on a reload), and getting its certificate from Pebble over ACME."""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from prefect_host.caddy import (
    ACME_CA_ROOT_PATH,
    CADDY_DATA_DIR,
    CADDY_HOME,
    CADDY_OWN_CA_ROOT_PATH,
    CONTENT_SECURITY_POLICY,
    HARDENING_DROPIN,
    HARDENING_DROPIN_PATH,
    INTERNAL_CA_DIR,
    LETS_ENCRYPT_DIRECTORY,
    CaddySettings,
    TlsConfigError,
    render_caddyfile,
)
from prefect_host.internal_ca import constrained_to
from prefect_host.local.pebble import FixedAnswerDns, Pebble, free_port, make_tls_ca_and_certificate
from tests.prefect_host.internal_ca_support import MadeCa, load, make_ca, without_pki

LOOPBACK = "127.0.0.1"
# A public address that is on no interface here, like a cloud VM's NATed public IP.
PUBLIC_IP = "192.0.2.10"
DOMAIN = "prefect.test"
DEBIAN_CADDY_UNIT = Path("/lib/systemd/system/caddy.service")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is missing: run scripts/install-system-deps.sh as root (make test does).")
    return path


@pytest.fixture(scope="module")
def caddy_binary() -> str:
    """Debian's caddy 2.6.2 on this machine, the same upstream release as the guest's."""
    return tool("caddy")


def internal(**overrides) -> CaddySettings:
    return CaddySettings(**{"mode": "internal", "address": "203.0.113.10", "upstream_port": 4201, **overrides})


def acme(**overrides) -> CaddySettings:
    return CaddySettings(
        **{
            "mode": "acme",
            "address": "prefect.example.com",
            "upstream_port": 4201,
            "acme_email": "ops@example.com",
            **overrides,
        }
    )


# --- rendering -------------------------------------------------------------------------------


def test_internal_mode_serves_the_ip_on_443_and_4200_from_the_constrained_ca():
    text = render_caddyfile(internal())
    assert "https://203.0.113.10:443, https://203.0.113.10:4200 {\n\ttls internal\n\theader {\n" in text
    assert "\treverse_proxy 127.0.0.1:4201\n" in text
    assert "\tskip_install_trust\n" in text and "\tdefault_sni 203.0.113.10\n" in text
    assert "acme_ca" not in text and "email" not in text
    # Caddy's default CA is the one prefect_host.internal_ca makes: root and intermediate given, so
    # Caddy makes no CA of its own and never renews the intermediate (the root's key exists nowhere).
    assert (
        "\tpki {\n\t\tca local {\n"
        f"\t\t\troot {{\n\t\t\t\tcert {INTERNAL_CA_DIR}/root.crt\n"
        f"\t\t\t\tkey {INTERNAL_CA_DIR}/intermediate.key\n\t\t\t}}\n"
        f"\t\t\tintermediate {{\n\t\t\t\tcert {INTERNAL_CA_DIR}/intermediate.crt\n"
        f"\t\t\t\tkey {INTERNAL_CA_DIR}/intermediate.key\n\t\t\t}}\n\t\t}}\n\t}}\n"
    ) in text
    assert "pki" not in render_caddyfile(acme())


def test_acme_mode_uses_exactly_the_configured_directory_and_email():
    text = render_caddyfile(acme(acme_directory="https://10.77.0.1:14000/dir", acme_ca_root=ACME_CA_ROOT_PATH))
    assert "\temail ops@example.com\n\tacme_ca https://10.77.0.1:14000/dir\n" in text
    assert f"\tacme_ca_root {ACME_CA_ROOT_PATH}\n" in text
    site = "https://prefect.example.com:443, https://prefect.example.com:4200 {\n\theader {\n"
    assert site in text
    assert "tls " not in text and "default_sni" not in text and "skip_install_trust" not in text


def test_acme_mode_defaults_to_lets_encrypt_and_may_omit_the_email():
    text = render_caddyfile(acme(acme_email=None))
    assert f"\tacme_ca {LETS_ENCRYPT_DIRECTORY}\n" in text
    assert "email" not in text and "acme_ca_root" not in text


@pytest.mark.parametrize("settings", [internal(), acme()], ids=["internal", "acme"])
def test_port_80_redirects_everything_to_https_and_admin_is_a_socket(settings):
    text = render_caddyfile(settings)
    assert "http://:80 {\n\tredir https://{host}{uri} 308\n}\n" in text
    assert text.startswith(
        "{\n\tadmin unix//run/caddy/admin.sock\n\thttp_port 80\n\thttps_port 443\n\tauto_https disable_redirects\n"
    )
    assert "\tservers {\n\t\tprotocols h1 h2\n\t}\n" in text
    assert "bind" not in text  # every interface: a cloud VM's public IP is not on one


@pytest.mark.parametrize("settings", [internal(), acme()], ids=["internal", "acme"])
def test_https_sites_send_the_security_headers_and_a_same_origin_csp(settings):
    text = render_caddyfile(settings)
    headers = (
        "\theader {\n"
        "\t\tContent-Security-Policy \"default-src 'self'; connect-src 'self'; script-src 'self' 'unsafe-eval'; "
        "worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'\"\n"
        '\t\tStrict-Transport-Security "max-age=31536000"\n'
        '\t\tX-Content-Type-Options "nosniff"\n'
        '\t\tReferrer-Policy "no-referrer"\n'
        "\t}\n"
    )
    site = text[text.index(", ".join(settings.site_addresses)) :]
    assert headers + "\treverse_proxy 127.0.0.1:4201\n}\n" in site
    assert text.count("\theader {") == 1  # the HTTPS sites only: port 80 only redirects
    directives = {name: sources for name, *sources in map(str.split, CONTENT_SECURITY_POLICY.split("; "))}
    # No other origin anywhere; no inline script; eval and blob: workers are the run graph's (pixi.js).
    assert not [s for sources in directives.values() for s in sources if s in ("*", "https:", "http:") or "." in s]
    assert directives["script-src"] == ["'self'", "'unsafe-eval'"]
    assert directives["worker-src"] == ["'self'", "blob:"]


def test_test_ports_and_bind_address_reach_every_listener():
    text = render_caddyfile(
        internal(https_ports=(18443, 18420), http_port=18080, bind_address=LOOPBACK, admin_socket="/tmp/x/admin.sock")
    )
    assert "https://203.0.113.10:18443, https://203.0.113.10:18420 {\n\tbind 127.0.0.1\n" in text
    assert "http://:18080 {\n\tbind 127.0.0.1\n\tredir https://{host}:18443{uri} 308\n" in text
    assert "\tadmin unix//tmp/x/admin.sock\n\thttp_port 18080\n\thttps_port 18443\n" in text


def test_base_url_names_the_port_only_when_it_is_not_443():
    assert internal().base_url == "https://203.0.113.10"
    assert acme(https_ports=(8443, 4200)).base_url == "https://prefect.example.com:8443"


@pytest.mark.parametrize(
    "make, overrides, words",
    [
        (internal, {"mode": "off"}, ["'off'", "internal, acme"]),
        (internal, {"address": "prefect.example.com"}, ["IPv4", "prefect.example.com"]),
        (internal, {"address": "2001:db8::1"}, ["IPv4", "2001:db8::1"]),
        (acme, {"address": "203.0.113.10"}, ["domain", "203.0.113.10"]),
        (acme, {"address": "Prefect.Example.com"}, ["domain", "Prefect.Example.com"]),
        (acme, {"address": "localhost"}, ["domain", "localhost"]),
        (acme, {"address": "a.example.com {\n\trespond hi\n}\nb.example.com"}, ["domain"]),
        # A trailing newline passes `re.match(...$)`: every check is a full match.
        (acme, {"address": "prefect.example.com\n"}, ["domain"]),
        (acme, {"acme_email": "ops@example.com\n"}, ["acmeEmail"]),
        (acme, {"acme_directory": "https://acme.example.com/dir\n"}, ["acmeCa"]),
        (acme, {"acme_ca_root": "/etc/caddy/ca.pem\n"}, ["acme_ca_root"]),
        (acme, {"acme_email": "not-an-email"}, ["acmeEmail", "not-an-email"]),
        (acme, {"acme_email": "ops@example.com {"}, ["acmeEmail"]),
        (acme, {"acme_directory": "http://acme.example.com/dir"}, ["acmeCa", "https://"]),
        (acme, {"acme_ca_root": "relative/ca.pem"}, ["acme_ca_root", "absolute"]),
        (internal, {"acme_ca_root": "/etc/caddy/ca.pem"}, ["acme_ca_root", "tls=acme"]),
        (internal, {"upstream_port": 4200}, ["4200", "another port"]),
        (internal, {"upstream_port": 80}, ["80", "another port"]),
        (internal, {"https_ports": (443, 443)}, ["must all differ"]),
        (internal, {"http_port": 4200}, ["must all differ"]),
        (internal, {"https_ports": ()}, ["https_ports"]),
        (internal, {"http_port": 70000}, ["70000", "1 to 65535"]),
        (internal, {"upstream_port": "4201"}, ["upstream_port", "'4201'"]),
        (internal, {"bind_address": "eth0"}, ["bind_address", "eth0"]),
        (internal, {"admin_socket": "/run/caddy/admin sock"}, ["admin_socket"]),
        (internal, {"internal_ca_dir": "ca"}, ["internal_ca_dir", "absolute"]),
    ],
    ids=lambda value: None if not isinstance(value, dict) else "-".join(f"{k}" for k in value),
)
def test_bad_settings_are_refused_naming_the_setting(make, overrides, words):
    with pytest.raises(TlsConfigError) as error:
        make(**overrides)
    for word in words:
        assert word in str(error.value)


# --- Debian's caddy reads what we render ----------------------------------------------------


def caddy_env(home: Path) -> dict[str, str]:
    """Caddy keeps its data under $HOME/.local/share/caddy: a test's own, never root's."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}


def acme_with_private_ca(tmp_path: Path) -> CaddySettings:
    """As the acme end-to-end test runs it: Pebble's directory, whose TLS CA Caddy must trust
    (Caddy's validation parses that file, so it is a real CA certificate)."""
    ca_path, _, _ = make_tls_ca_and_certificate(tmp_path, "10.77.0.1")
    return acme(acme_directory="https://10.77.0.1:14000/dir", acme_ca_root=str(ca_path))


def internal_with_its_ca(tmp_path: Path) -> CaddySettings:
    """Caddy's validation loads the internal CA's files: the script makes them first."""
    return internal(internal_ca_dir=str(make_ca(tmp_path, "203.0.113.10").ca))


@pytest.mark.parametrize(
    "make_settings",
    [internal_with_its_ca, lambda _: acme(), lambda _: acme(acme_email=None), acme_with_private_ca],
    ids=["internal", "acme", "acme-no-email", "acme-private-ca"],
)
def test_caddy_formats_adapts_and_validates_the_rendered_file(tmp_path, caddy_binary, make_settings):
    settings = make_settings(tmp_path)
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(render_caddyfile(settings))
    formatted = subprocess.run([caddy_binary, "fmt", str(caddyfile)], capture_output=True, text=True, check=True)
    assert formatted.stdout == caddyfile.read_text()
    adapted = subprocess.run(
        [caddy_binary, "adapt", "--config", str(caddyfile), "--validate"],
        capture_output=True,
        text=True,
        env=caddy_env(tmp_path / "home"),
    )
    assert adapted.returncode == 0, adapted.stderr
    config = json.loads(adapted.stdout)
    servers = config["apps"]["http"]["servers"].values()
    assert sorted(server["listen"][0] for server in servers) == [":4200", ":443", ":80"]
    assert all(server["protocols"] == ["h1", "h2"] for server in servers)
    (plain,) = [server for server in servers if server["listen"] == [":80"]]
    assert plain["routes"] == [
        {
            "handle": [
                {
                    "handler": "static_response",
                    "status_code": 308,
                    "headers": {"Location": ["https://{http.request.host}{http.request.uri}"]},
                }
            ]
        }
    ]
    assert config["admin"]["listen"] == "unix//run/caddy/admin.sock"
    (policy,) = config["apps"]["tls"]["automation"]["policies"]
    assert policy["subjects"] == [settings.address]
    if settings.mode == "internal":
        assert policy["issuers"] == [{"module": "internal"}]
        ca_dir = settings.internal_ca_dir
        assert config["apps"]["pki"]["certificate_authorities"]["local"] == {
            "install_trust": False,
            "root": {"certificate": f"{ca_dir}/root.crt", "private_key": f"{ca_dir}/intermediate.key"},
            "intermediate": {"certificate": f"{ca_dir}/intermediate.crt", "private_key": f"{ca_dir}/intermediate.key"},
        }
    else:  # one ACME issuer: no ZeroSSL fallback to a CA nobody configured
        (issuer,) = policy["issuers"]
        assert issuer["module"] == "acme" and issuer["ca"] == settings.acme_directory
        assert issuer.get("email") == settings.acme_email
        assert issuer.get("trusted_roots_pem_files") == ([settings.acme_ca_root] if settings.acme_ca_root else None)


def test_hardening_dropin_brings_debians_unit_to_an_ok_exposure(tmp_path, caddy_binary):
    """caddy_binary: Debian's caddy package brings the unit the drop-in is added to."""
    analyze = tool("systemd-analyze")
    unit_dir = tmp_path / "lib/systemd/system"
    unit_dir.mkdir(parents=True)
    shutil.copy(DEBIAN_CADDY_UNIT, unit_dir)
    dropin = tmp_path / HARDENING_DROPIN_PATH.lstrip("/")
    dropin.parent.mkdir(parents=True)
    dropin.write_text(HARDENING_DROPIN)

    def exposure(root: Path) -> float:
        out = subprocess.run(
            [analyze, "security", "--offline=yes", f"--root={root}", "--no-pager", "caddy.service"],
            capture_output=True,
            text=True,
        )
        line = next(line for line in out.stdout.splitlines() if "Overall exposure level" in line)
        return float(line.split(":")[1].split()[0])

    hardened = exposure(tmp_path)
    dropin.unlink()
    assert exposure(tmp_path) >= 8.0  # Debian's unit alone: "UNSAFE"
    assert hardened <= 2.0


# --- real Caddy processes on loopback ------------------------------------------------------


class Upstream:
    """A stand-in for Prefect on loopback: answers every GET with a marker and the path."""

    MARKER = "prefect-upstream"

    def __init__(self):
        marker = self.MARKER
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                body = f"{marker} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


class CaddyProcess:
    """`caddy run` on a rendered Caddyfile, with its own HOME and admin socket under tmp_path."""

    def __init__(self, caddy: str, tmp_path: Path, settings: CaddySettings, caddyfile: str | None = None):
        self.caddy = caddy
        self.home = tmp_path / "home"
        self.caddyfile = tmp_path / "Caddyfile"
        self.caddyfile.write_text(caddyfile or render_caddyfile(settings))
        self.log = tmp_path / "caddy.log"
        with open(self.log, "w") as sink:
            self.process = subprocess.Popen(
                [caddy, "run", "--config", str(self.caddyfile)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=caddy_env(self.home),
            )
        try:
            self.wait_for(lambda: port_open(settings.https_ports[-1]) and port_open(settings.http_port), "listening")
        except BaseException:
            self.stop()
            raise

    def wait_for(self, ready, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"caddy exited:\n{self.log.read_text()[-3000:]}"
            if ready():
                return
            time.sleep(0.1)
        raise AssertionError(f"caddy not {what} within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def reload(self, settings: CaddySettings) -> None:
        """What the unit's ExecReload does: `caddy reload`, through the admin socket."""
        self.caddyfile.write_text(render_caddyfile(settings))
        subprocess.run(
            [self.caddy, "reload", "--config", str(self.caddyfile)],
            check=True,
            capture_output=True,
            env=caddy_env(self.home),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def peer_certificate(port: int, server_name: str, cafile: Path) -> bytes:
    """The certificate served on LOOPBACK:port to a client that asked for server_name and trusts
    only cafile; raises ssl.SSLCertVerificationError when it does not chain to cafile."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return tls.getpeercert(binary_form=True)


def chains_to(port: int, server_name: str, cafile: Path) -> bool:
    try:
        peer_certificate(port, server_name, cafile)
        return True
    except (ssl.SSLError, OSError):
        return False


def get(port: int, name: str, path: str, cafile: Path | None = None, scheme: str = "https") -> httpx.Response:
    """GET scheme://name:port/path, connecting to loopback (as if `name` resolved to it) and
    trusting only cafile (None: httpx's default public roots)."""
    verify = ssl.create_default_context(cafile=str(cafile)) if cafile else True
    with httpx.Client(verify=verify, timeout=10) as client:
        request = client.build_request(
            "GET",
            f"{scheme}://{LOOPBACK}:{port}{path}",
            headers={"Host": f"{name}:{port}"},
            extensions={"sni_hostname": name},
        )
        return client.send(request)


def caddy_data(tmp_path: Path) -> Path:
    """Where a CaddyProcess keeps its data: as on a host, relative to the caddy user's HOME."""
    return tmp_path / "home" / CADDY_DATA_DIR.removeprefix(CADDY_HOME + "/")


def own_ca_root(tmp_path: Path) -> Path:
    """Where Caddy keeps the root of a CA of its own making."""
    return tmp_path / "home" / CADDY_OWN_CA_ROOT_PATH.removeprefix(CADDY_HOME + "/")


def internal_on_loopback(tmp_path: Path, upstream_port: int, ports: tuple[int, int, int], ca: Path) -> CaddySettings:
    https_port, alt_port, http_port = ports
    return CaddySettings(
        "internal",
        PUBLIC_IP,
        upstream_port,
        https_ports=(https_port, alt_port),
        http_port=http_port,
        bind_address=LOOPBACK,
        admin_socket=str(tmp_path / "admin.sock"),
        internal_ca_dir=str(ca),
    )


def issued_by(port: int, made: MadeCa) -> bool:
    """The certificate served on `port` is signed by the constrained CA's intermediate, and a strict
    (CA/Browser Forum profile) verifier accepts the chain for the public IP too."""
    served = x509.load_der_x509_certificate(peer_certificate(port, PUBLIC_IP, made.root))
    verifier = (
        PolicyBuilder()
        .store(Store([load(made.root)]))
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address(PUBLIC_IP)))
    )
    verifier.verify(served, [load(made.intermediate)])
    return served.issuer == load(made.intermediate).subject


def test_internal_ca_certificate_for_the_public_ip_verifies_on_both_ports(tmp_path, caddy_binary, upstream):
    ports = (free_port(LOOPBACK), free_port(LOOPBACK), free_port(LOOPBACK))
    https_port, alt_port, http_port = ports
    # What caddy.service runs before Caddy starts: the CA constrained to the public IP.
    made = make_ca(tmp_path / "internal-ca", PUBLIC_IP, caddy_data=caddy_data(tmp_path))
    root = made.root
    settings = internal_on_loopback(tmp_path, upstream.port, ports, made.ca)
    caddy = CaddyProcess(caddy_binary, tmp_path, settings)
    try:
        # An IP in the URL means no SNI: default_sni must pick the certificate (the IP is on no interface).
        caddy.wait_for(lambda: chains_to(https_port, PUBLIC_IP, root), "serving the certificate")
        assert peer_certificate(https_port, PUBLIC_IP, root) == peer_certificate(alt_port, PUBLIC_IP, root)
        # Caddy signs with the constrained intermediate, sends it along, and makes no CA of its own.
        assert issued_by(https_port, made) and constrained_to(root.read_text(), PUBLIC_IP)
        assert not own_ca_root(tmp_path).parent.exists()

        for port in (https_port, alt_port):
            response = get(port, PUBLIC_IP, "/api/health?x=1", cafile=root)
            assert response.status_code == 200
            assert response.text == f"{Upstream.MARKER} /api/health?x=1"

        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            get(https_port, PUBLIC_IP, "/api/health")  # the system store does not know the CA

        for port in (https_port, alt_port):
            plain = get(port, PUBLIC_IP, "/api/health", scheme="http")
            assert plain.status_code == 400 and Upstream.MARKER not in plain.text

        redirect = get(http_port, PUBLIC_IP, "/api/health?x=1", scheme="http")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == f"https://{PUBLIC_IP}:{https_port}/api/health?x=1"
        assert Upstream.MARKER not in redirect.text
        elsewhere = get(http_port, "other.example", "/", scheme="http")
        assert (elsewhere.status_code, elsewhere.headers["location"]) == (308, f"https://other.example:{https_port}/")

        # A reload (the unit's ExecReload: the script, with nothing to do, then `caddy reload`) goes
        # through the admin socket and takes effect; the CA stays.
        root_before = root.read_bytes()
        other = Upstream()
        try:
            assert made.run().stdout == ""
            caddy.reload(internal_on_loopback(tmp_path, other.port, ports, made.ca))
            response = get(https_port, PUBLIC_IP, "/after-reload", cafile=root)
            assert response.status_code == 200 and response.text == f"{Upstream.MARKER} /after-reload"
            assert other.requests == ["/after-reload"] and root.read_bytes() == root_before
            assert not own_ca_root(tmp_path).parent.exists()
        finally:
            other.close()
    finally:
        caddy.stop()


def test_a_caddy_issuing_from_its_own_ca_moves_to_the_constrained_one_on_a_reload(tmp_path, caddy_binary, upstream):
    """A host an earlier release set up: Caddy serves from a CA of its own making, which can vouch
    for any name. The bootstrap writes the new Caddyfile (with the `pki` block) and the CA's
    configuration, then reloads Caddy: ExecReload runs the script (it makes the CA, removes Caddy's
    own, its key included, and what it issued), then `caddy reload`. No restart."""
    ports = (free_port(LOOPBACK), free_port(LOOPBACK), free_port(LOOPBACK))
    https_port = ports[0]
    settings = internal_on_loopback(tmp_path, upstream.port, ports, tmp_path / "internal-ca" / "ca")
    earlier = without_pki(render_caddyfile(settings))
    assert "pki" not in earlier and "tls internal" in earlier
    caddy = CaddyProcess(caddy_binary, tmp_path, settings, caddyfile=earlier)
    try:
        own_root = own_ca_root(tmp_path)
        caddy.wait_for(lambda: own_root.is_file() and chains_to(https_port, PUBLIC_IP, own_root), "serving")
        own = tmp_path / "caddys-own-root.pem"
        own.write_bytes(own_root.read_bytes())
        assert not constrained_to(own.read_text(), PUBLIC_IP)

        made = make_ca(tmp_path / "internal-ca", PUBLIC_IP, caddy_data=caddy_data(tmp_path))
        assert not own_root.parent.exists()  # Caddy's own CA is gone, its root key with it
        caddy.reload(settings)
        caddy.wait_for(lambda: chains_to(https_port, PUBLIC_IP, made.root), "serving from the constrained CA")
        assert issued_by(https_port, made) and not chains_to(https_port, PUBLIC_IP, own)
        assert caddy.process.poll() is None and not own_root.parent.exists()
        response = get(https_port, PUBLIC_IP, "/api/health", cafile=made.root)
        assert response.status_code == 200 and response.text == f"{Upstream.MARKER} /api/health"
    finally:
        caddy.stop()


def test_acme_certificate_from_pebble_over_http01_chains_to_pebbles_root(tmp_path, caddy_binary, upstream):
    tool("pebble")
    https_port, alt_port, http_port = free_port(LOOPBACK), free_port(LOOPBACK), free_port(LOOPBACK)
    # Nothing listens on Pebble's TLS-ALPN-01 port, so only HTTP-01 on Caddy's HTTP port can succeed.
    closed_port = free_port(LOOPBACK)
    with (
        FixedAnswerDns(LOOPBACK, LOOPBACK) as dns,
        Pebble(
            LOOPBACK,
            dns_server=dns.server,
            http_port=http_port,
            tls_port=closed_port,
            acme_port=free_port(LOOPBACK),
            management_port=free_port(LOOPBACK),
        ) as pebble,
    ):
        acme_ca_root = tmp_path / "pebble-tls-ca.pem"
        acme_ca_root.write_text(pebble.tls_ca_pem())
        pebble_root = tmp_path / "pebble-root.pem"
        pebble_root.write_text(pebble.root_ca_pem())
        settings = CaddySettings(
            "acme",
            DOMAIN,
            upstream.port,
            acme_email="ops@example.com",
            acme_directory=pebble.directory_url,
            acme_ca_root=str(acme_ca_root),
            https_ports=(https_port, alt_port),
            http_port=http_port,
            bind_address=LOOPBACK,
            admin_socket=str(tmp_path / "admin.sock"),
        )
        started = time.monotonic()
        caddy = CaddyProcess(caddy_binary, tmp_path, settings)
        try:
            caddy.wait_for(
                lambda: chains_to(https_port, DOMAIN, pebble_root), "serving Pebble's certificate", timeout=60
            )
            print(f"certificate issued by Pebble in {time.monotonic() - started:.1f} s")
            assert '"challenge":"http-01"' in caddy.log.read_text(), pebble.log_tail()
            assert peer_certificate(https_port, DOMAIN, pebble_root) == peer_certificate(alt_port, DOMAIN, pebble_root)
            for port in (https_port, alt_port):
                response = get(port, DOMAIN, "/api/health", cafile=pebble_root)
                assert response.status_code == 200 and response.text == f"{Upstream.MARKER} /api/health"
            # Pebble's TLS CA (for talking to the directory) is not what the certificate chains to.
            with pytest.raises(ssl.SSLCertVerificationError):
                peer_certificate(https_port, DOMAIN, acme_ca_root)
        finally:
            caddy.stop()
