"""The policy pack over the program's own graph, as mockstack registers it for a config.

The default configs must pass every rule; a config that opens SSH to the world (allowed only with
allowPublicSsh) must fail exactly the SSH rule, on exactly the SSH rules' resources.
"""

from __future__ import annotations

from functools import cache

import pytest

import mockstack
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


@cache
def graph(cloud: str, public_ssh: bool = False) -> tuple:
    config = {**DEFAULT_CONFIG, "prefect-host:cloud": cloud}
    if public_ssh:
        # Everything else at its most open allowed setting too, which must stay compliant.
        config |= {
            "prefect-host:sshAllowedCidrs": ["0.0.0.0/0", "::/0"],
            "prefect-host:allowPublicSsh": True,
            "prefect-host:allowedCidrs": ["0.0.0.0/0", "::/0"],
            "prefect-host:s3Access": "all",
        }
    return tuple(mockstack.run_program(config).resources)


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_default_graph_has_no_violation(cloud):
    resources = graph(cloud)
    assert CHECKED_TYPES[cloud] <= {r.type for r in resources}
    assert evaluate(resources) == []


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_public_ssh_fails_only_the_ssh_rule(cloud):
    resources = graph(cloud, public_ssh=True)
    violations = evaluate(resources)
    ssh_rules = {
        r.name
        for r in resources
        if r.type in (rules.AWS_VPC_INGRESS_RULE, rules.GCP_FIREWALL) and "-22-" in f"{r.name}-"
    }
    assert {v.policy for v in violations} == {SSH_RULE[cloud]}
    assert {v.resource for v in violations} == ssh_rules
    assert len(ssh_rules) == 2  # one rule per address family
