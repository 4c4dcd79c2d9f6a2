"""The policy pack over the program's graph with worker VMs (workerHosts 2), as mockstack registers it.

The workers are judged by the rules the server is judged by (they key on resource types): the graph passes on both
clouds, and a worker VM broken in one way fails exactly the rule for it, on exactly that resource. Their own
security group or network is a target of its own for the summed SSH rule. And the server's rules that let a
worker's address in, whose source is unknown in a preview (the address is allocated then), leave every rule
decidable there: the rules read a source range only where protocol and ports make it matter.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

import mockstack
from policy import rules
from policy.rules import evaluate

CONFIG = {
    "prefect-host:sshAllowedCidrs": ["203.0.113.0/24"],
    "prefect-host:workerHosts": 2,
    "aws:region": "eu-west-1",
    "gcp:project": "demo-project",
    "gcp:zone": "europe-west1-b",
}
WORKER_VM = "prefect-host-dev-worker-2-vm"
# Where each cloud lets SSH into the workers, and what that SSH is summed on.
WORKER_SSH = {"aws": "prefect-host-dev-workers-tcp-22-203-0-113-0-24", "gcp": "prefect-host-dev-workers-ssh-v4"}
WORKER_TARGET = {"aws": "prefect-host-dev-workers-sg", "gcp": "prefect-host-dev-workers-net"}
SSH_RULE = {"aws": "CKV_AWS_24", "gcp": "CKV_GCP_2"}
TOTAL = "prefect-host-ssh-total-per-target"
PORTS = "prefect-host-public-ports-only"
SLASH_9S = ("10.0.0.0/9", "10.128.0.0/9", "11.0.0.0/9")


@cache
def graph(cloud: str) -> tuple[mockstack.MockResource, ...]:
    return tuple(mockstack.run_program({**CONFIG, "prefect-host:cloud": cloud}).resources)


def named(resources, name: str) -> mockstack.MockResource:
    [found] = [r for r in resources if r.name == name]
    return found


def _with(resource, name: str | None = None, **inputs):
    """The resource with changed inputs (a key mapped to None is removed), in its outputs too: the mocked provider's
    outputs repeat the inputs, and the stack rules read outputs."""

    def merged(props: dict) -> dict:
        return {k: v for k, v in {**props, **inputs}.items() if v is not None}

    renamed = {} if name is None else {"name": name, "urn": resource.urn.replace(resource.name, name)}
    return replace(resource, inputs=merged(resource.inputs), outputs=merged(resource.outputs), **renamed)


def changed(resources, name: str, **inputs) -> list:
    """The graph with the named resource's inputs changed."""
    named(resources, name)
    return [_with(r, **inputs) if r.name == name else r for r in resources]


def added(resources, template: str, name: str, **inputs) -> list:
    """The graph plus a copy of the template resource under another name, with changed inputs."""
    return [*resources, _with(named(resources, template), name, **inputs)]


def found(resources, config=None) -> set[tuple[str, str]]:
    return {(v.policy, v.resource) for v in evaluate(resources, config)}


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_the_graph_with_worker_vms_has_no_violation(cloud):
    resources = graph(cloud)
    instance = rules.AWS_INSTANCE if cloud == "aws" else rules.GCP_INSTANCE
    assert len([r for r in resources if r.type == instance]) == 3
    assert evaluate(resources) == []


def test_an_aws_worker_without_imdsv2_is_flagged():
    resources = changed(graph("aws"), WORKER_VM, metadataOptions={"httpEndpoint": "enabled", "httpTokens": "optional"})
    assert found(resources) == {("CKV_AWS_79", WORKER_VM)}
    without_options = changed(graph("aws"), WORKER_VM, metadataOptions=None)
    assert found(without_options) == {("CKV_AWS_79", WORKER_VM)}


def test_an_aws_worker_with_an_unencrypted_disk_is_flagged():
    vm = named(graph("aws"), WORKER_VM)
    resources = changed(graph("aws"), WORKER_VM, rootBlockDevice={**vm.inputs["rootBlockDevice"], "encrypted": False})
    assert found(resources) == {("CKV_AWS_8", WORKER_VM)}
    assert found(changed(graph("aws"), WORKER_VM, rootBlockDevice=None)) == {("CKV_AWS_8", WORKER_VM)}


@pytest.mark.parametrize(
    "cloud, inputs, policy",
    [
        ("aws", {"fromPort": 5432, "toPort": 5432, "cidrIpv4": "0.0.0.0/0"}, PORTS),
        ("aws", {"ipProtocol": "-1", "cidrIpv4": None, "cidrIpv6": "::/0"}, PORTS),
        ("gcp", {"allows": [{"protocol": "tcp", "ports": ["8080"]}], "sourceRanges": ["0.0.0.0/0"]}, PORTS),
        ("gcp", {"allows": [{"protocol": "all"}], "sourceRanges": ["0.0.0.0/0"]}, PORTS),
    ],
    ids=["aws-5432", "aws-all-ipv6", "gcp-8080", "gcp-all"],
)
def test_a_worker_open_to_the_world_beyond_ssh_is_flagged(cloud, inputs, policy):
    resources = added(graph(cloud), WORKER_SSH[cloud], "prefect-host-dev-workers-bad", **inputs)
    violations = found(resources)
    assert (policy, "prefect-host-dev-workers-bad") in violations
    # Only that rule; "all" from the world also opens SSH, which the SSH rules report.
    assert {resource for _, resource in violations} <= {"prefect-host-dev-workers-bad", WORKER_TARGET[cloud]}


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_worker_ssh_from_the_world_is_flagged_on_the_workers(cloud):
    source = {"cidrIpv4": "0.0.0.0/0"} if cloud == "aws" else {"sourceRanges": ["0.0.0.0/0"]}
    resources = changed(graph(cloud), WORKER_SSH[cloud], **source)
    expected = {(SSH_RULE[cloud], WORKER_SSH[cloud])}
    assert found(resources) == expected
    # The stack's allowPublicSsh pack config lets it pass, as for the server.
    assert evaluate(resources, {name: {"allowPublicSsh": True} for name in (SSH_RULE[cloud], TOTAL)}) == []


def test_worker_ssh_split_over_rules_is_summed_on_the_workers_security_group():
    resources = graph("aws")
    for i, cidr in enumerate(SLASH_9S):
        resources = added(resources, WORKER_SSH["aws"], f"prefect-host-dev-workers-tcp-22-bad-{i}", cidrIpv4=cidr)
    [violation] = evaluate(resources)
    assert (violation.policy, violation.resource) == (TOTAL, WORKER_TARGET["aws"])
    assert (
        "to security group prefect-host-dev-workers-sg is open to 25166080 IPv4 addresses in all" in violation.message
    )


def test_worker_ssh_split_over_firewalls_is_summed_on_the_workers_network():
    resources = graph("gcp")
    for i, cidr in enumerate(SLASH_9S):
        resources = added(resources, WORKER_SSH["gcp"], f"prefect-host-dev-workers-bad-{i}", sourceRanges=[cidr])
    [violation] = evaluate(resources)
    assert (violation.policy, violation.resource) == (TOTAL, WORKER_TARGET["gcp"])


@pytest.mark.parametrize(
    "change, policy",
    [
        ({"enableSecureBoot": False}, "prefect-host-gcp-secure-boot"),
        ({"enableVtpm": False}, "CKV_GCP_39"),
        ({"enableIntegrityMonitoring": False}, "CKV_GCP_39"),
    ],
)
def test_a_gcp_worker_that_is_not_a_shielded_vm_is_flagged(change, policy):
    vm = named(graph("gcp"), WORKER_VM)
    config = {**vm.inputs["shieldedInstanceConfig"], **change}
    assert found(changed(graph("gcp"), WORKER_VM, shieldedInstanceConfig=config)) == {(policy, WORKER_VM)}


@pytest.mark.parametrize(
    "change, policy",
    [({"block-project-ssh-keys": "false"}, "CKV_GCP_32"), ({"serial-port-enable": "true"}, "CKV_GCP_35")],
)
def test_a_gcp_worker_with_project_keys_or_the_serial_port_is_flagged(change, policy):
    vm = named(graph("gcp"), WORKER_VM)
    metadata = {**vm.inputs["metadata"], **change}
    assert found(changed(graph("gcp"), WORKER_VM, metadata=metadata)) == {(policy, WORKER_VM)}


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_the_servers_rules_for_worker_addresses_stay_decidable_in_a_preview(cloud):
    """In a preview a new address is unknown, and so is the /32 the server lets in. The rules judge those rules by
    their ports (443 and 4200: no SSH, nothing beyond the public ports) and never read the unknown source."""
    resources = list(graph(cloud))
    api_rules = [r.name for r in resources if r.name.endswith(("-to-server-tcp-443", "-to-server-tcp-4200", "-api"))]
    assert len(api_rules) == (4 if cloud == "aws" else 2)
    source = {"cidrIpv4": UNKNOWN_STRING_VALUE} if cloud == "aws" else {"sourceRanges": UNKNOWN_STRING_VALUE}
    for name in api_rules:
        resources = changed(resources, name, **source)
    assert evaluate(resources) == []
    # An unknown SSH source is another matter: no rule can judge it, and says so (the engine: "can't run policy").
    with pytest.raises(UnknownValueError):
        evaluate(changed(resources, WORKER_SSH[cloud], **source))
