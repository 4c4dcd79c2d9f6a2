"""Check the server from the laptop over HTTP(S), as a user's browser and client will reach it.

Plain httpx, no Prefect import: these checks must be quick, and they must not depend on the
laptop's Prefect version.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx

from prefect_host.errors import VerifyError

HEALTH_TIMEOUT = 300.0


class HealthTimeout(VerifyError):
    """/api/health did not answer true in time."""


def api_root(api_url: str) -> str:
    """`http://h:4200/api` -> `http://h:4200`: where the UI and /ui-settings are served."""
    url = api_url.rstrip("/")
    return url[: -len("/api")] if url.endswith("/api") else url


def basic_auth(auth_string: str) -> httpx.BasicAuth:
    user, _, password = auth_string.partition(":")
    return httpx.BasicAuth(user, password)


def wait_until_healthy(
    client: httpx.Client,
    api_url: str,
    *,
    timeout: float = HEALTH_TIMEOUT,
    watch: Callable[[], None] | None = None,
    watch_every: float = 5.0,
    poll_every: float = 0.25,
    ready: bool = False,
) -> None:
    """Poll GET {api_url}/health until it answers true, for at most `timeout` seconds. `ready`: GET
    {api_url}/ready until it answers 200 instead (503 while the database is unreachable), which the
    scale-out mode's API (on PostgreSQL) offers.

    `watch` (called every `watch_every` s) may raise to stop early, e.g. when the service on the
    host has crashed, instead of waiting out the whole timeout.
    """
    url = f"{api_url.rstrip('/')}/{'ready' if ready else 'health'}"
    deadline = time.monotonic() + timeout
    next_watch = time.monotonic() + watch_every
    last = "no answer yet"
    while True:
        try:
            response = client.get(url, timeout=5.0)
            if response.status_code == 200 and (ready or response.json() is True):
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except (httpx.HTTPError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        now = time.monotonic()
        if now >= deadline:
            raise HealthTimeout(
                f"GET {url} did not answer {'200' if ready else 'true'} within {timeout:g} s (last: {last})."
            )
        if watch is not None and now >= next_watch:
            watch()
            next_watch = now + watch_every
        time.sleep(poll_every)


def check_server(client: httpx.Client, *, api_url: str, auth_string: str, prefect_version: str) -> None:
    """Auth is enforced, the version is exactly the one installed, and the UI calls `api_url`.

    Over HTTPS the client's TLS verification applies to every request (the caller's httpx client)."""
    api = api_url.rstrip("/")
    version_url = f"{api}/admin/version"
    anonymous = client.get(version_url)
    if anonymous.status_code != 401:
        raise VerifyError(
            f"GET {version_url} without credentials answered HTTP {anonymous.status_code}, "
            "not 401: the server does not enforce basic auth "
            "(PREFECT_SERVER_API_AUTH_STRING is not in effect)."
        )
    authed = client.get(version_url, auth=basic_auth(auth_string))
    if authed.status_code != 200:
        raise VerifyError(
            f"GET {version_url} with the stack's credentials answered HTTP "
            f"{authed.status_code}: the server does not accept prefectAuthString."
        )
    if _json(authed) != prefect_version:
        raise VerifyError(f"The server reports Prefect {_json(authed)!r}, but prefectVersion is {prefect_version!r}.")
    settings_url = f"{api_root(api_url)}/ui-settings"
    response = client.get(settings_url)
    if response.status_code != 200:
        raise VerifyError(f"GET {settings_url} answered HTTP {response.status_code}.")
    ui_api_url = (_json(response) or {}).get("api_url")
    # The browser resolves it against the page's origin: "/api" (what the bootstrap sets) works on
    # every address and port the UI is opened at.
    if not ui_api_url or urllib.parse.urljoin(f"{api_root(api_url)}/", ui_api_url).rstrip("/") != api:
        raise VerifyError(
            f"The UI is configured to call {ui_api_url!r}, not {api_url!r}: browsers would "
            'show "Can\'t connect to Server API" (PREFECT_SERVER_UI_API_URL).'
        )


def ensure_work_pool(
    client: httpx.Client,
    *,
    api_url: str,
    auth_string: str,
    name: str,
    pool_type: str,
    base_job_template: Callable[[], dict[str, Any]],
) -> bool:
    """Create the work pool unless it exists. True when it was created."""
    api = api_url.rstrip("/")
    auth = basic_auth(auth_string)
    existing = client.get(f"{api}/work_pools/{name}", auth=auth)
    if existing.status_code == 200:
        found_type = (_json(existing) or {}).get("type")
        if found_type != pool_type:
            raise VerifyError(
                f"Work pool {name!r} exists with type {found_type!r}, not {pool_type!r}; "
                "delete or rename it, then run the bootstrap again."
            )
        return False
    if existing.status_code != 404:
        raise VerifyError(f"GET {api}/work_pools/{name} answered HTTP {existing.status_code}.")
    created = client.post(
        f"{api}/work_pools/",
        auth=auth,
        json={"name": name, "type": pool_type, "base_job_template": base_job_template()},
    )
    if created.status_code == 409:  # created meanwhile by someone else: fine
        return False
    if created.status_code not in (200, 201):
        raise VerifyError(f"POST {api}/work_pools/ answered HTTP {created.status_code}: {created.text[:300]}")
    return True


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
