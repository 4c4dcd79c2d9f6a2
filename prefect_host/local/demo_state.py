"""The demo's state directory (default .demo/ in the repository): its files, reading them back, and
the lock that lets one `make demo` or `make demo-down` run at a time. See prefect_host/local/demo.py
for what each file holds."""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prefect_host.errors import PrefectHostError
from prefect_host.local.machine import LocalHost

STATE_VERSION = 1


class DemoError(PrefectHostError):
    """The demo could not be brought up or down; the message says what to do."""


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def host_state(self) -> Path:
        return self.root / "host.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def services(self) -> Path:
        return self.root / "services.json"

    @property
    def services_log(self) -> Path:
        return self.root / "services.log"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs.json"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def flow_report(self) -> Path:
        return self.root / "flow-run.json"

    def state_files(self) -> list[Path]:
        """Everything the demo writes here, except the lock."""
        return [
            self.host_state,
            self.state,
            self.services,
            self.services_log,
            self.outputs,
            self.known_hosts,
            self.flow_report,
        ]


def read_json(path: Path, what: str) -> dict | None:
    """The JSON object in `path`; None when there is no such file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DemoError(
            f"{path} ({what}) is unreadable: {exc}. Run `make demo-down` to clear the demo's state, then `make demo`."
        ) from None
    if not isinstance(data, dict):
        raise DemoError(
            f"{path} ({what}) does not hold a JSON object. Run `make demo-down` to clear the "
            "demo's state, then `make demo`."
        )
    return data


def read_state(paths: DemoPaths) -> dict | None:
    """The services process's record (state.json: PIDs and start times); None when there is none."""
    state = read_json(paths.state, "the demo's process state")
    if state is not None and state.get("version") != STATE_VERSION:
        raise DemoError(
            f"{paths.state} was written by another version of the demo (version "
            f"{state.get('version')!r}, expected {STATE_VERSION}). Run `make demo-down` to clear the "
            "demo's state, then `make demo`."
        )
    return state


def load_host(paths: DemoPaths) -> LocalHost | None:
    """The demo's guest, from the freshest record: the host's own state file is rewritten the moment
    systemd-nspawn starts, so it knows the guest's PID even when `make demo` was interrupted then."""
    if not paths.host_state.exists():
        return None
    host = LocalHost.from_state(paths.host_state)
    own = host.host_dir / "state.json"
    return LocalHost.from_state(own) if own.exists() else host


@contextlib.contextmanager
def one_demo_at_a_time(paths: DemoPaths) -> Iterator[None]:
    """One `make demo` / `make demo-down` at a time; a second one is told, not kept waiting."""
    with open(paths.lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(
                f"Another `make demo` or `make demo-down` is running on {paths.root} (it holds "
                f"{paths.lock}); wait for it to finish."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
