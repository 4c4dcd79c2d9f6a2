"""The backup settings' durations: a positive whole number of hours or days, such as "36h" or "7d".

The stack outputs `backupRetention` (how long the bucket keeps Litestream's backups) and
`backupSnapshotInterval` (how often it takes a full snapshot) have this form. infra/backup_config.py holds
the same rules for the stack config (infra never imports prefect_host); each side is tested.
"""

from __future__ import annotations

import datetime as dt
import re

# What the bootstrap uses when the outputs lack them (a stack from before the backups).
DEFAULT_BACKUP_RETENTION = "7d"
DEFAULT_BACKUP_SNAPSHOT_INTERVAL = "1d"
DURATION_PATTERN = re.compile(r"([1-9][0-9]{0,3})([hd])")
# (fewest, most) hours each setting may span, and the same in words.
SNAPSHOT_INTERVAL_BOUNDS = ((1, 30 * 24), "from 1h to 30d")
RETENTION_BOUNDS = ((1, 3650 * 24), "from 1h to 3650d")
DURATION_FORM = "a whole number of hours or days such as 36h or 7d"


def duration_hours(text: str) -> int:
    """ "7d" -> 168, "36h" -> 36. ValueError unless the whole text is 1 to 4 digits (no leading 0) and h or d."""
    match = DURATION_PATTERN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a duration: allowed is {DURATION_FORM}")
    return int(match[1]) * (24 if match[2] == "d" else 1)


def hours_within(text: str, bounds: tuple[tuple[int, int], str]) -> int | None:
    """The duration in hours when `text` is one and within `bounds`, else None."""
    (low, high), _ = bounds
    try:
        hours = duration_hours(text)
    except ValueError:
        return None
    return hours if low <= hours <= high else None


def seconds_since(moment: str | None, now: dt.datetime) -> float | None:
    """How long ago an RFC 3339 time (Prefect's, Litestream's with nanoseconds: Python keeps microseconds)
    was; None for no time at all."""
    if not moment:
        return None
    return (now - dt.datetime.fromisoformat(moment)).total_seconds()
