"""prefect_host.deploy.server through scripts/deploy.py: what the server lacks is refused before the upload."""

from __future__ import annotations

from deploy_support import assert_refused, code_objects, read_deployment, run_deploy


def test_an_unknown_pool_is_refused_before_the_upload(work_pool, laptop, project, stack_outputs, s3_server):
    message = assert_refused(run_deploy(laptop, project, "--name", "no-pool", "--pool", "nosuch"))
    assert "--pool 'nosuch': no such work pool" in message and "existing: default" in message
    assert code_objects(s3_server, stack_outputs, "no-pool") == {}
    assert read_deployment(stack_outputs, "no-pool") is None
