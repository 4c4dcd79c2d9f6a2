"""The worker VMs on GCP (workerHosts 1 or more): flow runs off the server VM.

A VPC network of their own, not the server's: Cloud SQL's private IP (database postgres) answers any address on
the server's network, and flow code runs here. On it one SSH firewall rule per address family (from
sshAllowedCidrs only, to the workers' tag); egress is the network's implied allow-all, as the server's. Per VM
its own pinned host key, a static external address, an instance hardened like the server's (gcp_host's
hardened_instance: shielded VM, project SSH keys blocked, serial port and OS Login off, the host key installed by
the startup script), and on the server's network a firewall rule that lets that address (a /32) reach the
server's API ports.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from gcp_host import add_firewall, debian_image, firewall_rules, hardened_instance
from host_keys import new_host_key
from worker_hosts import SERVER_API_PORTS, WorkerVm, host_cidr

# The workers' subnet: another range than the server's (gcp_host.SUBNET_RANGE), though the networks are not peered.
WORKER_SUBNET_RANGE = "10.43.0.0/24"


@dataclass(frozen=True)
class GcpWorkerHostsArgs:
    """What GcpWorkerHosts uses: validated settings (region and zone from gcp:zone), the operator's key from
    HostKeys, and the server's network and the tag its firewall rules target from GcpHost."""

    stack: str
    region: str
    zone: str
    names: tuple[str, ...]  # one VM per name: <prefix>-worker-1, -2, ...
    instance_type: str
    image: str
    disk_size_gb: int
    ssh_allowed_cidrs: tuple[str, ...]
    operator_public_key: pulumi.Input[str]
    server_network_id: pulumi.Input[str]
    server_target_tag: str


class GcpWorkerHosts(pulumi.ComponentResource):
    hosts: list[WorkerVm]
    network_id: pulumi.Output[str]

    def __init__(self, name: str, args: GcpWorkerHostsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:gcp_worker_hosts:GcpWorkerHosts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Logical names stay within 15 characters after the prefix (at most 40), so that the provider's auto-names
        # (`<logical name>-<7 hex>`) stay within GCP's 63.
        shared = f"{name}-workers"

        network = gcp.compute.Network(
            f"{shared}-net",
            auto_create_subnetworks=False,
            description=f"prefect-host {args.stack}: worker VMs",
            opts=child,
        )
        subnet = gcp.compute.Subnetwork(
            f"{shared}-subnet", network=network.id, region=args.region, ip_cidr_range=WORKER_SUBNET_RANGE, opts=child
        )
        for protocol, port, family, cidrs in firewall_rules((), args.ssh_allowed_cidrs):
            add_firewall(
                f"{shared}-ssh-{family.removeprefix('ip')}",
                network_id=network.id,
                protocol=protocol,
                ports=[port],
                source_ranges=cidrs,
                target_tag=shared,
                description="SSH",
                parent=self,
            )

        image = debian_image(args.image, args.instance_type)
        self.hosts = []
        for host_name in args.names:
            host_key = new_host_key(host_name, self)
            address = gcp.compute.Address(
                f"{host_name}-ip", region=args.region, address_type="EXTERNAL", network_tier="PREMIUM", opts=child
            )
            instance = hardened_instance(
                host_name,
                zone=args.zone,
                instance_type=args.instance_type,
                image=image,
                disk_size_gb=args.disk_size_gb,
                subnet_id=subnet.id,
                nat_ip=address.address,
                operator_public_key=args.operator_public_key,
                host_private_key=host_key.private_key,
                host_public_key=host_key.public_key,
                tag=shared,
                parent=self,
            )
            # The worker reaches the server at its external address, so the server sees the worker's.
            add_firewall(
                f"{host_name}-api",
                network_id=args.server_network_id,
                protocol="tcp",
                ports=list(SERVER_API_PORTS),
                source_ranges=[host_cidr(address.address)],
                target_tag=args.server_target_tag,
                description=f"Prefect API from worker VM {host_name}",
                parent=self,
            )
            self.hosts.append(WorkerVm(host_name, address.address, host_key.public_key, instance.instance_id))

        self.network_id = network.id
        self.register_outputs(
            {
                "hosts": [{**host.output(), "instanceId": host.instance_id} for host in self.hosts],
                "networkId": self.network_id,
                "image": image,
            }
        )
