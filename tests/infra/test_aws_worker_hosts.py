"""The worker VMs on AWS (workerHosts): exactly these resources, hardened like the server, each with its own pinned
host key and static IP, SSH their only ingress, and the server's API ports open to each of their IPs."""

from collections import Counter

import pytest
import yaml

from infra_test_configs import AWS, SSH_FROM
from test_aws_host import EGRESS, INGRESS, public_key_of

WORKERS = {**AWS, "prefect-host:workerHosts": 2}
COMPONENT = "prefect-host:aws_worker_hosts:AwsWorkerHosts"
INSTANCE = "aws:ec2/instance:Instance"
NAMES = ["prefect-host-dev-worker-1", "prefect-host-dev-worker-2"]


def graph_key(resources) -> list[tuple]:
    """Every resource by type, name, inputs and parent."""
    return sorted((r.type, r.name, repr(sorted(r.inputs.items())), r.parent) for r in resources)


def worker_instances(run) -> dict:
    return {r.name.removesuffix("-vm"): r for r in run.of_type(INSTANCE) if "-worker-" in r.name}


def server_group(run):
    [group] = [r for r in run.of_type("aws:ec2/securityGroup:SecurityGroup") if r.name == "prefect-host-dev-sg"]
    return group


def worker_group(run):
    [group] = [r for r in run.of_type("aws:ec2/securityGroup:SecurityGroup") if r.name == "prefect-host-dev-workers-sg"]
    return group


def rules_on(run, group, type_=INGRESS) -> set[tuple]:
    return {
        (r.inputs["ipProtocol"], r.inputs.get("fromPort"), r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6"))
        for r in run.of_type(type_)
        if r.inputs["securityGroupId"] == group.id
    }


def test_two_workers_add_exactly_these_resources(program):
    added = Counter(r.type for r in program(WORKERS).resources) - Counter(r.type for r in program(AWS).resources)
    assert added == Counter(
        {
            COMPONENT: 1,
            "tls:index/privateKey:PrivateKey": 2,  # a host key each
            "aws:ec2/securityGroup:SecurityGroup": 1,  # one for all workers
            INGRESS: 1 + 2 * 2,  # SSH from sshAllowedCidrs; 443 and 4200 on the server's group per worker
            EGRESS: 2,
            "aws:ec2/keyPair:KeyPair": 1,
            INSTANCE: 2,
            "aws:ec2/eip:Eip": 2,
        }
    )


def test_zero_workers_is_the_graph_without_the_setting(program):
    zero = program({**AWS, "prefect-host:workerHosts": 0})
    assert graph_key(zero.resources) == graph_key(program(AWS).resources)
    assert zero.outputs["workerHosts"] == [] and not zero.of_type(COMPONENT)


def test_adding_workers_leaves_the_servers_resources_as_they_were(program):
    before, after = program(AWS), program(WORKERS)
    # Besides the workers' component (the stack's name, another type) and its children, the same graph.
    server = [r for r in after.resources if r.type != COMPONENT and r.parent != after.one(COMPONENT).urn]
    assert graph_key(server) == graph_key(before.resources)


def test_each_worker_is_hardened_like_the_server(program):
    run = program(WORKERS)
    server = run.one("prefect-host:aws_host:AwsHost")
    [server_vm] = [r for r in run.of_type(INSTANCE) if r.name == "prefect-host-dev-vm"]
    [worker_key_pair] = [r for r in run.of_type("aws:ec2/keyPair:KeyPair") if "-workers-" in r.name]
    [server_key_pair] = [r for r in run.of_type("aws:ec2/keyPair:KeyPair") if r.name == "prefect-host-dev-key"]
    instances = worker_instances(run)
    assert sorted(instances) == NAMES
    for name, instance in instances.items():
        i = instance.inputs
        assert i["instanceType"] == "t3.small" and i["ami"] == server_vm.inputs["ami"]
        assert i["metadataOptions"] == {
            "httpEndpoint": "enabled",
            "httpTokens": "required",
            "httpPutResponseHopLimit": 1,
        }
        assert i["rootBlockDevice"] == server_vm.inputs["rootBlockDevice"]
        assert i["rootBlockDevice"]["encrypted"] is True
        assert i["vpcSecurityGroupIds"] == [worker_group(run).id]
        assert i["keyName"] == worker_key_pair.outputs["keyName"]
        assert i["tags"] == {"Name": name, "prefect-host:stack": "dev"}
        assert instance.ignore_changes == ("ami",) and "userData" in instance.secret_inputs
    # The operator's key, as on the server.
    assert worker_key_pair.inputs["publicKey"] == server_key_pair.inputs["publicKey"]
    assert server.outputs["amiName"] == run.one(COMPONENT).outputs["amiName"]


def test_each_worker_pins_its_own_host_key_and_keeps_its_static_ip(program):
    run = program(WORKERS)
    exported = {host["name"]: host for host in run.outputs["workerHosts"]}
    assert list(exported) == NAMES
    keys = set()
    for name, instance in worker_instances(run).items():
        cloud_config = yaml.safe_load(instance.inputs["userData"])
        assert cloud_config["ssh_deletekeys"] is True
        public = cloud_config["ssh_keys"]["ed25519_public"]
        assert public_key_of(cloud_config["ssh_keys"]["ed25519_private"]) == public == exported[name]["hostPublicKey"]
        [generated] = [r for r in run.of_type("tls:index/privateKey:PrivateKey") if r.name == f"{name}-host-key"]
        assert public_key_of(generated.outputs["privateKeyOpenssh"]) == public
        [eip] = [r for r in run.of_type("aws:ec2/eip:Eip") if r.name == f"{name}-ip"]
        assert eip.inputs == {"domain": "vpc", "instance": instance.id, "tags": instance.inputs["tags"]}
        assert exported[name]["publicIp"] == eip.outputs["publicIp"]
        keys.add(public)
    assert len(keys) == 2 and run.outputs["hostPublicKey"] not in keys


@pytest.mark.parametrize(
    "ssh",
    [[SSH_FROM], ["203.0.113.7/32", "2001:db8:1::/48"]],
)
def test_workers_let_in_only_ssh_from_ssh_allowed_cidrs_and_send_anywhere(program, ssh):
    run = program({**WORKERS, "prefect-host:sshAllowedCidrs": ssh, "prefect-host:allowedCidrs": ["0.0.0.0/0", "::/0"]})
    group = worker_group(run)
    assert "ingress" not in group.inputs and "egress" not in group.inputs
    assert rules_on(run, group) == {("tcp", 22, cidr) for cidr in ssh}
    assert rules_on(run, group, EGRESS) == {("-1", None, "0.0.0.0/0"), ("-1", None, "::/0")}


@pytest.mark.parametrize("allowed", [["0.0.0.0/0"], ["198.51.100.0/24", "2001:db8::/32"]])
def test_the_server_admits_each_worker_ip_on_the_api_ports_besides_allowed_cidrs(program, allowed):
    run = program({**WORKERS, "prefect-host:allowedCidrs": allowed})
    without = program({**AWS, "prefect-host:allowedCidrs": allowed})
    ips = [host["publicIp"] for host in run.outputs["workerHosts"]]
    added = rules_on(run, server_group(run)) - rules_on(without, server_group(without))
    assert added == {("tcp", port, f"{ip}/32") for ip in ips for port in (443, 4200)}
    for rule in run.of_type(INGRESS):
        if rule.name.endswith(("-to-server-tcp-443", "-to-server-tcp-4200")):
            assert rule.inputs["toPort"] == rule.inputs["fromPort"] and "cidrIpv6" not in rule.inputs
            assert rule.parent == run.one(COMPONENT).urn


def test_worker_type_and_disk_are_their_own_with_the_amis_architecture(program):
    run = program({**WORKERS, "prefect-host:workerInstanceType": "t4g.large", "prefect-host:workerDiskSizeGb": 100})
    types = [v.args["instanceType"] for v in run.invokes if v.token == "aws:ec2/getInstanceType:getInstanceType"]
    assert types == ["t3.small", "t4g.large"]
    amis = [v.args for v in run.invokes if v.token == "aws:ec2/getAmi:getAmi"]
    assert [{f["name"]: f["values"] for f in a["filters"]}["architecture"] for a in amis] == [["x86_64"], ["arm64"]]
    for instance in worker_instances(run).values():
        assert instance.inputs["instanceType"] == "t4g.large"
        assert instance.inputs["rootBlockDevice"]["volumeSize"] == 100
    assert run.one(COMPONENT).outputs["amiName"].startswith("debian-13-arm64-")
    [server_vm] = [r for r in run.of_type(INSTANCE) if r.name == "prefect-host-dev-vm"]
    assert server_vm.inputs["instanceType"] == "t3.small" and server_vm.inputs["rootBlockDevice"]["volumeSize"] == 20
    # The same type as the server's: the server's lookups serve the workers too.
    same = program(WORKERS)
    assert [v.token for v in same.invokes].count("aws:ec2/getAmi:getAmi") == 1


def test_removing_the_last_worker_keeps_the_others_as_they_are(program):
    three, two = program({**AWS, "prefect-host:workerHosts": 3}), program(WORKERS)
    assert graph_key(r for r in three.resources if "-worker-3-" not in r.name) == graph_key(two.resources)


def test_component_outputs_are_the_real_values(program):
    run = program(WORKERS)
    component = run.one(COMPONENT)
    assert [{k: h[k] for k in ("name", "publicIp", "hostPublicKey")} for h in component.outputs["hosts"]] == (
        run.outputs["workerHosts"]
    )
    assert [h["instanceId"] for h in component.outputs["hosts"]] == [worker_instances(run)[n].id for n in NAMES]
    assert component.outputs["securityGroupId"] == worker_group(run).id
    assert all(r.parent == component.urn for r in run.resources if "-worker" in r.name)
