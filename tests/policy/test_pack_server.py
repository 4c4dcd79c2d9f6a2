"""The pack as `pulumi preview --policy-pack policy` runs it, without the CLI.

The CLI's `pulumi-analyzer-policy-python` shim starts `<virtualenv>/bin/python -m pulumi.policy <engine> .` in
the pack directory, with the virtualenv from PulumiPolicy.yaml; PolicyPack then prints its port and serves the
Analyzer gRPC service. This test does the same and talks to it like the engine: resource rules get inputs,
stack rules get outputs plus property dependencies (numbers arrive as doubles, previews carry unknowns).
"""

from __future__ import annotations

import json
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2 as proto
from pulumi.runtime.proto import analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policy import rules

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "policy"
STACK = "urn:pulumi:dev::prefect-host::"
TOTAL = "prefect-host-ssh-total-per-target"
SSH_POLICIES = {"CKV_AWS_24", "CKV_GCP_2", TOTAL}
DELETION_POLICIES = {"CKV_AWS_293", "prefect-host-gcp-sql-deletion-protection"}


def pack_virtualenv() -> Path:
    runtime = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())["runtime"]
    assert runtime["name"] == "python"
    return (POLICY_DIR / runtime["options"]["virtualenv"]).resolve()


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    process = subprocess.Popen(
        [str(pack_virtualenv() / "bin" / "python"), "-u", "-m", "pulumi.policy", "127.0.0.1:0", "."],
        cwd=POLICY_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "policy pack did not print its port within 60 s"
        port = process.stdout.readline().strip()
        assert port.isdigit(), (port, process.stderr.read() if process.poll() is not None else "")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=10)


def struct(props: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(props)
    return message


def analyze(stub, resource_type: str, name: str, props: dict) -> list:
    request = proto.AnalyzeRequest(
        type=resource_type, name=name, urn=f"{STACK}{resource_type}::{name}", properties=struct(props)
    )
    return list(stub.Analyze(request).diagnostics)


def stack_resource(resource_type: str, name: str, props: dict, depends_on: dict[str, str] | None = None):
    return proto.AnalyzerResource(
        type=resource_type,
        name=name,
        urn=f"{STACK}{resource_type}::{name}",
        properties=struct(props),
        propertyDependencies={
            key: proto.AnalyzerPropertyDependencies(urns=[urn]) for key, urn in (depends_on or {}).items()
        },
    )


def test_pack_runs_in_the_projects_virtualenv():
    project_runtime = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["runtime"]
    assert pack_virtualenv() == (REPO / project_runtime["options"]["virtualenv"]).resolve()


def test_engine_sees_every_rule_as_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "prefect-host-security"
    assert [p.name for p in info.policies] == [p.name for p in rules.ALL]
    assert {p.enforcementLevel for p in info.policies} == {proto.MANDATORY}
    stack_rules = {p.name for p in info.policies if p.policy_type == proto.PolicyType.POLICY_TYPE_STACK}
    assert stack_rules == {TOTAL, "CKV2_AWS_6", "CKV_AWS_19", "prefect-host-s3-tls-only", "CKV2_AWS_69"}


def test_engine_sees_the_ssh_and_deletion_rules_config_schemas(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    schemas = {p.name: json_format.MessageToDict(p.configSchema) for p in info.policies if p.HasField("configSchema")}
    assert set(schemas) == SSH_POLICIES | DELETION_POLICIES
    for name, schema in schemas.items():
        flag = "allowPublicSsh" if name in SSH_POLICIES else "allowDatabaseDeletion"
        assert set(schema["properties"]) == {flag}
        assert schema["properties"][flag]["type"] == "boolean"
        assert schema["properties"][flag]["default"] is False


def test_resource_rules_run_on_inputs(analyzer):
    instance = {"metadataOptions": {"httpTokens": "required"}, "rootBlockDevice": {"encrypted": True}}
    assert analyze(analyzer, rules.AWS_INSTANCE, "vm", instance) == []

    imds_v1 = {**instance, "metadataOptions": {"httpTokens": "optional"}}
    [diagnostic] = analyze(analyzer, rules.AWS_INSTANCE, "vm", imds_v1)
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == ("CKV_AWS_79", proto.MANDATORY)

    ssh = {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv6": "::/0"}
    assert [d.policyName for d in analyze(analyzer, rules.AWS_VPC_INGRESS_RULE, "ssh", ssh)] == ["CKV_AWS_24"]


def preview_storage(with_dependencies: bool) -> list:
    """A new bucket in a preview: its id and ARN are unknown, so the related resources' `bucket` inputs are."""
    bucket = stack_resource(
        "aws:s3/bucket:Bucket",
        "storage-bucket",
        {
            "bucket": "prefect-host-dev-1a2b3c4d",
            "id": UNKNOWN_STRING_VALUE,
            "arn": UNKNOWN_STRING_VALUE,
            "policy": UNKNOWN_STRING_VALUE,
        },
    )
    depends = {"bucket": bucket.urn} if with_dependencies else None
    policy = json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    "Resource": ["arn:aws:s3:::prefect-host-dev-1a2b3c4d", "arn:aws:s3:::prefect-host-dev-1a2b3c4d/*"],
                }
            ]
        }
    )
    return [
        bucket,
        stack_resource(
            rules.AWS_PUBLIC_ACCESS_BLOCK,
            "storage-pab",
            {
                "bucket": UNKNOWN_STRING_VALUE,
                "blockPublicAcls": True,
                "blockPublicPolicy": True,
                "ignorePublicAcls": True,
                "restrictPublicBuckets": True,
            },
            depends,
        ),
        stack_resource(
            rules.AWS_BUCKET_ENCRYPTION[0],
            "storage-encryption",
            {
                "bucket": UNKNOWN_STRING_VALUE,
                "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}],
            },
            depends,
        ),
        stack_resource(
            rules.AWS_BUCKET_POLICY, "storage-tls-only", {"bucket": UNKNOWN_STRING_VALUE, "policy": policy}, depends
        ),
    ]


def test_stack_rules_follow_property_dependencies_through_unknowns(analyzer):
    response = analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=preview_storage(with_dependencies=True)))
    assert list(response.diagnostics) == []


def test_stack_rule_that_cannot_decide_in_a_preview_is_advisory(analyzer):
    response = analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=preview_storage(with_dependencies=False)))
    diagnostics = {d.policyName: d for d in response.diagnostics}
    assert set(diagnostics) == {"CKV2_AWS_6", "CKV_AWS_19", "prefect-host-s3-tls-only"}
    assert {d.enforcementLevel for d in diagnostics.values()} == {proto.ADVISORY}
    assert all("can't run policy" in d.message for d in diagnostics.values())


def test_stack_rule_reports_the_bucket(analyzer):
    resources = [r for r in preview_storage(with_dependencies=True) if r.name != "storage-pab"]
    [diagnostic] = analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=resources)).diagnostics
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == ("CKV2_AWS_6", proto.MANDATORY)
    assert diagnostic.urn == resources[0].urn


# --- SSH summed per security group, in a preview: the rules' securityGroupId is unknown, the engine's
# property dependencies name the group.


def preview_ssh(cidrs: list[str], depends_on: str | None = "sg") -> list:
    group = stack_resource(
        rules.AWS_SECURITY_GROUP, "sg", {"id": UNKNOWN_STRING_VALUE, "ingress": UNKNOWN_STRING_VALUE, "name": "sg"}
    )
    vpc = stack_resource("aws:ec2/vpc:Vpc", "vpc", {"id": UNKNOWN_STRING_VALUE})
    reference = {"sg": group.urn, "vpc": vpc.urn}.get(depends_on)
    ingress = [
        stack_resource(
            rules.AWS_VPC_INGRESS_RULE,
            f"ssh-{i}",
            {
                "securityGroupId": UNKNOWN_STRING_VALUE,
                "ipProtocol": "tcp",
                "fromPort": 22,
                "toPort": 22,
                "cidrIpv4": cidr,
            },
            {"securityGroupId": reference} if reference else None,
        )
        for i, cidr in enumerate(cidrs)
    ]
    return [group, vpc, *ingress]


SLASH_9S = ["10.0.0.0/9", "10.128.0.0/9", "11.0.0.0/9"]


def test_ssh_is_summed_per_security_group_through_property_dependencies(analyzer):
    resources = preview_ssh(SLASH_9S)
    [diagnostic] = analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=resources)).diagnostics
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == (TOTAL, proto.MANDATORY)
    assert diagnostic.urn == resources[0].urn
    assert "security group sg is open to 25165824 IPv4 addresses in all" in diagnostic.message
    within = preview_ssh(SLASH_9S[:2])
    assert list(analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=within)).diagnostics) == []


def test_rules_on_a_group_computed_from_another_resource_are_summed_by_that_resource(analyzer):
    # E.g. `security_group_id=vpc.default_security_group_id`: unknown in a preview, depends on the VPC only.
    [diagnostic] = analyzer.AnalyzeStack(
        proto.AnalyzeStackRequest(resources=preview_ssh(SLASH_9S, depends_on="vpc"))
    ).diagnostics
    assert (diagnostic.policyName, diagnostic.enforcementLevel, diagnostic.urn) == (TOTAL, proto.MANDATORY, "")
    assert "the security group computed from vpc" in diagnostic.message


def worker_api_rule(port: int) -> proto.AnalyzerResource:
    """What AwsWorkerHosts adds to the server's group in a preview: the worker's /32, unknown until its EIP exists."""
    props = {
        "securityGroupId": UNKNOWN_STRING_VALUE,
        "ipProtocol": "tcp",
        "fromPort": port,
        "toPort": port,
        "cidrIpv4": UNKNOWN_STRING_VALUE,
    }
    return stack_resource(rules.AWS_VPC_INGRESS_RULE, f"worker-1-to-server-tcp-{port}", props)


def test_an_unknown_source_on_ports_no_rule_minds_leaves_every_rule_decidable(analyzer):
    for port in (443, 4200):
        rule = worker_api_rule(port)
        assert analyze(analyzer, rule.type, rule.name, json_format.MessageToDict(rule.properties)) == []
    # The SSH sum still decides, with those rules among the resources.
    resources = [*preview_ssh(SLASH_9S), worker_api_rule(443), worker_api_rule(4200)]
    [diagnostic] = analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=resources)).diagnostics
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == (TOTAL, proto.MANDATORY)
    # An unknown source on port 22 cannot be judged: the engine hears so, as advisory.
    ssh = {**json_format.MessageToDict(worker_api_rule(22).properties)}
    diagnostics = analyze(analyzer, rules.AWS_VPC_INGRESS_RULE, "ssh", ssh)
    assert {d.policyName for d in diagnostics} == {"CKV_AWS_24"}
    assert all(d.enforcementLevel == proto.ADVISORY and "can't run policy" in d.message for d in diagnostics)


def test_rules_on_an_unidentifiable_group_are_left_to_the_resource_rules(analyzer):
    resources = preview_ssh(SLASH_9S, depends_on=None)
    assert list(analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=resources)).diagnostics) == []


# --- The pack config, as `pulumi preview --policy-pack policy --policy-pack-config FILE` hands it over.


def configure_like_the_cli(stub, config_file: dict) -> None:
    """What the CLI sends (pulumi's ReconcilePolicyPackConfig): every policy with its enforcement level and
    its schema's defaults, then the file's entries over them (a string: a level; an object: properties,
    "enforcementLevel" among them)."""
    request = proto.ConfigureAnalyzerRequest()
    for policy in stub.GetAnalyzerInfo(empty_pb2.Empty()).policies:
        schema = json_format.MessageToDict(policy.configSchema).get("properties", {})
        properties = {key: spec["default"] for key, spec in schema.items() if "default" in spec}
        level = policy.enforcementLevel
        given = config_file.get(policy.name, {})
        if isinstance(given, str):
            given = {"enforcementLevel": given}
        given = dict(given)
        if "enforcementLevel" in given:
            level = proto.EnforcementLevel.Value(given.pop("enforcementLevel").upper())
        properties |= given
        request.policyConfig[policy.name].CopyFrom(
            proto.PolicyConfig(enforcementLevel=level, properties=struct(properties))
        )
    stub.Configure(request)


@pytest.fixture
def configured(analyzer):
    try:
        yield lambda config_file: configure_like_the_cli(analyzer, config_file)
    finally:
        configure_like_the_cli(analyzer, {})


WORLD_SSH = {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv4": "0.0.0.0/0"}


def test_allow_public_ssh_config_makes_the_ssh_rules_not_applicable(analyzer, configured):
    configured(json.loads((POLICY_DIR / "allow-public-ssh.json").read_text()))
    response = analyzer.Analyze(
        proto.AnalyzeRequest(
            type=rules.AWS_VPC_INGRESS_RULE,
            name="ssh",
            urn=f"{STACK}{rules.AWS_VPC_INGRESS_RULE}::ssh",
            properties=struct(WORLD_SSH),
        )
    )
    assert list(response.diagnostics) == []
    [skipped] = response.not_applicable
    assert skipped.policy_name == "CKV_AWS_24" and "allowPublicSsh" in skipped.reason and "0.0.0.0/0" in skipped.reason

    response = analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=preview_ssh(SLASH_9S)))
    assert list(response.diagnostics) == []
    assert [s.policy_name for s in response.not_applicable] == [TOTAL]

    # Every other rule is as mandatory as before.
    imds_v1 = {"metadataOptions": {"httpTokens": "optional"}, "rootBlockDevice": {"encrypted": True}}
    [diagnostic] = analyze(analyzer, rules.AWS_INSTANCE, "vm", imds_v1)
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == ("CKV_AWS_79", proto.MANDATORY)


def test_the_ssh_rules_can_be_made_advisory_instead(analyzer, configured):
    # The README's alternative: the findings stay visible, as warnings.
    configured(dict.fromkeys(SSH_POLICIES, "advisory"))
    [diagnostic] = analyze(analyzer, rules.AWS_VPC_INGRESS_RULE, "ssh", WORLD_SSH)
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == ("CKV_AWS_24", proto.ADVISORY)
    [diagnostic] = analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=preview_ssh(SLASH_9S))).diagnostics
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == (TOTAL, proto.ADVISORY)


def test_allow_public_ssh_false_keeps_the_ssh_rules_mandatory(analyzer, configured):
    configured({name: {"allowPublicSsh": False} for name in SSH_POLICIES})
    [diagnostic] = analyze(analyzer, rules.AWS_VPC_INGRESS_RULE, "ssh", WORLD_SSH)
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == ("CKV_AWS_24", proto.MANDATORY)


RDS = {
    "engine": "postgres",
    "storageEncrypted": True,
    "publiclyAccessible": False,
    "backupRetentionPeriod": 7,
    "deletionProtection": False,
}


def test_allow_database_deletion_config_makes_only_the_deletion_rules_not_applicable(analyzer, configured):
    [diagnostic] = analyze(analyzer, rules.AWS_RDS_INSTANCE, "db", RDS)
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == ("CKV_AWS_293", proto.MANDATORY)
    configured(json.loads((POLICY_DIR / "allow-database-deletion.json").read_text()))
    response = analyzer.Analyze(
        proto.AnalyzeRequest(
            type=rules.AWS_RDS_INSTANCE, name="db", urn=f"{STACK}{rules.AWS_RDS_INSTANCE}::db", properties=struct(RDS)
        )
    )
    assert list(response.diagnostics) == []
    [skipped] = response.not_applicable
    assert skipped.policy_name == "CKV_AWS_293" and "allowDatabaseDeletion" in skipped.reason
    # The other database rules stay mandatory.
    [diagnostic] = analyze(analyzer, rules.AWS_RDS_INSTANCE, "db", {**RDS, "publiclyAccessible": True})
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == ("CKV_AWS_17", proto.MANDATORY)


def test_rds_tls_is_judged_through_the_parameter_groups_dependency_in_a_preview(analyzer):
    group_urn = f"{STACK}{rules.AWS_RDS_PARAMETER_GROUP}::db-params"

    def preview(force_ssl: str) -> list:
        params = stack_resource(
            rules.AWS_RDS_PARAMETER_GROUP,
            "db-params",
            {"name": UNKNOWN_STRING_VALUE, "parameters": [{"name": "rds.force_ssl", "value": force_ssl}]},
        )
        db = stack_resource(
            rules.AWS_RDS_INSTANCE,
            "db",
            {**RDS, "deletionProtection": True, "parameterGroupName": UNKNOWN_STRING_VALUE},
            depends_on={"parameterGroupName": group_urn},
        )
        return list(analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=[params, db])).diagnostics)

    assert preview("1") == []
    [diagnostic] = preview("0")
    assert diagnostic.policyName == "CKV2_AWS_69" and diagnostic.urn.endswith("::db")
