"""TLS on the laptop's side: the settings the stack outputs give, the CA the profile pins, and
waiting for a certificate that verifies. (Caddy on the host: tests/prefect_host/services/test_caddy_service.py.)"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_host.caddy import ACME_CA_ROOT_PATH, CaddySettings, TlsConfigError, render_caddyfile
from prefect_host.local.pebble import free_port, make_tls_ca_and_certificate
from prefect_host.outputs import StackOutputs
from prefect_host.tls import (
    UPSTREAM_PORT,
    TlsError,
    TlsSettings,
    browser_trust_hint,
    caddy_settings,
    certificate_timeout_error,
    load_ca_certificate,
    server_ssl_context,
    settings_from_outputs,
    wait_for_certificate,
)

IP = "203.0.113.7"
DOMAIN = "prefect.example.com"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
MIRROR = "deb [trusted=yes] http://10.77.0.1:8123/ ./"
BASE = {
    "cloud": "aws",
    "publicIp": IP,
    "sshUser": "admin",
    "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdummy",
    "prefectVersion": "3.9.1",
    "prefectAuthString": "admin:hunter2",
    "bucketName": "b-1",
    "bucketRegion": "eu-west-1",
    "iamGroupName": "S3-FullAccess",
    "iamUserName": "u",
    "awsAccessKeyId": "AKIA",
    "awsSecretAccessKey": "s",
}
INTERNAL = {**BASE, "apiUrl": f"https://{IP}/api", "uiUrl": f"https://{IP}", "tlsMode": "internal"}
ACME = {
    **BASE,
    "apiUrl": f"https://{DOMAIN}/api",
    "uiUrl": f"https://{DOMAIN}",
    "tlsMode": "acme",
    "domain": DOMAIN,
    "acmeCa": LETS_ENCRYPT,
    "acmeEmail": "ops@example.com",
}
PLAINTEXT = {**BASE, "apiUrl": f"http://{IP}:4200/api", "uiUrl": f"http://{IP}:4200", "tlsMode": "off"}


def outputs(data: dict, **changes) -> StackOutputs:
    return StackOutputs.from_mapping({**data, **changes})


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory) -> str:
    ca_path, _, _ = make_tls_ca_and_certificate(tmp_path_factory.mktemp("ca"), "10.77.0.1")
    return ca_path.read_text()


@pytest.fixture(scope="module")
def leaf_pem(tmp_path_factory) -> str:
    _, cert_path, _ = make_tls_ca_and_certificate(tmp_path_factory.mktemp("leaf"), "10.77.0.1")
    return cert_path.read_text()


# --- settings from the outputs ----------------------------------------------------------------


def test_internal_serves_the_public_ip_with_prefect_behind_on_loopback_4201():
    settings = settings_from_outputs(outputs(INTERNAL))
    assert (settings.mode, settings.address, settings.apt_source) == ("internal", IP, None)
    assert caddy_settings(settings) == CaddySettings("internal", IP, UPSTREAM_PORT)
    caddyfile = render_caddyfile(caddy_settings(settings))
    assert "tls internal" in caddyfile and f"reverse_proxy 127.0.0.1:{UPSTREAM_PORT}" in caddyfile
    assert settings.acme_ca_root_pem is None and UPSTREAM_PORT == 4201


def test_acme_takes_domain_email_and_directory_from_the_outputs(ca_pem):
    plain = caddy_settings(settings_from_outputs(outputs(ACME)))
    assert plain == CaddySettings(
        "acme", DOMAIN, UPSTREAM_PORT, acme_email="ops@example.com", acme_directory=LETS_ENCRYPT
    )
    assert "acme_ca_root" not in render_caddyfile(plain)
    pebble = settings_from_outputs(
        outputs(ACME, acmeCa="https://10.77.0.1:14000/dir"), acme_ca_root_pem=ca_pem, apt_source=MIRROR
    )
    caddyfile = render_caddyfile(caddy_settings(pebble))
    assert f"acme_ca_root {ACME_CA_ROOT_PATH}" in caddyfile and "acme_ca https://10.77.0.1:14000/dir" in caddyfile
    assert (pebble.acme_ca_root_pem, pebble.apt_source) == (ca_pem, MIRROR)


def test_plaintext_has_no_caddy_settings_but_keeps_the_apt_source():
    settings = settings_from_outputs(outputs(PLAINTEXT), apt_source=MIRROR)
    assert (settings.mode, settings.address, settings.apt_source) == ("off", None, MIRROR)


@pytest.mark.parametrize(
    "data, kwargs, words",
    [
        (
            dict(INTERNAL, apiUrl="https://198.51.100.1/api", uiUrl="https://198.51.100.1"),
            {},
            ["apiUrl", "https://198.51.100.1/api", f"https://{IP}/api", "publicIp"],
        ),
        (
            dict(ACME, apiUrl=f"https://{IP}/api", uiUrl=f"https://{IP}"),
            {},
            ["apiUrl", f"https://{DOMAIN}/api", "domain"],
        ),
        (
            dict(ACME, domain="prefect_host.example.com", apiUrl="https://prefect_host.example.com/api"),
            {},
            ["domain", "prefect_host.example.com", "not a DNS name"],
        ),
        (dict(ACME, acmeEmail="ops at example.com"), {}, ["acmeEmail", "ops at example.com"]),
        (INTERNAL, {"acme_ca_root_pem": "x"}, ["--acme-ca-root", "tlsMode acme", "internal"]),
        (ACME, {"apt_source": "http://10.77.0.1/ ./"}, ["--apt-source", "http://10.77.0.1/ ./", "deb "]),
        (ACME, {"apt_source": MIRROR + "\ndeb http://evil.example/ ./"}, ["--apt-source"]),
    ],
)
def test_inconsistent_settings_are_refused_naming_them(data, kwargs, words):
    with pytest.raises(TlsConfigError) as error:
        settings_from_outputs(outputs(data), **kwargs)
    for word in words:
        assert word in str(error.value)


def test_the_acme_ca_root_must_be_a_ca_certificate(leaf_pem):
    with pytest.raises(TlsError, match="--acme-ca-root: not a PEM certificate"):
        settings_from_outputs(outputs(ACME), acme_ca_root_pem="-----BEGIN CERTIFICATE-----\nAAAA\n")
    with pytest.raises(TlsError, match=r"--acme-ca-root: CN=10\.77\.0\.1 is not a CA certificate"):
        settings_from_outputs(outputs(ACME), acme_ca_root_pem=leaf_pem)


def test_ca_fingerprint_is_the_one_openssl_and_browsers_show(tmp_path, ca_pem):
    ca = load_ca_certificate(ca_pem, source="the host")
    path = tmp_path / "ca.pem"
    path.write_text(ca_pem)
    openssl = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert openssl == f"sha256 Fingerprint={ca.fingerprint}" or openssl == f"SHA256 Fingerprint={ca.fingerprint}"
    assert ca.pem == ca_pem


# --- waiting for a trusted certificate ---------------------------------------------------------


class TlsServer:
    """Accepts TLS handshakes on loopback with a certificate for 127.0.0.1 from its own CA."""

    def __init__(self, directory: Path):
        self.ca_path, cert, key = make_tls_ca_and_certificate(directory, "127.0.0.1")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._context = context
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self._context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def tls_server(tmp_path) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path)
    yield server
    server.close()


def test_wait_for_certificate_returns_once_it_verifies(tls_server):
    context = server_ssl_context(tls_server.ca_path.read_text())
    assert wait_for_certificate("127.0.0.1", tls_server.port, context, timeout=5) is None


def test_wait_for_certificate_reports_why_it_gave_up(tls_server, ca_pem):
    other_ca = server_ssl_context(ca_pem)
    started = time.monotonic()
    last = wait_for_certificate("127.0.0.1", tls_server.port, other_ca, timeout=0.6, poll_every=0.1)
    assert 0.6 <= time.monotonic() - started < 5
    assert last.startswith("the certificate served does not verify") and "unable to get local issuer" in last
    # The system trust store does not know a private CA either.
    assert "does not verify" in wait_for_certificate("127.0.0.1", tls_server.port, server_ssl_context(None), timeout=0)
    closed = free_port("127.0.0.1")
    assert "ConnectionRefusedError" in wait_for_certificate("127.0.0.1", closed, other_ca, timeout=0)


def test_acme_timeout_names_the_likely_causes_with_what_dns_says():
    acme = TlsSettings(mode="acme", address="localhost", acme_directory=LETS_ENCRYPT)
    message = str(certificate_timeout_error(acme, public_ip=IP, waited=180, last="ConnectionRefusedError"))
    assert f"for localhost from {LETS_ENCRYPT} within 180 s (last: ConnectionRefusedError)" in message
    assert f"localhost resolves to 127.0.0.1, not to the static IP {IP}" in message
    assert "ports 80 and 443" in message and "allowedCidrs" in message and "rate-limited" in message
    unknown = TlsSettings(mode="acme", address="prefect-host.invalid", acme_directory=LETS_ENCRYPT)
    assert "prefect-host.invalid does not resolve here" in str(
        certificate_timeout_error(unknown, public_ip=IP, waited=5, last="x")
    )
    internal = TlsSettings(mode="internal", address=IP)
    assert "CA read from the host" in str(certificate_timeout_error(internal, public_ip=IP, waited=5, last="x"))


def test_browser_hint_names_the_file_and_fingerprint_and_trusts_for_this_user_only(ca_pem):
    ca = load_ca_certificate(ca_pem, source="test")
    path = "/home/me/.prefect/p-ca.pem"
    lines = browser_trust_hint(path, ca.fingerprint, ["203.0.113.7"])
    assert lines[0] == f"CA certificate: {path}" and ca.fingerprint in lines[1]
    assert "vouch only for 203.0.113.7" in lines[2]
    text = "\n".join(lines)
    # The user's NSS database, login keychain (TLS only) and certificate store; nothing system-wide.
    assert f"certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n p-ca -i {path}" in text
    assert f"security add-trusted-cert -r trustRoot -p ssl -k ~/Library/Keychains/login.keychain-db {path}" in text
    assert f"certutil -user -addstore Root {path}" in text and "Firefox" in text
    assert "sudo" not in text and "System.keychain" not in text and " -d " not in text.replace("certutil -d", "")
    # A CA without name constraints (a private ACME CA given with --ca-file) is said to be one.
    assert "no name constraints" in browser_trust_hint(path, ca.fingerprint)[2]


def test_an_apt_source_with_a_trailing_newline_is_refused():
    from prefect_host.tls import check_apt_source

    check_apt_source("deb http://deb.debian.org/debian trixie main")
    with pytest.raises(TlsConfigError, match="--apt-source"):
        check_apt_source("deb http://deb.debian.org/debian trixie main\n")
