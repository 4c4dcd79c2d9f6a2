"""Writing the laptop profile with Prefect's own API, in a profiles file of the test's own."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from prefect_host.errors import ProfileError
from prefect_host.profile import newer_client_warning, write_profile

API = "http://203.0.113.7:4200/api"
AUTH = "admin:s3cr3t-'quoted'\"pw\""


@pytest.fixture
def profiles_path(tmp_path, monkeypatch) -> Path:
    from prefect.settings import PREFECT_PROFILES_PATH, temporary_settings

    for var in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "prefect" / "profiles.toml"
    with temporary_settings({PREFECT_PROFILES_PATH: path}):
        yield path


def _read(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_new_file_is_private_and_has_the_settings(profiles_path):
    written = write_profile("prefect-host-dev", api_url=API, auth_string=AUTH, activate=False)
    assert written.path == profiles_path and written.changed and not written.active
    assert stat.S_IMODE(profiles_path.stat().st_mode) == 0o600
    assert _read(profiles_path)["profiles"]["prefect-host-dev"] == {
        "PREFECT_API_URL": API, "PREFECT_API_AUTH_STRING": AUTH}


def test_other_profiles_stay_and_an_existing_one_is_updated(profiles_path):
    profiles_path.parent.mkdir(parents=True)
    profiles_path.write_text(
        'active = "mine"\n\n[profiles.mine]\nPREFECT_LOGGING_LEVEL = "DEBUG"\n\n'
        '[profiles.prefect-host-dev]\nPREFECT_API_URL = "http://old:4200/api"\n'
        'PREFECT_API_KEY = "pnu_stale"\nPREFECT_RESULTS_PERSIST_BY_DEFAULT = "true"\n')
    profiles_path.chmod(0o644)
    written = write_profile("prefect-host-dev", api_url=API, auth_string=AUTH, activate=False)
    data = _read(profiles_path)
    assert data["active"] == "mine" and not written.active
    assert data["profiles"]["mine"] == {"PREFECT_LOGGING_LEVEL": "DEBUG"}
    # Updated in place: settings of other concerns kept, the API key (it would make auth fail) dropped.
    assert data["profiles"]["prefect-host-dev"] == {
        "PREFECT_API_URL": API, "PREFECT_API_AUTH_STRING": AUTH, "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}
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
    code = ("import json, sys; from prefect_host.profile import write_profile; "
            "w = write_profile('p', api_url=sys.argv[1], auth_string=sys.argv[2], activate=True); "
            "print(json.dumps(str(w.path)))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    home = tmp_path / "home"
    run = subprocess.run([sys.executable, "-c", code, API, AUTH], env={**env, "PREFECT_HOME": str(home)},
                         capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == str(home / "profiles.toml")
    assert _read(home / "profiles.toml")["profiles"]["p"]["PREFECT_API_URL"] == API
    elsewhere = tmp_path / "else" / "my-profiles.toml"
    run = subprocess.run([sys.executable, "-c", code, API, AUTH],
                         env={**env, "PREFECT_HOME": str(home), "PREFECT_PROFILES_PATH": str(elsewhere)},
                         capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == str(elsewhere) and elsewhere.exists()
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o600


def test_newer_laptop_is_warned_about():
    assert "newer than the server's 3.9.1" in newer_client_warning("3.10.0", "3.9.1")
    assert newer_client_warning("3.9.1", "3.9.1") is None
    assert newer_client_warning("3.8.3", "3.9.1") is None


def test_results_block_sets_persistence_and_the_block(profiles_path):
    written = write_profile("team", api_url=API, auth_string=AUTH, activate=False,
                            results_block="s3-bucket/team-results")
    assert written.changed
    assert _read(profiles_path)["profiles"]["team"] == {
        "PREFECT_API_URL": API, "PREFECT_API_AUTH_STRING": AUTH,
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "s3-bucket/team-results", "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}
    again = write_profile("team", api_url=API, auth_string=AUTH, activate=False, results_block="s3-bucket/team-results")
    assert not again.changed
    # Without a block (--no-storage) the result settings stay as they are.
    write_profile("team", api_url=API, auth_string=AUTH, activate=False)
    assert _read(profiles_path)["profiles"]["team"]["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == "s3-bucket/team-results"


# --- against a real server with the blocks registered (fixtures_server) -----------------------------

def test_find_results_block_prefers_the_named_one_and_else_finds_it_by_bucket(stack_outputs, laptop):
    from prefect_host.profile import find_results_block

    def find(bucket: str, preferred: str) -> str:
        return find_results_block(api_url=stack_outputs.api_url, auth_string=stack_outputs.prefect_auth_string,
                                  bucket=bucket, preferred=preferred)

    assert find(stack_outputs.bucket_name, laptop.blocks.results_slug) == laptop.blocks.results_slug
    # A teammate whose profile has another name finds the operator's block through the bucket.
    assert find(stack_outputs.bucket_name, "s3-bucket/teammate-results") == laptop.blocks.results_slug
    with pytest.raises(ProfileError, match="has no results block for bucket 'other-bucket'.*not written"):
        find("other-bucket", "s3-bucket/teammate-results")


def test_find_results_block_tells_an_unreachable_server_apart(stack_outputs):
    from prefect_host.profile import ServerUnreachable, find_results_block

    with pytest.raises(ServerUnreachable, match="401"):
        find_results_block(api_url=stack_outputs.api_url, auth_string="admin:wrong", bucket="b",
                           preferred="s3-bucket/x-results")


def test_client_only_profile_gets_the_servers_results_block(stack_outputs, laptop, profiles_path):
    from prefect_host.profile import write_and_check

    result = write_and_check("teammate", api_url=stack_outputs.api_url, auth_string=stack_outputs.prefect_auth_string,
                             activate=False, results_block="s3-bucket/teammate-results",
                             find_results_in_bucket=stack_outputs.bucket_name)
    assert result.results_block == laptop.blocks.results_slug and result.server_version == "3.9.1"
    settings = _read(profiles_path)["profiles"]["teammate"]
    assert settings["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == laptop.blocks.results_slug
    again = write_and_check("teammate", api_url=stack_outputs.api_url, auth_string=stack_outputs.prefect_auth_string,
                            activate=False, results_block="s3-bucket/teammate-results",
                            find_results_in_bucket=stack_outputs.bucket_name)
    assert not again.changed


def test_converged_storage_blocks_are_recognised_without_saving(stack_outputs, laptop):
    import dataclasses

    from fixtures_server import PROFILE
    from prefect_host.profile import register_storage_blocks, storage_blocks_current

    def current(outputs, profile: str = PROFILE) -> bool:
        return storage_blocks_current(api_url=outputs.api_url, auth_string=outputs.prefect_auth_string,
                                      outputs=outputs, profile_name=profile)

    assert current(stack_outputs)
    assert register_storage_blocks(api_url=stack_outputs.api_url, auth_string=stack_outputs.prefect_auth_string,
                                   outputs=stack_outputs.to_mapping(), profile_name=PROFILE) == {"changed": []}
    # Anything the bootstrap sets that differs: not current, so register_blocks runs.
    assert not current(dataclasses.replace(stack_outputs, aws_secret_access_key="rotated-secret"))
    assert not current(dataclasses.replace(stack_outputs, s3_endpoint_url="http://127.0.0.1:1"))
    assert not current(dataclasses.replace(stack_outputs, bucket_region="eu-west-3"))
    assert not current(dataclasses.replace(stack_outputs, bucket_name="another-bucket"))
    assert not current(stack_outputs, profile="never-registered")


def test_the_pinned_ca_is_set_and_skip_verify_never_survives(profiles_path):
    profiles_path.parent.mkdir(parents=True)
    profiles_path.write_text('[profiles.prefect-host-dev]\nPREFECT_API_TLS_INSECURE_SKIP_VERIFY = "true"\n')
    ca_file = str(profiles_path.parent / "prefect-host-dev-ca.pem")
    write_profile("prefect-host-dev", api_url="https://203.0.113.7/api", auth_string=AUTH, activate=False,
                  ssl_cert_file=ca_file)
    assert _read(profiles_path)["profiles"]["prefect-host-dev"] == {
        "PREFECT_API_URL": "https://203.0.113.7/api", "PREFECT_API_AUTH_STRING": AUTH,
        "PREFECT_API_SSL_CERT_FILE": ca_file}
    # Switched to a public certificate: the pin goes, the default trust store applies.
    write_profile("prefect-host-dev", api_url="https://prefect.example.com/api", auth_string=AUTH, activate=False)
    assert "PREFECT_API_SSL_CERT_FILE" not in _read(profiles_path)["profiles"]["prefect-host-dev"]


def test_the_ca_is_stored_beside_the_profiles_world_readable_and_only_when_it_changed(profiles_path, tmp_path):
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    from prefect_host.local.pebble import make_tls_ca_and_certificate
    from prefect_host.profile import store_ca, trusting

    ca_path, _, _ = make_tls_ca_and_certificate(tmp_path, "10.77.0.1")
    pem = ca_path.read_text()
    stored = store_ca("prefect-host-dev", pem)
    path = Path(stored["path"])
    assert stored["changed"] and path == profiles_path.parent / "prefect-host-dev-ca.pem"
    assert path.read_text() == pem and stat.S_IMODE(path.stat().st_mode) == 0o644
    mtime = path.stat().st_mtime_ns
    assert store_ca("prefect-host-dev", pem) == {"path": str(path), "changed": False}
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging file left
    with trusting(str(path)):
        assert PREFECT_API_SSL_CERT_FILE.value() == str(path)
    assert PREFECT_API_SSL_CERT_FILE.value() != str(path)
