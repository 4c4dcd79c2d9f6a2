"""The local Debian guest behaves like a fresh cloud VM, and leaves nothing behind."""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from prefect_host.local import LocalHost, LocalHostError, build_image, guest_cgroup, machine
from tests.prefect_host.local import released

pytestmark = pytest.mark.e2e


def _banner(address: str) -> bytes:
    with socket.create_connection((address, 22), timeout=10) as conn:
        conn.settimeout(10)
        return conn.recv(64)


def _server_key(address: str, refuse: str | None = None) -> paramiko.PKey:
    """The host key the server proves it holds; with `refuse`, key types containing it are not accepted."""
    with paramiko.Transport((address, 22)) as transport:
        if refuse is not None:
            options = transport.get_security_options()
            options.key_types = tuple(kind for kind in options.key_types if refuse not in kind)
        transport.start_client(timeout=10)
        return transport.get_remote_server_key()


def _ssh(host: LocalHost) -> paramiko.SSHClient:
    """Logs in as the cloud user with the operator key, trusting only the pinned host key."""
    client = paramiko.SSHClient()
    key_type, key_data = host.host_public_key.split()
    pinned = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
    client.get_host_keys().add(host.address, key_type, pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host.address,
        username=host.ssh_user,
        key_filename=str(host.identity_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def _run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, stderr = client.exec_command(command, timeout=30)
    output = stdout.read().decode() + stderr.read().decode()
    return stdout.channel.recv_exit_status(), output


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            pass  # exited while we looked
    return found


def _netns_names() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def test_guest_is_like_a_fresh_cloud_vm(local_host: LocalHost):
    host = local_host
    assert _banner(host.address).startswith(b"SSH-2.0-OpenSSH")

    key = _server_key(host.address)
    assert f"{key.get_name()} {key.get_base64()}" == host.host_public_key
    assert host.host_public_key.startswith("ssh-ed25519 AAAA")
    # sshd has no other key: a client that refuses ed25519 finds no common host key type.
    with pytest.raises(paramiko.IncompatiblePeer):
        _server_key(host.address, refuse="ed25519")

    for secret in (host.identity_file, host.host_private_key_path):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    assert host.guest_exec(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert host.guest_exec(["hostname"]).stdout.strip() == host.name
    assert host.guest_exec(["systemctl", "is-enabled", "ssh.service"]).stdout.strip() == "enabled"

    venv = host.guest_exec(["python3", "-m", "venv", "/tmp/venv"], check=False)
    assert venv.returncode != 0 and "ensurepip is not available" in " ".join((venv.stdout + venv.stderr).split())
    assert host.guest_exec(["python3", "-m", "pip", "--version"], check=False).returncode != 0

    with _ssh(host) as client:
        assert _run(client, "id -un") == (0, f"{host.ssh_user}\n")
        assert _run(client, "sudo -n id -u") == (0, "0\n")


def test_package_index_is_reachable_from_the_guest(local_host: LocalHost, package_index):
    assert package_index.url.startswith(f"http://{local_host.gateway}:")
    page = local_host.guest_exec(["curl", "-fsS", "--max-time", "10", package_index.url]).stdout
    for wheel in ("prefect-3.9.1-py3-none-any.whl", "prefect_aws-0.7.12-py3-none-any.whl", "uv-0.13.8-"):
        assert wheel in page


def test_guests_do_not_share_control_groups(fresh_host, local_host: LocalHost):
    """Two guests run units of the same name: each has its own cgroup, and one guest stopping its
    unit leaves the other's running in its cgroup (as on two VMs)."""
    other = fresh_host()
    groups = {}
    for host in (local_host, other):
        lines = Path(f"/proc/{host.leader_pid()}/cgroup").read_text().splitlines()
        tracked = [line for line in lines if line.split(":")[1] in ("name=systemd", "")]
        assert tracked and all(f"/{guest_cgroup.GROUP}/{host.name}/" in line for line in tracked), lines
        host.guest_exec(["systemd-run", "--unit=cgroup-probe", "--", "sleep", "600"])
        # The guest's systemd (257) runs its units in the cgroup2 hierarchy: the last one listed.
        groups[host.name] = guest_cgroup.guest_cgroups(host.name)[-1] / "payload/system.slice/cgroup-probe.service"
    assert groups[local_host.name] != groups[other.name]
    assert (groups[other.name] / "cgroup.procs").read_text().split()
    local_host.guest_exec(["systemctl", "stop", "cgroup-probe"])
    assert not groups[local_host.name].exists()
    assert other.guest_exec(["systemctl", "is-active", "cgroup-probe"]).stdout.strip() == "active"
    assert (groups[other.name] / "cgroup.procs").read_text().split()
    other.guest_exec(["systemctl", "stop", "cgroup-probe"])


def test_reboot_keeps_the_host_and_destroy_removes_everything(fresh_host, local_host: LocalHost, tmp_path: Path):
    host = fresh_host()
    assert host.address != local_host.address
    boot_id = host.guest_exec(["cat", "/proc/sys/kernel/random/boot_id"]).stdout
    host.guest_exec(["touch", "/var/tmp/survives-reboot"])

    # What `make demo` / `make demo-down` do: hand the host to a state file, pick it up again.
    host.save_state(tmp_path / "host.json")
    restored = LocalHost.from_state(tmp_path / "host.json")
    assert (restored.address, restored.host_public_key) == (host.address, host.host_public_key)
    restored.reboot()
    assert _banner(restored.address).startswith(b"SSH-2.0-")
    key = _server_key(restored.address)
    assert f"{key.get_name()} {key.get_base64()}" == host.host_public_key
    assert restored.guest_exec(["cat", "/proc/sys/kernel/random/boot_id"]).stdout != boot_id
    restored.guest_exec(["test", "-e", "/var/tmp/survives-reboot"])

    tag = released.mark(host)
    restored.destroy()
    assert not _processes_mentioning(str(host.root))
    assert released.leftovers(host, tag) == []
    assert str(host.root) not in Path("/proc/self/mountinfo").read_text()
    restored.destroy()  # idempotent


def test_failed_creation_leaves_nothing_behind(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOST_CACHE", str(tmp_path / "cache"))
    claimed = []
    claim = machine.claim_slot
    monkeypatch.setattr(machine, "claim_slot", lambda hosts: claimed.append(claim(hosts)) or claimed[-1])
    # A root file system that passes the first checks but has no ~admin/.ssh: creation fails half way,
    # after the network namespace, veth and overlay mount exist.
    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True)
    (image / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nadmin:x:1000:1000::/home/admin:/bin/sh\n")
    with pytest.raises(FileNotFoundError, match="authorized_keys"):
        LocalHost.create(image)
    [slot] = claimed
    assert f"ph-{slot}" not in _netns_names()
    assert not Path(f"/sys/class/net/vh-ph{slot}").exists()
    assert list((tmp_path / "cache/hosts").iterdir()) == [tmp_path / "cache/hosts/.lock"]
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()

    with pytest.raises(LocalHostError, match="not a root file system"):
        LocalHost.create(tmp_path / "missing")


def test_a_host_left_by_a_killed_process_is_removed_by_the_next_create(tmp_path: Path, monkeypatch):
    image = build_image()
    monkeypatch.setenv("PREFECT_HOST_CACHE", str(tmp_path / "cache"))
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom prefect_host.local import LocalHost\n"
            "host = LocalHost.create(sys.argv[1]); host.boot(); print(host.name, host.root, flush=True); "
            "time.sleep(600)",
            str(image),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        name, old_root = owner.stdout.readline().split()
    finally:
        owner.kill()  # like a test run killed with SIGKILL: no teardown, no atexit
        owner.wait()
    assert name in _netns_names() and _processes_mentioning(old_root)

    with LocalHost.create(image) as next_host:
        assert not _processes_mentioning(old_root)
        assert (name in _netns_names()) == (next_host.name == name)  # the slot is free again
        assert [p.name for p in (tmp_path / "cache/hosts").glob("ph-*")] == [next_host.name]
