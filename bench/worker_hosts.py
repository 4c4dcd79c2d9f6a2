"""Issue 13's worker-host figures, on this machine: the wall time of a first `scripts/bootstrap.py` for a stack of
0, 1 and 2 worker hosts, each on fresh local guests (LocalHost from build_image(), Debian 13), and of a re-run on the
converged hosts.

  0  a plain server stack: one guest, the server and its default worker
  1  a server guest (0 workers) and one worker-host guest (2 workers)
  2  a server guest (0 workers) and two worker-host guests (2 workers each), converged concurrently

Every bootstrap as a user runs it: `scripts/bootstrap.py --outputs FILE --find-links URL --apt-source LINE --profile
NAME`, PREFECT_HOME a fresh temporary directory, nothing of this process's Prefect or AWS settings. The outputs carry
tlsMode internal, an auth string, a bucket on the local S3 server (IAM user's key) and, for 1 and 2, `workerHosts`
(name, address, pinned host key); the server's operator key is authorized on the worker guests (one key for the stack's
VMs, as on a cloud) and guest_routing() lets the guests reach each other. The configurations are interleaved
(0,1,2,0,1,2,... for --repeat R), so a drift of the machine's load falls on all alike; the load average is recorded.

Reported: median wall times, the ratios 2 hosts / 1 host (goal <= 1.3: the worker hosts converge concurrently) and
1 host / 0 hosts, and the per-host times the bootstrap prints ("worker host w-1: ok, 2 worker(s), N s").

Bounded: --budget seconds in all (SIGALRM), every bootstrap has its own timeout; the guests are destroyed (LocalHost
context managers) and every server stopped in a `finally`, also on Ctrl-C or SIGTERM. Writes bench/worker-hosts.md
and prints the same markdown.

    make bench-workers                          # .venv/bin/python bench/worker_hosts.py
    make bench-workers WORKERS_ARGS="--repeat 2"
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect_host.local import LocalHost, PackageIndex, build_image, ensure_wheelhouse
from prefect_host.local.apt_repo import AptRepoServer, ensure_apt_repo
from prefect_host.local.bench_report import bench_command_line, hardware
from prefect_host.local.budget import BudgetSpent, end_budget, start_budget
from prefect_host.local.postgres_guest import guest_routing
from prefect_host.local.product import BOOTSTRAP_SCRIPT, REPO
from prefect_host.local.s3 import S3Server
from prefect_host.local.services import write_private_json
from prefect_host.local.stack_outputs import host_outputs, new_auth_string
from prefect_host.local.wheelhouse import GUEST_PREFECT_VERSION, GUEST_PYTHON, GUEST_REQUIREMENTS

# How the report names the run: `make bench-workers WORKERS_ARGS="..."`, or the script.
INVOKED_AS = ("bench-workers", "WORKERS_ARGS", "bench/worker_hosts.py")
OUTPUT = REPO / "bench" / "worker-hosts.md"
PROFILE = "bench-workers"
BUCKET = "prefect-host-bench-workers"
CONFIGS = (0, 1, 2)
HOST_LINE = re.compile(r"^\s*worker host (?P<name>\S+): ok, (?P<workers>\d+) worker\(s\), (?P<seconds>[\d.]+) s$", re.M)
FAILED_LINE = re.compile(r"^\s*worker host \S+: FAILED.*$", re.M)
NOT_FOR_THE_LAPTOP = ("PREFECT_", "AWS_", "SSL_CERT", "REQUESTS_CA_BUNDLE")


def say(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} bench-workers: {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """One bootstrap: its wall time, exit code and the per-host lines it printed."""

    seconds: float
    returncode: int
    hosts: dict[str, float] = field(default_factory=dict)  # worker host -> its own seconds
    workers: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


@dataclass
class Measured:
    """One configuration on fresh guests: the first bootstrap and the re-run."""

    hosts: int
    round: int
    first: Run | None = None
    rerun: Run | None = None
    load: tuple[float, float] = (0.0, 0.0)
    boot_seconds: float = 0.0
    error: str | None = None


def load_average() -> float:
    return os.getloadavg()[0]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_FOR_THE_LAPTOP)}
    return env | extra


def quick_poweroff(host: LocalHost) -> None:
    """What ran there needs no clean stop: killed first, the guest powers off in seconds, not a minute."""
    with contextlib.suppress(Exception):  # best effort; destroy() stops the guest either way
        host.guest_exec(["systemctl", "kill", "--signal=SIGKILL", "prefect-*", "caddy", "litestream*"], check=False)
        host.stop()


def power_off(guests: list[LocalHost]) -> None:
    with ThreadPoolExecutor(len(guests)) as pool:
        list(pool.map(quick_poweroff, guests))


def bootstrap(argv: list[str], env: dict[str, str], log: Path, timeout: float, hosts: int) -> Run:
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        log.write_text(f"{exc.stdout or ''}\n--- stderr ---\n{exc.stderr or ''}")
        raise RuntimeError(f"the bootstrap took more than {timeout:.0f} s; its output: {log}") from exc
    seconds = time.monotonic() - started
    log.write_text(f"{done.stdout}\n--- stderr ---\n{done.stderr}")
    run = Run(seconds, done.returncode)
    for match in HOST_LINE.finditer(done.stdout):
        run.hosts[match["name"]] = float(match["seconds"])
        run.workers[match["name"]] = int(match["workers"])
    run.failed = FAILED_LINE.findall(done.stdout)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the bootstrap exited with {done.returncode} after {seconds:.0f} s: {tail} (log: {log})")
    if len(run.hosts) != hosts:
        raise RuntimeError(f"the bootstrap printed {len(run.hosts)} worker host line(s), not {hosts} (log: {log})")
    return run


def measure(n: int, args: argparse.Namespace, work: Path, wheels: Path, apt_repo: Path, result: Measured) -> None:
    """A stack with `n` worker hosts on fresh guests: the first bootstrap, the re-run; the guests destroyed after."""
    work.mkdir(parents=True)
    result.load = (load_average(), result.load[1])
    with contextlib.ExitStack() as stack:
        if n:
            stack.enter_context(guest_routing())
        guests = [stack.enter_context(LocalHost.create(build_image())) for _ in range(n + 1)]
        # Powered off concurrently before the context managers destroy them one by one.
        stack.callback(power_off, guests)
        started = time.monotonic()
        with ThreadPoolExecutor(len(guests)) as pool:
            list(pool.map(lambda guest: guest.boot(), guests))
        result.boot_seconds = time.monotonic() - started
        server, workers = guests[0], guests[1:]
        operator = server.identity_file.with_suffix(".pub").read_text().strip()
        for guest in workers:
            guest.guest_exec(["sh", "-c", f"echo '{operator}' >> /home/admin/.ssh/authorized_keys"])
        s3 = stack.enter_context(S3Server(server.gateway))
        user = f"{PROFILE}-{n}-{result.round}"
        creds = s3.provision(BUCKET, user=user)
        storage = {
            "bucket": BUCKET,
            "region": creds.region,
            "iam_group": "prefect-host",
            "iam_user": user,
            "access_key_id": creds.access_key_id,
            "secret_access_key": creds.secret_access_key,
            "s3_endpoint_url": s3.endpoint_url,
        }
        outputs: dict = host_outputs(server, new_auth_string(), storage)
        if n:
            outputs["workerHosts"] = [
                {"name": f"w-{i}", "publicIp": guest.address, "hostPublicKey": guest.host_public_key}
                for i, guest in enumerate(workers, start=1)
            ]
        outputs_file = work / "outputs.json"
        write_private_json(outputs_file, outputs)
        index = stack.enter_context(PackageIndex(wheels, server.gateway))
        apt = stack.enter_context(AptRepoServer(apt_repo, server.gateway))
        argv = [sys.executable, str(BOOTSTRAP_SCRIPT), "--outputs", str(outputs_file), "--find-links", index.url]
        argv += ["--apt-source", apt.source_line, "--profile", PROFILE]
        env = clean_env(PREFECT_HOME=str(work / "prefect-home"))
        say(f"{n} worker host(s), round {result.round}: guests up in {result.boot_seconds:.0f} s; bootstrapping")
        result.first = bootstrap(argv, env, work / "first.log", args.timeout, n)
        say(f"{n} worker host(s): first bootstrap {result.first.seconds:.1f} s {result.first.hosts}")
        result.rerun = bootstrap(argv, env, work / "rerun.log", args.timeout, n)
        say(f"{n} worker host(s): re-run {result.rerun.seconds:.1f} s {result.rerun.hosts}")
        result.load = (result.load[0], load_average())


# --- the report ----------------------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def report(results: list[Measured], args: argparse.Namespace, load: tuple[float, float], seconds: float) -> str:
    ok = [m for m in results if m.first and m.rerun]
    first = {n: median([m.first.seconds for m in ok if m.hosts == n]) for n in CONFIGS}
    rerun = {n: median([m.rerun.seconds for m in ok if m.hosts == n]) for n in CONFIGS}
    lines = [
        "# Worker hosts: bootstrap wall time for 0, 1 and 2 worker hosts",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{bench_command_line(*INVOKED_AS)}` "
        "(bench/worker_hosts.py), "
        f"{seconds / 60:.0f} min in all, on {hardware()}; Prefect {GUEST_PREFECT_VERSION} on every guest. "
        f"Load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end: this machine was shared with "
        "other benchmarks, so the absolute times are high; the configurations were interleaved "
        f"({','.join(str(m.hosts) for m in results)}) so the load falls on all alike.",
        "",
        "Each row: fresh guests (the server, and its worker hosts), then `scripts/bootstrap.py --outputs FILE "
        f"--find-links URL --apt-source LINE --profile {PROFILE}` (tlsMode internal, the bucket on the local S3 "
        "server), PREFECT_HOME a fresh directory: a first bootstrap, then a re-run on the converged hosts. With "
        "worker hosts the server runs 0 workers and each worker host 2 (the defaults); 0 worker hosts: a plain "
        "server stack with its default worker. Wall times in seconds, lower is better.",
        "",
        "| worker hosts | round | load before/after | guests booted s | first bootstrap s | per-host s (bootstrap's "
        "line) | re-run s | per-host s (re-run) |",
        "| ---: | ---: | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for m in results:
        if m.error:
            lines.append(f"| {m.hosts} | {m.round} | {m.load[0]:.1f}/- | {cell(m.boot_seconds)} | failed | | | |")
            continue
        per_host = ", ".join(f"{h} {s:.1f} ({m.first.workers[h]} workers)" for h, s in m.first.hosts.items())
        per_rerun = ", ".join(f"{h} {s:.1f}" for h, s in m.rerun.hosts.items())
        lines.append(
            f"| {m.hosts} | {m.round} | {m.load[0]:.1f}/{m.load[1]:.1f} | {m.boot_seconds:.1f} | "
            f"{m.first.seconds:.1f} | {per_host or '-'} | {m.rerun.seconds:.1f} | {per_rerun or '-'} |"
        )
    host_medians = {n: median([s for m in ok if m.hosts == n for s in m.first.hosts.values()]) for n in CONFIGS if n}
    lines += [
        "",
        "| worker hosts | n | median first bootstrap s | median re-run s | median per-host s (first) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in CONFIGS:
        count = sum(1 for m in ok if m.hosts == n)
        lines.append(
            f"| {n} | {count} | {cell(first[n])} | {cell(rerun[n])} | {cell(host_medians.get(n)) if n else '-'} |"
        )
    two_one, one_zero = ratio(first[2], first[1]), ratio(first[1], first[0])
    verdict = "-" if two_one is None else ("met" if two_one <= 1.3 else "not met")
    lines += [
        "",
        "| ratio of the medians (first bootstrap) | value | goal |",
        "| --- | ---: | --- |",
        f"| 2 hosts / 1 host | {cell(two_one, 2)} | <= 1.3 (concurrent convergence): {verdict} |",
        f"| 1 host / 0 hosts | {cell(one_zero, 2)} | (the cost of the first worker host) |",
        f"| 2 hosts / 1 host, re-run | {cell(ratio(rerun[2], rerun[1]), 2)} | |",
    ]
    failed = [f"- {m.hosts} worker host(s), round {m.round}: {m.error}" for m in results if m.error]
    if failed:
        lines += ["", "## Failed", "", *failed]
    return "\n".join(lines) + "\n"


# --- the command ---------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    top.add_argument("--repeat", type=int, default=1, help="rounds of 0,1,2 worker hosts, interleaved (default 1)")
    top.add_argument("--timeout", type=float, default=900.0, help="seconds per bootstrap, at most")
    top.add_argument("--budget", type=int, default=1800, help="seconds in all; then everything is stopped")
    top.add_argument("--output", type=Path, default=OUTPUT, help="where the markdown goes (bench/worker-hosts.md)")
    return top


def main() -> int:
    args = parser().parse_args()
    if args.repeat < 1:
        raise SystemExit("--repeat: 1 or more")
    started = time.monotonic()
    load_start = load_average()
    start_budget(args.budget)
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    results: list[Measured] = []
    try:
        wheels = ensure_wheelhouse(GUEST_REQUIREMENTS, python_version=GUEST_PYTHON)
        apt_repo = ensure_apt_repo(("caddy",), suite="trixie")
        build_image()
        for round_ in range(1, args.repeat + 1):
            for n in CONFIGS:
                result = Measured(n, round_)
                results.append(result)
                try:
                    measure(n, args, work / f"{n}-{round_}", wheels, apt_repo, result)
                except Exception as exc:  # noqa: BLE001  reported with the figures; the next one still runs
                    result.error = f"{type(exc).__name__}: {exc}".strip()[:1500]
                    say(f"{n} worker host(s) failed: {result.error}")
    except BudgetSpent as exc:
        say(f"stopped: {exc}")
        for measured in results:
            if not (measured.first and measured.rerun) and not measured.error:
                measured.error = f"stopped: {exc}"
    finally:
        end_budget()
    failed = any(m.error for m in results)
    if failed:
        say(f"work files (bootstrap logs, outputs) kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, args, (load_start, load_average()), time.monotonic() - started)
    args.output.write_text(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
