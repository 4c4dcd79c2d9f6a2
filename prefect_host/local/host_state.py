"""A local host's state file: its slot, where its files are, and which processes run and own it (PID
and start time each). The host's own copy (hosts/ph-<n>/state.json) lets the next `LocalHost.create`
remove a host whose owner died; a copy handed over with `save_state` lets `make demo-down` remove a
host that `make demo` left running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect_host.local.common import LocalHostError
from prefect_host.local.host_layout import SLOTS

STATE_VERSION = 1


def write_state_file(path: Path, state: dict[str, Any]) -> None:
    """Replaces `path` with `state` at once (through a temporary file): a reader never sees half of it."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"version": STATE_VERSION, **state}, indent=2) + "\n")
    temporary.replace(path)


def read_state_file(path: Path) -> dict[str, Any]:
    """The LocalHost keyword arguments recorded in `path`; LocalHostError when there is no such file or it
    is not one that write_state_file wrote."""
    try:
        state = json.loads(Path(path).read_text())
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"version {state.get('version')!r}, expected {STATE_VERSION}")
        slot = state["slot"]
        if not isinstance(slot, int) or slot not in SLOTS:
            raise ValueError(f"slot {slot!r} out of range")
        return {
            "slot": slot,
            "host_dir": Path(state["host_dir"]),
            "image": Path(state["image"]),
            "nspawn_pid": state["nspawn_pid"],
            "nspawn_start": state["nspawn_start"],
            "owner_pid": state["owner_pid"],
            "owner_start": state["owner_start"],
        }
    except FileNotFoundError as exc:
        raise LocalHostError(f"No local host state at {path}: nothing was left running there.") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalHostError(f"{path} is not a local host state file written by save_state(): {exc}.") from exc
