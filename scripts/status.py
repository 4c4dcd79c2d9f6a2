#!/usr/bin/env python3
"""The same command as `prefect-host status` (prefect_host/cli/status.py); see its --help."""

import sys

from prefect_host.cli.status import main

if __name__ == "__main__":
    sys.exit(main())
