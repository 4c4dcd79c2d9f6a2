"""prefect_host.deploy.server through scripts/deploy.py: what the server lacks is refused before the upload."""

from __future__ import annotations

from deploy_support import assert_refused, bucket_state, read_deployment, run_deploy, server_state


def test_an_unknown_pool_is_refused_before_the_upload(work_pool, laptop, project, stack_outputs, s3_server):
    before = bucket_state(s3_server, stack_outputs), server_state(stack_outputs)
    message = assert_refused(run_deploy(laptop, project, "--name", "no-pool", "--pool", "nosuch"))
    assert "--pool 'nosuch': no such work pool" in message and "existing: default" in message
    assert read_deployment(stack_outputs, "no-pool") is None
    assert (bucket_state(s3_server, stack_outputs), server_state(stack_outputs)) == before
