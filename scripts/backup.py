#!/usr/bin/env python3
"""The same command as `prefect-host backup` (prefect_host/cli/backup.py); see its --help."""

import sys

from prefect_host.cli.backup import main

if __name__ == "__main__":
    sys.exit(main())
