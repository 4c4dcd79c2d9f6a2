"""SSH keys made in the program: the VM's pinned host key and, unless given, the operator's key pair."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

# The login user: the default user of Debian's EC2 AMIs; on GCP the guest agent creates it from `ssh-keys`.
SSH_USER = "admin"


@dataclass(frozen=True)
class HostKeysArgs:
    """What HostKeys uses: the operator's own public key, or None to generate a login key pair."""

    ssh_public_key: str | None


class HostKeys(pulumi.ComponentResource):
    """An ED25519 host key installed on first boot, so the bootstrap verifies the host from the first
    connection (no trust on first use), and an ED25519 login key pair when no sshPublicKey is given."""

    host_private_key: pulumi.Output[str]
    host_public_key: pulumi.Output[str]
    operator_public_key: pulumi.Output[str]
    operator_private_key: pulumi.Output[str] | None

    def __init__(self, name: str, args: HostKeysArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:host_keys:HostKeys", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
        self.host_private_key = pulumi.Output.secret(host_key.private_key_openssh)
        # The provider's OpenSSH line ends with a newline; outputs and known_hosts want the bare line.
        self.host_public_key = host_key.public_key_openssh.apply(str.strip)

        if args.ssh_public_key is None:
            operator_key = tls.PrivateKey(f"{name}-operator-key", algorithm="ED25519", opts=child)
            self.operator_public_key = operator_key.public_key_openssh.apply(str.strip)
            self.operator_private_key = pulumi.Output.secret(operator_key.private_key_openssh)
        else:
            self.operator_public_key = pulumi.Output.from_input(args.ssh_public_key)
            self.operator_private_key = None

        self.register_outputs(
            {
                "hostPrivateKey": self.host_private_key,
                "hostPublicKey": self.host_public_key,
                "operatorPublicKey": self.operator_public_key,
                **({"operatorPrivateKey": self.operator_private_key} if self.operator_private_key is not None else {}),
            }
        )
