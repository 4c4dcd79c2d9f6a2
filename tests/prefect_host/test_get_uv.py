"""The host-side uv fetcher: platform tags, index pages, the pinned hashes, credentials, and real runs
against a local index."""

from __future__ import annotations

import base64
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
from prefect_host.get_uv import UV_WHEEL_SHA256, FetchError, choose_wheel, compatible_platform_tags, parse_links
from prefect_host.host.facts import HostFacts
from prefect_host.host.model import PackageSource, Venv
from prefect_host.host.packages import venv_install_steps
from prefect_host.services.python_env import UV_VERSION

SCRIPT = Path(get_uv.__file__)
# A uv release that is not pinned: its fake wheel is checked against the index's hash alone.
FAKE_VERSION = "0.0.7"
TOKEN = "tok3n-Index-Secret"


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


def _wheel_name(version: str) -> str:
    machine = os.uname().machine
    return f"uv-{version}-py3-none-manylinux_2_17_{machine}.manylinux2014_{machine}.whl"


def _page(folder: Path, links: dict[str, str]) -> None:
    """An index.html in `folder` linking to the files (two folders up) with the given sha256."""
    folder.mkdir(parents=True)
    (folder / "index.html").write_text("".join(f'<a href="../../{n}#sha256={h}">{n}</a>\n' for n, h in links.items()))


@pytest.fixture
def index(tmp_path):
    """A directory served over HTTP on 127.0.0.1: the directory listing (a find-links page without
    hashes), /links/ (one with hashes), /simple/uv/ and /bad/uv/ (a wrong hash), /private/ (401); `.seen`
    holds the Authorization header of every request."""
    hashes = {}
    for version in (FAKE_VERSION, "0.13.8"):
        wheel = _fake_uv_wheel(version)
        (tmp_path / _wheel_name(version)).write_bytes(wheel)
        hashes[_wheel_name(version)] = hashlib.sha256(wheel).hexdigest()
    (tmp_path / f"uv-{FAKE_VERSION}-py3-none-macosx_11_0_arm64.whl").write_bytes(b"not for this host")
    _page(tmp_path / "links", hashes)  # "../../" from /links/ is / as well
    _page(tmp_path / "simple" / "uv", hashes)
    _page(tmp_path / "bad" / "uv", dict.fromkeys(hashes, "0" * 64))
    seen: list[str | None] = []
    handler = partial(_QuietHandler, directory=str(tmp_path), seen=seen)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield _Index(f"http://127.0.0.1:{server.server_address[1]}", seen)
    server.shutdown()


class _Index(str):
    """The index's base URL, with the Authorization headers it saw."""

    def __new__(cls, url: str, seen: list):
        index = super().__new__(cls, url)
        index.seen = seen
        return index


class _QuietHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, seen: list, **kwargs) -> None:
        self.seen = seen
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        if self.path.startswith("/private/"):
            self.send_error(401)
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


def _run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """As on the host: the source on stdin of `python3 -`, nothing else importable."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    return subprocess.run(
        [sys.executable, "-I", "-", *args],
        input=SCRIPT.read_bytes(),
        capture_output=True,
        timeout=60,
        env=clean | (env or {}),
    )


def test_fetches_from_find_links_page(index, tmp_path):
    dest = tmp_path / "bin-uv"
    result = _run_script("--version", FAKE_VERSION, "--dest", str(dest), "--find-links", f"{index}/links/")
    assert result.returncode == 0, result.stderr
    assert dest.read_text() == "#!/bin/sh\necho fake uv\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_fetches_from_simple_index_and_checks_the_hash(index, tmp_path):
    dest = tmp_path / "uv"
    assert _run_script("--version", FAKE_VERSION, "--dest", str(dest), "--index-url", f"{index}/simple").returncode == 0
    assert dest.exists()
    refused = tmp_path / "refused"
    result = _run_script("--version", FAKE_VERSION, "--dest", str(refused), "--index-url", f"{index}/bad")
    assert result.returncode == 1 and b"sha256 does not match the index's hash" in result.stderr
    assert not refused.exists()


def test_a_wheel_without_any_hash_is_refused(index, tmp_path):
    """The directory listing gives no hash, and FAKE_VERSION has no pin: nothing to check it against."""
    dest = tmp_path / "uv"
    result = _run_script("--version", FAKE_VERSION, "--dest", str(dest), "--find-links", f"{index}/")
    assert result.returncode == 1 and b"no sha256 to check it against" in result.stderr
    assert not dest.exists()


def test_a_pinned_release_must_match_its_pin_whatever_the_index_says(index, tmp_path):
    """The index's hash is the fake 0.13.8 wheel's own, but the pin is PyPI's: refused, with or without it."""
    for args in (["--index-url", f"{index}/simple"], ["--find-links", f"{index}/"]):
        dest = tmp_path / "uv"
        result = _run_script("--version", "0.13.8", "--dest", str(dest), *args)
        assert result.returncode == 1, result.stderr
        assert b"refusing to install it" in result.stderr and b"pinned" in result.stderr
        assert not dest.exists()


def test_the_pins_cover_every_wheel_of_the_uv_the_bootstrap_installs():
    pinned = {name for name in UV_WHEEL_SHA256 if name.startswith(f"uv-{UV_VERSION}-")}
    for tag in ("manylinux_2_17_x86_64", "manylinux_2_28_aarch64", "musllinux_1_1_x86_64", "macosx_11_0_arm64"):
        assert any(tag in name for name in pinned), tag
    assert len(pinned) == 18 and all(len(sha) == 64 and int(sha, 16) >= 0 for sha in UV_WHEEL_SHA256.values())
    # The real x86_64 wheel, as PyPI serves it (and the e2e wheelhouse downloads it).
    name = f"uv-{UV_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert UV_WHEEL_SHA256[name] == "e18a57b8b352eb7c8feb317b9f6f533c8f0ad9673fd6cf34bbe3cf1a9f6a8984"


def test_expected_sha256_prefers_the_pin_and_refuses_what_it_cannot_check():
    name = f"uv-{UV_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    pin = UV_WHEEL_SHA256[name]
    assert get_uv.expected_sha256(name, UV_VERSION, None) == pin
    assert get_uv.expected_sha256(name, UV_VERSION, pin.upper()) == pin
    with pytest.raises(FetchError, match="another sha256 than the pinned one"):
        get_uv.expected_sha256(name, UV_VERSION, "ab" * 32)
    with pytest.raises(FetchError, match=r"not one of the uv 0\.13\.8 wheels"):
        get_uv.expected_sha256("uv-0.13.8-py3-none-manylinux_2_99_x86_64.whl", UV_VERSION, "ab" * 32)
    assert get_uv.expected_sha256("uv-0.0.7-py3-none-any.whl", "0.0.7", "AB" * 32) == "ab" * 32
    with pytest.raises(FetchError, match="no sha256"):
        get_uv.expected_sha256("uv-0.0.7-py3-none-any.whl", "0.0.7", None)


def test_credentials_come_from_the_environment_go_as_basic_auth_and_never_show(index, tmp_path):
    """As the bootstrap passes them (off the command line): UV_INDEX_URL, read when no flag is given."""
    dest = tmp_path / "uv"
    with_token = index.replace("http://", f"http://ci-user:{TOKEN}@")
    result = _run_script("--version", FAKE_VERSION, "--dest", str(dest), env={"UV_INDEX_URL": f"{with_token}/simple"})
    assert result.returncode == 0, result.stderr
    expected = "Basic " + base64.b64encode(f"ci-user:{TOKEN}".encode()).decode()
    assert index.seen and set(index.seen) == {expected}  # the page and the wheel, on the index's own host
    for path, message in (("/private", b"/private/uv/: HTTP 401"), ("/bad", b"sha256 does not match")):
        result = _run_script("--version", FAKE_VERSION, "--dest", str(dest), "--index-url", f"{with_token}{path}")
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert TOKEN.encode() not in result.stdout + result.stderr
    assert (
        b"GET http://********@127.0.0.1:"
        in _run_script("--version", FAKE_VERSION, "--dest", str(dest), "--index-url", f"{with_token}/private").stderr
    )
    result = _run_script("--version", FAKE_VERSION, "--dest", str(dest), env={"UV_FIND_LINKS": f"{with_token}/links/"})
    assert result.returncode == 0, result.stderr


def test_missing_version_is_a_clear_failure(index, tmp_path):
    result = _run_script("--version", "0.0.1", "--dest", str(tmp_path / "uv"), "--find-links", f"{index}/")
    assert result.returncode == 1 and b"no uv 0.0.1 wheel" in result.stderr


def _venv_steps(tmp_path: Path, source: PackageSource) -> list:
    """The fetch, create and install commands for a venv under tmp_path (a host with nothing on it)."""
    venv = Venv(
        path=str(tmp_path / "venv"),
        uv_path=str(tmp_path / "bin" / "uv"),
        uv_version=FAKE_VERSION,
        pins=(("prefect", "3.9.1"), ("prefect-aws", "0.7.12")),
        source=source,
        cache_dir=str(tmp_path / "cache"),
    )
    steps, _ = venv_install_steps(HostFacts(login_user="root", sudo_ok=True), venv)
    return [step.commands[0] for step in steps]


def test_a_source_without_credentials_stays_on_the_command_line(tmp_path):
    fetch, _, install = _venv_steps(tmp_path, PackageSource(index_url="https://mirror.example/simple"))
    assert fetch.script.endswith(" --index-url https://mirror.example/simple") and not fetch.stdin.startswith(b"http")
    assert " --index-url https://mirror.example/simple prefect==3.9.1 " in install.script and install.stdin is None
    fetch, _, install = _venv_steps(tmp_path, PackageSource(find_links="http://10.77.0.1:8000/"))
    assert fetch.script.endswith(" --find-links http://10.77.0.1:8000/")
    assert " --no-index --find-links http://10.77.0.1:8000/ prefect==3.9.1 " in install.script


@pytest.mark.parametrize("flag", ["index_url", "find_links"])
def test_index_credentials_travel_on_stdin_into_the_environment_never_on_a_command_line(index, tmp_path, flag):
    """The fetch and install commands as the host runs them (sh; python3 and a stand-in uv on PATH): the URL
    with its token reaches get_uv and uv through UV_INDEX_URL / UV_FIND_LINKS; `ps` on the host and a
    failed step's message show the command line, which holds no token."""
    base = index.replace("http://", f"http://ci-user:{TOKEN}@")
    url = f"{base}/simple" if flag == "index_url" else f"{base}/links/"
    fetch, create, install = _venv_steps(tmp_path, PackageSource(**{flag: url}))
    for command in (fetch, create, install):
        assert TOKEN not in command.script + command.label
    assert fetch.stdin.startswith(f"{url}\n".encode()) and install.stdin == f"{url}\n".encode()
    done = subprocess.run(["sh", "-c", fetch.script], input=fetch.stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bin" / "uv").read_text() == "#!/bin/sh\necho fake uv\n"
    assert index.seen and all(header and header.startswith("Basic ") for header in index.seen)
    record = tmp_path / "uv-saw"
    (tmp_path / "bin" / "uv").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$UV_INDEX_URL" "$UV_FIND_LINKS" "$@" > {record}\n'
    )
    done = subprocess.run(["sh", "-c", install.script], input=install.stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    index_env, find_links_env, *argv = record.read_text().splitlines()
    assert (index_env if flag == "index_url" else find_links_env) == url
    assert TOKEN not in " ".join(argv) and argv[-2:] == ["prefect==3.9.1", "prefect-aws==0.7.12"]
    assert ("--no-index" in argv) == (flag == "find_links")
