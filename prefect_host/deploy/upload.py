"""The upload: the version the files make, and the sync of the deployment's own folder.

The folder holds a manifest (files.MANIFEST_NAME) naming its deployment (flow and deployment name) and
listing the paths the last deploy uploaded there. A sync uploads what is new or changed (MD5 against the
object's ETag; an ETag that is not a plain MD5, e.g. multipart or SSE-KMS, counts as changed) and deletes
only paths the old manifest lists that the new upload lacks: never an object it did not upload itself. The
folder is listed only to read ETags. The manifest is rewritten before the uploads when they add paths (an
interrupted sync then leaves nothing the next one does not know about) and after the deletions; a deploy
with nothing changed writes nothing. A manifest naming another deployment stops the deploy before any write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prefect_host.deploy.files import MANIFEST_NAME
from prefect_host.deploy.request import DeployError

MANIFEST_FORMAT = 1


def tree_version(files: dict[str, Path]) -> str:
    """A short hash of the uploaded tree (paths and contents): the deployment's version."""
    digest = hashlib.sha256()
    for relative, path in files.items():
        digest.update(relative.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class SyncPlan:
    bucket: str
    prefix: str  # the folder, without the trailing slash
    owner: tuple[str, str]  # (flow name, deployment name)
    files: dict[str, Path]  # what the folder is to hold
    changed: list[str]  # new or different: uploaded
    unchanged: list[str]
    stale: list[str]  # listed by the old manifest, no longer in files: deleted
    recorded: list[str] | None  # what the manifest lists now; None when there is none

    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"


def plan_sync(client, bucket: str, prefix: str, owner: tuple[str, str], files: dict[str, Path]) -> SyncPlan:
    """What a sync would do; reads the manifest and the ETags, writes nothing."""
    with s3_errors(f"s3://{bucket}/{prefix}/"):
        recorded = _read_manifest(client, bucket, prefix, owner)
        remote = _remote_etags(client, bucket, prefix)
    changed, unchanged = [], []
    for relative, path in files.items():
        same = remote.get(f"{prefix}/{relative}") == hashlib.md5(path.read_bytes()).hexdigest()
        (unchanged if same else changed).append(relative)
    stale = sorted(set(recorded or ()) - set(files))
    return SyncPlan(bucket, prefix, owner, files, changed, unchanged, stale, recorded)


def apply_sync(client, plan: SyncPlan) -> None:
    """Makes the folder hold plan.files, deleting only what the old manifest lists."""
    wanted = sorted(plan.files)
    recorded = set(plan.recorded or ())
    with s3_errors(plan.where()):
        if plan.recorded is None or not recorded.issuperset(wanted):
            _write_manifest(client, plan, sorted(recorded.union(wanted)))
        for relative in plan.changed:
            body = plan.files[relative].read_bytes()
            client.put_object(Bucket=plan.bucket, Key=f"{plan.prefix}/{relative}", Body=body)
        for relative in plan.stale:
            client.delete_object(Bucket=plan.bucket, Key=f"{plan.prefix}/{relative}")
        if plan.stale:
            _write_manifest(client, plan, wanted)


@contextlib.contextmanager
def s3_errors(where: str) -> Iterator[None]:
    """S3's refusal as this step's DeployError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DeployError(
            f"{where}: {exc.operation_name} refused with {error.get('Code')}: {error.get('Message')}."
        ) from None
    except BotoCoreError as exc:
        raise DeployError(f"{where}: {exc}.") from None


def _read_manifest(client, bucket: str, prefix: str, owner: tuple[str, str]) -> list[str] | None:
    """The paths the folder's manifest lists, None without one; refuses another deployment's folder."""
    where = f"s3://{bucket}/{prefix}/{MANIFEST_NAME}"
    try:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST_NAME}")["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    try:
        manifest = json.loads(body)
        names, paths = (manifest["flow"], manifest["deployment"]), manifest["files"]
        if manifest["format"] != MANIFEST_FORMAT or not all(_is_relative(path) for path in paths):
            raise ValueError("unexpected format or path")
    except (ValueError, KeyError, TypeError) as exc:
        raise DeployError(
            f"{where}: not a manifest this deploy wrote ({type(exc).__name__}: {exc}); nothing was written. "
            "Delete it (and the folder, when no deployment uses it) to start that folder over."
        ) from None
    if tuple(names) != owner:
        raise DeployError(
            f"{where} names deployment {names[0]}/{names[1]}, not {owner[0]}/{owner[1]}: the two share a "
            "folder key; nothing was written. Deploy this one under another --name."
        )
    return list(paths)


def _is_relative(path) -> bool:
    """A path inside the folder: a deletion can only reach the folder's own objects."""
    return isinstance(path, str) and all(part not in ("", ".", "..") for part in path.split("/"))


def _write_manifest(client, plan: SyncPlan, paths: list[str]) -> None:
    flow, deployment = plan.owner
    body = {"format": MANIFEST_FORMAT, "flow": flow, "deployment": deployment, "files": paths}
    client.put_object(
        Bucket=plan.bucket,
        Key=f"{plan.prefix}/{MANIFEST_NAME}",
        Body=json.dumps(body, indent=1).encode() + b"\n",
        ContentType="application/json",
    )


def _remote_etags(client, bucket: str, prefix: str) -> dict[str, str]:
    """Key -> ETag (unquoted) of every object under prefix/: read, never used to delete."""
    remote: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents", []):
            remote[obj["Key"]] = obj["ETag"].strip('"')
    return remote
