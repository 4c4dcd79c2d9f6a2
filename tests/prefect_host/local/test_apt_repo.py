"""The guest's local apt repository: built from the Debian mirror once (a few seconds), then
checked as apt sees it, and installed from inside a Debian 13 root file system."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from prefect_host.local.apt_repo import AptRepoServer, ensure_apt_repo, packages_in
from prefect_host.local.common import LocalHostError
from prefect_host.local.image import build_image

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def repo() -> Path:
    return ensure_apt_repo(("caddy",), suite="trixie")


def stanzas(repo: Path) -> dict[str, dict[str, str]]:
    found = {}
    for block in (repo / "Packages").read_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != " ")
        if fields:
            found[fields["Package"]] = fields
    return found


def test_repository_holds_caddy_and_everything_it_depends_on(repo):
    index = stanzas(repo)
    assert index["caddy"]["Version"].startswith("2.6.2")
    host_architecture = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout
    assert index["caddy"]["Architecture"] == host_architecture.strip()  # the guest shares this CPU
    # Walk the Depends/Pre-Depends closure from caddy: every name (some alternative) is in the repo.
    seen, todo = set(), ["caddy"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        relations = ", ".join(index[name].get(field, "") for field in ("Pre-Depends", "Depends"))
        for relation in filter(None, (r.strip() for r in relations.split(","))):
            choices = [alt.split()[0].split(":")[0] for alt in relation.split("|")]
            present = [choice for choice in choices if choice in index]
            assert present, f"{name} needs {relation!r}, which the repository does not hold"
            todo.append(present[0])
    assert {"caddy", "libc6", "libnss3-tools"} <= seen


def test_index_and_release_describe_exactly_the_files_present(repo):
    index = stanzas(repo)
    debs = {path.name for path in repo.glob("*.deb")}
    assert {fields["Filename"].removeprefix("./") for fields in index.values()} == debs
    for fields in index.values():
        deb = repo / fields["Filename"]
        assert deb.stat().st_size == int(fields["Size"])
    release = (repo / "Release").read_text()
    for name in ("Packages", "Packages.gz"):
        data = (repo / name).read_bytes()
        assert f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}\n" in release
    assert packages_in(repo)["caddy"] == index["caddy"]["Version"]


def test_a_second_call_reuses_the_cached_repository(repo):
    release_written = (repo / "Release").stat().st_mtime_ns
    assert ensure_apt_repo(["caddy", "caddy"], suite="trixie") == repo
    assert (repo / "Release").stat().st_mtime_ns == release_written


@pytest.mark.parametrize(
    "packages, suite, words",
    [
        ("caddy", "trixie", ["packages='caddy'", "list"]),
        ([], "trixie", ["packages=[]"]),
        (["Caddy"], "trixie", ["'Caddy'", "Debian package names"]),
        (["caddy; rm -rf /"], "trixie", ["Debian package names"]),
        (["caddy"], "Trixie 13", ["suite='Trixie 13'", "trixie"]),
    ],
)
def test_bad_input_is_refused_before_anything_is_downloaded(packages, suite, words):
    with pytest.raises(LocalHostError) as error:
        ensure_apt_repo(packages, suite=suite)
    for word in words:
        assert word in str(error.value)


def test_server_offers_the_repository_as_one_trusted_source_line(repo):
    with AptRepoServer(repo, LOOPBACK) as server:
        assert server.url.startswith(f"http://{LOOPBACK}:") and server.url.endswith("/")
        assert server.source_line == f"deb [trusted=yes] {server.url} ./"
        assert httpx.get(server.url + "Release").text == (repo / "Release").read_text()
        caddy_deb = stanzas(repo)["caddy"]["Filename"].removeprefix("./")
        assert httpx.head(server.url + caddy_deb).headers["content-length"] == str((repo / caddy_deb).stat().st_size)


def test_server_refuses_a_directory_that_is_not_a_repository(tmp_path):
    with pytest.raises(LocalHostError, match="no Release file"):
        AptRepoServer(tmp_path, LOOPBACK)


@pytest.mark.e2e
def test_apt_in_a_debian_13_root_installs_caddy_from_the_served_repository_alone(repo, tmp_path):
    """apt inside a copy-on-write view of the guest image, with the served repository as its only
    source (the image's own Debian sources removed), installs caddy and its dependencies."""
    image = build_image()
    upper, work, root = tmp_path / "upper", tmp_path / "work", tmp_path / "root"
    for directory in (upper, work, root):
        directory.mkdir()
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={image},upperdir={upper},workdir={work}", str(root)],
        check=True,
    )
    try:
        sources = root / "etc/apt"
        (sources / "sources.list").unlink(missing_ok=True)
        for entry in (sources / "sources.list.d").iterdir():
            entry.unlink()
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        with AptRepoServer(repo, LOOPBACK) as server:
            (sources / "sources.list").write_text(server.source_line + "\n")
            update = subprocess.run(
                ["chroot", str(root), "apt-get", "update"], env=env, capture_output=True, text=True, timeout=120
            )
            assert update.returncode == 0, update.stdout + update.stderr
            fetched = [line for line in update.stdout.splitlines() if line.startswith(("Get:", "Hit:", "Ign:"))]
            assert fetched and all(f"{server.url.rstrip('/')} ./ " in line for line in fetched), update.stdout
            install = subprocess.run(
                ["chroot", str(root), "apt-get", "install", "--yes", "--no-install-recommends", "caddy"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
        version = subprocess.run(["chroot", str(root), "caddy", "version"], env=env, capture_output=True, text=True)
        assert version.stdout.startswith("2.6.2")
        assert (root / "usr/lib/systemd/system/caddy.service").is_file()
        assert not (Path(image) / "usr/bin/caddy").exists()  # the cached image stays untouched
    finally:
        subprocess.run(["umount", str(root)], check=True)
    assert os.listdir(root) == []
