"""Result storage in the stack's bucket: prove the IAM key works, then register Prefect's own blocks.

Block names come from the profile name (`slug` = lowercase, runs of other characters as one dash):
  aws-credentials/<slug>           the IAM user's key (the secret a SecretStr: Prefect shows it masked)
  s3-bucket/<slug>-results         bucket `bucketName`, folder `results/`: the results block
  s3-bucket/<slug>-flows-<key>     one per flow and deployment, folder `flows/<key>/` (prefect_host/deploy/location.py)
The profile points PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK at the results block; deploy.py finds the
bucket and the credentials from there, so the profile alone is enough for a teammate.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prefect_host.errors import PrefectHostError
from prefect_host.outputs import StackOutputs

RESULTS_FOLDER = "results"
FLOWS_FOLDER = "flows"
PROBE_DEADLINE_S = 60.0
# A new key or policy may not be valid everywhere in AWS yet: these answers are worth a retry.
RETRYABLE_S3_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "403"})


class StorageError(PrefectHostError):
    """The bucket refused the IAM key, or the blocks could not be registered."""


def block_slug(profile_name: str) -> str:
    """The profile name as a block name (Prefect allows lowercase letters, digits and dashes)."""
    slug = re.sub(r"[^a-z0-9]+", "-", profile_name.lower()).strip("-")
    if not slug:
        raise StorageError(
            f"profile name {profile_name!r}: needs at least one letter or digit to name the storage blocks after it."
        )
    return slug


@dataclass(frozen=True)
class RegisteredBlocks:
    credentials_slug: str
    results_slug: str
    # The slugs created or overwritten by this call; empty when everything was already as wanted.
    changed: tuple[str, ...]

    def profile_settings(self) -> dict[str, str]:
        """What the laptop profile (and the worker's environment) need for results in S3."""
        return {
            "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": self.results_slug,
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        }


# --- the probe ------------------------------------------------------------------------------------


def s3_client(*, region: str, access_key_id: str, secret_access_key: str, endpoint_url: str | None):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(connect_timeout=5, read_timeout=15, retries={"mode": "standard", "max_attempts": 2}),
    )


def probe_bucket(
    outputs: StackOutputs, *, deadline_s: float = PROBE_DEADLINE_S, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Put, get and delete a small object with the stack's IAM key; returns the attempts it took.

    Auth refusals are retried with capped exponential backoff and jitter until `deadline_s` (a new
    AWS key can take seconds to become valid); then a StorageError names the refused call.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(
        region=outputs.bucket_region,
        access_key_id=outputs.aws_access_key_id,
        secret_access_key=outputs.aws_secret_access_key,
        endpoint_url=outputs.s3_endpoint_url,
    )
    bucket = outputs.bucket_name
    key = f".prefect-host-probe/{uuid.uuid4().hex}"
    body = b"prefect-host storage probe\n"
    where = f"bucket {bucket!r}" + (f" at {outputs.s3_endpoint_url}" if outputs.s3_endpoint_url else "")
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("PutObject", lambda: client.put_object(Bucket=bucket, Key=key, Body=body)),
        ("GetObject", lambda: _read_back(client, bucket, key, body)),
        ("DeleteObject", lambda: client.delete_object(Bucket=bucket, Key=key)),
    ]
    started = time.monotonic()
    attempts = 0
    for call_name, call in calls:
        retry = 0
        while True:
            attempts += 1
            try:
                call()
                break
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "?")
                elapsed = time.monotonic() - started
                delay = _backoff(retry)
                if code not in RETRYABLE_S3_CODES or elapsed + delay > deadline_s:
                    raise StorageError(
                        f"S3 probe: {call_name} on {where} was refused with {code} for access key "
                        f"{outputs.aws_access_key_id} (after {attempts} attempt(s) over {elapsed:.0f} s). "
                        f"{_hint(code)}"
                    ) from None
                sleep(delay)
                retry += 1
            except BotoCoreError as exc:
                raise StorageError(
                    f"S3 probe: {call_name} on {where} failed: {exc}. Check the region "
                    f"{outputs.bucket_region!r} and the S3 endpoint."
                ) from None
    return attempts


def _read_back(client, bucket: str, key: str, body: bytes) -> None:
    got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    if got != body:
        raise StorageError(f"S3 probe: GetObject on bucket {bucket!r} returned other bytes than were put.")


def _backoff(retry: int) -> float:
    """0.5 s doubling up to 8 s; half of each step is random so parallel probes spread out."""
    step = min(8.0, 0.5 * 2**retry)
    return step / 2 + random.uniform(0, step / 2)


def _hint(code: str) -> str:
    if code == "SignatureDoesNotMatch":
        return (
            "The secret key does not belong to this key id: check awsSecretAccessKey in the stack "
            "outputs (`pulumi stack output --json --show-secrets`)."
        )
    if code in ("InvalidAccessKeyId", "InvalidToken"):
        return "The key id is unknown to S3: check awsAccessKeyId in the stack outputs, or whether the key was deleted."
    if code in ("AccessDenied", "403"):
        return "The key is valid but its IAM policy does not allow this call on the bucket."
    if code == "NoSuchBucket":
        return "The bucket does not exist: check bucketName and bucketRegion in the stack outputs."
    return "Check bucketName, bucketRegion and the key in the stack outputs."


# --- the blocks -----------------------------------------------------------------------------------


@contextlib.contextmanager
def prefect_api(api_url: str, auth_string: str | None) -> Iterator[None]:
    """Prefect's client pointed at this API for the block, whatever profile the process has active."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    with temporary_settings(
        updates={PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth_string}, restore_defaults={PREFECT_API_KEY}
    ):
        yield


def register_blocks(api_url: str, auth_string: str, outputs: StackOutputs, profile_name: str) -> RegisteredBlocks:
    """Saves the AwsCredentials and S3Bucket (results/) blocks on the server at api_url.

    Idempotent: a block is saved only when missing or different from what the outputs ask for (read
    back with its secret and compared field by field); a re-run saves nothing and keeps ids.
    """
    from prefect_aws import AwsCredentials, S3Bucket

    slug = block_slug(profile_name)
    credentials_name, results_name = slug, f"{slug}-results"
    client_parameters = {"endpoint_url": outputs.s3_endpoint_url} if outputs.s3_endpoint_url else {}
    changed: list[str] = []
    with prefect_api(api_url, auth_string), _api_errors(api_url):
        credentials = AwsCredentials(
            aws_access_key_id=outputs.aws_access_key_id,
            aws_secret_access_key=outputs.aws_secret_access_key,
            region_name=outputs.bucket_region,
            aws_client_parameters=client_parameters,
        )
        credentials, saved = ensure_block(credentials, credentials_name)
        if saved:
            changed.append(f"aws-credentials/{credentials_name}")
        results = S3Bucket(bucket_name=outputs.bucket_name, bucket_folder=RESULTS_FOLDER, credentials=credentials)
        if ensure_block(results, results_name)[1]:
            changed.append(f"s3-bucket/{results_name}")
    return RegisteredBlocks(
        credentials_slug=f"aws-credentials/{credentials_name}",
        results_slug=f"s3-bucket/{results_name}",
        changed=tuple(changed),
    )


def ensure_block(block, name: str) -> tuple[Any, bool]:
    """Saves block under name unless an equal one is saved there already. Returns the saved block
    (as loaded, so it and its nested blocks carry their document ids) and whether it saved.
    Runs against the current Prefect settings: wrap it in prefect_api() to pick the server."""
    existing = _load_or_none(type(block), name)
    if existing is not None and _comparable(existing) == _comparable(block):
        return existing, False
    block.save(name, overwrite=True)
    return type(block).load(name), True


def _load_or_none(block_type, name: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return block_type.load(name)
    except ValueError as exc:
        if isinstance(exc.__cause__, ObjectNotFound):
            return None
        raise


def _comparable(block) -> Any:
    """The block's fields with secrets revealed, nested blocks as their document id (a reference
    to another saved block counts as equal only when it is the same document)."""
    data = {
        key: value
        for key, value in block.model_dump(mode="json", context={"include_secrets": True}).items()
        if not key.startswith("_")
    }
    for field_name in type(block).model_fields:
        nested = getattr(block, field_name, None)
        if hasattr(nested, "_block_document_id"):
            data[field_name] = {"$ref": str(nested._block_document_id) if nested._block_document_id else None}
    return data


@contextlib.contextmanager
def _api_errors(api_url: str) -> Iterator[None]:
    """Prefect's HTTP errors as one paragraph naming the API and the likely cause."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        yield
    except PrefectHTTPStatusError as exc:
        status = exc.response.status_code
        cause = (
            "the auth string was refused (PREFECT_API_AUTH_STRING must equal the server's "
            "PREFECT_SERVER_API_AUTH_STRING)"
            if status == 401
            else exc.response.text[:300]
        )
        raise StorageError(f"Prefect API {api_url}: HTTP {status} while saving the storage blocks: {cause}.") from None
    except httpx.HTTPError as exc:
        raise StorageError(
            f"Prefect API {api_url}: cannot reach it ({type(exc).__name__}: {exc}); is the server up and the URL right?"
        ) from None
