"""The continuous database backup settings, as plain rules on strings.

Litestream replicates Prefect's SQLite database to the stack's bucket under backups/prefect-db/, takes a full
snapshot every `backupSnapshotInterval` and keeps `backupRetention`. stack_config turns a broken value into its
StackConfigError; prefect_host/durations.py holds the same rules for the outputs (infra never imports prefect_host).
"""

from __future__ import annotations

import re

NAMESPACE = "prefect-host"
RETENTION = "backupRetention"
SNAPSHOT_INTERVAL = "backupSnapshotInterval"
DEFAULTS = {RETENTION: "7d", SNAPSHOT_INTERVAL: "1d"}
# Hours each setting may span, and the same in words.
BOUNDS = {SNAPSHOT_INTERVAL: ((1, 30 * 24), "from 1h to 30d"), RETENTION: ((1, 3650 * 24), "from 1h to 3650d")}


def duration_hours(text: str) -> int | None:
    """ "7d" -> 168, "36h" -> 36; None unless the whole text is 1 to 4 digits (no leading 0) and h or d."""
    match = re.fullmatch(r"([1-9][0-9]{0,3})([hd])", text)
    return None if match is None else int(match[1]) * (24 if match[2] == "d" else 1)


def backup_problem(retention: str | None, interval: str | None) -> tuple[str, str, str] | None:
    """(full key, value, what is allowed) for the first bad setting; None when both are good.

    Unset settings take their defaults. The retention must cover at least one snapshot interval; the setting
    blamed for a mismatch is the one the user set (the retention when both are)."""
    given = {SNAPSHOT_INTERVAL: interval, RETENTION: retention}
    values = {name: DEFAULTS[name] if raw is None else raw for name, raw in given.items()}
    hours: dict[str, int] = {}
    for name, value in values.items():
        (low, high), span = BOUNDS[name]
        found = duration_hours(value)
        if found is None or not low <= found <= high:
            return f"{NAMESPACE}:{name}", value, f"a whole number of hours or days such as 36h or 7d, {span}"
        hours[name] = found
    if hours[RETENTION] >= hours[SNAPSHOT_INTERVAL]:
        return None
    blamed, other = (SNAPSHOT_INTERVAL, RETENTION) if retention is None else (RETENTION, SNAPSHOT_INTERVAL)
    shown_other = f'"{values[other]}"' + (", the default" if given[other] is None else "")
    relation = "at least" if blamed == RETENTION else "at most"
    return (
        f"{NAMESPACE}:{blamed}",
        values[blamed],
        f"{relation} {NAMESPACE}:{other} ({shown_other}): backups are kept for {NAMESPACE}:{RETENTION}, "
        f"which must be no shorter than the {NAMESPACE}:{SNAPSHOT_INTERVAL} between full snapshots",
    )
