"""A small HTTP server that offers a directory of wheels to a guest without internet, both as a
`--find-links` page and as a PEP 503 simple index with PEP 658 metadata files (and any other
directory, such as an apt repository, as plain files). The wheels come from wheelhouse.py."""

from __future__ import annotations

import email.parser
import functools
import hashlib
import html
import io
import os
import re
import sys
import threading
import urllib.parse
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prefect_host.local.common import LocalHostError


def normalize_project(name: str) -> str:
    """PEP 503's normalized project name: runs of -, _ and . become one -, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class WheelEntry:
    filename: str
    project: str  # normalized
    sha256: str
    metadata: bytes | None  # the wheel's .dist-info/METADATA (PEP 658 serves it on its own)
    requires_python: str | None

    @property
    def metadata_sha256(self) -> str | None:
        return hashlib.sha256(self.metadata).hexdigest() if self.metadata is not None else None


def read_wheel(path: Path) -> WheelEntry:
    """What an index says about one wheel. A file that is not a readable wheel still gets listed,
    just without metadata (installers then read the wheel itself)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    metadata = requires_python = None
    try:
        with zipfile.ZipFile(path) as archive:
            # Exactly one top-level <name>-<version>.dist-info/METADATA in a valid wheel.
            members = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(members) == 1:
                metadata = archive.read(members[0])
    except (zipfile.BadZipFile, OSError):
        pass
    if metadata is not None:
        requires_python = email.parser.BytesHeaderParser().parsebytes(metadata).get("Requires-Python")
    return WheelEntry(
        filename=path.name,
        project=normalize_project(path.name.split("-", 1)[0]),
        sha256=digest.hexdigest(),
        metadata=metadata,
        requires_python=str(requires_python).strip() if requires_python else None,
    )


def _anchor(href: str, entry: WheelEntry | None, text: str) -> str:
    attributes = f'href="{html.escape(href)}"'
    if entry is not None and entry.requires_python:
        attributes += f' data-requires-python="{html.escape(entry.requires_python)}"'
    if entry is not None and entry.metadata_sha256:
        # PEP 714's name and PEP 658's original one, for older installers.
        attributes += (
            f' data-core-metadata="sha256={entry.metadata_sha256}"'
            f' data-dist-info-metadata="sha256={entry.metadata_sha256}"'
        )
    return f"<a {attributes}>{html.escape(text)}</a><br>"


def _page(title: str, anchors: list[str]) -> bytes:
    return (
        '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
        f"<title>{html.escape(title)}</title></head><body>\n" + "\n".join(anchors) + "\n</body></html>\n"
    ).encode()


def flat_page(entries: Sequence[WheelEntry], other_files: Sequence[str]) -> bytes:
    """The find-links page: every file by its plain name, wheels with their metadata attributes."""
    anchors = [_anchor(urllib.parse.quote(e.filename), e, e.filename) for e in entries]
    anchors += [_anchor(urllib.parse.quote(name), None, name) for name in other_files]
    return _page("Links", anchors)


def simple_root_page(entries: Sequence[WheelEntry]) -> bytes:
    """PEP 503's /simple/: one link per project."""
    projects = sorted({e.project for e in entries})
    return _page("Simple index", [_anchor(f"{p}/", None, p) for p in projects])


def simple_project_page(entries: Sequence[WheelEntry], project: str) -> bytes | None:
    """PEP 503's /simple/<project>/ (None: no such project): links to the files at the index root,
    with their sha256; `<link>.metadata` is the PEP 658 metadata file."""
    mine = [e for e in entries if e.project == normalize_project(project)]
    if not mine:
        return None
    return _page(
        f"Links for {mine[0].project}",
        [_anchor(f"../../{urllib.parse.quote(e.filename)}#sha256={e.sha256}", e, e.filename) for e in mine],
    )


def parse_byte_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """RFC 9110 single byte range of a file of `size` bytes: (first, last) inclusive; None to ignore
    the header and send the whole file (malformed, or several ranges: allowed by the RFC); False
    when the range lies outside the file (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash or not (first_text or last_text) or not all(t.isdigit() for t in (first_text, last_text) if t):
        return None
    if not first_text:  # "-N": the last N bytes
        length = int(last_text)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        return False
    return first, min(last, size - 1)


class _Slice:
    """A file object that ends after `length` bytes (what a 206 answer sends)."""

    def __init__(self, handle, length: int):
        self._handle = handle
        self._left = length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size < 0 else min(size, self._left)
        data = self._handle.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._handle.close()


class _IndexHandler(SimpleHTTPRequestHandler):
    # Keep-alive: an installer fetches a hundred files; a new TCP connection each costs round trips.
    protocol_version = "HTTP/1.1"

    def __init__(self, *args, entries: dict[str, WheelEntry], **kwargs):
        self.entries = entries
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        """The guest's downloads are not worth a line each on the test output."""

    def send_head(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path == "/" and self.entries:
            others = sorted(
                p.name for p in Path(self.directory).iterdir() if p.is_file() and p.name not in self.entries
            )
            return self._send_bytes(flat_page(list(self.entries.values()), others), "text/html; charset=utf-8")
        if (path == "/simple" or path.startswith("/simple/")) and not path.endswith("/"):
            # PEP 503 URLs end in a slash; the pages' relative links depend on it.
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", path + "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if path == "/simple/":
            return self._send_bytes(simple_root_page(list(self.entries.values())), "text/html; charset=utf-8")
        if path.startswith("/simple/"):
            page = simple_project_page(list(self.entries.values()), path[len("/simple/") :].strip("/"))
            if page is None:
                self.send_error(HTTPStatus.NOT_FOUND, "No such project")
                return None
            return self._send_bytes(page, "text/html; charset=utf-8")
        if path.endswith(".metadata") and path[1 : -len(".metadata")] in self.entries:
            metadata = self.entries[path[1 : -len(".metadata")]].metadata
            if metadata is not None:
                return self._send_bytes(metadata, "application/octet-stream")
        return self._send_file()

    def _send_bytes(self, body: bytes, content_type: str):
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def _send_file(self):
        """A regular file, whole or the one byte range asked for; everything else as the base class does."""
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            return super().send_head()
        try:
            handle = open(path, "rb")  # noqa: SIM115  the body: the base class sends it, then closes it
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        size = os.fstat(handle.fileno()).st_size
        span = parse_byte_range(self.headers["Range"], size) if self.headers["Range"] else None
        if span is False:
            handle.close()
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if span is None:
            self.send_response(HTTPStatus.OK)
            first, length, body = 0, size, handle
        else:
            first, last = span
            length = last - first + 1
            handle.seek(first)
            body = _Slice(handle, length)
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return body


class _IndexServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """An installer that has what it needs closes the connection mid-file (uv reads a streamed
        wheel's metadata and drops the rest): normal, not worth a traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class PackageIndex:
    """Serves `directory` over HTTP on `bind_address` (the host side of a guest's veth) in a
    background thread, on `port` (0: a free one). For a directory of wheels it offers:

    - `url`: a find-links page of all files (uv: `--find-links URL`; pip: `--no-index --find-links URL`),
    - `simple_url`: a PEP 503 simple index of the same wheels, with sha256 hashes and PEP 658
      metadata files (`<wheel>.metadata`), so an installer resolves without opening any wheel;
    - every file, with HTTP Range requests.
    Any other directory (an apt repository) is served as plain files.
    """

    def __init__(self, directory: Path, bind_address: str, port: int = 0):
        directory = Path(directory)
        if not directory.is_dir():
            raise LocalHostError(f"PackageIndex directory {directory} does not exist.")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise LocalHostError(f"PackageIndex port={port!r} must be a TCP port number (0: any free one).")
        entries = {wheel.name: read_wheel(wheel) for wheel in sorted(directory.glob("*.whl"))}
        handler = functools.partial(_IndexHandler, directory=str(directory), entries=entries)
        try:
            self._server = _IndexServer((bind_address, port), handler)
        except OSError as exc:
            raise LocalHostError(
                f"PackageIndex cannot listen on {bind_address!r} port {port}: {exc.strerror}; "
                "give the host-side address of a running local host (and a free port)."
            ) from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="package-index", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host}:{self.port}/"

    @property
    def simple_url(self) -> str:
        return self.url + "simple/"

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> PackageIndex:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
