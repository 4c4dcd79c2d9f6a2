"""A profiles file of the test's own, for the tests below this folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def profiles_path(tmp_path, monkeypatch) -> Path:
    from prefect.settings import PREFECT_PROFILES_PATH, temporary_settings

    for var in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "prefect" / "profiles.toml"
    with temporary_settings({PREFECT_PROFILES_PATH: path}):
        yield path
