#!/usr/bin/env python3
"""Install, configure and start the Prefect server and its workers on the stack's VM, register the
S3 result storage, and write this laptop's profile.

    scripts/bootstrap.py --stack dev                    # runs `pulumi stack output` itself
    scripts/bootstrap.py --outputs outputs.json         # the JSON of `pulumi stack output --json --show-secrets`
    scripts/bootstrap.py --outputs outputs.json --workers 2 --activate
    scripts/bootstrap.py --outputs outputs.json --client-only --activate   # a teammate's laptop
    scripts/bootstrap.py --outputs outputs.json --client-only --ca-file prefect-host-dev-ca.pem
                                                        # a teammate without SSH, tlsMode internal

Exit status: 0 = server verified and profile written; 1 = an error (one paragraph on stderr);
2 = invalid command line.

The same command as `prefect-host bootstrap` (prefect_host/cli/bootstrap.py).
"""

import sys

from prefect_host.cli.bootstrap import main

if __name__ == "__main__":
    sys.exit(main())
