"""The laptop side: write a Prefect profile that points at the server, then use it once.

Written with Prefect's own API (prefect.settings.profiles), so other profiles and settings stay
as they are, and PREFECT_HOME / PREFECT_PROFILES_PATH are honoured exactly as Prefect honours
them. Importing Prefect costs about 1.5 s, so this module imports it only inside its functions,
and `python -m prefect_host.profile` runs the whole step in a child process (see `serve`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect_host.errors import PrefectHostError, ProfileError
from prefect_host.storage import RESULTS_FOLDER

# Set in the environment, these win over any profile (Prefect's precedence).
_OVERRIDING_ENV = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY")


@dataclass(frozen=True)
class ProfileWritten:
    name: str
    path: Path
    active: bool
    changed: bool
    warnings: list[str] = field(default_factory=list)


def results_settings(results_block: str) -> dict[str, str]:
    """Results of every flow run persisted to `results_block` ("s3-bucket/NAME"): for the laptop
    profile and for the workers' environment alike."""
    return {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": results_block, "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}


def write_profile(name: str, *, api_url: str, auth_string: str, activate: bool,
                  results_block: str | None = None, ssl_cert_file: str | None = None) -> ProfileWritten:
    """Create or update profile `name` with the server's URL and auth string, and with result
    storage in `results_block` when given (otherwise result settings stay as they are); mode 0600.

    `ssl_cert_file`: the CA file the server's certificate is verified against (store_ca); None
    means the default trust store. Verification is never turned off."""
    try:
        import prefect.settings
        from prefect.settings import (
            PREFECT_API_AUTH_STRING,
            PREFECT_API_KEY,
            PREFECT_API_SSL_CERT_FILE,
            PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
            PREFECT_API_URL,
            get_current_settings,
        )
        from prefect.settings.profiles import load_profiles, save_profiles
    except ImportError as exc:
        raise ProfileError(f"Prefect is not installed in this Python ({exc}); install the server's "
                           "version here (pip install prefect==<prefectVersion>) to write the profile.") from None

    path = get_current_settings().profiles_path
    if path is None:
        raise ProfileError("Prefect has no profiles path (PREFECT_PROFILES_PATH); cannot write a profile.")
    path = Path(path)
    try:
        profiles = load_profiles()
        before = (_settings_of(profiles, name), profiles.active_name)
        # update_profile merges into an existing profile (add_profile would refuse the name);
        # an API key would make the server answer 401 to the basic-auth client, so drop it.
        updates = {PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth_string, PREFECT_API_KEY: None,
                   PREFECT_API_SSL_CERT_FILE: ssl_cert_file, PREFECT_API_TLS_INSECURE_SKIP_VERIFY: None}
        if results_block:
            updates |= {getattr(prefect.settings, setting): value
                        for setting, value in results_settings(results_block).items()}
        profiles.update_profile(name, updates)
        if activate:
            profiles.set_active(name)
        changed = not path.exists() or before != (_settings_of(profiles, name), profiles.active_name)
        if path.exists():
            path.chmod(0o600)  # before the secret is written into it
        if changed:
            save_profiles(profiles)
            path.chmod(0o600)
    except OSError as exc:
        raise ProfileError(f"Cannot write the Prefect profiles file {path}: {exc.strerror or exc}.") from None
    except ValueError as exc:  # TOML syntax or a setting Prefect rejects, in the existing file
        raise ProfileError(f"The Prefect profiles file {path} cannot be read ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}); fix or move it, then run "
                           "the bootstrap again.") from None
    warnings = []
    overriding = [var for var in _OVERRIDING_ENV if os.environ.get(var)]
    if overriding:
        warnings.append(f"{', '.join(overriding)} set in this shell's environment override every "
                        f"profile; unset them to use profile {name!r}.")
    active_name = profiles.active_name
    if os.environ.get("PREFECT_PROFILE") and os.environ["PREFECT_PROFILE"] != name:
        warnings.append(f"PREFECT_PROFILE={os.environ['PREFECT_PROFILE']} in this shell selects another "
                        f"profile; use `PREFECT_PROFILE={name}` or unset it.")
    return ProfileWritten(name=name, path=path, active=active_name == name, changed=changed,
                          warnings=warnings)


def _settings_of(profiles, name: str) -> dict[str, str] | None:
    profile = profiles.profiles_by_name.get(name)
    return profile.to_environment_variables() if profile is not None else None


def store_ca(name: str, pem: str) -> dict[str, Any]:
    """The server's CA certificate beside the profiles file, as `<profile>-ca.pem`, for the
    profile's PREFECT_API_SSL_CERT_FILE. Mode 0644: a CA certificate is public (it holds no key);
    what matters is that only this user can replace it, and the directory is theirs.
    {"path": ..., "changed": bool}."""
    from prefect.settings import get_current_settings

    profiles_path = get_current_settings().profiles_path
    if profiles_path is None:
        raise ProfileError("Prefect has no profiles path (PREFECT_PROFILES_PATH); cannot store the server's CA.")
    path = Path(profiles_path).parent / f"{name}-ca.pem"
    try:
        if path.is_file() and path.read_text() == pem:
            return {"path": str(path), "changed": False}
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(pem)
        staging.chmod(0o644)
        staging.replace(path)
    except OSError as exc:
        raise ProfileError(f"Cannot write the server's CA certificate to {path}: {exc.strerror or exc}.") from None
    return {"path": str(path), "changed": True}


@contextlib.contextmanager
def trusting(ssl_cert_file: str | None) -> Iterator[None]:
    """Prefect's client in this process verifies the server against `ssl_cert_file` (None: as
    configured, by default certifi's bundle)."""
    if ssl_cert_file is None:
        yield
        return
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, temporary_settings

    with temporary_settings(updates={PREFECT_API_SSL_CERT_FILE: ssl_cert_file}):
        yield


@dataclass(frozen=True)
class ProfileCheck:
    server_version: str
    laptop_version: str
    warnings: list[str]


class ServerUnreachable(PrefectHostError):
    """The server did not answer the profile step's request."""


def find_results_block(*, api_url: str, auth_string: str, bucket: str, preferred: str,
                       ssl_cert_file: str | None = None) -> str:
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
    server = Profile(name="prefect-host-lookup", settings={
        PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth_string, PREFECT_API_KEY: None,
        PREFECT_API_SSL_CERT_FILE: ssl_cert_file})
    try:
        with prefect.context.use_profile(server, override_environment_variables=True), \
                get_client(sync_client=True) as client:
            documents = client.read_block_documents_by_type(block_type, include_secrets=False)
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 404:  # 404: the block type is not registered, so no such block
            raise ServerUnreachable(f"{type(exc).__name__}: {exc}") from None
        documents = []
    except Exception as exc:  # any other failure means the server did not answer; say why
        raise ServerUnreachable(f"{type(exc).__name__}: {exc}") from None
    candidates = [d for d in documents if not d.is_anonymous and d.data.get("bucket_name") == bucket
                  and (d.data.get("bucket_folder") or "").strip("/") == RESULTS_FOLDER]
    if not candidates:
        raise ProfileError(f"The server at {api_url} has no results block for bucket {bucket!r} (an S3Bucket "
                           f"block with folder {RESULTS_FOLDER}/, such as {preferred}): the full bootstrap "
                           "(without --client-only) registers it; run it once, or pass --no-storage. "
                           "The profile was not written.")
    chosen = next((d for d in candidates if d.name == preferred_name),
                  max(candidates, key=lambda d: d.updated))
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
        with prefect.context.use_profile(profile, override_environment_variables=True):
            with get_client(sync_client=True) as client:
                server_version = client.api_version()
    except Exception as exc:  # any failure here means the profile does not work; say why
        raise ProfileError(f"Profile {name!r} was written, but the server cannot be reached through it: "
                           f"{type(exc).__name__}: {exc}") from None
    laptop_version = prefect.__version__
    warning = newer_client_warning(laptop_version, server_version)
    return ProfileCheck(server_version=server_version, laptop_version=laptop_version,
                        warnings=[warning] if warning else [])


def newer_client_warning(laptop_version: str, server_version: str) -> str | None:
    """A Prefect client newer than its server sends fields the server forbids (HTTP 422)."""
    from packaging.version import InvalidVersion, Version

    try:
        if Version(laptop_version) <= Version(server_version):
            return None
    except InvalidVersion:
        return None
    return (f"This laptop's Prefect {laptop_version} is newer than the server's {server_version}: the "
            "server rejects newer clients' requests (HTTP 422 extra_forbidden). Install "
            f"prefect=={server_version} here, or raise prefectVersion and run the bootstrap again.")


@dataclass(frozen=True)
class ProfileResult:
    name: str
    path: str
    active: bool
    changed: bool
    server_version: str
    warnings: list[str]
    results_block: str | None = None


def write_and_check(name: str, *, api_url: str, auth_string: str, activate: bool,
                    results_block: str | None = None, find_results_in_bucket: str | None = None,
                    ssl_cert_file: str | None = None) -> ProfileResult:
    """The laptop step: write the profile, then reach the server through it.

    With `find_results_in_bucket` (a teammate's --client-only run), the results block is looked up
    on the server first (`results_block` is the preferred name); none there is an error and
    nothing is written."""
    if find_results_in_bucket and results_block:
        try:
            results_block = find_results_block(api_url=api_url, auth_string=auth_string,
                                               bucket=find_results_in_bucket, preferred=results_block,
                                               ssl_cert_file=ssl_cert_file)
        except ServerUnreachable as exc:
            # As without storage: the profile is written (with the block the bootstrap would have
            # registered), and the error says the server did not answer.
            write_profile(name, api_url=api_url, auth_string=auth_string, activate=activate,
                          results_block=results_block, ssl_cert_file=ssl_cert_file)
            raise ProfileError(f"Profile {name!r} was written, but the server cannot be reached through it: "
                               f"{exc}") from None
    written = write_profile(name, api_url=api_url, auth_string=auth_string, activate=activate,
                            results_block=results_block, ssl_cert_file=ssl_cert_file)
    checked = check_profile(name)
    return ProfileResult(name=name, path=str(written.path), active=written.active, changed=written.changed,
                         server_version=checked.server_version,
                         warnings=written.warnings + checked.warnings, results_block=results_block)


def register_storage_blocks(*, api_url: str, auth_string: str, outputs: dict[str, str],
                            profile_name: str, ssl_cert_file: str | None = None) -> dict[str, Any]:
    """The storage blocks on the server (prefect_host.storage.register_blocks); {"changed": [slugs]}.

    A converged server is recognised with one request and without prefect-aws, whose import costs
    as much as Prefect's (~0.8 s): that keeps a re-run of the bootstrap under 3 s."""
    from prefect_host.outputs import StackOutputs
    from prefect_host.storage import register_blocks

    stack = StackOutputs.from_mapping(outputs)
    with trusting(ssl_cert_file):
        if storage_blocks_current(api_url=api_url, auth_string=auth_string, outputs=stack,
                                  profile_name=profile_name):
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
    except Exception:  # not there, or unreadable: register_blocks saves it or reports the error
        return False
    reference = (results.block_document_references.get("credentials") or {}).get("block_document") or {}
    credentials = results.data.get("credentials") or {}
    return (results.data.get("bucket_name") == outputs.bucket_name
            and results.data.get("bucket_folder") == RESULTS_FOLDER
            and reference.get("name") == slug
            and credentials.get("aws_access_key_id") == outputs.aws_access_key_id
            and credentials.get("aws_secret_access_key") == outputs.aws_secret_access_key
            and credentials.get("region_name") == outputs.bucket_region
            and (credentials.get("aws_client_parameters") or {}).get("endpoint_url") == outputs.s3_endpoint_url)


ANSWER_PREFIX = "prefect-host-answer "
_OPERATIONS = {
    "store_ca": lambda request: store_ca(**request),
    "profile": lambda request: asdict(write_and_check(**request)),
    "register_storage_blocks": lambda request: register_storage_blocks(**request),
}


def serve() -> int:
    """`python -m prefect_host.profile`: import Prefect at once, then answer requests, one JSON
    object per stdin line ({"op": ..., arguments}; the auth string and keys must not be on a command
    line), each with one stdout line: ANSWER_PREFIX and {"result": ...} or {"error": ...}. Ends at
    the end of stdin."""
    import prefect.client.orchestration  # noqa: F401  the slow part, done while the parent works

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        operation = _OPERATIONS[request.pop("op")]
        try:
            answer = {"result": operation(request)}
        except PrefectHostError as exc:
            answer = {"error": str(exc)}
        print(ANSWER_PREFIX + json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve())
