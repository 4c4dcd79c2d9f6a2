"""`prefect-host bootstrap` (scripts/bootstrap.py): install, configure and start the Prefect server and
its workers on the stack's VM, register the S3 result storage, and write this machine's profile.

Exit status: 0 = server verified and profile written; 1 = an error (one paragraph on stderr);
2 = invalid command line; 130 = interrupted.
"""

from __future__ import annotations

import argparse

from prefect_host.bootstrap import DEFAULT_WORKERS, WORK_POOL_NAME, resolve_inputs, run
from prefect_host.bootstrap.input_warnings import outputs_file_warnings, package_source_warnings
from prefect_host.bootstrap.worker_host_inputs import WORKER_HOST_DEFAULT_WORKERS
from prefect_host.cli._parser import ArgumentParser
from prefect_host.console import Console, url_password
from prefect_host.errors import PrefectHostError
from prefect_host.internal_ca import permitted_names
from prefect_host.profile.write import check_profiles_file
from prefect_host.tls import browser_trust_hint


def parse_args(argv: list[str] | None, prog: str = "bootstrap.py") -> argparse.Namespace:
    parser = ArgumentParser(
        prog=prog,
        description="Install Prefect on the stack's VM as a hardened systemd service, verify it, and "
        "write a Prefect profile on this machine. Flags win over --outputs, which wins over "
        "--stack.",
    )
    _add_source_flags(parser)
    _add_host_flags(parser)
    _add_storage_flags(parser)
    _add_backup_flags(parser)
    _add_laptop_flags(parser)
    return parser.parse_args(argv)


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("where the stack outputs come from")
    source.add_argument("--outputs", metavar="FILE", help="JSON of `pulumi stack output --json --show-secrets`")
    source.add_argument(
        "--stack",
        metavar="NAME",
        help="run `pulumi stack output --json --show-secrets --stack NAME` "
        "(with --outputs: only names the default profile)",
    )


def _add_host_flags(parser: argparse.ArgumentParser) -> None:
    host = parser.add_argument_group("the host (default: from the outputs)")
    host.add_argument("--host", help="address to SSH to (default: publicIp)")
    host.add_argument("--user", help="SSH user with passwordless sudo (default: sshUser)")
    host.add_argument("--identity", metavar="FILE", help="SSH private key (default: sshPrivateKey)")
    host.add_argument(
        "--host-key", metavar='"ssh-ed25519 AAAA..."', help="the host's pinned public key (default: hostPublicKey)"
    )
    host.add_argument(
        "--connect-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to keep trying SSH (and to wait for cloud-init); default 300",
    )
    packages = host.add_mutually_exclusive_group()
    packages.add_argument(
        "--index-url", metavar="URL", help="simple index the VM installs uv and Prefect from (default PyPI)"
    )
    packages.add_argument(
        "--find-links", metavar="URL", help="a page of links to wheels; the VM then installs from it only"
    )
    host.add_argument(
        "--apt-source",
        metavar='"deb URI SUITE [COMPONENT...]"',
        help="one apt source line the VM installs Caddy from, instead of its own sources (a package mirror)",
    )
    host.add_argument(
        "--acme-ca-root",
        metavar="FILE",
        help="tlsMode acme with a private ACME directory (acmeCa): the CA certificate the VM's "
        "Caddy must trust to reach it",
    )
    host.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"worker processes polling the {WORK_POOL_NAME!r} pool (units prefect-worker@1..N; others are "
        f"stopped): on the VM, default {DEFAULT_WORKERS}; with worker hosts (output workerHosts) on each of "
        f"them, default {WORKER_HOST_DEFAULT_WORKERS}; 0 for none",
    )
    host.add_argument(
        "--server-workers",
        type=int,
        metavar="N",
        help="with worker hosts: workers on the server VM too (default 0: flows run on the worker hosts only)",
    )
    host.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="[HOST=]QUEUE",
        help="with worker hosts: their workers poll only this work queue of the pool (HOST=QUEUE: one worker "
        "host's; repeatable; default: the pool's 'default' queue); deploy.py --queue QUEUE sends a deployment's "
        "runs there",
    )


def _add_storage_flags(parser: argparse.ArgumentParser) -> None:
    storage = parser.add_argument_group("result storage (default: the stack's bucket)")
    storage.add_argument(
        "--no-storage",
        action="store_true",
        help="leave result storage alone: no bucket probe, no blocks, no result settings "
        "in the profile or the workers' environment",
    )
    storage.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        help="an S3-compatible endpoint for the bucket (default: s3EndpointUrl from the outputs, else AWS)",
    )


def _add_backup_flags(parser: argparse.ArgumentParser) -> None:
    backup = parser.add_argument_group("database backup (default: replicated to the bucket, restored onto a new host)")
    backup.add_argument(
        "--no-backup",
        action="store_true",
        help="no continuous replication of Prefect's database to s3://BUCKET/backups/prefect-db "
        "(the replica already there stays)",
    )
    backup.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="let a prefectVersion older than the host's through (migrations only go forward; "
        "take `prefect-host backup now` first)",
    )
    backup.add_argument(
        "--migrate-objects",
        action="store_true",
        help="database postgres on a host that ran on SQLite: move deployments, blocks, work pools, variables, "
        "concurrency limits and automations over with `prefect transfer` (the run history stays in the old "
        "database and its replica)",
    )
    restore = backup.add_mutually_exclusive_group()
    restore.add_argument(
        "--no-restore", action="store_true", help="a host without a database starts empty instead of from the replica"
    )
    restore.add_argument(
        "--restore-at",
        metavar="TIME",
        help="a host without a database gets the replica as it was at TIME (UTC, e.g. 2026-12-06T05:25:45Z)",
    )


def _add_laptop_flags(parser: argparse.ArgumentParser) -> None:
    laptop = parser.add_argument_group("this machine")
    laptop.add_argument(
        "--client-only", action="store_true", help="only write the Prefect profile (no SSH); for teammates' laptops"
    )
    laptop.add_argument("--profile", metavar="NAME", help="profile name (default: prefect-host-<stack or host>)")
    laptop.add_argument("--activate", action="store_true", help="make the profile the active one")
    laptop.add_argument(
        "--ca-file",
        metavar="FILE",
        help="the CA certificate this machine verifies the server against, pinned in the "
        "profile (default: tlsMode internal, the CA read from the host over SSH; acme, "
        "the system trust store)",
    )


def main(argv: list[str] | None = None, prog: str = "bootstrap.py") -> int:
    args = parse_args(argv, prog)
    console = Console()
    for url in (args.index_url, args.find_links):  # the index's token never shows, not even in an error
        console.add_secret(url_password(url))
    try:
        inputs = resolve_inputs(
            outputs_file=args.outputs,
            stack=args.stack,
            host=args.host,
            user=args.user,
            identity=args.identity,
            host_key=args.host_key,
            profile=args.profile,
            activate=args.activate,
            client_only=args.client_only,
            index_url=args.index_url,
            find_links=args.find_links,
            connect_timeout=args.connect_timeout,
            workers=args.workers,
            server_workers=args.server_workers,
            queues=tuple(args.queue),
            no_storage=args.no_storage,
            s3_endpoint_url=args.s3_endpoint_url,
            apt_source=args.apt_source,
            acme_ca_root=args.acme_ca_root,
            ca_file=args.ca_file,
            no_backup=args.no_backup,
            no_restore=args.no_restore,
            restore_at=args.restore_at,
            allow_downgrade=args.allow_downgrade,
            migrate_objects=args.migrate_objects,
        )
        check_profiles_file()  # the profile is written last: a file it cannot go into is bad input too
        target = "this machine only" if inputs.client_only else f"{inputs.user}@{inputs.host}"
        console.line(f"prefect-host bootstrap: Prefect {inputs.prefect_version} for {target}")
        for warning in outputs_file_warnings(args.outputs):
            console.warn(warning)
        for warning in [] if inputs.client_only else package_source_warnings(inputs.index_url, inputs.find_links):
            console.warn(warning)
        summary = run(inputs, console)
    except PrefectHostError as exc:
        console.error(str(exc))
        return 1
    except KeyboardInterrupt:
        console.error("interrupted; run the bootstrap again to finish (it continues where it stopped).")
        return 130
    print_summary(summary, console)
    if summary.failed_hosts:
        console.error(
            f"worker host(s) {', '.join(summary.failed_hosts)} failed (their steps and the reason are above); the "
            "server and the other hosts are converged. Run the bootstrap again once the cause is fixed."
        )
        return 1
    return 0


def print_summary(summary, console: Console) -> None:
    """Where the server is, how its TLS is trusted, and what was set up on this machine (`summary`: what
    `run` returned; not annotated, as only run's names are promised to stay in prefect_host.bootstrap)."""
    state = "active" if summary.profile_active else f"activate with: prefect profile use {summary.profile_name}"
    console.line(f"Done in {summary.seconds:.1f} s. Prefect server {summary.server_version}.")
    console.line(f"  UI:      {summary.ui_url}")
    console.line(f"  API:     {summary.api_url}")
    if summary.ca is not None:
        console.line(
            f"  TLS:     {summary.tls_mode}, verified against the CA pinned in the profile (PREFECT_API_SSL_CERT_FILE)"
        )
        scope = permitted_names(summary.ca.pem)
        for line in browser_trust_hint(str(summary.ca_path), summary.ca.fingerprint, scope):
            console.line(f"    {line}")
    elif summary.tls_mode == "acme":
        console.line("  TLS:     acme, a public certificate verified with the system trust store")
    else:
        console.line("  TLS:     off: the auth string crosses the network in clear text")
    console.line(f"  profile: {summary.profile_name} ({state}) in {summary.profile_path}")
    if summary.workers is not None:
        console.line(f"  workers: {summary.workers} on the VM, polling work pool {WORK_POOL_NAME!r}")
    for line in summary.worker_hosts:
        console.line(f"  {line}")
    if summary.results_block:
        console.line(f"  results: {summary.results_url} (block {summary.results_block})")
