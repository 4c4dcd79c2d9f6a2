"""PostgreSQL 17 on a local guest, standing in for a managed database (RDS, Cloud SQL) in end-to-end tests and
benchmarks: TLS with a certificate of the guest's own, SCRAM password authentication, and one client address
allowed in, over the network like a private-subnet database.

Each guest sits in its own network namespace behind this machine, so guests reach each other only while this
machine forwards between them: `guest_routing()` turns IPv4 forwarding on for as long as any process needs it.

    with guest_routing(), LocalHost.create(postgres_image()) as db:
        db.boot()
        pg = PostgresGuest.set_up(db, client_address=client.address)
        ...  # the client guest connects to pg.database_url
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prefect_host.local.common import (
    LocalHostError,
    cache_root,
    file_lock,
    process_alive,
    process_start_time,
    progress,
    require_root_and_tools,
)
from prefect_host.local.image import build_image
from prefect_host.local.machine import LocalHost

PACKAGE = "postgresql-17"
PORT = 5432
DATABASE = ROLE = "prefect"
CONF_DIR = "/etc/postgresql/17/main"
UNIT = "postgresql@17-main.service"
SERVER_LOG = "/var/log/postgresql/postgresql-17-main.log"
POSTGRES_BINARY = "usr/lib/postgresql/17/bin/postgres"
# The superuser over the guest's local socket: no .psqlrc, errors stop the script, bare values out.
PSQL = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
ROUTING_STATE = "guest-routing.json"


def postgres_image() -> Path:
    """The Debian 13 image with PostgreSQL 17 installed (its cluster 17/main created by the package), built once
    and cached like build_image's other package sets. Create the database guest from it."""
    return build_image(extra_packages=(PACKAGE,))


class PostgresGuest:
    """PostgreSQL 17 on its own booted LocalHost (Debian 13 guest), TLS on, password auth,
    reachable only from one client guest's address."""

    def __init__(self, host: LocalHost, password: str, client_address: str):
        self.host = host
        self.password = password
        self.client_address = client_address

    def __repr__(self) -> str:  # never the password
        return f"PostgresGuest({self.host.name} at {self.address}:{PORT}, client {self.client_address})"

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def database_url(self) -> str:
        """SQLAlchemy's URL for role prefect's database over TLS (what PREFECT_API_DATABASE_CONNECTION_URL takes)."""
        return f"postgresql+asyncpg://{ROLE}:{self.password}@{self.address}:{PORT}/{DATABASE}?ssl=require"

    @property
    def certificate_pem(self) -> str:
        """The server's self-signed certificate (CN and IP SAN = its address), to verify it with."""
        return self._exec(["cat", f"{CONF_DIR}/server.crt"]).stdout

    @classmethod
    def set_up(cls, host: LocalHost, *, client_address: str, timeout: float = 60) -> PostgresGuest:
        """Configures the cluster 17/main on `host` (booted, from postgres_image()): listening on the guest's
        address, TLS with a new self-signed certificate, SCRAM only, and pg_hba letting role prefect into
        database prefect from `client_address` over TLS alone; the server is enabled, so it comes back after
        a reboot. Returns once PostgreSQL accepts connections."""
        try:
            client = str(ipaddress.IPv4Address(client_address))
        except ValueError as exc:
            raise LocalHostError(
                f"client_address={client_address!r} is not an IPv4 address such as '10.77.1.2'."
            ) from exc
        if not host.is_running:
            raise LocalHostError(f"{host.name} is not running; boot() it before PostgresGuest.set_up.")
        if not (host.root / POSTGRES_BINARY).exists():
            raise LocalHostError(
                f"{host.name} has no PostgreSQL 17 (/{POSTGRES_BINARY}); create it from postgres_image()."
            )
        started = time.monotonic()
        guest = cls(host, secrets.token_urlsafe(24), client)
        guest._make_certificate()
        guest._write_config()
        guest._exec(["systemctl", "enable", "--quiet", "postgresql.service"])
        guest._exec(["systemctl", "restart", UNIT], timeout=timeout)
        guest.wait_until_ready(timeout)
        guest._create_role_and_database()
        progress(
            f"PostgreSQL 17 on {host.name} at {guest.address}:{PORT} (TLS, SCRAM, client {client} only) "
            f"ready in {time.monotonic() - started:.1f} s"
        )
        return guest

    def psql(self, sql: str, database: str = DATABASE) -> str:
        """Runs `sql` (a psql script, given on stdin) as the postgres superuser on the guest's local socket and
        returns its stdout: unaligned and without headers (`select 1` gives "1\\n")."""
        return self._exec([*PSQL, "-d", database], input=sql).stdout

    def wait_until_ready(self, timeout: float = 60) -> None:
        """Returns once the server accepts connections on the guest's address (pg_isready)."""
        deadline = time.monotonic() + timeout
        probe = ["pg_isready", "-q", "-h", self.address, "-p", str(PORT)]
        while self.host.guest_exec(probe, check=False).returncode != 0:
            if time.monotonic() > deadline:
                log = self.host.guest_exec(["tail", "-n", "20", SERVER_LOG], check=False).stdout
                raise LocalHostError(
                    f"PostgreSQL on {self.host.name} did not accept connections on {self.address}:{PORT} "
                    f"within {timeout:.0f} s; {SERVER_LOG} ends:\n{self._redact(log)}"
                )
            time.sleep(0.2)

    # --- setting up ----------------------------------------------------------------------------------------
    def _make_certificate(self) -> None:
        """A new key and self-signed certificate made on the guest (the image's snakeoil key is shared by
        every guest of the image), readable by postgres only."""
        key, cert = f"{CONF_DIR}/server.key", f"{CONF_DIR}/server.crt"
        script = (
            "set -e; umask 077; "
            'openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 -subj "/CN=$1" '
            '-addext "subjectAltName=IP:$1" -keyout "$2" -out "$3" 2>/dev/null; '
            'chown postgres:postgres "$2" "$3"; chmod 0644 "$3"'
        )
        self._exec(["sh", "-c", script, "sh", self.address, key, cert])

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": f"localhost,{self.address}",
            "port": str(PORT),
            "ssl": "on",
            "ssl_cert_file": f"{CONF_DIR}/server.crt",
            "ssl_key_file": f"{CONF_DIR}/server.key",
            "ssl_min_protocol_version": "TLSv1.2",
            "password_encryption": "scram-sha-256",
        }
        conf = "".join(f"{name} = '{value}'\n" for name, value in settings.items())
        # Only these two lines: the superuser on the local socket, role prefect from the client over TLS.
        hba = (
            "# prefect-host: written by PostgresGuest.set_up\n"
            "local   all       postgres                   peer\n"
            f"hostssl {DATABASE}  {ROLE}  {self.client_address}/32  scram-sha-256\n"
        )
        self._write_file(f"{CONF_DIR}/conf.d/90-prefect-host.conf", conf)
        self._write_file(f"{CONF_DIR}/pg_hba.conf", hba)

    def _write_file(self, path: str, text: str) -> None:
        self._exec(["install", "-o", "postgres", "-g", "postgres", "-m", "0640", "/dev/stdin", path], input=text)

    def _create_role_and_database(self) -> None:
        """Role prefect gets a SCRAM verifier made here: the password itself never reaches the guest (no
        statement or log line can hold it), and the verifier goes over stdin, never on a command line."""
        verifier = scram_sha_256_verifier(self.password)
        script = (
            f"SELECT 'CREATE ROLE {ROLE} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')"
            "\\gexec\n"
            f"ALTER ROLE {ROLE} WITH LOGIN PASSWORD '{verifier}';\n"
            f"SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec\n"
        )
        self._exec([*PSQL, "-d", "postgres"], input=script, hide=(verifier,))

    def _exec(
        self,
        argv: list[str],
        *,
        input: str | None = None,  # noqa: A002  guest_exec's (and subprocess.run's) name for it
        timeout: float = 60,
        hide: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess:
        """guest_exec, with the password (and `hide`) blanked out of any error it raises."""
        try:
            return self.host.guest_exec(argv, input=input, timeout=timeout)
        except LocalHostError as exc:
            raise LocalHostError(self._redact(str(exc), *hide)) from None

    def _redact(self, text: str, *more: str) -> str:
        for secret in (self.password, *more):
            text = text.replace(secret, "[hidden]")
        return text


def scram_sha_256_verifier(password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677, PostgreSQL's scram_build_secret),
    with a new random salt. `password` must be ASCII (SASLprep leaves it unchanged then)."""
    if not password.isascii():
        raise LocalHostError("scram_sha_256_verifier takes ASCII passwords only (no SASLprep here).")
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# --- routing between guests ----------------------------------------------------------------------------------
@contextlib.contextmanager
def guest_routing() -> Iterator[None]:
    """Lets guests reach each other through this machine (IPv4 forwarding on; each guest's default route is
    its veth's end here) for the block. Forwarding goes back to what it was before the first user once the
    last one is done: users are counted in a state file under cache_root(), across processes, and a user
    whose process died (killed test run) counts as gone at the next guest_routing() or
    release_stale_guest_routing()."""
    require_root_and_tools()
    me = [os.getpid(), process_start_time(os.getpid())]
    _update_routing(lambda owners: owners.append(me))
    try:
        yield
    finally:
        _update_routing(lambda owners: owners.remove(me) if me in owners else None)


def release_stale_guest_routing() -> None:
    """Forgets users of guest_routing() whose process died, and restores forwarding if none is left."""
    _update_routing(lambda owners: None)


def _update_routing(change: Callable[[list], None]) -> None:
    """Under the lock: the live users from the state file, changed by `change`, then forwarding on (and the
    state kept) while any is left, or the value from before the first user restored (and the state removed)."""
    state_path = cache_root() / ROUTING_STATE
    with file_lock(cache_root() / f".{ROUTING_STATE}.lock"):
        try:
            state = json.loads(state_path.read_text())
            previous, owners = str(state["previous"]), list(state["owners"])
        except FileNotFoundError:
            previous, owners = IP_FORWARD.read_text().strip(), []
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalHostError(f"{state_path} is not guest_routing()'s state ({exc}); remove it by hand.") from exc
        owners = [owner for owner in owners if process_alive(*owner)]
        change(owners)
        if owners:
            if IP_FORWARD.read_text().strip() != "1":
                IP_FORWARD.write_text("1\n")
            temporary = state_path.with_name(state_path.name + ".tmp")
            temporary.write_text(json.dumps({"previous": previous, "owners": owners}) + "\n")
            temporary.replace(state_path)
        else:
            if IP_FORWARD.read_text().strip() != previous:
                IP_FORWARD.write_text(previous + "\n")
            state_path.unlink(missing_ok=True)
