"""PostgresGuest: a PostgreSQL 17 guest standing in for a managed database, reached from a client guest
through guest_routing(). Real logins with asyncpg (this venv's) from inside the client guest's network
namespace: its source address is the client's, TLS is verified against the server's own certificate and the
password goes through SCRAM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_host.local import LocalHost, LocalHostError, build_image
from prefect_host.local.common import cache_root
from prefect_host.local.postgres_guest import (
    IP_FORWARD,
    ROUTING_STATE,
    PostgresGuest,
    guest_routing,
    postgres_image,
    release_stale_guest_routing,
)

pytestmark = pytest.mark.e2e

# Reads {"host", "password", "ssl": "verify" | "off", "ca"} on stdin (never the password on a command line),
# prints what the server says about the session, or the error that refused it.
CLIENT = r"""
import asyncio, json, ssl, sys
import asyncpg

async def main(request):
    tls = ssl.create_default_context(cadata=request["ca"]) if request["ssl"] == "verify" else False
    try:
        conn = await asyncpg.connect(host=request["host"], port=5432, user="prefect", password=request["password"],
                                     database="prefect", ssl=tls, timeout=20)
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    try:
        row = await conn.fetchrow(
            "select 1 as one, host(inet_client_addr()) as client, current_user as role,"
            " (select ssl from pg_stat_ssl where pid = pg_backend_pid()) as tls")
        return {**dict(row), "show_ssl": await conn.fetchval("show ssl")}
    finally:
        await conn.close()

print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
"""

HOLDER = "import sys, time\nfrom prefect_host.local.postgres_guest import guest_routing\n"
HOLDER += "with guest_routing():\n    print('in', flush=True)\n    time.sleep(600)\n"


def connect(pg: PostgresGuest, netns: str | None, *, tls: str = "verify", password: str | None = None) -> dict:
    """One login as prefect: from `netns` (a guest's namespace) or, with None, from this machine."""
    argv = [sys.executable, "-c", CLIENT]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    request = {"host": pg.address, "password": password or pg.password, "ssl": tls, "ca": pg.certificate_pem}
    result = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def assert_logged_in(answer: dict, client: LocalHost) -> None:
    assert "error" not in answer, answer
    assert answer == {"one": 1, "client": client.address, "role": "prefect", "tls": True, "show_ssl": "on"}


def files_holding(root: Path, secret: str) -> list[Path]:
    """Files under `root` (a guest's writable layer: everything it wrote to disk) that contain `secret`."""
    needle = secret.encode()
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def assert_password_not_on_guest(pg: PostgresGuest) -> None:
    journal = pg.host.guest_exec(["journalctl", "--no-pager", "-o", "cat"]).stdout
    assert "PostgreSQL" in journal or "postgresql" in journal  # the journal does hold the server's messages
    assert pg.password not in journal
    assert files_holding(pg.host.host_dir / "upper", pg.password) == []


def test_postgres_guest_takes_tls_password_logins_from_the_client_only(capfd):
    forwarding_before = IP_FORWARD.read_text().strip()
    with (
        LocalHost.create(build_image()) as client,
        LocalHost.create(postgres_image()) as db,
        guest_routing(),
    ):
        client.boot()
        db.boot()
        capfd.readouterr()
        pg = PostgresGuest.set_up(db, client_address=client.address)
        out, err = capfd.readouterr()
        assert "ready" in err
        assert pg.password not in out + err
        assert pg.password not in repr(pg)
        assert pg.database_url == f"postgresql+asyncpg://prefect:{pg.password}@{db.address}:5432/prefect?ssl=require"

        # The server side: TLS, SCRAM, and pg_hba with nothing but these two lines.
        assert pg.psql("show ssl; show password_encryption;") == "on\nscram-sha-256\n"
        assert pg.psql("select left(rolpassword, 14) from pg_authid where rolname = 'prefect'") == "SCRAM-SHA-256$\n"
        rules = pg.psql("select type, database, user_name, address, auth_method from pg_hba_file_rules")
        assert rules.splitlines() == [
            "local|{all}|{postgres}||peer",
            f"hostssl|{{prefect}}|{{prefect}}|{client.address}|scram-sha-256",
        ]

        assert_logged_in(connect(pg, client.netns), client)
        wrong = connect(pg, client.netns, password="not-" + pg.password)
        assert wrong["error"] == "InvalidPasswordError", wrong
        plain = connect(pg, client.netns, tls="off")
        assert "no pg_hba.conf entry" in plain.get("message", ""), plain
        assert f'host "{client.address}"' in plain["message"]
        assert "no encryption" in plain["message"]
        # From this machine (the database guest's gateway address), even with TLS and the password.
        other = connect(pg, None)
        assert "no pg_hba.conf entry" in other.get("message", ""), other
        assert f'host "{db.gateway}"' in other["message"]
        assert_password_not_on_guest(pg)

        pg.host.reboot()
        assert_logged_in(connect(pg, client.netns), client)
        assert_password_not_on_guest(pg)
        out, err = capfd.readouterr()
        assert pg.password not in out + err
        # Last (the server logs the failed statement): errors never show the password, even when psql echoes it.
        with pytest.raises(LocalHostError, match="invalid input syntax") as failure:
            pg.psql(f"select '{pg.password}'::int")
        assert pg.password not in str(failure.value)
    assert IP_FORWARD.read_text().strip() == forwarding_before


def test_guest_routing_counts_users_across_processes_and_forgets_dead_ones():
    state = cache_root() / ROUTING_STATE
    if state.exists():
        pytest.skip(f"another process uses guest_routing() right now ({state})")
    before = IP_FORWARD.read_text().strip()

    def start_holder() -> subprocess.Popen:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline() == "in\n"
        return holder

    def kill(holder: subprocess.Popen) -> None:
        os.kill(holder.pid, signal.SIGKILL)  # no cleanup of its own: its entry stays in the state file
        holder.wait(10)

    holder = start_holder()
    try:
        assert IP_FORWARD.read_text().strip() == "1"
        with guest_routing():
            with guest_routing():
                assert IP_FORWARD.read_text().strip() == "1"
            assert IP_FORWARD.read_text().strip() == "1"
        assert IP_FORWARD.read_text().strip() == "1"  # the holder still needs it
    finally:
        kill(holder)
    assert IP_FORWARD.read_text().strip() == "1"  # nobody has noticed yet
    with guest_routing():  # the next user forgets the dead one, and keeps the value from before it
        assert IP_FORWARD.read_text().strip() == "1"
    assert IP_FORWARD.read_text().strip() == before
    assert not state.exists()

    kill(start_holder())
    assert IP_FORWARD.read_text().strip() == "1"
    release_stale_guest_routing()
    assert IP_FORWARD.read_text().strip() == before
    assert not state.exists()
