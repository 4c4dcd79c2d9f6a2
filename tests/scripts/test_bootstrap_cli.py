"""scripts/bootstrap.py as users run it: bad input gives one clear paragraph, an exit status, no
traceback and no secret."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bootstrap.py"
AUTH = "admin:Cli-Test-Secret-0123456789"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _key_pair() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


PRIVATE_KEY, _ = _key_pair()
_, HOST_KEY = _key_pair()


def outputs(**changes) -> dict:
    data = {
        "cloud": "aws",
        "publicIp": "127.0.0.1",
        "sshUser": "admin",
        "hostPublicKey": HOST_KEY,
        "apiUrl": f"http://127.0.0.1:{_free_port()}/api",
        "uiUrl": "http://127.0.0.1:4200",
        "prefectVersion": "3.9.1",
        "prefectAuthString": AUTH,
        "bucketName": "b",
        "bucketRegion": "eu-west-1",
        "iamGroupName": "S3-FullAccess",
        "iamUserName": "u",
        "awsAccessKeyId": "AKIAEXAMPLE",
        "awsSecretAccessKey": AWS_SECRET,
        "sshPrivateKey": PRIVATE_KEY,
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def outputs_file(tmp_path):
    def write(data) -> str:
        path = tmp_path / "outputs.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return str(path)

    return write


def run_cli(*args: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base["PREFECT_HOME"] = str(tmp_path / "laptop-prefect")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=120
    )
    printed = result.stdout + result.stderr
    assert "Traceback" not in printed
    for secret in (AUTH, AUTH.split(":", 1)[1], AWS_SECRET, *PRIVATE_KEY.splitlines()[1:-1]):
        assert secret not in printed
    return result


def _error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_no_source_of_outputs(tmp_path):
    result = run_cli(tmp_path=tmp_path)
    assert result.returncode == 1 and "--outputs FILE" in _error(result)


def test_missing_outputs_file(tmp_path):
    result = run_cli("--outputs", str(tmp_path / "nope.json"), tmp_path=tmp_path)
    assert result.returncode == 1 and "cannot read the file" in _error(result)


def test_malformed_outputs_file(tmp_path, outputs_file):
    result = run_cli("--outputs", outputs_file("{not json"), tmp_path=tmp_path)
    assert result.returncode == 1 and "not valid JSON" in _error(result)


def test_incomplete_outputs(tmp_path, outputs_file):
    result = run_cli("--outputs", outputs_file(outputs(apiUrl=None, prefectVersion=None)), tmp_path=tmp_path)
    assert result.returncode == 1 and "missing output(s) apiUrl, prefectVersion" in _error(result)


def test_masked_secret_in_outputs(tmp_path, outputs_file):
    result = run_cli("--outputs", outputs_file(outputs(prefectAuthString="[secret]")), tmp_path=tmp_path)
    assert result.returncode == 1 and "--show-secrets" in _error(result)


def test_unknown_flag_is_a_usage_error(tmp_path):
    result = run_cli("--outputs", "x.json", "--fast", tmp_path=tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --fast" in result.stderr


def test_index_url_and_find_links_exclude_each_other(tmp_path):
    result = run_cli(
        "--outputs", "x.json", "--index-url", "https://a/simple", "--find-links", "http://b/", tmp_path=tmp_path
    )
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--connect-timeout", "0"], "--connect-timeout 0.0: must be a number of seconds > 0"),
        (["--find-links", "file:///wheels"], "--find-links 'file:///wheels': must be an http:// or https:// URL"),
        (["--profile", "my profile"], "--profile 'my profile'"),
        (["--user", "Root;rm"], "--user 'Root;rm': not a valid Unix user name"),
        (["--host-key", "ssh-ed25519 bm90IGEga2V5"], "--host-key / hostPublicKey"),
        (["--identity", "/nonexistent/id"], "--identity /nonexistent/id: cannot read the file"),
        (["--workers", "99"], "--workers 99: must be a whole number from 0 to 16"),
        (["--s3-endpoint-url", "minio:9000"], "--s3-endpoint-url 'minio:9000': must be an http:// or https:// URL"),
        (["--no-storage", "--s3-endpoint-url", "http://minio:9000"], "--s3-endpoint-url and --no-storage"),
    ],
)
def test_bad_flag_values_name_the_flag(tmp_path, outputs_file, args, expected):
    result = run_cli("--outputs", outputs_file(outputs()), "--connect-timeout", "1", *args, tmp_path=tmp_path)
    assert result.returncode == 1 and expected in _error(result)


def test_bad_output_values_are_refused_before_connecting(tmp_path, outputs_file):
    result = run_cli("--outputs", outputs_file(outputs(prefectVersion="3.9.1; reboot")), tmp_path=tmp_path)
    assert result.returncode == 1 and "prefectVersion '3.9.1; reboot'" in _error(result)
    result = run_cli("--outputs", outputs_file(outputs(apiUrl="http://1.2.3.4:4200/")), tmp_path=tmp_path)
    assert result.returncode == 1 and "ending in /api" in _error(result)


def test_no_identity_anywhere(tmp_path, outputs_file):
    result = run_cli("--outputs", outputs_file(outputs(sshPrivateKey=None)), tmp_path=tmp_path)
    assert result.returncode == 1 and "No SSH identity: pass --identity FILE" in _error(result)


def test_stack_without_the_pulumi_cli(tmp_path):
    result = run_cli("--stack", "dev", tmp_path=tmp_path, env={"PATH": "/nonexistent"})
    assert result.returncode == 1 and "pulumi CLI is not on PATH" in _error(result)


def test_unreachable_host_gives_up_after_the_connect_timeout(tmp_path, outputs_file):
    """127.0.0.1 has no sshd here: refused until the timeout, then one paragraph."""
    result = run_cli("--outputs", outputs_file(outputs()), "--connect-timeout", "1.5", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "Could not open an SSH session to admin@127.0.0.1:22 within 1.5 s" in _error(result)
    assert not (tmp_path / "laptop-prefect" / "profiles.toml").exists()  # nothing written


def test_client_only_writes_the_profile_then_reports_an_unreachable_server(tmp_path, outputs_file):
    data = outputs()
    result = run_cli("--outputs", outputs_file(data), "--client-only", "--profile", "team", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "Profile 'team' was written, but the server cannot be reached through it" in _error(result)
    profiles = tmp_path / "laptop-prefect" / "profiles.toml"
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    assert data["apiUrl"] in profiles.read_text()


def test_an_outputs_file_others_may_read_is_warned_about(tmp_path, outputs_file):
    """The bootstrap goes on (the operator may be on a one-user laptop) but says what to do."""
    path = outputs_file(outputs())
    Path(path).chmod(0o644)
    result = run_cli("--outputs", path, "--client-only", "--no-storage", tmp_path=tmp_path)
    assert f"warning: --outputs '{path}' is readable by others than you (mode 0644)" in result.stderr
    assert f"chmod 600 {path}" in result.stderr
    Path(path).chmod(0o600)
    assert (
        "readable by others"
        not in run_cli("--outputs", path, "--client-only", "--no-storage", tmp_path=tmp_path).stderr
    )
