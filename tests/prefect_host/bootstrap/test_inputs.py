"""Input precedence (flags > --outputs > --stack) and validation before anything is changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_host.bootstrap import resolve_inputs
from prefect_host.errors import OutputsError, UsageError
from tests.prefect_host.bootstrap.bootstrap_samples import AUTH, outputs_mapping


@pytest.fixture
def outputs_file(tmp_path):
    def write(**changes) -> str:
        path = tmp_path / "outputs.json"
        path.write_text(json.dumps(outputs_mapping(**changes)))
        return str(path)

    return write


def test_outputs_fill_everything(outputs_file):
    inputs = resolve_inputs(outputs_file=outputs_file(), stack=None)
    assert (inputs.host, inputs.user, inputs.host_key) == ("203.0.113.7", "admin", "ssh-ed25519 AAAAfromoutputs")
    assert inputs.identity_file is None and "PRIVATEMATERIAL" in inputs.identity_text
    assert inputs.profile_name == "prefect-host-203.0.113.7"
    assert inputs.api_url == "http://203.0.113.7:4200/api" and inputs.auth_string == AUTH
    assert AUTH not in repr(inputs) and "PRIVATEMATERIAL" not in repr(inputs)


def test_flags_win_overoutputs_mapping(outputs_file):
    inputs = resolve_inputs(
        outputs_file=outputs_file(),
        stack=None,
        host="10.0.0.5",
        user="debian",
        identity="/keys/id",
        host_key="ssh-ed25519 AAAAfromflag",
        profile="mine",
    )
    assert (inputs.host, inputs.user, inputs.host_key) == ("10.0.0.5", "debian", "ssh-ed25519 AAAAfromflag")
    assert inputs.identity_file == Path("/keys/id") and inputs.identity_text is None
    assert inputs.profile_name == "mine"
    assert inputs.api_url == "http://203.0.113.7:4200/api"  # the server's public URL stays the stack's


def test_outputs_file_wins_over_stack_which_only_names_the_profile(outputs_file, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # `pulumi` would fail: it must not be run
    inputs = resolve_inputs(outputs_file=outputs_file(), stack="dev")
    assert inputs.profile_name == "prefect-host-dev" and inputs.host == "203.0.113.7"
    with pytest.raises(OutputsError, match="pulumi CLI is not on PATH"):
        resolve_inputs(outputs_file=None, stack="dev")


def test_client_only_needs_no_identity(outputs_file):
    inputs = resolve_inputs(outputs_file=outputs_file(sshPrivateKey=None), stack=None, client_only=True)
    assert inputs.client_only and inputs.identity_text is None


HTTPS = {"apiUrl": "https://203.0.113.7/api", "uiUrl": "https://203.0.113.7", "tlsMode": "internal"}


def test_tls_settings_come_from_the_outputs_and_the_flags(outputs_file):
    inputs = resolve_inputs(
        outputs_file=outputs_file(**HTTPS), stack=None, apt_source="deb [trusted=yes] http://10.77.0.1:8000/ ./"
    )
    assert (inputs.tls.mode, inputs.tls.address, inputs.tls_on) == ("internal", "203.0.113.7", True)
    assert inputs.tls.apt_source == "deb [trusted=yes] http://10.77.0.1:8000/ ./" and inputs.ca is None
    plain = resolve_inputs(outputs_file=outputs_file(), stack=None)
    assert (plain.tls.mode, plain.tls_on) == ("off", False)


def test_ca_file_is_checked_before_anything_happens(outputs_file, tmp_path):
    from prefect_host.local.pebble import make_tls_ca_and_certificate
    from prefect_host.tls import TlsError

    ca_path, leaf_path, _ = make_tls_ca_and_certificate(tmp_path, "10.77.0.1")
    inputs = resolve_inputs(outputs_file=outputs_file(**HTTPS), stack=None, ca_file=str(ca_path))
    assert inputs.ca.pem == ca_path.read_text() and len(inputs.ca.fingerprint) == 95
    with pytest.raises(TlsError, match=f"--ca-file {leaf_path}: .* is not a CA certificate"):
        resolve_inputs(outputs_file=outputs_file(**HTTPS), stack=None, ca_file=str(leaf_path))
    with pytest.raises(UsageError, match=r"--ca-file /nonexistent.pem: cannot read the file"):
        resolve_inputs(outputs_file=outputs_file(**HTTPS), stack=None, ca_file="/nonexistent.pem")
    with pytest.raises(UsageError, match=r"tlsMode is off .* leave --ca-file out"):
        resolve_inputs(outputs_file=outputs_file(), stack=None, ca_file=str(ca_path))
    with pytest.raises(UsageError, match=r"--acme-ca-root /nonexistent.pem: cannot read"):
        resolve_inputs(outputs_file=outputs_file(**HTTPS), stack=None, acme_ca_root="/nonexistent.pem")


def test_a_teammate_needs_the_ca_file_or_ssh_to_pin_an_internal_ca(outputs_file, tmp_path):
    from prefect_host.local.pebble import make_tls_ca_and_certificate

    no_key = outputs_file(**HTTPS, sshPrivateKey=None)
    with pytest.raises(UsageError, match=r"tlsMode internal: .*--ca-file FILE.*--identity FILE"):
        resolve_inputs(outputs_file=no_key, stack=None, client_only=True)
    ca_path, _, _ = make_tls_ca_and_certificate(tmp_path, "10.77.0.1")
    assert resolve_inputs(outputs_file=no_key, stack=None, client_only=True, ca_file=str(ca_path)).ca is not None
    assert resolve_inputs(outputs_file=no_key, stack=None, client_only=True, identity="/keys/id").ca is None
    # A public certificate needs nothing pinned.
    acme = outputs_file(
        apiUrl="https://prefect.example.com/api",
        uiUrl="https://prefect.example.com",
        tlsMode="acme",
        domain="prefect.example.com",
        acmeCa="https://acme-v02.api.letsencrypt.org/directory",
        sshPrivateKey=None,
    )
    assert resolve_inputs(outputs_file=acme, stack=None, client_only=True).tls.address == "prefect.example.com"


def test_storage_is_on_by_default_with_the_outputs_endpoint_or_the_flag(outputs_file):
    inputs = resolve_inputs(outputs_file=outputs_file(), stack=None, profile="Team_Dev.1")
    assert inputs.storage.bucket_name == "b" and inputs.storage.s3_endpoint_url is None
    assert inputs.results_block == "s3-bucket/team-dev-1-results" and inputs.workers == 1
    assert "secret-from-outputs" not in repr(inputs)
    from_outputs = resolve_inputs(outputs_file=outputs_file(s3EndpointUrl="http://10.0.0.1:9000"), stack=None)
    assert from_outputs.storage.s3_endpoint_url == "http://10.0.0.1:9000"
    flag = resolve_inputs(
        outputs_file=outputs_file(s3EndpointUrl="http://10.0.0.1:9000"),
        stack=None,
        s3_endpoint_url="https://minio.example:9000",
    )
    assert flag.storage.s3_endpoint_url == "https://minio.example:9000"  # the flag wins
    off = resolve_inputs(outputs_file=outputs_file(), stack=None, no_storage=True, workers=0)
    assert off.storage is None and off.results_block is None and off.workers == 0


@pytest.mark.parametrize(
    "arguments, changes, message",
    [
        ({"workers": 17}, {}, "--workers 17: must be a whole number from 0 to 16"),
        ({"workers": -1}, {}, "--workers -1"),
        ({"s3_endpoint_url": "minio:9000"}, {}, "--s3-endpoint-url 'minio:9000': must be an http:// or https:// URL"),
        ({}, {"s3EndpointUrl": "ftp://x"}, "s3EndpointUrl 'ftp://x': must be an http:// or https:// URL"),
        ({"no_storage": True, "s3_endpoint_url": "http://x:9000"}, {}, "--s3-endpoint-url and --no-storage"),
        (
            {},
            {"prefectVersion": "3.8.3"},
            "prefectVersion 3.8.3: the host's workers and the storage blocks need "
            "prefect-aws 0.7.12, which needs Prefect 3.8.4 or later",
        ),
    ],
)
def test_bad_worker_and_storage_inputs_name_the_setting(outputs_file, arguments, changes, message):
    with pytest.raises(UsageError) as caught:
        resolve_inputs(outputs_file=outputs_file(**changes), stack=None, **arguments)
    assert message in str(caught.value)


def test_client_only_accepts_an_older_server(outputs_file):
    """A teammate's laptop installs nothing on the host: prefect-aws's minimum does not apply."""
    assert resolve_inputs(outputs_file=outputs_file(prefectVersion="3.8.3"), stack=None, client_only=True)


def test_results_block_is_the_one_register_blocks_saves(outputs_file, laptop):
    """The workers' environment names the block before the child registers it: same name."""
    from fixtures_server import PROFILE

    inputs = resolve_inputs(outputs_file=outputs_file(), stack=None, profile=PROFILE)
    assert inputs.results_block == laptop.blocks.results_slug


def test_an_outputs_file_others_may_read_gets_a_warning_as_ssh_gives_for_keys(outputs_file):
    from prefect_host.bootstrap.input_warnings import outputs_file_warnings

    path = outputs_file()
    Path(path).chmod(0o600)
    assert outputs_file_warnings(path) == []
    for mode in (0o640, 0o604, 0o644):
        Path(path).chmod(mode)
        [warning] = outputs_file_warnings(path)
        assert f"mode {mode:04o}" in warning and f"chmod 600 {path}" in warning and "umask 077" in warning
    assert outputs_file_warnings(None) == []


def test_a_postgres_stack_runs_on_its_database_without_litestream(outputs_file):
    url = "postgresql+asyncpg://prefect:pw-secret@10.0.1.5:5432/prefect?ssl=require"
    postgres = outputs_file(database="postgres", apiWorkers="3", databaseUrl=url)
    inputs = resolve_inputs(outputs_file=postgres, stack=None)
    assert inputs.database is not None and inputs.database.url == url and inputs.database.api_workers == 3
    assert inputs.database.where == "10.0.1.5:5432/prefect"
    assert "pw-secret" not in repr(inputs) and "pw-secret" not in repr(inputs.database)
    # Litestream replicates SQLite only: off, and saying why.
    assert inputs.backup.replica is None and inputs.backup.off_reason.startswith("database postgres")
    assert not resolve_inputs(outputs_file=postgres, stack=None, migrate_objects=False).migrate_objects
    assert resolve_inputs(outputs_file=postgres, stack=None, migrate_objects=True).migrate_objects
    assert resolve_inputs(outputs_file=outputs_file(), stack=None).database is None


@pytest.mark.parametrize("flag", [{"no_restore": True}, {"restore_at": "2026-12-06T05:25:45Z"}])
def test_restore_flags_are_refused_on_postgres(outputs_file, flag):
    postgres = outputs_file(
        database="postgres",
        apiWorkers="2",
        databaseUrl="postgresql+asyncpg://prefect:pw@10.0.1.5:5432/prefect?ssl=require",
    )
    with pytest.raises(UsageError, match=r"database is PostgreSQL \(10.0.1.5:5432/prefect\).*point-in-time"):
        resolve_inputs(outputs_file=postgres, stack=None, **flag)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://prefect:pw-secret@10.0.1.5:99999/prefect",  # port out of range
        "not a url",
        "postgresql://prefect:pw-secret@10.0.1.5:5432/prefect",  # not the async driver Prefect needs
        "postgresql+asyncpg://prefect:pw-secret@10.0.1.5:5432/",  # no database name
        "postgresql+asyncpg://prefect:pw-secret@[10.0.1.5/prefect",  # unparseable: not shown at all
    ],
)
def test_a_bad_database_url_is_a_usage_error_without_its_password(outputs_file, url):
    postgres = outputs_file(database="postgres", apiWorkers="2", databaseUrl=url)
    with pytest.raises(UsageError, match=r"^databaseUrl .*must be postgresql\+asyncpg://USER:PASSWORD@HOST") as bad:
        resolve_inputs(outputs_file=postgres, stack=None)
    assert "pw-secret" not in str(bad.value)
