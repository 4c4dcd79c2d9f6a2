"""The Prefect venv the server and the workers share: uv for the host's platform, exact pins from
the chosen package source, and bytecode compiled in the background once per install."""

from __future__ import annotations

from prefect_host.host.model import BYTECODE_UNIT, PackageSource, Step
from prefect_host.services.python_env import BYTECODE_MARKER, VENV_DIR, prefect_venv, venv_version
from tests.prefect_host.host.host_samples import (
    VENV_PYTHON,
    converged_output,
    fresh_output,
    lanes_for,
    names,
    steps_for,
    unit_line,
)
from tests.prefect_host.services.service_samples import pinned_venv, server, worker_set

CONVERGED = converged_output(server(), worker_set())
COMPILED = f"venv:{VENV_DIR}:bytecode=3.9.1\n"


def server_steps(output: str, source: PackageSource | None = None) -> tuple[Step, ...]:
    venv = pinned_venv() if source is None else pinned_venv(source=source)
    return lanes_for(output, server(venv), worker_set(1, venv))[0].steps


def test_the_venv_pins_prefect_and_prefect_aws():
    venv = prefect_venv("3.9.1")
    assert venv.pins == (("prefect", "3.9.1"), ("prefect-aws", "0.7.12"))
    assert (venv.path, venv.python, venv.bytecode_marker) == (VENV_DIR, f"{VENV_DIR}/bin/python", BYTECODE_MARKER)
    # What the workers' restart digest holds (the server's holds the Prefect version alone).
    assert venv_version(venv) == "3.9.1\x000.7.12"


def test_broken_venv_is_recreated_and_refilled():
    """The venv's interpreter is gone (an OS upgrade): a new venv, both pins, new bytecode."""
    broken = CONVERGED.replace(f"venv:{VENV_DIR}:python={VENV_PYTHON}\n", f"venv:{VENV_DIR}:python=\n")
    assert names(server_steps(broken)) == [
        "create the virtualenv",
        "install prefect 3.9.1 and prefect-aws 0.7.12",
        "compile bytecode (in the background)",
    ]


def test_bytecode_is_compiled_once_in_the_background():
    missing = CONVERGED.replace(COMPILED, "")
    steps = server_steps(missing)
    assert names(steps) == ["compile bytecode (in the background)"]
    script = steps[0].commands[0].script
    assert "2>/dev/null; systemd-run --quiet --no-block" in script and "compileall" in script
    # A job that started since the facts were read (compiling a venv this run refilled) is stopped first,
    # so the step neither fails on the name nor leaves a stale or missing marker behind.
    assert script.index(f"systemctl stop {BYTECODE_UNIT}") < script.index("systemd-run")
    assert f"echo 3.9.1 > {BYTECODE_MARKER}" in script
    # Still running from the previous run (a re-run right after a fresh install): leave it be.
    running = missing.replace(unit_line(BYTECODE_UNIT, "", "inactive"), unit_line(BYTECODE_UNIT, "", "active"))
    assert server_steps(running) == ()
    # Compiled for an older version: compile again.
    older = CONVERGED.replace(COMPILED, f"venv:{VENV_DIR}:bytecode=3.8.3\n")
    assert names(server_steps(older)) == ["compile bytecode (in the background)"]


def test_package_source_flags():
    fresh = fresh_output(server(), worker_set())
    steps = server_steps(fresh, PackageSource(find_links="http://10.77.0.1:8000/"))
    install = next(s for s in steps if s.name.startswith("install prefect")).commands[0].script
    assert "--no-index --find-links http://10.77.0.1:8000/" in install and "prefect==3.9.1" in install
    assert "--compile-bytecode" not in install  # compiled later, in the background
    uv = next(s for s in steps if s.name.startswith("install uv")).commands[0]
    assert "--find-links http://10.77.0.1:8000/" in uv.script and b"def choose_wheel" in uv.stdin
    steps = server_steps(fresh, PackageSource(index_url="https://mirror.example/simple"))
    install = next(s for s in steps if s.name.startswith("install prefect")).commands[0].script
    assert "--index-url https://mirror.example/simple" in install and "--no-index" not in install
    default = server_steps(fresh, PackageSource())
    install = next(s for s in default if s.name.startswith("install prefect")).commands[0].script
    assert "--index-url" not in install and "--find-links" not in install


def test_the_shared_venv_is_installed_by_the_server_alone():
    fresh = fresh_output(server(), worker_set())
    server_lane, worker_lane = lanes_for(fresh, server(), worker_set())
    venv_steps = [
        "install uv 0.13.8",
        "create the virtualenv",
        "install prefect 3.9.1 and prefect-aws 0.7.12",
        "compile bytecode (in the background)",
    ]
    assert set(venv_steps) <= set(names(server_lane.steps)) and set(venv_steps).isdisjoint(names(worker_lane.steps))
    assert names(steps_for(fresh, server(), worker_set())).count("compile bytecode (in the background)") == 1
