"""The host-side uv fetcher: platform tags, index pages, and a real run against a local index."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from prefect_host import get_uv
from prefect_host.get_uv import FetchError, choose_wheel, compatible_platform_tags, parse_links

SCRIPT = Path(get_uv.__file__)


def test_glibc_tags_newest_first_with_legacy_aliases():
    tags = compatible_platform_tags("x86_64", "glibc", (2, 41))
    assert tags[0] == "manylinux_2_41_x86_64"
    assert tags.index("manylinux_2_28_x86_64") < tags.index("manylinux_2_17_x86_64")
    assert "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert "manylinux_2_42_x86_64" not in tags


def test_old_glibc_cannot_take_a_newer_wheel():
    tags = compatible_platform_tags("aarch64", "glibc", (2, 17))
    assert "manylinux_2_28_aarch64" not in tags and "manylinux2014_aarch64" in tags


def test_musl_tags():
    tags = compatible_platform_tags("aarch64", "musl", (1, 2))
    assert tags == ["musllinux_1_2_aarch64", "musllinux_1_1_aarch64", "musllinux_1_0_aarch64"]
    with pytest.raises(FetchError):
        compatible_platform_tags("x86_64", "bionic", (1, 0))


UV_FILES = [
    "uv-0.13.8-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "uv-0.13.8-py3-none-manylinux_2_28_aarch64.whl",
    "uv-0.13.8-py3-none-musllinux_1_1_x86_64.whl",
    "uv-0.13.8-py3-none-macosx_11_0_arm64.whl",
    "uv-0.13.8.tar.gz",
    "uv-0.13.7-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
]


def test_html_page_links_with_hashes_and_relative_urls():
    body = "".join(f'<a href="../../files/{name}#sha256={i:064x}">{name}</a>\n' for i, name in enumerate(UV_FILES))
    links = parse_links(body, "text/html", "https://index.example/simple/uv/")
    assert links[0] == (UV_FILES[0], f"https://index.example/files/{UV_FILES[0]}", f"{0:064x}")
    chosen = choose_wheel(links, "0.13.8", compatible_platform_tags("x86_64", "glibc", (2, 36)))
    assert chosen[0] == UV_FILES[0]
    assert choose_wheel(links, "0.13.8", compatible_platform_tags("aarch64", "glibc", (2, 36)))[0] == UV_FILES[1]
    assert choose_wheel(links, "0.13.8", compatible_platform_tags("x86_64", "musl", (1, 2)))[0] == UV_FILES[2]


def test_pep691_json_page():
    body = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "files": [
                {"filename": name, "url": f"https://files.example/{name}", "hashes": {"sha256": "ab" * 32}}
                for name in UV_FILES
            ],
        }
    )
    links = parse_links(body, "application/vnd.pypi.simple.v1+json", "https://pypi.org/simple/uv/")
    assert links[3] == (UV_FILES[3], f"https://files.example/{UV_FILES[3]}", "ab" * 32)


def test_no_wheel_for_the_platform_or_version():
    links = [(name, name, None) for name in UV_FILES]
    with pytest.raises(FetchError, match=r"no uv 0.13.8 wheel"):
        choose_wheel(links, "0.13.8", compatible_platform_tags("ppc64le", "glibc", (2, 36)))
    with pytest.raises(FetchError, match=r"no uv 9.9.9 wheel"):
        choose_wheel(links, "9.9.9", compatible_platform_tags("x86_64", "glibc", (2, 36)))


def _fake_uv_wheel(version: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"uv-{version}.data/scripts/uv", "#!/bin/sh\necho fake uv\n")
        archive.writestr(f"uv-{version}.dist-info/METADATA", "Name: uv\n")
    return buffer.getvalue()


@pytest.fixture
def index(tmp_path):
    """A directory served over HTTP on 127.0.0.1: a find-links page and a /simple/uv/ page."""
    wheel = _fake_uv_wheel("0.13.8")
    machine = os.uname().machine
    name = f"uv-0.13.8-py3-none-manylinux_2_17_{machine}.manylinux2014_{machine}.whl"
    (tmp_path / name).write_bytes(wheel)
    (tmp_path / "uv-0.13.8-py3-none-macosx_11_0_arm64.whl").write_bytes(b"not for this host")
    digest = hashlib.sha256(wheel).hexdigest()
    simple = tmp_path / "simple" / "uv"
    simple.mkdir(parents=True)
    (simple / "index.html").write_text(f'<a href="../../{name}#sha256={digest}">{name}</a>')
    bad = tmp_path / "bad" / "uv"
    bad.mkdir(parents=True)
    (bad / "index.html").write_text(f'<a href="../../{name}#sha256={"0" * 64}">{name}</a>')
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _run_script(*args: str) -> subprocess.CompletedProcess:
    """As on the host: the source on stdin of `python3 -`, nothing else importable."""
    return subprocess.run(
        [sys.executable, "-I", "-", *args], input=SCRIPT.read_bytes(), capture_output=True, timeout=60
    )


def test_fetches_from_find_links_page(index, tmp_path):
    dest = tmp_path / "bin-uv"
    result = _run_script("--version", "0.13.8", "--dest", str(dest), "--find-links", f"{index}/")
    assert result.returncode == 0, result.stderr
    assert dest.read_text() == "#!/bin/sh\necho fake uv\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_fetches_from_simple_index_and_checks_the_hash(index, tmp_path):
    dest = tmp_path / "uv"
    assert _run_script("--version", "0.13.8", "--dest", str(dest), "--index-url", f"{index}/simple").returncode == 0
    assert dest.exists()
    refused = tmp_path / "refused"
    result = _run_script("--version", "0.13.8", "--dest", str(refused), "--index-url", f"{index}/bad")
    assert result.returncode == 1 and b"sha256 does not match" in result.stderr
    assert not refused.exists()


def test_missing_version_is_a_clear_failure(index, tmp_path):
    result = _run_script("--version", "0.0.1", "--dest", str(tmp_path / "uv"), "--find-links", f"{index}/")
    assert result.returncode == 1 and b"no uv 0.0.1 wheel" in result.stderr
