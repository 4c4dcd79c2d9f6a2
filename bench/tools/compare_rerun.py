"""Rows c (re-run on a converged host) and d (--client-only) of two releases, interleaved on one
converged host so that the machine's load falls on both alike.

    git worktree add /tmp/bench-old 6fda596 && git worktree add /tmp/bench-new HEAD
    cd /tmp/bench-new && PYTHONPATH=$PWD /path/to/.venv/bin/python bench/tools/compare_rerun.py /tmp/bench-old . 5

Root, like `make bench` (it boots a local guest).
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prefect_host.local import build_image
from prefect_host.local.bench import _Bootstrapped
from prefect_host.local.wheelhouse import GUEST_PYTHON, GUEST_REQUIREMENTS, ensure_wheelhouse

RELEASES = {"previous": Path(sys.argv[1]).resolve(), "this": Path(sys.argv[2]).resolve()}
N = int(sys.argv[3]) if len(sys.argv) > 3 else 5
work = Path(tempfile.mkdtemp(prefix="cd-compare-"))
host = _Bootstrapped(
    build_image(), ensure_wheelhouse(GUEST_REQUIREMENTS, python_version=GUEST_PYTHON), work, storage=True
)
try:
    host.bootstrap()
    host.wait_for_bytecode()
    times = {(row, name): [] for row in "cd" for name in RELEASES}
    for i in range(N):
        for row, extra in (("c", []), ("d", ["--client-only"])):
            for name, tree in RELEASES.items() if i % 2 == 0 else reversed(list(RELEASES.items())):
                argv = [
                    sys.executable,
                    str(tree / "scripts/bootstrap.py"),
                    "--outputs",
                    str(host.outputs),
                    "--find-links",
                    host._index.url,
                    "--apt-source",
                    host._apt.source_line,
                    "--profile",
                    "prefect-host-bench",
                    "--connect-timeout",
                    "60",
                    *extra,
                ]
                env = dict(host.env, PYTHONPATH=str(tree))
                started = time.monotonic()
                done = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True, timeout=300)
                seconds = time.monotonic() - started
                assert done.returncode == 0, done.stdout + done.stderr
                assert "[changed]" not in done.stdout or row == "d", done.stdout
                times[(row, name)].append(seconds)
                print(f"{row} {name}: {seconds:.2f} s", flush=True)
    for (row, name), values in times.items():
        print(
            f"row {row} {name}: median {statistics.median(values):.2f} s, "
            f"min {min(values):.2f}, max {max(values):.2f}, n {len(values)}"
        )
    for row in "cd":
        old, new = (statistics.median(times[(row, name)]) for name in RELEASES)
        print(f"row {row}: this / previous = {new / old:.2f}")
finally:
    host.close()
