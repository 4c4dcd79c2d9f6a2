"""Fetch the uv binary for THIS machine from a Python package index. Standard library only.

This file is sent to the host over SSH and run there as `python3 - ARGS` (its source is the
stdin). The host has python3 but no pip or ensurepip (stock cloud images), and the operator's
laptop may be macOS, Windows or another architecture, so the host picks the uv wheel for its own
platform (`uname -m`, glibc or musl and their versions) from the configured index:

  --index-url URL    a PEP 503 (HTML) or PEP 691 (JSON) simple index, default https://pypi.org/simple
  --find-links URL   a flat HTML page of links to wheels (what `pip download` + an http server give)

Without either, it reads UV_INDEX_URL or UV_FIND_LINKS from the environment, as uv does: a URL with
credentials (https://user:token@host/simple) comes that way, never on a command line (which `ps` shows to
every user of the host); the credentials are sent as HTTP basic auth, to that host only, and no message
shows them.

The wheel's sha256 must match the one pinned below for each wheel of a pinned uv release (PyPI's, whatever
the index says), and the index's when it gives one; a wheel of another release needs the index's hash.
It extracts `uv-<v>.data/scripts/uv` to --dest atomically. It must stay importable on the laptop too: the
tests call its pure functions.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from html.parser import HTMLParser

DEFAULT_INDEX_URL = "https://pypi.org/simple"
_JSON_TYPE = "application/vnd.pypi.simple.v1+json"
# manylinux1 = glibc 2.5, manylinux2010 = 2.12, manylinux2014 = 2.17 (PEP 600's legacy aliases).
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_ATTEMPTS = 3
# PyPI's sha256 of every wheel of the uv releases the bootstrap installs (prefect_host.services.python_env's
# UV_VERSION), from https://pypi.org/pypi/uv/json. A new UV_VERSION needs its wheels' hashes here.
UV_WHEEL_SHA256 = {
    "uv-0.13.8-py3-none-linux_armv6l.whl": "0ec33661a14e38dea8dfb18167d2a4a5c7fe3d476c62dd8eb6acf5f378727201",
    "uv-0.13.8-py3-none-macosx_10_12_x86_64.whl": "b7124ca1956ec2e476a1003ea5715a15f0266afaec37f4dc9c6972ba8183e6d1",
    "uv-0.13.8-py3-none-macosx_11_0_arm64.whl": "62b6943c7fd64fac6854f780bea6e0359e5a5bc3241f83ee357bb38276afac49",
    "uv-0.13.8-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl": (
        "0b3e8b1a4f5e405e31e2ff33de8af4744831e9f7338539671efbd8c3c94e791d"
    ),
    "uv-0.13.8-py3-none-manylinux_2_17_armv7l.manylinux2014_armv7l.musllinux_1_1_armv7l.whl": (
        "9cf0b7b12f13da6ab1c85694ab618d97a2bbd0c904cdea7f0172fb1dd768b9d5"
    ),
    "uv-0.13.8-py3-none-manylinux_2_17_armv7l.manylinux2014_armv7l.whl": (
        "86f1319f851e645bc295bb921e6be19beae7e69216c75ae809010ca7817393aa"
    ),
    "uv-0.13.8-py3-none-manylinux_2_17_i686.manylinux2014_i686.whl": (
        "5ace7ec339798aca31be51a75fa7c1544fe84e02fadd17a9fa3324813bbaf237"
    ),
    "uv-0.13.8-py3-none-manylinux_2_17_ppc64le.manylinux2014_ppc64le.whl": (
        "6999618363d03a0a085a9491db319e00b461dbda205db06ef1fd55dfcbf6472b"
    ),
    "uv-0.13.8-py3-none-manylinux_2_17_s390x.manylinux2014_s390x.whl": (
        "13050c64530a1ccfc223af0306a8152d41c0d36ea63bc19161221ca65dfe480a"
    ),
    "uv-0.13.8-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": (
        "e18a57b8b352eb7c8feb317b9f6f533c8f0ad9673fd6cf34bbe3cf1a9f6a8984"
    ),
    "uv-0.13.8-py3-none-manylinux_2_28_aarch64.whl": "5337c30bb893b4f9ce0ceb921ba2da0d13f649da644f40ad3bef84083bef0203",
    "uv-0.13.8-py3-none-manylinux_2_31_riscv64.musllinux_1_1_riscv64.whl": (
        "bfcaada3989c7716ad4b58673cd1413fad4fdc6b2e446f9553db0ef18da20850"
    ),
    "uv-0.13.8-py3-none-manylinux_2_31_riscv64.whl": "b26fe533dc6153787e40443b7d9428ed41349127bff36a954ec82c48be01ded9",
    "uv-0.13.8-py3-none-musllinux_1_1_i686.whl": "63d807451e63c8d21b1b33c945af16438ac9d8ffddc59b31ce69c692135891f5",
    "uv-0.13.8-py3-none-musllinux_1_1_x86_64.whl": "29451c60f5e8b07403e0a175d5229efc36b0289b34143ff4aaa499a5dd52553a",
    "uv-0.13.8-py3-none-win32.whl": "87614f62b09e3571593ffe01bf2e1dccb8df928a8423324dba80c6d0e33060eb",
    "uv-0.13.8-py3-none-win_amd64.whl": "cfbc13020a64cdf2f116d2936824c38edbf41e5c07f1ea291baf02e31ebf3ed0",
    "uv-0.13.8-py3-none-win_arm64.whl": "b4184029b1b7c54409b9cd4372c73a36ef9c2d1d7cf3b0aca59c8b1932f041dc",
}


class FetchError(Exception):
    pass


def compatible_platform_tags(machine: str, libc: str, libc_version: tuple[int, int]) -> list[str]:
    """The wheel platform tags this machine can run, best (newest libc) first."""
    arch = machine.lower()
    major, minor = libc_version
    tags = []
    if libc == "glibc":
        for m in range(minor, 4, -1):
            tags.append(f"manylinux_{major}_{m}_{arch}")
            tags += [f"{legacy}_{arch}" for legacy, version in _LEGACY_MANYLINUX.items() if version == (major, m)]
    elif libc == "musl":
        tags += [f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1)]
    else:
        raise FetchError(f"unknown C library {libc!r}; uv wheels exist for glibc and musl")
    return tags


def detect_libc() -> tuple[str, tuple[int, int]]:
    name, version = platform.libc_ver()
    if name == "glibc" and version:
        major, minor = version.split(".")[:2]
        return "glibc", (int(major), int(minor))
    # musl's loader prints its version when run as `ldd`.
    probe = subprocess.run(["ldd", "--version"], capture_output=True, text=True)
    match = re.search(r"musl libc.*?Version\s+(\d+)\.(\d+)", probe.stdout + probe.stderr, re.S)
    if match:
        return "musl", (int(match.group(1)), int(match.group(2)))
    raise FetchError("cannot tell which C library this host uses (neither glibc nor musl found)")


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def parse_links(body: str, content_type: str, page_url: str) -> list[tuple[str, str, str | None]]:
    """(filename, absolute url, sha256 or None) for every file on a simple-index or find-links page."""
    links = []
    if content_type.split(";")[0].strip() == _JSON_TYPE:
        for entry in json.loads(body).get("files", []):
            url = urllib.parse.urljoin(page_url, entry["url"])
            links.append((entry["filename"], url, entry.get("hashes", {}).get("sha256")))
        return links
    parser = _LinkParser()
    parser.feed(body)
    for href in parser.hrefs:
        url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
        sha = fragment[len("sha256=") :] if fragment.startswith("sha256=") else None
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        links.append((filename, url, sha))
    return links


def choose_wheel(
    links: list[tuple[str, str, str | None]], version: str, tags: list[str]
) -> tuple[str, str, str | None]:
    """The uv `version` wheel whose platform tag ranks best in `tags`."""
    best = None
    for filename, url, sha in links:
        if not filename.endswith(".whl"):
            continue
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6) or parts[0].lower() != "uv" or parts[1] != version:
            continue
        for tag in parts[-1].split("."):
            if tag in tags:
                rank = tags.index(tag)
                if best is None or rank < best[0]:
                    best = (rank, (filename, url, sha))
    if best is None:
        raise FetchError(f"no uv {version} wheel for any of {', '.join(tags[:3])}, ... on the index page")
    return best[1]


def expected_sha256(filename: str, version: str, index_sha: str | None) -> str:
    """The sha256 the downloaded wheel must have: the pinned one for a pinned release (which the index's,
    when given, must agree with), else the index's; a wheel with neither is refused."""
    pinned = UV_WHEEL_SHA256.get(filename)
    if pinned is None and any(name.startswith(f"uv-{version}-") for name in UV_WHEEL_SHA256):
        raise FetchError(f"{filename} is not one of the uv {version} wheels whose sha256 is pinned here")
    if pinned is not None and index_sha and index_sha.lower() != pinned:
        raise FetchError(f"{filename}: the index gives another sha256 than the pinned one; refusing to install it")
    if pinned is None and not index_sha:
        raise FetchError(
            f"{filename}: no sha256 to check it against (uv {version} is not pinned here and the index page "
            "gives no hash); refusing to install it"
        )
    return pinned or index_sha.lower()


def redact(url: str) -> str:
    """`url` without its credentials, for messages."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="********@" + parts.netloc.rpartition("@")[2]))


def _request(url: str, accept: str | None) -> urllib.request.Request:
    """urllib sends no userinfo: the URL's credentials become a basic auth header, for that URL's host."""
    headers = {"Accept": accept} if accept else {}
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=host))
    return urllib.request.Request(url, headers=headers)


def _get(url: str, accept: str | None = None) -> tuple[bytes, str]:
    request = _request(url, accept)
    for attempt in range(_ATTEMPTS):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == _ATTEMPTS - 1:
                raise FetchError(f"GET {redact(url)}: HTTP {exc.code}") from None
        except OSError as exc:
            if attempt == _ATTEMPTS - 1:
                raise FetchError(f"GET {redact(url)}: {exc}") from None
        time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def install_uv(version: str, dest: str, *, index_url: str | None, find_links: str | None) -> str:
    if find_links:
        page_url = find_links
        body, content_type = _get(page_url)
    else:
        page_url = (index_url or DEFAULT_INDEX_URL).rstrip("/") + "/uv/"
        body, content_type = _get(page_url, accept=f"{_JSON_TYPE}, text/html;q=0.1")
    libc, libc_version = detect_libc()
    tags = compatible_platform_tags(platform.machine(), libc, libc_version)
    filename, url, sha = choose_wheel(
        parse_links(body.decode("utf-8", "replace"), content_type, page_url), version, tags
    )
    expected = expected_sha256(filename, version, sha)
    wheel, _ = _get(url)
    if hashlib.sha256(wheel).hexdigest() != expected:
        whose = "pinned" if filename in UV_WHEEL_SHA256 else "index's"
        raise FetchError(f"{filename}: sha256 does not match the {whose} hash; refusing to install it")
    member = f"uv-{version}.data/scripts/uv"
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        try:
            binary = archive.read(member)
        except KeyError:
            raise FetchError(f"{filename} has no {member}") from None
    tmp = f"{dest}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(binary)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    return filename


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="get_uv")
    parser.add_argument("--version", required=True)
    parser.add_argument("--dest", required=True)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--index-url")
    source.add_argument("--find-links")
    args = parser.parse_args(argv)
    if not args.index_url and not args.find_links:  # credentials come this way, off the command line
        args.find_links = os.environ.get("UV_FIND_LINKS") or None
        args.index_url = None if args.find_links else os.environ.get("UV_INDEX_URL") or None
    try:
        filename = install_uv(args.version, args.dest, index_url=args.index_url, find_links=args.find_links)
    except (FetchError, zipfile.BadZipFile) as exc:
        print(f"get_uv: {exc}", file=sys.stderr)
        return 1
    print(f"installed {args.dest} from {filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
