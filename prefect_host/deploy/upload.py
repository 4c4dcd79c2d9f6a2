"""The project's files: which are uploaded, the version they make, and their sync to the bucket."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect_host.deploy.request import DeployError

# Always left out of the upload; a project's .prefectignore adds to these (gitignore syntax).
DEFAULT_EXCLUDES = (
    ".git/",
    ".hg/",
    ".venv/",
    "venv/",
    "__pycache__/",
    "*.py[cod]",
    ".env",
    ".prefectignore",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ipynb_checkpoints/",
    ".DS_Store",
)


def project_files(project_dir: Path) -> list[str]:
    """Files to upload (relative POSIX paths, sorted): all but the default excludes and .prefectignore."""
    from prefect.utilities.filesystem import filter_files

    patterns = list(DEFAULT_EXCLUDES)
    ignore_file = project_dir / ".prefectignore"
    if ignore_file.is_file():
        patterns += ignore_file.read_text().splitlines()
    return sorted(filter_files(str(project_dir), patterns, include_dirs=False, as_posix=True))


def tree_version(project_dir: Path, files: list[str]) -> str:
    """A short hash of the uploaded tree (paths and contents): the deployment's version."""
    digest = hashlib.sha256()
    for relative in files:
        digest.update(relative.encode() + b"\0" + hashlib.sha256((project_dir / relative).read_bytes()).digest())
    return digest.hexdigest()[:12]


def sync_directory(client, bucket: str, prefix: str, project_dir: Path, files: list[str]) -> dict[str, int]:
    """Makes s3://bucket/prefix/ hold exactly `files`: uploads new or changed ones (by MD5 against
    the ETag; an ETag that is not a plain MD5, e.g. multipart or SSE-KMS, counts as changed) and
    deletes objects no longer in the project."""
    from botocore.exceptions import BotoCoreError, ClientError

    counts = {"uploaded": 0, "unchanged": 0, "removed": 0}
    try:
        remote = _remote_etags(client, bucket, prefix)
        for relative in files:
            key = f"{prefix}/{relative}"
            body = (project_dir / relative).read_bytes()
            if remote.pop(key, None) == hashlib.md5(body).hexdigest():
                counts["unchanged"] += 1
                continue
            client.put_object(Bucket=bucket, Key=key, Body=body)
            counts["uploaded"] += 1
        for key in sorted(remote):
            client.delete_object(Bucket=bucket, Key=key)
            counts["removed"] += 1
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DeployError(
            f"upload to s3://{bucket}/{prefix}/: {exc.operation_name} refused with "
            f"{error.get('Code')}: {error.get('Message')}."
        ) from None
    except BotoCoreError as exc:
        raise DeployError(f"upload to s3://{bucket}/{prefix}/: {exc}.") from None
    return counts


def _remote_etags(client, bucket: str, prefix: str) -> dict[str, str]:
    """Key -> ETag (unquoted) of every object under prefix/."""
    remote: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents", []):
            remote[obj["Key"]] = obj["ETag"].strip('"')
    return remote
