"""A local S3-API server (moto in server mode) with IAM authentication enforced.

It stands in for the AWS side of a stack: `provision()` creates what infra/ creates on AWS (a bucket,
an IAM group with an S3 policy on that bucket, a user in the group, an access key), and requests
signed with an unknown key or a wrong secret are refused, as on AWS.

moto runs in a child process (`python -m prefect_host.local.s3`): its authentication switch is a
module global, so keeping it out of the caller's process leaves any in-process moto use untouched,
and the child binds port 0 itself and reports the port it got (no free-port race).

How authentication is switched on: moto checks signatures and IAM policies once
`moto.settings.INITIAL_NO_AUTH_ACTION_COUNT` requests have been served (default: never). The child
starts with it off, creates an admin IAM user through its own API, then sets it to 0, the same
switch moto's `/moto-api/reset-auth` endpoint flips. From then on every request needs a key that
exists in moto's IAM and a policy that allows the action. That endpoint stays reachable without
credentials, so this server is for loopback and private test networks only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

from prefect_host.errors import PrefectHostError

DEFAULT_GROUP = "S3-FullAccess"
ADMIN_USER = "moto-admin"
START_TIMEOUT_S = 30.0


class S3Credentials(NamedTuple):
    access_key_id: str
    secret_access_key: str
    region: str


@dataclass
class S3Server:
    """moto's S3 and IAM APIs on host:port (port 0: any free one), IAM auth enforced.

    with S3Server("127.0.0.1") as s3:
        creds = s3.provision("my-bucket", user="prefect-host-dev")
        ... s3.endpoint_url ...
    """

    host: str = "127.0.0.1"
    port: int = 0
    region: str = "us-east-1"
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _admin: S3Credentials | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        """The moto child's PID (None when not started): a record of it lets another process stop it."""
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        """Started, and its moto child has not exited since."""
        return self._process is not None and self._process.poll() is None

    @property
    def endpoint_url(self) -> str:
        if self._process is None:
            raise PrefectHostError("S3Server: not started; use it as a context manager or call start().")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> S3Server:
        if self._process is not None:
            return self
        self._process = subprocess.Popen(
            [sys.executable, "-m", "prefect_host.local.s3", "--host", self.host, "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The child prints one JSON line once it serves with auth on; a timer bounds the wait.
        timer = threading.Timer(START_TIMEOUT_S, self._process.kill)
        timer.start()
        try:
            line = self._process.stdout.readline()
        finally:
            timer.cancel()
        if not line:
            last_error = (self._process.stderr.read().strip().splitlines() or ["no output"])[-1]
            returncode = self._process.wait()
            self._process = None
            why = (
                f"no answer within {START_TIMEOUT_S:.0f} s"
                if returncode == -signal.SIGKILL
                else f"exited with {returncode}: {last_error}"
            )
            raise PrefectHostError(f"S3Server: moto did not start on {self.host}:{self.port} ({why}).")
        ready = json.loads(line)
        self.port = ready["port"]
        self._admin = S3Credentials(ready["admin_access_key_id"], ready["admin_secret_access_key"], self.region)
        # The child's stderr is request logs; drain it so a full pipe never blocks the server.
        threading.Thread(target=self._process.stderr.read, daemon=True).start()
        return self

    def stop(self) -> int | None:
        """Ends the moto child (SIGTERM, then SIGKILL after 10 s); its exit status, 0 for a clean exit on
        SIGTERM, or None when it was not started."""
        if self._process is None:
            return None
        self._process.terminate()
        try:
            status = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            status = self._process.wait()
        self._process.stdout.close()
        self._process = None
        return status

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def client(self, service: str, credentials: S3Credentials | None = None):
        """A boto3 client for this server; the admin's credentials unless others are given."""
        import boto3

        creds = credentials or self._admin
        if creds is None:
            raise PrefectHostError("S3Server: not started; use it as a context manager or call start().")
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=creds.region,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
        )

    def provision(self, bucket: str, group: str = DEFAULT_GROUP, user: str = "prefect-host") -> S3Credentials:
        """What infra/ creates on AWS: the bucket, the group with full S3 access to that bucket only,
        the user in the group and a new access key for it. Existing bucket/group/user are reused."""
        s3 = self.client("s3")
        iam = self.client("iam")
        existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        if bucket not in existing:
            kwargs = (
                {} if self.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": self.region}}
            )
            s3.create_bucket(Bucket=bucket, **kwargs)
        _ignore_exists(iam.create_group, GroupName=group)
        iam.put_group_policy(
            GroupName=group,
            PolicyName=f"{bucket}-s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "s3:*",
                            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                        }
                    ],
                }
            ),
        )
        _ignore_exists(iam.create_user, UserName=user)
        iam.add_user_to_group(GroupName=group, UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return S3Credentials(key["AccessKeyId"], key["SecretAccessKey"], self.region)


def _ignore_exists(call, **kwargs) -> None:
    from botocore.exceptions import ClientError

    try:
        call(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EntityAlreadyExists":
            raise


def _serve(host: str, port: int) -> None:
    """The child: serve, create the admin while auth is off, switch auth on, report, wait for SIGTERM."""
    import boto3
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    # ThreadedMotoServer waits forever when its thread cannot bind: fail here, fast and clearly.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, port))
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    iam = boto3.client(
        "iam",
        endpoint_url=f"http://{url_host}:{bound_port}",
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName=ADMIN_USER)
    iam.put_user_policy(
        UserName=ADMIN_USER,
        PolicyName="admin",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    admin = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0

    print(
        json.dumps(
            {
                "port": bound_port,
                "admin_access_key_id": admin["AccessKeyId"],
                "admin_secret_access_key": admin["SecretAccessKey"],
            }
        ),
        flush=True,
    )
    stop.wait()
    server.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # boto3 in the child must not pick up the caller's AWS profile or config.
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    _serve(args.host, args.port)
