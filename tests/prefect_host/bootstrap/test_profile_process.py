"""The laptop's Prefect work in a child process: what it writes, and what it does when cancelled."""

from __future__ import annotations

import socket
import stat

import pytest

from prefect_host.bootstrap import ProfileProcess
from prefect_host.errors import ProfileError
from tests.prefect_host.bootstrap.bootstrap_samples import AUTH, outputs_mapping


def _dead_api() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/api"


def test_profile_process_writes_then_reports_the_unreachable_server(tmp_path, monkeypatch):
    for var in (
        "PREFECT_API_URL",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_API_KEY",
        "PREFECT_PROFILE",
        "PREFECT_PROFILES_PATH",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    child = ProfileProcess()
    with pytest.raises(ProfileError, match="'team' was written, but the server cannot be reached"):
        child.call(
            "profile",
            name="team",
            api_url=_dead_api(),
            auth_string=AUTH,
            activate=True,
            results_block="s3-bucket/team-results",
        )
    profiles = tmp_path / "home" / "profiles.toml"
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600 and 'active = "team"' in profiles.read_text()
    assert 'PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK = "s3-bucket/team-results"' in profiles.read_text()
    # The child answers one request after another until its stdin ends.
    with pytest.raises(ProfileError, match="cannot reach it"):
        child.call(
            "register_storage_blocks",
            api_url=_dead_api(),
            auth_string=AUTH,
            outputs=outputs_mapping(),
            profile_name="team",
        )
    child.close()


def test_cancelled_profile_process_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    child = ProfileProcess()
    child.cancel()
    assert not (tmp_path / "home" / "profiles.toml").exists()
