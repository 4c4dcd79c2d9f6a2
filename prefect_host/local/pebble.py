"""An ACME certificate authority for tests: Debian's `pebble` (the RFC 8555 test server) and, as
the DNS server it asks, Debian's `pebble-challtestsrv` answering every A query with one address.

Pebble validates HTTP-01 by resolving the domain through that DNS server and fetching
http://<address>:<http_port>/.well-known/acme-challenge/<token> (TLS-ALPN-01 likewise on
<tls_port>), so a test domain such as `prefect.test` needs no real DNS and no internet.
Debian ships Pebble without its upstream test certificates (`+ds`), so each Pebble gets a fresh
TLS CA (made by prefect_host.local.pebble_tls): an ACME client must trust that CA (`tls_ca_path`)
to talk to the directory.
The CA that issues the ACME certificates is another one: Pebble generates it at start and serves
it on its management port at /roots/0 (`root_ca_pem()`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from prefect_host.local.common import INSTALL_HINT, LocalHostError
from prefect_host.local.pebble_tls import checked_ip, make_tls_ca_and_certificate

PEBBLE = "pebble"
CHALLTESTSRV = "pebble-challtestsrv"
START_TIMEOUT = 20.0
# Full speed and no injected faults: tests want a deterministic CA, not one that exercises retries.
PEBBLE_ENVIRONMENT = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}


def _port(value: int, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise LocalHostError(f"{setting}={value!r} is not a TCP port; use an integer from 1 to 65535.")
    return value


def host_port(address: str, port: int) -> str:
    """address:port, with IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def free_port(address: str) -> int:
    """A port free for both TCP and UDP on `address` right now (the DNS server needs both)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((address, 0))
            port = tcp.getsockname()[1]
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((address, port))
                except OSError:
                    continue
                return port
    raise LocalHostError(f"no port free for both TCP and UDP on {address}.")


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LocalHostError(f"`{tool}` is missing (Debian package pebble); {INSTALL_HINT}.")
    return path


class _Daemon:
    """A child process with its output in a log file, stopped by its own pid."""

    def __init__(self, argv: list[str], log: Path, environment: dict[str, str] | None = None):
        self.log = log
        with open(log, "w") as sink:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(environment or {})},
                start_new_session=True,
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_until(self, ready, what: str, timeout: float = START_TIMEOUT) -> None:
        """Polls ready() until true; on exit or timeout, stops the process and raises with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalHostError(f"{what} exited with {self.process.returncode} at start:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise LocalHostError(f"{what} was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _tcp_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


class FixedAnswerDns:
    """pebble-challtestsrv as a DNS server on bind_address:port (UDP and TCP) that answers every
    A query with `answer_ipv4` and AAAA queries with nothing (so Pebble never tries an IPv6
    address that is not the guest). Its other challenge servers are turned off; its management
    API (which needs a port) listens on bind_address too."""

    def __init__(self, bind_address: str, answer_ipv4: str, *, port: int | None = None):
        checked_ip(bind_address, "bind_address")
        if checked_ip(answer_ipv4, "answer_ipv4").version != 4:
            raise LocalHostError(f"answer_ipv4={answer_ipv4!r} must be an IPv4 address (the guest's).")
        self.port = free_port(bind_address) if port is None else _port(port, "port")
        self.bind_address = bind_address
        argv = [
            _require(CHALLTESTSRV),
            "-defaultIPv4",
            answer_ipv4,
            "-defaultIPv6",
            "",
            "-dns01",
            host_port(bind_address, self.port),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            # An empty -management means ":80" on every interface: always give it an address.
            "-management",
            host_port(bind_address, free_port(bind_address)),
        ]
        self._workdir = Path(tempfile.mkdtemp(prefix="prefect-host-dns-"))
        self._daemon: _Daemon | None = None
        try:
            self._daemon = _Daemon(argv, self._workdir / "challtestsrv.log")
            self._daemon.wait_until(lambda: _tcp_open(bind_address, self.port), "pebble-challtestsrv (DNS)")
        except BaseException:
            self.close()
            raise

    @property
    def server(self) -> str:
        """The address:port to give Pebble as -dnsserver."""
        return host_port(self.bind_address, self.port)

    def close(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> FixedAnswerDns:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Pebble:
    """Debian's Pebble serving its ACME directory on https://bind_address:acme_port/dir.

    dns_server: the address:port of the DNS server Pebble resolves domains with (a
    FixedAnswerDns's `.server`). http_port / tls_port: where Pebble connects to validate HTTP-01
    and TLS-ALPN-01 challenges on the address the domain resolves to (80 and 443 on a real host;
    the web server's ports in a loopback test)."""

    def __init__(
        self,
        bind_address: str,
        *,
        dns_server: str,
        http_port: int = 80,
        tls_port: int = 443,
        acme_port: int = 14000,
        management_port: int = 15000,
    ):
        checked_ip(bind_address, "bind_address")
        if not isinstance(dns_server, str) or ":" not in dns_server:
            raise LocalHostError(
                f"dns_server={dns_server!r} must be 'address:port' of a DNS server (FixedAnswerDns(...).server)."
            )
        for value, setting in (
            (http_port, "http_port"),
            (tls_port, "tls_port"),
            (acme_port, "acme_port"),
            (management_port, "management_port"),
        ):
            _port(value, setting)
        if acme_port == management_port:
            raise LocalHostError(f"acme_port and management_port are both {acme_port}; give two different ports.")
        self.bind_address = bind_address
        self.acme_port, self.management_port = acme_port, management_port
        pebble = _require(PEBBLE)
        self._workdir = Path(tempfile.mkdtemp(prefix="prefect-host-pebble-"))
        self.tls_ca_path, cert, key = make_tls_ca_and_certificate(self._workdir, bind_address)
        config = {
            "pebble": {
                "listenAddress": host_port(bind_address, acme_port),
                "managementListenAddress": host_port(bind_address, management_port),
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        config_path = self._workdir / "pebble-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        self._daemon: _Daemon | None = None
        try:
            self._daemon = _Daemon(
                [pebble, "-config", str(config_path), "-dnsserver", dns_server, "-strict=false"],
                self._workdir / "pebble.log",
                PEBBLE_ENVIRONMENT,
            )
            self._daemon.wait_until(self._directory_answers, f"pebble on {host_port(bind_address, acme_port)}")
        except BaseException:
            self.close()
            raise

    @property
    def directory_url(self) -> str:
        return f"https://{host_port(self.bind_address, self.acme_port)}/dir"

    def tls_ca_pem(self) -> str:
        """The CA an ACME client must trust to talk to the directory (Caddy: acme_ca_root)."""
        return self.tls_ca_path.read_text()

    def root_ca_pem(self) -> str:
        """The root that Pebble's issued certificates chain to (new at every Pebble start)."""
        url = f"https://{host_port(self.bind_address, self.management_port)}/roots/0"
        response = httpx.get(url, verify=self._tls_context(), timeout=5)
        response.raise_for_status()
        return response.text

    def log_tail(self, lines: int = 30) -> str:
        """The end of Pebble's log: which challenges it tried and why one failed."""
        return self._daemon.log_tail(lines) if self._daemon else "(not started)"

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls_ca_path))

    def _directory_answers(self) -> bool:
        try:
            return httpx.get(self.directory_url, verify=self._tls_context(), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        if self._daemon is not None:
            self._daemon.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Pebble:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
