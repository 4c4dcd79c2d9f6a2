"""database: postgres on GCP: Cloud SQL for PostgreSQL 17 with a private IP on the stack's own network (private
services access), TLS only, backups with point-in-time recovery."""

from collections import Counter

import pytest

from gcp_database import backup_retention, edition
from infra_test_configs import GCP

PG = {**GCP, "prefect-host:database": "postgres"}
SQL = "gcp:sql/databaseInstance:DatabaseInstance"


def database_children(run):
    return run.children_of(run.one("prefect-host:gcp_database:GcpDatabase"))


def test_sqlite_registers_no_database_and_looks_nothing_up(program):
    run = program(GCP)
    assert not [r for r in run.resources if r.type.startswith(("gcp:sql/", "gcp:servicenetworking/"))]
    assert run.invokes == []


def test_postgres_adds_exactly_the_database_resources(program):
    run = program(PG)
    assert Counter(r.type for r in database_children(run)) == Counter(
        {
            "gcp:projects/service:Service": 2,
            "gcp:compute/globalAddress:GlobalAddress": 1,
            "gcp:servicenetworking/connection:Connection": 1,
            SQL: 1,
            "gcp:sql/database:Database": 1,
            "random:index/randomPassword:RandomPassword": 1,
            "gcp:sql/user:User": 1,
        }
    )
    # The machine type lookup that bounds apiWorkers.
    [lookup] = run.invokes
    assert (lookup.token, lookup.args) == (
        "gcp:compute/getMachineTypes:getMachineTypes",
        {"filter": 'name = "e2-small"', "zone": "europe-west1-b"},
    )


def test_private_services_access_on_the_stacks_own_network(program):
    run = program(PG)
    network = run.one("gcp:compute/network:Network")
    assert network.inputs["autoCreateSubnetworks"] is False  # the stack's own network, not `default`
    peering_range = run.one("gcp:compute/globalAddress:GlobalAddress")
    assert peering_range.inputs | {"description": ""} == {
        "purpose": "VPC_PEERING",
        "addressType": "INTERNAL",
        "prefixLength": 16,
        "network": network.id,
        "description": "",
    }
    connection = run.one("gcp:servicenetworking/connection:Connection")
    assert connection.inputs == {
        "network": network.id,
        "service": "servicenetworking.googleapis.com",
        "reservedPeeringRanges": [peering_range.outputs["name"]],
        "deletionPolicy": "REMOVE_PEERING",
    }
    apis = {r.inputs["service"]: r for r in run.of_type("gcp:projects/service:Service")}
    assert set(apis) == {"servicenetworking.googleapis.com", "sqladmin.googleapis.com"}
    assert all(api.inputs["disableOnDestroy"] is False for api in apis.values())
    assert apis["servicenetworking.googleapis.com"].urn in connection.dependencies
    # The instance waits for the peering and the SQL Admin API.
    instance = run.one(SQL)
    assert {connection.urn, apis["sqladmin.googleapis.com"].urn} <= instance.dependencies


def test_cloud_sql_is_postgres_17_private_tls_only_and_backed_up(program):
    run = program(PG)
    instance = run.one(SQL)
    assert (instance.inputs["databaseVersion"], instance.inputs["region"]) == ("POSTGRES_17", "europe-west1")
    settings = instance.inputs["settings"]
    assert (settings["tier"], settings["edition"], settings["availabilityType"]) == (
        "db-custom-1-3840",
        "ENTERPRISE",
        "ZONAL",
    )
    assert settings["locationPreference"] == {"zone": "europe-west1-b"}
    assert settings["ipConfiguration"] == {
        "ipv4Enabled": False,
        "privateNetwork": run.one("gcp:compute/network:Network").id,
        "sslMode": "ENCRYPTED_ONLY",
    }
    assert settings["backupConfiguration"] == {
        "enabled": True,
        "pointInTimeRecoveryEnabled": True,
        # Point-in-time recovery over the 7 days; Cloud SQL wants more backups kept than days of logs.
        "transactionLogRetentionDays": 7,
        "backupRetentionSettings": {"retainedBackups": 8, "retentionUnit": "COUNT"},
    }
    assert "diskSize" not in settings and settings["diskAutoresize"] is True


def test_database_and_user_for_prefect(program):
    run = program(PG)
    instance_name = run.one(SQL).outputs["name"]
    database = run.one("gcp:sql/database:Database")
    assert database.inputs == {"name": "prefect", "instance": instance_name, "deletionPolicy": "ABANDON"}
    user = run.one("gcp:sql/user:User")
    password = next(r for r in database_children(run) if r.type == "random:index/randomPassword:RandomPassword")
    assert user.inputs == {
        "name": "prefect",
        "instance": instance_name,
        "password": password.outputs["result"],
        "deletionPolicy": "ABANDON",
    }
    assert "password" in user.secret_inputs


def test_retain_data_protects_the_database_in_pulumi_and_in_cloud_sql(program):
    kept = program(PG).one(SQL).inputs
    assert kept["deletionProtection"] is True
    assert kept["settings"]["deletionProtectionEnabled"] is True and kept["settings"]["retainBackupsOnDelete"] is True
    disposable = program({**PG, "prefect-host:retainData": False}).one(SQL).inputs
    assert disposable["deletionProtection"] is False
    assert disposable["settings"]["deletionProtectionEnabled"] is False
    assert disposable["settings"]["retainBackupsOnDelete"] is False


@pytest.mark.parametrize(
    "tier, days, expected_edition, kept, log_days",
    [
        ("db-g1-small", 1, "ENTERPRISE", 2, 1),
        ("db-g1-small", 3, "ENTERPRISE", 4, 3),
        ("db-custom-2-7680", 8, "ENTERPRISE", 8, 7),
        ("db-custom-2-7680", 35, "ENTERPRISE", 35, 7),
        ("db-perf-optimized-N-2", 30, "ENTERPRISE_PLUS", 31, 30),
        ("db-perf-optimized-N-2", 35, "ENTERPRISE_PLUS", 36, 35),
    ],
)
def test_the_tier_picks_the_edition_and_the_retention(program, tier, days, expected_edition, kept, log_days):
    assert edition(tier) == expected_edition
    assert backup_retention(days, expected_edition) == (kept, log_days)
    # Cloud SQL's rule: more daily backups kept than days of transaction logs, logs 1 to 7 (35 on Enterprise Plus).
    assert kept > log_days >= 1 and log_days <= (35 if expected_edition == "ENTERPRISE_PLUS" else 7)
    run = program({**PG, "prefect-host:dbInstanceClass": tier, "prefect-host:dbBackupRetentionDays": days})
    settings = run.one(SQL).inputs["settings"]
    assert (settings["tier"], settings["edition"]) == (tier, expected_edition)
    backup = settings["backupConfiguration"]
    assert (backup["backupRetentionSettings"]["retainedBackups"], backup["transactionLogRetentionDays"]) == (
        kept,
        log_days,
    )


def test_api_workers_up_to_two_per_vcpu_of_the_machine_type(program):
    run = program({**PG, "prefect-host:instanceType": "e2-standard-4", "prefect-host:apiWorkers": 8})
    assert run.outputs["apiWorkers"] == "8"


def test_database_url_names_the_private_ip(program):
    run = program(PG)
    component = run.one("prefect-host:gcp_database:GcpDatabase")
    private_ip = run.one(SQL).outputs["privateIpAddress"]
    assert component.outputs["host"] == private_ip and "url" in component.secret_outputs
    assert run.outputs["databaseUrl"] == component.outputs["url"]
    assert run.outputs["databaseUrl"].endswith(f"@{private_ip}:5432/prefect?ssl=require")
