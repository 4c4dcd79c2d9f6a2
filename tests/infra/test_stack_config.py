"""The configuration object and its validation, called directly (no Pulumi runtime)."""

import dataclasses
import json
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from stack_config import StackConfigError, check_api_workers, parse_stack_config

BASE = {"aws:region": "eu-west-1", "prefect-host:sshAllowedCidrs": '["203.0.113.0/24"]'}
GCP = {**BASE, "prefect-host:cloud": "gcp", "gcp:project": "my-project-123", "gcp:zone": "europe-west1-b"}
POSTGRES = {**BASE, "prefect-host:database": "postgres"}


def parse(values, stack="dev", **kwargs):
    return parse_stack_config(values, project="prefect-host", stack=stack, **kwargs)


def openssh_public(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_defaults_for_aws():
    config = parse(BASE)
    assert dataclasses.asdict(config) == {
        "project": "prefect-host",
        "stack": "dev",
        "cloud": "aws",
        "instance_type": "t3.small",
        "image": "debian-13",
        "disk_size_gb": 20,
        "allowed_cidrs": ("0.0.0.0/0",),
        "ssh_allowed_cidrs": ("203.0.113.0/24",),
        "allow_public_ssh": False,
        "prefect_version": "3.9.1",
        "bucket_name": None,
        "iam_group_name": "S3-FullAccess",
        "s3_access": "bucket",
        "ssh_public_key": None,
        "retain_data": True,
        "domain": None,
        "tls_mode": "internal",
        "acme_email": None,
        "acme_ca": "https://acme-v02.api.letsencrypt.org/directory",
        "allow_plaintext": False,
        "backup_retention": "7d",
        "backup_snapshot_interval": "1d",
        "database": "sqlite",
        "db_instance_class": None,
        "db_backup_retention_days": None,
        "api_workers": 1,
        "worker_hosts": 0,
        "worker_instance_type": "t3.small",
        "worker_disk_size_gb": 20,
        "aws_region": "eu-west-1",
        "gcp_project": None,
        "gcp_region": None,
        "gcp_zone": None,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cloud = "gcp"


def test_defaults_for_gcp_derive_the_region_from_the_zone():
    config = parse(GCP)
    assert (config.cloud, config.instance_type) == ("gcp", "e2-small")
    assert (config.gcp_project, config.gcp_zone, config.gcp_region) == (
        "my-project-123",
        "europe-west1-b",
        "europe-west1",
    )
    assert parse({**GCP, "gcp:region": "europe-west1"}).gcp_region == "europe-west1"


def test_every_key_is_read():
    key = openssh_public(ed25519.Ed25519PrivateKey.generate()) + " me@laptop"
    config = parse(
        {
            **BASE,
            "prefect-host:instanceType": "t4g.medium",
            "prefect-host:image": "debian-12",
            "prefect-host:diskSizeGb": "2000",
            "prefect-host:allowedCidrs": '["198.51.100.0/24", "2001:DB8::/32"]',
            "prefect-host:sshAllowedCidrs": '["0.0.0.0/0"]',
            "prefect-host:allowPublicSsh": "true",
            "prefect-host:prefectVersion": "3.10.0",
            "prefect-host:bucketName": "my.team-bucket-1",
            "prefect-host:iamGroupName": "prefect+data@team",
            "prefect-host:s3Access": "all",
            "prefect-host:sshPublicKey": key + "\n",
            "prefect-host:retainData": "false",
            "prefect-host:domain": "Prefect.Example.com",
            "prefect-host:tls": "acme",
            "prefect-host:acmeEmail": "ops+prefect@example.com",
            "prefect-host:acmeCa": "https://ca.internal.example:8443/acme/directory",
            "prefect-host:allowPlaintext": "true",
            "prefect-host:backupRetention": "90d",
            "prefect-host:backupSnapshotInterval": "12h",
            "prefect-host:database": "postgres",
            "prefect-host:dbInstanceClass": "db.m7g.large",
            "prefect-host:dbBackupRetentionDays": "35",
            "prefect-host:apiWorkers": "8",
            "prefect-host:workerHosts": "20",
            "prefect-host:workerInstanceType": "c7g.2xlarge",
            "prefect-host:workerDiskSizeGb": "100",
        }
    )
    assert (config.instance_type, config.image, config.disk_size_gb) == ("t4g.medium", "debian-12", 2000)
    # CIDRs come back canonical (lower-case, compressed IPv6).
    assert config.allowed_cidrs == ("198.51.100.0/24", "2001:db8::/32")
    assert (config.ssh_allowed_cidrs, config.allow_public_ssh) == (("0.0.0.0/0",), True)
    assert (config.prefect_version, config.bucket_name) == ("3.10.0", "my.team-bucket-1")
    assert config.iam_group_name == "prefect+data@team"
    assert (config.s3_access, config.ssh_public_key, config.retain_data) == ("all", key, False)
    # DNS ignores case; the certificate and the URLs use the lower-case name.
    assert (config.domain, config.tls_mode, config.acme_email) == (
        "prefect.example.com",
        "acme",
        "ops+prefect@example.com",
    )
    assert config.acme_ca == "https://ca.internal.example:8443/acme/directory" and config.allow_plaintext
    assert (config.backup_retention, config.backup_snapshot_interval) == ("90d", "12h")
    assert (config.database, config.db_instance_class, config.db_backup_retention_days, config.api_workers) == (
        "postgres",
        "db.m7g.large",
        35,
        8,
    )
    assert (config.worker_hosts, config.worker_instance_type, config.worker_disk_size_gb) == (20, "c7g.2xlarge", 100)


@pytest.mark.parametrize(
    "stack, prefix, user, bucket_prefix",
    [
        ("dev", "prefect-host-dev", "prefect-host-dev", "prefect-host-dev"),
        ("Prod_EU.1", "prefect-host-prod-eu-1", "prefect-host-Prod_EU.1", "prefect-host-prod-eu-1"),
        ("a" * 80, "prefect-host-" + "a" * 27, ("prefect-host-" + "a" * 80)[:64], "prefect-host-" + "a" * 41),
    ],
)
def test_names_derive_from_project_and_stack(stack, prefix, user, bucket_prefix):
    config = parse(BASE, stack=stack)
    assert config.resource_prefix == prefix and len(prefix) <= 40
    assert config.iam_user_name == user
    assert config.bucket_name_prefix == bucket_prefix and len(bucket_prefix) + 9 <= 63


# One bad value per key: (key, raw value or None for "unset", text the message must contain).
BAD_VALUES = [
    ("prefect-host:cloud", "azure", "aws or gcp"),
    ("prefect-host:instanceType", "", "EC2 instance type"),
    ("prefect-host:instanceType", "t3 small", "EC2 instance type"),
    ("prefect-host:image", "ubuntu-24.04", "debian-13 or debian-12"),
    ("prefect-host:diskSizeGb", "9", "from 10 to 2000"),
    ("prefect-host:diskSizeGb", "2001", "from 10 to 2000"),
    ("prefect-host:diskSizeGb", "20.5", "from 10 to 2000"),
    ("prefect-host:allowedCidrs", "0.0.0.0/0", "list of IPv4/IPv6 CIDRs"),
    ("prefect-host:allowedCidrs", "[]", "non-empty list"),
    ("prefect-host:allowedCidrs", '["10.0.0.1/8"]', "network address"),
    ("prefect-host:allowedCidrs", '["300.1.2.0/24"]', "network address"),
    ("prefect-host:allowedCidrs", '["198.51.100.7"]', "prefix length"),
    ("prefect-host:allowedCidrs", '["2001:db8::/32", "2001:DB8::/32"]', "twice"),
    ("prefect-host:sshAllowedCidrs", None, "is not set"),
    ("prefect-host:sshAllowedCidrs", '["0.0.0.0/0"]', "allowPublicSsh"),
    ("prefect-host:sshAllowedCidrs", '["203.0.113.0/24", "::/0"]', "allowPublicSsh"),
    ("prefect-host:allowPublicSsh", "yes", "true or false"),
    ("prefect-host:prefectVersion", "3.8.2", "3.8.3"),
    ("prefect-host:prefectVersion", "2.20.0", "3.8.3"),
    ("prefect-host:prefectVersion", "3.9", "3.8.3"),
    ("prefect-host:prefectVersion", "3.10.0rc1", "3.8.3"),
    ("prefect-host:bucketName", "My_Bucket", "3 to 63 characters"),
    ("prefect-host:bucketName", "ab", "3 to 63 characters"),
    ("prefect-host:bucketName", "a..b", "no '..'"),
    ("prefect-host:bucketName", "192.168.5.4", "not an IP address"),
    ("prefect-host:bucketName", "xn--bucket", "reserved prefixes"),
    ("prefect-host:bucketName", "my-bucket-s3alias", "suffixes"),
    ("prefect-host:iamGroupName", "S3 Full Access", "IAM name"),
    ("prefect-host:iamGroupName", "g" * 129, "IAM name"),
    ("prefect-host:s3Access", "read", "bucket or all"),
    ("prefect-host:sshPublicKey", "not a key", "OpenSSH public key"),
    ("prefect-host:sshPublicKey", "ssh-ed25519 AAAA!!!", "OpenSSH public key"),
    ("prefect-host:retainData", "True", "true or false"),
    ("aws:region", None, "AWS region"),
    ("aws:region", "Europe", "AWS region"),
    ("prefect-host:bucketname", "x", "not a setting of this project"),
    ("prefect-host:domain", "", "DNS name"),
    ("prefect-host:domain", "localhost", "two or more labels"),
    ("prefect-host:domain", "203.0.113.7", "not an IP address"),
    ("prefect-host:domain", "*.example.com", "no wildcard"),
    ("prefect-host:domain", "prefect.example.com.", "no trailing dot"),
    ("prefect-host:domain", "-prefect.example.com", "inner hyphens"),
    ("prefect-host:domain", "préfect.example.com", "xn-- form"),
    ("prefect-host:domain", "a" * 64 + ".example.com", "63 characters"),
    ("prefect-host:domain", "prefect example.com", "DNS name"),
    ("prefect-host:tls", "https", "auto or acme or internal or off"),
    ("prefect-host:tls", "ACME", "auto or acme or internal or off"),
    ("prefect-host:tls", "acme", "only together with prefect-host:domain"),
    ("prefect-host:tls", "off", "allowPlaintext true"),
    ("prefect-host:allowPlaintext", "1", "true or false"),
    ("prefect-host:acmeEmail", "ops", "e-mail address"),
    ("prefect-host:acmeCa", "https://acme.example/dir", "only applies when certificates come from ACME"),
    ("prefect-host:backupRetention", "7", "hours or days such as 36h or 7d"),
    ("prefect-host:backupRetention", "0d", "hours or days"),
    ("prefect-host:backupRetention", "7 d", "hours or days"),
    ("prefect-host:backupRetention", "7d\n", "hours or days"),
    ("prefect-host:backupRetention", "1w", "hours or days"),
    ("prefect-host:backupRetention", "07d", "hours or days"),
    ("prefect-host:backupRetention", "", "hours or days"),
    ("prefect-host:backupRetention", "3651d", "from 1h to 3650d"),
    ("prefect-host:backupRetention", "10000h", "from 1h to 3650d"),
    ("prefect-host:backupSnapshotInterval", "1D", "hours or days"),
    ("prefect-host:backupSnapshotInterval", "-1d", "hours or days"),
    ("prefect-host:backupSnapshotInterval", "31d", "from 1h to 30d"),
    ("prefect-host:backupSnapshotInterval", "721h", "from 1h to 30d"),
    # Longer than the default retention (7d).
    ("prefect-host:backupSnapshotInterval", "8d", 'at most prefect-host:backupRetention ("7d", the default)'),
    # Shorter than the default interval (1d).
    ("prefect-host:backupRetention", "23h", 'at least prefect-host:backupSnapshotInterval ("1d", the default)'),
    ("prefect-host:database", "mysql", "sqlite or postgres"),
    ("prefect-host:database", "Postgres", "sqlite or postgres"),
    # SQLite serves one API process; the database settings need postgres.
    ("prefect-host:apiWorkers", "2", "1 with prefect-host:database sqlite"),
    ("prefect-host:apiWorkers", "0", "1 with prefect-host:database sqlite"),
    ("prefect-host:dbInstanceClass", "db.t4g.micro", "only applies with prefect-host:database postgres"),
    ("prefect-host:dbBackupRetentionDays", "7", "only applies with prefect-host:database postgres"),
    ("prefect-host:workerHosts", "21", "a whole number of worker VMs from 0 to 20"),
    ("prefect-host:workerHosts", "-1", "a whole number of worker VMs from 0 to 20"),
    ("prefect-host:workerHosts", "1.5", "from 0 to 20"),
    ("prefect-host:workerHosts", "02", "from 0 to 20"),
    ("prefect-host:workerHosts", "two", "from 0 to 20"),
    ("prefect-host:workerHosts", "", "from 0 to 20"),
    ("prefect-host:workerHosts", "true", "from 0 to 20"),
    # The worker settings need worker VMs.
    ("prefect-host:workerInstanceType", "t3.large", "only applies with prefect-host:workerHosts 1 or more"),
    ("prefect-host:workerDiskSizeGb", "50", "only applies with prefect-host:workerHosts 1 or more"),
]

# With database postgres: (key, raw value, text the message must contain).
POSTGRES_BAD_VALUES = [
    ("prefect-host:dbInstanceClass", "", "RDS DB instance class such as db.t4g.micro"),
    ("prefect-host:dbInstanceClass", "db.t4g micro", "RDS DB instance class"),
    ("prefect-host:dbInstanceClass", " db.t4g.micro", "RDS DB instance class"),
    ("prefect-host:dbInstanceClass", "t4g.micro", "RDS DB instance class"),
    ("prefect-host:dbInstanceClass", "db-custom-1-3840", "RDS DB instance class"),
    ("prefect-host:dbBackupRetentionDays", "0", "a whole number of days from 1 to 35"),
    ("prefect-host:dbBackupRetentionDays", "40", "a whole number of days from 1 to 35"),
    ("prefect-host:dbBackupRetentionDays", "36", "at most 35"),
    ("prefect-host:dbBackupRetentionDays", "7.5", "from 1 to 35"),
    ("prefect-host:dbBackupRetentionDays", "07", "from 1 to 35"),
    ("prefect-host:dbBackupRetentionDays", "seven", "from 1 to 35"),
    ("prefect-host:apiWorkers", "0", "a whole number of API processes from 1 to 2 per vCPU"),
    ("prefect-host:apiWorkers", "-1", "whole number of API processes"),
    ("prefect-host:apiWorkers", "2.5", "whole number of API processes"),
    ("prefect-host:apiWorkers", "two", "whole number of API processes"),
    ("prefect-host:apiWorkers", "", "whole number of API processes"),
    ("prefect-host:apiWorkers", "true", "whole number of API processes"),
]


@pytest.mark.parametrize("key, value, allowed", BAD_VALUES)
def test_a_bad_value_names_the_key_the_value_and_what_is_allowed(key, value, allowed):
    values = {k: v for k, v in BASE.items() if k != key}
    if value is not None:
        values[key] = value
    with pytest.raises(StackConfigError) as caught:
        parse(values)
    message = str(caught.value)
    assert key in message and allowed in message
    if value:
        # The value itself, or for a list the offending item.
        items = json.loads(value) if value.startswith("[") and value != "[]" else [value]
        # (a value with a line break as its JSON string, so the message stays one line)
        assert any(item in message or json.dumps(item) in message for item in items)
    assert "\n" not in message


@pytest.mark.parametrize("key, value, allowed", POSTGRES_BAD_VALUES)
def test_a_bad_database_setting_names_the_key_the_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(StackConfigError) as caught:
        parse({**POSTGRES, key: value})
    message = str(caught.value)
    assert message.startswith(f"Config {key} = {json.dumps(value)} is invalid; allowed: ") and allowed in message


def test_postgres_takes_each_clouds_default_class_two_api_workers_and_a_week_of_backups():
    aws = parse(POSTGRES)
    assert (aws.database, aws.db_instance_class, aws.db_backup_retention_days, aws.api_workers) == (
        "postgres",
        "db.t4g.micro",
        7,
        2,
    )
    gcp = parse({**GCP, "prefect-host:database": "postgres"})
    assert (gcp.db_instance_class, gcp.db_backup_retention_days, gcp.api_workers) == ("db-custom-1-3840", 7, 2)
    # Cloud SQL's tiers, Enterprise Plus's with their capital N included; an RDS class is refused on GCP.
    for tier in ("db-g1-small", "db-perf-optimized-N-2", "db-custom-2-7680"):
        assert (
            parse({**GCP, "prefect-host:database": "postgres", "prefect-host:dbInstanceClass": tier}).db_instance_class
            == tier
        )
    with pytest.raises(StackConfigError, match="Cloud SQL tier such as db-custom-1-3840"):
        parse({**GCP, "prefect-host:database": "postgres", "prefect-host:dbInstanceClass": "db.t4g.micro"})
    assert (
        parse({**POSTGRES, "prefect-host:dbBackupRetentionDays": "1", "prefect-host:apiWorkers": "1"}).api_workers == 1
    )
    assert parse({**BASE, "prefect-host:database": "sqlite", "prefect-host:apiWorkers": "1"}).api_workers == 1


@pytest.mark.parametrize(
    "vcpus, workers, ok", [(1, 2, True), (1, 3, False), (2, 4, True), (2, 5, False), (8, 16, True)]
)
def test_api_workers_are_at_most_two_per_vcpu(vcpus, workers, ok):
    config = parse({**POSTGRES, "prefect-host:apiWorkers": str(workers)})
    if ok:
        check_api_workers(config, vcpus)
        return
    with pytest.raises(StackConfigError) as caught:
        check_api_workers(config, vcpus)
    assert str(caught.value) == (
        f'Config prefect-host:apiWorkers = "{workers}" is invalid; allowed: 1 to {2 * vcpus}: at most 2 API processes '
        f"per vCPU, and prefect-host:instanceType t3.small has {vcpus} vCPU{'s' if vcpus > 1 else ''}."
    )


GCP_BAD_VALUES = [
    ("prefect-host:instanceType", "t3.small", "Compute Engine machine type"),
    ("gcp:project", None, "project ID"),
    ("gcp:project", "My Project", "project ID"),
    ("gcp:zone", None, "zone"),
    ("gcp:zone", "europe-west1", "zone"),
    ("gcp:region", "us-central1", "europe-west1"),
]


@pytest.mark.parametrize("key, value, allowed", GCP_BAD_VALUES)
def test_gcp_keys_are_checked_when_the_cloud_is_gcp(key, value, allowed):
    values = {k: v for k, v in GCP.items() if k != key}
    if value is not None:
        values[key] = value
    with pytest.raises(StackConfigError, match=allowed) as caught:
        parse(values)
    assert key in str(caught.value)
    # ...and ignored on AWS.
    if key.startswith("gcp:"):
        parse({**BASE, **({key: value} if value else {})})


def test_public_ssh_needs_the_explicit_opt_in():
    with pytest.raises(StackConfigError, match="opens SSH to the whole internet"):
        parse({**BASE, "prefect-host:sshAllowedCidrs": '["::/0"]'})
    opted_in = parse({**BASE, "prefect-host:sshAllowedCidrs": '["::/0"]', "prefect-host:allowPublicSsh": "true"})
    assert opted_in.ssh_allowed_cidrs == ("::/0",)


@pytest.mark.parametrize(
    "make_key, allowed",
    [
        (lambda: openssh_public(ed25519.Ed25519PrivateKey.generate()), True),
        (lambda: openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=2048)), True),
        # A real RSA blob under the ed25519 label is refused: the blob names its own type.
        (
            lambda: (
                "ssh-ed25519 "
                + openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=2048)).split()[1]
            ),
            False,
        ),
        # ECDSA is valid OpenSSH but AWS key pairs cannot import it.
        (lambda: "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=", False),
    ],
)
def test_ssh_public_key_must_be_a_real_key_of_an_importable_type(make_key, allowed):
    key = make_key()
    values = {**BASE, "prefect-host:sshPublicKey": key}
    if allowed:
        assert parse(values).ssh_public_key == key
    else:
        with pytest.raises(StackConfigError, match="prefect-host:sshPublicKey"):
            parse(values)


def test_prefect_version_boundary():
    assert parse({**BASE, "prefect-host:prefectVersion": "3.8.3"}).prefect_version == "3.8.3"
    assert parse({**BASE, "prefect-host:prefectVersion": "4.0.0"}).prefect_version == "4.0.0"


def test_a_secret_value_never_appears_in_the_error():
    values = {**BASE, "prefect-host:bucketName": "Sup3r_Secret_Name"}
    with pytest.raises(StackConfigError) as caught:
        parse(values, secret_keys=frozenset({"prefect-host:bucketName"}))
    assert "Sup3r_Secret_Name" not in str(caught.value)
    assert "prefect-host:bucketName = [secret]" in str(caught.value)


ACME_BASE = {**BASE, "prefect-host:domain": "prefect.example.com"}


@pytest.mark.parametrize(
    "values, mode, url",
    [
        (BASE, "internal", "https://198.51.100.7"),
        ({**BASE, "prefect-host:tls": "auto"}, "internal", "https://198.51.100.7"),
        ({**BASE, "prefect-host:tls": "internal"}, "internal", "https://198.51.100.7"),
        (ACME_BASE, "acme", "https://prefect.example.com"),
        ({**ACME_BASE, "prefect-host:tls": "acme"}, "acme", "https://prefect.example.com"),
        ({**BASE, "prefect-host:tls": "off", "prefect-host:allowPlaintext": "true"}, "off", "http://198.51.100.7:4200"),
        (
            {**ACME_BASE, "prefect-host:tls": "off", "prefect-host:allowPlaintext": "true"},
            "off",
            "http://prefect.example.com:4200",
        ),
    ],
)
def test_tls_mode_resolves_and_the_server_url_follows(values, mode, url):
    config = parse(values)
    assert config.tls_mode == mode and config.server_url("198.51.100.7") == url


# One bad value per TLS key where a domain is set (acme mode): (key, raw value, text the message must contain).
ACME_BAD_VALUES = [
    ("prefect-host:tls", "internal", "not prefect.example.com"),
    ("prefect-host:acmeEmail", "ops@example", "e-mail address"),
    ("prefect-host:acmeEmail", "ops@example.com {", "e-mail address"),
    ("prefect-host:acmeCa", "http://acme.example/dir", "https:// URL"),
    ("prefect-host:acmeCa", "https://", "https:// URL"),
    ("prefect-host:acmeCa", "https://user:pw@acme.example/dir", "without credentials"),
    ("prefect-host:acmeCa", "https://acme.example/dir{", "https:// URL"),
    ("prefect-host:acmeCa", "https://acme.example:99999/dir", "https:// URL"),
    ("prefect-host:acmeCa", "https://acme.example/dir#x", "https:// URL"),
]


@pytest.mark.parametrize("key, value, allowed", ACME_BAD_VALUES)
def test_acme_settings_are_validated(key, value, allowed):
    with pytest.raises(StackConfigError) as caught:
        parse({**ACME_BASE, key: value})
    message = str(caught.value)
    assert key in message and allowed in message and value in message and "\n" not in message


def test_acme_settings_are_accepted_and_a_private_ca_may_be_anywhere():
    config = parse(
        {
            **ACME_BASE,
            "prefect-host:acmeEmail": "ops@example.com",
            "prefect-host:acmeCa": "https://10.77.0.1:14000/dir",
            "prefect-host:allowedCidrs": '["10.0.0.0/8"]',
        }
    )
    assert (config.acme_email, config.acme_ca) == ("ops@example.com", "https://10.77.0.1:14000/dir")


@pytest.mark.parametrize(
    "directory",
    ["https://acme-v02.api.letsencrypt.org/directory", "https://acme-staging-v02.api.letsencrypt.org/directory"],
)
def test_lets_encrypt_needs_ports_80_and_443_open_to_the_world(directory):
    values = {**ACME_BASE, "prefect-host:acmeCa": directory, "prefect-host:allowedCidrs": '["198.51.100.0/24"]'}
    with pytest.raises(StackConfigError, match=r"prefect-host:allowedCidrs.*closed to Let's Encrypt"):
        parse(values)
    assert parse({**values, "prefect-host:allowedCidrs": '["198.51.100.0/24", "0.0.0.0/0"]'}).tls_mode == "acme"
    # The same ranges are fine without ACME.
    assert parse({**BASE, "prefect-host:allowedCidrs": '["198.51.100.0/24"]'}).tls_mode == "internal"


@pytest.mark.parametrize(
    "domain",
    [
        "prefect.example.com",
        "a.b",
        "xn--prfect-bva.example.com",
        "x-1.example.co.uk",
        "a" * 63 + ".example.com",
        ".".join(["abcdefghi"] * 24) + ".example",
    ],
)
def test_every_accepted_domain_is_one_caddy_serves(domain):
    """The bootstrap renders the domain into the Caddyfile with its own (independent) check."""
    from prefect_host.caddy import CaddySettings

    config = parse({**BASE, "prefect-host:domain": domain})
    assert config.domain == domain and len(domain) <= 253
    assert CaddySettings("acme", config.domain, 4201, acme_email=None, acme_directory=config.acme_ca).address == domain


@pytest.mark.parametrize(
    "retention, interval, expected",
    [
        (None, None, ("7d", "1d")),
        ("1h", "1h", ("1h", "1h")),
        ("24h", None, ("24h", "1d")),
        ("3650d", "30d", ("3650d", "30d")),
        ("9999h", "720h", ("9999h", "720h")),
        ("9999h", "9999h", None),
        ("30d", "30d", ("30d", "30d")),
        (None, "7d", ("7d", "7d")),
    ],
)
def test_backup_settings_take_durations_within_bounds(retention, interval, expected):
    values = dict(BASE)
    for key, value in (("prefect-host:backupRetention", retention), ("prefect-host:backupSnapshotInterval", interval)):
        if value is not None:
            values[key] = value
    if expected is None:  # 9999h is 416 days: a fine retention, too long an interval
        with pytest.raises(StackConfigError, match=r"backupSnapshotInterval.*from 1h to 30d"):
            parse(values)
        return
    config = parse(values)
    assert (config.backup_retention, config.backup_snapshot_interval) == expected


def test_a_retention_shorter_than_the_interval_names_both_settings():
    with pytest.raises(StackConfigError) as caught:
        parse({**BASE, "prefect-host:backupRetention": "2d", "prefect-host:backupSnapshotInterval": "3d"})
    message = str(caught.value)
    assert message.startswith('Config prefect-host:backupRetention = "2d" is invalid; allowed: at least ')
    assert 'prefect-host:backupSnapshotInterval ("3d")' in message and "no shorter than" in message


@pytest.mark.parametrize("text, hours", [("7d", 168), ("36h", 36), ("1h", 1), ("9999d", 239976), ("10d", 240)])
def test_duration_hours(text, hours):
    from backup_config import duration_hours

    assert duration_hours(text) == hours


@pytest.mark.parametrize("text", ["7", "0d", "7 d", "7d\n", " 7d", "1w", "07d", "10000h", "7dd", "d", "", "٣d"])
def test_duration_hours_refuses_anything_else(text):
    from backup_config import duration_hours

    assert duration_hours(text) is None


# With worker VMs: (key, raw value, text the message must contain).
WORKER_BAD_VALUES = [
    ("prefect-host:workerInstanceType", "", "EC2 instance type such as t3.small"),
    ("prefect-host:workerInstanceType", "t3 large", "EC2 instance type"),
    ("prefect-host:workerInstanceType", "e2-standard-4", "EC2 instance type"),
    ("prefect-host:workerDiskSizeGb", "9", "a whole number of GB from 10 to 2000"),
    ("prefect-host:workerDiskSizeGb", "2001", "from 10 to 2000"),
    ("prefect-host:workerDiskSizeGb", "20.5", "from 10 to 2000"),
]


@pytest.mark.parametrize("key, value, allowed", WORKER_BAD_VALUES)
def test_a_bad_worker_setting_names_the_key_the_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(StackConfigError) as caught:
        parse({**BASE, "prefect-host:workerHosts": "2", key: value})
    message = str(caught.value)
    assert message.startswith(f"Config {key} = {json.dumps(value)} is invalid; allowed: ") and allowed in message


def test_worker_vms_take_the_servers_type_and_disk_unless_told():
    config = parse({**BASE, "prefect-host:instanceType": "t4g.small", "prefect-host:diskSizeGb": "40"})
    assert (config.worker_hosts, config.worker_host_names) == (0, ())
    config = parse(
        {
            **BASE,
            "prefect-host:instanceType": "t4g.small",
            "prefect-host:diskSizeGb": "40",
            "prefect-host:workerHosts": "3",
        }
    )
    assert (config.worker_hosts, config.worker_instance_type, config.worker_disk_size_gb) == (3, "t4g.small", 40)
    assert config.worker_host_names == (
        "prefect-host-dev-worker-1",
        "prefect-host-dev-worker-2",
        "prefect-host-dev-worker-3",
    )
    gcp = parse({**GCP, "prefect-host:workerHosts": "1", "prefect-host:workerInstanceType": "n2-standard-8"})
    assert (gcp.worker_instance_type, gcp.worker_disk_size_gb, gcp.instance_type) == ("n2-standard-8", 20, "e2-small")
    # A type of the other cloud is refused, as for instanceType.
    with pytest.raises(StackConfigError, match=r"Compute Engine machine type .* \(cloud is gcp\)"):
        parse({**GCP, "prefect-host:workerHosts": "1", "prefect-host:workerInstanceType": "t3.large"})


@pytest.mark.parametrize("stack", ["dev", "a" * 80, "Prod_EU.1"])
def test_worker_names_are_unique_dns_labels(stack):
    """What the bootstrap accepts in the workerHosts output (prefect_host/outputs.py: a DNS label, names unique)."""
    names = parse({**BASE, "prefect-host:workerHosts": "20"}, stack=stack).worker_host_names
    assert len(names) == len(set(names)) == 20 and names[-1].endswith("-worker-20")
    assert all(re.fullmatch(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?", name) for name in names)
