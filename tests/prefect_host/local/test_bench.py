"""scripts/bench_bootstrap.py's arithmetic and report (the runs themselves take minutes on real
hosts: `make bench`). No timing is asserted anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prefect_host.local import bench
from prefect_host.local.bench_report import bench_command_line, hardware

REPO = Path(__file__).resolve().parents[3]

BOOTSTRAP_OUTPUT = """\
prefect-host bootstrap: Prefect 3.9.1 for admin@10.77.2.2
  host key pinned: ssh-ed25519 SHA256:KeqOQ29+W9O70n7uZgodToFPYUgAJWdPdW4/HObVhKk
  [ok]       connect to admin@10.77.2.2                        0.1 s
  [changed]  install prefect 3.9.1 and prefect-aws 0.7.12      2.5 s
  [...]      start the Prefect server                              10 s so far
  [changed]  start the Prefect server                         10.6 s
  [ok]       profile x: write it, reach the server through it    0.1 s
Done in 13.6 s. Prefect server 3.9.1.
"""


def test_step_durations_come_from_the_bootstraps_step_lines():
    assert bench.step_durations(BOOTSTRAP_OUTPUT) == {
        "connect to admin@10.77.2.2": 0.1,
        "install prefect 3.9.1 and prefect-aws 0.7.12": 2.5,
        "start the Prefect server": 10.6,
        "profile x: write it, reach the server through it": 0.1,
    }


@pytest.mark.parametrize("value", [0, -1, True, "3", 2.5])
def test_repeat_counts_are_checked(value):
    with pytest.raises(bench.BenchError, match=rf"--repeat {value!r}: must be a whole number >= 1"):
        bench.check_repeat("--repeat", value, 1)


def test_zero_deploy_runs_are_allowed():
    assert bench.check_repeat("--deploy-repeat", 0, 0) == 0


def test_table_gives_medians_extremes_counts_goals_and_the_ratios():
    samples = {
        "a": [14.0, 12.0, 30.0],
        "a+": [20.0, 22.0, 24.0],
        "b": [40.0, 28.0, 30.0],
        "c": [2.0, 1.8, 2.2],
        "d": [],
        "e": [9.0],
    }
    table = bench.results_table(samples)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table[2:]}
    assert set(rows) == {"a", "a+", "b", "c", "e", "a/b", "a+/b"}  # no samples, no row
    assert rows["a"].endswith("| 14.0 | 12.0 | 30.0 | 3 |  |")
    assert rows["c"].endswith("| 2.0 | 1.8 | 2.2 | 3 | < 3 s |")
    assert "| 0.47 |" in rows["a/b"] and "<= 0.5" in rows["a/b"]  # 14 / 30
    assert "| 0.73 |" in rows["a+/b"]  # 22 / 30
    assert bench.ratio(samples, "d", "b") is None


def test_steps_table_sorts_by_median_and_gives_shares():
    runs = [{"start": 8.0, "install": 3.0, "connect": 0.01}, {"start": 10.0, "install": 1.0, "connect": 0.01}]
    table = bench.steps_table("a", runs)
    assert table[0].startswith("| step (row a) |")
    assert table[2:] == ["| start | 9.0 | 82% |", "| install | 2.0 | 18% |"]  # under 0.05 s: left out


def test_report_names_the_command_and_the_machine():
    results = bench.Results()
    results.samples["a"] = [13.0]
    results.steps["a"] = [bench.step_durations(BOOTSTRAP_OUTPUT)]
    text = bench.report(
        results,
        command="scripts/bench_bootstrap.py --repeat 1",
        when=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        machine="2 CPUs",
    )
    assert text.startswith("Measured 2026-01-02 03:04 UTC on 2 CPUs with `scripts/bench_bootstrap.py --repeat 1`")
    assert "| start the Prefect server | 10.6 |" in text and text.endswith("\n")
    assert "row a's time goes" in text and "row a+'s" not in text  # no runs, no table


def test_bad_repeat_fails_before_anything_is_built(tmp_path: Path):
    output = tmp_path / "latest.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/bench_bootstrap.py"), "--repeat", "0", "--output", str(output)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PREFECT_HOST_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: --repeat 0: must be a whole number >= 1 (each row gives the median of that many runs)."
    )
    assert not output.exists() and not (tmp_path / "cache").exists()


def test_a_guest_bench_names_how_it_was_started(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench/load.py", "--servers", "bd", "--runs", "150"])
    monkeypatch.setenv("MAKELEVEL", "1")
    assert bench_command_line("bench-load", "LOAD_ARGS", "bench/load.py") == (
        'make bench-load LOAD_ARGS="--servers bd --runs 150"'
    )
    monkeypatch.setattr(sys, "argv", ["bench/load.py"])
    assert bench_command_line("bench-load", "LOAD_ARGS", "bench/load.py") == "make bench-load"
    monkeypatch.delenv("MAKELEVEL")
    monkeypatch.setattr(sys, "argv", ["bench/load.py", "--runs", "5"])
    python = os.path.relpath(sys.executable, REPO)
    assert bench_command_line("bench-load", "LOAD_ARGS", "bench/load.py") == f"{python} bench/load.py --runs 5"


def test_the_hardware_line_names_the_cpus_and_the_ram():
    line = hardware()
    assert f", {os.cpu_count()} CPUs, " in line and " GiB RAM, Linux " in line
