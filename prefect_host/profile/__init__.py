"""The laptop side: write a Prefect profile that points at the server, then use it once.

Written with Prefect's own API (prefect.settings.profiles), so other profiles and settings stay
as they are, and PREFECT_HOME / PREFECT_PROFILES_PATH are honoured exactly as Prefect honours
them. Importing Prefect costs about 1.5 s, so this package imports it only inside its functions,
and `python -m prefect_host.profile` runs the whole step in a child process (see `serve`).

The modules, each importing only those listed before it:
  write.py    the profile itself, written into the profiles file
  ca.py       the server's CA certificate beside it, and trusting it in this process
  check.py    the server reached through the profile (and its results block found there)
  blocks.py   the storage blocks registered on the server
  service.py  the child process that answers the bootstrap's requests (`serve`)
"""

from prefect_host.profile.blocks import register_storage_blocks, storage_blocks_current
from prefect_host.profile.ca import store_ca, trusting
from prefect_host.profile.check import (
    ProfileCheck,
    ProfileResult,
    ServerUnreachable,
    check_profile,
    find_results_block,
    newer_client_warning,
    write_and_check,
)
from prefect_host.profile.service import ANSWER_PREFIX, serve
from prefect_host.profile.write import ProfileWritten, results_settings, write_profile

__all__ = [
    "ANSWER_PREFIX",
    "ProfileCheck",
    "ProfileResult",
    "ProfileWritten",
    "ServerUnreachable",
    "check_profile",
    "find_results_block",
    "newer_client_warning",
    "register_storage_blocks",
    "results_settings",
    "serve",
    "storage_blocks_current",
    "store_ca",
    "trusting",
    "write_and_check",
    "write_profile",
]
