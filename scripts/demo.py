#!/usr/bin/env python3
"""A Prefect host on this machine, no cloud needed (run as root).

    scripts/demo.py          # make demo: boot it (or converge it), bootstrap it, run and deploy a flow
    scripts/demo.py down     # make demo-down: stop and remove everything `make demo` started

See prefect_host/local/demo.py for what it does and where it keeps its state (.demo/).

The same command as `prefect-host demo` (prefect_host/cli/demo.py).
"""

import sys

from prefect_host.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
