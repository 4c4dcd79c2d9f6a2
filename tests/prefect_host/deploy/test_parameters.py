"""prefect_host.deploy.parameters through scripts/deploy.py: a parameter the flow refuses stops the deploy
before anything is written."""

from __future__ import annotations

import pytest
from deploy_support import assert_refused, bucket_state, read_deployment, run_deploy, server_state


@pytest.mark.parametrize(
    "param, named",
    [
        ("rows=5", "--param rows: flow 'train-duration-model' has no such parameter"),
        ("n_rows=many", "n_rows: Input should be a valid integer"),
        ("run_date=2024-02-30", "run_date: Input should be a valid date"),
    ],
)
def test_a_bad_parameter_is_refused_and_nothing_is_created(param, named, laptop, project, stack_outputs, s3_server):
    name = "refused-" + param.split("=")[0].replace("_", "-")
    before = bucket_state(s3_server, stack_outputs), server_state(stack_outputs)
    message = assert_refused(run_deploy(laptop, project, "--name", name, "--param", param))
    assert named in message and "run_date: date | None = None, n_rows: int = 500" in message
    assert "Nothing was uploaded or deployed" in message
    assert read_deployment(stack_outputs, name) is None
    assert (bucket_state(s3_server, stack_outputs), server_state(stack_outputs)) == before
