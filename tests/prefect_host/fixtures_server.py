"""Fixtures for the storage and deploy tests: a real Prefect server, a real S3-API server (moto with
IAM auth), the blocks, a laptop profile and a process worker, all on 127.0.0.1 and all real
processes; nothing of Prefect or S3 is mocked.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from e2e_support import REPO, build_outputs, clean_env, s3_outputs
from prefect_host.local.s3 import S3Server
from prefect_host.outputs import StackOutputs
from prefect_host.storage import RegisteredBlocks, prefect_api, register_blocks

PREFECT = str(Path(sys.executable).with_name("prefect"))
SERVER_START_TIMEOUT_S = 120.0
# The poll interval we recommend for the host's worker (see the issue-5 report): what the
# deploy --run-now test measures with.
WORKER_QUERY_SECONDS = 5
BUCKET = "prefect-host-test-bucket"
PROFILE = "laptop-test"


@dataclass(frozen=True)
class PrefectApi:
    url: str
    auth_string: str


@dataclass(frozen=True)
class Laptop:
    """A laptop as the bootstrap leaves it: a profile with the API and the results block."""

    env: dict[str, str]
    home: Path
    blocks: RegisteredBlocks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM to the process group this fixture started (the worker's flow-run children too)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[PrefectApi]:
    """`prefect server start` on 127.0.0.1 with basic auth and its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    auth = f"admin:{secrets.token_urlsafe(16)}"
    log_path = home / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
            env=clean_env(
                PREFECT_HOME=str(home), PREFECT_SERVER_API_AUTH_STRING=auth, PREFECT_SERVER_UI_ENABLED="false"
            ),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}/api"
        try:
            wait_for_server(url, process, log_path)
            yield PrefectApi(url=url, auth_string=auth)
        finally:
            stop_process(process)


def wait_for_server(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"prefect server exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT_S:.0f} s; see {log_path}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with S3Server("127.0.0.1") as server:
        yield server


@pytest.fixture(scope="session")
def stack_outputs(prefect_server: PrefectApi, s3_server: S3Server) -> StackOutputs:
    """Stack outputs as infra/ would give them, with the S3 side provisioned on the local moto."""
    return StackOutputs.from_mapping(
        build_outputs(
            "127.0.0.1",
            apiUrl=prefect_server.url,
            uiUrl=prefect_server.url.removesuffix("/api"),
            prefectAuthString=prefect_server.auth_string,
            **s3_outputs(s3_server, BUCKET, user="prefect-host-test"),
        )
    )


@pytest.fixture(scope="session")
def laptop(stack_outputs: StackOutputs, tmp_path_factory) -> Laptop:
    """The blocks registered and a profiles.toml in a PREFECT_HOME of its own, as the bootstrap does."""
    blocks = register_blocks(stack_outputs.api_url, stack_outputs.prefect_auth_string, stack_outputs, PROFILE)
    home = tmp_path_factory.mktemp("laptop-prefect-home")
    settings = {
        "PREFECT_API_URL": stack_outputs.api_url,
        "PREFECT_API_AUTH_STRING": stack_outputs.prefect_auth_string,
        **blocks.profile_settings(),
    }
    body = "".join(f'{key} = "{value}"\n' for key, value in settings.items())
    profiles = home / "profiles.toml"
    profiles.write_text(f'active = "{PROFILE}"\n\n[profiles.{PROFILE}]\n{body}')
    profiles.chmod(0o600)
    return Laptop(env=clean_env(PREFECT_HOME=str(home)), home=home, blocks=blocks)


@pytest.fixture(scope="session")
def work_pool(stack_outputs: StackOutputs) -> str:
    """The `process` pool "default", made through the API as the bootstrap makes it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with prefect_api(stack_outputs.api_url, stack_outputs.prefect_auth_string), get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="default", type="process"))
    return "default"


@pytest.fixture(scope="session")
def process_worker(work_pool: str, laptop: Laptop, stack_outputs: StackOutputs, tmp_path_factory) -> Iterator[Path]:
    """`prefect worker start` polling the pool with the profile's settings, as the host's worker
    unit runs it. Yields the worker's log."""
    home = tmp_path_factory.mktemp("worker-prefect-home")
    log_path = home / "worker.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", work_pool],
            env=clean_env(
                PREFECT_HOME=str(home),
                PREFECT_API_URL=stack_outputs.api_url,
                PREFECT_API_AUTH_STRING=stack_outputs.prefect_auth_string,
                PREFECT_WORKER_QUERY_SECONDS=str(WORKER_QUERY_SECONDS),
                **laptop.blocks.profile_settings(),
            ),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_worker(stack_outputs, work_pool, process, log_path)
            yield log_path
        finally:
            stop_process(process)


def wait_for_worker(outputs: StackOutputs, pool: str, process: subprocess.Popen, log_path: Path) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 60
    with prefect_api(outputs.api_url, outputs.prefect_auth_string), get_client(sync_client=True) as client:
        while not client.read_workers_for_work_pool(pool):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker did not register with the pool; see {log_path}")
            time.sleep(0.5)


# Files a project may hold that must not reach the bucket: default excludes and .prefectignore'd.
JUNK = (".venv/lib/site.py", "__pycache__/trips.cpython-311.pyc", ".env", "data/trips.csv", "run.log", ".git/HEAD")
UPLOADED = ("duration_model.py", "trips.py")


def copy_example(target: Path) -> Path:
    """A copy of examples/flows plus JUNK."""
    shutil.copytree(REPO / "examples" / "flows", target)
    for junk in JUNK:
        (target / junk).parent.mkdir(parents=True, exist_ok=True)
        (target / junk).write_text("NOT_FOR_THE_BUCKET=1\n")
    return target


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "flows")
