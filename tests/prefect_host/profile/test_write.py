"""prefect_host.profile.write: the laptop profile written with Prefect's own API, in a profiles file of the
test's own."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from prefect_host.profile import write_profile

API = "http://203.0.113.7:4200/api"
AUTH = "admin:s3cr3t-'quoted'\"pw\""


def _read(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_new_file_is_private_and_has_the_settings(profiles_path):
    written = write_profile("prefect-host-dev", api_url=API, auth_string=AUTH, activate=False)
    assert written.path == profiles_path and written.changed and not written.active
    assert stat.S_IMODE(profiles_path.stat().st_mode) == 0o600
    assert _read(profiles_path)["profiles"]["prefect-host-dev"] == {
        "PREFECT_API_URL": API,
        "PREFECT_API_AUTH_STRING": AUTH,
    }


def test_other_profiles_stay_and_an_existing_one_is_updated(profiles_path):
    profiles_path.parent.mkdir(parents=True)
    profiles_path.write_text(
        'active = "mine"\n\n[profiles.mine]\nPREFECT_LOGGING_LEVEL = "DEBUG"\n\n'
        '[profiles.prefect-host-dev]\nPREFECT_API_URL = "http://old:4200/api"\n'
        'PREFECT_API_KEY = "pnu_stale"\nPREFECT_RESULTS_PERSIST_BY_DEFAULT = "true"\n'
    )
    profiles_path.chmod(0o644)
    written = write_profile("prefect-host-dev", api_url=API, auth_string=AUTH, activate=False)
    data = _read(profiles_path)
    assert data["active"] == "mine" and not written.active
    assert data["profiles"]["mine"] == {"PREFECT_LOGGING_LEVEL": "DEBUG"}
    # Updated in place: settings of other concerns kept, the API key (it would make auth fail) dropped.
    assert data["profiles"]["prefect-host-dev"] == {
        "PREFECT_API_URL": API,
        "PREFECT_API_AUTH_STRING": AUTH,
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    }
    assert stat.S_IMODE(profiles_path.stat().st_mode) == 0o600


def test_activate_and_unchanged_second_write(profiles_path):
    assert write_profile("team", api_url=API, auth_string=AUTH, activate=True).active
    assert _read(profiles_path)["active"] == "team"
    before = profiles_path.stat().st_mtime_ns
    again = write_profile("team", api_url=API, auth_string=AUTH, activate=True)
    assert not again.changed and again.active
    assert profiles_path.stat().st_mtime_ns == before
    assert write_profile("team", api_url=API, auth_string="admin:rotated", activate=True).changed


def test_environment_overrides_are_warned_about(profiles_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere:4200/api")
    written = write_profile("team", api_url=API, auth_string=AUTH, activate=True)
    assert any("PREFECT_API_URL" in warning and "override" in warning for warning in written.warnings)
    assert all(AUTH not in warning for warning in written.warnings)


def test_prefect_home_and_profiles_path_are_honoured(tmp_path):
    """In a fresh process, as the CLI runs: PREFECT_HOME, then PREFECT_PROFILES_PATH over it."""
    code = (
        "import json, sys; from prefect_host.profile import write_profile; "
        "w = write_profile('p', api_url=sys.argv[1], auth_string=sys.argv[2], activate=True); "
        "print(json.dumps(str(w.path)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    home = tmp_path / "home"
    run = subprocess.run(
        [sys.executable, "-c", code, API, AUTH],
        env={**env, "PREFECT_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(run.stdout) == str(home / "profiles.toml")
    assert _read(home / "profiles.toml")["profiles"]["p"]["PREFECT_API_URL"] == API
    elsewhere = tmp_path / "else" / "my-profiles.toml"
    run = subprocess.run(
        [sys.executable, "-c", code, API, AUTH],
        env={**env, "PREFECT_HOME": str(home), "PREFECT_PROFILES_PATH": str(elsewhere)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(run.stdout) == str(elsewhere) and elsewhere.exists()
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o600


def test_results_block_sets_persistence_and_the_block(profiles_path):
    written = write_profile(
        "team", api_url=API, auth_string=AUTH, activate=False, results_block="s3-bucket/team-results"
    )
    assert written.changed
    assert _read(profiles_path)["profiles"]["team"] == {
        "PREFECT_API_URL": API,
        "PREFECT_API_AUTH_STRING": AUTH,
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "s3-bucket/team-results",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    }
    again = write_profile("team", api_url=API, auth_string=AUTH, activate=False, results_block="s3-bucket/team-results")
    assert not again.changed
    # Without a block (--no-storage) the result settings stay as they are.
    write_profile("team", api_url=API, auth_string=AUTH, activate=False)
    assert _read(profiles_path)["profiles"]["team"]["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == "s3-bucket/team-results"


def test_the_pinned_ca_is_set_and_skip_verify_never_survives(profiles_path):
    profiles_path.parent.mkdir(parents=True)
    profiles_path.write_text('[profiles.prefect-host-dev]\nPREFECT_API_TLS_INSECURE_SKIP_VERIFY = "true"\n')
    ca_file = str(profiles_path.parent / "prefect-host-dev-ca.pem")
    write_profile(
        "prefect-host-dev", api_url="https://203.0.113.7/api", auth_string=AUTH, activate=False, ssl_cert_file=ca_file
    )
    assert _read(profiles_path)["profiles"]["prefect-host-dev"] == {
        "PREFECT_API_URL": "https://203.0.113.7/api",
        "PREFECT_API_AUTH_STRING": AUTH,
        "PREFECT_API_SSL_CERT_FILE": ca_file,
    }
    # Switched to a public certificate: the pin goes, the default trust store applies.
    write_profile("prefect-host-dev", api_url="https://prefect.example.com/api", auth_string=AUTH, activate=False)
    assert "PREFECT_API_SSL_CERT_FILE" not in _read(profiles_path)["profiles"]["prefect-host-dev"]
