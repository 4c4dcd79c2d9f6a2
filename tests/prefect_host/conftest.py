"""Makes the storage/deploy fixtures of fixtures_server.py available to the tests below this folder."""

from fixtures_server import (  # noqa: F401  (pytest finds fixtures by name)
    laptop,
    prefect_server,
    process_worker,
    project,
    s3_server,
    stack_outputs,
    work_pool,
)
