"""`make bench`: our bootstrap against the tutorial's path, side by side on fresh local hosts.

Rows (each on a fresh copy of the cached image, except where it says converged; one guest at a time,
the rows' order rotating between repetitions so that neither side always runs on a warmer machine):

  a   scripts/bootstrap.py from nothing to verified, the server only (--no-storage --workers 0): the
      same deliverable as b
  a+  scripts/bootstrap.py from nothing to verified, as a user runs it: also the S3 probe, the storage
      blocks and one worker (against a local S3 server)
  b   the tutorial's path on a host that also has python3-venv and pip: over SSH, `python3 -m venv`,
      `pip install prefect==<version>` from the same package index, `prefect server start --host 0.0.0.0`
      in the background, until GET /api/health answers true from this machine
  c   scripts/bootstrap.py again on the converged a+ host (once its background bytecode job is done)
  d   scripts/bootstrap.py --client-only (the laptop's profile only) against the a+ host
  e   scripts/deploy.py --run-now on the a+ host: from the command to the run's Completed state,
      through the worker on the host (first repetition only, --deploy-repeat times)

All wall times, measured here; the step durations the bootstrap prints for a and a+ are summed up too, to
show where its time goes. Nothing here asserts a time: machines are noisy.

Here: the runs. The table and the report are bench_report.py; the command line is prefect_host/cli/bench.py.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prefect_host.errors import PrefectHostError
from prefect_host.local.apt_repo import AptRepoServer, ensure_apt_repo
from prefect_host.local.bench_report import (
    Results,
    machine_description,
    ratio,
    report,
    results_table,
    step_durations,
    steps_table,
)
from prefect_host.local.image import build_image
from prefect_host.local.machine import LocalHost
from prefect_host.local.package_index import PackageIndex
from prefect_host.local.product import BOOTSTRAP_SCRIPT, DEPLOY_SCRIPT, EXAMPLE_DIR, EXAMPLE_ENTRYPOINT, REPO
from prefect_host.local.s3 import S3Server
from prefect_host.local.services import write_private_json
from prefect_host.local.stack_outputs import host_outputs, new_auth_string
from prefect_host.local.wheelhouse import GUEST_PREFECT_VERSION, GUEST_PYTHON, GUEST_REQUIREMENTS, ensure_wheelhouse
from prefect_host.services.python_env import BYTECODE_MARKER

# The report's names stay importable from here, where the tests and the command line look for them.
__all__ = [
    "DEFAULT_OUTPUT",
    "BenchError",
    "Results",
    "check_repeat",
    "machine_description",
    "ratio",
    "report",
    "results_table",
    "run_bench",
    "step_durations",
    "steps_table",
]

NAIVE_PACKAGES = ("python3-venv", "python3-pip")
DEFAULT_OUTPUT = REPO / "bench" / "latest.md"
PROFILE = "prefect-host-bench"
BENCH_BUCKET = "prefect-host-bench"
HEALTH_TIMEOUT = 300.0


class BenchError(PrefectHostError):
    """A benchmarked command failed; its output is in the message."""


def check_repeat(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BenchError(
            f"{name} {value!r}: must be a whole number >= {minimum} (each row gives the median of that many runs)."
        )
    return value


# --- the runs -----------------------------------------------------------------------------------


def _clean_env(prefect_home: Path) -> dict[str, str]:
    """This process's environment without Prefect or AWS settings, with a Prefect home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env["PREFECT_HOME"] = str(prefect_home)
    return env


def _timed(argv: list[str], *, env: dict[str, str], cwd: Path, what: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError(f"{what} failed (exit status {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return seconds, done.stdout


class _Bootstrapped:
    """A fresh host with our bootstrap run on it (storage against a local S3 server, or none)."""

    def __init__(self, image: Path, wheels: Path, work: Path, *, storage: bool):
        self.work = work
        self.storage = storage
        self.host = LocalHost.create(image)
        self._index: PackageIndex | None = None
        self._apt: AptRepoServer | None = None
        self._s3: S3Server | None = None
        try:
            self.host.boot()
            self._index = PackageIndex(wheels, self.host.gateway)
            # The outputs are those of a stack without a domain (internal TLS): Caddy from a local apt repo.
            self._apt = AptRepoServer(ensure_apt_repo(("caddy",), suite="trixie"), self.host.gateway)
            record = None
            if storage:
                self._s3 = S3Server(host=self.host.gateway).start()
                credentials = self._s3.provision(BENCH_BUCKET, user=PROFILE)
                record = {
                    "bucket": BENCH_BUCKET,
                    "region": credentials.region,
                    "iam_group": "S3-FullAccess",
                    "iam_user": PROFILE,
                    "access_key_id": credentials.access_key_id,
                    "secret_access_key": credentials.secret_access_key,
                    "s3_endpoint_url": self._s3.endpoint_url,
                }
            self.outputs = work / "outputs.json"
            write_private_json(self.outputs, host_outputs(self.host, new_auth_string(), record))
        except BaseException:
            self.close()
            raise
        self.env = _clean_env(work / "prefect-home")

    def bootstrap(self, *extra: str, prefect_home: Path | None = None) -> tuple[float, str]:
        argv = [
            sys.executable,
            str(BOOTSTRAP_SCRIPT),
            "--outputs",
            str(self.outputs),
            "--find-links",
            self._index.url,
            "--apt-source",
            self._apt.source_line,
            "--profile",
            PROFILE,
            "--connect-timeout",
            "60",
            *extra,
        ]
        if not self.storage:
            argv += ["--no-storage", "--workers", "0"]
        env = _clean_env(prefect_home) if prefect_home else self.env
        return _timed(argv, env=env, cwd=self.work, what=f"scripts/bootstrap.py {' '.join(extra)}".strip())

    def wait_for_bytecode(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.host.guest_exec(["cat", BYTECODE_MARKER], check=False).stdout.strip() != GUEST_PREFECT_VERSION:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the bootstrap's bytecode job did not write {BYTECODE_MARKER} within {timeout:.0f} s."
                )
            time.sleep(0.5)

    def deploy(self) -> float:
        env = dict(self.env, PREFECT_PROFILE=PROFILE)
        seconds, _ = _timed(
            [sys.executable, str(DEPLOY_SCRIPT), EXAMPLE_ENTRYPOINT, "--profile", PROFILE, "--run-now"],
            env=env,
            cwd=EXAMPLE_DIR,
            what="scripts/deploy.py --run-now",
        )
        return seconds

    def close(self) -> None:
        if self._s3 is not None:
            self._s3.stop()
        if self._apt is not None:
            self._apt.close()
        if self._index is not None:
            self._index.close()
        self.host.destroy()


def _naive(image: Path, wheels: Path) -> float:
    """The tutorial's commands over SSH on a fresh host with python3-venv and pip, until /api/health."""
    import httpx

    from prefect_host.ssh import HostSession, PinnedHostKey, load_private_key_file

    with LocalHost.create(image) as host, PackageIndex(wheels, host.gateway) as index:
        host.boot()
        started = time.monotonic()
        with HostSession.connect(
            host.address,
            user=host.ssh_user,
            identity=load_private_key_file(host.identity_file),
            host_key=PinnedHostKey.parse(host.host_public_key, setting="hostPublicKey"),
            connect_timeout=60,
        ) as session:
            session.run("python3 -m venv ~/prefect-venv", timeout=300, label="python3 -m venv")
            # pip refuses plain-HTTP sources it is not told to trust (PyPI itself is HTTPS).
            session.run(
                f"~/prefect-venv/bin/pip install --quiet --no-index --find-links {index.url} "
                f"--trusted-host {host.gateway} prefect=={GUEST_PREFECT_VERSION}",
                timeout=900,
                label="pip install prefect",
            )
            session.run(
                "setsid nohup ~/prefect-venv/bin/prefect server start --host 0.0.0.0 "
                ">~/prefect-server.log 2>&1 </dev/null &",
                timeout=30,
                label="prefect server start",
            )
        deadline = started + HEALTH_TIMEOUT
        with httpx.Client(timeout=3) as client:
            while True:
                try:
                    if client.get(f"http://{host.address}:4200/api/health").json() is True:
                        return time.monotonic() - started
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    log = host.guest_exec(["sh", "-c", "tail -20 /home/admin/prefect-server.log"], check=False).stdout
                    raise BenchError(
                        f"the tutorial's server did not answer /api/health within {HEALTH_TIMEOUT:.0f} s:\n{log}"
                    )
                time.sleep(0.2)


def run_bench(*, repeat: int, deploy_repeat: int, say: Callable[[str], None]) -> Results:
    check_repeat("--repeat", repeat, 1)
    check_repeat("--deploy-repeat", deploy_repeat, 0)
    wheels = ensure_wheelhouse(GUEST_REQUIREMENTS, python_version=GUEST_PYTHON)
    image = build_image()
    naive_image = build_image(extra_packages=NAIVE_PACKAGES)
    results = Results()

    def ours(work: Path) -> None:
        host = _Bootstrapped(image, wheels, work / "a", storage=False)
        try:
            seconds, output = host.bootstrap()
        finally:
            host.close()
        results.samples["a"].append(seconds)
        results.steps["a"].append(step_durations(output))
        say(f"  a   {seconds:6.1f} s")

    def ours_default(work: Path, first: bool) -> None:
        host = _Bootstrapped(image, wheels, work / "a+", storage=True)
        try:
            seconds, output = host.bootstrap()
            results.samples["a+"].append(seconds)
            results.steps["a+"].append(step_durations(output))
            say(f"  a+  {seconds:6.1f} s")
            # Converged includes the bytecode the bootstrap compiles in the background after the
            # start; a re-run while that job still takes both CPUs would time the job, not the re-run.
            host.wait_for_bytecode()
            seconds, _ = host.bootstrap()
            results.samples["c"].append(seconds)
            say(f"  c   {seconds:6.1f} s")
            # A teammate's laptop: no profile yet.
            seconds, _ = host.bootstrap("--client-only", prefect_home=work / "teammate-prefect-home")
            results.samples["d"].append(seconds)
            say(f"  d   {seconds:6.1f} s")
            for _ in range(deploy_repeat if first else 0):
                seconds = host.deploy()
                results.samples["e"].append(seconds)
                say(f"  e   {seconds:6.1f} s")
        finally:
            host.close()

    def tutorial(_: Path) -> None:
        seconds = _naive(naive_image, wheels)
        results.samples["b"].append(seconds)
        say(f"  b   {seconds:6.1f} s")

    for run in range(repeat):
        say(f"repetition {run + 1} of {repeat}")
        # Rotating the order: neither side always runs first (cold caches) or last (a busier machine).
        order = [tutorial, ours, functools.partial(ours_default, first=run == 0)]
        order = order[run % 3 :] + order[: run % 3]
        for measure in order:
            with tempfile.TemporaryDirectory(prefix="prefect-host-bench-") as work:
                for sub in ("a", "a+"):
                    (Path(work) / sub).mkdir()
                measure(Path(work))
    return results
