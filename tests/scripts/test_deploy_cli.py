"""scripts/deploy.py's refusals that need no server: bad input is one paragraph, exit 1, no
traceback, and it comes before any network call (the profiles here point at a closed port)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_host.cli.deploy import DEFAULT_INTERVAL_S, main, parse_request

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = "duration_model.py:train_duration_model"
CLOSED_API = "http://127.0.0.1:9/api"  # nothing listens on port 9 (discard)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return Path(shutil.copytree(REPO / "examples" / "flows", tmp_path / "flows"))


def write_profiles(home: Path, **profiles: dict[str, str]) -> None:
    home.mkdir(exist_ok=True)
    text = f'active = "{next(iter(profiles))}"\n'
    for name, settings in profiles.items():
        text += f"\n[profiles.{name}]\n" + "".join(f'{k} = "{v}"\n' for k, v in settings.items())
    (home / "profiles.toml").write_text(text)


def deploy_cli(project: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env["PREFECT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "deploy.py"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("deploy failed: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture
def closed_profile(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    write_profiles(
        home,
        team={
            "PREFECT_API_URL": CLOSED_API,
            "PREFECT_API_AUTH_STRING": "admin:pw-Kq2",
            "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "s3-bucket/team-results",
        },
        bare={"PREFECT_LOGGING_LEVEL": "INFO"},
    )
    return home


def test_defaults(project):
    request, profile = parse_request([ENTRYPOINT], cwd=project)
    assert (request.pool, request.interval, request.cron, request.parameters, profile) == (
        "default",
        DEFAULT_INTERVAL_S,
        None,
        {},
        None,
    )


def test_include_and_dry_run_reach_the_request(project):
    args = [ENTRYPOINT, "--include", "*.pem", "--include", ".env.example", "--dry-run"]
    request, _ = parse_request(args, cwd=project)
    assert (request.includes, request.dry_run) == (("*.pem", ".env.example"), True)
    request, _ = parse_request([ENTRYPOINT], cwd=project)
    assert (request.includes, request.dry_run) == ((), False)


def test_param_values_are_json_when_they_parse(project):
    request, _ = parse_request(
        [
            ENTRYPOINT,
            "--param",
            "n_rows=42",
            "--param",
            "run_date=2024-05-01",
            "--param",
            'label="007"',
            "--param",
            "tags=[1, 2]",
        ],
        cwd=project,
    )
    assert request.parameters == {"n_rows": 42, "run_date": "2024-05-01", "label": "007", "tags": [1, 2]}


@pytest.mark.parametrize(
    "args, message",
    [
        (["duration_model.py"], "expected FILE.py:flow_function"),
        (["missing.py:flow"], "is not a file"),
        (["../outside.py:flow"], "outside the current directory"),
        ([ENTRYPOINT, "--param", "n_rows"], "--param 'n_rows': expected KEY=VALUE"),
        ([ENTRYPOINT, "--param", "a=1", "--param", "a=2"], "--param a: given twice"),
        ([ENTRYPOINT, "--interval", "0"], "--interval 0: must be a whole number of seconds >= 1"),
        ([ENTRYPOINT, "--name", "a/b"], "--name 'a/b'"),
        ([ENTRYPOINT, "--timeout", "0"], "--timeout 0: must be > 0"),
        ([ENTRYPOINT, "--include", "!*.pem"], "--include '!*.pem': expected a gitignore-style pattern"),
        ([ENTRYPOINT, "--include", " "], "--include ' ': expected a gitignore-style pattern"),
        ([ENTRYPOINT, "--dry-run", "--run-now"], "--dry-run and --run-now"),
    ],
)
def test_bad_arguments_are_one_paragraph(args, message, project, capsys, monkeypatch):
    (project.parent / "outside.py").write_text("")
    monkeypatch.chdir(project)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("deploy failed: ") and message in err and err.count("\n") == 1


def test_interval_and_cron_exclude_each_other(project, monkeypatch):
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as caught:
        parse_request([ENTRYPOINT, "--interval", "60", "--cron", "* * * * *"])
    assert caught.value.code == 2


def test_an_unknown_profile_is_named_without_falling_back(project, closed_profile):
    message = refusal(deploy_cli(project, closed_profile, ENTRYPOINT, "--profile", "nope"))
    assert "--profile 'nope': no such Prefect profile" in message and "bare" in message and "team" in message


def test_a_profile_without_an_api_url_is_refused(project, closed_profile):
    message = refusal(deploy_cli(project, closed_profile, ENTRYPOINT, "--profile", "bare"))
    assert "profile 'bare' has no PREFECT_API_URL" in message


@pytest.mark.parametrize(
    "args, message",
    [
        (["--param", "n_rows=many"], "n_rows: Input should be a valid integer"),
        (["--param", "nrows=5"], "--param nrows: flow 'train-duration-model' has no such parameter"),
        (["--cron", "every day"], "--cron 'every day': not a valid cron expression"),
    ],
)
def test_flow_checks_come_before_any_network_call(args, message, project, closed_profile):
    result = deploy_cli(project, closed_profile, ENTRYPOINT, *args)
    assert message in refusal(result)
    assert result.stdout.splitlines()[0].startswith("profile:") and len(result.stdout.splitlines()) == 1
    assert "pw-Kq2" not in result.stdout + result.stderr


def test_a_file_without_that_flow_is_refused(project, closed_profile):
    message = refusal(deploy_cli(project, closed_profile, "trips.py:fit_line"))
    assert "entrypoint 'trips.py:fit_line': cannot load the flow" in message


def test_an_unreachable_server_is_one_paragraph(project, closed_profile):
    message = refusal(deploy_cli(project, closed_profile, ENTRYPOINT))
    assert f"Prefect API {CLOSED_API}: cannot reach it" in message
    assert not (project / "__pycache__").exists()  # loading the flow wrote nothing into the project
