"""The demo's services process (prefect_host.local.services: the package index and the S3 server):
started detached, reused while it still runs for the same guest link, and stopped by the PIDs and
start times recorded in the state directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from prefect_host.local.apt_repo import ensure_apt_repo
from prefect_host.local.common import process_alive, process_start_time
from prefect_host.local.demo_state import STATE_VERSION, DemoError, DemoPaths, read_json, read_state
from prefect_host.local.machine import LocalHost
from prefect_host.local.product import REPO
from prefect_host.local.services import write_private_json

DEMO_BUCKET = "prefect-host-demo"
DEMO_IAM_USER = "prefect-host-demo"
SERVICES_START_TIMEOUT = 60.0
SERVICES_STOP_TIMEOUT = 10.0


def url_port(url: str) -> int:
    """The port of an http URL (0 when it has none): a restarted service asks for it again."""
    return urllib.parse.urlsplit(url).port or 0


def ensure_services(paths: DemoPaths, host: LocalHost, wheels: Path, say: Callable[[str], None]) -> dict:
    """The services record (services.json) of a services process serving `host`, started unless one runs."""
    state = read_state(paths)
    record = read_json(paths.services, "the services record")
    same_link = bool(record) and urllib.parse.urlsplit(record.get("index_url", "")).hostname == host.gateway
    if (
        state
        and record
        and process_alive(state.get("pid"), state.get("start"))
        and record.get("pid") == state["pid"]
        and "apt_source" in record
        and same_link
    ):
        say(f"demo: reusing the package index {record['index_url']} and S3 server {record['s3_endpoint_url']}")
        return record
    stop_services(state)
    ports = (
        {"index": url_port(record.get("index_url", "")), "s3": url_port(record.get("s3_endpoint_url", ""))}
        if same_link
        else {"index": 0, "s3": 0}
    )
    paths.services.unlink(missing_ok=True)
    process = _start_services_process(paths, host, wheels, ports)
    state = {"version": STATE_VERSION, "pid": process.pid, "start": process_start_time(process.pid)}
    write_private_json(paths.state, state)  # before waiting: an interrupted demo can still be taken down
    record = _wait_for_record(paths, process, state)
    state |= {"s3_pid": record["s3_pid"], "s3_start": process_start_time(record["s3_pid"])}
    write_private_json(paths.state, state)
    say(
        f"demo: package index {record['index_url']}, S3 server {record['s3_endpoint_url']} "
        f"(bucket {record['bucket']}), PID {process.pid}"
    )
    return record


def _start_services_process(paths: DemoPaths, host: LocalHost, wheels: Path, ports: dict[str, int]) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with open(paths.services_log, "ab") as log:
        os.fchmod(log.fileno(), 0o600)
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect_host.local.services",
                "--bind",
                host.gateway,
                "--wheels",
                str(wheels),
                "--apt-repo",
                str(ensure_apt_repo(("caddy",), suite="trixie")),
                "--bucket",
                DEMO_BUCKET,
                "--iam-user",
                DEMO_IAM_USER,
                "--ready",
                str(paths.services),
                "--index-port",
                str(ports["index"]),
                "--s3-port",
                str(ports["s3"]),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
            start_new_session=True,
        )  # detached: it outlives this process and the terminal


def _wait_for_record(paths: DemoPaths, process: subprocess.Popen, state: dict) -> dict:
    """The record the services process writes once both servers answer; stops it when that takes too long."""
    deadline = time.monotonic() + SERVICES_START_TIMEOUT
    while not paths.services.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_services(state)
            tail = "\n".join(paths.services_log.read_text(errors="replace").splitlines()[-10:])
            raise DemoError(f"The demo's package index and S3 server did not start (log {paths.services_log}):\n{tail}")
        time.sleep(0.1)
    return read_json(paths.services, "the services record")


def stop_services(state: dict | None) -> bool:
    """Stops the services process and its S3 server, each only if it is still the process that was
    started (PID and start time); True when something was running."""
    if not state:
        return False
    stopped = False
    for pid_key, start_key in (("pid", "start"), ("s3_pid", "s3_start")):
        pid, start = state.get(pid_key), state.get(start_key)
        if not process_alive(pid, start):
            continue
        stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + SERVICES_STOP_TIMEOUT
        while process_alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return stopped
