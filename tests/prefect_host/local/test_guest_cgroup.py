"""Each guest's nspawn starts in cgroups of its own (the real cgroups: test_machine.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prefect_host.local import guest_cgroup


def fake_root(tmp_path: Path, *hierarchies: str) -> Path:
    for name in hierarchies:
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / "cgroup.procs").touch()
    return tmp_path


def test_a_hybrid_host_tracks_with_the_named_systemd_and_the_unified_hierarchy(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "systemd", "unified", "memory")
    assert guest_cgroup.hierarchies(root) == [root / "systemd", root / "unified"]
    assert guest_cgroup.guest_cgroups("ph-3", root) == [
        root / "systemd/prefect-host-guests/ph-3",
        root / "unified/prefect-host-guests/ph-3",
    ]


def test_a_cgroup2_only_host_uses_its_root(tmp_path: Path) -> None:
    (tmp_path / "cgroup.procs").touch()
    assert guest_cgroup.guest_cgroups("ph-3", tmp_path) == [tmp_path / "prefect-host-guests/ph-3"]


def test_the_command_joins_each_cgroup_and_keeps_its_pid(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "systemd", "unified")
    argv = guest_cgroup.in_own_cgroup("ph-3", ["sh", "-c", 'echo $$; echo "$1"', "sh", "an argument -- kept"], root)
    process = subprocess.run(argv, capture_output=True, text=True, check=True)
    pid, argument = process.stdout.splitlines()
    assert argument == "an argument -- kept"
    for group in guest_cgroup.guest_cgroups("ph-3", root):
        assert (group / "cgroup.procs").read_text().strip() == pid


def test_a_cgroup_that_cannot_be_joined_stops_the_command(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "systemd")
    argv = guest_cgroup.in_own_cgroup("ph-3", ["touch", str(tmp_path / "ran")], root)
    (root / "systemd/prefect-host-guests/ph-3").rmdir()  # as if removed under it
    assert subprocess.run(argv, capture_output=True).returncode != 0
    assert not (tmp_path / "ran").exists()


def test_removal_goes_innermost_first(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "systemd", "unified")
    for group in guest_cgroup.guest_cgroups("ph-3", root):
        (group / "payload/system.slice/x.service").mkdir(parents=True)
    guest_cgroup.remove_cgroups("ph-3", root, patience=0)
    assert [group for group in guest_cgroup.guest_cgroups("ph-3", root) if group.exists()] == []
    assert (root / "systemd/prefect-host-guests").is_dir()  # shared by all guests: stays
