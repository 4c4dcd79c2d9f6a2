"""Text shared by the services' systemd files: environment files and the sandbox block.

Env files hold secrets (the auth string), so they are root-owned 0600 and read by systemd
(EnvironmentFile=) before it drops to the service user; units hold no secret.
"""

from __future__ import annotations

from collections.abc import Mapping

HEADER = "# Written by prefect-host's bootstrap; a change here is overwritten by the next run."


def env_value(value: str) -> str:
    """Quote a value for a systemd EnvironmentFile.

    Inside single quotes systemd takes every character literally; a value that itself holds a
    single quote goes in double quotes, where systemd honours backslash escapes for \\ " ` $.
    """
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("environment values cannot contain line breaks or NUL")
    if "'" not in value:
        return f"'{value}'"
    escaped = "".join("\\" + c if c in '\\"`$' else c for c in value)
    return f'"{escaped}"'


def env_file_text(settings: Mapping[str, str]) -> str:
    lines = [HEADER] + [f"{name}={env_value(value)}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def sandbox_block(
    *,
    inaccessible: tuple[str, ...] = (),
    proc_subset: bool = True,
    address_families: str = "AF_INET AF_INET6 AF_UNIX",
    remove_ipc: bool = True,
    denied_calls: str = "@privileged @resources",
) -> str:
    """The [Service] sandbox of a Prefect process: no privileges, a read-only system, no devices,
    no kernel knobs, its own /tmp, other processes invisible. The knobs are what flow code needs
    where the server needs less (see the worker unit)."""
    lines = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes"]
    if inaccessible:
        lines.append("InaccessiblePaths=" + " ".join(f"-{path}" for path in inaccessible))
    lines += [
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "PrivateUsers=yes",
        "ProtectHostname=yes",
        "ProtectClock=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectProc=invisible",
    ]
    if proc_subset:
        lines.append("ProcSubset=pid")
    lines += [
        f"RestrictAddressFamilies={address_families}",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ]
    if remove_ipc:
        lines.append("RemoveIPC=yes")
    lines += [
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "DevicePolicy=closed",
        "KeyringMode=private",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        f"SystemCallFilter=~{denied_calls}",
        "SystemCallErrorNumber=EPERM",
    ]
    return "\n".join(lines) + "\n"
