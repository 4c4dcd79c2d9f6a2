"""Issue 11's durability figures, on this machine: a local `prefect server start`, the local S3 server
(moto, IAM auth) and Litestream configured as the hosts configure it (services/litestream.py's
config_text: 1 s sync interval, snapshot interval and retention, S3 endpoint, path-style), all real
processes on 127.0.0.1, nothing mocked.

    make bench-durability        # .venv/bin/python bench/durability.py

1. Replication lag, the time from the API's answer to "flow run COMPLETED" until the run is in the
   bucket's replica. Checked by a replica copy that `litestream restore -f` keeps following the bucket
   (every 50 ms), queried with sqlite3 every 25 ms for that run in state COMPLETED: restore-and-query,
   incrementally. Not `litestream status`'s local_txid: it is Litestream's own position, which trails
   the write by up to its 1 s monitor tick, so "replica max_txid >= local_txid" can hold before the
   write has even been read from the WAL. A random 0..1 s pause before each write spreads the writes
   over the phase of Litestream's 1 s ticks.
2. Restore: a database with --runs flow runs, created through the API with Litestream replicating
   (Prefect 3.9 has no bulk create; one POST at a time by default: with more in flight SQLite is busy,
   the server answers 503 and retried requests make it no faster), then Litestream stopped (it ships
   the rest of the WAL), a forced snapshot (`litestream replicate -once -force-snapshot`), then
   `litestream restore -o` timed --restores times; the replica's bytes (the bucket listed) and the
   database file's. Each restored copy is checked to hold every run.
3. Idle server with and without Litestream: windows of --idle-window seconds in the order without, with,
   with, without (ABBA, so a drift of the machine's load falls on both alike); per window the RSS of the
   server's process tree and of Litestream (median of 5 s samples) and their CPU time (/proc stat).
4. Write burst with and without Litestream: ABBA blocks of --burst flow runs created one at a time;
   per block the rate and the 503s (SQLite busy) the server answered and the bench retried.

Bounded: --budget seconds in all (SIGALRM), every wait has its own limit; every process it starts is
stopped in a `finally` (also on Ctrl-C or SIGTERM). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from prefect_host.local.budget import BudgetSpent, end_budget, start_budget
from prefect_host.local.s3 import S3Server
from prefect_host.services.litestream import DB_PATH, REPLICA_PATH, SOCKET, Replica, config_text

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
LITESTREAM = str(BIN / "litestream")
BUCKET = "prefect-host-bench-durability"
COMMAND = "make bench-durability"
SERVER_START_S = 120.0
LAG_LIMIT_S = 15.0
POLL_S = 0.025
FOLLOW_INTERVAL = "50ms"
RSS_SAMPLE_S = 5.0
SETTLE_S = 5.0
RETRIES = 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ABBA = ("without", "with", "with", "without")  # a drift of the machine's load falls on both alike


@dataclass
class Bench:
    """The processes and paths of one run; `stop_all` ends every process it started."""

    work: Path
    s3: S3Server = field(default_factory=lambda: S3Server("127.0.0.1"))
    processes: list[subprocess.Popen] = field(default_factory=list)
    auth: str = field(default_factory=lambda: f"admin:{secrets.token_urlsafe(16)}")
    port: int = 0
    ls_env: dict[str, str] = field(default_factory=dict)
    litestream: subprocess.Popen | None = None
    server: subprocess.Popen | None = None

    @property
    def home(self) -> Path:
        return self.work / "prefect-home"

    @property
    def db(self) -> Path:
        return self.home / "prefect.db"  # Prefect's default database under PREFECT_HOME

    @property
    def config(self) -> Path:
        return self.work / "litestream.yml"

    @property
    def socket(self) -> str:
        return str(self.work / "ls.sock")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def url(self) -> str:
        query = f"endpoint={self.s3.endpoint_url}&region={self.s3.region}&forcePathStyle=true"
        return f"s3://{BUCKET}/{REPLICA_PATH}?{query}"

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.work / f"{name}.log", "a") as log:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=self.work,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen | None) -> None:
        """SIGTERM to the process group it started (SIGKILL after 30 s)."""
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.processes)):
            with contextlib.suppress(ProcessLookupError):
                self.stop(process)
        self.s3.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Prefect, AWS or CA-bundle settings (Litestream's S3 client refuses
    AWS_CA_BUNDLE), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "SSL_CERT"))}
    return env | extra


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def litestream(bench: Bench, *args: str, timeout: float = 120.0) -> str:
    done = subprocess.run(
        [LITESTREAM, *args], env=bench.ls_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"litestream {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def start_server(bench: Bench) -> None:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME, basic auth, no UI, no analytics."""
    bench.home.mkdir(parents=True)
    bench.port = free_port()
    env = clean_env(
        PREFECT_HOME=str(bench.home), PREFECT_SERVER_API_AUTH_STRING=bench.auth, PREFECT_SERVER_UI_ENABLED="false"
    )
    argv = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(bench.port), "--analytics-off"]
    bench.server = bench.spawn("server", argv, env)
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if bench.server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {bench.server.returncode}; see {bench.work}/server.log")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{bench.api}/health", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"prefect server not healthy after {SERVER_START_S:.0f} s")
        time.sleep(0.3)


def start_s3(bench: Bench) -> None:
    """The bucket and an IAM user's key on the local S3 server; Litestream's config as the hosts'."""
    bench.s3.start()
    creds = bench.s3.provision(BUCKET, user="prefect-host-bench")
    bench.ls_env = clean_env(
        LITESTREAM_ACCESS_KEY_ID=creds.access_key_id, LITESTREAM_SECRET_ACCESS_KEY=creds.secret_access_key
    )
    replica = Replica(BUCKET, creds.region, creds.access_key_id, creds.secret_access_key, bench.s3.endpoint_url)
    text = config_text(replica).replace(DB_PATH, str(bench.db)).replace(SOCKET, bench.socket)
    bench.config.write_text(text)


def start_litestream(bench: Bench) -> None:
    """`litestream replicate` as the unit runs it; returns once a forced sync has reached the bucket."""
    bench.litestream = bench.spawn(
        "litestream", [LITESTREAM, "replicate", "-no-expand-env", "-config", str(bench.config)], bench.ls_env
    )
    deadline = time.monotonic() + 60
    while True:
        if bench.litestream.poll() is not None:
            raise RuntimeError(f"litestream exited with {bench.litestream.returncode}; see {bench.work}/litestream.log")
        with contextlib.suppress(RuntimeError):
            synced = json.loads(litestream(bench, "sync", "-wait", "-json", "-socket", bench.socket, str(bench.db)))
            if synced["replica_txid"] >= synced["txid"]:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("litestream did not reach the bucket within 60 s")
        time.sleep(0.5)


def stop_litestream(bench: Bench) -> None:
    bench.stop(bench.litestream)
    bench.litestream = None


def api_client(bench: Bench) -> httpx.Client:
    return httpx.Client(base_url=bench.api, auth=tuple(bench.auth.split(":", 1)), timeout=30)


def post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    """A POST retried on 503 (SQLite busy: nothing was written) after a random pause."""
    for attempt in range(RETRIES + 1):
        answer = client.post(path, json=body)
        if answer.status_code != 503 or attempt == RETRIES:
            return answer.raise_for_status()
        time.sleep(random.uniform(0.0, min(2.0, 0.05 * 2**attempt)))
    raise AssertionError("unreachable")


def completed_run(client: httpx.Client, flow_id: str, name: str) -> str:
    """A flow run created through the API and set COMPLETED; its id once the API has answered."""
    run_id = post(client, "/flow_runs/", {"flow_id": flow_id, "name": name, "idempotency_key": name}).json()["id"]
    answer = post(client, f"/flow_runs/{run_id}/set_state", {"state": {"type": "COMPLETED"}})
    if answer.json()["status"] != "ACCEPT":
        raise RuntimeError(f"COMPLETED not accepted for {run_id}: {answer.text[:300]}")
    return run_id


def run_state(copy: Path, run_id: str, errors: list[str]) -> str | None:
    """The run's state in the replica copy, None when not there or when the copy is mid-update (the
    error is kept). `immutable=1`: no lock and no -shm, so the follower's writes are never waited for;
    a fresh connection per look, so nothing is cached."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{copy}?immutable=1", uri=True)) as db:
            row = db.execute("SELECT state_type FROM flow_run WHERE id = ?", (run_id,)).fetchone()
    except sqlite3.DatabaseError as exc:
        errors.append(str(exc))
        return None
    return row[0] if row else None


def wait_in_copy(copy: Path, run_id: str, deadline: float) -> float:
    errors: list[str] = []
    while run_state(copy, run_id, errors) != "COMPLETED":
        if time.monotonic() > deadline:
            txid_file = copy.with_name(copy.name + "-txid")
            follower_txid = txid_file.read_text().strip() if txid_file.exists() else "?"
            raise RuntimeError(
                f"flow run {run_id} not in the replica copy within {LAG_LIMIT_S:.0f} s (the copy is at "
                f"txid {follower_txid}; {len(errors)} failed reads, last: {errors[-1:]})"
            )
        time.sleep(POLL_S)
    return time.monotonic()


def measure_lag(bench: Bench, client: httpx.Client, flow_id: str, samples: int) -> list[float]:
    """Seconds from the API's answer to the run being COMPLETED in a copy following the bucket."""
    copy = bench.work / "follower.db"
    argv = [LITESTREAM, "restore", "-f", "-follow-interval", FOLLOW_INTERVAL, "-o", str(copy), bench.url]
    follower = bench.spawn("follower", argv, bench.ls_env)
    try:
        probe = completed_run(client, flow_id, "bench-lag-probe")  # the copy is up once it has this one
        wait_in_copy(copy, probe, time.monotonic() + 60)
        rng = random.Random(11)
        lags = []
        for i in range(samples):
            time.sleep(rng.uniform(0.0, 1.0))
            run_id = completed_run(client, flow_id, f"bench-lag-{i}")
            answered = time.monotonic()
            lags.append(wait_in_copy(copy, run_id, answered + LAG_LIMIT_S) - answered)
    finally:
        bench.stop(follower)
    return lags


def session_stats(session: int) -> dict[int, tuple[int, int]]:
    """{pid: (utime+stime ticks, VmRSS kB)} for every process in the session."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:  # fields[0] is the state (field 3 of proc(5)); session is field 6
                continue
            status = (entry / "status").read_text()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        stats[int(entry.name)] = (int(fields[11]) + int(fields[12]), rss)
    return stats


def idle_window(bench: Bench, seconds: float) -> dict[str, float]:
    """CPU seconds and median RSS (MiB) over `seconds` of nobody calling the API."""
    sessions = {"server": bench.server.pid, "litestream": bench.litestream.pid if bench.litestream else None}
    before = {name: session_stats(sid) for name, sid in sessions.items() if sid}
    rss: dict[str, list[float]] = {name: [] for name in before}
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(RSS_SAMPLE_S, left))
        for name in before:
            rss[name].append(sum(kb for _, kb in session_stats(sessions[name]).values()) / 1024)
    result = {}
    for name, start in before.items():
        after = session_stats(sessions[name])
        ticks = sum(t - start.get(pid, (0, 0))[0] for pid, (t, _) in after.items())
        result[f"{name}_cpu"] = ticks / CLOCK_TICKS
        result[f"{name}_rss"] = statistics.median(rss[name])
        result[f"{name}_procs"] = len(after)
    return result


def set_litestream(bench: Bench, condition: str) -> None:
    """Litestream running for "with", stopped for "without"; then SETTLE_S of quiet."""
    if condition == "with" and bench.litestream is None:
        start_litestream(bench)
    elif condition == "without" and bench.litestream is not None:
        stop_litestream(bench)
    time.sleep(SETTLE_S)


def measure_idle(bench: Bench, window: float) -> dict[str, list[dict[str, float]]]:
    """Windows in the order ABBA; Litestream started or stopped between them."""
    results: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    for condition in ABBA:
        set_litestream(bench, condition)
        results[condition].append(idle_window(bench, window))
        print(f"idle {condition} Litestream: {results[condition][-1]}", file=sys.stderr, flush=True)
    return results


async def post_run(client: httpx.AsyncClient, body: dict, retries: dict[str, int]) -> None:
    """One POST /flow_runs/, retried after a random pause on a 503 (Prefect's "retry": SQLite was busy)
    or a dropped connection, as Prefect's client retries; the idempotency key makes a retry safe.
    Counts the retries in `retries` ("503", "dropped")."""
    for attempt in range(RETRIES + 1):
        try:
            answer = await client.post("/flow_runs/", json=body)
        except httpx.TransportError:
            if attempt == RETRIES:
                raise
            retries["dropped"] += 1
        else:
            if answer.status_code != 503 or attempt == RETRIES:
                answer.raise_for_status()
                return
            retries["503"] += 1
        await asyncio.sleep(random.uniform(0.0, min(2.0, 0.05 * 2**attempt)))  # full jitter


async def create_runs(
    bench: Bench, flow_id: str, count: int, concurrency: int, prefix: str = "bench-run"
) -> dict[str, int]:
    """`count` COMPLETED flow runs through the API, `concurrency` requests in flight; the retries."""
    numbers = iter(range(count))
    limits = httpx.Limits(max_connections=concurrency)
    auth = tuple(bench.auth.split(":", 1))
    retries = {"503": 0, "dropped": 0}
    async with httpx.AsyncClient(base_url=bench.api, auth=auth, timeout=60, limits=limits) as client:

        async def worker() -> None:
            for number in numbers:
                name = f"{prefix}-{number}"
                body = {"flow_id": flow_id, "name": name, "idempotency_key": name, "state": {"type": "COMPLETED"}}
                await post_run(client, body, retries)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return retries


def measure_burst(bench: Bench, flow_id: str, runs: int) -> dict[str, list[tuple[float, int]]]:
    """Blocks of `runs` creates one at a time, ABBA without/with Litestream: (runs per s, 503s) each."""
    results: dict[str, list[tuple[float, int]]] = {"without": [], "with": []}
    for block, condition in enumerate(ABBA):
        set_litestream(bench, condition)
        started = time.monotonic()
        retries = asyncio.run(create_runs(bench, flow_id, runs, 1, prefix=f"bench-burst-{block}"))
        results[condition].append((runs / (time.monotonic() - started), retries["503"]))
        print(f"burst {condition} Litestream: {results[condition][-1]}", file=sys.stderr, flush=True)
    return results


def replica_bytes(bench: Bench) -> tuple[int, int, int, dict[int, list[int]]]:
    """(all objects under the replica's path, their count, the newest snapshot's bytes,
    {level: [files, bytes]} as `litestream ltx -level all` lists them)."""
    s3 = bench.s3.client("s3")
    total = objects = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{REPLICA_PATH}/"):
        for item in page.get("Contents", []):
            total += item["Size"]
            objects += 1
    files = json.loads(litestream(bench, "ltx", "-json", "-level", "all", bench.url) or "[]") or []
    snapshots = [f for f in files if f["level"] == 9]
    newest = max(snapshots, key=lambda f: int(f["max_txid"], 16))["size"] if snapshots else 0
    levels: dict[int, list[int]] = {}
    for f in files:
        level = levels.setdefault(f["level"], [0, 0])
        level[0] += 1
        level[1] += f["size"]
    return total, objects, newest, dict(sorted(levels.items()))


def flow_run_count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute("SELECT count(*) FROM flow_run").fetchone()[0]


def measure_restore(bench: Bench, restores: int, expected: int) -> dict:
    """Litestream stopped, a forced snapshot, then `litestream restore -o` timed `restores` times."""
    stop_litestream(bench)  # on SIGTERM it ships what is left of the WAL
    started = time.monotonic()
    litestream(bench, "replicate", "-once", "-force-snapshot", "-no-expand-env", "-config", str(bench.config))
    snapshot_s = time.monotonic() - started
    total, objects, snapshot, levels = replica_bytes(bench)
    times = []
    for i in range(restores):
        target = bench.work / f"restored-{i}.db"
        started = time.monotonic()
        litestream(bench, "restore", "-o", str(target), bench.url, timeout=300)
        times.append(time.monotonic() - started)
        if (found := flow_run_count(target)) < expected:
            raise RuntimeError(f"restored copy {i} has {found} flow runs, expected at least {expected}")
    wal = bench.db.with_name("prefect.db-wal")
    return {
        "times": times,
        "snapshot_s": snapshot_s,
        "replica_bytes": total,
        "replica_objects": objects,
        "snapshot_bytes": snapshot,
        "levels": levels,
        "db_bytes": bench.db.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        "restored_bytes": (bench.work / "restored-0.db").stat().st_size,
        "flow_runs": flow_run_count(bench.work / "restored-0.db"),
    }


def run(bench: Bench, args: argparse.Namespace) -> dict:
    start_s3(bench)
    start_server(bench)
    with api_client(bench) as client:
        created = client.post("/flows/", json={"name": "bench-durability"})
        created.raise_for_status()
        flow_id = created.json()["id"]
        start_litestream(bench)
        lags = measure_lag(bench, client, flow_id, args.lag_samples)
    print(f"lag: {[round(lag, 3) for lag in lags]}", file=sys.stderr, flush=True)
    idle = measure_idle(bench, args.idle_window)
    burst = measure_burst(bench, flow_id, args.burst) if args.burst else None
    set_litestream(bench, "with")
    started = time.monotonic()
    retried = asyncio.run(create_runs(bench, flow_id, args.runs, args.concurrency))
    create_s = time.monotonic() - started
    print(f"{args.runs} flow runs created in {create_s:.1f} s, {retried} retries", file=sys.stderr, flush=True)
    expected = args.runs + args.lag_samples + 1 + (4 * args.burst)
    restore = measure_restore(bench, args.restores, expected=expected)
    return {"lags": lags, "idle": idle, "burst": burst, "create_s": create_s, "retried": retried, "restore": restore}


def row(name: str, what: str, values: list[float], unit: str, digits: int = 2) -> str:
    cells = [statistics.median(values), min(values), max(values)]
    return f"| {name} | {what} | " + " | ".join(f"{v:.{digits}f}" for v in cells) + f" | {len(values)} | {unit} |"


def idle_rows(idle: dict[str, list[dict[str, float]]], window: float) -> list[str]:
    per_minute = 60.0 / window
    rows = []
    for condition in ("without", "with"):
        windows = idle[condition]
        procs = max(int(w["server_procs"]) for w in windows)
        what = f"server idle, {condition} Litestream ({procs} process{'es' if procs > 1 else ''})"
        rows.append(row("3", f"{what}: RSS", [w["server_rss"] for w in windows], "MiB", 1))
        rows.append(row("3", f"{what}: CPU", [w["server_cpu"] * per_minute for w in windows], "CPU s per 60 s"))
    windows = idle["with"]
    what = "Litestream idle (replicating the idle server)"
    rows.append(row("3", f"{what}: RSS", [w["litestream_rss"] for w in windows], "MiB", 1))
    rows.append(row("3", f"{what}: CPU", [w["litestream_cpu"] * per_minute for w in windows], "CPU s per 60 s"))
    return rows


def burst_rows(burst: dict[str, list[tuple[float, int]]] | None, runs: int) -> list[str]:
    rows = []
    for condition in ("without", "with") if burst else ():
        what = f"write burst, {condition} Litestream: {runs} creates one at a time"
        rows.append(row("4", f"{what}, rate", [rate for rate, _ in burst[condition]], "runs/s", 1))
        rows.append(row("4", f"{what}, answers 503 (retried)", [n for _, n in burst[condition]], "per block", 1))
    return rows


def table(results: dict, args: argparse.Namespace) -> list[str]:
    r = results["restore"]
    mb = 1e6
    runs = f"{r['flow_runs']:,}"
    return [
        "| row | what | median | min | max | n | unit |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        row("1", "replication lag: API answered COMPLETED -> run in a copy following the bucket", results["lags"], "s"),
        row(
            "2",
            f"create {args.runs:,} COMPLETED runs through the API ({args.concurrency} in flight, "
            f"retried: {results['retried']['503']} answers 503, {results['retried']['dropped']} dropped connections)",
            [results["create_s"]],
            "s",
            1,
        ),
        row("2", "forced snapshot (`litestream replicate -once -force-snapshot`)", [r["snapshot_s"]], "s"),
        row("2", f"restore (`litestream restore -o`) of the database with {runs} flow runs", r["times"], "s"),
        row(
            "2",
            f"replica in the bucket: all {r['replica_objects']} objects under backups/prefect-db/",
            [r["replica_bytes"] / mb],
            "MB",
        ),
        *(
            row("2", f"replica, level {level}: {files} files", [size / mb], "MB")
            for level, (files, size) in r["levels"].items()
        ),
        row("2", "replica: the newest snapshot (level 9)", [r["snapshot_bytes"] / mb], "MB"),
        row("2", "database on the server: prefect.db", [r["db_bytes"] / mb], "MB"),
        row("2", "database on the server: its WAL, prefect.db-wal", [r["wal_bytes"] / mb], "MB"),
        row("2", "restored database file", [r["restored_bytes"] / mb], "MB"),
        *idle_rows(results["idle"], args.idle_window),
        *burst_rows(results["burst"], args.burst),
    ]


def machine(load_before: tuple[float, ...], seconds: float, args: argparse.Namespace) -> str:
    from importlib.metadata import version

    ls_version = subprocess.run([LITESTREAM, "version"], capture_output=True, text=True, check=False).stdout.strip()
    options = f"--runs {args.runs} --lag-samples {args.lag_samples} --restores {args.restores}"
    options += f" --idle-window {args.idle_window:g} --burst {args.burst} --concurrency {args.concurrency}"
    return (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, Prefect {version('prefect')}, Litestream {ls_version}, "
        f"load average {load_before[0]:.1f} before and {os.getloadavg()[0]:.1f} after with `{COMMAND}` "
        f"(`bench/durability.py {options}`); idle windows of {args.idle_window:g} s, ABBA "
        f"(without, with, with, without), so {2 * args.idle_window:g} s per condition; {seconds:.0f} s in all."
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    top.add_argument("--runs", type=int, default=10_000, help="flow runs in the database restored (row 2)")
    top.add_argument("--lag-samples", type=int, default=20, help="replication lag samples (row 1)")
    top.add_argument("--restores", type=int, default=3, help="timed restores (row 2)")
    top.add_argument("--idle-window", type=float, default=30.0, help="seconds per idle window, 4 windows (row 3)")
    top.add_argument(
        "--concurrency", type=int, default=1, help="POSTs in flight while creating the runs (more: SQLite busy, 503s)"
    )
    top.add_argument("--burst", type=int, default=300, help="creates per write-burst block, 4 blocks; 0: none (row 4)")
    top.add_argument("--budget", type=int, default=600, help="seconds in all; then everything is stopped")
    return top


def main() -> int:
    args = parser().parse_args()
    load_before, started = os.getloadavg(), time.monotonic()
    start_budget(args.budget)
    bench = Bench(Path(tempfile.mkdtemp(prefix="bench-durability-")))
    ok = False
    try:
        results = run(bench, args)
        ok = True
    except BudgetSpent as exc:
        print(f"stopped after {time.monotonic() - started:.0f} s: {exc} (--budget {args.budget})", file=sys.stderr)
        return 1
    finally:
        end_budget()
        bench.stop_all()
        if ok:
            shutil.rmtree(bench.work, ignore_errors=True)
        else:
            print(f"failed; logs kept in {bench.work}", file=sys.stderr)
    print(machine(load_before, time.monotonic() - started, args) + "\n")
    print("\n".join(table(results, args)))
    print(f"\nRow 1 samples, s: {', '.join(f'{lag:.3f}' for lag in results['lags'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
