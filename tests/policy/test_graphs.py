"""The policy pack over the program's own graph, as mockstack registers it for a config.

The default configs must pass every rule; a config that opens SSH wider than a /8 (allowed only with
allowPublicSsh) must fail exactly the SSH rules, on exactly the SSH rules' resources and their target, and
pass with the pack config policy/allow-public-ssh.json. With database postgres the graph passes too; with
retainData false as well it fails exactly the deletion-protection rule, and passes with
policy/allow-database-deletion.json.
"""

from __future__ import annotations

import json
from functools import cache

import pytest

import mockstack
from mockstack import REPO_ROOT
from policy import rules
from policy.rules import evaluate

DEFAULT_CONFIG = {
    "prefect-host:sshAllowedCidrs": ["203.0.113.0/24"],
    "aws:region": "eu-west-1",
    "gcp:project": "demo-project",
    "gcp:region": "europe-west1",
    "gcp:zone": "europe-west1-b",
}
# What each cloud's graph must contain for "no violation" to mean something.
CHECKED_TYPES = {
    "aws": {
        rules.AWS_VPC_INGRESS_RULE,
        rules.AWS_INSTANCE,
        *rules.AWS_BUCKETS[:1],
        rules.AWS_PUBLIC_ACCESS_BLOCK,
        rules.AWS_BUCKET_ENCRYPTION[0],
        rules.AWS_BUCKET_POLICY,
    },
    "gcp": {
        rules.GCP_FIREWALL,
        rules.GCP_INSTANCE,
        *rules.AWS_BUCKETS[:1],
        rules.AWS_PUBLIC_ACCESS_BLOCK,
        rules.AWS_BUCKET_ENCRYPTION[0],
        rules.AWS_BUCKET_POLICY,
    },
}
SSH_RULE = {"aws": "CKV_AWS_24", "gcp": "CKV_GCP_2"}
TOTAL = "prefect-host-ssh-total-per-target"
# What SSH is opened on: the security group, the network.
SSH_TARGET = {"aws": rules.AWS_SECURITY_GROUP, "gcp": rules.GCP_NETWORK}
PACK_CONFIG = json.loads((REPO_ROOT / "policy" / "allow-public-ssh.json").read_text())
DELETION_CONFIG = json.loads((REPO_ROOT / "policy" / "allow-database-deletion.json").read_text())
# What each cloud's postgres graph must contain, and the rule that judges its deletion protection.
DATABASE_TYPES = {
    "aws": {rules.AWS_RDS_INSTANCE, rules.AWS_RDS_PARAMETER_GROUP, rules.AWS_SECURITY_GROUP},
    "gcp": {rules.GCP_SQL_INSTANCE},
}
DELETION_RULE = {"aws": "CKV_AWS_293", "gcp": "prefect-host-gcp-sql-deletion-protection"}
WORLD = ("0.0.0.0/0", "::/0")
# Each within a /8, together more: infra/ registers one AWS rule per CIDR, one GCP firewall per IP version.
SLASH_9S = ("10.0.0.0/9", "10.128.0.0/9", "11.0.0.0/9")


@cache
def graph(cloud: str, ssh_cidrs: tuple[str, ...] | None = None) -> tuple:
    config = {**DEFAULT_CONFIG, "prefect-host:cloud": cloud}
    if ssh_cidrs:
        # Everything else at its most open allowed setting too, which must stay compliant.
        config |= {
            "prefect-host:sshAllowedCidrs": list(ssh_cidrs),
            "prefect-host:allowPublicSsh": True,
            "prefect-host:allowedCidrs": ["0.0.0.0/0", "::/0"],
            "prefect-host:s3Access": "all",
        }
    return tuple(mockstack.run_program(config).resources)


def ssh_rules(resources) -> set[str]:
    return {
        r.name
        for r in resources
        if r.type in (rules.AWS_VPC_INGRESS_RULE, rules.GCP_FIREWALL) and "-22-" in f"{r.name}-"
    }


def ssh_target(cloud: str, resources) -> str:
    [target] = [r.name for r in resources if r.type == SSH_TARGET[cloud]]
    return target


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_default_graph_has_no_violation(cloud):
    resources = graph(cloud)
    assert CHECKED_TYPES[cloud] <= {r.type for r in resources}
    assert evaluate(resources) == []


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_public_ssh_fails_only_the_ssh_rule(cloud):
    resources = graph(cloud, WORLD)
    violations = evaluate(resources)
    assert {v.policy for v in violations} == {SSH_RULE[cloud]}
    assert {v.resource for v in violations} == ssh_rules(resources)
    assert len(ssh_rules(resources)) == 2  # one rule per address family, each alone on its family


def test_ssh_split_over_rules_that_each_pass_fails_the_sum_on_the_security_group():
    resources = graph("aws", SLASH_9S)
    assert len(ssh_rules(resources)) == 3
    [violation] = evaluate(resources)
    assert (violation.policy, violation.resource) == (TOTAL, ssh_target("aws", resources))
    assert "25165824 IPv4 addresses in all" in violation.message


def test_ssh_ranges_in_one_firewall_fail_the_firewall_alone():
    resources = graph("gcp", SLASH_9S)
    [violation] = evaluate(resources)
    assert (violation.policy, violation.resource) == ("CKV_GCP_2", "prefect-host-dev-tcp-22-ipv4")


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
@pytest.mark.parametrize("ssh_cidrs", [WORLD, SLASH_9S], ids=["world", "three-slash-9s"])
def test_allow_public_ssh_pack_config_passes_what_allow_public_ssh_opens(cloud, ssh_cidrs):
    assert evaluate(graph(cloud, ssh_cidrs), PACK_CONFIG) == []


@cache
def postgres_graph(cloud: str, retain_data: bool = True) -> tuple:
    config = {
        **DEFAULT_CONFIG,
        "prefect-host:cloud": cloud,
        "prefect-host:database": "postgres",
        "prefect-host:retainData": retain_data,
    }
    return tuple(mockstack.run_program(config).resources)


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_postgres_graph_has_no_violation(cloud):
    resources = postgres_graph(cloud)
    assert CHECKED_TYPES[cloud] | DATABASE_TYPES[cloud] <= {r.type for r in resources}
    assert evaluate(resources) == []


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_a_disposable_database_fails_only_deletion_protection_unless_the_pack_is_told(cloud):
    resources = postgres_graph(cloud, retain_data=False)
    violations = evaluate(resources)
    assert [(v.policy, v.resource) for v in violations] == [(DELETION_RULE[cloud], "prefect-host-dev-db")]
    assert evaluate(resources, DELETION_CONFIG) == []
