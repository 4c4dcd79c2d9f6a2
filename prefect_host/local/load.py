"""The load generator of `make bench-load` (bench/load.py): a bounded closed-loop HTTP client, what its answers
sum up to, and the summary of an orchestration run (flow runs from a deployment, as the API lists them).

`run_cell` keeps `clients` requests in flight on one httpx.AsyncClient (each client sends its next request once
its last one is answered) until `max_requests` have been sent or `max_seconds` have passed; requests in flight
then get `grace` seconds before they are cut off. Nothing is dropped: every request ends up as an answer
(2xx: counted and timed; any other status: an error named by its status) or as an error named by its kind
(timeout, connection error, cut off at the time limit).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

# (method, path, JSON body or None): what one request of a cell sends.
Request = tuple[str, str, Any]
TERMINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
CUT_OFF = "cut off at the time limit"
ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # a run's id in a state message


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks (numpy's default);
    nan for no values."""
    ordered = sorted(values)
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q!r} must be within 0..100")
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Cell:
    """What one cell measured: answers, errors by kind, and the latencies (s) of the 2xx answers."""

    clients: int
    sent: int = 0
    ok: int = 0
    seconds: float = 0.0  # wall time, from the first request sent to the last one finished (or cut off)
    max_in_flight: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rps(self) -> float:
        """2xx answers per second of wall time."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    def errors_text(self) -> str:
        return ", ".join(f"{count} {kind}" for kind, count in sorted(self.errors.items())) or "0"


def error_kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TransportError):
        return f"connection error ({type(exc).__name__})"
    return type(exc).__name__


async def _attempt(client: httpx.AsyncClient, request: Request) -> tuple[str | None, float]:
    """One request: (None, its latency in s) for a 2xx answer, else (what went wrong, the same)."""
    method, path, body = request
    started = time.perf_counter()
    try:
        response = await client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        return error_kind(exc), time.perf_counter() - started
    ok = 200 <= response.status_code < 300
    return (None if ok else f"HTTP {response.status_code}"), time.perf_counter() - started


async def _send(client: httpx.AsyncClient, request: Request, cell: Cell) -> None:
    error, latency = await _attempt(client, request)
    if error is None:
        cell.ok += 1
        cell.latencies.append(latency)
    else:
        cell.errors[error] += 1


async def run_cell(
    client: httpx.AsyncClient,
    next_request: Callable[[], Request],
    *,
    clients: int,
    max_requests: int,
    max_seconds: float,
    grace: float = 30.0,
) -> Cell:
    """`clients` closed-loop clients on `client` until `max_requests` are sent or `max_seconds` have passed;
    then at most `grace` seconds for what is in flight (the rest counts as cut off)."""
    if clients < 1 or max_requests < 0 or max_seconds <= 0:
        raise ValueError(f"clients={clients}, max_requests={max_requests}, max_seconds={max_seconds}: out of range")
    cell = Cell(clients)
    in_flight = 0
    started = time.monotonic()
    deadline = started + max_seconds

    async def one_client() -> None:
        nonlocal in_flight
        while cell.sent < max_requests and time.monotonic() < deadline:
            cell.sent += 1
            in_flight += 1
            cell.max_in_flight = max(cell.max_in_flight, in_flight)
            try:
                await _send(client, next_request(), cell)
            finally:
                in_flight -= 1

    tasks = [asyncio.create_task(one_client()) for _ in range(clients)]
    try:
        _, pending = await asyncio.wait(tasks, timeout=max_seconds + grace)
    finally:
        cut_off = in_flight
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if pending and cut_off:
        cell.errors[CUT_OFF] += cut_off
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
    cell.seconds = time.monotonic() - started
    return cell


@dataclass
class Submitted:
    """Requests that must all succeed (each is idempotent: a flow run with an idempotency key), retried."""

    ok: int = 0
    failed: int = 0  # given up after every attempt, or not sent by the time limit
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)  # every answer but 2xx (retried or the last), by kind

    def errors_text(self) -> str:
        return ", ".join(f"{count} {kind}" for kind, count in sorted(self.errors.items())) or "0"


async def submit_all(
    client: httpx.AsyncClient,
    requests: Sequence[Request],
    *,
    clients: int,
    attempts: int,
    max_seconds: float,
    backoff: float = 0.1,
) -> Submitted:
    """Every request sent, `clients` at a time, each retried up to `attempts` times in all (a pause of
    `backoff` s times the attempt in between, at most 2 s); none started after `max_seconds`."""
    result = Submitted()
    queue = iter(requests)
    started = time.monotonic()
    deadline = started + max_seconds

    async def one_client() -> None:
        for request in queue:
            for attempt in range(1, attempts + 1):
                if time.monotonic() >= deadline:
                    result.failed += 1
                    break
                error, _ = await _attempt(client, request)
                if error is None:
                    result.ok += 1
                    break
                result.errors[error] += 1
                if attempt == attempts:
                    result.failed += 1
                else:
                    await asyncio.sleep(min(2.0, backoff * attempt))

    await asyncio.gather(*(one_client() for _ in range(clients)))
    result.seconds = time.monotonic() - started
    return result


# --- orchestration -------------------------------------------------------------------------------------------


def timestamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Orchestration:
    """Flow runs of one deployment: how they ended, how fast they completed, how late the latest one started."""

    submitted: int  # runs created (the create requests answered 2xx)
    states: dict[str, int]  # state type -> runs, all of them (terminal or not)
    per_minute: float  # Completed runs per minute, from the first run's creation to the last one's end
    max_lateness: float | None  # s: the largest start_time - expected_start_time of the runs that started
    window: float  # s: that first creation to that last end
    reasons: dict[str, int] = field(default_factory=dict)  # the runs not Completed: "STATE: message" -> runs

    @property
    def completed(self) -> int:
        return self.states.get("COMPLETED", 0)

    @property
    def not_completed(self) -> int:
        """Runs that ended in a terminal state other than Completed."""
        return sum(n for state, n in self.states.items() if state in TERMINAL_STATES and state != "COMPLETED")

    @property
    def unfinished(self) -> int:
        """Submitted runs not in a terminal state (when polling gave up), including any never listed."""
        return self.submitted - sum(n for state, n in self.states.items() if state in TERMINAL_STATES)


def summarize_runs(runs: Sequence[Mapping[str, Any]], submitted: int) -> Orchestration:
    """`runs` as `POST /api/flow_runs/filter` lists them (state_type, created, expected_start_time, start_time,
    end_time)."""
    states = Counter(str(run.get("state_type")) for run in runs)
    lateness = [
        (timestamp(run["start_time"]) - timestamp(run["expected_start_time"])).total_seconds()
        for run in runs
        if run.get("start_time") and run.get("expected_start_time")
    ]
    done = [timestamp(run["end_time"]) for run in runs if run.get("state_type") == "COMPLETED" and run.get("end_time")]
    created = [timestamp(run["created"]) for run in runs if run.get("created")]
    reasons = Counter(
        f"{run.get('state_type')}: {ID.sub('<id>', (run.get('state') or {}).get('message') or '')[:160]}"
        for run in runs
        if run.get("state_type") != "COMPLETED"
    )
    window = (max(done) - min(created)).total_seconds() if done and created else 0.0
    return Orchestration(
        submitted=submitted,
        states=dict(sorted(states.items())),
        per_minute=60 * len(done) / window if window > 0 else 0.0,
        max_lateness=max(lateness) if lateness else None,
        window=window,
        reasons=dict(reasons.most_common()),
    )


# --- the report ----------------------------------------------------------------------------------------------


def ratio(value: float, base: float) -> str:
    """value/base as "1.23x"; "-" when either is missing or the base is 0."""
    if base is None or value is None or math.isnan(base) or math.isnan(value) or base == 0:
        return "-"
    return f"{value / base:.2f}x"


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def api_rows(cells: Mapping[str, Mapping[tuple[str, int], Cell]], base: str = "a") -> list[str]:
    """The API table: one row per (server, request kind, clients), with ratios to `base`'s row of the same cell."""
    rows = [
        f"| server | request | clients | requests/s | p50 ms | p99 ms | 2xx | errors | rps vs {base} | p99 vs {base} |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for server, by_cell in cells.items():
        for (kind, clients), cell in by_cell.items():
            ref = cells.get(base, {}).get((kind, clients))
            rps_ratio = ratio(cell.rps, ref.rps) if ref and server != base else "-"
            p99_ratio = ratio(cell.p99, ref.p99) if ref and server != base else "-"
            rows.append(
                f"| {server} | {kind} | {clients} | {cell.rps:.1f} | {ms(cell.p50)} | {ms(cell.p99)} | {cell.ok} "
                f"| {cell.errors_text()} | {rps_ratio} | {p99_ratio} |"
            )
    return rows


def orchestration_rows(results: Mapping[str, Orchestration], base: str = "a") -> list[str]:
    rows = [
        "| server | runs submitted | Completed | not Completed | unfinished | completed/min "
        f"| slowest start lateness s | completed/min vs {base} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ref = results.get(base)
    for server, o in results.items():
        late = "-" if o.max_lateness is None else f"{o.max_lateness:.1f}"
        vs = ratio(o.per_minute, ref.per_minute) if ref and server != base else "-"
        rows.append(
            f"| {server} | {o.submitted} | {o.completed} | {o.not_completed} | {o.unfinished} | {o.per_minute:.1f} "
            f"| {late} | {vs} |"
        )
    return rows


def goal_lines(
    cells: Mapping[str, Mapping[tuple[str, int], Cell]], orchestration: Mapping[str, Orchestration]
) -> list[str]:
    """Issue 12's goals, reported (not asserted): (b) >= 0.9x (a)'s throughput in every cell and in completed runs
    per minute; (c) >= 3x (a)'s requests/s at 32 clients with a p99 no worse than (a)'s."""
    lines = []
    a, b, c = cells.get("a", {}), cells.get("b", {}), cells.get("c", {})
    for key in (k for k in a if k in b):
        met = b[key].rps >= 0.9 * a[key].rps
        lines.append(
            f"- (b) >= 0.9x (a), {key[0]} at {key[1]} clients: {ratio(b[key].rps, a[key].rps)}: "
            f"{'met' if met else 'NOT met'}"
        )
    if "a" in orchestration and "b" in orchestration:
        a_rate, b_rate = orchestration["a"].per_minute, orchestration["b"].per_minute
        lines.append(
            f"- (b) >= 0.9x (a), completed runs per minute: {ratio(b_rate, a_rate)}: "
            f"{'met' if b_rate >= 0.9 * a_rate else 'NOT met'}"
        )
    for key in (k for k in a if k in c and k[1] == 32):
        fast = c[key].rps >= 3 * a[key].rps
        tail = c[key].p99 <= a[key].p99
        lines.append(
            f"- (c) >= 3x (a) at 32 clients, {key[0]}: {ratio(c[key].rps, a[key].rps)} requests/s "
            f"({'met' if fast else 'NOT met'}), p99 {ms(c[key].p99)} vs {ms(a[key].p99)} ms "
            f"({'no worse: met' if tail else 'worse: NOT met'})"
        )
    return lines
