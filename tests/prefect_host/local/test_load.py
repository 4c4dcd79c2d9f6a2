"""`make bench-load`'s load generator (prefect_host/local/load.py): the percentiles and rates, the bounded client
loop against a small HTTP server on 127.0.0.1 started here, and the orchestration summary and report."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from prefect_host.local.load import (
    CUT_OFF,
    Cell,
    Orchestration,
    Submitted,
    api_rows,
    goal_lines,
    orchestration_rows,
    percentile,
    ratio,
    run_cell,
    submit_all,
    summarize_runs,
)


class _Handler(BaseHTTPRequestHandler):
    """POST /ok/<ms> answers 200 after ms milliseconds, /fail/<ms> 503, /flaky/<ms>/<key> 503 twice for each key,
    then 200; the server counts what it got."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the Prefect API behind uvicorn or Caddy

    def do_POST(self) -> None:
        server: _Server = self.server
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        with server.lock:
            server.received += 1
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            _, kind, delay, *key = self.path.split("/")
            time.sleep(int(delay) / 1000)
            with server.lock:
                server.seen[tuple(key)] += 1
                ok = kind == "ok" or (kind == "flaky" and server.seen[tuple(key)] > 2)
            body = json.dumps({"kind": kind}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with server.lock:
                server.in_flight -= 1

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.received = self.in_flight = self.max_in_flight = 0
        self.seen: Counter[tuple[str, ...]] = Counter()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def cell(url: str, path: str, *, timeout: float = 10.0, **kwargs) -> Cell:
    async def go() -> Cell:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
            return await run_cell(client, lambda: ("POST", path, {"limit": 10}), **kwargs)

    return asyncio.run(go())


# --- percentiles and rates -----------------------------------------------------------------------------------


def test_percentile_interpolates_between_the_closest_ranks():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 99) == pytest.approx(4.96)
    assert percentile(values, 25) == 2.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile(values, 101)


def test_a_cell_gives_the_2xx_rate_over_its_wall_time_and_the_latencies_of_the_2xx_answers():
    measured = Cell(clients=8, sent=12, ok=10, seconds=4.0, latencies=[0.01 * i for i in range(1, 11)])
    measured.errors["HTTP 503"] = 2
    assert measured.rps == 2.5
    assert measured.p50 == pytest.approx(0.055)
    assert measured.p99 == pytest.approx(0.0991)
    assert measured.error_count == 2
    assert measured.errors_text() == "2 HTTP 503"
    assert Cell(clients=1).rps == 0.0
    assert Cell(clients=1).errors_text() == "0"


# --- the bounded client loop ---------------------------------------------------------------------------------


def test_the_loop_stops_at_the_request_budget(server):
    measured = cell(server.url, "/ok/1", clients=4, max_requests=37, max_seconds=30)
    assert (measured.sent, measured.ok, measured.error_count) == (37, 37, 0)
    assert server.received == 37
    assert len(measured.latencies) == 37
    assert measured.seconds < 10
    assert measured.rps == pytest.approx(37 / measured.seconds)


def test_the_loop_stops_at_the_time_budget(server):
    started = time.monotonic()
    measured = cell(server.url, "/ok/50", clients=3, max_requests=1_000_000, max_seconds=0.5)
    took = time.monotonic() - started
    assert 0.5 <= measured.seconds < 1.5
    assert took < 2
    # 3 clients, 50 ms each: about 30 requests in 0.5 s; the ones in flight at the limit are answered.
    assert 3 <= measured.sent < 100
    assert measured.sent == measured.ok == server.received
    assert measured.error_count == 0


def test_the_loop_never_has_more_requests_in_flight_than_clients(server):
    measured = cell(server.url, "/ok/20", clients=5, max_requests=60, max_seconds=30)
    assert measured.ok == 60
    assert measured.max_in_flight == 5
    assert server.max_in_flight <= 5


def test_errors_are_counted_by_kind_not_dropped(server):
    failed = cell(server.url, "/fail/1", clients=2, max_requests=10, max_seconds=30)
    assert (failed.sent, failed.ok, dict(failed.errors)) == (10, 0, {"HTTP 503": 10})
    assert failed.latencies == []
    assert math.isnan(failed.p99)

    slow = cell(server.url, "/ok/1000", clients=2, max_requests=4, max_seconds=30, timeout=0.1)
    assert (slow.sent, slow.ok, dict(slow.errors)) == (4, 0, {"timeout": 4})


def test_a_refused_connection_is_a_connection_error():
    with socket.socket() as probe:  # a port nothing listens on: bound, then closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = cell(f"http://127.0.0.1:{port}", "/ok/1", clients=2, max_requests=6, max_seconds=30)
    assert refused.sent == refused.error_count == 6
    assert list(refused.errors) == ["connection error (ConnectError)"]


def test_requests_still_in_flight_after_the_grace_period_are_cut_off_and_counted(server):
    started = time.monotonic()
    measured = cell(server.url, "/ok/3000", clients=4, max_requests=100, max_seconds=0.2, grace=0.3)
    assert time.monotonic() - started < 2
    assert (measured.sent, measured.ok, dict(measured.errors)) == (4, 0, {CUT_OFF: 4})
    assert measured.seconds < 1


def test_bad_bounds_are_refused(server):
    with pytest.raises(ValueError, match="clients=0"):
        cell(server.url, "/ok/1", clients=0, max_requests=1, max_seconds=1)


# --- orchestration and the report ----------------------------------------------------------------------------


def flow_run(state: str, created: str, expected: str, start: str | None, end: str | None) -> dict:
    day = "2026-05-01T12:"
    return {
        "state_type": state,
        "created": f"{day}{created}+00:00",
        "expected_start_time": f"{day}{expected}+00:00",
        "start_time": f"{day}{start}+00:00" if start else None,
        "end_time": f"{day}{end}+00:00" if end else None,
    }


RUN_ID = "edf63e05-1c0f-4b52-9d52-0f4b1a2c3d4e"
RUN_ID2 = "0104f9f2-aaaa-4bbb-8ccc-123456789abc"


def test_the_summary_of_the_runs_rate_lateness_and_states():
    runs = [
        flow_run("COMPLETED", "00:00", "00:00", "00:05", "00:10"),
        flow_run("COMPLETED", "00:00", "00:00", "00:20.5", "00:30"),
        flow_run("COMPLETED", "00:01", "00:01", "00:40", "01:00"),
        flow_run("CRASHED", "00:01", "00:01", "00:50", "00:55") | {"state": {"message": "Flow run process exited"}},
        flow_run("SCHEDULED", "00:01", "00:01", None, None),
        flow_run("CRASHED", "00:02", "00:02", None, None) | {"state": {"message": f"503 for /api/flow_runs/{RUN_ID}"}},
        flow_run("CRASHED", "00:02", "00:02", None, None) | {"state": {"message": f"503 for /api/flow_runs/{RUN_ID2}"}},
    ]
    summary = summarize_runs(runs, submitted=8)
    assert summary.states == {"COMPLETED": 3, "CRASHED": 3, "SCHEDULED": 1}
    assert summary.completed == 3
    assert summary.not_completed == 3
    assert summary.unfinished == 2  # the scheduled one, and one the API did not list
    assert summary.window == 60.0  # first creation to the last Completed run's end
    assert summary.per_minute == 3.0
    assert summary.max_lateness == 49.0
    # One line per reason, whichever run it names.
    assert summary.reasons == {
        "CRASHED: 503 for /api/flow_runs/<id>": 2,
        "CRASHED: Flow run process exited": 1,
        "SCHEDULED: ": 1,
    }
    empty = summarize_runs([], submitted=0)
    assert (empty.per_minute, empty.max_lateness, empty.unfinished) == (0.0, None, 0)


def test_the_tables_give_ratios_to_the_tutorials_server_and_the_goals_are_reported():
    def measured(rps: float, p99: float) -> Cell:
        return Cell(clients=32, sent=int(rps * 10), ok=int(rps * 10), seconds=10.0, latencies=[p99] * 3)

    cells = {
        "a": {("read", 32): measured(100, 0.2), ("write", 32): measured(50, 0.4)},
        "b": {("read", 32): measured(95, 0.25), ("write", 32): measured(40, 0.5)},
        "c": {("read", 32): measured(310, 0.15), ("write", 32): measured(100, 0.3)},
    }
    rows = api_rows(cells)
    assert rows[0].startswith("| server | request | clients | requests/s |")
    assert "| a | read | 32 | 100.0 | 200 | 200 | 1000 | 0 | - | - |" in rows
    assert "| b | write | 32 | 40.0 | 500 | 500 | 400 | 0 | 0.80x | 1.25x |" in rows
    assert "| c | read | 32 | 310.0 | 150 | 150 | 3100 | 0 | 3.10x | 0.75x |" in rows

    done = {
        "a": Orchestration(submitted=500, states={"COMPLETED": 500}, per_minute=40.0, max_lateness=12.5, window=750),
        "b": Orchestration(
            submitted=500, states={"COMPLETED": 499, "CRASHED": 1}, per_minute=44.0, max_lateness=None, window=680
        ),
    }
    assert "| b | 500 | 499 | 1 | 0 | 44.0 | - | 1.10x |" in orchestration_rows(done)

    goals = goal_lines(cells, done)
    assert "- (b) >= 0.9x (a), read at 32 clients: 0.95x: met" in goals
    assert "- (b) >= 0.9x (a), write at 32 clients: 0.80x: NOT met" in goals
    assert "- (b) >= 0.9x (a), completed runs per minute: 1.10x: met" in goals
    assert "- (c) >= 3x (a) at 32 clients, read: 3.10x requests/s (met), p99 150 vs 200 ms (no worse: met)" in goals
    assert (
        "- (c) >= 3x (a) at 32 clients, write: 2.00x requests/s (NOT met), p99 300 vs 400 ms (no worse: met)" in goals
    )
    assert ratio(1.0, 0.0) == "-"
    assert ratio(float("nan"), 1.0) == "-"


def test_submit_all_retries_until_every_request_succeeds_and_counts_the_retried_answers(server):
    async def go() -> Submitted:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            requests = [("POST", f"/flaky/1/{i}", {"n": i}) for i in range(10)]
            return await submit_all(client, requests, clients=3, attempts=5, max_seconds=30, backoff=0.01)

    done = asyncio.run(go())
    # Each request fails twice with a 503, then succeeds.
    assert (done.ok, done.failed, dict(done.errors)) == (10, 0, {"HTTP 503": 20})
    assert server.received == 30
    assert server.max_in_flight <= 3


def test_submit_all_gives_up_after_its_attempts_and_at_its_time_limit(server):
    async def go(path: str, **bounds) -> Submitted:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            requests = [("POST", path, None)] * 6
            return await submit_all(client, requests, clients=2, backoff=0.01, **bounds)

    failing = asyncio.run(go("/fail/1", attempts=3, max_seconds=30))
    assert (failing.ok, failing.failed, dict(failing.errors)) == (0, 6, {"HTTP 503": 18})
    slow = asyncio.run(go("/ok/300", attempts=3, max_seconds=0.1))
    assert (slow.ok, slow.failed) == (2, 4)  # one each in flight at the limit; the rest never sent
    assert slow.seconds < 1
