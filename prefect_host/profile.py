"""The laptop side: write a Prefect profile that points at the server, then use it once.

Written with Prefect's own API (prefect.settings.profiles), so other profiles and settings stay
as they are, and PREFECT_HOME / PREFECT_PROFILES_PATH are honoured exactly as Prefect honours
them. Importing Prefect costs about 1.5 s, so this module imports it only inside its functions,
and `python -m prefect_host.profile` runs the whole step in a child process (see `serve`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

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


def write_profile(name: str, *, api_url: str, auth_string: str, activate: bool) -> ProfileWritten:
    """Create or update profile `name` with the server's URL and auth string; file mode 0600."""
    try:
        from prefect.settings import (
            PREFECT_API_AUTH_STRING,
            PREFECT_API_KEY,
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
        profiles.update_profile(name, {PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth_string,
                                       PREFECT_API_KEY: None})
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


@dataclass(frozen=True)
class ProfileCheck:
    server_version: str
    laptop_version: str
    warnings: list[str]


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


def write_and_check(name: str, *, api_url: str, auth_string: str, activate: bool) -> ProfileResult:
    """The laptop step: write the profile, then reach the server through it."""
    written = write_profile(name, api_url=api_url, auth_string=auth_string, activate=activate)
    checked = check_profile(name)
    return ProfileResult(name=name, path=str(written.path), active=written.active, changed=written.changed,
                         server_version=checked.server_version,
                         warnings=written.warnings + checked.warnings)


def serve() -> int:
    """`python -m prefect_host.profile`: import Prefect at once, then run one write_and_check whose
    arguments arrive as JSON on stdin (the auth string must not be on a command line), and print
    {"result": ...} or {"error": ...} as the last line. Empty stdin: nothing to do."""
    import prefect.settings.profiles  # noqa: F401  the slow part, done while the parent works

    raw = sys.stdin.read()
    if not raw.strip():
        return 0
    try:
        answer = {"result": asdict(write_and_check(**json.loads(raw)))}
    except PrefectHostError as exc:
        answer = {"error": str(exc)}
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(serve())
