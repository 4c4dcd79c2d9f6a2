"""Fetch the uv binary for THIS machine from a Python package index. Standard library only.

This file is sent to the host over SSH and run there as `python3 - ARGS` (its source is the
stdin). The host has python3 but no pip or ensurepip (stock cloud images), and the operator's
laptop may be macOS, Windows or another architecture, so the host picks the uv wheel for its own
platform (`uname -m`, glibc or musl and their versions) from the configured index:

  --index-url URL    a PEP 503 (HTML) or PEP 691 (JSON) simple index, default https://pypi.org/simple
  --find-links URL   a flat HTML page of links to wheels (what `pip download` + an http server give)

It checks the wheel's sha256 when the index gives one and extracts `uv-<v>.data/scripts/uv` to
--dest atomically. It must stay importable on the laptop too: the tests call its pure functions.
"""

from __future__ import annotations

import argparse
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


def _get(url: str, accept: str | None = None) -> tuple[bytes, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    for attempt in range(_ATTEMPTS):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == _ATTEMPTS - 1:
                raise FetchError(f"GET {url}: HTTP {exc.code}") from None
        except OSError as exc:
            if attempt == _ATTEMPTS - 1:
                raise FetchError(f"GET {url}: {exc}") from None
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
    wheel, _ = _get(url)
    if sha and hashlib.sha256(wheel).hexdigest() != sha.lower():
        raise FetchError(f"{filename}: sha256 does not match the index's hash; refusing to install it")
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
    try:
        filename = install_uv(args.version, args.dest, index_url=args.index_url, find_links=args.find_links)
    except (FetchError, zipfile.BadZipFile) as exc:
        print(f"get_uv: {exc}", file=sys.stderr)
        return 1
    print(f"installed {args.dest} from {filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
