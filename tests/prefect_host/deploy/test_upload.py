"""prefect_host.deploy.upload through scripts/deploy.py: changed, new and removed files are synced, and the
same deployment gets the new version."""

from __future__ import annotations

from deploy_support import FLOW, assert_ok, code_objects, read_deployment, run_deploy

from fixtures_server import UPLOADED


def test_changed_code_updates_the_same_deployment(work_pool, laptop, project, stack_outputs, s3_server):
    name = "changing"
    assert_ok(run_deploy(laptop, project, "--name", name))
    first = read_deployment(stack_outputs, name)

    with open(project / "trips.py", "a") as source:
        source.write("\n# a changed line\n")
    (project / "extra.py").write_text("VALUE = 1\n")
    lines = assert_ok(run_deploy(laptop, project, "--name", name))
    assert "2 uploaded, 1 unchanged, 0 removed" in lines[3] and f"{FLOW}/{name} updated" in lines[5]
    second = read_deployment(stack_outputs, name)
    assert second.id == first.id and second.version != first.version

    (project / "extra.py").unlink()
    lines = assert_ok(run_deploy(laptop, project, "--name", name))
    assert "0 uploaded, 2 unchanged, 1 removed" in lines[3]
    assert sorted(code_objects(s3_server, stack_outputs, name)) == sorted(UPLOADED)
