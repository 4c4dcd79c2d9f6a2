"""What a demo host needs from this machine, in one detached process: its package index (the
wheelhouse, PackageIndex) and an S3-API server (S3Server, moto) holding the demo's bucket, IAM user
and access key, both on the host side of the guest's veth.

`make demo` starts it (demo_services.ensure_services) and leaves it running with the host; `make demo-down`
stops it by the PIDs in the record it returns. moto keeps its data in memory: the bucket lives as
long as this process.

    python -m prefect_host.local.services --bind 10.77.1.1 --wheels DIR --bucket NAME \
        --iam-user NAME --ready FILE [--index-port N] [--s3-port N]

Once both servers answer it writes FILE (mode 0600: it holds the access key) with a JSON object:
pid, s3_pid, index_url, s3_endpoint_url, bucket, region, iam_group, iam_user, access_key_id,
secret_access_key. It stops on SIGTERM or SIGINT, and exits when the S3 server dies.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from prefect_host.errors import PrefectHostError
from prefect_host.local.apt_repo import AptRepoServer
from prefect_host.local.package_index import PackageIndex
from prefect_host.local.s3 import DEFAULT_GROUP, S3Server

# How often the process checks that its S3 server is still alive.
_WATCH_SECONDS = 2.0


def write_private_json(path: Path, data: dict) -> None:
    """Atomically replaces `path` with `data` as JSON, readable by its owner only from the first byte."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def _index_on(wheels: Path, bind: str, port: int) -> PackageIndex:
    """The index on `port` (the previous run's, so URLs stay the same), or any free one when taken."""
    try:
        return PackageIndex(wheels, bind, port)
    except PrefectHostError:
        if port == 0:
            raise
        return PackageIndex(wheels, bind, 0)


def _s3_on(bind: str, port: int) -> S3Server:
    try:
        return S3Server(host=bind, port=port).start()
    except PrefectHostError:
        if port == 0:
            raise
        return S3Server(host=bind, port=0).start()


def serve(
    *,
    bind: str,
    wheels: Path,
    apt_repo: Path,
    bucket: str,
    iam_user: str,
    ready: Path,
    index_port: int = 0,
    s3_port: int = 0,
) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # outlives the terminal that ran `make demo`
    index = _index_on(wheels, bind, index_port)
    # The guest has no internet: Caddy (the HTTPS front door) comes from this local apt repository.
    apt = AptRepoServer(apt_repo, bind)
    try:
        s3 = _s3_on(bind, s3_port)
        try:
            credentials = s3.provision(bucket, user=iam_user)
            write_private_json(
                ready,
                {
                    # The moto child's PID too: `make demo-down` ends it even when this process was killed.
                    "pid": os.getpid(),
                    "s3_pid": s3.pid,
                    "index_url": index.url,
                    "apt_source": apt.source_line,
                    "s3_endpoint_url": s3.endpoint_url,
                    "bucket": bucket,
                    "region": credentials.region,
                    "iam_group": DEFAULT_GROUP,
                    "iam_user": iam_user,
                    "access_key_id": credentials.access_key_id,
                    "secret_access_key": credentials.secret_access_key,
                },
            )
            print(f"serving {index.url} and {s3.endpoint_url} (bucket {bucket})", file=sys.stderr, flush=True)
            while not stop.wait(_WATCH_SECONDS):
                if not s3.is_running:
                    print("the S3 server exited; stopping", file=sys.stderr, flush=True)
                    return 1
        finally:
            s3.stop()
    finally:
        apt.close()
        index.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefect_host.local.services", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="the host side of the guest's veth")
    parser.add_argument("--wheels", required=True, type=Path)
    parser.add_argument("--apt-repo", required=True, type=Path, help="a repository from ensure_apt_repo()")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--iam-user", required=True)
    parser.add_argument("--ready", required=True, type=Path)
    parser.add_argument("--index-port", type=int, default=0)
    parser.add_argument("--s3-port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        return serve(
            bind=args.bind,
            wheels=args.wheels,
            apt_repo=args.apt_repo,
            bucket=args.bucket,
            iam_user=args.iam_user,
            ready=args.ready,
            index_port=args.index_port,
            s3_port=args.s3_port,
        )
    except PrefectHostError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
