"""Run a plan's steps over one SSH session: the one apply loop.

Each step prints one line with its duration (prefect_host.console). Lanes whose services allow it
run concurrently on the same session (paramiko multiplexes channels), e.g. Caddy's apt install
while Prefect installs and migrates its database. The first failure stops every lane before its
next step, prints the failed service's journal, and is raised once all lanes have stopped.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from prefect_host.console import Console
from prefect_host.errors import PrefectHostError
from prefect_host.host.model import Command, Step
from prefect_host.host.planner import Lane
from prefect_host.ssh import CommandResult, HostSession

JOURNAL_LINES = 40


@dataclass
class Hooks:
    """What the caller does around steps: `started[service]` runs inside a step that (re)started
    that service's units (e.g. wait until it answers), `stopped` after a step stopped units for
    good (e.g. forget those workers on the server)."""

    started: Mapping[str, Callable[[], None]] = field(default_factory=dict)
    stopped: Callable[[tuple[str, ...]], None] | None = None
    # `starting[service]` runs just before a step that (re)starts that service's units.
    starting: Mapping[str, Callable[[], None]] = field(default_factory=dict)


class _Aborted(Exception):
    """Another lane failed: this one stops before its next step."""


def apply(lanes: Sequence[Lane], session: HostSession, console: Console, hooks: Hooks | None = None) -> int:
    """Run every lane's steps; returns how many steps ran. Raises the first failure."""
    hooks = hooks or Hooks()
    busy = [lane for lane in lanes if lane.steps]
    if len(busy) <= 1:
        for lane in busy:
            for step in lane.prepare:
                run_step(step, session, console, hooks=hooks)
            for step in lane.start:
                run_step(step, session, console, units=_units(lane), hooks=hooks)
        return sum(len(lane.steps) for lane in busy)
    runner = _Concurrent(lanes, session, console, hooks)
    runner.run()
    return sum(len(lane.steps) for lane in busy)


class _Concurrent:
    def __init__(self, lanes: Sequence[Lane], session: HostSession, console: Console, hooks: Hooks):
        self.lanes = lanes
        self.session, self.console, self.hooks = session, console, hooks
        self.done = {lane.service.name: threading.Event() for lane in lanes}
        self.failed = threading.Event()
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._lane, args=(lane,), name=f"lane-{lane.service.name}", daemon=True)
            for lane in self.lanes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def _lane(self, lane: Lane) -> None:
        try:
            self._wait_for(lane.service.after)
            for step in lane.prepare:
                self._check()
                run_step(step, self.session, self.console, hooks=self.hooks)
            self._wait_for(lane.service.start_after)
            for step in lane.start:
                self._check()
                run_step(step, self.session, self.console, units=_units(lane), hooks=self.hooks)
        except _Aborted:
            pass
        except BaseException as exc:  # noqa: BLE001 (re-raised by run())
            with self._lock:
                self.errors.append(exc)
            self.failed.set()
        finally:
            self.done[lane.service.name].set()

    def _wait_for(self, names: Iterable[str]) -> None:
        for name in names:
            event = self.done.get(name)
            while event is not None and not event.wait(0.05):
                self._check()
        self._check()

    def _check(self) -> None:
        if self.failed.is_set():
            raise _Aborted()


def _units(lane: Lane) -> tuple[str, ...]:
    return lane.service.units.names if lane.service.units is not None else ()


def run_step(
    step: Step, session: HostSession, console: Console, *, units: Sequence[str] = (), hooks: Hooks | None = None
) -> None:
    """One step, one console line; a step that (re)starts, reloads or starts `units` prints their
    journal if it fails."""
    hooks = hooks or Hooks()
    reports: list[str] = []
    # The journal (when wanted) comes after the step's [failed] line, before the error.
    with journal_on_failure(bool(units), session, console, units), console.step(step.name, changed=True):
        if step.starts and step.starts in hooks.starting:
            hooks.starting[step.starts]()
        for command in step.commands:
            result = run_command(session, command)
            if command.reports and result.stdout.strip():
                reports.append(result.stdout.strip())
        if step.starts and step.starts in hooks.started:
            hooks.started[step.starts]()
        if step.stops and hooks.stopped is not None:
            hooks.stopped(step.stops)
    for report in reports:
        for line in report.splitlines():
            console.line(f"    {line}")


def run_command(session: HostSession, command: Command) -> CommandResult:
    """One declared command on the host, as root, with its stdin, timeout and label."""
    return session.run(command.script, sudo=True, stdin=command.stdin, timeout=command.timeout, label=command.label)


@contextmanager
def journal_on_failure(wanted: bool, session: HostSession, console: Console, units: Sequence[str]) -> Iterator[None]:
    """When a service fails to start or to verify, its journal says why: print its tail."""
    try:
        yield
    except PrefectHostError:
        if wanted and units:
            print_journal(session, console, units)
        raise


def print_journal(session: HostSession, console: Console, units: Sequence[str]) -> None:
    selection = " ".join(f"-u {shlex.quote(unit)}" for unit in units)
    try:
        result = session.run(
            f"journalctl {selection} -n {JOURNAL_LINES} --no-pager -o short-iso",
            sudo=True,
            timeout=30,
            check=False,
            label="journalctl",
        )
    except Exception:  # noqa: BLE001 (the journal helps explain an error; it is never a new failure)
        return
    if result.stdout.strip():
        console.block(f"Last {JOURNAL_LINES} lines of `journalctl {selection}` on {session.host}:", result.stdout)
