"""Debian packages for a guest without internet: a cached flat apt repository holding some
packages and everything they depend on, and an HTTP server that offers it to the guest in place
of the Debian mirror (as a cloud image uses its provider's mirror).

It is built on this machine, whatever its own release, with apt run against a private state
directory: sources for the guest's suite, an empty dpkg status (so apt fetches the whole
dependency closure: the repository works for any image of that suite, at the price of a few MB of
packages the image already has) and the host's apt configuration otherwise (its proxy and
mirror settings apply). The repository is unsigned: the guest's source line says
`[trusted=yes]`, acceptable for a test repository served on a private veth.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from prefect_host.local.common import (
    INSTALL_HINT,
    LocalHostError,
    cache_root,
    file_lock,
    new_staging,
    progress,
    recipe_hash,
    remove_tree,
    run,
)
from prefect_host.local.package_index import PackageIndex

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Bump when the way the repository is made changes in a way the recipe does not show.
REPO_REVISION = 1

_SUITE = re.compile(r"^[a-z]+$")
# Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters.
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def _validate(packages: Sequence[str], suite: str) -> list[str]:
    if isinstance(packages, str) or not packages:
        raise LocalHostError(
            f"packages={packages!r} must be a non-empty list of Debian package names such as ['caddy']."
        )
    bad = [p for p in packages if not isinstance(p, str) or not _PACKAGE.fullmatch(p)]
    if bad:
        raise LocalHostError(
            f"packages: {bad!r} are not Debian package names (lower case letters, digits, '+', '-', '.')."
        )
    if not isinstance(suite, str) or not _SUITE.fullmatch(suite):
        raise LocalHostError(f"suite={suite!r} is not a Debian suite name; use a code name such as 'trixie'.")
    return sorted(set(packages))


def _architecture() -> str:
    return run(["dpkg", "--print-architecture"], what="reading this machine's architecture").stdout.strip()


def _sources(suite: str, architecture: str) -> str:
    """The suite as a cloud image's sources name it: main, its point updates and security."""
    options = f"[arch={architecture} signed-by={DEBIAN_KEYRING}]"
    return (
        f"deb {options} {DEBIAN_MIRROR} {suite} main\n"
        f"deb {options} {DEBIAN_MIRROR} {suite}-updates main\n"
        f"deb {options} {DEBIAN_SECURITY_MIRROR} {suite}-security main\n"
    )


def _apt_options(state: Path, architecture: str) -> list[str]:
    """apt pointed at a private state: nothing of the host's package lists, cache or installed
    set is read or changed."""
    settings = {
        "Dir::Etc::SourceList": state / "sources.list",
        "Dir::Etc::SourceParts": state / "sources.list.d",
        "Dir::Etc::Preferences": state / "preferences",
        "Dir::Etc::PreferencesParts": state / "preferences.d",
        "Dir::State": state / "state",
        "Dir::State::Lists": state / "lists",
        "Dir::State::status": state / "status",
        "Dir::Cache": state / "cache",
        "Dir::Cache::Archives": state / "archives",
        "APT::Architecture": architecture,
        "APT::Architectures": architecture,
        # The host's hooks (PackageKit, AppStream) are about the host's own package lists.
        "APT::Update::Post-Invoke-Success": "",
        "DPkg::Post-Invoke": "",
    }
    return [f"-o{key}={value}" for key, value in settings.items()]


def _release_file(repo: Path, suite: str, architecture: str) -> str:
    """A Release file for the flat repository: apt wants one even for a trusted source."""
    date = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")
    lines = [
        "Origin: prefect-host",
        "Label: prefect-host test packages",
        f"Codename: {suite}",
        f"Date: {date}",
        f"Architectures: {architecture} all",
        "Description: packages for a prefect-host test guest without internet",
    ]
    for field, algorithm in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        lines.append(f"{field}:")
        for name in ("Packages", "Packages.gz"):
            data = (repo / name).read_bytes()
            lines.append(f" {hashlib.new(algorithm, data).hexdigest()} {len(data)} {name}")
    return "\n".join(lines) + "\n"


def packages_in(repo: Path) -> dict[str, str]:
    """Package name -> version, as the repository's Packages index lists them."""
    found: dict[str, str] = {}
    for stanza in (repo / "Packages").read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if "Package" in fields:
            found[fields["Package"]] = fields.get("Version", "")
    return found


def ensure_apt_repo(packages: Sequence[str] = ("caddy",), suite: str = "trixie") -> Path:
    """A flat apt repository with `packages` and their whole dependency closure for Debian
    `suite` on this machine's architecture; downloaded once per package list and suite."""
    wanted = _validate(packages, suite)
    for tool in ("apt-get", "dpkg-scanpackages"):
        if shutil.which(tool) is None:
            raise LocalHostError(f"`{tool}` is needed to build the guest's apt repository; {INSTALL_HINT}.")
    if not Path(DEBIAN_KEYRING).is_file():
        raise LocalHostError(f"{DEBIAN_KEYRING} is missing (package debian-archive-keyring); {INSTALL_HINT}.")
    architecture = _architecture()
    recipe = {
        "packages": wanted,
        "suite": suite,
        "architecture": architecture,
        "sources": _sources(suite, architecture),
        "revision": REPO_REVISION,
    }
    repos = cache_root() / "apt"
    name = f"{suite}-{recipe_hash(recipe)}"
    final = repos / name
    if (final / "Release").is_file():
        return final
    with file_lock(repos / f".{name}.lock"):
        if (final / "Release").is_file():
            return final
        staging, log = new_staging(repos, name)
        started = time.monotonic()
        progress(f"downloading Debian {suite} packages {' '.join(wanted)} with dependencies (once; log: {log})")
        try:
            _build(staging, wanted, suite, architecture, log)
            staging.rename(final)
        except BaseException:
            remove_tree(staging)
            raise
        progress(
            f"apt repository {name} ready ({len(packages_in(final))} packages) in {time.monotonic() - started:.0f} s"
        )
    return final


def _build(staging: Path, wanted: list[str], suite: str, architecture: str, log: Path) -> None:
    state = staging / "apt-state"
    for directory in ("sources.list.d", "preferences.d", "state", "lists/partial", "cache", "archives/partial"):
        (state / directory).mkdir(parents=True)
    (state / "sources.list").write_text(_sources(suite, architecture))
    (state / "status").write_text("")
    apt = ["apt-get", "-q", *_apt_options(state, architecture)]
    run([*apt, "update"], what=f"reading the Debian {suite} package lists", timeout=600, log=log)
    run(
        [*apt, "install", "--download-only", "--no-install-recommends", "--yes", *wanted],
        what=f"downloading {' '.join(wanted)} for Debian {suite}",
        timeout=900,
        log=log,
    )
    for deb in (state / "archives").glob("*.deb"):
        deb.rename(staging / deb.name)
    remove_tree(state)
    # Run in the repository so the index names each file relative to it (./name.deb).
    scan = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=staging,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if scan.returncode != 0:
        raise LocalHostError(
            f"indexing the apt repository: dpkg-scanpackages exited with {scan.returncode}:\n"
            f"{scan.stderr.strip()[-2000:]}"
        )
    index = scan.stdout
    (staging / "Packages").write_text(index)
    with gzip.open(staging / "Packages.gz", "wt") as compressed:
        compressed.write(index)
    missing = [p for p in wanted if p not in packages_in(staging)]
    if missing:
        raise LocalHostError(f"apt downloaded no package named {missing} for Debian {suite}; see {log}.")
    (staging / "Release").write_text(_release_file(staging, suite, architecture))


class AptRepoServer:
    """Serves a repository from ensure_apt_repo() over HTTP on `bind_address` (the host side of
    a guest's veth) on a free port. `source_line` is the guest's whole apt source."""

    def __init__(self, directory: Path, bind_address: str):
        directory = Path(directory)
        if not (directory / "Release").is_file():
            raise LocalHostError(
                f"AptRepoServer: {directory} is not an apt repository from ensure_apt_repo() (no Release file)."
            )
        self._index = PackageIndex(directory, bind_address)

    @property
    def url(self) -> str:
        return self._index.url

    @property
    def source_line(self) -> str:
        """One-line-style source for /etc/apt/sources.list (unsigned test repository)."""
        return f"deb [trusted=yes] {self.url} ./"

    def close(self) -> None:
        self._index.close()

    def __enter__(self) -> AptRepoServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
