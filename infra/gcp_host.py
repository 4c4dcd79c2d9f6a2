"""The VM on GCP: its own VPC network, firewall rules, static address, hardened Debian instance."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

import first_boot
from host_keys import SSH_USER
from stack_config import StackConfigError

# Arm machine families on Compute Engine (Ampere Altra T2A, Google Axion C4A); every other family
# is x86_64. A table, because the provider has no lookup that reports a machine type's architecture.
ARM_MACHINE_FAMILIES = ("t2a", "c4a")
# Families whose boot disk must be Hyperdisk; the others get a Persistent Disk (balanced).
HYPERDISK_MACHINE_FAMILIES = ("c4", "c4a", "c4d", "n4", "n4d")
DEBIAN_IMAGE_FAMILIES = {"debian-13": "debian-13-trixie", "debian-12": "debian-12-bookworm"}
SUBNET_RANGE = "10.42.0.0/24"


@dataclass(frozen=True)
class GcpHostArgs:
    """What GcpHost uses: validated settings (region and zone from gcp:zone) and the keys from HostKeys."""

    stack: str
    region: str
    zone: str
    instance_type: str
    image: str
    disk_size_gb: int
    allowed_cidrs: tuple[str, ...]
    ssh_allowed_cidrs: tuple[str, ...]
    operator_public_key: pulumi.Input[str]
    host_private_key: pulumi.Input[str]
    host_public_key: pulumi.Input[str]


def machine_family(machine_type: str) -> str:
    return machine_type.split("-", 1)[0]


def debian_image(image: str, machine_type: str) -> str:
    """The image family path in debian-cloud. A family, not a looked-up image, because the
    instance keeps the same input when Debian publishes a newer image and is not replaced."""
    suffix = "-arm64" if machine_family(machine_type) in ARM_MACHINE_FAMILIES else ""
    return f"projects/debian-cloud/global/images/family/{DEBIAN_IMAGE_FAMILIES[image]}{suffix}"


def machine_vcpus(machine_type: str, zone: str) -> int:
    """The machine type's vCPUs as Compute Engine reports them in the zone (`gcp.compute.get_machine_types`); a
    type the zone does not offer fails here, before any resource is registered."""
    found = gcp.compute.get_machine_types(filter=f'name = "{machine_type}"', zone=zone).machine_types
    matching = [m.guest_cpus for m in found if m.name == machine_type]
    if not matching:
        raise StackConfigError(
            f'Config prefect-host:instanceType = "{machine_type}" is invalid; allowed: a machine type that zone '
            f"{zone} offers (gcloud compute machine-types list --zones {zone})."
        )
    return matching[0]


def boot_disk_type(machine_type: str) -> str:
    return "hyperdisk-balanced" if machine_family(machine_type) in HYPERDISK_MACHINE_FAMILIES else "pd-balanced"


def firewall_rules(
    allowed_cidrs: tuple[str, ...], ssh_allowed_cidrs: tuple[str, ...]
) -> list[tuple[str, int, str, list[str]]]:
    """(protocol, port, ipv4|ipv6, CIDRs): one rule per port, protocol and address family (a GCP
    firewall rule cannot mix IPv4 and IPv6 source ranges)."""
    rules = []
    for protocol, port, cidrs in (
        ("tcp", 80, allowed_cidrs),
        ("tcp", 443, allowed_cidrs),
        ("tcp", 4200, allowed_cidrs),
        ("udp", 4200, allowed_cidrs),
        ("tcp", 22, ssh_allowed_cidrs),
    ):
        for version in (4, 6):
            family = [c for c in cidrs if ipaddress.ip_network(c).version == version]
            if family:
                rules.append((protocol, port, f"ipv{version}", family))
    return rules


def add_firewall(
    name: str,
    *,
    network_id: pulumi.Input[str],
    protocol: str,
    ports: list[int],
    source_ranges: pulumi.Input[list[str]],
    target_tag: str,
    description: str,
    parent: pulumi.Resource,
) -> gcp.compute.Firewall:
    """An INGRESS firewall rule letting `source_ranges` reach `ports` of the VMs tagged `target_tag` only."""
    return gcp.compute.Firewall(
        name,
        network=network_id,
        direction="INGRESS",
        allows=[{"protocol": protocol, "ports": [str(port) for port in ports]}],
        source_ranges=source_ranges,
        target_tags=[target_tag],
        description=description,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def hardened_instance(
    name: str,
    *,
    zone: str,
    instance_type: str,
    image: str,
    disk_size_gb: int,
    subnet_id: pulumi.Input[str],
    nat_ip: pulumi.Input[str],
    operator_public_key: pulumi.Input[str],
    host_private_key: pulumi.Input[str],
    host_public_key: pulumi.Input[str],
    tag: str,
    parent: pulumi.Resource,
) -> gcp.compute.Instance:
    """`<name>-vm`: a shielded VM (secure boot, vTPM, integrity monitoring) from a debian-cloud image family, project
    SSH keys blocked, serial port and OS Login off, the operator's key in `ssh-keys`, and a startup script that
    installs the pinned SSH host key (first_boot.startup_script). The server VM and every worker VM."""
    host_key_pair = pulumi.Output.all(host_private_key, host_public_key)
    startup_script = pulumi.Output.secret(host_key_pair.apply(lambda keys: first_boot.startup_script(*keys)))
    return gcp.compute.Instance(
        f"{name}-vm",
        zone=zone,
        machine_type=instance_type,
        boot_disk={
            "auto_delete": True,
            "initialize_params": {
                "image": image,
                "size": disk_size_gb,
                "type": boot_disk_type(instance_type),
            },
        },
        network_interfaces=[
            {
                "subnetwork": subnet_id,
                "access_configs": [{"nat_ip": nat_ip, "network_tier": "PREMIUM"}],
            }
        ],
        shielded_instance_config={
            "enable_secure_boot": True,
            "enable_vtpm": True,
            "enable_integrity_monitoring": True,
        },
        metadata={
            "block-project-ssh-keys": "true",
            "serial-port-enable": "false",
            # The bootstrap logs in with the `ssh-keys` entry; OS Login would ignore it. (An
            # organisation policy that enforces OS Login still wins: see the README.)
            "enable-oslogin": "FALSE",
            # google-guest-agent creates this user with passwordless sudo from the key.
            "ssh-keys": pulumi.Output.from_input(operator_public_key).apply(lambda key: f"{SSH_USER}:{key}"),
            "startup-script": startup_script,
        },
        tags=[tag],
        # A machine type change stops and starts the VM instead of failing.
        allow_stopping_for_update=True,
        opts=pulumi.ResourceOptions(parent=parent),
    )


class GcpHost(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    network_id: pulumi.Output[str]  # the stack's own VPC network: the database's private IP is on it
    target_tag: str

    def __init__(self, name: str, args: GcpHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:gcp_host:GcpHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # A network of its own: the project's `default` network carries default-allow-ssh from
        # 0.0.0.0/0 (and RDP, ICMP), which would undo sshAllowedCidrs.
        network = gcp.compute.Network(
            f"{name}-net", auto_create_subnetworks=False, description=f"prefect-host {args.stack}", opts=child
        )
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet", network=network.id, region=args.region, ip_cidr_range=SUBNET_RANGE, opts=child
        )
        for protocol, port, family, cidrs in firewall_rules(args.allowed_cidrs, args.ssh_allowed_cidrs):
            add_firewall(
                f"{name}-{protocol}-{port}-{family}",
                network_id=network.id,
                protocol=protocol,
                ports=[port],
                source_ranges=cidrs,
                target_tag=name,
                description="SSH" if port == 22 else "Prefect server",
                parent=self,
            )
        address = gcp.compute.Address(
            f"{name}-ip", region=args.region, address_type="EXTERNAL", network_tier="PREMIUM", opts=child
        )
        image = debian_image(args.image, args.instance_type)
        instance = hardened_instance(
            name,
            zone=args.zone,
            instance_type=args.instance_type,
            image=image,
            disk_size_gb=args.disk_size_gb,
            subnet_id=subnet.id,
            nat_ip=address.address,
            operator_public_key=args.operator_public_key,
            host_private_key=args.host_private_key,
            host_public_key=args.host_public_key,
            tag=name,
            parent=self,
        )

        self.public_ip = address.address
        self.instance_id = instance.instance_id
        self.network_id = network.id
        # The network tag the firewall rules target: another component's rule for this VM uses it (GcpWorkerHosts').
        self.target_tag = name
        self.register_outputs(
            {"publicIp": self.public_ip, "instanceId": self.instance_id, "networkId": self.network_id, "image": image}
        )
