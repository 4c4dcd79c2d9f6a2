"""The stack outputs of a local host: what `pulumi stack output --json --show-secrets` would print for
a cloud VM, so that `make demo` and `make bench` bootstrap it with `--outputs` as a user would."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path

from prefect_host.local.machine import LocalHost
from prefect_host.local.wheelhouse import GUEST_PREFECT_VERSION
from prefect_host.outputs import StackOutputs

AUTH_USER = "admin"

# The outputs always carry a bucket; a host bootstrapped with --no-storage never reads these.
NO_STORAGE = {
    "bucket": "no-storage",
    "region": "us-east-1",
    "iam_group": "no-storage",
    "iam_user": "no-storage",
    "access_key_id": "no-storage",
    "secret_access_key": "no-storage",
    "s3_endpoint_url": None,
}


def new_auth_string() -> str:
    return f"{AUTH_USER}:{secrets.token_urlsafe(24)}"


def local_outputs(
    *,
    address: str,
    ssh_user: str,
    host_public_key: str,
    ssh_private_key: str,
    auth_string: str,
    storage: Mapping[str, str | None] | None,
) -> dict[str, str]:
    """What `pulumi stack output --json --show-secrets` would print for a local host, checked with
    the same contract the bootstrap reads it with. `storage` is a services record (services.json);
    None gives placeholders, for a bootstrap with --no-storage."""
    storage = storage or NO_STORAGE
    outputs = {
        "cloud": "local",
        "publicIp": address,
        "sshUser": ssh_user,
        "hostPublicKey": host_public_key,
        "sshPrivateKey": ssh_private_key,
        # As infra/ exports with no domain: Caddy's internal CA, HTTPS on 443 (and 4200).
        "tlsMode": "internal",
        "apiUrl": f"https://{address}/api",
        "uiUrl": f"https://{address}",
        "prefectVersion": GUEST_PREFECT_VERSION,
        "prefectAuthString": auth_string,
        "bucketName": storage["bucket"],
        "bucketRegion": storage["region"],
        "iamGroupName": storage["iam_group"],
        "iamUserName": storage["iam_user"],
        "awsAccessKeyId": storage["access_key_id"],
        "awsSecretAccessKey": storage["secret_access_key"],
    }
    if storage["s3_endpoint_url"]:
        outputs["s3EndpointUrl"] = storage["s3_endpoint_url"]
    StackOutputs.from_mapping(outputs, source="the local host's outputs")
    return outputs


def host_outputs(host: LocalHost, auth_string: str, storage: Mapping[str, str | None] | None) -> dict[str, str]:
    return local_outputs(
        address=host.address,
        ssh_user=host.ssh_user,
        host_public_key=host.host_public_key,
        ssh_private_key=host.identity_file.read_text(),
        auth_string=auth_string,
        storage=storage,
    )


def previous_auth_string(outputs_path: Path) -> str | None:
    """The auth string of an earlier run, so a re-run converges instead of rotating it."""
    try:
        value = json.loads(outputs_path.read_text()).get("prefectAuthString")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(value, str) and value.startswith(f"{AUTH_USER}:") and len(value) > len(AUTH_USER) + 16:
        return value
    return None
