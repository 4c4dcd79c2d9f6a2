"""`python -m prefect_host.cli COMMAND ...`: the `prefect-host` console script without the install."""

import sys

from prefect_host.cli import main

if __name__ == "__main__":
    sys.exit(main())
