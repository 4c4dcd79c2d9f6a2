"""Where one local host's things are: the names and addresses of its network slot, and its files.

Slot n: network namespace `ph-<n>`, veth `vh-ph<n>`, 10.77.<n>.0/24 (this machine .1, the guest .2).
Files: ${PREFECT_HOST_CACHE}/hosts/ph-<n>/ (the overlay's layers and root, keys, console log).
LocalHost (machine.py) runs the guest laid out here; guest_setup.py creates what the layout names.
"""

from __future__ import annotations

from pathlib import Path

from prefect_host.local.image import ADMIN_USER

SLOTS = range(1, 255)


class HostLayout:
    """The names, addresses and paths of the host in `slot`, its files in `host_dir`, over `image`."""

    def __init__(self, *, slot: int, host_dir: Path, image: Path):
        self.slot = slot
        self.host_dir = Path(host_dir)
        self.image = Path(image)

    @property
    def name(self) -> str:
        return f"ph-{self.slot}"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def veth(self) -> str:
        return f"vh-ph{self.slot}"

    @property
    def gateway(self) -> str:
        """This machine's address on the guest's link: serve the guest from here."""
        return f"10.77.{self.slot}.1"

    @property
    def address(self) -> str:
        return f"10.77.{self.slot}.2"

    @property
    def ssh_user(self) -> str:
        return ADMIN_USER

    @property
    def root(self) -> Path:
        """The guest's root file system (the overlay of its own layer on the image)."""
        return self.host_dir / "root"

    @property
    def identity_file(self) -> Path:
        """The operator's private key (mode 0600); its public half is admin's authorized key."""
        return self.host_dir / "operator_ed25519"

    @property
    def host_private_key_path(self) -> Path:
        return self.host_dir / "ssh_host_ed25519_key"

    @property
    def host_public_key(self) -> str:
        """The pinned host key as an OpenSSH line, "ssh-ed25519 AAAA..." (no comment)."""
        return " ".join((self.host_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])

    @property
    def log_path(self) -> Path:
        """The guest's console and systemd-nspawn's messages."""
        return self.host_dir / "nspawn.log"
