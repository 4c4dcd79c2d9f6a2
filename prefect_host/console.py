"""What the bootstrap prints: one line per step with its duration, progress while waiting, no secrets.

Every line goes through `redact`, so a secret that reaches a message (an auth string echoed in a
journal line, a key in an error) is masked before it is written anywhere.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

MASK = "********"
# A finished step's line, as Console.step prints it: "  [changed]  write /etc/prefect-host/server.env    0.1 s".
_STEP_LINE = re.compile(r"^(?:\r\x1b\[K)?\s+\[(?P<tag>ok|changed|failed)\]\s+(?P<name>.*?)\s+(?P<seconds>\d+\.\d) s$")
# Shorter fragments would mask ordinary words; real secrets here are far longer.
_MIN_SECRET_LEN = 6
_SPINNER = "|/-\\"
# The most of a value an error message shows: a 5 MB value must not be echoed whole.
SHOWN_LIMIT = 200


def shown(value: object, limit: int = SHOWN_LIMIT) -> str:
    """`value` as an error message quotes it: its repr (so line breaks and control characters show as
    escapes), cut to `limit` characters with an ellipsis (...)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def clip_values(message: str, values: Iterable[object], limit: int = SHOWN_LIMIT) -> str:
    """`message` (written by code that quotes values whole) with each of `values` that is longer than
    `limit` or not printable, where it appears as is or as its repr, as `shown` quotes it."""
    texts = {v for v in values if isinstance(v, str) and v and (len(v) > limit or not v.isprintable())}
    for value in sorted(texts, key=len, reverse=True):
        message = message.replace(repr(value), shown(value, limit)).replace(value, shown(value, limit))
    return message


def mention(text: str, limit: int = SHOWN_LIMIT) -> str:
    """A user-given name (a path, a stack name) in a message: as is when it is short, printable text,
    else as `shown` quotes it."""
    return text if len(text) <= limit and text.isprintable() else shown(text, limit)


def url_password(url: str | None) -> str | None:
    """The secret part of a URL's userinfo (`https://user:token@host/`: "token"; a lone user name is
    the token), None without one or when the URL does not parse."""
    try:
        parts = urllib.parse.urlsplit(url or "")
    except ValueError:
        return None
    if "@" not in parts.netloc:
        return None
    userinfo = parts.netloc.rpartition("@")[0]
    return userinfo.partition(":")[2] or userinfo or None


def redact_url(url: str) -> str:
    """`url` with its userinfo (credentials) replaced by MASK, for messages and command lines."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{MASK}@{parts.netloc.rpartition('@')[2]}"))


class Console:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, *, progress_interval: float = 10.0):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.progress_interval = progress_interval
        self._secrets: list[str] = []
        self._lock = threading.Lock()
        self._running = 0  # steps in progress: concurrent lanes run several at once

    # --- secrets -------------------------------------------------------------------------------
    def add_secret(self, value: str | None) -> None:
        """Mask `value` (and each of its lines, for multi-line keys) in everything printed later."""
        if not value:
            return
        candidates = [value.strip()] + [line.strip() for line in value.splitlines()]
        if ":" in value and "\n" not in value:  # user:password: the password alone is secret too
            candidates.append(value.split(":", 1)[1])
        for secret in candidates:
            if len(secret) >= _MIN_SECRET_LEN and secret not in self._secrets:
                self._secrets.append(secret)
        # Longest first, so a secret containing another is masked whole.
        self._secrets.sort(key=len, reverse=True)

    @property
    def secrets(self) -> list[str]:
        """What this console masks (to hand to another console, e.g. a worker host's)."""
        return list(self._secrets)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    # --- plain lines ---------------------------------------------------------------------------
    def line(self, text: str = "") -> None:
        self._write(self.out, text + "\n")

    def warn(self, text: str) -> None:
        self._write(self.err, f"warning: {text}\n")

    def error(self, text: str) -> None:
        self._write(self.err, f"error: {text}\n")

    def block(self, title: str, text: str) -> None:
        """A titled block on stderr (for example the service journal after a failure)."""
        body = "\n".join(f"    {line}" for line in text.rstrip("\n").splitlines())
        self._write(self.err, f"{title}\n{body}\n")

    def _write(self, stream: TextIO, text: str) -> None:
        with self._lock:
            stream.write(self.redact(text))
            stream.flush()

    # --- steps ---------------------------------------------------------------------------------
    @contextmanager
    def step(self, name: str, *, changed: bool = False) -> Iterator[StepStatus]:
        """Run a block as one step: a progress display while it runs, then `[tag] name  1.2 s`.

        `changed` (also settable on the yielded status) marks steps that modified the host or the
        server; a converged host prints none of those.
        """
        status = StepStatus(changed)
        started = time.monotonic()
        progress = _Progress(self, name, started)
        with self._lock:
            self._running += 1
        progress.start()
        tag = "failed"
        try:
            yield status
            tag = "changed" if status.changed else "ok"
        finally:
            progress.stop()
            with self._lock:
                self._running -= 1
            self._finish_line(
                progress, f"  [{tag}]{' ' * (9 - len(tag))}{name:<46} {time.monotonic() - started:6.1f} s\n"
            )

    def _finish_line(self, progress: _Progress, text: str) -> None:
        if progress.tty:
            text = "\r\033[K" + text
        self._write(self.out, text)

    def spinner_allowed(self) -> bool:
        """A spinner redraws its own line: only while it is the one step in progress."""
        return self._running == 1

    def is_tty(self) -> bool:
        isatty = getattr(self.out, "isatty", None)
        return bool(isatty and isatty())


class StepStatus:
    def __init__(self, changed: bool):
        self.changed = changed


class _Progress:
    """A spinner on a terminal; elsewhere (CI logs, pipes) a line every `progress_interval` s."""

    def __init__(self, console: Console, name: str, started: float):
        self.console = console
        self.name = name
        self.started = started
        self.tty = console.is_tty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        tick = 0.1 if self.tty else self.console.progress_interval
        frame = 0
        while not self._stop.wait(tick):
            elapsed = time.monotonic() - self.started
            if self.tty and not self.console.spinner_allowed():
                continue
            if self.tty:
                text = f"\r\033[K  [{_SPINNER[frame % 4]}]        {self.name:<46} {elapsed:6.1f} s"
                frame += 1
            else:
                text = f"  [...]      {self.name:<46} {elapsed:6.0f} s so far\n"
            self.console._write(self.console.out, text)


@dataclass(frozen=True)
class StepLine:
    tag: str  # ok, changed or failed
    name: str
    seconds: float


def parse_step_lines(output: str) -> list[StepLine]:
    """The finished steps' lines in `output`, in order (progress lines are left out): what the
    benchmark and the tests read back from the bootstrap's output."""
    return [StepLine(m["tag"], m["name"], float(m["seconds"])) for m in map(_STEP_LINE.match, output.splitlines()) if m]
