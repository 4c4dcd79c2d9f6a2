import json
import re

import pytest

from prefect_host.durations import DEFAULT_BACKUP_RETENTION, DEFAULT_BACKUP_SNAPSHOT_INTERVAL, duration_hours
from prefect_host.errors import OutputsError
from prefect_host.outputs import CONDITIONAL_OUTPUTS, INFRA_OUTPUTS, SECRET_OUTPUTS, StackOutputs

GOOD = {
    "cloud": "aws",
    "publicIp": "203.0.113.7",
    "sshUser": "admin",
    "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n",
    "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdummy",
    "apiUrl": "https://203.0.113.7/api",
    "uiUrl": "https://203.0.113.7",
    "tlsMode": "internal",
    "prefectVersion": "3.9.1",
    "prefectAuthString": "admin:hunter2-very-secret",
    "bucketName": "prefect-host-dev-abc123",
    "bucketRegion": "eu-west-1",
    "iamGroupName": "S3-FullAccess",
    "iamUserName": "prefect-host-dev",
    "awsAccessKeyId": "AKIAEXAMPLE",
    "awsSecretAccessKey": "wJalrXUtnFEMI-secret",
    "backupRetention": "7d",
    "backupSnapshotInterval": "1d",
}


def test_round_trip_keeps_every_name():
    outputs = StackOutputs.from_mapping(GOOD)
    assert outputs.to_mapping() == GOOD
    assert outputs.public_ip == "203.0.113.7" and outputs.auth_user == "admin"


def test_secrets_are_the_contracted_ones_and_hidden_from_repr():
    assert {"prefectAuthString", "awsSecretAccessKey", "sshPrivateKey", "databaseUrl"} == SECRET_OUTPUTS
    postgres = {**GOOD, "database": "postgres", "apiWorkers": "2", "databaseUrl": DATABASE_URL}
    text = repr(StackOutputs.from_mapping(postgres))
    for name in SECRET_OUTPUTS:
        assert postgres[name] not in text
    assert "203.0.113.7" in text


DATABASE_URL = "postgresql+asyncpg://prefect:Pw0rd@10.0.1.5:5432/prefect?ssl=require"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"database": "mysql"}, "output database is 'mysql'; allowed: sqlite, postgres"),
        ({"apiWorkers": "2"}, "output apiWorkers is '2'; allowed: 1 with sqlite"),
        ({"database": "postgres", "apiWorkers": "0", "databaseUrl": DATABASE_URL}, "allowed: a whole number from 1"),
        ({"database": "postgres"}, "databaseUrl must be there exactly when database is postgres"),
        ({"databaseUrl": DATABASE_URL}, "databaseUrl must be there exactly when database is postgres"),
    ],
)
def test_database_outputs_agree_with_each_other(changes, message):
    with pytest.raises(OutputsError, match=re.escape(message)):
        StackOutputs.from_mapping({**GOOD, **changes})
    assert StackOutputs.from_mapping(GOOD).database is None  # older stacks: sqlite


def test_infra_outputs_are_the_issue_contract():
    assert {
        "cloud",
        "publicIp",
        "sshUser",
        "sshPrivateKey",
        "hostPublicKey",
        "apiUrl",
        "uiUrl",
        "prefectVersion",
        "prefectAuthString",
        "bucketName",
        "bucketRegion",
        "iamGroupName",
        "iamUserName",
        "awsAccessKeyId",
        "awsSecretAccessKey",
        "tlsMode",
        "domain",
        "acmeCa",
        "acmeEmail",
        "backupRetention",
        "backupSnapshotInterval",
        "database",
        "apiWorkers",
        "databaseUrl",
        "workerHosts",
    } == INFRA_OUTPUTS
    assert {"domain", "acmeCa", "acmeEmail"} == CONDITIONAL_OUTPUTS


def test_private_key_is_optional():
    data = dict(GOOD)
    del data["sshPrivateKey"]
    assert StackOutputs.from_mapping(data).ssh_private_key is None


@pytest.mark.parametrize("name", ["publicIp", "hostPublicKey", "prefectAuthString", "bucketName"])
def test_missing_output_is_named(name):
    data = dict(GOOD)
    del data[name]
    with pytest.raises(OutputsError, match=name):
        StackOutputs.from_mapping(data)


def test_masked_secret_is_refused_with_the_fix():
    data = dict(GOOD, prefectAuthString="[secret]")
    with pytest.raises(OutputsError, match="--show-secrets"):
        StackOutputs.from_mapping(data)


def test_bad_values_are_named_without_leaking_secrets():
    with pytest.raises(OutputsError, match="cloud"):
        StackOutputs.from_mapping(dict(GOOD, cloud="azure"))
    with pytest.raises(OutputsError, match="prefectAuthString") as info:
        StackOutputs.from_mapping(dict(GOOD, prefectAuthString="no-colon-secret"))
    assert "no-colon-secret" not in str(info.value)
    with pytest.raises(OutputsError, match="publicIp"):
        StackOutputs.from_mapping(dict(GOOD, publicIp=7))


def test_from_file_errors_are_clear(tmp_path):
    with pytest.raises(OutputsError, match="cannot read"):
        StackOutputs.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(OutputsError, match="not valid JSON"):
        StackOutputs.from_file(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    assert StackOutputs.from_file(good).bucket_name == GOOD["bucketName"]
    listing = tmp_path / "list.json"
    listing.write_text("[]")
    with pytest.raises(OutputsError, match="JSON object"):
        StackOutputs.from_file(listing)


def test_from_stack_without_cli_says_so(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(OutputsError, match="pulumi CLI is not on PATH"):
        StackOutputs.from_stack("dev")


ACME = dict(
    GOOD,
    apiUrl="https://prefect.example.com/api",
    uiUrl="https://prefect.example.com",
    tlsMode="acme",
    domain="prefect.example.com",
    acmeCa="https://acme-v02.api.letsencrypt.org/directory",
    acmeEmail="ops@example.com",
)
PLAINTEXT = dict(GOOD, apiUrl="http://203.0.113.7:4200/api", uiUrl="http://203.0.113.7:4200", tlsMode="off")


def test_tls_outputs_are_read():
    internal = StackOutputs.from_mapping(GOOD)
    assert (internal.tls_mode, internal.domain, internal.acme_ca, internal.acme_email) == ("internal", None, None, None)
    acme = StackOutputs.from_mapping(ACME)
    assert (acme.tls_mode, acme.domain, acme.acme_email) == ("acme", "prefect.example.com", "ops@example.com")
    assert acme.acme_ca == "https://acme-v02.api.letsencrypt.org/directory" and acme.to_mapping() == ACME
    no_email = dict(ACME)
    del no_email["acmeEmail"]
    assert StackOutputs.from_mapping(no_email).acme_email is None
    assert StackOutputs.from_mapping(PLAINTEXT).tls_mode == "off"
    with_domain = dict(PLAINTEXT, domain="prefect.example.com", apiUrl="http://prefect.example.com:4200/api")
    assert StackOutputs.from_mapping(with_domain).domain == "prefect.example.com"


def test_outputs_from_before_tls_are_the_plaintext_server_they_describe():
    old = dict(PLAINTEXT)
    del old["tlsMode"]
    outputs = StackOutputs.from_mapping(old)
    assert outputs.tls_mode == "off" and outputs.to_mapping() == PLAINTEXT
    # An https URL never means plaintext: without tlsMode nothing says how to trust it.
    no_mode = dict(GOOD)
    del no_mode["tlsMode"]
    with pytest.raises(OutputsError, match="missing output tlsMode"):
        StackOutputs.from_mapping(no_mode)


@pytest.mark.parametrize(
    "data, words",
    [
        (dict(GOOD, tlsMode="auto"), ["tlsMode", "'auto'", "acme, internal, off"]),
        (dict(GOOD, tlsMode="off"), ["apiUrl", "https://203.0.113.7/api", "tlsMode off", "http://"]),
        (dict(PLAINTEXT, tlsMode="internal"), ["apiUrl", "tlsMode internal", "https://"]),
        (dict(GOOD, uiUrl="http://203.0.113.7:4200"), ["uiUrl", "https://"]),
        ({k: v for k, v in ACME.items() if k != "domain"}, ["tlsMode acme", "domain"]),
        ({k: v for k, v in ACME.items() if k != "acmeCa"}, ["tlsMode acme", "acmeCa"]),
        (dict(GOOD, acmeCa="https://acme.example/dir"), ["acmeCa", "only apply to tlsMode acme", "internal"]),
        (dict(PLAINTEXT, acmeEmail="ops@example.com"), ["acmeEmail", "tlsMode is off"]),
        (dict(GOOD, domain="prefect.example.com"), ["tlsMode internal", "prefect.example.com"]),
        (dict(ACME, domain=""), ["domain", "non-empty string"]),
    ],
)
def test_inconsistent_tls_outputs_are_named(data, words):
    with pytest.raises(OutputsError) as error:
        StackOutputs.from_mapping(data)
    for word in words:
        assert word in str(error.value)


def test_backup_outputs_are_read_and_optional_for_older_stacks():
    outputs = StackOutputs.from_mapping(dict(GOOD, backupRetention="90d", backupSnapshotInterval="12h"))
    assert (outputs.backup_retention, outputs.backup_snapshot_interval) == ("90d", "12h")
    old = {k: v for k, v in GOOD.items() if not k.startswith("backup")}
    from_before = StackOutputs.from_mapping(old)
    assert (from_before.backup_retention, from_before.backup_snapshot_interval) == (None, None)
    assert from_before.to_mapping() == old
    assert (DEFAULT_BACKUP_RETENTION, DEFAULT_BACKUP_SNAPSHOT_INTERVAL) == ("7d", "1d")
    # Either alone, checked against the other's default.
    assert StackOutputs.from_mapping(dict(old, backupRetention="1d")).backup_snapshot_interval is None
    assert StackOutputs.from_mapping(dict(old, backupSnapshotInterval="7d")).backup_retention is None


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"backupRetention": "7"}, ["backupRetention", "'7'", "36h or 7d", "from 1h to 3650d"]),
        ({"backupRetention": "0d"}, ["backupRetention", "'0d'", "hours or days"]),
        ({"backupRetention": "7 d"}, ["backupRetention", "hours or days"]),
        ({"backupRetention": "1w"}, ["backupRetention", "hours or days"]),
        ({"backupRetention": "07d"}, ["backupRetention", "hours or days"]),
        ({"backupRetention": "3651d"}, ["backupRetention", "from 1h to 3650d"]),
        ({"backupRetention": "10000h"}, ["backupRetention", "from 1h to 3650d"]),
        ({"backupSnapshotInterval": "31d"}, ["backupSnapshotInterval", "'31d'", "from 1h to 30d"]),
        ({"backupSnapshotInterval": "721h"}, ["backupSnapshotInterval", "from 1h to 30d"]),
        ({"backupSnapshotInterval": "1D"}, ["backupSnapshotInterval", "hours or days"]),
        ({"backupRetention": "7d\n"}, ["backupRetention", "line break"]),
        ({"backupRetention": 7}, ["backupRetention", "non-empty string"]),
        ({"backupSnapshotInterval": ""}, ["backupSnapshotInterval", "non-empty string"]),
        (
            {"backupRetention": "2d", "backupSnapshotInterval": "3d"},
            ["backupRetention 2d is shorter than backupSnapshotInterval 3d", "at least as long"],
        ),
        ({"backupRetention": "12h", "backupSnapshotInterval": None}, ["backupSnapshotInterval 1d (the default)"]),
        ({"backupRetention": None, "backupSnapshotInterval": "8d"}, ["backupRetention 7d (the default)"]),
    ],
)
def test_bad_backup_outputs_are_named_with_what_is_allowed(changes, words):
    data = {k: v for k, v in dict(GOOD, **changes).items() if v is not None}
    with pytest.raises(OutputsError) as error:
        StackOutputs.from_mapping(data)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("text, hours", [("7d", 168), ("36h", 36), ("1h", 1), ("30d", 720), ("9999d", 239976)])
def test_duration_hours(text, hours):
    assert duration_hours(text) == hours


@pytest.mark.parametrize("text", ["7", "0d", "7 d", "7d\n", " 7d", "1w", "07d", "10000h", "", "٣d", None])
def test_duration_hours_refuses_anything_else(text):
    with pytest.raises(ValueError, match="36h or 7d"):
        duration_hours(text)


WORKER = {"name": "prefect-host-worker-1", "publicIp": "203.0.113.7", "hostPublicKey": "ssh-ed25519 AAAAC3Nza worker"}


def test_worker_hosts_are_a_list_of_names_addresses_and_keys():
    assert StackOutputs.from_mapping(GOOD).worker_hosts == ()  # older stacks: none
    assert StackOutputs.from_mapping({**GOOD, "workerHosts": []}).worker_hosts == ()
    second = {**WORKER, "name": "prefect-host-worker-2", "publicIp": "203.0.113.8"}
    outputs = StackOutputs.from_mapping({**GOOD, "workerHosts": [WORKER, second]})
    assert [(h.name, h.public_ip, h.host_public_key) for h in outputs.worker_hosts] == [
        ("prefect-host-worker-1", "203.0.113.7", "ssh-ed25519 AAAAC3Nza worker"),
        ("prefect-host-worker-2", "203.0.113.8", "ssh-ed25519 AAAAC3Nza worker"),
    ]
    assert outputs.to_mapping()["workerHosts"] == [WORKER, second]  # the same JSON back
    assert "workerHosts" not in StackOutputs.from_mapping(GOOD).to_mapping()


@pytest.mark.parametrize(
    "value, message",
    [
        ("w-1", "must be a JSON list of {name, publicIp, hostPublicKey} objects"),
        ([WORKER] * 21, "at most 20"),
        (["w-1"], "workerHosts[0] must be an object with exactly name, publicIp and hostPublicKey"),
        ([{**WORKER, "extra": "x"}], "workerHosts[0] must be an object with exactly"),
        ([{**WORKER, "publicIp": ""}], "workerHosts[0].publicIp must be a non-empty string"),
        ([{**WORKER, "name": "Worker_1"}], "workerHosts[0].name is 'Worker_1'; allowed: lower case"),
        ([{**WORKER, "hostPublicKey": "ssh-ed25519 A\nB"}], "workerHosts[0].hostPublicKey"),
        ([WORKER, WORKER], "names a host twice"),
    ],
)
def test_bad_worker_hosts_name_the_output(value, message):
    with pytest.raises(OutputsError, match=re.escape(message)):
        StackOutputs.from_mapping({**GOOD, "workerHosts": value})
