"""What the cloud gives a new VM, done for a local guest before its first boot: a free network slot
and its link, a writable root file system over the cached image, its hostname and machine id, an
operator key pair for `admin` and a pinned ED25519 host key (like pulumi-tls + cloud-init `ssh_keys`)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prefect_host.local.common import LocalHostError, remove_tree, run
from prefect_host.local.host_layout import SLOTS, HostLayout
from prefect_host.local.image import ADMIN_USER, hosts_file, passwd_ids


def claim_slot(hosts: Path) -> int:
    """The first free slot, claimed by creating its network namespace (creation fails if another
    process got there first). Callers hold the hosts lock; other tools may not."""
    # `ip -o -4 addr show` lines: "2: eth0    inet 10.0.0.5/24 brd ..."; the fourth word is the address.
    used = [
        ipaddress.ip_interface(line.split()[3]).network
        for line in run(["ip", "-o", "-4", "addr", "show"], what="listing addresses").stdout.splitlines()
    ]
    for slot in SLOTS:
        name = f"ph-{slot}"
        if (Path("/run/netns") / name).exists() or Path(f"/sys/class/net/vh-ph{slot}").exists():
            continue
        if any(ipaddress.ip_network(f"10.77.{slot}.0/24").overlaps(network) for network in used):
            continue
        if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
            continue
        remove_tree(hosts / name)  # a leftover of a host whose removal was cut short
        return slot
    raise LocalHostError(
        "All 254 local host slots (network namespaces ph-1..ph-254) are in use; "
        "remove unused ones with `ip netns del ph-<n>`."
    )


def set_up_network(host: HostLayout) -> None:
    """The veth pair between this machine and the host's (claimed) namespace, the guest's default route via us."""
    cidr = "/24"
    steps = [
        ["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "host0", "netns", host.netns],
        ["ip", "addr", "add", host.gateway + cidr, "dev", host.veth],
        ["ip", "link", "set", host.veth, "up"],
        ["ip", "-n", host.netns, "addr", "add", host.address + cidr, "dev", "host0"],
        ["ip", "-n", host.netns, "link", "set", "host0", "up"],
        ["ip", "-n", host.netns, "link", "set", "lo", "up"],
        ["ip", "-n", host.netns, "route", "add", "default", "via", host.gateway],
    ]
    for argv in steps:
        run(argv, what=f"network for {host.name}")


def mount_root(host: HostLayout) -> None:
    for part in ("upper", "work", "root"):
        (host.host_dir / part).mkdir()
    options = f"lowerdir={host.image},upperdir={host.host_dir / 'upper'},workdir={host.host_dir / 'work'}"
    run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(host.root)],
        what=f"overlay root file system for {host.name}",
    )


def install_keys(host: HostLayout) -> None:
    """What the cloud gives a VM at first boot: its hostname, a machine id, admin's authorized
    key and the pinned host key (the only one sshd offers)."""
    operator_private, operator_public = _ed25519_pair(f"operator@{host.name}")
    _write_secret(host.identity_file, operator_private)
    host.identity_file.with_suffix(".pub").write_text(operator_public + "\n")
    host_private, host_public = _ed25519_pair(f"root@{host.name}")
    _write_secret(host.host_private_key_path, host_private)
    (host.host_dir / "ssh_host_ed25519_key.pub").write_text(host_public + "\n")

    uid, gid = passwd_ids(host.root, ADMIN_USER)
    _write_secret(host.root / "home" / ADMIN_USER / ".ssh/authorized_keys", (operator_public + "\n").encode(), uid, gid)
    _write_secret(host.root / "etc/ssh/ssh_host_ed25519_key", host_private)
    (host.root / "etc/ssh/ssh_host_ed25519_key.pub").write_text(host_public + "\n")
    (host.root / "etc/hostname").write_text(f"{host.name}\n")
    (host.root / "etc/hosts").write_text(hosts_file(host.name))
    (host.root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")


def _ed25519_pair(comment: str) -> tuple[bytes, str]:
    """(private key in OpenSSH PEM form, public key as an OpenSSH line "ssh-ed25519 AAAA... comment")."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def _write_secret(path: Path, data: bytes, uid: int = 0, gid: int = 0) -> None:
    """Creates a file readable by its owner only, from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        os.fchown(handle.fileno(), uid, gid)
        handle.write(data)
