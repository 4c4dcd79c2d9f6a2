"""prefect_host.deploy.upload through scripts/deploy.py: changed, new and removed files are synced, the same
deployment gets the new version, and a sync deletes only what the deployment's manifest says it uploaded."""

from __future__ import annotations

import json

from deploy_support import (
    FLOW,
    MANIFEST,
    assert_ok,
    assert_refused,
    code_location,
    code_objects,
    read_deployment,
    run_deploy,
    server_state,
)

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
    _, folder = code_location(stack_outputs, name)
    assert sorted(code_objects(s3_server, stack_outputs, folder)) == sorted([*UPLOADED, MANIFEST])


def test_a_removed_file_is_deleted_and_nothing_the_deploy_did_not_upload(
    work_pool, laptop, project, stack_outputs, s3_server
):
    name = "removing"
    (project / "extra.py").write_text("VALUE = 1\n")
    assert_ok(run_deploy(laptop, project, "--name", name))
    _, folder = code_location(stack_outputs, name)
    s3 = s3_server.client("s3")
    s3.put_object(Bucket=stack_outputs.bucket_name, Key=f"{folder}notes/by-hand.txt", Body=b"put there by a person\n")
    before = code_objects(s3_server, stack_outputs, folder)

    (project / "extra.py").unlink()
    lines = assert_ok(run_deploy(laptop, project, "--name", name))
    assert "0 uploaded, 2 unchanged, 1 removed" in lines[3]
    after = code_objects(s3_server, stack_outputs, folder)
    assert sorted(after) == sorted([*UPLOADED, MANIFEST, "notes/by-hand.txt"])
    assert {key: after[key] for key in [*UPLOADED, "notes/by-hand.txt"]} == {
        key: before[key] for key in [*UPLOADED, "notes/by-hand.txt"]
    }
    manifest = s3.get_object(Bucket=stack_outputs.bucket_name, Key=f"{folder}{MANIFEST}")["Body"].read()
    assert json.loads(manifest)["files"] == sorted(UPLOADED)


def test_a_folder_whose_manifest_names_another_deployment_is_not_touched(
    work_pool, laptop, project, stack_outputs, s3_server
):
    """Two pairs of names sharing a key (a hash collision, or a hand-made folder): refused before any write."""
    name = "claimed"
    assert_ok(run_deploy(laptop, project, "--name", name))
    _, folder = code_location(stack_outputs, name)
    s3 = s3_server.client("s3")
    manifest = json.loads(s3.get_object(Bucket=stack_outputs.bucket_name, Key=f"{folder}{MANIFEST}")["Body"].read())
    manifest["deployment"] = "someone-else"
    s3.put_object(Bucket=stack_outputs.bucket_name, Key=f"{folder}{MANIFEST}", Body=json.dumps(manifest).encode())
    (project / "extra.py").write_text("VALUE = 1\n")
    before = code_objects(s3_server, stack_outputs, folder), server_state(stack_outputs)

    message = assert_refused(run_deploy(laptop, project, "--name", name))
    assert f"names deployment {FLOW}/someone-else, not {FLOW}/{name}" in message and "nothing was written" in message
    assert (code_objects(s3_server, stack_outputs, folder), server_state(stack_outputs)) == before
