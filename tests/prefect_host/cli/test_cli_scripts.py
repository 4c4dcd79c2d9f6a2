"""scripts/*.py and `prefect-host COMMAND` are one program: for the same input, the same output and the
same exit status, from each command's own checks (run as users run them, nothing mocked)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = {
    "bootstrap": "bootstrap.py",
    "deploy": "deploy.py",
    "plan": "plan.py",
    "demo": "demo.py",
    "bench": "bench_bootstrap.py",
    "status": "status.py",
    "backup": "backup.py",
}
ENTRYPOINT = "duration_model.py:train_duration_model"


@pytest.fixture
def workdir(tmp_path: Path, isolated_env: dict[str, str]) -> Path:
    """A copy of the example flows' project (deploy runs in it); the Prefect home holds one profile, without
    an API URL."""
    home = Path(isolated_env["PREFECT_HOME"])
    home.mkdir()
    (home / "profiles.toml").write_text('active = "bare"\n\n[profiles.bare]\nPREFECT_LOGGING_LEVEL = "INFO"\n')
    return Path(shutil.copytree(REPO / "examples" / "flows", tmp_path / "flows"))


def comparable(run: subprocess.CompletedProcess, command: str) -> tuple[int, str, str]:
    """Status, stdout and stderr, with the program named as the console script names it. Each passes its own
    name to the same parser; of a usage error only the error line, as argparse wraps the usage by the name's
    length."""
    script = SCRIPTS[command]
    stderr = run.stderr.replace(f"usage: {script} ", f"usage: prefect-host {command} ")
    stderr = stderr.replace(f"{script}: error: ", f"prefect-host {command}: error: ")
    if stderr.startswith(f"usage: prefect-host {command} "):
        stderr = stderr.splitlines()[-1]
    return run.returncode, run.stdout, stderr


@pytest.fixture
def run_both(workdir: Path, console_script: Path, isolated_env: dict[str, str]):
    """Runs scripts/<script> and `prefect-host <command>` with the same arguments in workdir; asserts they
    agree (but for the program's name) and returns the console script's run."""

    def run(command: str, *args: str) -> subprocess.CompletedProcess:
        script_run, console_run = (
            subprocess.run(
                [*program, *args], cwd=workdir, env=isolated_env, capture_output=True, text=True, timeout=120
            )
            for program in ([sys.executable, str(REPO / "scripts" / SCRIPTS[command])], [str(console_script), command])
        )
        assert comparable(console_run, command) == comparable(script_run, command)
        assert "Traceback" not in console_run.stdout + console_run.stderr
        assert not Path(isolated_env["PREFECT_HOST_CACHE"]).exists()  # nothing was built for demo or bench
        return console_run

    return run


@pytest.mark.parametrize(
    "command, args, status, stderr",
    [
        pytest.param(
            "bootstrap",
            [],
            1,
            "error: Give --outputs FILE (the JSON of `pulumi stack output --json",
            id="bootstrap-no-outputs",
        ),
        pytest.param(
            "bootstrap",
            ["--outputs", "missing.json"],
            1,
            "error: --outputs missing.json: cannot read the file",
            id="bootstrap-missing-outputs",
        ),
        pytest.param(
            "deploy",
            [ENTRYPOINT, "--profile", "bare"],
            1,
            "deploy failed: profile 'bare' has no PREFECT_API_URL",
            id="deploy-profile-without-api",
        ),
        pytest.param(
            "deploy",
            ["duration_model.py"],
            1,
            "deploy failed: entrypoint 'duration_model.py': expected FILE.py:",
            id="deploy-bad-entrypoint",
        ),
        pytest.param(
            "plan",
            ["missing.yaml"],
            2,
            "plan: missing.yaml: cannot read the stack config (No such file",
            id="plan-missing-config",
        ),
        pytest.param(
            "demo",
            ["sideways"],
            2,
            "prefect-host demo: error: argument action: invalid choice: 'sideways'",
            id="demo-bad-action",
        ),
        pytest.param(
            "status",
            ["--outputs", "missing.json"],
            1,
            "error: --outputs missing.json: cannot read the file",
            id="status-missing-outputs",
        ),
        pytest.param(
            "backup",
            ["list", "--at", "2026-12-06T05:25:45Z", "--outputs", "x.json"],
            2,
            "prefect-host backup: error: --at is for `restore`, not `list`.",
            id="backup-at-without-restore",
        ),
        pytest.param(
            "backup",
            ["restore", "--at", "yesterday", "--outputs", "x.json"],
            1,
            "error: --at 'yesterday': give a UTC time",
            id="backup-bad-time",
        ),
        pytest.param(
            "bench",
            ["--repeat", "three"],
            2,
            "prefect-host bench: error: argument --repeat: invalid int value",
            id="bench-not-a-number",
        ),
        pytest.param(
            "deploy",
            [ENTRYPOINT, "--interval", "60", "--cron", "* * * * *"],
            2,
            "prefect-host deploy: error: argument --cron: not allowed with argument --interval",
            id="deploy-interval-and-cron",
        ),
        pytest.param(
            "bench", ["--repeat", "0"], 1, "error: --repeat 0: must be a whole number >= 1", id="bench-bad-repeat"
        ),
    ],
)
def test_bad_input_gives_the_same_refusal(run_both, command, args, status, stderr):
    result = run_both(command, *args)
    assert result.returncode == status and result.stderr.splitlines()[-1].startswith(stderr), result.stderr


@pytest.mark.parametrize("command", list(SCRIPTS))
def test_a_script_names_itself_in_its_usage(workdir, isolated_env, command):
    script = SCRIPTS[command]
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--help"],
        cwd=workdir,
        env=isolated_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {script} [-h]"), result.stderr


def test_demo_down_with_nothing_started(run_both, workdir):
    result = run_both("demo", "down", "--state-dir", str(workdir / ".demo"))
    assert result.returncode == 0
    assert result.stdout == f"demo: nothing to stop (no demo state in {workdir / '.demo'}).\n"


def test_plan_runs_the_pulumi_program_in_its_child_process(run_both):
    """The console script prints the plan that scripts/plan.py prints, from outside the repo too."""
    config = REPO / "examples" / "stack-aws.yaml"
    result = run_both("plan", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Plan for stack dev (aws) from {config}\n")
    assert "policy pack: 0 violations" in result.stdout
