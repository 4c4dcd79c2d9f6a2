"""Caddy as the TLS front door of a Prefect host: the Caddyfile and the systemd hardening drop-in.

Pure rendering; nothing here touches a host. Caddy 2.6.2 (Debian 12 and 13) terminates TLS on
443 and 4200 with one certificate and proxies to Prefect on loopback; port 80 answers ACME
HTTP-01 challenges (Caddy's HTTP challenge handler runs before any route on its HTTP port) and
redirects everything else to HTTPS.

- internal: the site is `https://<IPv4>`; `tls internal` has Caddy's internal CA issue a
  certificate with the IP address as its subject alternative name. The `pki` block gives Caddy
  the CA prefect_host.internal_ca makes on the host, constrained to this server's names, instead of
  the unconstrained one Caddy would make. Clients connecting to an IP send no SNI, and on a cloud
  VM the public IP is not on any interface, so `default_sni` names the IP for them.
- acme: the site is the domain; Caddy obtains its certificate from `acme_ca` (HTTP-01 on port
  80 or TLS-ALPN-01 on 443, whichever the CA validates first).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from prefect_host.errors import PrefectHostError

TLS_MODES = ("internal", "acme")
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
HTTPS_PORTS = (443, 4200)
HTTP_PORT = 80

CADDYFILE_PATH = "/etc/caddy/Caddyfile"
# Debian's postinst creates the caddy user with this home; systemd sets HOME from User=, and Caddy
# keeps its data in $XDG_DATA_HOME/caddy, by default $HOME/.local/share/caddy.
CADDY_HOME = "/var/lib/caddy"
CADDY_DATA_DIR = f"{CADDY_HOME}/.local/share/caddy"
# The internal CA Caddy issues from (prefect_host.internal_ca makes it on the host): its root, what
# clients pin, and the intermediate Caddy signs with. In Caddy's home: StateDirectory, 0700.
INTERNAL_CA_DIR = f"{CADDY_HOME}/prefect-host-ca"
INTERNAL_CA_ROOT_PATH = f"{INTERNAL_CA_DIR}/root.crt"
# The CA Caddy makes itself when none is configured (earlier releases): it can vouch for any name.
CADDY_OWN_CA_DIR = f"{CADDY_DATA_DIR}/pki/authorities/local"
CADDY_OWN_CA_ROOT_PATH = f"{CADDY_OWN_CA_DIR}/root.crt"
# Where the bootstrap puts a PEM the ACME client must trust to reach a private directory (Pebble).
ACME_CA_ROOT_PATH = "/etc/caddy/acme-ca-root.pem"
# The admin API on a socket only the caddy user can reach: on TCP (Caddy's default localhost:2019)
# any local process, flow code included, could replace the configuration. `caddy reload` (the
# unit's ExecReload, run as caddy) finds the socket in the Caddyfile.
ADMIN_SOCKET = "/run/caddy/admin.sock"
HARDENING_DROPIN_PATH = "/etc/systemd/system/caddy.service.d/10-prefect-host-hardening.conf"

# Added to Debian's caddy.service (User=caddy, AmbientCapabilities=CAP_NET_BIND_SERVICE,
# ProtectSystem=full, PrivateTmp=true). Caddy writes only its data and autosave under its home.
HARDENING_DROPIN = """\
# prefect-host: sandbox Debian's caddy.service. Caddy only needs to bind 80/443/4200, write its
# certificates under /var/lib/caddy and talk TCP to Prefect on loopback and to the ACME CA.
[Service]
# As root, first: the cloud's metadata service rejects the caddy user (prefect_host.services.metadata_guard).
ExecStartPre=-+/usr/local/sbin/prefect-host-metadata-guard
StateDirectory=caddy
StateDirectoryMode=0700
LogsDirectory=caddy
RuntimeDirectory=caddy
RuntimeDirectoryMode=0700
UMask=0077
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
PrivateDevices=true
PrivateMounts=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectKernelLogs=true
ProtectControlGroups=true
ProtectClock=true
ProtectHostname=true
ProtectProc=invisible
ProcSubset=pid
NoNewPrivileges=true
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_NET_BIND_SERVICE
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=true
RestrictRealtime=true
RestrictSUIDSGID=true
LockPersonality=true
MemoryDenyWriteExecute=true
RemoveIPC=true
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
"""


class TlsConfigError(PrefectHostError):
    """The TLS front door was asked for something Caddy cannot or must not serve."""


# RFC 1123 host names: letters, digits, hyphens; labels of 1-63 characters, not starting or ending
# with a hyphen; at least two labels (a bare name cannot get a public certificate).
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
_EMAIL = re.compile(r"^[A-Za-z0-9.!$%&*+/=?^_|~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
# Anything that reaches the Caddyfile is one token: no spaces, quotes, braces or comment marks.
_TOKEN = re.compile(r"^[^\s\"'{}#`]+$")


def _is_ip(value: str) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _check_port(value: int, setting: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise TlsConfigError(f"{setting}={value!r} is not a TCP port; use an integer from 1 to 65535.")


@dataclass(frozen=True)
class CaddySettings:
    """What the Caddyfile serves. `address` is the host's public IPv4 address (internal mode)
    or its domain name (acme mode); Prefect listens on 127.0.0.1:`upstream_port`.
    `bind_address` (tests) restricts every listener to one address; on a host Caddy listens on
    all interfaces, because a cloud VM's public IP is not on any of them. `internal_ca_dir` (tests)
    is where the internal CA's files are."""

    mode: str
    address: str
    upstream_port: int
    acme_email: str | None = None
    acme_directory: str = LETS_ENCRYPT_DIRECTORY
    acme_ca_root: str | None = None
    https_ports: tuple[int, ...] = HTTPS_PORTS
    http_port: int = HTTP_PORT
    bind_address: str | None = None
    admin_socket: str = ADMIN_SOCKET
    internal_ca_dir: str = INTERNAL_CA_DIR

    def __post_init__(self) -> None:
        if self.mode not in TLS_MODES:
            raise TlsConfigError(
                f"tls mode {self.mode!r} cannot be rendered for Caddy; use one of "
                f"{', '.join(TLS_MODES)} ('off' serves no Caddy at all)."
            )
        if self.mode == "internal":
            if not _is_ip(self.address) or ipaddress.ip_address(self.address).version != 4:
                raise TlsConfigError(f"tls=internal needs the host's public IPv4 address; got {self.address!r}.")
        else:
            if (
                not isinstance(self.address, str)
                or not _DOMAIN.fullmatch(self.address)
                or len(self.address) > 253
                or _is_ip(self.address)
            ):
                raise TlsConfigError(
                    f"domain={self.address!r} is not a DNS name; use lower-case labels of "
                    "letters, digits and hyphens separated by dots, e.g. prefect.example.com."
                )
            if self.acme_email is not None and (
                not isinstance(self.acme_email, str) or not _EMAIL.fullmatch(self.acme_email)
            ):
                raise TlsConfigError(f"acmeEmail={self.acme_email!r} is not an e-mail address such as ops@example.com.")
            if (
                not isinstance(self.acme_directory, str)
                or not self.acme_directory.startswith("https://")
                or not _TOKEN.fullmatch(self.acme_directory)
            ):
                raise TlsConfigError(
                    f"acmeCa={self.acme_directory!r} must be the https:// URL of an ACME "
                    f"(RFC 8555) directory, e.g. {LETS_ENCRYPT_DIRECTORY}."
                )
        for setting in ("acme_ca_root", "admin_socket", "internal_ca_dir"):
            path = getattr(self, setting)
            if path is not None and (
                not isinstance(path, str) or not path.startswith("/") or not _TOKEN.fullmatch(path)
            ):
                raise TlsConfigError(f"{setting}={path!r} must be an absolute path without spaces or quotes.")
        if self.acme_ca_root is not None and self.mode != "acme":
            raise TlsConfigError("acme_ca_root only applies to tls=acme; leave it unset for tls=internal.")
        if not isinstance(self.https_ports, tuple) or not self.https_ports:
            raise TlsConfigError(f"https_ports={self.https_ports!r} must be a non-empty tuple of ports.")
        listen = (*self.https_ports, self.http_port)
        for port in listen:
            _check_port(port, "port")
        _check_port(self.upstream_port, "upstream_port")
        if len(set(listen)) != len(listen):
            raise TlsConfigError(
                f"Caddy's ports {listen} must all differ (HTTPS {self.https_ports}, HTTP {self.http_port})."
            )
        if self.upstream_port in listen:
            raise TlsConfigError(
                f"Prefect's loopback port {self.upstream_port} is one Caddy listens on "
                f"({', '.join(map(str, listen))}); run Prefect on another port, e.g. 4201."
            )
        if self.bind_address is not None and not _is_ip(self.bind_address):
            raise TlsConfigError(f"bind_address={self.bind_address!r} is not an IP address.")

    @property
    def site_addresses(self) -> list[str]:
        return [f"https://{self.address}:{port}" for port in self.https_ports]

    @property
    def base_url(self) -> str:
        """The URL users and clients use: https://<address> (with the port unless it is 443)."""
        port = self.https_ports[0]
        return f"https://{self.address}" if port == 443 else f"https://{self.address}:{port}"


def render_caddyfile(settings: CaddySettings) -> str:
    """The Caddyfile for `settings`, formatted as `caddy fmt` would."""
    s = settings
    global_options = [
        f"admin unix/{s.admin_socket}",
        f"http_port {s.http_port}",
        f"https_port {s.https_ports[0]}",
        # One redirect rule for every request on the HTTP port: the block at the end. (Caddy's
        # automatic ones would drop a non-443 HTTPS port.) ACME challenges are still answered.
        "auto_https disable_redirects",
        # TCP only: HTTP/3 would open UDP listeners nobody asked for.
        "servers {",
        "\tprotocols h1 h2",
        "}",
    ]
    if s.mode == "internal":
        global_options += ["skip_install_trust", f"default_sni {s.address}", *_internal_ca(s.internal_ca_dir)]
    else:
        # Global options, not `tls <email>` in the site: that form adds a ZeroSSL fallback issuer,
        # and the certificate must come from exactly the configured directory.
        if s.acme_email is not None:
            global_options.append(f"email {s.acme_email}")
        global_options.append(f"acme_ca {s.acme_directory}")
        if s.acme_ca_root is not None:
            global_options.append(f"acme_ca_root {s.acme_ca_root}")
    site = [f"bind {s.bind_address}"] if s.bind_address else []
    if s.mode == "internal":
        site.append("tls internal")
    site += _security_headers()
    site.append(f"reverse_proxy 127.0.0.1:{s.upstream_port}")
    https_port = s.https_ports[0]
    target = "https://{host}{uri}" if https_port == 443 else f"https://{{host}}:{https_port}{{uri}}"
    redirect = [f"bind {s.bind_address}"] if s.bind_address else []
    redirect.append(f"redir {target} 308")
    blocks = [
        _block("", global_options),
        _block(", ".join(s.site_addresses), site),
        _block(f"http://:{s.http_port}", redirect),
    ]
    return "\n".join(blocks)


# The browser's side of the UI: it may load and call nothing but the server's own origin (Prefect's UI
# would otherwise fetch a third-party analytics configuration even with analytics off on the server), and
# no other site may frame it. What the UI needs beyond 'self', found in Chromium
# (tests/prefect_host/test_ui_browser.py): inline styles (without 'unsafe-inline' Chromium refuses the
# UI's own). The flow run page's graph (pixi.js, in Prefect's bundle without its no-eval module) compiles
# its shaders' glue with `new Function`: 'unsafe-eval' (scripts still come from 'self' alone, and
# connect-src keeps anything they do on the server's origin); its layout worker and pixi's image loader
# run the bundle's own code from blob: URLs: worker-src blob:. data: images only in case a page draws one
# (none of the tested pages does; it reaches no other origin).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "connect-src 'self'",
        "script-src 'self' 'unsafe-eval'",
        "worker-src 'self' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Strict-Transport-Security": "max-age=31536000",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _security_headers() -> list[str]:
    """The `header` directive: set on every response of the HTTPS sites, Prefect's own replaced."""
    return ["header {", *(f'\t{name} "{value}"' for name, value in SECURITY_HEADERS.items()), "}"]


def _internal_ca(directory: str) -> list[str]:
    """The `pki` option: Caddy's default CA `local` (what `tls internal` issues from) is the constrained
    CA in `directory`. With the intermediate given, Caddy signs with it and never makes or renews one
    (Caddy 2.6.2 would renew with a root of its own making: caddyserver/caddy#5181). Caddy 2.6.2
    reads a key for the root too, yet uses it only to sign with the root (off) or to renew the
    intermediate (not done when given): the root's own key exists nowhere, the intermediate's
    stands in for it."""
    return [
        "pki {",
        "\tca local {",
        "\t\troot {",
        f"\t\t\tcert {directory}/root.crt",
        f"\t\t\tkey {directory}/intermediate.key",
        "\t\t}",
        "\t\tintermediate {",
        f"\t\t\tcert {directory}/intermediate.crt",
        f"\t\t\tkey {directory}/intermediate.key",
        "\t\t}",
        "\t}",
        "}",
    ]


def _block(label: str, lines: list[str]) -> str:
    head = f"{label} {{" if label else "{"
    return head + "\n" + "".join(f"\t{line}\n" for line in lines) + "}\n"
