"""Issue 11 end to end, nothing mocked: Prefect's database replicated by Litestream to the bucket (moto
with IAM auth), the host lost, a fresh host (new IP, new host key) restored from the replica.

In this order, on host A (this module's host): bootstrap with storage (replication verified) ->
deploy the example on a schedule, a run completes, a variable -> the completed run is in the
replica within REPLICA_WITHIN_S -> Litestream killed: systemd restarts it and the replica has no
gap -> host A is powered off for good. Then host B: a key the bucket refuses at restore time stops
the bootstrap before Prefect starts, with no database -> bootstrap from the replica: deployments,
schedule, blocks, pool, variable and run history are back, the old result is readable, a scheduled
run completes on B, the laptop's profile follows B -> `--restore-at` on a host with a database is
refused -> `backup restore --at` between the two runs shows the first and not the second, the old
database kept -> `status` is green.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from e2e_support import FLOW, REPO, Stack, completed_run, host_outputs, s3_outputs
from prefect_host.local import LocalHost, PackageIndex, build_image

pytestmark = pytest.mark.e2e

PROFILE = "prefect-host-durability-e2e"
AUTH = "admin:Durability-E2e-secret-7c1f"
BUCKET = "prefect-host-durability-e2e"
REPLICA = "backups/prefect-db"
# How soon a completed run must be in the bucket's replica (Litestream ships each second).
REPLICA_WITHIN_S = 15
LITESTREAM = str(Path(sys.executable).with_name("litestream"))
VARIABLE = "durability_marker"


@pytest.fixture(scope="module")
def state() -> dict:
    """What the tests in order hand to each other (run ids, times, result keys)."""
    return {}


@pytest.fixture(scope="module")
def stack(module_host, module_package_index, module_s3_server, tmp_path_factory) -> Stack:
    outputs = host_outputs(module_host, prefectAuthString=AUTH, **s3_outputs(module_s3_server, BUCKET, user=PROFILE))
    return Stack.create(
        module_host,
        tmp_path_factory.mktemp("durability-e2e"),
        profile=PROFILE,
        outputs=outputs,
        bootstrap_args=["--find-links", module_package_index.url, "--activate"],
        s3=module_s3_server,
        with_project=True,
    )


@pytest.fixture(scope="module")
def host_b(wheelhouse) -> Iterator[tuple[LocalHost, PackageIndex]]:
    """The replacement VM: a fresh guest (its own address and host key), booted when first used."""
    with LocalHost.create(build_image()) as host:
        host.boot()
        with PackageIndex(wheelhouse, host.gateway) as index:
            yield host, index


def api(url: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", auth=tuple(AUTH.split(":", 1)), timeout=30, **kwargs)


def litestream_here(stack: Stack, command: str, *options: str) -> str:
    """The same Litestream on this machine, reading the bucket's replica with the stack's key."""
    creds = {
        "LITESTREAM_ACCESS_KEY_ID": stack.outputs["awsAccessKeyId"],
        "LITESTREAM_SECRET_ACCESS_KEY": stack.outputs["awsSecretAccessKey"],
    }
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"} | creds
    url = f"s3://{BUCKET}/{REPLICA}?endpoint={stack.s3.endpoint_url}&region={stack.s3.region}&forcePathStyle=true"
    done = subprocess.run([LITESTREAM, command, *options, url], env=env, check=True, capture_output=True, text=True)
    return done.stdout


def replica_copy(stack: Stack, path: Path, *timestamp: str) -> sqlite3.Connection:
    """The bucket's replica restored on this machine."""
    path.unlink(missing_ok=True)
    options = ["-timestamp", timestamp[0]] if timestamp else []
    litestream_here(stack, "restore", *options, "-o", str(path))
    return sqlite3.connect(path)


def run_state(db: sqlite3.Connection, flow_run_id: str) -> str | None:
    row = db.execute("SELECT state_type FROM flow_run WHERE id = ?", (flow_run_id,)).fetchone()
    return row[0] if row else None


def flow_run_id(stack_url: str, name: str) -> str:
    [run] = api(stack_url, "POST", "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}).json()
    return run["id"]


def txids(stack: Stack, level: int) -> list[tuple[int, int]]:
    listing = json.loads(litestream_here(stack, "ltx", "-json", "-level", str(level)) or "[]")
    return sorted((int(f["min_txid"], 16), int(f["max_txid"], 16)) for f in listing)


# --- host A ------------------------------------------------------------------------------------
def test_bootstrap_replicates_and_verifies(stack: Stack) -> None:
    run = stack.bootstrap()
    assert run.returncode == 0, run.printed
    assert "restore the database from" in run.stdout  # a new host: the (empty) replica was asked first
    assert "no replica in the bucket yet" in run.stdout
    assert "verify the backup" in run.stdout and "replica at transaction" in run.stdout
    assert stack.guest("systemctl is-active prefect-litestream.service").strip() == "active"
    modes = stack.guest("stat -c '%a %U' /etc/prefect-host/litestream.env /etc/prefect-litestream.yml").split("\n")
    assert modes[:2] == ["600 root", "644 root"]
    assert not stack.secrets_in(stack.guest("cat /etc/prefect-litestream.yml /etc/systemd/system/prefect-*.service"))


def test_completed_run_reaches_the_replica(stack: Stack, state: dict, tmp_path: Path) -> None:
    run = stack.deploy("--interval", "60", "--run-now", "--timeout", "240")
    assert run.returncode == 0, run.printed
    first = completed_run(run.stdout)
    state["first"] = flow_run_id(stack.api_url, first.name)
    state["host_a"] = stack.hostname
    state["first_result"] = first.result
    done_at = time.monotonic()
    assert api(stack.api_url, "POST", "/variables/", json={"name": VARIABLE, "value": "kept"}).status_code == 201
    while run_state(replica_copy(stack, tmp_path / "copy.db"), state["first"]) != "COMPLETED":
        assert time.monotonic() - done_at < REPLICA_WITHIN_S, "the completed run is not in the replica"
        time.sleep(0.5)
    print(f"\ncompleted run in the replica after {time.monotonic() - done_at:.1f} s")
    time.sleep(2)
    state["between"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(2)


def test_killed_litestream_restarts_without_gap(stack: Stack, state: dict, tmp_path: Path) -> None:
    before = stack.main_pid("prefect-litestream.service")
    stack.guest("systemctl kill -s KILL prefect-litestream.service")
    deadline = time.monotonic() + 30
    while stack.main_pid("prefect-litestream.service") in (0, before):
        assert time.monotonic() < deadline, "systemd did not restart Litestream"
        time.sleep(0.5)
    run = stack.deploy("--interval", "60", "--run-now", "--timeout", "240")
    assert run.returncode == 0, run.printed
    state["second"] = flow_run_id(stack.api_url, completed_run(run.stdout).name)
    deadline = time.monotonic() + REPLICA_WITHIN_S
    while run_state(replica_copy(stack, tmp_path / "copy.db"), state["second"]) != "COMPLETED":
        assert time.monotonic() < deadline, "the run after the restart is not in the replica"
        time.sleep(0.5)
    # Every transaction is in the bucket: level 0's files follow each other without a hole.
    level0 = txids(stack, 0)
    assert all(low == previous_high + 1 for (_, previous_high), (low, _) in itertools.pairwise(level0)), level0


def test_host_a_is_lost(stack: Stack, state: dict) -> None:
    stack.host.stop()
    assert not stack.host.is_running
    # A scheduled run host A started before it was lost is in the replica too: not one of B's.
    state["a_lost_at"] = datetime.now(UTC)


# --- host B ------------------------------------------------------------------------------------
def stack_on(stack: Stack, host: LocalHost, index: PackageIndex, **overrides: str) -> Stack:
    """The same stack's outputs after `pulumi destroy` + `pulumi up`: a new VM, the same bucket."""
    bucket = ("bucketName", "bucketRegion", "awsAccessKeyId", "awsSecretAccessKey", "s3EndpointUrl")
    outputs = {**host_outputs(host, prefectAuthString=AUTH), **{key: stack.outputs[key] for key in bucket}}
    outputs.update(overrides)
    work = stack.work / f"host-{host.address}-{len(overrides)}"
    work.mkdir(exist_ok=True)
    return Stack.create(
        host,
        work,
        profile=PROFILE,
        outputs=outputs,
        bootstrap_args=["--find-links", index.url, "--activate"],
        s3=stack.s3,
        with_project=True,
    )


def test_denied_bucket_stops_before_an_empty_server(stack: Stack, host_b) -> None:
    host, index = host_b
    denied = stack.s3.provision(BUCKET, group="durability-no-list", user="durability-no-list")
    stack.s3.client("iam").put_user_policy(
        UserName="durability-no-list",
        PolicyName="no-list",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Deny", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"}],
            }
        ),
    )
    b = stack_on(stack, host, index, awsAccessKeyId=denied.access_key_id, awsSecretAccessKey=denied.secret_access_key)
    run = b.bootstrap()
    assert run.returncode == 1, run.printed
    assert "cannot read the replica" in run.stderr and "--no-restore" in run.stderr, run.printed
    assert "403" in run.printed
    assert b.guest("systemctl is-active prefect-server.service", check=False).strip() != "active"
    assert b.guest("test -e /var/lib/prefect/prefect.db && echo yes || echo no").strip() == "no"


def test_new_host_gets_everything_back(stack: Stack, host_b, state: dict) -> None:
    host, index = host_b
    b = stack_on(stack, host, index)
    run = b.bootstrap()
    assert run.returncode == 0, run.printed
    assert "restored transaction" in run.stdout, run.stdout
    url = b.api_url
    names = {d["name"] for d in api(url, "POST", "/deployments/filter", json={}).json()}
    assert FLOW in names
    [deployment] = [d for d in api(url, "POST", "/deployments/filter", json={}).json() if d["name"] == FLOW]
    assert deployment["schedules"] and deployment["schedules"][0]["schedule"]["interval"] == 60
    assert api(url, "GET", f"/variables/name/{VARIABLE}").json()["value"] == "kept"
    assert api(url, "GET", "/work_pools/default").status_code == 200
    assert api(url, "GET", f"/block_types/slug/s3-bucket/block_documents/name/{PROFILE}-results").status_code == 200
    for run_id in (state["first"], state["second"]):
        assert api(url, "GET", f"/flow_runs/{run_id}").json()["state_type"] == "COMPLETED"
    key = state["first_result"].split(f"s3://{BUCKET}/", 1)[1]
    assert b.s3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert b.profile_settings()["PREFECT_API_URL"] == url  # the laptop follows the new outputs
    # The schedule goes on, on the new host's worker.
    deadline = time.monotonic() + 240
    known = {state["first"], state["second"]}
    while True:
        runs = api(url, "POST", "/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
        fresh = [
            r
            for r in runs.json()
            if r["id"] not in known and datetime.fromisoformat(r["start_time"]) > state["a_lost_at"]
        ]
        if fresh:
            b.assert_the_hosts_worker_ran(fresh[0])
            break
        assert time.monotonic() < deadline, "no scheduled run completed on the new host"
        time.sleep(5)
    state["b"] = b


def test_restore_at_is_refused_on_a_host_with_a_database(state: dict) -> None:
    b: Stack = state["b"]
    run = b.bootstrap("--restore-at", state["between"])
    assert run.returncode == 1
    assert "never overwrites" in run.stderr and "prefect-host backup restore --at" in run.stderr


def test_backup_restore_at_a_point_in_time(state: dict) -> None:
    b: Stack = state["b"]
    script = str(REPO / "scripts" / "backup.py")
    run = b.run([sys.executable, script, "restore", "--at", state["between"], "--outputs", str(b.outputs_path)])
    assert run.returncode == 0, run.printed
    assert "kept the database it replaced as" in run.stdout
    assert "[ok]       Prefect API answers" in run.stdout, run.stdout  # it returns once the server is back
    url = b.api_url
    deadline = time.monotonic() + 120
    while True:
        try:
            if api(url, "GET", "/health").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(1)
    assert api(url, "GET", f"/flow_runs/{state['first']}").status_code == 200
    assert api(url, "GET", f"/flow_runs/{state['second']}").status_code == 404
    assert b.guest("ls /var/lib/prefect | grep -c before-restore").strip() != "0"
    now = b.run([sys.executable, script, "now", "--outputs", str(b.outputs_path)])
    assert now.returncode == 0 and "snapshot at transaction" in now.stdout, now.printed
    taken = now.stdout.split("MB, ", 1)[1].split()[0]  # the snapshot's time, as the replica lists it
    listing = b.run([sys.executable, script, "list", "--outputs", str(b.outputs_path)])
    assert listing.returncode == 0 and f"s3://{BUCKET}/{REPLICA}:" in listing.stdout
    [level9] = [line for line in listing.stdout.splitlines() if line.split()[:1] == ["9"]]
    assert level9.rstrip().endswith(taken), (taken, listing.stdout)


def test_status_is_green(state: dict) -> None:
    b: Stack = state["b"]
    run = b.run([sys.executable, str(REPO / "scripts" / "status.py"), "--outputs", str(b.outputs_path)])
    assert run.returncode == 0, run.printed
    for row in ("prefect-server.service", "Prefect API", "backup", "database"):
        assert row in run.stdout
    # Host A's worker came back with the database: listed (online until Prefect's foreman marks it
    # offline, ~90 s after its last heartbeat, then a warning), never red on B.
    [row] = [line for line in run.stdout.splitlines() if f"worker {state['host_a']}-1 " in line]
    assert " bad " not in row and ("ONLINE" in row or "(not this host's)" in row), row
    b.guest("systemctl stop prefect-litestream.service")
    run = b.run([sys.executable, str(REPO / "scripts" / "status.py"), "--outputs", str(b.outputs_path)])
    assert run.returncode == 1 and "backup" in run.stderr
    b.guest("systemctl start prefect-litestream.service")
