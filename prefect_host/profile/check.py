"""Reaching the server from the laptop: its results block, the written profile's check, and the
whole laptop step (write, then check)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect_host.errors import PrefectHostError, ProfileError
from prefect_host.profile.write import reading_profiles, write_profile
from prefect_host.storage import RESULTS_FOLDER


@dataclass(frozen=True)
class ProfileCheck:
    server_version: str
    laptop_version: str
    warnings: list[str]


class ServerUnreachable(PrefectHostError):
    """The server did not answer the profile step's request."""


def find_results_block(
    *, api_url: str, auth_string: str, bucket: str, preferred: str, ssl_cert_file: str | None = None
) -> str:
    """The results block on the server for `bucket`: `preferred` ("s3-bucket/NAME") when it is one,
    else the newest S3Bucket block on that bucket with folder results/ (the bootstrap names the
    block after the operator's profile, which a teammate's profile name may not match).

    Raises ServerUnreachable when the server cannot be asked, ProfileError when it has none."""
    import prefect.context
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_KEY,
        PREFECT_API_SSL_CERT_FILE,
        PREFECT_API_URL,
    )
    from prefect.settings.profiles import Profile

    block_type, _, preferred_name = preferred.partition("/")
    server = Profile(
        name="prefect-host-lookup",
        settings={
            PREFECT_API_URL: api_url,
            PREFECT_API_AUTH_STRING: auth_string,
            PREFECT_API_KEY: None,
            PREFECT_API_SSL_CERT_FILE: ssl_cert_file,
        },
    )
    try:
        with (
            prefect.context.use_profile(server, override_environment_variables=True),
            get_client(sync_client=True) as client,
        ):
            documents = client.read_block_documents_by_type(block_type, include_secrets=False)
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 404:  # 404: the block type is not registered, so no such block
            raise ServerUnreachable(f"{type(exc).__name__}: {exc}") from None
        documents = []
    except Exception as exc:  # noqa: BLE001  any other failure means the server did not answer; say why
        raise ServerUnreachable(f"{type(exc).__name__}: {exc}") from None
    candidates = [
        d
        for d in documents
        if not d.is_anonymous
        and d.data.get("bucket_name") == bucket
        and (d.data.get("bucket_folder") or "").strip("/") == RESULTS_FOLDER
    ]
    if not candidates:
        raise ProfileError(
            f"The server at {api_url} has no results block for bucket {bucket!r} (an S3Bucket "
            f"block with folder {RESULTS_FOLDER}/, such as {preferred}): the full bootstrap "
            "(without --client-only) registers it; run it once, or pass --no-storage. "
            "The profile was not written."
        )
    chosen = next((d for d in candidates if d.name == preferred_name), max(candidates, key=lambda d: d.updated))
    return f"{block_type}/{chosen.name}"


def check_profile(name: str) -> ProfileCheck:
    """Reach the server through the saved profile with Prefect's own client (auth included)."""
    import prefect
    import prefect.context
    from prefect.client.orchestration import get_client
    from prefect.settings.profiles import load_profiles

    profile = load_profiles()[name]
    try:
        # The profile's own values, even where this shell's environment would override them.
        with (
            prefect.context.use_profile(profile, override_environment_variables=True),
            get_client(sync_client=True) as client,
        ):
            server_version = client.api_version()
    except Exception as exc:  # noqa: BLE001  any failure here means the profile does not work; say why
        raise ProfileError(
            f"Profile {name!r} was written, but the server cannot be reached through it: {type(exc).__name__}: {exc}"
        ) from None
    laptop_version = prefect.__version__
    warning = newer_client_warning(laptop_version, server_version)
    return ProfileCheck(
        server_version=server_version, laptop_version=laptop_version, warnings=[warning] if warning else []
    )


def newer_client_warning(laptop_version: str, server_version: str) -> str | None:
    """A Prefect client newer than its server sends fields the server forbids (HTTP 422)."""
    from packaging.version import InvalidVersion, Version

    try:
        if Version(laptop_version) <= Version(server_version):
            return None
    except InvalidVersion:
        return None
    return (
        f"This laptop's Prefect {laptop_version} is newer than the server's {server_version}: the "
        "server rejects newer clients' requests (HTTP 422 extra_forbidden). Install "
        f"prefect=={server_version} here, or raise prefectVersion and run the bootstrap again."
    )


@dataclass(frozen=True)
class ProfileResult:
    name: str
    path: str
    active: bool
    changed: bool
    server_version: str
    warnings: list[str]
    results_block: str | None = None


@reading_profiles()
def write_and_check(
    name: str,
    *,
    api_url: str,
    auth_string: str,
    activate: bool,
    results_block: str | None = None,
    find_results_in_bucket: str | None = None,
    ssl_cert_file: str | None = None,
) -> ProfileResult:
    """The laptop step: write the profile, then reach the server through it.

    With `find_results_in_bucket` (a teammate's --client-only run), the results block is looked up
    on the server first (`results_block` is the preferred name); none there is an error and
    nothing is written. An unreadable or invalid profiles file is a ProfileError before anything is done."""
    unreachable: ServerUnreachable | None = None
    if find_results_in_bucket and results_block:
        try:
            results_block = find_results_block(
                api_url=api_url,
                auth_string=auth_string,
                bucket=find_results_in_bucket,
                preferred=results_block,
                ssl_cert_file=ssl_cert_file,
            )
        except ServerUnreachable as exc:
            # As without storage: the profile is still written (with the block the bootstrap would
            # have registered), and the error says the server did not answer.
            unreachable = exc
    written = write_profile(
        name,
        api_url=api_url,
        auth_string=auth_string,
        activate=activate,
        results_block=results_block,
        ssl_cert_file=ssl_cert_file,
    )
    if unreachable is not None:
        raise ProfileError(f"Profile {name!r} was written, but the server cannot be reached through it: {unreachable}")
    checked = check_profile(name)
    return ProfileResult(
        name=name,
        path=str(written.path),
        active=written.active,
        changed=written.changed,
        server_version=checked.server_version,
        warnings=written.warnings + checked.warnings,
        results_block=results_block,
    )
