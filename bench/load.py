"""Issue 12's load figures, on this machine: three Prefect 3.9.1 servers, each on a fresh local guest (LocalHost
from build_image(), Debian 13), one after another (never two under load at once), measured from here.

  a  the tutorial's server: uv from the wheelhouse, `uv venv`, `uv pip install prefect==3.9.1`, then
     `prefect server start --host 0.0.0.0 --port 4200` (systemd-run): SQLite, one process, plain HTTP, no auth
  b  this product's default: scripts/bootstrap.py with tlsMode internal (SQLite, Caddy TLS, basic auth)
  c  scale-out: b plus database postgres (a PostgreSQL 17 guest of its own, guest_routing()), apiWorkers 4, Redis
  d  b with worker hosts (issue 13): outputs with workerHosts for two more guests, the runs' 4 workers there
     (`--workers 2` per worker host), none on the server's guest; its rows compare with b's

1. API: requests/s and p50/p99 latency of a read (`POST /api/flow_runs/filter` {"limit": 10}) and a write
   (`POST /api/flow_runs/` {"flow_id": ..., "state": {"type": "SCHEDULED"}}) at each --clients level, closed
   loop, one httpx.AsyncClient per server (HTTP/1.1, keep-alive, TLS verified against the CA the bootstrap
   pinned, basic auth); each cell at most --requests requests and --seconds seconds after a short warm-up.
   Errors (non-2xx, timeouts, cut off) are counted and reported. Reads first, then writes, clients rising.
2. Orchestration: a deployment of a flow that returns 1 (code on the guest: /opt/bench/flow.py, pulled with
   set_working_directory), --runs flow runs created at once (16 creates in flight, each with an idempotency key
   and retried while SQLite answers 503: the retries are reported), executed by 4 process workers on the guest
   (b, c: the bootstrap's own, `--workers 4`; d: 2 on each worker host; a: `prefect work-pool create` and
   4 x `prefect worker start --pool default --type process` by hand), the pool's concurrency limit at --pool-limit
   for all of them (a process worker without one starts every run it is handed at once: hundreds of Python
   processes on 2 CPUs); runs completed per minute, the slowest run's start lateness, and the runs not Completed.

Bounded: --budget seconds in all (SIGALRM), every wait has its own limit, guests are destroyed in a `finally`
(also on Ctrl-C or SIGTERM). Only local addresses: the guests' 10.77.x.x and loopback. Writes bench/load.md
and prints the same markdown.

    make bench-load                        # .venv/bin/python bench/load.py
    make bench-load LOAD_ARGS="--requests 300 --seconds 5 --runs 50"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import httpx

from prefect_host.local import LocalHost, PackageIndex, build_image, ensure_wheelhouse
from prefect_host.local.apt_repo import AptRepoServer, ensure_apt_repo
from prefect_host.local.bench_report import bench_command_line, hardware
from prefect_host.local.budget import BudgetSpent, end_budget, start_budget
from prefect_host.local.load import (
    TERMINAL_STATES,
    Cell,
    Orchestration,
    Submitted,
    api_rows,
    goal_lines,
    orchestration_rows,
    ratio,
    run_cell,
    submit_all,
    summarize_runs,
)
from prefect_host.local.postgres_guest import PostgresGuest, guest_routing, postgres_image
from prefect_host.local.product import BOOTSTRAP_SCRIPT, REPO
from prefect_host.local.services import write_private_json
from prefect_host.local.stack_outputs import host_outputs, new_auth_string
from prefect_host.local.wheelhouse import GUEST_PREFECT_VERSION, GUEST_PYTHON, GUEST_REQUIREMENTS
from prefect_host.services import metadata_guard
from prefect_host.services.python_env import BYTECODE_MARKER, UV_VERSION

# How the report names the run: `make bench-load LOAD_ARGS="..."`, or the script.
INVOKED_AS = ("bench-load", "LOAD_ARGS", "bench/load.py")
OUTPUT = REPO / "bench" / "load.md"
GET_UV = REPO / "prefect_host" / "get_uv.py"
SERVERS = {
    "a": "the tutorial's `prefect server start --host 0.0.0.0` (SQLite, 1 process, HTTP, no auth)",
    "b": "this product's default (SQLite, 1 process, Caddy TLS, basic auth)",
    "c": "scale-out (PostgreSQL 17 guest, 4 API processes, Redis, Caddy TLS, basic auth)",
    "d": "b with its 4 process workers on 2 worker hosts (guests of their own, 2 workers each; none on the server)",
}
# The tutorial's server (a): where it is installed, and its state.
TUTORIAL_DIR = "/opt/tutorial"
TUTORIAL_HOME = "/var/lib/tutorial"
TUTORIAL_PREFECT = f"{TUTORIAL_DIR}/venv/bin/prefect"
WORKERS = 4
WORKER_HOSTS = 2  # (d): WORKERS // WORKER_HOSTS workers on each
POOL = "default"
FLOW_DIR = "/opt/bench"
FLOW_CODE = 'from prefect import flow\n\n\n@flow(name="noop")\ndef noop() -> int:\n    return 1\n'
HEALTH_TIMEOUT = 300.0
BOOTSTRAP_TIMEOUT = 1800.0
POLL_S = 5.0
CREATE_CLIENTS = 16  # flow runs created this many at a time
CREATE_ATTEMPTS = 30  # per run: SQLite answers most concurrent writes 503 (busy); they are retried
PAGE = 200  # the API's largest page (PREFECT_API_DEFAULT_LIMIT)
GUARD_FAILURE = "The metadata guard is not in force"


def say(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} bench-load: {message}", file=sys.stderr, flush=True)


@dataclass
class Target:
    """A server under test, as this machine reaches it."""

    api_url: str
    ca_file: str | None = None  # None: plain HTTP
    auth: tuple[str, str] | None = None

    def client(self, connections: int, timeout: float) -> httpx.AsyncClient:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(
            base_url=self.api_url.rstrip("/"),
            verify=verify,
            auth=self.auth,
            limits=limits,
            timeout=httpx.Timeout(timeout),
            http1=True,
            http2=False,
        )


@dataclass
class Measured:
    """One server's figures and what they ran on."""

    api: dict[tuple[str, int], Cell] = field(default_factory=dict)
    created: Submitted | None = None
    orchestration: Orchestration | None = None
    versions: dict[str, str] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # 1-minute load average: API phase start, its end, the end
    seconds: float = 0.0
    error: str = ""  # why the server's measurements stopped short
    notes: list[str] = field(default_factory=list)  # what had to be worked around


# --- the servers ---------------------------------------------------------------------------------------------


def guest(host: LocalHost, script: str, *, timeout: float = 120, stdin: str | None = None) -> str:
    return host.guest_exec(["sh", "-c", script], timeout=timeout, input=stdin).stdout


def wait_healthy(url: str, ca_file: str | None = None, timeout: float = HEALTH_TIMEOUT) -> None:
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=3, verify=verify) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if client.get(f"{url}/health").json() is True:
                    return
            time.sleep(0.5)
    raise RuntimeError(f"{url}/health did not answer true within {timeout:.0f} s")


def tutorial_server(host: LocalHost, index: PackageIndex) -> Target:
    """(a): uv from the wheelhouse page (get_uv.py, as the bootstrap fetches it), a venv, prefect from the same
    page (with bytecode, as pip compiles it), `prefect server start --host 0.0.0.0` as a transient unit."""
    started = time.monotonic()
    guest(
        host,
        f"mkdir -p {TUTORIAL_DIR} && "
        f"python3 - --version {UV_VERSION} --dest {TUTORIAL_DIR}/uv --find-links {index.url}",
        stdin=GET_UV.read_text(),
        timeout=300,
    )
    uv = f"UV_PYTHON_DOWNLOADS=never {TUTORIAL_DIR}/uv"
    guest(host, f"{uv} venv --quiet --python /usr/bin/python3 {TUTORIAL_DIR}/venv", timeout=120)
    guest(
        host,
        f"{uv} pip install --quiet --compile-bytecode --python {TUTORIAL_DIR}/venv/bin/python --no-index "
        f"--find-links {index.url} prefect=={GUEST_PREFECT_VERSION}",
        timeout=900,
    )
    guest(
        host,
        f"systemd-run --quiet --unit tutorial-server --working-directory=/ --setenv=PREFECT_HOME={TUTORIAL_HOME} "
        f"{TUTORIAL_PREFECT} server start --host 0.0.0.0 --port 4200",
    )
    target = Target(f"http://{host.address}:4200/api")
    wait_healthy(target.api_url)
    say(f"a: the tutorial's server answers on {target.api_url} after {time.monotonic() - started:.0f} s")
    return target


def tutorial_workers(host: LocalHost) -> None:
    """(a)'s pool and 4 workers, as the tutorial has them: `prefect work-pool create`, `prefect worker start`."""
    env = "PREFECT_API_URL=http://127.0.0.1:4200/api PREFECT_HOME=/var/lib/tutorial-worker"
    guest(host, f"cd / && env {env} {TUTORIAL_PREFECT} work-pool create {POOL} --type process", timeout=180)
    for i in range(1, WORKERS + 1):
        guest(
            host,
            f"systemd-run --quiet --unit tutorial-worker-{i} --working-directory=/ --setenv=HOME=/root "
            + " ".join(f"--setenv={setting}" for setting in env.split())
            + f" {TUTORIAL_PREFECT} worker start --pool {POOL} --type process --name tutorial-{i}",
        )


@dataclass
class Product:
    """(b) or (c): a guest bootstrapped with scripts/bootstrap.py as an operator runs it."""

    host: LocalHost
    work: Path
    bootstrap_args: list[str]
    outputs: dict[str, str]
    notes: list[str] = field(default_factory=list)  # what had to be worked around

    @property
    def home(self) -> Path:
        return self.work / "laptop-prefect"

    def bootstrap(self, *extra: str) -> float:
        started = time.monotonic()
        done, printed = self._bootstrap(extra)
        if done != 0 and GUARD_FAILURE in printed:
            # A fresh host with --workers 0: the server applied the metadata guard before the bootstrap created
            # user prefect-flow, and no worker unit applies it again. The fix the bootstrap itself suggests.
            self.host.guest_exec([metadata_guard.PATH], timeout=60)
            note = f"`bootstrap.py {' '.join(extra)}` failed: {GUARD_FAILURE}; ran {metadata_guard.PATH}, then again"
            self.notes.append(note)
            say(note)
            done, printed = self._bootstrap(extra)
        if done != 0:
            raise RuntimeError(f"scripts/bootstrap.py {' '.join(extra)} exited with {done}:\n{printed[-3000:]}")
        self.wait_for_bytecode()
        return time.monotonic() - started

    def _bootstrap(self, extra: tuple[str, ...]) -> tuple[int, str]:
        """scripts/bootstrap.py as an operator runs it: (its exit status, what it printed)."""
        outputs = self.work / "outputs.json"
        write_private_json(outputs, self.outputs)
        argv = [sys.executable, str(BOOTSTRAP_SCRIPT), "--outputs", str(outputs), *self.bootstrap_args, *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "SSL_CERT"))}
        env["PREFECT_HOME"] = str(self.home)
        log_path = self.work / f"bootstrap-{len(list(self.work.glob('bootstrap-*.log')))}.log"
        with open(log_path, "w") as log:
            done = subprocess.run(
                argv, env=env, cwd=self.work, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                timeout=BOOTSTRAP_TIMEOUT,
            )  # fmt: skip
        return done.returncode, log_path.read_text()

    def wait_for_bytecode(self, timeout: float = 300.0) -> None:
        """The bootstrap compiles the venv's bytecode in the background after the start: not while measuring."""
        deadline = time.monotonic() + timeout
        while self.host.guest_exec(["cat", BYTECODE_MARKER], check=False).stdout.strip() != GUEST_PREFECT_VERSION:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bootstrap's bytecode job did not finish within {timeout:.0f} s")
            time.sleep(1)

    def target(self) -> Target:
        profiles = tomllib.loads((self.home / "profiles.toml").read_text())
        profile = profiles["profiles"]["bench-load"]
        user, password = self.outputs["prefectAuthString"].split(":", 1)
        return Target(profile["PREFECT_API_URL"], profile["PREFECT_API_SSL_CERT_FILE"], (user, password))


def quick_poweroff(host: LocalHost) -> None:
    """What ran here needs no clean stop: killed first, the guest powers off in seconds instead of a minute."""
    with contextlib.suppress(Exception):  # best effort; destroy() stops the guest either way
        host.guest_exec(["systemctl", "kill", "--signal=SIGKILL", "tutorial-*", "prefect-*"], check=False, timeout=30)


def worker_hosts(stack: contextlib.ExitStack, server: LocalHost) -> list[LocalHost]:
    """(d)'s worker hosts: guests of their own, routed to the server's guest, that the stack's operator key
    logs in to (one key for the stack's VMs, as on a cloud)."""
    stack.enter_context(guest_routing())
    operator = server.identity_file.with_suffix(".pub").read_text().strip()
    guests = []
    for _ in range(WORKER_HOSTS):
        worker = stack.enter_context(LocalHost.create(build_image()))
        stack.callback(quick_poweroff, worker)
        worker.boot()
        worker.guest_exec(["sh", "-c", f"echo '{operator}' >> /home/admin/.ssh/authorized_keys"])
        guests.append(worker)
    return guests


def guest_versions(host: LocalHost, commands: dict[str, str]) -> dict[str, str]:
    found = {}
    for name, command in commands.items():
        out = host.guest_exec(["sh", "-c", command], check=False).stdout.strip()
        found[name] = out.splitlines()[0] if out else "?"
    return found


# --- the measurements ----------------------------------------------------------------------------------------


async def call(client: httpx.AsyncClient, method: str, path: str, body: object = None, attempts: int = 30) -> object:
    """A request the bench itself needs (set-up, polling): retried while the server answers 502/503 (SQLite
    busy; Caddy's answer when the server closed the connection) or drops the connection."""
    for attempt in range(1, attempts + 1):
        try:
            answer = await client.request(method, path, json=body)
        except httpx.TransportError:
            if attempt == attempts:
                raise
        else:
            if answer.status_code not in (502, 503) or attempt == attempts:
                answer.raise_for_status()
                return answer.json() if answer.content else None
        await asyncio.sleep(min(2.0, 0.2 * attempt))
    raise AssertionError("unreachable")


async def measure_api(target: Target, args: argparse.Namespace, name: str) -> dict[tuple[str, int], Cell]:
    cells: dict[tuple[str, int], Cell] = {}
    async with target.client(max(args.clients), args.request_timeout) as client:
        flow_id = (await call(client, "POST", "/flows/", {"name": "bench"}))["id"]
        requests: dict[str, Callable[[], tuple]] = {
            "read": lambda: ("POST", "/flow_runs/filter", {"limit": 10}),
            "write": lambda: ("POST", "/flow_runs/", {"flow_id": flow_id, "state": {"type": "SCHEDULED"}}),
        }
        for kind, request in requests.items():
            for clients in args.clients:
                warm = min(args.requests, max(50, 2 * clients))
                await run_cell(client, request, clients=clients, max_requests=warm, max_seconds=min(3.0, args.seconds))
                cell = await run_cell(
                    client, request, clients=clients, max_requests=args.requests, max_seconds=args.seconds
                )
                cells[(kind, clients)] = cell
                say(
                    f"{name}: {kind:5} x{clients:<3} {cell.rps:7.1f}/s p50 {cell.p50 * 1000:6.0f} ms "
                    f"p99 {cell.p99 * 1000:6.0f} ms, {cell.ok} ok, errors: {cell.errors_text()}"
                )
    return cells


def deployment_body(flow_id: str) -> dict:
    return {
        "name": "bench-load",
        "flow_id": flow_id,
        "work_pool_name": POOL,
        "entrypoint": "flow.py:noop",
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": FLOW_DIR}}],
        "enforce_parameter_schema": False,
    }


async def finished_runs(client: httpx.AsyncClient, deployment_id: str) -> int:
    body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": TERMINAL_STATES}}}}
    return int(await call(client, "POST", "/flow_runs/count", body))


async def all_runs(client: httpx.AsyncClient, deployment_id: str) -> list[dict]:
    runs: list[dict] = []
    while True:
        body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "limit": PAGE, "offset": len(runs)}
        page = await call(client, "POST", "/flow_runs/filter", body)
        runs += page
        if len(page) < PAGE:
            return runs


def memory_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


async def measure_orchestration(target: Target, args: argparse.Namespace, name: str) -> tuple[Submitted, Orchestration]:
    async with target.client(CREATE_CLIENTS, args.request_timeout) as client:
        flow = await call(client, "POST", "/flows/", {"name": "noop"})
        deployment_id = (await call(client, "POST", "/deployments/", deployment_body(flow["id"])))["id"]
        if args.pool_limit:
            await call(client, "PATCH", f"/work_pools/{POOL}", {"concurrency_limit": args.pool_limit})
        # An idempotency key per run: a create retried after a lost answer gives the same run, not a second one.
        path = f"/deployments/{deployment_id}/create_flow_run"
        creates = [("POST", path, {"idempotency_key": f"bench-load-{i}"}) for i in range(args.runs)]
        deadline = time.monotonic() + args.run_timeout  # for creating and finishing them, both
        created = await submit_all(
            client, creates, clients=CREATE_CLIENTS, attempts=CREATE_ATTEMPTS, max_seconds=args.run_timeout
        )
        say(
            f"{name}: {created.ok} flow runs created in {created.seconds:.1f} s ({created.failed} given up); "
            f"answers retried: {created.errors_text()}"
        )
        done = 0
        while done < created.ok and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            if memory_available_gib() < args.min_free_gib:
                raise RuntimeError(f"less than {args.min_free_gib} GiB of memory left here; stopped the runs")
            done = await finished_runs(client, deployment_id)
            say(f"{name}: {done}/{created.ok} flow runs finished")
        return created, summarize_runs(await all_runs(client, deployment_id), submitted=created.ok)


def load_average() -> float:
    return os.getloadavg()[0]


def measure(name: str, args: argparse.Namespace, work: Path, wheels: Path, result: Measured) -> None:
    """One server on fresh guests, into `result`: set up, the API phase, the orchestration phase; the guests
    destroyed after."""
    started = time.monotonic()
    work.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(LocalHost.create(build_image()))
        stack.callback(quick_poweroff, host)
        host.boot()
        index = stack.enter_context(PackageIndex(wheels, host.gateway))
        commands = {"Debian": "cat /etc/debian_version", "Python (guest)": "python3 --version"}
        worker_guests: list[LocalHost] = []
        if name == "a":
            target = tutorial_server(host, index)
            product = None
        else:
            packages = ("caddy", "redis-server") if name == "c" else ("caddy",)
            apt = stack.enter_context(AptRepoServer(ensure_apt_repo(packages, suite="trixie"), host.gateway))
            outputs = host_outputs(host, new_auth_string(), None)
            if name == "c":
                stack.enter_context(guest_routing())
                db = stack.enter_context(LocalHost.create(postgres_image()))
                db.boot()
                pg = PostgresGuest.set_up(db, client_address=host.address)
                outputs |= {"database": "postgres", "apiWorkers": str(WORKERS), "databaseUrl": pg.database_url}
                result.versions |= guest_versions(db, {"PostgreSQL": "psql --version"})
                commands["Redis"] = "redis-server --version"
            if name == "d":
                worker_guests = worker_hosts(stack, host)
                outputs["workerHosts"] = [
                    {"name": f"w-{i}", "publicIp": guest.address, "hostPublicKey": guest.host_public_key}
                    for i, guest in enumerate(worker_guests, start=1)
                ]
            commands["Caddy"] = "caddy version"
            args_ = ["--find-links", index.url, "--apt-source", apt.source_line, "--profile", "bench-load"]
            product = Product(host, work, [*args_, "--no-storage"], outputs, notes=result.notes)
            seconds = product.bootstrap("--workers", "0")
            target = product.target()
            say(f"{name}: bootstrapped in {seconds:.0f} s; API at {target.api_url}")
        result.versions |= guest_versions(host, commands)
        time.sleep(args.settle)
        result.load.append(load_average())
        result.api = asyncio.run(measure_api(target, args, name))
        result.load.append(load_average())
        if args.runs:
            for runner in worker_guests or [host]:  # where the runs execute
                guest(runner, f"install -D -m 0644 /dev/stdin {FLOW_DIR}/flow.py", stdin=FLOW_CODE)
            if product is None:
                tutorial_workers(host)
            else:
                # With worker hosts, --workers is per worker host and the server keeps none (--server-workers 0).
                workers = WORKERS // WORKER_HOSTS if worker_guests else WORKERS
                seconds = product.bootstrap("--workers", str(workers))
                say(f"{name}: bootstrapped again with --workers {workers} in {seconds:.0f} s")
            time.sleep(args.settle)
            result.created, result.orchestration = asyncio.run(measure_orchestration(target, args, name))
        result.load.append(load_average())
    result.seconds = time.monotonic() - started


# --- the report ----------------------------------------------------------------------------------------------


def orchestration_section(results: dict[str, Measured], args: argparse.Namespace) -> list[str]:
    orchestration = {n: m.orchestration for n, m in results.items() if m.orchestration}
    reasons = [f"- {n}, runs not Completed: {o.reasons}" for n, o in orchestration.items() if o.reasons]
    return [
        "",
        "## Orchestration",
        "",
        f"{args.runs} flow runs of a deployment (a flow that returns 1) created at once ({CREATE_CLIENTS} "
        f"requests in flight), {WORKERS} process workers on the guest (d: {WORKERS // WORKER_HOSTS} on each of "
        f"{WORKER_HOSTS} worker hosts). completed/min: from the first run's "
        "creation to the last one's end (server timestamps); lateness: start_time - expected_start_time. "
        "Answers to the creates that were not 2xx (retried, up to "
        f"{CREATE_ATTEMPTS} attempts per run, with the same idempotency key): "
        + ", ".join(
            f"{n} {m.created.errors_text()} ({m.created.failed} given up, {m.created.seconds:.0f} s to create)"
            for n, m in results.items()
            if m.created
        )
        + ". States: "
        + "; ".join(f"{n} {o.states}" for n, o in orchestration.items())
        + ".",
        "",
        *orchestration_rows(orchestration),
        *(["", *reasons] if reasons else []),
        *worker_hosts_line(orchestration),
    ]


def worker_hosts_line(orchestration: dict[str, Orchestration]) -> list[str]:
    """(d) against (b), the same server with its workers on worker hosts instead of its own guest."""
    if "b" not in orchestration or "d" not in orchestration:
        return []
    b, d = orchestration["b"], orchestration["d"]
    return [
        "",
        f"- Worker hosts (d vs b): completed/min {d.per_minute:.1f} vs {b.per_minute:.1f} "
        f"({ratio(d.per_minute, b.per_minute)}). All guests share this machine's "
        f"{os.cpu_count()} CPUs: the worker hosts add no CPU here, as separate VMs would on a cloud.",
    ]


def report(results: dict[str, Measured], args: argparse.Namespace, seconds: float) -> str:
    versions = {k: v for m in results.values() for k, v in m.versions.items()}
    lines = [
        "# Load: the tutorial's server (a), this product's default (b), scale-out (c), worker hosts (d)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{bench_command_line(*INVOKED_AS)}` (bench/load.py), "
        f"{seconds / 60:.0f} min in all, on {hardware()}; the guests share this machine's CPUs with the client.",
        f"Prefect {GUEST_PREFECT_VERSION} on every guest; "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        + f"; client: Python {platform.python_version()}, httpx {version('httpx')}, HTTP/1.1.",
        "",
        *(f"- {name}: {SERVERS[name]}" for name in results),
        "",
        f"Options: --clients {','.join(map(str, args.clients))} --requests {args.requests} --seconds {args.seconds:g} "
        f"--runs {args.runs} --pool-limit {args.pool_limit} --run-timeout {args.run_timeout:g} "
        f"--settle {args.settle:g}. This machine's load average (1 min; other work on it skews every figure) at "
        "the API phase's start and end, and at the end of the runs: "
        + ", ".join(f"{n} {'/'.join(f'{x:.1f}' for x in m.load)}" for n, m in results.items() if m.load)
        + ". Time per server (guests, set-up, both phases): "
        + ", ".join(f"{n} {m.seconds / 60:.1f} min" for n, m in results.items())
        + ".",
        "",
        "## API",
        "",
        f"Each cell at most {args.requests} requests and {args.seconds:g} s after a warm-up; requests/s counts 2xx "
        "answers over the cell's wall time; p50/p99 are of the 2xx answers; errors are every other outcome.",
        "",
        *api_rows({n: m.api for n, m in results.items()}),
    ]
    orchestration = {n: m.orchestration for n, m in results.items() if m.orchestration}
    if orchestration:
        lines += orchestration_section(results, args)
    notes = [f"- {n}: {note}" for n, m in results.items() for note in m.notes]
    if notes:
        lines += ["", "## Worked around", "", *notes]
    failed = [f"- {n}: {m.error}" for n, m in results.items() if m.error]
    if failed:
        lines += ["", "## Failed", "", *failed]
    goals = goal_lines({n: m.api for n, m in results.items()}, orchestration)
    if goals:
        lines += ["", "## Goals (reported, not asserted)", "", *goals]
    return "\n".join(lines) + "\n"


# --- the command ---------------------------------------------------------------------------------------------


def clients_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give client counts such as 8,32,128")
    return values


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    top.add_argument("--servers", default="abcd", help="which of a, b, c, d to measure, in order (default abcd)")
    top.add_argument("--clients", type=clients_list, default=[8, 32, 128], help="concurrent clients per cell")
    top.add_argument("--requests", type=int, default=2000, help="requests per cell, at most")
    top.add_argument("--seconds", type=float, default=20.0, help="seconds per cell, at most")
    top.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request before a timeout")
    top.add_argument("--runs", type=int, default=500, help="flow runs of the orchestration phase; 0: none")
    top.add_argument(
        "--run-timeout", type=float, default=900.0, help="seconds to create the runs and see them finish, at most"
    )
    top.add_argument(
        "--pool-limit",
        type=int,
        default=16,
        help="the work pool's concurrency limit (a process worker without one starts all runs it gets); 0: none",
    )
    top.add_argument("--min-free-gib", type=float, default=2.0, help="stop the runs when this machine has less")
    top.add_argument("--settle", type=float, default=10.0, help="seconds of rest before each phase")
    top.add_argument("--budget", type=int, default=7200, help="seconds in all; then everything is stopped")
    top.add_argument("--output", type=Path, default=OUTPUT, help="where the markdown goes (default bench/load.md)")
    return top


def main() -> int:
    args = parser().parse_args()
    if not set(args.servers) <= set(SERVERS) or not args.servers:
        raise SystemExit(f"--servers {args.servers!r}: letters of 'abcd'")
    started = time.monotonic()
    start_budget(args.budget)
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    results: dict[str, Measured] = {}
    try:
        wheels = ensure_wheelhouse(GUEST_REQUIREMENTS, python_version=GUEST_PYTHON)
        build_image()
        if "c" in args.servers:
            postgres_image()
        for name in args.servers:
            say(f"{name}: {SERVERS[name]}")
            results[name] = Measured()
            try:
                measure(name, args, work / name, wheels, results[name])
            except Exception as exc:  # noqa: BLE001  reported with the figures; the next server still runs
                results[name].error = f"{type(exc).__name__}: {exc}".strip()[:2000]
                say(f"{name} failed: {results[name].error}")
    except BudgetSpent as exc:
        say(f"stopped: {exc}")
        for measured in results.values():
            if not measured.seconds and not measured.error:
                measured.error = f"stopped: {exc}"
    finally:
        end_budget()
    failed = any(m.error for m in results.values())
    if failed:
        say(f"work files (bootstrap logs, laptop profiles) kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, args, time.monotonic() - started)
    args.output.write_text(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
