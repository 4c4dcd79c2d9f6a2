"""The worker VMs on AWS (workerHosts 1 or more): flow runs off the server VM.

One security group for all of them (SSH from sshAllowedCidrs only, all outbound, as the server's) and one key
pair (the operator's key); per VM its own pinned host key, an instance hardened like the server's (aws_host's
hardened_instance: the same Debian AMI lookup, IMDSv2 with a hop limit of 1, an encrypted root volume, the host
key installed by cloud-init on first boot), an Elastic IP, and on the server's security group the rules that let
that IP (a /32) reach the API ports.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from aws_host import DebianAmi, add_all_egress, add_cidr_ingress_rules, hardened_instance, ingress_rules
from host_keys import new_host_key
from worker_hosts import SERVER_API_PORTS, WorkerVm, host_cidr


@dataclass(frozen=True)
class AwsWorkerHostsArgs:
    """What AwsWorkerHosts uses: validated settings, the AMI found for workerInstanceType before any resource, the
    operator's key from HostKeys and the server's security group from AwsHost."""

    stack: str
    names: tuple[str, ...]  # one VM per name: <prefix>-worker-1, -2, ...
    instance_type: str
    disk_size_gb: int
    ssh_allowed_cidrs: tuple[str, ...]
    ami: DebianAmi
    operator_public_key: pulumi.Input[str]
    server_security_group_id: pulumi.Input[str]


class AwsWorkerHosts(pulumi.ComponentResource):
    hosts: list[WorkerVm]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: AwsWorkerHostsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:aws_worker_hosts:AwsWorkerHosts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        shared = f"{name}-workers"
        shared_tags = {"Name": shared, "prefect-host:stack": args.stack}

        group = aws.ec2.SecurityGroup(
            f"{shared}-sg", description=f"prefect-host {args.stack}: worker VMs, SSH only", tags=shared_tags, opts=child
        )
        add_cidr_ingress_rules(shared, group, ingress_rules((), args.ssh_allowed_cidrs), self)  # SSH only
        add_all_egress(shared, group, self)
        key_pair = aws.ec2.KeyPair(f"{shared}-key", public_key=args.operator_public_key, tags=shared_tags, opts=child)

        self.hosts = []
        for host_name in args.names:
            tags = {"Name": host_name, "prefect-host:stack": args.stack}
            host_key = new_host_key(host_name, self)
            instance = hardened_instance(
                host_name,
                ami=args.ami,
                instance_type=args.instance_type,
                disk_size_gb=args.disk_size_gb,
                key_name=key_pair.key_name,
                security_group_id=group.id,
                host_private_key=host_key.private_key,
                host_public_key=host_key.public_key,
                tags=tags,
                parent=self,
            )
            address = aws.ec2.Eip(f"{host_name}-ip", domain="vpc", instance=instance.id, tags=tags, opts=child)
            # The worker reaches the server at its public IP, so the server sees the worker's public IP.
            for port in SERVER_API_PORTS:
                aws.vpc.SecurityGroupIngressRule(
                    f"{host_name}-to-server-tcp-{port}",
                    security_group_id=args.server_security_group_id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    cidr_ipv4=host_cidr(address.public_ip),
                    description=f"Prefect API from worker VM {host_name}",
                    opts=child,
                )
            self.hosts.append(WorkerVm(host_name, address.public_ip, host_key.public_key, instance.id))

        self.security_group_id = group.id
        self.register_outputs(
            {
                "hosts": [{**host.output(), "instanceId": host.instance_id} for host in self.hosts],
                "securityGroupId": self.security_group_id,
                "amiName": args.ami.name,
            }
        )
