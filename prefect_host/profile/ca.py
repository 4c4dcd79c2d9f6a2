"""The server's CA certificate on the laptop: stored beside the profiles, and trusted by Prefect's client
in this process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from prefect_host.errors import ProfileError
from prefect_host.profile.write import profiles_path, reading_profiles


def store_ca(name: str, pem: str) -> dict[str, Any]:
    """The server's CA certificate beside the profiles file, as `<profile>-ca.pem`, for the
    profile's PREFECT_API_SSL_CERT_FILE. Mode 0644: a CA certificate is public (it holds no key);
    what matters is that only this user can replace it, and the directory is theirs.
    {"path": ..., "changed": bool}."""
    with reading_profiles():
        path = profiles_path("store the server's CA").parent / f"{name}-ca.pem"
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
