"""The worker VMs on GCP (workerHosts): exactly these resources on a network of their own, hardened like the
server, each with its own pinned host key and static address, SSH their only ingress, and the server's API ports
open to each of their addresses."""

from collections import Counter

import pytest

from infra_test_configs import GCP, SSH_FROM
from test_aws_host import public_key_of
from test_aws_worker_hosts import graph_key

WORKERS = {**GCP, "prefect-host:workerHosts": 2}
COMPONENT = "prefect-host:gcp_worker_hosts:GcpWorkerHosts"
FIREWALL = "gcp:compute/firewall:Firewall"
INSTANCE = "gcp:compute/instance:Instance"
NETWORK = "gcp:compute/network:Network"
NAMES = ["prefect-host-dev-worker-1", "prefect-host-dev-worker-2"]


def named(run, type_: str, name: str):
    [found] = [r for r in run.of_type(type_) if r.name == name]
    return found


def worker_instances(run) -> dict:
    return {r.name.removesuffix("-vm"): r for r in run.of_type(INSTANCE) if "-worker-" in r.name}


def firewalls_on(run, network) -> list:
    return [r for r in run.of_type(FIREWALL) if r.inputs["network"] == network.id]


def test_two_workers_add_exactly_these_resources(program):
    run = program(WORKERS)
    added = Counter(r.type for r in run.resources) - Counter(r.type for r in program(GCP).resources)
    assert added == Counter(
        {
            COMPONENT: 1,
            "tls:index/privateKey:PrivateKey": 2,  # a host key each
            NETWORK: 1,  # one for all workers
            "gcp:compute/subnetwork:Subnetwork": 1,
            FIREWALL: 1 + 2,  # SSH from sshAllowedCidrs (IPv4 only here); the server's API ports per worker
            "gcp:compute/address:Address": 2,
            INSTANCE: 2,
        }
    )
    # Still no lookups: the image is a debian-cloud family.
    assert run.invokes == []


def test_zero_workers_is_the_graph_without_the_setting(program):
    zero = program({**GCP, "prefect-host:workerHosts": 0})
    assert graph_key(zero.resources) == graph_key(program(GCP).resources)
    assert zero.outputs["workerHosts"] == [] and not zero.of_type(COMPONENT)


def test_adding_workers_leaves_the_servers_resources_as_they_were(program):
    before, after = program(GCP), program(WORKERS)
    component = after.one(COMPONENT)
    server = [r for r in after.resources if r.type != COMPONENT and r.parent != component.urn]
    assert graph_key(server) == graph_key(before.resources)


def test_each_worker_is_hardened_like_the_server(program):
    run = program(WORKERS)
    server_vm = named(run, INSTANCE, "prefect-host-dev-vm")
    subnet = named(run, "gcp:compute/subnetwork:Subnetwork", "prefect-host-dev-workers-subnet")
    instances = worker_instances(run)
    assert sorted(instances) == NAMES
    for name, instance in instances.items():
        i = instance.inputs
        assert (i["machineType"], i["zone"]) == ("e2-small", "europe-west1-b")
        assert i["shieldedInstanceConfig"] == {
            "enableSecureBoot": True,
            "enableVtpm": True,
            "enableIntegrityMonitoring": True,
        }
        assert i["bootDisk"] == server_vm.inputs["bootDisk"]
        metadata = i["metadata"]
        assert "metadata" in instance.secret_inputs
        assert set(metadata) == set(server_vm.inputs["metadata"])
        assert (metadata["block-project-ssh-keys"], metadata["serial-port-enable"], metadata["enable-oslogin"]) == (
            "true",
            "false",
            "FALSE",
        )
        # The operator's login key, as on the server.
        assert metadata["ssh-keys"] == server_vm.inputs["metadata"]["ssh-keys"]
        assert "serviceAccount" not in i and i["tags"] == ["prefect-host-dev-workers"]
        address = named(run, "gcp:compute/address:Address", f"{name}-ip")
        assert address.inputs == {"region": "europe-west1", "addressType": "EXTERNAL", "networkTier": "PREMIUM"}
        assert i["networkInterfaces"] == [
            {
                "subnetwork": subnet.id,
                "accessConfigs": [{"natIp": address.outputs["address"], "networkTier": "PREMIUM"}],
            }
        ]


def test_each_worker_pins_its_own_host_key_and_keeps_its_static_address(program):
    run = program(WORKERS)
    exported = {host["name"]: host for host in run.outputs["workerHosts"]}
    assert list(exported) == NAMES
    keys = set()
    for name, instance in worker_instances(run).items():
        script = instance.inputs["metadata"]["startup-script"]
        [generated] = [r for r in run.of_type("tls:index/privateKey:PrivateKey") if r.name == f"{name}-host-key"]
        private = generated.outputs["privateKeyOpenssh"].strip()
        public = public_key_of(private)
        assert script.startswith("#!/bin/sh\n") and private in script and f"'{public}'" in script
        assert exported[name]["hostPublicKey"] == public
        assert exported[name]["publicIp"] == named(run, "gcp:compute/address:Address", f"{name}-ip").outputs["address"]
        keys.add(public)
    assert len(keys) == 2 and run.outputs["hostPublicKey"] not in keys


def test_workers_have_a_network_of_their_own_with_ssh_only(program):
    """Not the server's network, where Cloud SQL's private IP answers any address: flow code runs on the workers."""
    ssh = [SSH_FROM, "2001:db8:1::/48"]
    run = program({**WORKERS, "prefect-host:sshAllowedCidrs": ssh, "prefect-host:database": "postgres"})
    network = named(run, NETWORK, "prefect-host-dev-workers-net")
    assert network.inputs["autoCreateSubnetworks"] is False
    subnet = named(run, "gcp:compute/subnetwork:Subnetwork", "prefect-host-dev-workers-subnet")
    assert (subnet.inputs["network"], subnet.inputs["ipCidrRange"]) == (network.id, "10.43.0.0/24")
    rules = {
        (
            r.inputs["direction"],
            tuple(r.inputs["targetTags"]),
            a["protocol"],
            tuple(a["ports"]),
            tuple(r.inputs["sourceRanges"]),
        )
        for r in firewalls_on(run, network)
        for a in r.inputs["allows"]
    }
    tag = ("prefect-host-dev-workers",)
    assert rules == {
        ("INGRESS", tag, "tcp", ("22",), (SSH_FROM,)),
        ("INGRESS", tag, "tcp", ("22",), ("2001:db8:1::/48",)),
    }
    # Cloud SQL is peered with the server's network only.
    [peering] = run.of_type("gcp:servicenetworking/connection:Connection")
    assert peering.inputs["network"] == named(run, NETWORK, "prefect-host-dev-net").id


@pytest.mark.parametrize("allowed", [["0.0.0.0/0"], ["198.51.100.0/24"]])
def test_the_server_admits_each_worker_address_on_the_api_ports_besides_allowed_cidrs(program, allowed):
    run = program({**WORKERS, "prefect-host:allowedCidrs": allowed})
    server_network = named(run, NETWORK, "prefect-host-dev-net")
    ips = [host["publicIp"] for host in run.outputs["workerHosts"]]
    worker_rules = [r for r in firewalls_on(run, server_network) if r.parent == run.one(COMPONENT).urn]
    assert sorted((r.name, tuple(r.inputs["sourceRanges"])) for r in worker_rules) == [
        (f"{name}-api", (f"{ip}/32",)) for name, ip in zip(NAMES, ips, strict=True)
    ]
    for rule in worker_rules:
        assert rule.inputs["direction"] == "INGRESS" and rule.inputs["targetTags"] == ["prefect-host-dev"]
        assert rule.inputs["allows"] == [{"protocol": "tcp", "ports": ["443", "4200"]}]
    # The server's own rules are those without workers.
    own = {r.name: r.inputs for r in firewalls_on(run, server_network) if r not in worker_rules}
    without = program({**GCP, "prefect-host:allowedCidrs": allowed})
    assert own == {r.name: r.inputs for r in without.of_type(FIREWALL)}


@pytest.mark.parametrize(
    "machine_type, family, disk_type",
    [
        ("t2a-standard-2", "debian-13-trixie-arm64", "pd-balanced"),
        ("n4-standard-4", "debian-13-trixie", "hyperdisk-balanced"),
    ],
)
def test_worker_type_and_disk_are_their_own(program, machine_type, family, disk_type):
    run = program({**WORKERS, "prefect-host:workerInstanceType": machine_type, "prefect-host:workerDiskSizeGb": 200})
    for instance in worker_instances(run).values():
        assert instance.inputs["machineType"] == machine_type
        assert instance.inputs["bootDisk"]["initializeParams"] == {
            "image": f"projects/debian-cloud/global/images/family/{family}",
            "size": 200,
            "type": disk_type,
        }
    server = named(run, INSTANCE, "prefect-host-dev-vm").inputs
    assert (server["machineType"], server["bootDisk"]["initializeParams"]["size"]) == ("e2-small", 20)


def test_provider_names_stay_within_gcps_63_characters_for_the_longest_stack_and_20_workers(program):
    run = program({**GCP, "prefect-host:workerHosts": 20}, stack="a" * 80)
    names = [r.outputs["name"] for r in run.resources if r.type.startswith("gcp:compute/")]
    assert len(names) == 1 + 1 + 5 + 1 + 1 + 1 + 1 + 1 + 20 * 3  # server's, workers' shared, per worker
    assert max(len(name) for name in names) <= 63
    assert len(run.outputs["workerHosts"]) == 20


def test_component_outputs_are_the_real_values(program):
    run = program(WORKERS)
    component = run.one(COMPONENT)
    assert [{k: h[k] for k in ("name", "publicIp", "hostPublicKey")} for h in component.outputs["hosts"]] == (
        run.outputs["workerHosts"]
    )
    instances = worker_instances(run)
    assert [h["instanceId"] for h in component.outputs["hosts"]] == [instances[n].outputs["instanceId"] for n in NAMES]
    assert component.outputs["networkId"] == named(run, NETWORK, "prefect-host-dev-workers-net").id
    assert all(r.parent == component.urn for r in run.resources if "-worker" in r.name)
