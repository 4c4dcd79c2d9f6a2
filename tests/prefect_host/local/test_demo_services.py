"""The demo's services process (prefect_host.local.services, started and stopped by
prefect_host.local.demo_services): stopped only while it is the process that was started, and run for
real on loopback."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prefect_host.local.apt_repo import ensure_apt_repo
from prefect_host.local.common import process_start_time
from prefect_host.local.demo_services import stop_services, url_port

REPO = Path(__file__).resolve().parents[3]


def test_url_port():
    assert url_port("http://10.77.1.1:34567/") == 34567
    assert url_port("http://10.77.1.1/") == 0


def test_stopping_services_ends_only_the_processes_that_were_started():
    first = subprocess.Popen(["sleep", "60"])
    second = subprocess.Popen(["sleep", "60"])
    try:
        # A PID whose start time differs is another process now (PID reuse): left alone.
        recycled = {"pid": second.pid, "start": process_start_time(second.pid) + 1}
        assert stop_services(recycled) is False
        assert second.poll() is None
        state = {
            "pid": first.pid,
            "start": process_start_time(first.pid),
            "s3_pid": second.pid,
            "s3_start": process_start_time(second.pid),
        }
        assert stop_services(state) is True
        assert first.wait(5) == -signal.SIGTERM and second.wait(5) == -signal.SIGTERM
        assert stop_services(state) is False  # nothing left: idempotent
        assert stop_services(None) is False
    finally:
        for process in (first, second):
            process.kill()
            process.wait()


def test_services_process_serves_the_index_and_a_provisioned_bucket_until_stopped(tmp_path: Path):
    """prefect_host.local.services for real, on loopback: ready file 0600, index, S3 with the IAM key."""
    import boto3

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo_pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    ready = tmp_path / "services.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect_host.local.services",
            "--bind",
            "127.0.0.1",
            "--wheels",
            str(wheels),
            "--apt-repo",
            str(ensure_apt_repo(("caddy",), suite="trixie")),
            "--bucket",
            "demo-bucket",
            "--iam-user",
            "demo-user",
            "--ready",
            str(ready),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the services process did not get ready"
            time.sleep(0.1)
        assert stat.S_IMODE(ready.stat().st_mode) == 0o600
        record = json.loads(ready.read_text())
        assert record["pid"] == process.pid and record["bucket"] == "demo-bucket"
        assert "demo_pkg-1.0-py3-none-any.whl" in urllib.request.urlopen(record["index_url"], timeout=5).read().decode()
        apt_url = record["apt_source"].split()[2]
        assert record["apt_source"] == f"deb [trusted=yes] {apt_url} ./"
        assert "Package: caddy" in urllib.request.urlopen(f"{apt_url}Packages", timeout=5).read().decode()
        s3 = boto3.client(
            "s3",
            endpoint_url=record["s3_endpoint_url"],
            region_name=record["region"],
            aws_access_key_id=record["access_key_id"],
            aws_secret_access_key=record["secret_access_key"],
        )
        s3.put_object(Bucket="demo-bucket", Key="probe", Body=b"x")
        assert s3.get_object(Bucket="demo-bucket", Key="probe")["Body"].read() == b"x"
        state = {
            "pid": process.pid,
            "start": process_start_time(process.pid),
            "s3_pid": record["s3_pid"],
            "s3_start": process_start_time(record["s3_pid"]),
        }
        assert stop_services(state) is True
        assert process.wait(15) == 0
        assert process_start_time(record["s3_pid"]) is None  # the S3 server went with it
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
