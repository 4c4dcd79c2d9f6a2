"""The host as `status` and `backup` reach it: the stack outputs, then the pinned SSH session."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from prefect_host.bootstrap.inputs import BootstrapInputs, resolve_inputs
from prefect_host.console import Console
from prefect_host.ssh import HostSession


def add_host_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--outputs", metavar="FILE", help="JSON of `pulumi stack output --json --show-secrets`")
    parser.add_argument("--stack", metavar="NAME", help="run `pulumi stack output` for this stack")
    parser.add_argument("--host", help="address to SSH to (default: publicIp)")
    parser.add_argument("--user", help="SSH user with passwordless sudo (default: sshUser)")
    parser.add_argument("--identity", metavar="FILE", help="SSH private key (default: sshPrivateKey)")
    parser.add_argument("--host-key", metavar='"ssh-ed25519 AAAA..."', help="the host's pinned public key")
    parser.add_argument("--s3-endpoint-url", metavar="URL", help="an S3-compatible endpoint for the bucket")
    parser.add_argument("--connect-timeout", type=float, default=60.0, metavar="SECONDS", help="default 60")


def host_inputs(args: argparse.Namespace) -> BootstrapInputs:
    """The validated outputs and flags, as the bootstrap reads them (same errors, same precedence)."""
    return resolve_inputs(
        outputs_file=args.outputs,
        stack=args.stack,
        host=args.host,
        user=args.user,
        identity=args.identity,
        host_key=args.host_key,
        s3_endpoint_url=args.s3_endpoint_url,
        connect_timeout=args.connect_timeout,
    )


@contextmanager
def host_session(inputs: BootstrapInputs, console: Console) -> Iterator[HostSession]:
    from prefect_host.bootstrap.converge import ssh_session

    with ssh_session(inputs, console) as session:
        yield session
