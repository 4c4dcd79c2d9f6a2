"""A cached Debian root file system prepared like a stock cloud image, for systemd-nspawn guests.

Like Debian's cloud images: user `admin` with passwordless sudo, sshd enabled, python3 without
pip or ensurepip (so `python3 -m venv` fails), and no SSH host keys: each host gets its own
pinned key when it is created (what cloud-init's `ssh_keys` does on a real VM).

`build_cloud_init_image` is a variant with Debian's cloud-init, for hosts whose first boot must be the
cloud's own (user data in a NoCloud seed) rather than keys the harness installs; cached beside the base
image, so other hosts' boots never pay for cloud-init.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from prefect_host.local.common import (
    LocalHostError,
    cache_root,
    file_lock,
    new_staging,
    progress,
    recipe_hash,
    remove_tree,
    require_root_and_tools,
    run,
)

# iptables: Debian's cloud images have it (the bootstrap's metadata guard uses it).
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "ca-certificates",
    "curl",
    "iptables",
)
ADMIN_USER = "admin"
IMAGE_HOSTNAME = "debian"
SUDOERS = f"{ADMIN_USER} ALL=(ALL) NOPASSWD:ALL\n"
# Only the pinned ed25519 key is offered, so a client pinning it can never be handed another type.
SSHD_HOSTKEY_CONFIG = "HostKey /etc/ssh/ssh_host_ed25519_key\n"
# Bump when _prepare changes in a way the file contents above do not show.
PREPARE_REVISION = 2

# The variant that boots like Debian's EC2 AMIs (build_cloud_init_image): cloud-init, reading the user data and
# meta data each host gets in its NOCLOUD_SEED as EC2's metadata service would serve them. iproute2: cloud-init
# reports the network with `ip`, and counts its absence as a recoverable error.
CLOUD_INIT_PACKAGES = ("cloud-init", "iproute2")
# NoCloud alone (None: cloud-init still finishes, without user data, when a host has no seed), so the first boot
# probes no other datasource; no network configuration (the harness gives the guest its address, cloud-init
# would write DHCP for it); the default user (who gets meta data's `public-keys`) is Debian's EC2 one, admin.
CLOUD_INIT_CONFIG = f"""datasource_list: [NoCloud, None]
network: {{config: disabled}}
system_info:
  default_user:
    name: {ADMIN_USER}
"""
CLOUD_INIT_CONFIG_PATH = "etc/cloud/cloud.cfg.d/90-prefect-host-nocloud.cfg"
# Where a host's user-data and meta-data go, in its root file system (cloud-init's NoCloud seed directory).
NOCLOUD_SEED = "var/lib/cloud/seed/nocloud"
# Bump when build_cloud_init_image changes in a way the recipe does not show.
CLOUD_INIT_REVISION = 1

_SUITE = re.compile(r"^[a-z]+$")
# Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters.
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def image_recipe(suite: str = "trixie", extra_packages: Iterable[str] = ()) -> dict:
    """What an image is built from; its hash names the cache entry. Validates the input."""
    if not isinstance(suite, str) or not _SUITE.fullmatch(suite):
        raise LocalHostError(f"suite={suite!r} is not a Debian suite name; use a code name such as 'trixie'.")
    if isinstance(extra_packages, str):
        raise LocalHostError(f"extra_packages={extra_packages!r} must be a list of package names, not a string.")
    extras = sorted(set(extra_packages))
    bad = [p for p in extras if not isinstance(p, str) or not _PACKAGE.fullmatch(p)]
    if bad:
        raise LocalHostError(
            f"extra_packages: {bad!r} are not Debian package names (lower case letters, digits, '+', '-', '.')."
        )
    return {
        "suite": suite,
        "packages": sorted(set(BASE_PACKAGES) | set(extras)),
        "sudoers": SUDOERS,
        "sshd": SSHD_HOSTKEY_CONFIG,
        "revision": PREPARE_REVISION,
    }


def build_image(suite: str = "trixie", extra_packages: Iterable[str] = ()) -> Path:
    """The root file system for `suite` plus `extra_packages`, built once and then reused.
    Never modify the returned tree: hosts boot copies (or overlays) of it."""
    recipe = image_recipe(suite, extra_packages)

    def build(staging: Path, log: Path) -> None:
        run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(recipe['packages'])}", suite, str(staging)],
            what=f"debootstrap of Debian {suite}",
            timeout=1800,
            log=log,
        )
        progress("preparing the image like a cloud image")
        _prepare(staging)

    name = f"{suite}-{recipe_hash(recipe)}"
    return _cached_image(name, f"Debian {suite} image {name} (about a minute, once)", ("debootstrap", "chroot"), build)


def build_cloud_init_image(suite: str = "trixie") -> Path:
    """build_image(suite) plus cloud-init reading a NoCloud seed only (CLOUD_INIT_CONFIG): a host over it boots
    like an EC2 VM once its NOCLOUD_SEED holds user-data and meta-data. Built once, from a copy of the base
    image, and cached beside it (a new base image gets a new variant). Never modify the returned tree."""
    base = build_image(suite)
    recipe = {
        "base": base.name,
        "packages": sorted(CLOUD_INIT_PACKAGES),
        "config": CLOUD_INIT_CONFIG,
        "revision": CLOUD_INIT_REVISION,
    }

    def build(staging: Path, log: Path) -> None:
        run(["cp", "-a", "--reflink=auto", str(base), str(staging)], what=f"copying image {base.name}", timeout=600)
        _apt_install(staging, CLOUD_INIT_PACKAGES, log)
        (staging / CLOUD_INIT_CONFIG_PATH).write_text(CLOUD_INIT_CONFIG)

    name = f"{base.name}-cloud-init-{recipe_hash(recipe)}"
    return _cached_image(name, f"image {name}: {base.name} plus cloud-init (once)", ("chroot", "cp"), build)


def _cached_image(name: str, what: str, tools: tuple[str, ...], build: Callable[[Path, Path], None]) -> Path:
    """images/<name>, built by `build(staging, log)` into a staging tree renamed into place, once: other
    processes wait on the lock and reuse it; a failed build leaves nothing behind."""
    images = cache_root() / "images"
    final = images / name
    if final.is_dir():
        return final
    require_root_and_tools(*tools)
    with file_lock(images / f".{name}.lock"):
        if final.is_dir():  # another process finished it while we waited for the lock
            return final
        staging, log = new_staging(images, name)
        started = time.monotonic()
        progress(f"building {what}; log: {log}")
        try:
            build(staging, log)
            staging.rename(final)
        except BaseException:
            remove_tree(staging)
            raise
        progress(f"image {name} ready in {time.monotonic() - started:.0f} s")
    return final


def _apt_install(root: Path, packages: tuple[str, ...], log: Path) -> None:
    """apt-get install in the image from the Debian mirror its sources name, with this machine's resolver lent
    for the while (the image keeps its empty one: guests have no route out)."""
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)  # never write through a link in the image to this machine's files
    if Path("/etc/resolv.conf").exists():
        shutil.copyfile("/etc/resolv.conf", resolv)
    apt = ["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"]
    try:
        run([*apt, "update"], what="reading the image's package lists", timeout=600, log=log)
        run(
            [*apt, "install", "--yes", "--no-install-recommends", *packages],
            what=f"installing {' '.join(packages)} in the image",
            timeout=1200,
            log=log,
        )
        run([*apt, "clean"], what="emptying the image's package cache", log=log)
    finally:
        resolv.unlink(missing_ok=True)
        resolv.write_text("")


def _chroot(root: Path, *argv: str) -> None:
    run(["chroot", str(root), *argv], what=f"image preparation ({argv[0]})", timeout=300)


def _prepare(root: Path) -> None:
    _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", ADMIN_USER)
    sudoers = root / "etc/sudoers.d/90-admin"
    sudoers.write_text(SUDOERS)
    sudoers.chmod(0o440)
    ssh_dir = root / "home" / ADMIN_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    uid, gid = passwd_ids(root, ADMIN_USER)
    os.chown(ssh_dir, uid, gid)
    (root / "etc/hostname").write_text(f"{IMAGE_HOSTNAME}\n")
    (root / "etc/hosts").write_text(hosts_file(IMAGE_HOSTNAME))
    # Host keys belong to a host, not to the image: each host gets its pinned key at creation.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d/10-prefect-host-hostkey.conf").write_text(SSHD_HOSTKEY_CONFIG)
    _chroot(root, "systemctl", "enable", "ssh.service")
    # Each host gets its own identity; no resolver (the guest has no route out, and a resolver that
    # answers nothing would make every lookup wait for its timeout).
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    _chroot(root, "apt-get", "clean")


def hosts_file(hostname: str) -> str:
    """/etc/hosts naming the host, so sudo never waits on name resolution."""
    return f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def passwd_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise LocalHostError(f"{root} has no user {user!r} in /etc/passwd; it is not a prefect-host image.")
