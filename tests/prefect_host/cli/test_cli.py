"""`prefect-host` as installed in the venv (`[project.scripts]`): the command list, each command's help,
and the refusal of a command line that names no command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_host.cli import COMMANDS

REPO = Path(__file__).resolve().parents[3]

# command -> an option of its own that its --help lists, and how its usage line names the program.
HELP = {
    "bootstrap": ("--outputs FILE", "prefect-host bootstrap"),
    "deploy": ("--run-now", "prefect-host deploy"),
    "plan": ("--stack STACK", "prefect-host plan"),
    "demo": ("--state-dir STATE_DIR", "prefect-host demo"),
    "bench": ("--deploy-repeat N", "prefect-host bench"),
    "status": ("--outputs FILE", "prefect-host status"),
    "backup": ("--at TIME", "prefect-host backup"),
}


@pytest.fixture
def prefect_host(console_script, isolated_env):
    def run(*args: str, program: tuple[str, ...] = (str(console_script),)) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*program, *args], cwd=REPO, env=isolated_env, capture_output=True, text=True, timeout=120
        )
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


def test_help_lists_every_command(prefect_host):
    result = prefect_host("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: prefect-host [-h] COMMAND ...")
    listing = result.stdout.split("\ncommands:\n", 1)[1].splitlines()
    listed = [line.split()[0] for line in listing if line.startswith("  ")]
    assert listed == list(COMMANDS) == list(HELP)
    for name, summary in COMMANDS.items():
        assert f"  {name}" in result.stdout and summary in result.stdout


@pytest.mark.parametrize("command", list(HELP))
def test_each_command_has_its_own_help(prefect_host, command):
    option, prog = HELP[command]
    result = prefect_host(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {prog} [-h]") and option in result.stdout
    assert result.stderr == ""


def test_an_unknown_command_is_a_usage_error(prefect_host):
    result = prefect_host("frobnicate", "--outputs", "x.json")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "prefect-host: error: argument COMMAND: invalid choice: 'frobnicate' "
        "(choose from 'bootstrap', 'deploy', 'plan', 'demo', 'bench', 'status', 'backup')"
    )


@pytest.mark.parametrize("args", [[], ["--outputs", "x.json"]])
def test_no_command_is_a_usage_error(prefect_host, args):
    result = prefect_host(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "usage: prefect-host [-h] COMMAND ...",
        "prefect-host: error: the following arguments are required: COMMAND",
    ]


def test_python_m_runs_the_same_program(prefect_host):
    for args in (["--help"], ["frobnicate"]):
        as_module = prefect_host(*args, program=(sys.executable, "-m", "prefect_host.cli"))
        installed = prefect_host(*args)
        assert (as_module.returncode, as_module.stdout, as_module.stderr) == (
            installed.returncode,
            installed.stdout,
            installed.stderr,
        )


def test_the_command_modules_import_neither_pulumi_nor_the_local_harness():
    """pulumi stays in the plan's child process; prefect_host.local is imported by demo and bench only
    when they run."""
    imports = "; ".join(f"import prefect_host.cli.{name}" for name in COMMANDS)
    probe = f"import json, sys; {imports}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(done.stdout)
    assert "prefect_host.cli.bootstrap" in loaded  # the probe imported the commands
    for forbidden in ("pulumi", "mockstack", "prefect_host.local"):
        assert [name for name in loaded if name == forbidden or name.startswith(f"{forbidden}.")] == []
