"""The TLS front door on the host: from the stack outputs to Caddy's desired state, and from the
host's facts to the steps still needed. Pure functions, in the style of steps.py.

Prefect listens on 127.0.0.1:4201; Caddy (Debian's package, sandboxed by a drop-in) terminates
TLS on 443 and 4200 and answers port 80 (caddy.py renders its configuration). Debian's postinst
starts Caddy at once with its default Caddyfile (a file server on :80, the admin API on TCP 2019),
so the first time the bootstrap restarts it: only a restart applies the sandbox, and the running
default instance cannot be reloaded onto a Caddyfile whose admin API is a unix socket. Afterwards
a changed Caddyfile means `systemctl reload caddy`, which keeps every connection and never touches
Prefect; a converged host yields no steps. A marker file records what the running Caddy was
(re)started or reloaded with, so a step that failed halfway is redone by the next run.

tls=off serves no Caddy: a Caddy left from an earlier mode is stopped and disabled, because it
would hold port 4200.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
import socket
import ssl
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from prefect_host import server_files as sf
from prefect_host.caddy import (
    ACME_CA_ROOT_PATH,
    CADDYFILE_PATH,
    HARDENING_DROPIN,
    HARDENING_DROPIN_PATH,
    INTERNAL_CA_ROOT_PATH,
    CaddySettings,
    TlsConfigError,
    render_caddyfile,
)
from prefect_host.errors import PrefectHostError
from prefect_host.outputs import StackOutputs
from prefect_host.ssh import write_file_script
from prefect_host.steps import Command, Step

# Prefect's port on loopback behind Caddy (Caddy owns 4200 on every interface).
UPSTREAM_PORT = sf.LOOPBACK_PORT
CADDY_PACKAGE = "caddy"
CADDY_UNIT = "caddy.service"
# "<drop-in digest> <configuration digest>" that the running Caddy was started or reloaded with.
CADDY_APPLIED_FILE = f"{sf.CONFIG_DIR}/caddy.applied"
APT_LOCK_TIMEOUT = 300
APT_ATTEMPTS = 3
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


def settings_from_outputs(outputs: StackOutputs, *, acme_ca_root_pem: str | None = None,
                          apt_source: str | None = None) -> TlsSettings:
    """Validated TLS settings; raises before anything on the host is changed."""
    if apt_source is not None:
        check_apt_source(apt_source)
    mode = outputs.tls_mode or "off"
    if acme_ca_root_pem is not None:
        if mode != "acme":
            raise TlsConfigError(f"--acme-ca-root only applies to tlsMode acme (a private ACME directory); "
                                 f"this stack's tlsMode is {mode}.")
        load_ca_certificate(acme_ca_root_pem, source="--acme-ca-root")
    if mode == "off":
        return TlsSettings(mode="off", address=None, apt_source=apt_source)
    address = outputs.domain if mode == "acme" else outputs.public_ip
    expected = f"https://{address}/api"
    if outputs.api_url.rstrip("/") != expected:
        raise TlsConfigError(f"apiUrl {outputs.api_url!r} is not where tlsMode {mode} serves the API "
                             f"({expected}, from output {'domain' if mode == 'acme' else 'publicIp'}); take all "
                             "outputs from the same `pulumi stack output`.")
    settings = TlsSettings(mode=mode, address=address, acme_email=outputs.acme_email,
                           acme_directory=outputs.acme_ca, acme_ca_root_pem=acme_ca_root_pem,
                           apt_source=apt_source)
    caddy_settings(settings)  # Caddy's own checks (a domain it serves, an e-mail, an https directory)
    return settings


def check_apt_source(line: str) -> str:
    if not isinstance(line, str) or not _APT_SOURCE.match(line):
        raise TlsConfigError(f"--apt-source {line!r}: expected one apt source line such as "
                             "\"deb http://deb.debian.org/debian trixie main\" or "
                             "\"deb [trusted=yes] http://10.77.0.1:8000/ ./\".")
    return line


def caddy_settings(settings: TlsSettings) -> CaddySettings:
    if settings.mode == "acme":
        return CaddySettings("acme", settings.address, UPSTREAM_PORT, acme_email=settings.acme_email,
                             acme_directory=settings.acme_directory,
                             acme_ca_root=ACME_CA_ROOT_PATH if settings.acme_ca_root_pem else None)
    return CaddySettings(settings.mode, settings.address, UPSTREAM_PORT)


@dataclass(frozen=True)
class CaddyDesired:
    caddyfile: str
    dropin: str = HARDENING_DROPIN
    acme_ca_root_pem: str | None = field(default=None, repr=False)
    apt_source: str | None = None

    @property
    def dropin_digest(self) -> str:
        return sf.sha256_text(self.dropin)

    @property
    def config_digest(self) -> str:
        """What a reload applies: the Caddyfile and the files it names."""
        return sf.sha256_text("\0".join((self.caddyfile, self.acme_ca_root_pem or "")))

    @property
    def applied_marker(self) -> str:
        return f"{self.dropin_digest} {self.config_digest}"


def desired_caddy(settings: TlsSettings) -> CaddyDesired | None:
    """Caddy's files for these settings; None for tls=off (no Caddy)."""
    if settings.mode == "off":
        return None
    return CaddyDesired(caddyfile=render_caddyfile(caddy_settings(settings)),
                        acme_ca_root_pem=settings.acme_ca_root_pem, apt_source=settings.apt_source)


# Runs as root inside the facts script (facts.py), in the same round trip as the server's facts.
CADDY_FACTS_SCRIPT = f"""\
caddy_sha() {{ [ -f "$1" ] && sha256sum "$1" | cut -d' ' -f1; }}
echo "caddy_package=$(dpkg-query -W -f='${{db:Status-Status}} ${{Version}}' {CADDY_PACKAGE} 2>/dev/null)"
echo "caddyfile_sha256=$(caddy_sha {CADDYFILE_PATH})"
echo "caddy_dropin_sha256=$(caddy_sha {HARDENING_DROPIN_PATH})"
echo "acme_ca_root_sha256=$(caddy_sha {ACME_CA_ROOT_PATH})"
if [ -f {CADDY_APPLIED_FILE} ]; then echo "caddy_applied=$(cat {CADDY_APPLIED_FILE})"; fi
echo "caddy_enabled=$(systemctl is-enabled {CADDY_UNIT} 2>/dev/null)"
systemctl show {CADDY_UNIT} -p ActiveState -p NeedDaemonReload 2>/dev/null | sed 's/^/caddy_/'
if [ -s {INTERNAL_CA_ROOT_PATH} ]; then echo "internal_ca_root_b64=$(base64 -w0 {INTERNAL_CA_ROOT_PATH})"; fi
"""


@dataclass(frozen=True)
class CaddyFacts:
    package_version: str | None = None  # None: the caddy package is not installed
    caddyfile_sha256: str | None = None
    dropin_sha256: str | None = None
    acme_ca_root_sha256: str | None = None
    applied: str | None = None
    enabled: str | None = None
    active_state: str | None = None
    need_daemon_reload: bool = False
    internal_ca_root_pem: str | None = field(default=None, repr=False)


def parse_caddy_facts(text: str) -> CaddyFacts:
    """The CADDY_FACTS_SCRIPT lines of the facts output (other lines are ignored)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    status, _, version = values.get("caddy_package", "").partition(" ")
    root = values.get("internal_ca_root_b64")
    try:
        root_pem = base64.b64decode(root, validate=True).decode() if root else None
    except (binascii.Error, UnicodeDecodeError):
        root_pem = None  # read again (and checked) after the restart
    return CaddyFacts(
        package_version=(version or None) if status == "installed" else None,
        caddyfile_sha256=values.get("caddyfile_sha256") or None,
        dropin_sha256=values.get("caddy_dropin_sha256") or None,
        acme_ca_root_sha256=values.get("acme_ca_root_sha256") or None,
        applied=values.get("caddy_applied") or None,
        enabled=values.get("caddy_enabled") or None,
        active_state=values.get("caddy_ActiveState") or None,
        need_daemon_reload=values.get("caddy_NeedDaemonReload") == "yes",
        internal_ca_root_pem=root_pem,
    )


def plan_caddy(facts: CaddyFacts, desired: CaddyDesired | None) -> list[Step]:
    """The steps that take Caddy from `facts` to `desired`, in order; [] when converged.

    The bootstrap runs them after Prefect has moved to loopback (so port 4200 is free), or, for
    tls=off, before Prefect takes port 4200 back."""
    if desired is None:
        if facts.active_state in ("active", "activating", "reloading") or facts.enabled == "enabled":
            return [Step(f"stop and disable {CADDY_UNIT} (tls off)", (Command(
                f"systemctl disable --now --quiet {CADDY_UNIT} && rm -f {shlex.quote(CADDY_APPLIED_FILE)}",
                f"systemctl disable --now {CADDY_UNIT}"),))]
        return []
    steps: list[Step] = []
    if facts.package_version is None:
        steps.append(_install_caddy(desired.apt_source))
    if desired.acme_ca_root_pem is not None:
        if facts.acme_ca_root_sha256 != sf.sha256_text(desired.acme_ca_root_pem):
            steps.append(Step(f"write {ACME_CA_ROOT_PATH}", (
                _write(ACME_CA_ROOT_PATH, desired.acme_ca_root_pem, 0o644),)))
    elif facts.acme_ca_root_sha256 is not None:
        steps.append(Step(f"remove {ACME_CA_ROOT_PATH}", (Command(
            f"rm -f {shlex.quote(ACME_CA_ROOT_PATH)}", f"rm {ACME_CA_ROOT_PATH}"),)))
    if facts.caddyfile_sha256 != sf.sha256_text(desired.caddyfile):
        steps.append(Step(f"write {CADDYFILE_PATH}", (_write(CADDYFILE_PATH, desired.caddyfile, 0o644),)))
    if facts.dropin_sha256 != desired.dropin_digest or facts.need_daemon_reload:
        steps.append(Step(f"sandbox {CADDY_UNIT}", (
            _write(HARDENING_DROPIN_PATH, desired.dropin, 0o644),
            Command("systemctl daemon-reload", "systemctl daemon-reload"))))
    if facts.enabled != "enabled":
        steps.append(Step(f"enable {CADDY_UNIT}", (Command(
            f"systemctl enable --quiet {CADDY_UNIT}", f"systemctl enable {CADDY_UNIT}"),)))
    applied_dropin, _, applied_config = (facts.applied or "").partition(" ")
    record = (f"mkdir -p {shlex.quote(sf.CONFIG_DIR)} && "
              f"printf '%s\\n' {shlex.quote(desired.applied_marker)} > {shlex.quote(CADDY_APPLIED_FILE)}")
    if facts.active_state != "active" or applied_dropin != desired.dropin_digest:
        verb = "restart" if facts.active_state == "active" else "start"
        steps.append(Step(f"{verb} Caddy", (Command(
            f"systemctl restart {CADDY_UNIT} && {record}", f"systemctl restart {CADDY_UNIT}"),)))
    elif applied_config != desired.config_digest:
        steps.append(Step("reload Caddy", (Command(
            f"systemctl reload {CADDY_UNIT} && {record}", f"systemctl reload {CADDY_UNIT}"),)))
    return steps


def _install_caddy(apt_source: str | None) -> Step:
    """apt-get, non-interactive, waiting for the dpkg lock (cloud-init or unattended-upgrades may
    hold it at first boot) and retrying downloads; the whole update+install is retried too (a
    mirror mid-sync, the lists lock). With `apt_source`, apt reads only that source, with package
    lists of its own: the host's sources and lists are neither used nor changed."""
    q = shlex.quote
    options = (f"-q -o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT} -o Acquire::Retries=3 "
               "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold")
    prepare = ""
    if apt_source is not None:
        prepare = ("apt_dir=$(mktemp -d) && trap 'rm -rf \"$apt_dir\"' EXIT && "
                   "mkdir -p \"$apt_dir/parts\" \"$apt_dir/lists/partial\" && "
                   f"printf '%s\\n' {q(apt_source)} > \"$apt_dir/sources.list\" && ")
        options += (" -o Dir::Etc::SourceList=$apt_dir/sources.list -o Dir::Etc::SourceParts=$apt_dir/parts"
                    " -o Dir::State::Lists=$apt_dir/lists -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=")
    script = (
        f"export DEBIAN_FRONTEND=noninteractive && {prepare}"
        f"for attempt in $(seq 1 {APT_ATTEMPTS}); do "
        f"apt-get {options} update && "
        f"apt-get {options} -y --no-install-recommends install {CADDY_PACKAGE} && exit 0; "
        f"[ \"$attempt\" -lt {APT_ATTEMPTS} ] && sleep $((attempt * 10)); "
        "done; exit 1")
    label = f"apt-get install {CADDY_PACKAGE}" + (" (from --apt-source)" if apt_source else "")
    return Step(f"install {CADDY_PACKAGE} (apt)", (Command(script, label, timeout=1200),))


def _write(path: str, content: str, mode: int) -> Command:
    return Command(write_file_script(path, mode=mode), f"write {path}", stdin=content.encode())


def read_internal_ca_root(timeout: float = INTERNAL_CA_ROOT_TIMEOUT) -> Command:
    """Prints Caddy's internal CA root (base64 of the PEM) once Caddy has created it: Caddy makes
    it when it first loads a `tls internal` configuration, just after the (re)start."""
    path = shlex.quote(INTERNAL_CA_ROOT_PATH)
    tries = max(1, int(timeout / 0.2))
    return Command(f"for i in $(seq 1 {tries}); do [ -s {path} ] && exec base64 -w0 {path}; sleep 0.2; done; "
                   f"echo 'Caddy created no CA root at {INTERNAL_CA_ROOT_PATH} within {timeout:g} s' >&2; exit 1",
                   f"read Caddy's CA root {INTERNAL_CA_ROOT_PATH}", timeout=timeout + 30)


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
        raise TlsError(f"{source}: {certificate.subject.rfc4514_string()} is not a CA certificate; give the "
                       "root CA that issued the server's certificate.")
    digest = certificate.fingerprint(hashes.SHA256()).hex().upper()
    return CaCertificate(pem=certificate.public_bytes(Encoding.PEM).decode(),
                         fingerprint=":".join(digest[i:i + 2] for i in range(0, len(digest), 2)))


def server_ssl_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verification of the server's certificate: against exactly `ca_pem` (the pinned CA) when
    given, else against the system trust store. Never without verification."""
    return ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()


def wait_for_certificate(server_name: str, port: int, context: ssl.SSLContext, *, timeout: float,
                         poll_every: float = 0.5) -> str | None:
    """Poll TLS handshakes with server_name:port until the certificate served verifies against
    `context` for server_name. Returns None once it does, or the last failure after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((server_name, port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname=server_name):
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
        return TlsError(f"https://{settings.address} did not serve a certificate from the CA read from the host "
                        f"within {waited:g} s ({last}). Is another server answering on {settings.address}? "
                        "Caddy's journal on the host is printed above.")
    try:
        resolved = sorted({info[4][0] for info in socket.getaddrinfo(settings.address, 443, socket.AF_INET)})
    except OSError as exc:
        resolved = []
        dns = f"{settings.address} does not resolve here ({exc.strerror or exc})"
    else:
        dns = (f"{settings.address} resolves to {', '.join(resolved)}"
               + ("" if public_ip in resolved else f", not to the static IP {public_ip}"))
    return TlsError(
        f"Caddy did not obtain a trusted certificate for {settings.address} from {settings.acme_directory} within "
        f"{waited:g} s (last: {last}). Likely causes: (1) DNS: {dns}; point an A record at {public_ip} and "
        f"wait for it to propagate; (2) ports 80 and 443 are not reachable from the internet (allowedCidrs, a "
        "firewall in front of the VM): the CA validates the domain over them; (3) the CA refused or "
        "rate-limited the order. Caddy's journal on the host, printed above, names the exact error; "
        "run the bootstrap again once fixed: Caddy keeps retrying meanwhile.")


def browser_trust_hint(ca_path: str, fingerprint: str) -> list[str]:
    """How to make a browser trust the pinned CA (the CLI trusts it through the profile already)."""
    return [
        f"CA certificate: {ca_path}",
        f"  SHA-256 fingerprint: {fingerprint}",
        "  Compare it with the fingerprint a teammate's bootstrap prints before trusting a copy.",
        "  To open the UI without a warning, trust this CA in your browser:",
        "    Firefox: Settings > Privacy & Security > Certificates > View Certificates > Authorities > "
        "Import, tick 'Trust this CA to identify websites'",
        "    Chrome/Edge on Linux: certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n prefect-host -i " + ca_path,
        "    macOS: sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain "
        + ca_path,
        "    Windows: certutil -addstore -user Root " + ca_path,
    ]
