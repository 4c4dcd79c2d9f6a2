"""The upgrade path end to end, on a real booted Debian 13 host of this module's own: a host that
the previous release's bootstrap converged converges with this release's with at most one restart
per service, and the output announces every restart it makes (a unit's process changes only with a
`restart ...` line for it); a second run then changes nothing.

The previous release is read from git (`git archive`), so the test runs its real code, with this
checkout's venv: both releases pin the same Prefect and prefect-aws.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from e2e_support import REPO, Stack, caddy_apt_repo, host_outputs, internal_tls, s3_outputs

pytestmark = pytest.mark.e2e

# The last release before the host's services became declarations (issue 9).
PREVIOUS_RELEASE = "6fda596"
PROFILE = "prefect-host-upgrade-e2e"
# Each service's units, and the step-name words that announce a restart or reload of it.
SERVICES = {
    "prefect-server.service": ("the Prefect server",),
    "caddy.service": ("Caddy",),
    "prefect-worker@1.service": ("prefect-worker@1",),
}


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    """The previous release's prefect_host/ and scripts/, extracted from git."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE, "prefect_host", "scripts"],
        capture_output=True,
        check=False,
    )
    assert archive.returncode == 0, (
        f"git archive {PREVIOUS_RELEASE} failed (a shallow clone?): {archive.stderr.decode()[-500:]}"
    )
    destination = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(destination, filter="data")
    return destination


@pytest.fixture(scope="module")
def stack(module_host, module_package_index, module_s3_server, tmp_path_factory):
    outputs = host_outputs(
        module_host,
        **internal_tls(module_host.address),
        **s3_outputs(module_s3_server, "prefect-host-upgrade-e2e", user="prefect-host-upgrade"),
    )
    with caddy_apt_repo(module_host) as apt:
        yield Stack.create(
            module_host,
            tmp_path_factory.mktemp("upgrade-e2e"),
            profile=PROFILE,
            outputs=outputs,
            bootstrap_args=["--find-links", module_package_index.url, "--apt-source", apt.source_line],
            s3=module_s3_server,
        )


def previous_bootstrap(stack: Stack, release: Path):
    """The previous release's scripts/bootstrap.py, importing its own prefect_host first."""
    command = [
        "env",
        f"PYTHONPATH={release}",
        sys.executable,
        str(release / "scripts" / "bootstrap.py"),
        "--outputs",
        str(stack.outputs_path),
        *stack.bootstrap_args,
        "--profile",
        PROFILE,
    ]
    return stack.run(command, cwd=release)


def test_the_previous_release_runs_its_own_code(stack, previous_release):
    probe = stack.run(
        [
            "env",
            f"PYTHONPATH={previous_release}",
            sys.executable,
            "-c",
            "import prefect_host.bootstrap as b; print(b.__file__)",
        ],
        cwd=previous_release.parent,
    )
    assert probe.stdout.strip() == str(previous_release / "prefect_host" / "bootstrap.py")


def test_a_host_of_the_previous_release_converges_with_at_most_one_restart_per_service(stack, previous_release):
    old = previous_bootstrap(stack, previous_release)
    assert old.returncode == 0, old.printed
    pids = {unit: stack.main_pid(unit) for unit in SERVICES}
    assert all(pids.values()), pids

    new = stack.bootstrap()
    assert new.returncode == 0, new.printed
    print(f"\nthis release after the previous one:\n{new.stdout}")
    for unit, names in SERVICES.items():
        announced = [
            step
            for step in new.changed
            if step.split(" ", 1)[0] in ("restart", "reload") and step.split(" ", 1)[1] in names
        ]
        assert len(announced) <= 1, (unit, announced)
        restarted = stack.main_pid(unit) != pids[unit]
        assert restarted == any(step.startswith("restart ") for step in announced), (unit, announced, new.stdout)

    again = stack.bootstrap()
    assert again.returncode == 0, again.printed
    assert again.changed == [], again.stdout
