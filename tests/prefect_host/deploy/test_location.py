"""prefect_host.deploy.location through scripts/deploy.py: each flow-and-deployment pair has a folder and a
code block of its own, so a deploy never replaces another deployment's code, and a worker's pull step gets
exactly the files of its deployment."""

from __future__ import annotations

from deploy_support import (
    ENTRYPOINT,
    FLOW,
    MANIFEST,
    PULL_STEP,
    assert_ok,
    code_location,
    code_objects,
    project_code,
    pulled_code,
    read_block,
    read_deployment,
    run_deploy,
)

from fixtures_server import UPLOADED
from prefect_host.storage import prefect_api

OTHER_FLOW = """from prefect import flow


@flow(name="other-flow")
def other() -> str:
    return "other"
"""


def test_two_flows_deployed_as_prod_keep_their_own_folders_and_blocks(
    work_pool, laptop, project, stack_outputs, s3_server, tmp_path
):
    other = tmp_path / "other"
    other.mkdir()
    (other / "other_flow.py").write_text(OTHER_FLOW)
    assert_ok(run_deploy(laptop, project, "--name", "prod"))
    block, folder = code_location(stack_outputs, "prod")
    objects = code_objects(s3_server, stack_outputs, folder)

    assert_ok(run_deploy(laptop, other, "--name", "prod", entrypoint="other_flow.py:other"))
    other_block, other_folder = code_location(stack_outputs, "prod", flow="other-flow")
    assert other_block != block and other_folder != folder
    assert code_objects(s3_server, stack_outputs, folder) == objects  # the second deploy left them alone
    pulled = pulled_code(stack_outputs, tmp_path / "pull", "prod")
    assert pulled.pop(MANIFEST) and pulled == project_code(project, UPLOADED)
    other_pulled = pulled_code(stack_outputs, tmp_path / "other-pull", "prod", flow="other-flow")
    assert other_pulled.pop(MANIFEST) and other_pulled == project_code(other, ["other_flow.py"])


def test_names_with_the_same_slug_get_distinct_folders_and_blocks(
    work_pool, laptop, project, stack_outputs, s3_server, tmp_path
):
    names = ["etl.v1", "etl-v1", "ETL_v1"]
    for name in names:
        (project / "variant.py").write_text(f"NAME = {name!r}\n")
        assert_ok(run_deploy(laptop, project, "--name", name))
    locations = [code_location(stack_outputs, name) for name in names]
    assert len({block for block, _ in locations}) == 3 and len({folder for _, folder in locations}) == 3
    for name in names:
        pulled = pulled_code(stack_outputs, tmp_path / name, name)
        assert pulled["variant.py"] == f"NAME = {name!r}\n".encode()


def test_the_pull_gets_its_own_folder_when_another_key_starts_with_it(
    work_pool, laptop, project, stack_outputs, s3_server, tmp_path
):
    assert_ok(run_deploy(laptop, project, "--name", "pfx"))
    _, folder = code_location(stack_outputs, "pfx")
    longer = f"pfx-{folder.rstrip('/').rsplit('-', 1)[1]}-x"  # slugs to <flow>-pfx-<hash>-x-<hash>
    (project / "extra.py").write_text("VALUE = 1\n")
    assert_ok(run_deploy(laptop, project, "--name", longer))
    _, longer_folder = code_location(stack_outputs, longer)
    assert longer_folder.startswith(folder.rstrip("/"))
    assert sorted(pulled_code(stack_outputs, tmp_path / "pull", "pfx")) == sorted([*UPLOADED, MANIFEST])


def test_a_deployment_of_the_old_layout_moves_and_leaves_the_old_folder_and_block(
    work_pool, laptop, project, stack_outputs, s3_server, tmp_path
):
    """Made as the deploy did before: code in flows/<deployment>/, block <profile>-flows-<deployment>."""
    from prefect.client.orchestration import get_client
    from prefect_aws import S3Bucket

    name, bucket = "legacy", stack_outputs.bucket_name
    old_block = f"laptop-test-flows-{name}"
    for path in UPLOADED:
        s3_server.client("s3").put_object(Bucket=bucket, Key=f"flows/{name}/{path}", Body=(project / path).read_bytes())
    with prefect_api(stack_outputs.api_url, stack_outputs.prefect_auth_string):
        results = S3Bucket.load("laptop-test-results")
        S3Bucket(bucket_name=bucket, bucket_folder=f"flows/{name}", credentials=results.credentials).save(old_block)
        with get_client(sync_client=True) as client:
            deployment_id = client.create_deployment(
                client.create_flow_from_name(FLOW),
                name,
                entrypoint=ENTRYPOINT,
                work_pool_name=work_pool,
                pull_steps=[{PULL_STEP: {"block_type_slug": "s3-bucket", "block_document_name": old_block}}],
            )
    old_objects = code_objects(s3_server, stack_outputs, f"flows/{name}/")
    old_document = read_block(stack_outputs, old_block)

    lines = assert_ok(run_deploy(laptop, project, "--name", name))
    assert f"{FLOW}/{name} updated (id {deployment_id}," in lines[5]
    assert f"its code was in s3-bucket/{old_block} (s3://{bucket}/flows/{name}/) before, left as is" in lines[5]
    block, folder = code_location(stack_outputs, name)
    assert read_deployment(stack_outputs, name).id == deployment_id
    assert block != old_block and folder != f"flows/{name}/"
    assert code_objects(s3_server, stack_outputs, f"flows/{name}/") == old_objects
    assert (read_block(stack_outputs, old_block).id, read_block(stack_outputs, old_block).data) == (
        old_document.id,
        old_document.data,
    )
    assert sorted(pulled_code(stack_outputs, tmp_path / "pull", name)) == sorted([*UPLOADED, MANIFEST])
