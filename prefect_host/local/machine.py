"""A booted Debian guest on this machine, standing in for a fresh cloud VM.

Each host gets a network slot n (netns `ph-<n>`, veth `vh-ph<n>`, 10.77.<n>.0/24: this machine is
.1, the guest .2), its own writable layer over the cached image (an overlay mount: the image stays
clean and a new host costs milliseconds instead of a copy), an operator key pair for `admin` and a
pinned ED25519 host key, like pulumi-tls + cloud-init `ssh_keys` give a real VM. The guest runs
systemd as PID 1 under systemd-nspawn and has no route to the internet.

Everything a host owns lives under ${PREFECT_HOST_CACHE}/hosts/ph-<n>/ and is recorded in its
state.json, so a host left behind by a killed process is removed by the next `LocalHost.create`,
and `make demo-down` can remove a host that `make demo` left running (`save_state`/`from_state`).

Where a host's things are is host_layout.py; creating them before the first boot, guest_setup.py;
its state file, host_state.py.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from prefect_host.local.common import (
    LocalHostError,
    cache_root,
    file_lock,
    process_alive,
    process_start_time,
    progress,
    remove_tree,
    require_root_and_tools,
    run,
)
from prefect_host.local.guest_cgroup import in_own_cgroup, remove_cgroups
from prefect_host.local.guest_setup import claim_slot, install_keys, mount_root, set_up_network
from prefect_host.local.host_layout import HostLayout
from prefect_host.local.host_state import read_state_file, write_state_file
from prefect_host.local.image import ADMIN_USER, build_image, passwd_ids

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LocalHost(HostLayout):
    """One guest. Create with `LocalHost.create()`, then `boot()`. As a context manager (and at
    interpreter exit) it is destroyed, unless `save_state()` handed it over to a state file."""

    def __init__(
        self,
        *,
        slot: int,
        host_dir: Path,
        image: Path,
        nspawn_pid: int | None = None,
        nspawn_start: int | None = None,
        owner_pid: int | None = None,
        owner_start: int | None = None,
    ):
        super().__init__(slot=slot, host_dir=host_dir, image=image)
        self._nspawn_pid = nspawn_pid
        self._nspawn_start = nspawn_start
        self._owner_pid = owner_pid
        self._owner_start = owner_start
        self._process: subprocess.Popen | None = None  # set when this process started nspawn

    @property
    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return process_alive(self._nspawn_pid, self._nspawn_start)

    @property
    def _state_file(self) -> Path:
        return self.host_dir / "state.json"

    # --- creation --------------------------------------------------------------------------
    @classmethod
    def create(cls, image: Path | None = None) -> LocalHost:
        """A new, not yet booted host over `image` (default: `build_image()`, Debian 13)."""
        require_root_and_tools("systemd-nspawn", "ip", "nsenter", "mount", "umount")
        image = Path(image).resolve() if image is not None else build_image()
        if not (image / "etc/passwd").is_file():
            raise LocalHostError(f"image={str(image)!r} is not a root file system built by build_image().")
        passwd_ids(image, ADMIN_USER)  # fails clearly on a foreign image, before anything is changed
        hosts = cache_root() / "hosts"
        with file_lock(hosts / ".lock"):
            reap_orphans()
            slot = claim_slot(hosts)
            me = os.getpid()
            host = cls(
                slot=slot, host_dir=hosts / f"ph-{slot}", image=image, owner_pid=me, owner_start=process_start_time(me)
            )
            atexit.register(host._destroy_at_exit)
            try:
                host.host_dir.mkdir(mode=0o700)
                host._save_own_state()
            except BaseException:
                host.destroy()
                raise
        try:
            set_up_network(host)
            mount_root(host)
            install_keys(host)
        except BaseException:
            host.destroy()
            raise
        return host

    # --- running -----------------------------------------------------------------------------
    def boot(self, timeout: float = 120) -> None:
        """Starts the guest and returns once SSH answers and systemd reports the boot finished."""
        if self.is_running:
            raise LocalHostError(f"{self.name} is already running.")
        if not (self.root / "etc/passwd").is_file():
            raise LocalHostError(f"{self.name} has no root file system at {self.root} (destroyed?).")
        started = time.monotonic()
        deadline = started + timeout
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                in_own_cgroup(
                    self.name,
                    [
                        "systemd-nspawn",
                        "--boot",
                        f"--directory={self.root}",
                        f"--machine={self.name}",
                        # No machined or host systemd to register with here; these keep nspawn standalone.
                        "--register=no",
                        "--keep-unit",
                        "--console=passive",
                        f"--network-namespace-path=/run/netns/{self.netns}",
                        # Root's on a VM: the guest's own firewall (the metadata guard's iptables rules).
                        # nspawn grants it with --private-network, not with a namespace given by path.
                        "--capability=CAP_NET_ADMIN",
                    ],
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # a Ctrl-C meant for the tests must not kill the guest mid-boot
        self._nspawn_pid = self._process.pid
        self._nspawn_start = process_start_time(self._process.pid)
        self._save_own_state()
        self._wait_for_ssh(deadline)
        ssh_seconds = time.monotonic() - started
        state = self.guest_exec(
            ["systemctl", "is-system-running", "--wait"], check=False, timeout=max(1.0, deadline - time.monotonic())
        ).stdout.strip()
        if state not in ("running", "degraded"):
            raise LocalHostError(
                f"{self.name} did not finish booting: systemd says {state!r} (console log: {self.log_path})."
            )
        progress(
            f"{self.name} up at {self.address}: SSH after {ssh_seconds:.1f} s, "
            f"systemd {state} after {time.monotonic() - started:.1f} s"
        )

    def _wait_for_ssh(self, deadline: float) -> None:
        while True:
            if not self.is_running:
                raise LocalHostError(f"{self.name}: systemd-nspawn exited while booting:\n{self._log_tail()}")
            try:
                with socket.create_connection((self.address, 22), timeout=2) as conn:
                    conn.settimeout(5)
                    if conn.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LocalHostError(
                    f"{self.name}: SSH on {self.address}:22 did not answer in time:\n{self._log_tail()}"
                )
            time.sleep(0.2)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def leader_pid(self) -> int:
        """The guest's PID 1, seen from here: the child of systemd-nspawn whose PID in its own
        namespace is 1."""
        if not self.is_running:
            raise LocalHostError(f"{self.name} is not running.")
        pid = self._nspawn_pid
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                    return int(child)
        raise LocalHostError(f"{self.name}: systemd-nspawn (PID {pid}) has no guest PID 1 yet.")

    def guest_exec(
        self,
        argv: list[str],
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,  # noqa: A002  subprocess.run's name for it
    ) -> subprocess.CompletedProcess:
        """TEST-ONLY back door: runs argv as root inside the guest (all of its namespaces, its root
        directory, a clean environment) without SSH. The product reaches hosts over SSH only."""
        if isinstance(argv, str) or not argv:
            raise LocalHostError(f"guest_exec argv={argv!r} must be a non-empty list of strings.")
        command = [
            "nsenter",
            f"--target={self.leader_pid()}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--cgroup",
            "--root",
            "--wd",
            "--",
            "/usr/bin/env",
            "-i",
            f"PATH={GUEST_PATH}",
            "HOME=/root",
            "LANG=C.UTF-8",
            *argv,
        ]
        try:
            result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LocalHostError(f"{self.name}: {argv!r} did not finish within {timeout:.0f} s.") from exc
        if check and result.returncode != 0:
            raise LocalHostError(
                f"{self.name}: {argv!r} exited with {result.returncode}:\n"
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )
        return result

    def stop(self, timeout: float = 60) -> None:
        """Powers the guest off (SIGTERM to systemd-nspawn); kills it if that takes too long."""
        if not self.is_running:
            self._forget_process()
            return
        os.kill(self._nspawn_pid, signal.SIGTERM)
        if not self._wait_for_exit(timeout):
            progress(f"{self.name} did not power off within {timeout:.0f} s; killing it")
            with contextlib.suppress(LocalHostError, ProcessLookupError, FileNotFoundError):
                os.kill(self.leader_pid(), signal.SIGKILL)  # ends its whole PID namespace
            if self.is_running:
                os.kill(self._nspawn_pid, signal.SIGKILL)
            if not self._wait_for_exit(15):
                raise LocalHostError(f"{self.name}: systemd-nspawn (PID {self._nspawn_pid}) survived SIGKILL.")
        self._forget_process()

    def _wait_for_exit(self, timeout: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.is_running:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _forget_process(self) -> None:
        remove_cgroups(self.name)
        self._process = None
        self._nspawn_pid = self._nspawn_start = None
        if self._state_file.exists():
            self._save_own_state()

    def reboot(self, timeout: float = 120) -> None:
        """Powers off and boots the same root file system again, like `reboot` on a VM."""
        self.stop()
        self.boot(timeout)

    # --- teardown ----------------------------------------------------------------------------
    def destroy(self) -> None:
        """Stops the guest and removes its file system, keys, veth and network namespace.
        Idempotent, and safe on a host whose creation failed half way."""
        self.stop()
        remove_tree(self.host_dir)  # unmounts the overlay first
        if Path(f"/sys/class/net/{self.veth}").exists():
            run(["ip", "link", "del", self.veth], what=f"removing veth {self.veth}")
        if Path(f"/run/netns/{self.netns}").exists():
            run(["ip", "netns", "del", self.netns], what=f"removing network namespace {self.netns}")
        atexit.unregister(self._destroy_at_exit)

    def _destroy_at_exit(self) -> None:
        if self._owner_pid != os.getpid():  # handed over by save_state, or a forked child
            return
        try:
            self.destroy()
        except LocalHostError as exc:
            progress(f"could not remove {self.name} at exit: {exc}")

    def __enter__(self) -> LocalHost:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._owner_pid == os.getpid():
            self.destroy()

    # --- state ---------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "slot": self.slot,
            "host_dir": str(self.host_dir),
            "image": str(self.image),
            "nspawn_pid": self._nspawn_pid,
            "nspawn_start": self._nspawn_start,
            "owner_pid": self._owner_pid,
            "owner_start": self._owner_start,
        }

    def _save_own_state(self) -> None:
        write_state_file(self._state_file, self._state())

    def save_state(self, path: Path) -> None:
        """Hands the host over to a state file: it outlives this process (no removal at exit or
        by the context manager) until `LocalHost.from_state(path).destroy()`."""
        self._owner_pid = self._owner_start = None
        self._save_own_state()
        write_state_file(Path(path), self._state())
        atexit.unregister(self._destroy_at_exit)

    @classmethod
    def from_state(cls, path: Path) -> LocalHost:
        """The host a state file describes (it may since have been destroyed: destroy() is then a no-op)."""
        return cls(**read_state_file(path))


def reap_orphans() -> None:
    """Removes hosts whose owning process has died without removing them (killed test runs).
    Hosts handed over with save_state() have no owner and are left alone."""
    for state_file in sorted((cache_root() / "hosts").glob("ph-*/state.json")):
        try:
            host = LocalHost.from_state(state_file)
        except LocalHostError:
            continue  # being written right now, or not ours to judge
        if host._owner_pid is None or process_alive(host._owner_pid, host._owner_start):
            continue
        progress(f"removing {host.name}, left behind by process {host._owner_pid}")
        try:
            host.destroy()
        except LocalHostError as exc:
            progress(f"could not remove {host.name}: {exc}")
