"""Each rule of the policy pack against a compliant graph and deliberately broken variants of it.

The graphs mirror what the program registers (wire property names, as the policy engine receives them).
Every broken variant must raise exactly the expected rules, so a rule that misses its case or fires on
another rule's case fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pulumi_policy import PolicyResource, ResourceValidationArgs, StackValidationArgs
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy import rules
from policy.rules import Violation, evaluate

REPO = Path(__file__).resolve().parents[2]
BUCKET = "prefect-host-dev-1a2b3c4d"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
SSH_CIDR = "203.0.113.0/24"

SSH = "CKV_AWS_24"
GCP_SSH = "CKV_GCP_2"
TOTAL = "prefect-host-ssh-total-per-target"
PORTS = "prefect-host-public-ports-only"
TLS = "prefect-host-s3-tls-only"
SECURE_BOOT = "prefect-host-gcp-secure-boot"
RDS_TLS = "CKV2_AWS_69"
SQL_DELETION = "prefect-host-gcp-sql-deletion-protection"
DELETION_POLICIES = {"CKV_AWS_293", SQL_DELETION}
RDS_PARAMS = "prefect-host-dev-db-params-1a2b3c4"


@dataclass(frozen=True)
class Res:
    type: str
    name: str
    inputs: dict
    outputs: dict | None = None
    urn: str | None = None


def tls_policy(arn: str = BUCKET_ARN, **statement_changes) -> str:
    statement = {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    statement.update(statement_changes)
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def storage_and_access() -> list[Res]:
    """The S3 bucket with its hardening and the IAM group/user, as on both clouds."""
    return [
        Res(
            "aws:s3/bucket:Bucket",
            "storage-bucket",
            {"bucket": BUCKET, "forceDestroy": False},
            outputs={"id": BUCKET, "arn": BUCKET_ARN, "bucket": BUCKET},
        ),
        Res(
            rules.AWS_PUBLIC_ACCESS_BLOCK,
            "storage-public-access-block",
            {
                "bucket": BUCKET,
                "blockPublicAcls": True,
                "blockPublicPolicy": True,
                "ignorePublicAcls": True,
                "restrictPublicBuckets": True,
            },
        ),
        Res(
            "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
            "storage-ownership",
            {"bucket": BUCKET, "rule": {"objectOwnership": "BucketOwnerEnforced"}},
        ),
        Res(
            rules.AWS_BUCKET_ENCRYPTION[0],
            "storage-encryption",
            {"bucket": BUCKET, "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]},
        ),
        Res(
            "aws:s3/bucketVersioning:BucketVersioning",
            "storage-versioning",
            {"bucket": BUCKET, "versioningConfiguration": {"status": "Enabled"}},
        ),
        Res(rules.AWS_BUCKET_POLICY, "storage-tls-only", {"bucket": BUCKET, "policy": tls_policy()}),
        Res("aws:iam/group:Group", "access-group", {"name": "S3-FullAccess"}),
        Res(
            "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
            "access-group-policy",
            {"group": "S3-FullAccess", "policyArn": "arn:aws:iam::aws:policy/AmazonS3FullAccess"},
        ),
        Res("aws:iam/user:User", "access-user", {"name": "prefect-host-dev"}),
        Res(
            "aws:iam/userGroupMembership:UserGroupMembership",
            "access-membership",
            {"user": "prefect-host-dev", "groups": ["S3-FullAccess"]},
        ),
        Res("aws:iam/accessKey:AccessKey", "access-key", {"user": "prefect-host-dev"}),
    ]


def vpc_rule(name: str, protocol: str, port: int | None, group: str = "sg-0123", **source) -> Res:
    inputs = {"securityGroupId": group, "ipProtocol": protocol, **source}
    if port is not None:
        inputs |= {"fromPort": port, "toPort": port}
    return Res(rules.AWS_VPC_INGRESS_RULE, name, inputs)


def aws_graph() -> list[Res]:
    prefect_rules = [
        vpc_rule(f"host-{p}-{port}-{fam}", p, port, **{key: cidr})
        for p, port in (("tcp", 80), ("tcp", 443), ("tcp", 4200), ("udp", 4200))
        for fam, key, cidr in (("v4", "cidrIpv4", "0.0.0.0/0"), ("v6", "cidrIpv6", "::/0"))
    ]
    return [
        Res(rules.AWS_SECURITY_GROUP, "host-sg", {"description": "prefect-host dev"}, outputs={"id": "sg-0123"}),
        *prefect_rules,
        vpc_rule("host-tcp-22", "tcp", 22, cidrIpv4=SSH_CIDR),
        # Egress to the world is fine: only ingress is checked.
        Res(
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
            "host-egress",
            {"securityGroupId": "sg-0123", "ipProtocol": "-1", "cidrIpv4": "0.0.0.0/0"},
        ),
        Res("aws:ec2/keyPair:KeyPair", "host-key", {"publicKey": "ssh-ed25519 AAAA operator"}),
        Res(
            rules.AWS_INSTANCE,
            "host-vm",
            {
                "ami": "ami-0123",
                "instanceType": "t3.small",
                "keyName": "host-key",
                "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1},
                "rootBlockDevice": {"encrypted": True, "volumeType": "gp3", "volumeSize": 20},
            },
        ),
        Res("aws:ec2/eip:Eip", "host-ip", {"domain": "vpc", "instance": "i-0123"}),
        *storage_and_access(),
    ]


def gcp_firewall(name: str, allows: list[dict], source_ranges: list[str], **extra) -> Res:
    return Res(
        rules.GCP_FIREWALL,
        name,
        {
            "network": "net",
            "direction": "INGRESS",
            "allows": allows,
            "sourceRanges": source_ranges,
            "targetTags": ["host"],
            **extra,
        },
    )


SSH_ALLOW = [{"protocol": "tcp", "ports": ["22"]}]


def gcp_graph() -> list[Res]:
    return [
        Res(
            rules.GCP_NETWORK,
            "host-net",
            {"autoCreateSubnetworks": False},
            outputs={"name": "net", "id": "projects/demo-project/global/networks/net"},
        ),
        *[
            gcp_firewall(f"host-{p}-{port}", [{"protocol": p, "ports": [str(port)]}], ["0.0.0.0/0"])
            for p, port in (("tcp", 80), ("tcp", 443), ("tcp", 4200), ("udp", 4200))
        ],
        gcp_firewall("host-tcp-22", [{"protocol": "tcp", "ports": ["22"]}], [SSH_CIDR]),
        # Egress rules have destination ranges; they open nothing to the world.
        Res(
            rules.GCP_FIREWALL,
            "host-egress",
            {
                "network": "net",
                "direction": "EGRESS",
                "allows": [{"protocol": "all"}],
                "destinationRanges": ["0.0.0.0/0"],
            },
        ),
        Res("gcp:compute/address:Address", "host-ip", {"addressType": "EXTERNAL", "region": "europe-west1"}),
        Res(
            rules.GCP_INSTANCE,
            "host-vm",
            {
                "machineType": "e2-small",
                "zone": "europe-west1-b",
                "shieldedInstanceConfig": {
                    "enableSecureBoot": True,
                    "enableVtpm": True,
                    "enableIntegrityMonitoring": True,
                },
                "metadata": {
                    "block-project-ssh-keys": "true",
                    "serial-port-enable": "false",
                    "ssh-keys": "admin:ssh-ed25519 AAAA operator",
                },
            },
        ),
        *storage_and_access(),
    ]


def aws_db_graph() -> list[Res]:
    """The AWS graph with database postgres: RDS in its own security group (5432 from the VM's group), TLS only."""
    return [
        *aws_graph(),
        Res(rules.AWS_SECURITY_GROUP, "db-sg", {"vpcId": "vpc-1"}, outputs={"id": "sg-db"}),
        vpc_rule("db-tcp-5432-from-vm", "tcp", 5432, group="sg-db", referencedSecurityGroupId="sg-0123"),
        Res(
            rules.AWS_RDS_PARAMETER_GROUP,
            "db-params",
            {"family": "postgres17", "parameters": [{"name": "rds.force_ssl", "value": "1"}]},
            outputs={"name": RDS_PARAMS, "id": RDS_PARAMS},
        ),
        Res(
            rules.AWS_RDS_INSTANCE,
            "db",
            {
                "engine": "postgres",
                "engineVersion": "17",
                "instanceClass": "db.t4g.micro",
                "storageEncrypted": True,
                "publiclyAccessible": False,
                "backupRetentionPeriod": 7,
                "deletionProtection": True,
                "parameterGroupName": RDS_PARAMS,
                "vpcSecurityGroupIds": ["sg-db"],
            },
        ),
    ]


def rds(**inputs) -> list[Res]:
    return set_inputs(aws_db_graph(), "db", inputs)


def rds_parameters(*parameters: dict) -> list[Res]:
    return set_inputs(aws_db_graph(), "db-params", {"parameters": list(parameters)})


SQL_SETTINGS = {
    "tier": "db-custom-1-3840",
    "edition": "ENTERPRISE",
    "deletionProtectionEnabled": True,
    "ipConfiguration": {
        "ipv4Enabled": False,
        "privateNetwork": "projects/demo-project/global/networks/net",
        "sslMode": "ENCRYPTED_ONLY",
    },
    "backupConfiguration": {"enabled": True, "pointInTimeRecoveryEnabled": True},
}


def gcp_db_graph(settings: dict | None = SQL_SETTINGS, **inputs) -> list[Res]:
    """The GCP graph with database postgres: Cloud SQL with a private IP only, TLS only, backed up."""
    sql = {"databaseVersion": "POSTGRES_17", "region": "europe-west1", **inputs}
    if settings is not None:
        sql["settings"] = settings
    return [*gcp_graph(), Res(rules.GCP_SQL_INSTANCE, "db", sql)]


def sql(**changes) -> list[Res]:
    """Cloud SQL with settings changed: a key mapped to None is removed, a dict is merged one level deep."""
    settings = json.loads(json.dumps(SQL_SETTINGS))
    for key, value in changes.items():
        if value is None:
            settings.pop(key, None)
        elif isinstance(value, dict):
            settings[key] = {k: v for k, v in {**settings.get(key, {}), **value}.items() if v is not None}
        else:
            settings[key] = value
    return gcp_db_graph(settings)


def set_inputs(graph: list[Res], name: str, inputs: dict) -> list[Res]:
    """Replace the named resource's inputs (keys mapped to None are removed)."""
    assert name in {r.name for r in graph}, name
    result = []
    for r in graph:
        if r.name == name:
            merged = {k: v for k, v in {**r.inputs, **inputs}.items() if v is not None}
            r = replace(r, inputs=merged)
        result.append(r)
    return result


def without(graph: list[Res], name: str) -> list[Res]:
    assert name in {r.name for r in graph}, name
    return [r for r in graph if r.name != name]


def policies(graph: list[Res]) -> set[str]:
    return {v.policy for v in evaluate(graph)}


def aws_plus(*extra: Res) -> list[Res]:
    return aws_graph() + list(extra)


def gcp_plus(*extra: Res) -> list[Res]:
    return gcp_graph() + list(extra)


def aws_vm(**inputs) -> list[Res]:
    return set_inputs(aws_graph(), "host-vm", inputs)


def gcp_vm(**inputs) -> list[Res]:
    return set_inputs(gcp_graph(), "host-vm", inputs)


def gcp_metadata(**changes) -> list[Res]:
    metadata = {"block-project-ssh-keys": "true", "serial-port-enable": "false"}
    metadata.update(changes)
    return gcp_vm(metadata={k: v for k, v in metadata.items() if v is not None})


def public_access(**flags) -> list[Res]:
    return set_inputs(aws_graph(), "storage-public-access-block", flags)


def bucket_policy(document) -> list[Res]:
    return set_inputs(aws_graph(), "storage-tls-only", {"policy": document})


WORLD_22 = {"fromPort": 22, "toPort": 22}
# A case the summing rule (TOTAL) raises as well: on the resource, and on the target it opens SSH on.
ON_SG = frozenset({"bad", "host-sg"})
ON_NET = frozenset({"bad", "host-net"})
BROKEN: dict[str, tuple[list[Res], set[str], str | frozenset[str]]] = {
    # --- SSH on AWS, in all three ways a rule can be written, and the default security group.
    "vpc-rule-ssh-ipv4-world": (aws_plus(vpc_rule("bad", "tcp", 22, cidrIpv4="0.0.0.0/0")), {SSH, TOTAL}, ON_SG),
    "vpc-rule-ssh-ipv6-world": (aws_plus(vpc_rule("bad", "tcp", 22, cidrIpv6="::/0")), {SSH}, "bad"),
    "vpc-rule-ssh-protocol-number": (aws_plus(vpc_rule("bad", "6", 22, cidrIpv4="0.0.0.0/0")), {SSH, TOTAL}, ON_SG),
    "vpc-rule-ssh-zero-prefix-spelling": (
        aws_plus(vpc_rule("bad", "tcp", 22, cidrIpv4="10.0.0.0/0")),
        {SSH, TOTAL},
        ON_SG,
    ),
    "sg-rule-ssh-world": (
        aws_plus(
            Res(
                rules.AWS_SECURITY_GROUP_RULE,
                "bad",
                {
                    "type": "ingress",
                    "protocol": "tcp",
                    **WORLD_22,
                    "cidrBlocks": ["0.0.0.0/0"],
                    "securityGroupId": "sg-0123",
                },
            )
        ),
        {SSH, TOTAL},
        ON_SG,
    ),
    "inline-ingress-ssh-ipv6-world": (
        set_inputs(
            aws_graph(),
            "host-sg",
            {"ingress": [{"protocol": "tcp", **WORLD_22, "cidrBlocks": [SSH_CIDR], "ipv6CidrBlocks": ["::/0"]}]},
        ),
        {SSH},
        "host-sg",
    ),
    "default-sg-ssh-world": (
        aws_plus(
            Res(
                rules.AWS_DEFAULT_SECURITY_GROUP,
                "bad",
                {"ingress": [{"protocol": "tcp", **WORLD_22, "cidrBlocks": ["0.0.0.0/0"]}]},
            )
        ),
        {SSH},
        "bad",
    ),
    # --- Everything open, or ranges covering 22: both SSH and the public-ports rule.
    "vpc-rule-all-protocols": (
        aws_plus(vpc_rule("bad", "-1", None, cidrIpv4="0.0.0.0/0")),
        {SSH, PORTS, TOTAL},
        ON_SG,
    ),
    "sg-rule-protocol-all-0-65535": (
        aws_plus(
            Res(
                rules.AWS_SECURITY_GROUP_RULE,
                "bad",
                {"type": "ingress", "protocol": "all", "fromPort": 0, "toPort": 65535, "ipv6CidrBlocks": ["::/0"]},
            )
        ),
        {SSH, PORTS},
        "bad",
    ),
    "inline-ingress-tcp-0-65535": (
        set_inputs(
            aws_graph(),
            "host-sg",
            {"ingress": [{"protocol": "tcp", "fromPort": 0, "toPort": 65535, "cidrBlocks": ["0.0.0.0/0"]}]},
        ),
        {SSH, PORTS, TOTAL},
        "host-sg",
    ),
    "vpc-rule-range-20-30": (
        aws_plus(
            Res(
                rules.AWS_VPC_INGRESS_RULE,
                "bad",
                {"ipProtocol": "tcp", "fromPort": 20, "toPort": 30, "cidrIpv4": "0.0.0.0/0"},
            )
        ),
        {SSH, PORTS},
        "bad",
    ),
    # --- Other ports to the world.
    "vpc-rule-tcp-8080": (aws_plus(vpc_rule("bad", "tcp", 8080, cidrIpv4="0.0.0.0/0")), {PORTS}, "bad"),
    "vpc-rule-udp-22": (aws_plus(vpc_rule("bad", "udp", 22, cidrIpv6="::/0")), {PORTS}, "bad"),
    "vpc-rule-tcp-80-to-443": (
        aws_plus(
            Res(
                rules.AWS_VPC_INGRESS_RULE,
                "bad",
                {"ipProtocol": "tcp", "fromPort": 80, "toPort": 443, "cidrIpv4": "0.0.0.0/0"},
            )
        ),
        {PORTS},
        "bad",
    ),
    "vpc-rule-icmp": (aws_plus(vpc_rule("bad", "icmp", -1, cidrIpv4="0.0.0.0/0")), {PORTS}, "bad"),
    "sg-rule-udp-53-protocol-number": (
        aws_plus(
            Res(
                rules.AWS_SECURITY_GROUP_RULE,
                "bad",
                {"type": "ingress", "protocol": "17", "fromPort": 53, "toPort": 53, "cidrBlocks": ["0.0.0.0/0"]},
            )
        ),
        {PORTS},
        "bad",
    ),
    "gcp-firewall-tcp-8080": (
        gcp_plus(gcp_firewall("bad", [{"protocol": "tcp", "ports": ["8080"]}], ["0.0.0.0/0"])),
        {PORTS},
        "bad",
    ),
    "gcp-firewall-icmp": (gcp_plus(gcp_firewall("bad", [{"protocol": "icmp"}], ["0.0.0.0/0"])), {PORTS}, "bad"),
    # --- SSH open to more than a /8 of IPv4 or a /32 of IPv6, in ranges none of which is the world.
    "vpc-rule-ssh-ipv4-half-the-internet": (
        aws_plus(vpc_rule("bad", "tcp", 22, cidrIpv4="128.0.0.0/1")),
        {SSH, TOTAL},
        ON_SG,
    ),
    "vpc-rule-ssh-ipv6-wider-than-32": (
        aws_plus(vpc_rule("bad", "tcp", 22, cidrIpv6="2001:db8::/31")),
        {SSH},
        "bad",
    ),
    "inline-ingress-ssh-two-halves": (
        set_inputs(
            aws_graph(),
            "host-sg",
            {"ingress": [{"protocol": "tcp", **WORLD_22, "cidrBlocks": ["0.0.0.0/1", "128.0.0.0/1"]}]},
        ),
        {SSH, TOTAL},
        "host-sg",
    ),
    "sg-rule-ssh-three-slash-9s": (
        aws_plus(
            Res(
                rules.AWS_SECURITY_GROUP_RULE,
                "bad",
                {
                    "type": "ingress",
                    "protocol": "tcp",
                    **WORLD_22,
                    "cidrBlocks": ["10.0.0.0/9", "10.128.0.0/9", "11.0.0.0/9"],
                    "securityGroupId": "sg-0123",
                },
            )
        ),
        {SSH, TOTAL},
        ON_SG,
    ),
    "gcp-firewall-ssh-two-halves": (
        gcp_plus(gcp_firewall("bad", [{"protocol": "tcp", "ports": ["22"]}], ["0.0.0.0/1", "128.0.0.0/1"])),
        {GCP_SSH, TOTAL},
        ON_NET,
    ),
    "gcp-firewall-all-from-a-slash-7": (
        gcp_plus(gcp_firewall("bad", [{"protocol": "all"}], ["10.0.0.0/7"])),
        {GCP_SSH, TOTAL},
        ON_NET,
    ),
    # --- SSH summed over every resource on one security group or network: each passes alone, not together.
    "vpc-rules-ssh-three-slash-9s-on-one-group": (
        aws_plus(*(vpc_rule(f"ok-{c}", "tcp", 22, cidrIpv4=c) for c in ("10.0.0.0/9", "10.128.0.0/9", "11.0.0.0/9"))),
        {TOTAL},
        "host-sg",
    ),
    "vpc-rules-ssh-two-halves-on-one-group": (
        aws_plus(
            vpc_rule("bad", "tcp", 22, cidrIpv4="0.0.0.0/1"), vpc_rule("bad-2", "tcp", 22, cidrIpv4="128.0.0.0/1")
        ),
        {SSH, TOTAL},
        frozenset({"bad", "bad-2", "host-sg"}),
    ),
    # Split across two groups, the halves are judged one by one (CKV_AWS_24), never summed.
    "vpc-rules-ssh-two-halves-on-two-groups": (
        aws_plus(
            vpc_rule("bad", "tcp", 22, group="sg-a", cidrIpv4="0.0.0.0/1"),
            vpc_rule("bad-2", "tcp", 22, group="sg-b", cidrIpv4="128.0.0.0/1"),
        ),
        {SSH},
        frozenset({"bad", "bad-2"}),
    ),
    "vpc-rules-ssh-ipv6-two-slash-33s-and-a-slash-48": (
        aws_plus(
            *(
                vpc_rule(f"ok-{c}", "tcp", 22, cidrIpv6=c)
                for c in ("2001:db8::/33", "2001:db8:8000::/33", "2001:db9::/48")
            )
        ),
        {TOTAL},
        "host-sg",
    ),
    "inline-ingress-and-sg-rule-on-one-group": (
        set_inputs(
            aws_plus(
                Res(
                    rules.AWS_SECURITY_GROUP_RULE,
                    "ok",
                    {
                        "type": "ingress",
                        "protocol": "tcp",
                        **WORLD_22,
                        "cidrBlocks": ["10.128.0.0/9"],
                        "securityGroupId": "sg-0123",
                    },
                )
            ),
            "host-sg",
            {"ingress": [{"protocol": "tcp", **WORLD_22, "cidrBlocks": ["10.0.0.0/9"]}]},
        ),
        {TOTAL},
        "host-sg",
    ),
    "vpc-rule-all-ports-and-ssh-rule-on-one-group": (
        aws_plus(vpc_rule("ok", "-1", None, cidrIpv4="10.0.0.0/8")),
        {TOTAL},
        "host-sg",
    ),
    # A group the stack does not hold (an existing one, by id): the stack itself is reported.
    "vpc-rules-ssh-three-slash-9s-on-a-group-outside-the-stack": (
        aws_plus(
            *(
                vpc_rule(f"ok-{c}", "tcp", 22, group="sg-elsewhere", cidrIpv4=c)
                for c in ("10.0.0.0/9", "10.128.0.0/9", "11.0.0.0/9")
            )
        ),
        {TOTAL},
        "",
    ),
    "gcp-firewalls-ssh-two-slash-9s-on-one-network": (
        gcp_plus(*(gcp_firewall(f"ok-{c}", SSH_ALLOW, [c]) for c in ("10.0.0.0/9", "10.128.0.0/9"))),
        {TOTAL},
        "host-net",
    ),
    "gcp-firewalls-ssh-two-halves-on-one-network": (
        gcp_plus(gcp_firewall("bad", SSH_ALLOW, ["0.0.0.0/1"]), gcp_firewall("bad-2", SSH_ALLOW, ["128.0.0.0/1"])),
        {GCP_SSH, TOTAL},
        frozenset({"bad", "bad-2", "host-net"}),
    ),
    "gcp-firewalls-ssh-two-halves-on-two-networks": (
        gcp_plus(
            gcp_firewall("bad", SSH_ALLOW, ["0.0.0.0/1"], network="a"),
            gcp_firewall("bad-2", SSH_ALLOW, ["128.0.0.0/1"], network="b"),
        ),
        {GCP_SSH},
        frozenset({"bad", "bad-2"}),
    ),
    # One network, named by self link, by id and by name.
    "gcp-firewalls-ssh-on-one-network-named-three-ways": (
        gcp_plus(
            gcp_firewall(
                "ok-1",
                SSH_ALLOW,
                ["10.0.0.0/9"],
                network="https://www.googleapis.com/compute/v1/projects/demo-project/global/networks/net",
            ),
            gcp_firewall("ok-2", SSH_ALLOW, ["10.128.0.0/9"], network="projects/demo-project/global/networks/net"),
        ),
        {TOTAL},
        "host-net",
    ),
    # --- SSH on GCP.
    "gcp-firewall-ssh-world": (
        gcp_plus(gcp_firewall("bad", [{"protocol": "tcp", "ports": ["22"]}], ["0.0.0.0/0"])),
        {GCP_SSH, TOTAL},
        ON_NET,
    ),
    "gcp-firewall-ssh-ipv6-world-among-others": (
        gcp_plus(gcp_firewall("bad", [{"protocol": "tcp", "ports": ["22"]}], [SSH_CIDR, "::/0"])),
        {GCP_SSH},
        "bad",
    ),
    "gcp-firewall-ssh-without-direction": (
        gcp_plus(
            Res(
                rules.GCP_FIREWALL,
                "bad",
                {"allows": [{"protocol": "tcp", "ports": ["22"]}], "sourceRanges": ["0.0.0.0/0"]},
            )
        ),
        {GCP_SSH},
        "bad",
    ),
    "gcp-firewall-range-20-30": (
        gcp_plus(gcp_firewall("bad", [{"protocol": "tcp", "ports": ["20-30"]}], ["0.0.0.0/0"])),
        {GCP_SSH, PORTS, TOTAL},
        ON_NET,
    ),
    "gcp-firewall-tcp-no-ports": (
        gcp_plus(gcp_firewall("bad", [{"protocol": "tcp"}], ["0.0.0.0/0"])),
        {GCP_SSH, PORTS, TOTAL},
        ON_NET,
    ),
    "gcp-firewall-all": (
        gcp_plus(gcp_firewall("bad", [{"protocol": "all"}], ["0.0.0.0/0"])),
        {GCP_SSH, PORTS, TOTAL},
        ON_NET,
    ),
    # --- IMDSv2.
    "imds-optional": (
        aws_vm(metadataOptions={"httpEndpoint": "enabled", "httpTokens": "optional"}),
        {"CKV_AWS_79"},
        "host-vm",
    ),
    "imds-missing-metadata-options": (aws_vm(metadataOptions=None), {"CKV_AWS_79"}, "host-vm"),
    # --- Disk encryption.
    "root-device-missing": (aws_vm(rootBlockDevice=None), {"CKV_AWS_8"}, "host-vm"),
    "root-device-unencrypted": (
        aws_vm(rootBlockDevice={"encrypted": False, "volumeSize": 20}),
        {"CKV_AWS_8"},
        "host-vm",
    ),
    "root-device-encryption-unset": (aws_vm(rootBlockDevice={"volumeType": "gp3"}), {"CKV_AWS_8"}, "host-vm"),
    "ebs-device-unencrypted": (
        aws_vm(ebsBlockDevices=[{"deviceName": "/dev/sdf", "volumeSize": 10}]),
        {"CKV_AWS_8"},
        "host-vm",
    ),
    # --- Public access block: each flag off or left at its default.
    "block-public-acls-off": (public_access(blockPublicAcls=False), {"CKV_AWS_53"}, "storage-public-access-block"),
    "block-public-policy-unset": (public_access(blockPublicPolicy=None), {"CKV_AWS_54"}, "storage-public-access-block"),
    "ignore-public-acls-off": (public_access(ignorePublicAcls=False), {"CKV_AWS_55"}, "storage-public-access-block"),
    "restrict-public-buckets-off": (
        public_access(restrictPublicBuckets=False),
        {"CKV_AWS_56"},
        "storage-public-access-block",
    ),
    "public-access-block-missing": (
        without(aws_graph(), "storage-public-access-block"),
        {"CKV2_AWS_6"},
        "storage-bucket",
    ),
    "public-access-block-for-another-bucket": (
        public_access(bucket="someone-elses-bucket"),
        {"CKV2_AWS_6"},
        "storage-bucket",
    ),
    # --- Encryption.
    "encryption-missing": (without(aws_graph(), "storage-encryption"), {"CKV_AWS_19"}, "storage-bucket"),
    "encryption-without-algorithm": (
        set_inputs(aws_graph(), "storage-encryption", {"rules": [{"bucketKeyEnabled": True}]}),
        {"CKV_AWS_19"},
        "storage-bucket",
    ),
    # --- TLS-only policy.
    "tls-policy-missing": (without(aws_graph(), "storage-tls-only"), {TLS}, "storage-bucket"),
    "tls-policy-allow-not-deny": (bucket_policy(tls_policy(Effect="Allow")), {TLS}, "storage-bucket"),
    "tls-policy-condition-true": (
        bucket_policy(tls_policy(Condition={"Bool": {"aws:SecureTransport": "true"}})),
        {TLS},
        "storage-bucket",
    ),
    "tls-policy-bucket-only-not-objects": (bucket_policy(tls_policy(Resource=[BUCKET_ARN])), {TLS}, "storage-bucket"),
    "tls-policy-one-principal": (
        bucket_policy(tls_policy(Principal={"AWS": "arn:aws:iam::123456789012:root"})),
        {TLS},
        "storage-bucket",
    ),
    "tls-policy-get-object-only": (bucket_policy(tls_policy(Action="s3:GetObject")), {TLS}, "storage-bucket"),
    "tls-policy-another-bucket": (bucket_policy(tls_policy(arn="arn:aws:s3:::other")), {TLS}, "storage-bucket"),
    "tls-policy-not-json": (bucket_policy("{not json"), {TLS}, "storage-bucket"),
    # --- IAM policies on users.
    "user-policy": (
        aws_plus(Res(rules.AWS_USER_POLICY, "bad", {"user": "prefect-host-dev", "policy": "{}"})),
        {"CKV_AWS_40"},
        "bad",
    ),
    "user-policy-attachment": (
        aws_plus(
            Res(
                rules.AWS_USER_POLICY_ATTACHMENT,
                "bad",
                {"user": "prefect-host-dev", "policyArn": "arn:aws:iam::aws:policy/x"},
            )
        ),
        {"CKV_AWS_40"},
        "bad",
    ),
    "policy-attachment-with-users": (
        aws_plus(
            Res(
                rules.AWS_POLICY_ATTACHMENT,
                "bad",
                {"users": ["prefect-host-dev"], "groups": ["S3-FullAccess"], "policyArn": "arn:aws:iam::aws:policy/x"},
            )
        ),
        {"CKV_AWS_40"},
        "bad",
    ),
    # --- GCP instance hardening.
    "gcp-vtpm-off": (
        gcp_vm(shieldedInstanceConfig={"enableSecureBoot": True, "enableVtpm": False}),
        {"CKV_GCP_39"},
        "host-vm",
    ),
    "gcp-integrity-monitoring-off": (
        gcp_vm(shieldedInstanceConfig={"enableSecureBoot": True, "enableIntegrityMonitoring": False}),
        {"CKV_GCP_39"},
        "host-vm",
    ),
    "gcp-shielded-config-missing": (gcp_vm(shieldedInstanceConfig=None), {"CKV_GCP_39", SECURE_BOOT}, "host-vm"),
    "gcp-secure-boot-off": (
        gcp_vm(
            shieldedInstanceConfig={"enableSecureBoot": False, "enableVtpm": True, "enableIntegrityMonitoring": True}
        ),
        {SECURE_BOOT},
        "host-vm",
    ),
    "gcp-secure-boot-unset": (gcp_vm(shieldedInstanceConfig={"enableVtpm": True}), {SECURE_BOOT}, "host-vm"),
    "gcp-project-ssh-keys-allowed": (gcp_metadata(**{"block-project-ssh-keys": "false"}), {"CKV_GCP_32"}, "host-vm"),
    "gcp-project-ssh-keys-unset": (gcp_metadata(**{"block-project-ssh-keys": None}), {"CKV_GCP_32"}, "host-vm"),
    "gcp-metadata-missing": (gcp_vm(metadata=None), {"CKV_GCP_32"}, "host-vm"),
    "gcp-serial-port-TRUE": (gcp_metadata(**{"serial-port-enable": "TRUE"}), {"CKV_GCP_35"}, "host-vm"),
    "gcp-serial-port-1": (gcp_metadata(**{"serial-port-enable": "1"}), {"CKV_GCP_35"}, "host-vm"),
    "gcp-serial-port-bool": (gcp_metadata(**{"serial-port-enable": True}), {"CKV_GCP_35"}, "host-vm"),
    # --- RDS for PostgreSQL.
    "rds-unencrypted": (rds(storageEncrypted=False), {"CKV_AWS_16"}, "db"),
    "rds-encryption-unset": (rds(storageEncrypted=None), {"CKV_AWS_16"}, "db"),
    "rds-public": (rds(publiclyAccessible=True), {"CKV_AWS_17"}, "db"),
    "rds-public-as-text": (rds(publiclyAccessible="true"), {"CKV_AWS_17"}, "db"),
    "rds-backups-off": (rds(backupRetentionPeriod=0), {"CKV_AWS_133"}, "db"),
    "rds-backups-unset": (rds(backupRetentionPeriod=None), {"CKV_AWS_133"}, "db"),
    "rds-backups-36-days": (rds(backupRetentionPeriod=36), {"CKV_AWS_133"}, "db"),
    "rds-no-deletion-protection": (rds(deletionProtection=False), {"CKV_AWS_293"}, "db"),
    "rds-deletion-protection-unset": (rds(deletionProtection=None), {"CKV_AWS_293"}, "db"),
    "rds-force-ssl-0": (rds_parameters({"name": "rds.force_ssl", "value": "0"}), {RDS_TLS}, "db"),
    "rds-force-ssl-missing": (rds_parameters({"name": "log_connections", "value": "1"}), {RDS_TLS}, "db"),
    "rds-without-parameter-group": (rds(parameterGroupName=None), {RDS_TLS}, "db"),
    "rds-default-parameter-group": (rds(parameterGroupName="default.postgres17"), {RDS_TLS}, "db"),
    "rds-all-wrong": (
        rds(storageEncrypted=False, publiclyAccessible=True, backupRetentionPeriod=0, deletionProtection=False),
        {"CKV_AWS_16", "CKV_AWS_17", "CKV_AWS_133", "CKV_AWS_293"},
        "db",
    ),
    # --- Cloud SQL for PostgreSQL.
    "sql-public-ip": (sql(ipConfiguration={"ipv4Enabled": True}), {"CKV_GCP_60"}, "db"),
    "sql-public-ip-unset": (sql(ipConfiguration={"ipv4Enabled": None}), {"CKV_GCP_60"}, "db"),
    "sql-ip-configuration-missing": (sql(ipConfiguration=None), {"CKV_GCP_60", "CKV_GCP_6"}, "db"),
    "sql-ssl-allows-unencrypted": (
        sql(ipConfiguration={"sslMode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED"}),
        {"CKV_GCP_6"},
        "db",
    ),
    "sql-ssl-unset": (sql(ipConfiguration={"sslMode": None}), {"CKV_GCP_6"}, "db"),
    "sql-ssl-mode-decides-over-require-ssl": (
        sql(ipConfiguration={"sslMode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED", "requireSsl": True}),
        {"CKV_GCP_6"},
        "db",
    ),
    "sql-backups-off": (sql(backupConfiguration={"enabled": False}), {"CKV_GCP_14"}, "db"),
    "sql-backups-unset": (sql(backupConfiguration=None), {"CKV_GCP_14"}, "db"),
    "sql-no-deletion-protection": (sql(deletionProtectionEnabled=False), {SQL_DELETION}, "db"),
    "sql-deletion-protection-unset": (sql(deletionProtectionEnabled=None), {SQL_DELETION}, "db"),
    "sql-settings-missing": (
        gcp_db_graph(settings=None),
        {"CKV_GCP_60", "CKV_GCP_6", "CKV_GCP_14", SQL_DELETION},
        "db",
    ),
}

COMPLIANT: dict[str, list[Res]] = {
    "aws-graph": aws_graph(),
    "gcp-graph": gcp_graph(),
    "egress-sg-rule-to-world": aws_plus(
        Res(
            rules.AWS_SECURITY_GROUP_RULE,
            "ok",
            {"type": "egress", "protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]},
        )
    ),
    "ssh-from-another-security-group": aws_plus(vpc_rule("ok", "tcp", 22, referencedSecurityGroupId="sg-9")),
    "inline-ingress-prefect-ports": set_inputs(
        aws_graph(),
        "host-sg",
        {
            "ingress": [
                {
                    "protocol": "tcp",
                    "fromPort": 4200,
                    "toPort": 4200,
                    "cidrBlocks": ["0.0.0.0/0"],
                    "ipv6CidrBlocks": ["::/0"],
                },
                {"protocol": "udp", "fromPort": 4200, "toPort": 4200, "cidrBlocks": ["0.0.0.0/0"]},
                {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": [SSH_CIDR]},
            ]
        },
    ),
    # At most a /8 of IPv4 and a /32 of IPv6 in all (overlaps merged): not the world. On a group or network of
    # their own: with the host's SSH range on the same one they would be more (broken cases above).
    "ssh-from-a-slash-8-and-a-slash-32": aws_plus(
        vpc_rule("ok-v4", "tcp", 22, group="sg-other", cidrIpv4="10.0.0.0/8"),
        vpc_rule("ok-v6", "tcp", 22, group="sg-other", cidrIpv6="2001:db8::/32"),
    ),
    "gcp-firewall-ssh-two-slash-9s-and-an-overlap": gcp_plus(
        gcp_firewall("ok", SSH_ALLOW, ["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16"], network="other")
    ),
    # Summed over one target, within the limits (overlaps merged).
    "vpc-rules-ssh-within-the-limit-on-one-group": aws_plus(
        vpc_rule("ok-1", "tcp", 22, cidrIpv4="10.0.0.0/9"),
        vpc_rule("ok-2", "tcp", 22, cidrIpv4="10.64.0.0/10"),
        vpc_rule("ok-3", "tcp", 22, cidrIpv4="10.1.0.0/16"),
        vpc_rule("ok-4", "tcp", 22, cidrIpv6="2001:db8::/33"),
        vpc_rule("ok-5", "tcp", 22, cidrIpv6="2001:db8:8000::/33"),
    ),
    "vpc-rules-ssh-slash-9s-on-two-groups": aws_plus(
        vpc_rule("ok-1", "tcp", 22, cidrIpv4="10.0.0.0/9"),
        vpc_rule("ok-2", "tcp", 22, group="sg-other", cidrIpv4="10.128.0.0/9"),
        vpc_rule("ok-3", "tcp", 22, group="sg-other", cidrIpv4="11.0.0.0/9"),
    ),
    "vpc-rules-wide-on-other-ports-and-egress": aws_plus(
        vpc_rule("ok-1", "tcp", 2222, cidrIpv4="10.0.0.0/9"),
        vpc_rule("ok-2", "udp", 22, cidrIpv4="10.128.0.0/9"),
        vpc_rule("ok-3", "tcp", 22, cidrIpv4="11.0.0.0/9"),
        Res(
            rules.AWS_SECURITY_GROUP_RULE,
            "ok-4",
            {
                "type": "egress",
                "protocol": "tcp",
                **WORLD_22,
                "cidrBlocks": ["12.0.0.0/9"],
                "securityGroupId": "sg-0123",
            },
        ),
    ),
    "gcp-firewalls-ssh-within-the-limit-on-one-network": gcp_plus(
        gcp_firewall("ok-1", SSH_ALLOW, ["10.0.0.0/9"]),
        gcp_firewall("ok-2", SSH_ALLOW, ["10.0.0.0/10", "10.64.0.0/10"]),
    ),
    "gcp-firewalls-ssh-disabled-or-on-another-network": gcp_plus(
        gcp_firewall("ok-1", SSH_ALLOW, ["10.0.0.0/9"]),
        gcp_firewall("ok-2", SSH_ALLOW, ["10.128.0.0/9"], disabled=True),
        gcp_firewall("ok-3", SSH_ALLOW, ["11.0.0.0/9"], network="other"),
    ),
    "gcp-firewall-wide-ranges-on-other-ports": gcp_plus(
        gcp_firewall("ok", [{"protocol": "tcp", "ports": ["4200"]}], ["0.0.0.0/1", "128.0.0.0/1"])
    ),
    "gcp-firewall-disabled-ssh": gcp_plus(
        gcp_firewall("ok", [{"protocol": "tcp", "ports": ["22"]}], ["0.0.0.0/0"], disabled=True)
    ),
    "gcp-firewall-two-public-ports": gcp_plus(
        gcp_firewall("ok", [{"protocol": "tcp", "ports": ["80", "443"]}], ["0.0.0.0/0", "::/0"])
    ),
    "imds-endpoint-disabled": aws_vm(metadataOptions={"httpEndpoint": "disabled", "httpTokens": "optional"}),
    "encrypted-ebs-device": aws_vm(ebsBlockDevices=[{"deviceName": "/dev/sdf", "encrypted": True}]),
    "kms-encryption": set_inputs(
        aws_graph(),
        "storage-encryption",
        {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "k"}}]},
    ),
    "inline-bucket-encryption": [
        replace(
            r,
            inputs={
                **r.inputs,
                "serverSideEncryptionConfiguration": {
                    "rule": {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}
                },
            },
        )
        if r.name == "storage-bucket"
        else r
        for r in without(aws_graph(), "storage-encryption")
    ],
    "tls-policy-as-object-single-statement": bucket_policy({"Statement": json.loads(tls_policy())["Statement"][0]}),
    "tls-policy-lists-and-aws-star": bucket_policy(
        tls_policy(Principal={"AWS": ["*"]}, Action=["s3:*"], Condition={"Bool": {"aws:SecureTransport": False}})
    ),
    "policy-attachment-to-groups": aws_plus(
        Res(rules.AWS_POLICY_ATTACHMENT, "ok", {"groups": ["S3-FullAccess"], "policyArn": "arn:aws:iam::aws:policy/x"})
    ),
    "gcp-shielded-defaults": gcp_vm(shieldedInstanceConfig={"enableSecureBoot": True}),
    "gcp-metadata-upper-case-true-and-no-serial-key": gcp_metadata(
        **{"block-project-ssh-keys": "TRUE", "serial-port-enable": None}
    ),
    "aws-db-graph": aws_db_graph(),
    "rds-force-ssl-as-a-number": rds_parameters({"name": "rds.force_ssl", "value": 1.0}),
    "rds-backups-35-days-as-a-double": rds(backupRetentionPeriod=35.0),
    # CKV2_AWS_69 judges PostgreSQL's rds.force_ssl only.
    "rds-mysql-without-parameter-group": rds(engine="mysql", parameterGroupName=None),
    "gcp-db-graph": gcp_db_graph(),
    "sql-client-certificates-required": sql(ipConfiguration={"sslMode": "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"}),
    "sql-legacy-require-ssl": sql(ipConfiguration={"sslMode": None, "requireSsl": True}),
    # A read replica has no backups of its own (as CKV_GCP_14: not judged).
    "sql-read-replica-without-backups": gcp_db_graph(
        {**SQL_SETTINGS, "backupConfiguration": {"enabled": False}}, masterInstanceName="primary"
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_graph_raises_exactly_its_rules(case):
    graph, expected, resources = BROKEN[case]
    violations = evaluate(graph)
    assert {v.policy for v in violations} == expected, violations
    assert {v.resource for v in violations} == ({resources} if isinstance(resources, str) else resources), violations
    assert all(v.message for v in violations)


@pytest.mark.parametrize("case", list(COMPLIANT), ids=list(COMPLIANT))
def test_compliant_graph_has_no_violation(case):
    assert evaluate(COMPLIANT[case]) == []


def test_every_rule_has_a_case_that_raises_it_alone():
    alone = {next(iter(expected)) for _, expected, _ in BROKEN.values() if len(expected) == 1}
    assert alone == {policy.name for policy in rules.ALL}


def test_rules_are_mandatory_with_unique_names():
    names = [policy.name for policy in rules.ALL]
    assert len(names) == len(set(names)) == 27
    assert all(policy.enforcement_level is rules.EnforcementLevel.MANDATORY for policy in rules.ALL)


def test_ssh_coverage_violation_names_the_ranges_and_the_count():
    graph = gcp_plus(gcp_firewall("bad", [{"protocol": "tcp", "ports": ["22"]}], ["0.0.0.0/1", "128.0.0.0/1"]))
    [violation] = [v for v in evaluate(graph) if v.policy == GCP_SSH]
    assert violation.resource == "bad" and "4294967296 IPv4 addresses" in violation.message
    assert "0.0.0.0/1, 128.0.0.0/1" in violation.message and "more than a /8" in violation.message


def test_violation_names_rule_resource_and_cause():
    graph = aws_plus(vpc_rule("bad", "tcp", 22, cidrIpv4="0.0.0.0/0"))
    [violation] = [v for v in evaluate(graph) if v.policy == SSH]
    assert violation == Violation(SSH, "bad", violation.message)
    assert "0.0.0.0/0" in violation.message and "22" in violation.message


def test_summed_ssh_violation_names_the_target_the_resources_and_the_ranges():
    halves = aws_plus(
        vpc_rule("bad", "tcp", 22, cidrIpv4="0.0.0.0/1"), vpc_rule("bad-2", "tcp", 22, cidrIpv4="128.0.0.0/1")
    )
    [violation] = [v for v in evaluate(halves) if v.policy == TOTAL]
    assert violation.resource == "host-sg"
    assert violation.message.startswith("SSH (tcp 22) to security group host-sg is open to 4294967296 IPv4 addresses")
    assert "3 resources (host-tcp-22, bad, bad-2)" in violation.message
    assert f"from 0.0.0.0/1, 128.0.0.0/1, {SSH_CIDR}" in violation.message and "more than a /8" in violation.message

    graph, _, _ = BROKEN["vpc-rules-ssh-three-slash-9s-on-a-group-outside-the-stack"]
    [violation] = evaluate(graph)
    assert violation.message.startswith("SSH (tcp 22) to security group sg-elsewhere is open to 25165824 IPv4")

    graph, _, _ = BROKEN["vpc-rules-ssh-ipv6-two-slash-33s-and-a-slash-48"]
    [violation] = evaluate(graph)
    assert "IPv6 addresses in all, more than a /32" in violation.message


def test_each_target_is_reported_once_per_ip_version():
    graph = gcp_plus(gcp_firewall("bad", SSH_ALLOW, ["0.0.0.0/0", "::/0"]), gcp_firewall("bad-2", SSH_ALLOW, ["::/1"]))
    totals = [v for v in evaluate(graph) if v.policy == TOTAL]
    assert [v.resource for v in totals] == ["host-net", "host-net"]
    assert "IPv4" in totals[0].message and "IPv6" in totals[1].message


# --- The pack config: allowPublicSsh (policy/allow-public-ssh.json) skips the SSH-exposure rules.
PACK_CONFIG = json.loads((REPO / "policy" / "allow-public-ssh.json").read_text())
SSH_POLICIES = {SSH, GCP_SSH, TOTAL}


DELETION_CONFIG = json.loads((REPO / "policy" / "allow-database-deletion.json").read_text())


@pytest.mark.parametrize(
    "config, flag, names",
    [
        (PACK_CONFIG, rules.ALLOW_PUBLIC_SSH, SSH_POLICIES),
        (DELETION_CONFIG, rules.ALLOW_DATABASE_DELETION, DELETION_POLICIES),
    ],
    ids=["allow-public-ssh", "allow-database-deletion"],
)
def test_each_config_file_sets_its_flag_on_every_rule_that_takes_it(config, flag, names):
    takes_it = {p.name for p in rules.ALL if p.config_schema is not None and flag in p.config_schema.properties}
    assert takes_it == set(config) == names
    assert all(properties == {flag: True} for properties in config.values())
    for policy in rules.ALL:
        if policy.name in names:
            assert policy.config_schema.properties == {
                flag: policy.config_schema.properties[flag] | {"type": "boolean", "default": False}
            }
    # No other rule takes a config.
    assert {p.name for p in rules.ALL if p.config_schema is not None} == SSH_POLICIES | DELETION_POLICIES


@pytest.mark.parametrize("case", [c for c, (_, expected, _) in BROKEN.items() if expected & DELETION_POLICIES])
def test_allow_database_deletion_skips_the_deletion_rules_and_only_them(case):
    graph, expected, _ = BROKEN[case]
    assert {v.policy for v in evaluate(graph, DELETION_CONFIG)} == expected - DELETION_POLICIES
    off = {name: {rules.ALLOW_DATABASE_DELETION: False} for name in DELETION_POLICIES}
    assert {v.policy for v in evaluate(graph, off)} == expected
    # The SSH flag does not stand them down, nor this one the SSH rules.
    assert {v.policy for v in evaluate(graph, PACK_CONFIG)} == expected - SSH_POLICIES


@pytest.mark.parametrize("case", ["rds-no-deletion-protection", "sql-no-deletion-protection"])
def test_allow_database_deletion_turns_the_violation_into_not_applicable_naming_it(case):
    graph, [name], _ = BROKEN[case]
    policy = next(p for p in rules.ALL if p.name == name)
    [db] = [r for r in graph if r.name == "db"]

    def args(config):
        return ResourceValidationArgs(db.type, unknown_checking_proxy(db.inputs), "urn", "db", None, None, config)

    with pytest.raises(_NotApplicableError) as raised:
        policy.validate(args({rules.ALLOW_DATABASE_DELETION: True}), lambda m, urn=None: pytest.fail(m))
    assert raised.value.reason.startswith("allowDatabaseDeletion is set in the policy pack config; not enforced: ")
    reported = []
    policy.validate(args({}), lambda m, urn=None: reported.append(m))
    assert len(reported) == 1 and reported[0] in raised.value.reason


def test_rds_tls_follows_the_parameter_group_through_property_dependencies():
    """In a preview a new parameter group's name is unknown: the dependency names it."""
    graph = aws_db_graph()
    params = next(r for r in graph if r.name == "db-params")
    db = next(r for r in graph if r.name == "db")

    def resource(r, props, depends_on=None):
        return PolicyResource(
            r.type, unknown_checking_proxy(props), f"urn:{r.name}", r.name, None, None, None, [], depends_on or {}
        )

    params_resource = resource(params, {**params.inputs, "name": UNKNOWN_STRING_VALUE})
    db_props = {**db.inputs, "parameterGroupName": UNKNOWN_STRING_VALUE}
    policy = next(p for p in rules.ALL if p.name == RDS_TLS)
    reported = []
    followed = resource(db, db_props, {"parameterGroupName": [params_resource]})
    policy.validate(StackValidationArgs([params_resource, followed], {}), lambda m, urn=None: reported.append(m))
    assert reported == []
    # Without the dependency the unknown name cannot be judged: the engine reports that, not a violation.
    with pytest.raises(UnknownValueError):
        policy.validate(
            StackValidationArgs([params_resource, resource(db, db_props)], {}), lambda m, urn=None: reported.append(m)
        )


def test_database_violations_name_the_setting_and_the_fix():
    messages = {v.policy: v.message for v in evaluate(BROKEN["rds-all-wrong"][0])}
    assert "storageEncrypted" in messages["CKV_AWS_16"] and "publiclyAccessible" in messages["CKV_AWS_17"]
    assert "backupRetentionPeriod is 0; set it to 1..35 days" in messages["CKV_AWS_133"]
    [tls] = evaluate(BROKEN["rds-force-ssl-0"][0])
    assert "rds.force_ssl is '0'; set it to 1" in tls.message
    [ssl] = evaluate(BROKEN["sql-ssl-allows-unencrypted"][0])
    assert "'ALLOW_UNENCRYPTED_AND_ENCRYPTED'" in ssl.message and "ENCRYPTED_ONLY" in ssl.message


@pytest.mark.parametrize("case", [c for c, (_, expected, _) in BROKEN.items() if expected & SSH_POLICIES])
def test_allow_public_ssh_skips_the_ssh_rules_and_only_them(case):
    graph, expected, _ = BROKEN[case]
    assert {v.policy for v in evaluate(graph, PACK_CONFIG)} == expected - SSH_POLICIES
    # allowPublicSsh false (the schema's default) and an enforcementLevel, the engine's own, change nothing.
    off = {name: {rules.ALLOW_PUBLIC_SSH: False, "enforcementLevel": "advisory"} for name in SSH_POLICIES}
    assert {v.policy for v in evaluate(graph, off)} == expected


def stack_args(graph: list[Res], config: dict) -> StackValidationArgs:
    resources = [
        PolicyResource(
            r.type, unknown_checking_proxy({**r.inputs, **(r.outputs or {})}), r.name, r.name, None, None, None, [], {}
        )
        for r in graph
    ]
    return StackValidationArgs(resources, config)


WORLD_SSH_ARGS = {
    SSH: lambda config: ResourceValidationArgs(
        rules.AWS_VPC_INGRESS_RULE,
        unknown_checking_proxy({"ipProtocol": "tcp", **WORLD_22, "cidrIpv4": "0.0.0.0/0"}),
        "urn",
        "bad",
        None,
        None,
        config,
    ),
    GCP_SSH: lambda config: ResourceValidationArgs(
        rules.GCP_FIREWALL,
        unknown_checking_proxy({"allows": SSH_ALLOW, "sourceRanges": ["0.0.0.0/0"]}),
        "urn",
        "bad",
        None,
        None,
        config,
    ),
    TOTAL: lambda config: stack_args(aws_plus(vpc_rule("bad", "tcp", 22, cidrIpv4="0.0.0.0/0")), config),
}


@pytest.mark.parametrize("name", sorted(SSH_POLICIES))
def test_allow_public_ssh_turns_the_violation_into_not_applicable_naming_it(name):
    policy = next(p for p in rules.ALL if p.name == name)
    reported = []
    with pytest.raises(_NotApplicableError) as raised:
        policy.validate(WORLD_SSH_ARGS[name]({rules.ALLOW_PUBLIC_SSH: True}), lambda m, urn=None: reported.append(m))
    assert reported == []
    assert raised.value.reason.startswith("allowPublicSsh is set in the policy pack config; not enforced: SSH (tcp 22)")
    assert "0.0.0.0/0" in raised.value.reason
    # Without it, the same finding is a violation.
    policy.validate(WORLD_SSH_ARGS[name]({}), lambda m, urn=None: reported.append(m))
    assert len(reported) == 1 and reported[0] in raised.value.reason


def test_ports_arrive_as_doubles_over_grpc():
    graph = aws_plus(
        Res(
            rules.AWS_VPC_INGRESS_RULE,
            "bad",
            {"ipProtocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrIpv4": "0.0.0.0/0"},
        )
    )
    assert policies(graph) == {SSH}


def test_each_broken_bucket_is_reported_by_name():
    second = [
        replace(
            r,
            name=r.name.replace("storage", "second"),
            inputs={**r.inputs, "bucket": "second-bucket"} if "bucket" in r.inputs else r.inputs,
            outputs={"id": "second-bucket", "bucket": "second-bucket"} if r.outputs else None,
        )
        for r in storage_and_access()
        if r.type.startswith("aws:s3/")
    ]
    second = set_inputs(second, "second-tls-only", {"policy": tls_policy("arn:aws:s3:::second-bucket")})
    graph = aws_graph() + without(second, "second-public-access-block")
    assert [(v.policy, v.resource) for v in evaluate(graph)] == [("CKV2_AWS_6", "second-bucket")]


def test_related_resources_match_the_mocked_bucket_id():
    # Under mocks the bucket's id may differ from its name: `bucket = bucket.id` inputs then carry the id.
    graph = [
        replace(r, outputs={"id": "mock-bucket-id"})
        if r.name == "storage-bucket"
        else replace(r, inputs={**r.inputs, "bucket": "mock-bucket-id"})
        if r.inputs.get("bucket") == BUCKET
        else r
        for r in aws_graph()
    ]
    assert evaluate(graph) == []


def test_unknown_bucket_reference_is_undecidable_not_a_violation():
    # In a preview `bucket.id` of a new bucket is unknown; without property dependencies (the engine gives
    # them, see test_pack_server) the rule cannot tell which bucket it is and says so.
    graph = set_inputs(aws_graph(), "storage-public-access-block", {"bucket": UNKNOWN_STRING_VALUE})
    with pytest.raises(UnknownValueError):
        evaluate(graph)


def test_importing_rules_starts_no_server():
    # A constructed PolicyPack would print its port and block forever: the import must return at once.
    result = subprocess.run(
        [sys.executable, "-c", "import policy.rules as r; print(len(r.ALL))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["27"]


def test_entry_point_assembles_every_rule_into_a_mandatory_pack(monkeypatch):
    import runpy

    import pulumi_policy

    packs = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: packs.append(kwargs))
    monkeypatch.delitem(sys.modules, "rules", raising=False)
    try:
        runpy.run_path(str(REPO / "policy"), run_name="__main__")
    finally:
        sys.modules.pop("rules", None)
    [pack] = packs
    assert pack["name"] == "prefect-host-security"
    assert pack["enforcement_level"] is pulumi_policy.EnforcementLevel.MANDATORY
    assert [p.name for p in pack["policies"]] == [p.name for p in rules.ALL]


def test_pack_dependencies_match_the_project_pins():
    def pins(path: Path) -> dict[str, str]:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return dict(line.split("==") for line in lines if line)

    pack, project = pins(REPO / "policy" / "requirements.txt"), pins(REPO / "requirements.txt")
    assert set(pack) == {"pulumi", "pulumi-policy"}
    assert all(project[name] == version for name, version in pack.items())
