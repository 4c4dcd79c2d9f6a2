"""What the profile and the server hold, read before anything is written: the API, the results
block (bucket and credentials) and the work pool."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

from prefect_host.deploy.request import DeployError


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Prefect's deploy prints tables and hints; this command prints one line per step instead."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def check_profile(expected: str | None):
    """The active profile's settings and name; refuses an unknown --profile and a missing API URL."""
    # Prefect's first import warns on an unknown PREFECT_PROFILE and falls back to another profile;
    # the check below turns that into this command's error instead.
    with contextlib.redirect_stderr(io.StringIO()):
        from prefect.context import get_settings_context

    context = get_settings_context()
    if expected and context.profile.name != expected:
        from prefect.settings import load_profiles

        raise DeployError(
            f"--profile {expected!r}: no such Prefect profile; known: {', '.join(sorted(load_profiles().names))}."
        )
    settings = context.settings
    if not settings.api.url:
        raise DeployError(
            f"profile {context.profile.name!r} has no PREFECT_API_URL: run the bootstrap "
            "(it writes the profile) or pass --profile NAME."
        )
    return settings, context.profile.name


def load_results_block(settings):
    """The profile's results block ("s3-bucket/NAME") as its slug and the loaded S3Bucket block."""
    from prefect_aws import S3Bucket

    slug = settings.results.default_storage_block
    if not slug:
        raise DeployError(
            "the profile has no PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: the bootstrap sets it "
            "to the results block (s3-bucket/<profile>-results) when the stack has a bucket."
        )
    block_type, _, block_name = slug.partition("/")
    if block_type != "s3-bucket" or not block_name:
        raise DeployError(
            f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK={slug!r}: expected s3-bucket/NAME "
            "(the results block the bootstrap registers)."
        )
    try:
        with quiet():
            block = S3Bucket.load(block_name)
    except ValueError:
        raise DeployError(
            f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK={slug!r}: no such block on "
            f"{settings.api.url}; re-run the bootstrap to register it."
        ) from None
    except Exception as exc:  # noqa: BLE001  any other failure is the API's: api_error names it
        raise api_error(settings.api.url, exc) from None
    if getattr(block.credentials, "_block_document_name", None) is None:
        raise DeployError(
            f"block {slug}: its credentials are not a saved AwsCredentials block; re-run the "
            "bootstrap to register the storage blocks."
        )
    return slug, block


def api_error(api_url: str, exc: Exception) -> DeployError:
    """The API's failure as one sentence: refused auth, unreachable, or whatever it said."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code == 401:
        return DeployError(f"Prefect API {api_url} refused the profile's PREFECT_API_AUTH_STRING (HTTP 401).")
    if isinstance(exc, httpx.HTTPError):
        return DeployError(f"Prefect API {api_url}: cannot reach it ({type(exc).__name__}: {exc}).")
    return DeployError(f"Prefect API {api_url}: {type(exc).__name__}: {exc}")


def check_pool(pool: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            pools = ", ".join(sorted(p.name for p in client.read_work_pools())) or "none"
            raise DeployError(f"--pool {pool!r}: no such work pool on the server; existing: {pools}.") from None
