"""What the bootstrap warns about, once the inputs are valid: an outputs file others may read, a
package source without TLS."""

from __future__ import annotations

import os
import shlex
import stat
import urllib.parse

from prefect_host.console import redact_url, shown, url_password


def outputs_file_warnings(outputs_file: str | None) -> list[str]:
    """An outputs file holds the stack's secrets (auth string, keys): like ssh with a private key,
    say so when others than its owner may read it."""
    if not outputs_file:
        return []
    try:
        mode = os.stat(outputs_file).st_mode
    except OSError:
        return []  # resolve_inputs has read it; a file gone since is not this check's business
    if not mode & 0o077:
        return []
    return [
        f"--outputs {shown(outputs_file)} is readable by others than you (mode {stat.S_IMODE(mode):04o}); it holds "
        f"the stack's secrets: chmod 600 {shlex.quote(outputs_file)} (and write it with `umask 077` next time)."
    ]


def package_source_warnings(index_url: str | None, find_links: str | None) -> list[str]:
    """What to tell the operator about --index-url / --find-links (checked by resolve_inputs)."""
    warnings = []
    for flag, url in (("--index-url", index_url), ("--find-links", find_links)):
        if url and urllib.parse.urlsplit(url).scheme == "http":
            warnings.append(
                f"{flag} {shown(redact_url(url))} is plain http://: the host installs uv and Prefect from it "
                "unencrypted" + (", and its credentials cross the network in clear text." if url_password(url) else ".")
            )
    return warnings
