#!/usr/bin/env python3
"""Our bootstrap against the tutorial's path, side by side on fresh local hosts (run as root).

    scripts/bench_bootstrap.py [--repeat 3] [--deploy-repeat 5] [--output bench/latest.md]

See prefect_host/local/bench.py for the rows and how each is measured.

The same command as `prefect-host bench` (prefect_host/cli/bench.py).
"""

import sys

from prefect_host.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
