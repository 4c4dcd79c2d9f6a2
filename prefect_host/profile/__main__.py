"""`python -m prefect_host.profile`: the profile step's child process (service.serve)."""

import sys

from prefect_host.profile.service import serve

sys.exit(serve())
