"""infra's exports against the bootstrap's contract (prefect_host.outputs): names and secretness."""

import ipaddress
import urllib.parse

import pytest
from cryptography.hazmat.primitives import serialization

from infra_test_configs import AWS, GCP
from prefect_host.outputs import (
    CONDITIONAL_OUTPUTS,
    INFRA_OUTPUTS,
    MAX_WORKER_HOSTS,
    SECRET_OUTPUTS,
    StackOutputs,
    WorkerHost,
)

# Exported only with database postgres.
POSTGRES_OUTPUTS = frozenset({"databaseUrl"})
# What a stack exports without a domain and with SQLite: internal TLS, so no domain and no ACME settings.
SQLITE_OUTPUTS = INFRA_OUTPUTS - CONDITIONAL_OUTPUTS - POSTGRES_OUTPUTS
GIVEN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoZlLxqExRb/G4E/Mld64B7T1GCdfwZRHFppOzUYs26 me@laptop"


@pytest.mark.parametrize("base, cloud", [(AWS, "aws"), (GCP, "gcp")])
def test_exports_are_the_contract_with_secrets_secret(program, base, cloud):
    run = program(base)
    assert set(run.outputs) == SQLITE_OUTPUTS
    assert run.secret_outputs == SECRET_OUTPUTS & SQLITE_OUTPUTS
    outputs = StackOutputs.from_mapping(run.outputs, source="the mocked stack")
    assert outputs.cloud == cloud and outputs.ssh_user == "admin" and outputs.prefect_version == "3.9.1"
    assert outputs.auth_user == "admin" and len(outputs.prefect_auth_string) == len("admin:") + 32


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
def test_with_a_given_key_only_the_private_key_is_missing(program, base):
    run = program({**base, "prefect-host:sshPublicKey": GIVEN_KEY})
    assert set(run.outputs) == SQLITE_OUTPUTS - {"sshPrivateKey"}
    assert run.secret_outputs == SECRET_OUTPUTS - {"sshPrivateKey"} - POSTGRES_OUTPUTS
    assert StackOutputs.from_mapping(run.outputs).ssh_private_key is None


def test_prefect_version_is_passed_through(program):
    assert program({**AWS, "prefect-host:prefectVersion": "3.8.3"}).outputs["prefectVersion"] == "3.8.3"


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
def test_internal_tls_by_default_serves_https_on_the_static_ip(program, base):
    run = program(base)
    ip = run.outputs["publicIp"]
    assert (run.outputs["apiUrl"], run.outputs["uiUrl"]) == (f"https://{ip}/api", f"https://{ip}")
    assert run.outputs["tlsMode"] == "internal"
    assert StackOutputs.from_mapping(run.outputs).tls_mode == "internal"


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
def test_a_domain_means_acme_with_every_setting_the_bootstrap_needs(program, base):
    run = program({**base, "prefect-host:domain": "Prefect.Example.com", "prefect-host:acmeEmail": "ops@example.com"})
    assert set(run.outputs) == INFRA_OUTPUTS - POSTGRES_OUTPUTS
    assert run.secret_outputs == SECRET_OUTPUTS - POSTGRES_OUTPUTS
    outputs = StackOutputs.from_mapping(run.outputs)
    assert (outputs.api_url, outputs.ui_url) == ("https://prefect.example.com/api", "https://prefect.example.com")
    assert (outputs.tls_mode, outputs.domain, outputs.acme_email) == ("acme", "prefect.example.com", "ops@example.com")
    assert outputs.acme_ca == "https://acme-v02.api.letsencrypt.org/directory"
    without_email = program(
        {
            **base,
            "prefect-host:domain": "prefect.example.com",
            "prefect-host:acmeCa": "https://acme-staging-v02.api.letsencrypt.org/directory",
        }
    )
    assert set(without_email.outputs) == INFRA_OUTPUTS - POSTGRES_OUTPUTS - {"acmeEmail"}
    assert without_email.outputs["acmeCa"] == "https://acme-staging-v02.api.letsencrypt.org/directory"


def test_plaintext_only_with_the_opt_in_and_on_port_4200(program):
    run = program({**AWS, "prefect-host:tls": "off", "prefect-host:allowPlaintext": "true"})
    ip = run.outputs["publicIp"]
    assert (run.outputs["apiUrl"], run.outputs["uiUrl"]) == (f"http://{ip}:4200/api", f"http://{ip}:4200")
    assert run.outputs["tlsMode"] == "off" and set(run.outputs) == SQLITE_OUTPUTS
    assert StackOutputs.from_mapping(run.outputs).tls_mode == "off"


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
def test_backup_settings_are_exported_plain_with_their_defaults(program, base):
    run = program(base)
    assert (run.outputs["backupRetention"], run.outputs["backupSnapshotInterval"]) == ("7d", "1d")
    assert not {"backupRetention", "backupSnapshotInterval"} & run.secret_outputs
    chosen = program({**base, "prefect-host:backupRetention": "30d", "prefect-host:backupSnapshotInterval": "6h"})
    outputs = StackOutputs.from_mapping(chosen.outputs)
    assert (outputs.backup_retention, outputs.backup_snapshot_interval) == ("30d", "6h")


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
def test_sqlite_by_default_with_one_api_process_and_no_database_url(program, base):
    run = program(base)
    assert (run.outputs["database"], run.outputs["apiWorkers"]) == ("sqlite", "1")
    assert "databaseUrl" not in run.outputs and not {"database", "apiWorkers"} & run.secret_outputs
    outputs = StackOutputs.from_mapping(run.outputs)
    assert (outputs.database, outputs.api_workers, outputs.database_url) == ("sqlite", "1", None)


@pytest.mark.parametrize("base, host", [(AWS, ".rds.amazonaws.com"), (GCP, "10.")], ids=["aws", "gcp"])
def test_postgres_exports_the_database_url_as_a_secret(program, base, host):
    run = program({**base, "prefect-host:database": "postgres"})
    assert set(run.outputs) == INFRA_OUTPUTS - CONDITIONAL_OUTPUTS
    assert run.secret_outputs == SECRET_OUTPUTS & INFRA_OUTPUTS
    assert (run.outputs["database"], run.outputs["apiWorkers"]) == ("postgres", "2")
    outputs = StackOutputs.from_mapping(run.outputs)
    url = urllib.parse.urlsplit(outputs.database_url)
    assert (url.scheme, url.username, url.port, url.path, url.query) == (
        "postgresql+asyncpg",
        "prefect",
        5432,
        "/prefect",
        "ssl=require",
    )
    assert host in url.hostname and len(url.password) == 32 and url.password.isalnum()
    # The password the database was given, a secret output of its RandomPassword.
    [password] = [
        r for r in run.of_type("random:index/randomPassword:RandomPassword") if r.name.endswith("-db-password")
    ]
    assert password.outputs["result"] == url.password and "result" in password.secret_outputs


def test_the_url_is_one_prefects_asyncpg_engine_accepts():
    """SQLAlchemy hands the query to asyncpg.connect as keywords: ssl="require" (asyncpg has no sslmode keyword);
    Prefect's LISTEN/NOTIFY connection turns the same parameter into libpq's sslmode."""
    from prefect.server.utilities.postgres_listener import _normalize_asyncpg_dsn_query_params
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
    from sqlalchemy.engine import make_url

    from postgres import database_url

    url = make_url(database_url("Abc123", "db.example"))
    _, kwargs = PGDialect_asyncpg().create_connect_args(url)
    assert kwargs == {
        "host": "db.example",
        "port": 5432,
        "user": "prefect",
        "password": "Abc123",
        "database": "prefect",
        "ssl": "require",
    }
    listener = _normalize_asyncpg_dsn_query_params(url.set(drivername="postgresql").render_as_string(False))
    assert listener.endswith("/prefect?sslmode=require")


def public_half(private_openssh: str) -> str:
    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
def test_worker_hosts_are_exported_plain_even_when_there_are_none(program, base):
    run = program(base)
    assert run.outputs["workerHosts"] == [] and "workerHosts" not in run.secret_outputs
    assert StackOutputs.from_mapping(run.outputs).worker_hosts == ()


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
def test_two_worker_hosts_parse_into_the_bootstraps_model_with_their_own_keys(program, base):
    run = program({**base, "prefect-host:workerHosts": 2})
    assert set(run.outputs) == SQLITE_OUTPUTS and "workerHosts" not in run.secret_outputs
    hosts = StackOutputs.from_mapping(run.outputs, source="the mocked stack").worker_hosts
    assert len(hosts) == 2 and all(isinstance(host, WorkerHost) for host in hosts)
    assert [host.name for host in hosts] == ["prefect-host-dev-worker-1", "prefect-host-dev-worker-2"]
    assert len({host.public_ip for host in hosts}) == 2 and run.outputs["publicIp"] not in {h.public_ip for h in hosts}
    assert len({host.host_public_key for host in hosts} | {run.outputs["hostPublicKey"]}) == 3
    generated = {r.name: r.outputs["privateKeyOpenssh"] for r in run.of_type("tls:index/privateKey:PrivateKey")}
    for host in hosts:
        ipaddress.IPv4Address(host.public_ip)
        # The public half of the key generated for that VM (installed there on first boot: test_*_worker_hosts.py).
        assert host.host_public_key == public_half(generated[f"{host.name}-host-key"])


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
def test_worker_hosts_leave_the_servers_outputs_unchanged(program, base):
    without = program(base)
    for count in (1, 2, 20):
        run = program({**base, "prefect-host:workerHosts": count})
        assert {k: v for k, v in run.outputs.items() if k != "workerHosts"} == {
            k: v for k, v in without.outputs.items() if k != "workerHosts"
        }
        assert run.secret_outputs == without.secret_outputs
        assert len(StackOutputs.from_mapping(run.outputs).worker_hosts) == count


def test_the_programs_limit_is_the_bootstraps():
    from stack_config import WORKER_HOSTS_RANGE

    assert WORKER_HOSTS_RANGE == (0, MAX_WORKER_HOSTS)
