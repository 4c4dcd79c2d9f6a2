"""Issue 12 end to end, nothing of Prefect, PostgreSQL or Redis mocked: the scale-out mode on a real
guest, with a second guest as the managed PostgreSQL 17 (TLS, password, reachable only from the
server guest's address), Redis from Debian's package, the local S3 server for the flow code.

In this order, on one server guest: it runs on SQLite (the default) with a deployment, a variable and
a completed run -> the stack switches to `database: postgres`: refused, nothing changed -> again with
--migrate-objects: the API runs on PostgreSQL in API_WORKERS processes without services, the
services apart, Redis on loopback with a password, the objects moved (the run history not), the
SQLite file kept -> the transferred deployment runs on the host's worker -> one API process killed:
the others answer and uvicorn replaces it -> Redis restarted: the services recover and a run
completes -> the database guest rebooted: /api/ready 503, then 200, a run completes -> `status`
shows each process -> a re-run changes nothing.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from e2e_support import REPO, Stack, completed_run, host_outputs, internal_tls, s3_outputs
from prefect_host.local import LocalHost
from prefect_host.local.apt_repo import AptRepoServer, ensure_apt_repo
from prefect_host.local.postgres_guest import PostgresGuest, guest_routing, postgres_image
from prefect_host.services import redis

pytestmark = pytest.mark.e2e

PROFILE = "prefect-host-scale-out-e2e"
AUTH = "admin:Scale-Out-E2e-secret-41d9"
BUCKET = "prefect-host-scale-out-e2e"
API_WORKERS = 2
VARIABLE = "scale_out_marker"
RUN_TIMEOUT = "300"


@pytest.fixture(scope="module")
def postgres(module_host: LocalHost) -> Iterator[PostgresGuest]:
    with guest_routing(), LocalHost.create(postgres_image()) as db_host:
        db_host.boot()
        yield PostgresGuest.set_up(db_host, client_address=module_host.address)


@pytest.fixture(scope="module")
def stack(module_host, module_package_index, module_s3_server, postgres, tmp_path_factory) -> Iterator[Stack]:
    outputs = host_outputs(
        module_host,
        prefectAuthString=AUTH,
        **internal_tls(module_host.address),
        **s3_outputs(module_s3_server, BUCKET, user=PROFILE),
    )
    with AptRepoServer(ensure_apt_repo(("caddy", "redis-server"), suite="trixie"), module_host.gateway) as apt:
        yield Stack.create(
            module_host,
            tmp_path_factory.mktemp("scale-out-e2e"),
            profile=PROFILE,
            outputs=outputs,
            bootstrap_args=["--find-links", module_package_index.url, "--apt-source", apt.source_line, "--activate"],
            s3=module_s3_server,
            extra_secrets=(postgres.password, redis.password(AUTH), postgres.database_url),
            with_project=True,
        )


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def on_postgres(stack: Stack, postgres: PostgresGuest) -> dict[str, str]:
    return {
        **stack.outputs,
        "database": "postgres",
        "apiWorkers": str(API_WORKERS),
        "databaseUrl": postgres.database_url,
    }


def client(stack: Stack) -> httpx.Client:
    """The laptop's view: HTTPS verified against the CA the bootstrap pinned in the profile."""
    ca = stack.profile_settings()["PREFECT_API_SSL_CERT_FILE"]
    return httpx.Client(verify=ssl.create_default_context(cafile=ca), auth=stack.auth, timeout=30)


def api_children(stack: Stack) -> list[int]:
    """uvicorn's worker processes: the children of prefect-server's main process that serve the API."""
    main = stack.main_pid("prefect-server.service")
    listing = stack.guest(f"ps --ppid {main} -o pid=,args=")
    return sorted(int(line.split()[0]) for line in listing.splitlines() if "spawn_main" in line)


def run_deployment(stack: Stack, deployment_id: str, timeout: float = 240) -> dict:
    """A run of the deployment, created through the API, until it is Completed (or fails the test)."""
    with client(stack) as api:
        run = api.post(f"{stack.api_url}/deployments/{deployment_id}/create_flow_run", json={}).json()
        deadline = time.monotonic() + timeout
        while True:
            current = api.get(f"{stack.api_url}/flow_runs/{run['id']}").json()
            if current["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return current
            assert time.monotonic() < deadline, f"flow run {run['id']} still {current['state_type']}"
            time.sleep(1)


# --- on SQLite first ---------------------------------------------------------------------------
def test_a_sqlite_host_with_objects(stack: Stack, state: dict) -> None:
    run = stack.bootstrap()
    assert run.returncode == 0, run.printed
    deployed = stack.deploy("--run-now", "--timeout", RUN_TIMEOUT)
    assert deployed.returncode == 0, deployed.printed
    state["sqlite_run"] = completed_run(deployed.stdout).name
    with client(stack) as api:
        assert api.post(f"{stack.api_url}/variables/", json={"name": VARIABLE, "value": "moved"}).status_code == 201
    state["server_pid"] = stack.main_pid("prefect-server.service")


def test_switching_to_postgres_is_refused_without_migrate_objects(stack: Stack, postgres: PostgresGuest, state: dict):
    before = stack.guest("sha256sum /etc/prefect-host/server.env")
    run = stack.bootstrap(outputs_path=stack.write_outputs(on_postgres(stack, postgres), "postgres.json"))
    assert run.returncode == 1
    assert "runs Prefect on SQLite" in run.stderr and "--migrate-objects" in run.stderr, run.printed
    assert postgres.address in run.stderr  # where the new database is, without its password
    assert run.changed == []
    assert stack.guest("sha256sum /etc/prefect-host/server.env") == before
    assert stack.main_pid("prefect-server.service") == state["server_pid"]
    assert "active" not in stack.guest("systemctl is-active redis-server prefect-services || true").split()


def test_migrate_objects_moves_them_and_runs_the_api_in_processes(stack: Stack, postgres: PostgresGuest, state):
    run = stack.bootstrap("--migrate-objects", outputs_path=stack.outputs_path.with_name("postgres.json"))
    assert run.returncode == 0, run.printed
    assert "migrate the database" in run.stdout and "move the objects from SQLite to PostgreSQL" in run.stdout
    assert "flow-run history stays in" in run.stdout
    # The API without services in API_WORKERS processes, the services apart, Redis; no Litestream.
    exec_start = stack.guest("systemctl show -p ExecStart --value prefect-server")
    assert f"--no-services --workers {API_WORKERS}" in exec_start
    assert len(api_children(stack)) == API_WORKERS
    assert stack.guest("systemctl is-active prefect-services redis-server").split() == ["active", "active"]
    assert stack.guest("systemctl is-active prefect-litestream", check=False).strip() != "active"
    # Redis: loopback only, password required, its configuration readable by redis alone.
    # Listening on loopback only (/proc/net/tcp: local address 0100007F = 127.0.0.1, port 18EB = 6379,
    # state 0A = LISTEN), so this machine cannot reach it at the guest's address.
    listening = stack.guest("cat /proc/net/tcp | awk '$4 == \"0A\" && $2 ~ /:18EB$/ {print $2}'").split()
    assert listening == ["0100007F:18EB"], listening
    with pytest.raises(OSError):
        socket.create_connection((stack.ip, redis.PORT), timeout=5).close()
    assert "NOAUTH" in stack.guest("redis-cli -h 127.0.0.1 ping 2>&1")
    assert stack.guest("stat -c '%a %U' /etc/redis/prefect-host.conf /etc/prefect-host/server.env").split("\n")[:2] == [
        "600 redis",
        "600 root",
    ]
    assert not stack.secrets_in(stack.guest("cat /etc/systemd/system/prefect-*.service; journalctl --no-pager -o cat"))
    # PostgreSQL holds Prefect's schema and pg_trgm; the SQLite file is kept, unchanged in role.
    assert postgres.psql("select extname from pg_extension where extname = 'pg_trgm'").strip() == "pg_trgm"
    assert postgres.psql("select count(*) from alembic_version").strip() == "1"
    stack.guest("test -s /var/lib/prefect/prefect.db")
    with client(stack) as api:
        assert api.get(f"{stack.api_url}/ready").status_code == 200
        deployments = api.post(f"{stack.api_url}/deployments/filter", json={}).json()
        assert len(deployments) == 1, run.stdout
        [deployment] = deployments
        assert api.get(f"{stack.api_url}/variables/name/{VARIABLE}").json()["value"] == "moved"
        blocks = [b["name"] for b in api.post(f"{stack.api_url}/block_documents/filter", json={}).json()]
        runs = api.post(f"{stack.api_url}/flow_runs/filter", json={}).json()
    assert any(name.endswith("-results") for name in blocks) and any("-flows-" in name for name in blocks), blocks
    assert state["sqlite_run"] not in [r["name"] for r in runs]  # the history stayed in SQLite
    state["deployment"] = deployment["id"]


def test_the_moved_deployment_runs_on_the_hosts_worker(stack: Stack, state: dict) -> None:
    stack.assert_the_hosts_worker_ran(run_deployment(stack, state["deployment"]))


def test_a_killed_api_process_is_replaced_while_the_others_answer(stack: Stack, state: dict) -> None:
    main, children = stack.main_pid("prefect-server.service"), api_children(stack)
    stack.guest(f"kill -KILL {children[0]}")
    answered = []
    with client(stack) as api:
        for _ in range(20):
            answered.append(api.get(f"{stack.api_url}/ready").status_code)
            time.sleep(0.1)
    # Caddy may still hold a connection to the killed process for the first request; then all answer.
    assert answered[1:] == [200] * 19, answered
    deadline = time.monotonic() + 60
    while len(api_children(stack)) < API_WORKERS or children[0] in api_children(stack):
        assert time.monotonic() < deadline, "uvicorn did not replace the killed API process"
        time.sleep(1)
    assert stack.main_pid("prefect-server.service") == main  # the unit itself did not restart


def test_a_redis_restart_loses_no_run(stack: Stack, state: dict) -> None:
    services = stack.main_pid("prefect-services.service")
    stack.guest("systemctl restart redis-server")
    stack.assert_the_hosts_worker_ran(run_deployment(stack, state["deployment"]))
    assert stack.guest("systemctl is-active prefect-services prefect-server").split() == ["active", "active"]
    assert stack.main_pid("prefect-services.service") in (services, stack.main_pid("prefect-services.service"))
    with client(stack) as api:
        runs = api.post(f"{stack.api_url}/flow_runs/filter", json={}).json()
    # Every run that started completed; the rest are the schedule's next runs, which the services' scheduler made.
    assert {r["state_type"] for r in runs} == {"COMPLETED", "SCHEDULED"}, [(r["name"], r["state_type"]) for r in runs]


def test_a_database_reboot_shows_in_ready_and_runs_resume(stack: Stack, postgres: PostgresGuest, state: dict):
    seen = []
    postgres.host.stop()
    with client(stack) as api:
        deadline = time.monotonic() + 60
        while 503 not in seen:
            assert time.monotonic() < deadline, seen
            seen.append(api.get(f"{stack.api_url}/ready").status_code)
            time.sleep(0.5)
        postgres.host.boot()
        deadline = time.monotonic() + 120
        while seen[-1] != 200:
            assert time.monotonic() < deadline, seen[-10:]
            seen.append(api.get(f"{stack.api_url}/ready").status_code)
            time.sleep(0.5)
    stack.assert_the_hosts_worker_ran(run_deployment(stack, state["deployment"]))


def test_status_shows_each_process(stack: Stack) -> None:
    postgres_outputs = stack.outputs_path.with_name("postgres.json")
    status = stack.run([sys.executable, str(REPO / "scripts" / "status.py"), "--outputs", str(postgres_outputs)])
    assert status.returncode == 0, status.printed
    for row in ("prefect-server.service", "prefect-services.service", "redis-server.service", "API processes"):
        assert row in status.stdout, status.stdout
    assert f"{API_WORKERS} running, {API_WORKERS} wanted" in status.stdout
    assert "/api/ready 200" in status.stdout


def test_a_rerun_changes_nothing(stack: Stack) -> None:
    units = ("prefect-server.service", "prefect-services.service", "redis-server.service", "caddy.service")
    before = {unit: stack.main_pid(unit) for unit in units}
    run = stack.bootstrap(outputs_path=stack.outputs_path.with_name("postgres.json"))
    assert run.returncode == 0, run.printed
    assert run.changed == [], run.stdout
    assert "move the objects" not in run.stdout
    assert {unit: stack.main_pid(unit) for unit in units} == before
