"""`make bench`'s arithmetic and its markdown report: the rows, the medians and ratios, where the
bootstrap's time goes, and the machine it ran on. The runs themselves are bench.py."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from prefect_host.console import parse_step_lines
from prefect_host.local.product import REPO

GOALS = {"a/b": 0.5, "c": 3.0, "d": 2.0}

ROWS = {
    "a": "our bootstrap, nothing to verified (server + Caddy, internal TLS: `--no-storage --workers 0`)",
    "a+": "our bootstrap, nothing to verified, default (+ S3 probe, storage blocks, 1 worker)",
    "b": "tutorial: `python3 -m venv`, `pip install prefect`, `prefect server start` until /api/health",
    "c": "our re-run on a converged host (default)",
    "d": "`--client-only` (write and check the laptop's profile)",
    "e": "`deploy.py --run-now` until the run is Completed (worker on the host)",
}


@dataclass
class Results:
    samples: dict[str, list[float]] = field(default_factory=lambda: {key: [] for key in ROWS})
    # Row -> the bootstrap's step durations, one dict per run (rows a and a+).
    steps: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"a": [], "a+": []})


def step_durations(bootstrap_output: str) -> dict[str, float]:
    """Step name -> seconds, from the lines the bootstrap prints (progress lines are left out)."""
    steps: dict[str, float] = {}
    for line in parse_step_lines(bootstrap_output):
        if line.tag != "failed":
            steps[line.name] = steps.get(line.name, 0.0) + line.seconds
    return steps


def ratio(samples: Mapping[str, Sequence[float]], top: str, bottom: str) -> float | None:
    if not samples.get(top) or not samples.get(bottom):
        return None
    return statistics.median(samples[top]) / statistics.median(samples[bottom])


def results_table(samples: Mapping[str, Sequence[float]]) -> list[str]:
    lines = ["| row | what | median s | min s | max s | n | goal |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for key, what in ROWS.items():
        values = samples.get(key) or []
        if not values:
            continue
        goal = f"< {GOALS[key]:g} s" if key in GOALS else ""
        lines.append(
            f"| {key} | {what} | {statistics.median(values):.1f} | {min(values):.1f} | "
            f"{max(values):.1f} | {len(values)} | {goal} |"
        )
    for top in ("a", "a+"):
        value = ratio(samples, top, "b")
        if value is not None:
            lines.append(f"| {top}/b | ratio of the medians | {value:.2f} | | | | <= {GOALS['a/b']:g} |")
    return lines


def steps_table(row: str, runs: Sequence[Mapping[str, float]]) -> list[str]:
    """Median seconds per bootstrap step over runs, longest first, with its share of the total."""
    names = {name for run in runs for name in run}
    medians = {name: statistics.median(run.get(name, 0.0) for run in runs) for name in names}
    total = sum(medians.values()) or 1.0
    lines = [f"| step (row {row}) | median s | share |", "| --- | ---: | ---: |"]
    for name, seconds in sorted(medians.items(), key=lambda item: -item[1]):
        if seconds >= 0.05:
            lines.append(f"| {name} | {seconds:.1f} | {100 * seconds / total:.0f}% |")
    return lines


def report(results: Results, *, command: str, when: datetime, machine: str) -> str:
    parts = [
        f"Measured {when:%Y-%m-%d %H:%M} UTC on {machine} with `{command}`; wall times in seconds (lower is better).",
        "",
        *results_table(results.samples),
    ]
    for row, runs in results.steps.items():
        if runs:
            parts += [
                "",
                f"Where row {row}'s time goes (the bootstrap's own step durations):",
                "",
                *steps_table(row, runs),
            ]
    return "\n".join(parts) + "\n"


def machine_description(load_before: float, load_after: float) -> str:
    """The machine and how busy it was (1-minute load average): other work skews wall times."""
    return (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"load average {load_before:.1f} before and {load_after:.1f} after"
    )


def hardware() -> str:
    """The CPU model, its count, the RAM and the kernel: the header of the guest benches' reports."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    ram = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")) / 2**20
    return f"{model}, {os.cpu_count()} CPUs, {ram:.1f} GiB RAM, Linux {platform.release()}"


def bench_command_line(make_target: str, args_variable: str, script: str) -> str:
    """How a bench was started: through make (MAKELEVEL is set; its arguments in `args_variable`) or as
    the script (`script`, relative to the repository)."""
    given = " ".join(sys.argv[1:])
    if os.environ.get("MAKELEVEL"):
        return f'make {make_target} {args_variable}="{given}"' if given else f"make {make_target}"
    return f"{os.path.relpath(sys.executable, REPO)} {script} {given}".strip()
