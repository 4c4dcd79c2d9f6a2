"""TLS on the laptop's side: the settings the stack outputs give (validated before anything on the
host changes), the CA the profile pins, and waiting for the certificate the host serves.

Prefect listens on 127.0.0.1:4201; Caddy terminates TLS on 443 and 4200 (prefect_host.caddy renders
its configuration, prefect_host.services.caddy declares it on the host).
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from prefect_host.caddy import ACME_CA_ROOT_PATH, CaddySettings, TlsConfigError
from prefect_host.errors import PrefectHostError
from prefect_host.outputs import StackOutputs

# Prefect's port on loopback behind Caddy (Caddy owns 4200 on every interface); the server
# service (prefect_host.services.prefect_server.LOOPBACK_PORT) listens there.
UPSTREAM_PORT = 4201
INTERNAL_CA_ROOT_TIMEOUT = 30.0
# Let's Encrypt usually issues within 10-30 s of Caddy's first attempt; Caddy retries with backoff.
ACME_CERTIFICATE_TIMEOUT = 180.0

# One-line-style apt source: `deb [options] URI suite [components]`.
_APT_SOURCE = re.compile(r"^deb(\s+\[[^\]\n]*\])?\s+[a-z+]+://\S+\s+\S+(\s+[A-Za-z0-9._/-]+)*$")


class TlsError(PrefectHostError):
    """A certificate or CA the bootstrap was given, or read from the host, is not usable."""


@dataclass(frozen=True)
class TlsSettings:
    """How the server is reached, from the stack outputs plus two bootstrap flags.

    `address` is what the certificate names: the domain (acme), the public IPv4 address
    (internal) or None (off). `acme_ca_root_pem` is a CA the ACME client must trust to reach a
    private directory (Pebble in tests); `apt_source` is an apt source line that replaces the
    host's sources for installing Caddy (a mirror, or the tests' local repository)."""

    mode: str
    address: str | None
    acme_email: str | None = None
    acme_directory: str | None = None
    acme_ca_root_pem: str | None = field(default=None, repr=False)
    apt_source: str | None = None


def settings_from_outputs(
    outputs: StackOutputs, *, acme_ca_root_pem: str | None = None, apt_source: str | None = None
) -> TlsSettings:
    """Validated TLS settings; raises before anything on the host is changed."""
    if apt_source is not None:
        check_apt_source(apt_source)
    mode = outputs.tls_mode or "off"
    if acme_ca_root_pem is not None:
        if mode != "acme":
            raise TlsConfigError(
                f"--acme-ca-root only applies to tlsMode acme (a private ACME directory); "
                f"this stack's tlsMode is {mode}."
            )
        load_ca_certificate(acme_ca_root_pem, source="--acme-ca-root")
    if mode == "off":
        return TlsSettings(mode="off", address=None, apt_source=apt_source)
    address = outputs.domain if mode == "acme" else outputs.public_ip
    expected = f"https://{address}/api"
    if outputs.api_url.rstrip("/") != expected:
        raise TlsConfigError(
            f"apiUrl {outputs.api_url!r} is not where tlsMode {mode} serves the API "
            f"({expected}, from output {'domain' if mode == 'acme' else 'publicIp'}); take all "
            "outputs from the same `pulumi stack output`."
        )
    settings = TlsSettings(
        mode=mode,
        address=address,
        acme_email=outputs.acme_email,
        acme_directory=outputs.acme_ca,
        acme_ca_root_pem=acme_ca_root_pem,
        apt_source=apt_source,
    )
    caddy_settings(settings)  # Caddy's own checks (a domain it serves, an e-mail, an https directory)
    return settings


def check_apt_source(line: str) -> str:
    if not isinstance(line, str) or not _APT_SOURCE.fullmatch(line):
        raise TlsConfigError(
            f"--apt-source {line!r}: expected one apt source line such as "
            '"deb http://deb.debian.org/debian trixie main" or '
            '"deb [trusted=yes] http://10.77.0.1:8000/ ./".'
        )
    return line


def caddy_settings(settings: TlsSettings) -> CaddySettings:
    if settings.mode == "acme":
        return CaddySettings(
            "acme",
            settings.address,
            UPSTREAM_PORT,
            acme_email=settings.acme_email,
            acme_directory=settings.acme_directory,
            acme_ca_root=ACME_CA_ROOT_PATH if settings.acme_ca_root_pem else None,
        )
    return CaddySettings(settings.mode, settings.address, UPSTREAM_PORT)


@dataclass(frozen=True)
class CaCertificate:
    pem: str
    fingerprint: str  # SHA-256 of the DER, as browsers and `openssl x509 -fingerprint -sha256` show it


def load_ca_certificate(pem: str, *, source: str) -> CaCertificate:
    """One PEM CA certificate (what clients pin); raises TlsError naming `source` otherwise."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError):
        raise TlsError(f"{source}: not a PEM certificate (-----BEGIN CERTIFICATE-----).") from None
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise TlsError(
            f"{source}: {certificate.subject.rfc4514_string()} is not a CA certificate; give the "
            "root CA that issued the server's certificate."
        )
    digest = certificate.fingerprint(hashes.SHA256()).hex().upper()
    return CaCertificate(
        pem=certificate.public_bytes(Encoding.PEM).decode(),
        fingerprint=":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
    )


def server_ssl_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verification of the server's certificate: against exactly `ca_pem` (the pinned CA) when
    given, else against the system trust store. Never without verification."""
    return ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()


def wait_for_certificate(
    server_name: str, port: int, context: ssl.SSLContext, *, timeout: float, poll_every: float = 0.5
) -> str | None:
    """Poll TLS handshakes with server_name:port until the certificate served verifies against
    `context` for server_name. Returns None once it does, or the last failure after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with (
                socket.create_connection((server_name, port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=server_name),
            ):
                return None
        except ssl.SSLCertVerificationError as exc:
            last = f"the certificate served does not verify: {exc.verify_message}"
        except (OSError, ssl.SSLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            return last
        time.sleep(poll_every)


def certificate_timeout_error(settings: TlsSettings, *, public_ip: str, waited: float, last: str) -> TlsError:
    """Why no trusted certificate is served: the likely causes, checked where they can be."""
    if settings.mode != "acme":
        return TlsError(
            f"https://{settings.address} did not serve a certificate from the CA read from the host "
            f"within {waited:g} s ({last}). Is another server answering on {settings.address}? "
            "Caddy's journal on the host is printed above."
        )
    try:
        resolved = sorted({info[4][0] for info in socket.getaddrinfo(settings.address, 443, socket.AF_INET)})
    except OSError as exc:
        resolved = []
        dns = f"{settings.address} does not resolve here ({exc.strerror or exc})"
    else:
        dns = f"{settings.address} resolves to {', '.join(resolved)}" + (
            "" if public_ip in resolved else f", not to the static IP {public_ip}"
        )
    return TlsError(
        f"Caddy did not obtain a trusted certificate for {settings.address} from {settings.acme_directory} within "
        f"{waited:g} s (last: {last}). Likely causes: (1) DNS: {dns}; point an A record at {public_ip} and "
        f"wait for it to propagate; (2) ports 80 and 443 are not reachable from the internet (allowedCidrs, a "
        "firewall in front of the VM): the CA validates the domain over them; (3) the CA refused or "
        "rate-limited the order. Caddy's journal on the host, printed above, names the exact error; "
        "run the bootstrap again once fixed: Caddy keeps retrying meanwhile."
    )


def browser_trust_hint(ca_path: str, fingerprint: str, scope: list[str] | None = None) -> list[str]:
    """How to make a browser trust the pinned CA (the CLI trusts it through the profile already),
    for this user only: a CA whose key is on a server has no place in a system-wide store. `scope`:
    the names the CA can vouch for (its name constraints), None when it can vouch for any."""
    nickname = Path(ca_path).stem
    if scope:
        reach = f"  It can vouch only for {', '.join(scope)} (X.509 name constraints), not for other sites."
    else:
        reach = "  It carries no name constraints: it can vouch for any site; trust it only if you run it."
    return [
        f"CA certificate: {ca_path}",
        f"  SHA-256 fingerprint: {fingerprint}",
        reach,
        "  Compare it with the fingerprint a teammate's bootstrap prints before trusting a copy.",
        "  To open the UI without a warning, trust it for your user only (not system-wide):",
        "    Firefox: Settings > Privacy & Security > Certificates > View Certificates > Authorities > "
        "Import, tick only 'Trust this CA to identify websites'",
        f"    Chrome/Edge on Linux (your NSS database): certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n {nickname} "
        f"-i {ca_path}",
        "    macOS (your login keychain, for TLS only): security add-trusted-cert -r trustRoot -p ssl "
        f"-k ~/Library/Keychains/login.keychain-db {ca_path}",
        f"    Windows (your user's store): certutil -user -addstore Root {ca_path}",
    ]
