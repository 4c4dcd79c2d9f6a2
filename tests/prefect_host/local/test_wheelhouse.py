"""PackageIndex as installers see it: a find-links page and a PEP 503 simple index with PEP 658
metadata files, byte ranges, and no tracebacks when a client hangs up mid-file. Served on loopback;
uv and pip resolve from it for real."""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from prefect_host.local import LocalHostError, PackageIndex
from prefect_host.local.wheelhouse import normalize_project, parse_byte_range

METADATA = b"Metadata-Version: 2.1\nName: Demo.Pkg\nVersion: 1.0\nRequires-Python: >=3.9\n\n"


def make_wheel(directory: Path, dist: str = "demo_pkg", version: str = "1.0", metadata: bytes = METADATA) -> Path:
    """A minimal installable pure-Python wheel."""
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{dist}/__init__.py", "VALUE = 42\n")
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(
            f"{info}/RECORD",
            "".join(
                f"{name},,\n" for name in (f"{dist}/__init__.py", f"{info}/METADATA", f"{info}/WHEEL", f"{info}/RECORD")
            ),
        )
    return path


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    make_wheel(directory)
    (directory / "broken-0.1-py3-none-any.whl").write_bytes(b"not a zip file")
    (directory / "notes.txt").write_text("not a wheel\n")
    return directory


@pytest.fixture
def index(wheels: Path):
    with PackageIndex(wheels, "127.0.0.1") as served:
        yield served


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def anchors(page: bytes) -> dict[str, str]:
    """Link text -> the whole <a ...> tag."""
    return {m.group(2): m.group(1) for m in re.finditer(r"(<a [^>]*>)([^<]*)</a>", page.decode())}


@pytest.mark.parametrize(
    "name, normalized",
    [("Demo_Pkg", "demo-pkg"), ("demo.pkg", "demo-pkg"), ("prefect_aws", "prefect-aws"), ("A--B__c", "a-b-c")],
)
def test_project_names_are_normalized_as_pep_503_says(name, normalized):
    assert normalize_project(name) == normalized


@pytest.mark.parametrize(
    "header, size, expected",
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=95-200", 100, (95, 99)),  # the end is clipped to the file
        ("bytes=-10", 100, (90, 99)),  # the last 10 bytes
        ("bytes=-500", 100, (0, 99)),
        ("bytes=100-", 100, False),  # starts after the end: 416
        ("bytes=-0", 100, False),
        ("bytes=0-0", 0, False),  # nothing to give from an empty file
        ("bytes=0-1,5-6", 100, None),  # several ranges: the whole file instead
        ("items=0-1", 100, None),
        ("bytes=9-1", 100, None),
        ("bytes=abc", 100, None),
        ("bytes=a-5", 100, None),
        ("bytes=-", 100, None),
        ("bytes=1-x", 100, None),
    ],
)
def test_byte_ranges_follow_rfc_9110(header, size, expected):
    assert parse_byte_range(header, size) == expected


def test_find_links_page_lists_every_file_with_the_wheels_metadata_hash(index, wheels):
    status, headers, page = get(index.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    found = anchors(page)
    assert set(found) == {"demo_pkg-1.0-py3-none-any.whl", "broken-0.1-py3-none-any.whl", "notes.txt"}
    demo = found["demo_pkg-1.0-py3-none-any.whl"]
    assert 'href="demo_pkg-1.0-py3-none-any.whl"' in demo  # a plain link, as before
    assert f'data-core-metadata="sha256={hashlib.sha256(METADATA).hexdigest()}"' in demo
    assert 'data-requires-python="&gt;=3.9"' in demo
    assert "data-core-metadata" not in found["broken-0.1-py3-none-any.whl"]  # unreadable: listed, no metadata


def test_simple_index_serves_projects_files_hashes_and_metadata(index, wheels):
    status, _, root = get(index.simple_url)
    assert status == 200 and set(anchors(root)) == {"demo-pkg", "broken"}
    status, _, page = get(index.simple_url + "Demo_Pkg/")  # any spelling of the name finds it
    assert status == 200
    tag = anchors(page)["demo_pkg-1.0-py3-none-any.whl"]
    href = re.search(r'href="([^"]+)"', tag).group(1)
    link, _, fragment = urllib.request.urljoin(index.simple_url + "demo-pkg/", href).partition("#")
    wheel = (wheels / "demo_pkg-1.0-py3-none-any.whl").read_bytes()
    assert fragment == f"sha256={hashlib.sha256(wheel).hexdigest()}"
    assert get(link)[2] == wheel
    status, _, metadata = get(link + ".metadata")
    assert status == 200 and metadata == METADATA
    assert f'data-dist-info-metadata="sha256={hashlib.sha256(metadata).hexdigest()}"' in tag
    assert get(index.simple_url + "no-such-project/")[0] == 404
    assert get(index.simple_url + "demo-pkg")[2] == page  # redirected to the URL with the slash
    assert get(index.url + "notes.txt.metadata")[0] == 404


def test_files_are_served_whole_or_by_byte_range(index, wheels):
    wheel = (wheels / "demo_pkg-1.0-py3-none-any.whl").read_bytes()
    url = index.url + "demo_pkg-1.0-py3-none-any.whl"
    status, headers, body = get(url)
    assert (status, body, headers["Accept-Ranges"]) == (200, wheel, "bytes")
    status, headers, body = get(url, {"Range": "bytes=-22"})  # a zip's end-of-central-directory record
    assert status == 206 and body == wheel[-22:]
    assert headers["Content-Range"] == f"bytes {len(wheel) - 22}-{len(wheel) - 1}/{len(wheel)}"
    status, headers, body = get(url, {"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Length"]) == (206, wheel[10:20], "10")
    status, headers, _ = get(url, {"Range": f"bytes={len(wheel)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(wheel)}"


def test_keeps_connections_open_between_requests(index):
    connection = http.client.HTTPConnection("127.0.0.1", index.port, timeout=5)
    for path in ("/", "/simple/", "/notes.txt"):
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        response.read()
    connection.close()


def test_a_client_hanging_up_mid_file_leaves_no_traceback(tmp_path: Path, capfd):
    directory = tmp_path / "big"
    directory.mkdir()
    with open(directory / "big-1.0-py3-none-any.whl", "wb") as handle:
        handle.truncate(32 << 20)  # larger than any socket buffer: the server is still writing
    with PackageIndex(directory, "127.0.0.1") as served:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", served.port), timeout=5) as client:
                client.sendall(b"GET /big-1.0-py3-none-any.whl HTTP/1.1\r\nHost: x\r\n\r\n")
                assert client.recv(4096).startswith(b"HTTP/1.1 200")
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        time.sleep(0.5)  # the server notices the reset on its next write
        assert get(served.url + "big-1.0-py3-none-any.whl", {"Range": "bytes=0-3"})[2] == b"\0\0\0\0"
    assert "Traceback" not in capfd.readouterr().err


def test_uv_installs_from_the_simple_index_and_from_the_find_links_page(index, tmp_path: Path):
    uv = shutil.which("uv")
    assert uv, "uv is on PATH after `make venv` (the Makefile installs it)"
    for name, source in (
        ("simple", ["--index-url", index.simple_url]),
        ("flat", ["--no-index", "--find-links", index.url]),
    ):
        venv = tmp_path / name
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
        done = subprocess.run(
            [uv, "pip", "install", "--no-cache", "--python", str(venv / "bin/python"), *source, "demo-pkg==1.0"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        imported = subprocess.run(
            [str(venv / "bin/python"), "-c", "import demo_pkg; print(demo_pkg.VALUE)"], capture_output=True, text=True
        )
        assert imported.stdout == "42\n"


def test_pip_resolves_from_both_pages(index, tmp_path: Path):
    for name, source in (
        ("simple", ["--index-url", index.simple_url]),
        ("flat", ["--no-index", "--find-links", index.url]),
    ):
        done = subprocess.run(
            [
                "python3",
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-cache-dir",
                "--no-deps",
                "--dest",
                str(tmp_path / name),
                *source,
                "demo-pkg==1.0",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert [p.name for p in (tmp_path / name).iterdir()] == ["demo_pkg-1.0-py3-none-any.whl"]


def test_refuses_a_bad_port(wheels):
    with pytest.raises(LocalHostError, match="port=70000"):
        PackageIndex(wheels, "127.0.0.1", 70000)
    with PackageIndex(wheels, "127.0.0.1") as first, pytest.raises(LocalHostError, match=f"port {first.port}"):
        PackageIndex(wheels, "127.0.0.1", first.port)
