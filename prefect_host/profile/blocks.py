"""The storage blocks on the server, registered from the laptop unless they are current already."""

from __future__ import annotations

from typing import Any

from prefect_host.profile.ca import trusting
from prefect_host.storage import RESULTS_FOLDER


def register_storage_blocks(
    *, api_url: str, auth_string: str, outputs: dict[str, str], profile_name: str, ssl_cert_file: str | None = None
) -> dict[str, Any]:
    """The storage blocks on the server (prefect_host.storage.register_blocks); {"changed": [slugs]}.

    A converged server is recognised with one request and without prefect-aws, whose import costs
    as much as Prefect's (~0.8 s): that keeps a re-run of the bootstrap under 3 s."""
    from prefect_host.outputs import StackOutputs
    from prefect_host.storage import register_blocks

    stack = StackOutputs.from_mapping(outputs)
    with trusting(ssl_cert_file):
        if storage_blocks_current(api_url=api_url, auth_string=auth_string, outputs=stack, profile_name=profile_name):
            return {"changed": []}
        return {"changed": list(register_blocks(api_url, auth_string, stack, profile_name).changed)}


def storage_blocks_current(*, api_url: str, auth_string: str, outputs, profile_name: str) -> bool:
    """True when the results block register_blocks saves for `profile_name` exists with the stack's
    bucket and folder, referencing the credentials block of that name holding the stack's key,
    region and endpoint. Any doubt (missing block, an error) is False: register_blocks decides."""
    from prefect.client.orchestration import get_client

    from prefect_host.storage import block_slug, prefect_api

    slug = block_slug(profile_name)
    try:
        with prefect_api(api_url, auth_string), get_client(sync_client=True) as client:
            results = client.read_block_document_by_name(f"{slug}-{RESULTS_FOLDER}", "s3-bucket", include_secrets=True)
    except Exception:  # noqa: BLE001  not there, or unreadable: register_blocks saves it or reports the error
        return False
    reference = (results.block_document_references.get("credentials") or {}).get("block_document") or {}
    credentials = results.data.get("credentials") or {}
    return (
        results.data.get("bucket_name") == outputs.bucket_name
        and results.data.get("bucket_folder") == RESULTS_FOLDER
        and reference.get("name") == slug
        and credentials.get("aws_access_key_id") == outputs.aws_access_key_id
        and credentials.get("aws_secret_access_key") == outputs.aws_secret_access_key
        and credentials.get("region_name") == outputs.bucket_region
        and (credentials.get("aws_client_parameters") or {}).get("endpoint_url") == outputs.s3_endpoint_url
    )
