"""database: postgres on AWS: RDS for PostgreSQL 17 in the VM's VPC, reachable from the VM only, TLS only."""

from collections import Counter

import pytest

from infra_test_configs import AWS, STORAGE_ACCESS_AND_CREDENTIALS

PG = {**AWS, "prefect-host:database": "postgres"}
RDS = "aws:rds/instance:Instance"
GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"


def database_children(run):
    return run.children_of(run.one("prefect-host:aws_database:AwsDatabase"))


def host_group(run):
    [group] = [g for g in run.of_type(GROUP) if g.name == "prefect-host-dev-sg"]
    return group


def test_sqlite_registers_no_database(program):
    run = program(AWS)
    assert not [r for r in run.resources if r.type.startswith("aws:rds/") or "aws_database" in r.type]
    assert "aws:ec2/getSubnets:getSubnets" not in [i.token for i in run.invokes]


def test_postgres_adds_exactly_the_database_resources(program):
    run = program(PG)
    assert Counter(r.type for r in database_children(run)) == Counter(
        {
            "aws:rds/subnetGroup:SubnetGroup": 1,
            GROUP: 1,
            INGRESS: 1,
            "aws:rds/parameterGroup:ParameterGroup": 1,
            "random:index/randomPassword:RandomPassword": 1,
            "random:index/randomId:RandomId": 1,
            RDS: 1,
        }
    )
    others = Counter(r.type for r in run.resources) - Counter(r.type for r in database_children(run))
    assert others == Counter(
        {
            "prefect-host:host_keys:HostKeys": 1,
            "tls:index/privateKey:PrivateKey": 2,
            "prefect-host:aws_host:AwsHost": 1,
            GROUP: 1,
            INGRESS: 5,
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": 2,
            "aws:ec2/keyPair:KeyPair": 1,
            "aws:ec2/instance:Instance": 1,
            "aws:ec2/eip:Eip": 1,
            "prefect-host:aws_database:AwsDatabase": 1,
            **STORAGE_ACCESS_AND_CREDENTIALS,
        }
    )


def test_rds_is_postgres_17_encrypted_private_and_backed_up(program):
    run = program(PG)
    rds = run.one(RDS)
    i = rds.inputs
    assert (i["engine"], i["engineVersion"], i["autoMinorVersionUpgrade"]) == ("postgres", "17", True)
    assert (i["instanceClass"], i["storageType"], i["allocatedStorage"], i["maxAllocatedStorage"]) == (
        "db.t4g.micro",
        "gp3",
        20,
        100,
    )
    assert i["storageEncrypted"] is True and i["publiclyAccessible"] is False
    assert (i["dbName"], i["username"], i["port"]) == ("prefect", "prefect", 5432)
    assert i["backupRetentionPeriod"] == 7 and i["copyTagsToSnapshot"] is True
    assert "password" in rds.secret_inputs
    password = next(r for r in database_children(run) if r.name == "prefect-host-dev-db-password")
    assert password.inputs == {"length": 32, "special": False} and i["password"] == password.outputs["result"]


def test_rds_is_reachable_on_5432_from_the_vms_security_group_only(program):
    run = program(PG)
    [db_group] = [g for g in run.of_type(GROUP) if g.name == "prefect-host-dev-db-sg"]
    vm_group = host_group(run)
    # In the VM's VPC (its security group's), no rules of its own inline, no egress.
    assert db_group.inputs["vpcId"] == vm_group.outputs["vpcId"]
    assert "ingress" not in db_group.inputs and "egress" not in db_group.inputs
    rules = [r for r in run.of_type(INGRESS) if r.inputs["securityGroupId"] == db_group.id]
    assert [r.inputs for r in rules] == [
        {
            "securityGroupId": db_group.id,
            "referencedSecurityGroupId": vm_group.id,
            "ipProtocol": "tcp",
            "fromPort": 5432,
            "toPort": 5432,
            "description": "PostgreSQL from the Prefect VM",
        }
    ]
    assert not [
        r
        for r in run.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if r.inputs["securityGroupId"] == db_group.id
    ]
    assert run.one(RDS).inputs["vpcSecurityGroupIds"] == [db_group.id]


def test_rds_is_in_a_subnet_group_of_the_vms_vpc(program):
    run = program(PG)
    [lookup] = [i for i in run.invokes if i.token == "aws:ec2/getSubnets:getSubnets"]
    assert lookup.args["filters"] == [{"name": "vpc-id", "values": [host_group(run).outputs["vpcId"]]}]
    subnet_group = run.one("aws:rds/subnetGroup:SubnetGroup")
    assert len(subnet_group.inputs["subnetIds"]) >= 2
    assert run.one(RDS).inputs["dbSubnetGroupName"] == subnet_group.outputs["name"]


def test_tls_is_enforced_by_the_parameter_group(program):
    run = program(PG)
    parameters = run.one("aws:rds/parameterGroup:ParameterGroup")
    assert parameters.inputs["family"] == "postgres17"
    assert parameters.inputs["parameters"] == [{"name": "rds.force_ssl", "value": "1"}]
    assert run.one(RDS).inputs["parameterGroupName"] == parameters.outputs["name"]


def test_retain_data_protects_the_database_and_keeps_a_final_snapshot(program):
    kept = program(PG).one(RDS).inputs
    assert kept["deletionProtection"] is True and kept["skipFinalSnapshot"] is False
    assert kept["deleteAutomatedBackups"] is False
    assert kept["finalSnapshotIdentifier"].startswith("prefect-host-dev-db-final-")
    disposable = program({**PG, "prefect-host:retainData": False}).one(RDS).inputs
    assert disposable["deletionProtection"] is False and disposable["skipFinalSnapshot"] is True
    assert disposable["deleteAutomatedBackups"] is True


def test_database_settings_are_passed_through(program):
    run = program(
        {
            **PG,
            "prefect-host:instanceType": "c5.xlarge",
            "prefect-host:dbInstanceClass": "db.m7g.large",
            "prefect-host:dbBackupRetentionDays": 35,
            "prefect-host:apiWorkers": 8,  # c5.xlarge: 4 vCPUs
        }
    )
    i = run.one(RDS).inputs
    assert (i["instanceClass"], i["backupRetentionPeriod"]) == ("db.m7g.large", 35)
    assert run.outputs["apiWorkers"] == "8"


def test_database_url_names_the_rds_address_and_the_component_reports_it(program):
    run = program(PG)
    component = run.one("prefect-host:aws_database:AwsDatabase")
    address = run.one(RDS).outputs["address"]
    assert component.outputs["host"] == address and "url" in component.secret_outputs
    assert run.outputs["databaseUrl"] == component.outputs["url"]
    assert f"@{address}:5432/prefect?ssl=require" in run.outputs["databaseUrl"]


@pytest.mark.parametrize("stack", ["staging", "Prod_EU.1"])
def test_names_derive_from_the_stack(program, stack):
    run = program(PG, stack=stack)
    prefix = run.one("prefect-host:aws_host:AwsHost").name
    assert all(r.name.startswith(f"{prefix}-") for r in database_children(run))
    snapshot = run.one(RDS).inputs["finalSnapshotIdentifier"]
    # RDS: a letter first, letters, digits and single hyphens, no hyphen at the end.
    assert snapshot[0].isalpha() and "--" not in snapshot and not snapshot.endswith("-")
    assert all(c.isalnum() or c == "-" for c in snapshot)
