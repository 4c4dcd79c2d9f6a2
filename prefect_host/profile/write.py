"""Writing the laptop's Prefect profile: the server's URL and auth string, its CA and result storage,
merged into the profiles file with Prefect's own API."""

from __future__ import annotations

import contextlib
import os
import tomllib
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_host.console import mention
from prefect_host.errors import PrefectHostError, ProfileError

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


def write_profile(
    name: str,
    *,
    api_url: str,
    auth_string: str,
    activate: bool,
    results_block: str | None = None,
    ssl_cert_file: str | None = None,
) -> ProfileWritten:
    """Create or update profile `name` with the server's URL and auth string, and with result
    storage in `results_block` when given (otherwise result settings stay as they are); mode 0600.

    `ssl_cert_file`: the CA file the server's certificate is verified against (store_ca); None
    means the default trust store. Verification is never turned off."""
    updates = _profile_updates(
        api_url=api_url, auth_string=auth_string, results_block=results_block, ssl_cert_file=ssl_cert_file
    )
    path = profiles_path("write a profile")
    try:
        profiles, changed = _save_profile(path, name, updates, activate=activate)
    except OSError as exc:
        raise ProfileError(f"Cannot write the Prefect profiles file {path}: {exc.strerror or exc}.") from None
    except ValueError as exc:  # TOML syntax or a setting Prefect rejects, in the existing file
        raise ProfileError(
            f"The Prefect profiles file {path} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); fix or move it, then run "
            "the bootstrap again."
        ) from None
    return ProfileWritten(
        name=name, path=path, active=profiles.active_name == name, changed=changed, warnings=_environment_warnings(name)
    )


def _profile_updates(
    *, api_url: str, auth_string: str, results_block: str | None, ssl_cert_file: str | None
) -> dict[Any, str | None]:
    """The settings write_profile sets (None removes one). Its first import of Prefect, so the place
    to say that Prefect is missing."""
    try:
        import prefect.settings
        from prefect.settings import (
            PREFECT_API_AUTH_STRING,
            PREFECT_API_KEY,
            PREFECT_API_SSL_CERT_FILE,
            PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
            PREFECT_API_URL,
        )
    except ImportError as exc:
        raise ProfileError(
            f"Prefect is not installed in this Python ({exc}); install the server's "
            "version here (pip install prefect==<prefectVersion>) to write the profile."
        ) from None

    # An API key would make the server answer 401 to the basic-auth client, so drop it.
    updates = {
        PREFECT_API_URL: api_url,
        PREFECT_API_AUTH_STRING: auth_string,
        PREFECT_API_KEY: None,
        PREFECT_API_SSL_CERT_FILE: ssl_cert_file,
        PREFECT_API_TLS_INSECURE_SKIP_VERIFY: None,
    }
    if results_block:
        updates |= {
            getattr(prefect.settings, setting): value for setting, value in results_settings(results_block).items()
        }
    return updates


def profiles_path(purpose: str) -> Path:
    """Prefect's profiles file (PREFECT_HOME / PREFECT_PROFILES_PATH honoured); `purpose` completes
    the error when Prefect has none."""
    from prefect.settings import get_current_settings

    path = get_current_settings().profiles_path
    if path is None:
        raise ProfileError(f"Prefect has no profiles path (PREFECT_PROFILES_PATH); cannot {purpose}.")
    return Path(path)


def check_profiles_file() -> None:
    """Raises ProfileError when the profiles file Prefect would read is unreadable or invalid. Prefect's
    import (and every use of its settings) fails on such a file with a traceback, and writing a profile
    there would fail after the host work; so this reads the file itself, without importing Prefect."""
    path = _profiles_path_unimported()
    problem = _profiles_file_problem(path)
    if problem is not None:
        raise ProfileError(
            f"The Prefect profiles file {mention(str(path))} cannot be read ({problem}); fix or move it, "
            "then run the bootstrap again."
        )


@contextlib.contextmanager
def reading_profiles() -> Iterator[None]:
    """Around Prefect's use of the profiles file: a failure that file explains becomes its ProfileError
    (check_profiles_file), as does a setting Prefect refuses (in the active profile or the environment);
    anything else goes on as raised."""
    check_profiles_file()
    try:
        yield
    except PrefectHostError:
        raise
    except Exception as exc:
        check_profiles_file()  # the file changed meanwhile: say so, not Prefect's traceback
        frames = traceback.extract_tb(exc.__traceback__)
        if not any(f"{os.sep}prefect{os.sep}settings{os.sep}" in frame.filename for frame in frames):
            raise
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ProfileError(
            f"Prefect cannot load its settings ({reason if len(reason) <= 300 else reason[:297] + '...'}); fix "
            f"the active profile in {mention(str(_profiles_path_unimported()))} or the PREFECT_ variables in this "
            "shell's environment, then run the bootstrap again."
        ) from None


def _profiles_path_unimported() -> Path:
    """Where Prefect 3 reads its profiles (prefect.settings.sources._get_profiles_path), found without
    importing Prefect, whose import reads the file: PREFECT_PROFILES_PATH from the environment, .env,
    prefect.toml or pyproject.toml in this directory, else PREFECT_HOME/profiles.toml, else ~/.prefect."""
    if os.environ.get("PREFECT_PROFILES_PATH"):
        return Path(os.environ["PREFECT_PROFILES_PATH"])
    with contextlib.suppress(Exception):  # an unreadable .env or TOML file: Prefect's to report
        from dotenv import dotenv_values

        if Path(".env").is_file() and (value := dotenv_values(".env").get("PREFECT_PROFILES_PATH")):
            return Path(value)
    for name, keys in (("prefect.toml", ("profiles_path",)), ("pyproject.toml", ("tool", "prefect", "profiles_path"))):
        with contextlib.suppress(Exception):
            value = tomllib.loads(Path(name).read_text(encoding="utf-8"))
            for key in keys:
                value = value.get(key)
            if isinstance(value, str) and value:
                return Path(value)
    home = os.environ.get("PREFECT_HOME")
    return (Path(home) if home else Path.home() / ".prefect") / "profiles.toml"


def _profiles_file_problem(path: Path) -> str | None:
    """Why Prefect cannot read the profiles file at `path` (None: it can, or there is none)."""
    try:
        if not path.exists():
            return None
        text = path.read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text, byte {exc.start}"
    except tomllib.TOMLDecodeError as exc:
        return f"invalid TOML: {exc}"
    profiles = data.get("profiles", {})
    if not isinstance(data.get("active", ""), str):
        return "`active` must be the name of a profile"
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        return "each profile must be a table of settings, [profiles.NAME]"
    return None


def _save_profile(path: Path, name: str, updates: dict, *, activate: bool):
    """Merges `updates` into profile `name` (and makes it the active one when asked); saves the
    file, mode 0600, only when that changes it. Returns the profiles and whether they changed."""
    from prefect.settings.profiles import load_profiles, save_profiles

    profiles = load_profiles()
    before = (_settings_of(profiles, name), profiles.active_name)
    # update_profile merges into an existing profile (add_profile would refuse the name).
    profiles.update_profile(name, updates)
    if activate:
        profiles.set_active(name)
    changed = not path.exists() or before != (_settings_of(profiles, name), profiles.active_name)
    if path.exists():
        path.chmod(0o600)  # before the secret is written into it
    if changed:
        save_profiles(profiles)
        path.chmod(0o600)
    return profiles, changed


def _environment_warnings(name: str) -> list[str]:
    """What in this shell's environment would keep profile `name` from being the one used."""
    warnings = []
    overriding = [var for var in _OVERRIDING_ENV if os.environ.get(var)]
    if overriding:
        warnings.append(
            f"{', '.join(overriding)} set in this shell's environment override every "
            f"profile; unset them to use profile {name!r}."
        )
    if os.environ.get("PREFECT_PROFILE") and os.environ["PREFECT_PROFILE"] != name:
        warnings.append(
            f"PREFECT_PROFILE={os.environ['PREFECT_PROFILE']} in this shell selects another "
            f"profile; use `PREFECT_PROFILE={name}` or unset it."
        )
    return warnings


def _settings_of(profiles, name: str) -> dict[str, str] | None:
    profile = profiles.profiles_by_name.get(name)
    return profile.to_environment_variables() if profile is not None else None
