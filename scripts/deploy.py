#!/usr/bin/env python3
"""Deploy a flow to your Prefect host: run it in the flow's project directory.

    python scripts/deploy.py FILE.py:flow_function [--profile NAME] [--name NAME] [--pool default]
        [--interval 300 | --cron '0 6 * * *'] [--param KEY=VALUE ...] [--run-now [--timeout 300]]

Uploads the directory (minus .prefectignore and the default excludes) to
s3://<bucket>/flows/<flow>-<deployment>-<hash>/ and creates or updates the deployment; see prefect_host/deploy/.

The same command as `prefect-host deploy` (prefect_host/cli/deploy.py).
"""

import sys

from prefect_host.cli.deploy import main

if __name__ == "__main__":
    sys.exit(main())
