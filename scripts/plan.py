#!/usr/bin/env python3
"""Show what `pulumi up` would create for a stack config, without a cloud account (`make plan CONFIG=...`).

    scripts/plan.py examples/stack-aws.yaml

Exit status: 0 = planned, no policy violations; 1 = policy violations; 2 = invalid config.

The same command as `prefect-host plan` (prefect_host/cli/plan.py).
"""

import sys

from prefect_host.cli.plan import main

if __name__ == "__main__":
    sys.exit(main())
