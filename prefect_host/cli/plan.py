"""`prefect-host plan` (scripts/plan.py): show what `pulumi up` would create for a stack config, without a
cloud account; see mockstack/plan.py.

The plan runs the Pulumi program under Pulumi's mocks (mockstack), in a child Python process:
prefect_host never imports pulumi, not even through this command. The child inherits stdin, stdout
and stderr, so its output and exit status are the command's.

Exit status: 0 = planned, no policy violations; 1 = policy violations; 2 = invalid config;
130 = interrupted.
"""

from __future__ import annotations

import subprocess
import sys

# The child's argv is [prog, *args]; argparse in mockstack.plan names itself after sys.argv[0].
PLAN_PROGRAM = "import sys; from mockstack.plan import main; sys.argv[0] = sys.argv.pop(1); sys.exit(main())"


def main(argv: list[str] | None = None, prog: str = "plan.py") -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = subprocess.run([sys.executable, "-c", PLAN_PROGRAM, prog, *argv]).returncode
    except KeyboardInterrupt:  # the child got the same Ctrl-C; subprocess.run has stopped it
        return 130
    return status if status >= 0 else 128 - status  # killed by signal N: the shell's 128 + N
