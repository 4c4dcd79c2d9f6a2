"""prefect_host.profile.blocks against a real server with the blocks registered (fixtures_server)."""

from __future__ import annotations


def test_converged_storage_blocks_are_recognised_without_saving(stack_outputs, laptop):
    import dataclasses

    from fixtures_server import PROFILE
    from prefect_host.profile import register_storage_blocks, storage_blocks_current

    def current(outputs, profile: str = PROFILE) -> bool:
        return storage_blocks_current(
            api_url=outputs.api_url, auth_string=outputs.prefect_auth_string, outputs=outputs, profile_name=profile
        )

    assert current(stack_outputs)
    assert register_storage_blocks(
        api_url=stack_outputs.api_url,
        auth_string=stack_outputs.prefect_auth_string,
        outputs=stack_outputs.to_mapping(),
        profile_name=PROFILE,
    ) == {"changed": []}
    # Anything the bootstrap sets that differs: not current, so register_blocks runs.
    assert not current(dataclasses.replace(stack_outputs, aws_secret_access_key="rotated-secret"))
    assert not current(dataclasses.replace(stack_outputs, s3_endpoint_url="http://127.0.0.1:1"))
    assert not current(dataclasses.replace(stack_outputs, bucket_region="eu-west-3"))
    assert not current(dataclasses.replace(stack_outputs, bucket_name="another-bucket"))
    assert not current(stack_outputs, profile="never-registered")
