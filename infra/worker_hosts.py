"""What the worker VMs of both clouds share (AwsWorkerHosts, GcpWorkerHosts): the server ports they reach, and
the shape of the `workerHosts` output (prefect_host/outputs.py's WorkerHost).

A worker VM runs flows, not the server: no public ingress but SSH from sshAllowedCidrs, and the server VM lets in
each worker's static public IP (a /32) on the API ports, in addition to allowedCidrs, so a stack whose allowedCidrs
leave the workers out still works. Egress is all outbound, as the server's: a worker needs the server's API (at
its public IP or domain), S3 (regional endpoints without a fixed small range), Debian's mirrors, PyPI and uv's
installer (CDNs, no fixed ranges), and whatever the flows themselves read and write (data sources, model hubs,
databases), which the stack cannot know. The bootstrap keeps flow runs from the metadata addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

# Caddy serves the API with TLS on 443 and 4200 (plain HTTP on 4200 with tls off): the worker VMs reach apiUrl.
SERVER_API_PORTS = (443, 4200)


@dataclass(frozen=True)
class WorkerVm:
    """One worker VM as the stack exports it, and its instance."""

    name: str
    public_ip: pulumi.Output[str]
    host_public_key: pulumi.Output[str]
    instance_id: pulumi.Output[str]

    def output(self) -> dict[str, pulumi.Input[str]]:
        """An entry of the `workerHosts` output: {name, publicIp, hostPublicKey}, none of them secret."""
        return {"name": self.name, "publicIp": self.public_ip, "hostPublicKey": self.host_public_key}


def host_cidr(public_ip: pulumi.Output[str]) -> pulumi.Output[str]:
    """A worker's static IPv4 address as a /32 for the server's ingress."""
    return public_ip.apply(lambda ip: f"{ip}/32")
