"""The VM on AWS: security group, Debian AMI, key pair, hardened instance, Elastic IP."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

import first_boot
from stack_config import StackConfigError

# Debian's official AWS account (https://wiki.debian.org/Cloud/AmazonEC2Image).
DEBIAN_AMI_OWNER = "136693071363"
# EC2 architecture names -> the names in Debian's AMI names (debian-13-amd64-20250814-2204).
DEBIAN_ARCHITECTURES = {"x86_64": "amd64", "arm64": "arm64"}


@dataclass(frozen=True)
class InstanceTypeInfo:
    """What the provider reports about an EC2 instance type: its architectures and vCPUs."""

    name: str
    architectures: tuple[str, ...]
    vcpus: int


@dataclass(frozen=True)
class DebianAmi:
    id: str
    name: str
    architecture: str


@dataclass(frozen=True)
class AwsHostArgs:
    """What AwsHost uses: validated settings, the AMI found before any resource, and the keys from HostKeys."""

    stack: str
    instance_type: str
    disk_size_gb: int
    allowed_cidrs: tuple[str, ...]
    ssh_allowed_cidrs: tuple[str, ...]
    ami: DebianAmi
    operator_public_key: pulumi.Input[str]
    host_private_key: pulumi.Input[str]
    host_public_key: pulumi.Input[str]


def describe_instance_type(instance_type: str) -> InstanceTypeInfo:
    """The instance type as the provider knows it (`aws.ec2.get_instance_type`), not from a table of
    instance families, so new families work and an unknown type fails here, before any resource
    is registered."""
    found = aws.ec2.get_instance_type(instance_type=instance_type)
    return InstanceTypeInfo(
        name=instance_type, architectures=tuple(found.supported_architectures), vcpus=found.default_vcpus
    )


def find_debian_ami(instance_type: InstanceTypeInfo, image: str, key: str = "prefect-host:instanceType") -> DebianAmi:
    """The newest Debian AMI for the image (debian-13 or debian-12) and the instance type's architecture; `key` is
    the setting that chose the type (instanceType, or workerInstanceType for the worker VMs)."""
    supported = instance_type.architectures
    architectures = [a for a in DEBIAN_ARCHITECTURES if a in supported]
    if not architectures:
        raise StackConfigError(
            f'Config {key} = "{instance_type.name}" is invalid; allowed: an instance type '
            f"with an x86_64 or arm64 architecture (it supports {', '.join(supported)})."
        )
    architecture = architectures[0]
    release = image.removeprefix("debian-")
    ami = aws.ec2.get_ami(
        owners=[DEBIAN_AMI_OWNER],
        most_recent=True,
        filters=[
            {"name": "name", "values": [f"debian-{release}-{DEBIAN_ARCHITECTURES[architecture]}-*"]},
            {"name": "architecture", "values": [architecture]},
            {"name": "virtualization-type", "values": ["hvm"]},
            {"name": "root-device-type", "values": ["ebs"]},
        ],
    )
    return DebianAmi(id=ami.id, name=ami.name, architecture=architecture)


def ingress_rules(allowed_cidrs: tuple[str, ...], ssh_allowed_cidrs: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(protocol, port, cidr) for every rule: the Prefect ports from allowedCidrs, SSH from sshAllowedCidrs."""
    rules = [
        (protocol, port, cidr)
        for protocol, port in (("tcp", 80), ("tcp", 443), ("tcp", 4200), ("udp", 4200))
        for cidr in allowed_cidrs
    ]
    rules += [("tcp", 22, cidr) for cidr in ssh_allowed_cidrs]
    return rules


def cidr_slug(cidr: str) -> str:
    """A CIDR as a name part (URNs must not contain '::'): 203.0.113.0/24 -> 203-0-113-0-24,
    2001:db8::/32 -> 2001-db8---32. One-to-one for canonical CIDRs, so rule names never collide."""
    return re.sub(r"[.:/]", "-", cidr)


def add_cidr_ingress_rules(
    name: str, group: aws.ec2.SecurityGroup, rules: list[tuple[str, int, str]], parent: pulumi.Resource
) -> None:
    """One vpc.SecurityGroupIngressRule per (protocol, port, CIDR) on `group`: `<name>-<protocol>-<port>-<cidr>`."""
    for protocol, port, cidr in rules:
        family = "cidr_ipv6" if ipaddress.ip_network(cidr).version == 6 else "cidr_ipv4"
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-{protocol}-{port}-{cidr_slug(cidr)}",
            security_group_id=group.id,
            ip_protocol=protocol,
            from_port=port,
            to_port=port,
            description="SSH" if port == 22 else "Prefect server",
            **{family: cidr},
            opts=pulumi.ResourceOptions(parent=parent),
        )


def add_all_egress(name: str, group: aws.ec2.SecurityGroup, parent: pulumi.Resource) -> None:
    """All outbound traffic, IPv4 and IPv6. The provider removes AWS's default allow-all egress rule; a host needs
    egress for apt and PyPI during the bootstrap (and a worker VM for the server's API, S3 and what flows reach)."""
    for family, cidr in (("cidr_ipv4", "0.0.0.0/0"), ("cidr_ipv6", "::/0")):
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-egress-all-{family.removeprefix('cidr_')}",
            security_group_id=group.id,
            ip_protocol="-1",
            description="all outbound",
            **{family: cidr},
            opts=pulumi.ResourceOptions(parent=parent),
        )


def hardened_instance(
    name: str,
    *,
    ami: DebianAmi,
    instance_type: str,
    disk_size_gb: int,
    key_name: pulumi.Input[str],
    security_group_id: pulumi.Input[str],
    host_private_key: pulumi.Input[str],
    host_public_key: pulumi.Input[str],
    tags: dict[str, str],
    parent: pulumi.Resource,
) -> aws.ec2.Instance:
    """`<name>-vm`: Debian's AMI, IMDSv2 only with a hop limit of 1, an encrypted gp3 root volume, and user data that
    installs the pinned SSH host key on first boot (first_boot.cloud_config). The server VM and every worker VM."""
    host_key_pair = pulumi.Output.all(host_private_key, host_public_key)
    user_data = pulumi.Output.secret(host_key_pair.apply(lambda keys: first_boot.cloud_config(*keys)))
    return aws.ec2.Instance(
        f"{name}-vm",
        ami=ami.id,
        instance_type=instance_type,
        key_name=key_name,
        vpc_security_group_ids=[security_group_id],
        # IMDSv2 only, and a hop limit of 1: a token's PUT answer dies one hop away, so nothing
        # behind a bridge or NAT on the VM (a container) gets a token. On the VM itself the bootstrap
        # keeps Prefect, its flow runs and Caddy from it (IPv6's fd00:ec2::254 stays off, the default).
        metadata_options={"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1},
        root_block_device={
            "volume_type": "gp3",
            "volume_size": disk_size_gb,
            "encrypted": True,
            "delete_on_termination": True,
        },
        user_data=user_data,
        tags=tags,
        # A VM's state lives on its root disk (the server's database, a worker's venv): a newer Debian AMI
        # must not replace the VM. Move to a new AMI deliberately with `pulumi up --replace`.
        opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["ami"]),
    )


class AwsHost(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    vpc_id: pulumi.Output[str]  # the VM's VPC (its security group's): where the database goes

    def __init__(self, name: str, args: AwsHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:aws_host:AwsHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {"Name": name, "prefect-host:stack": args.stack}

        # No inline rules: one standalone rule resource per port/protocol/CIDR, so each is visible
        # to the policy pack and a change to one CIDR touches only its own rules.
        group = aws.ec2.SecurityGroup(
            f"{name}-sg", description=f"prefect-host {args.stack}: Prefect ports and SSH", tags=tags, opts=child
        )
        add_cidr_ingress_rules(name, group, ingress_rules(args.allowed_cidrs, args.ssh_allowed_cidrs), self)
        add_all_egress(name, group, self)

        key_pair = aws.ec2.KeyPair(f"{name}-key", public_key=args.operator_public_key, tags=tags, opts=child)
        instance = hardened_instance(
            name,
            ami=args.ami,
            instance_type=args.instance_type,
            disk_size_gb=args.disk_size_gb,
            key_name=key_pair.key_name,
            security_group_id=group.id,
            host_private_key=args.host_private_key,
            host_public_key=args.host_public_key,
            tags=tags,
            parent=self,
        )
        address = aws.ec2.Eip(f"{name}-ip", domain="vpc", instance=instance.id, tags=tags, opts=child)

        self.public_ip = address.public_ip
        self.instance_id = instance.id
        self.security_group_id = group.id
        self.vpc_id = group.vpc_id
        self.register_outputs(
            {
                "publicIp": self.public_ip,
                "instanceId": self.instance_id,
                "securityGroupId": self.security_group_id,
                "vpcId": self.vpc_id,
                "amiName": args.ami.name,
            }
        )
