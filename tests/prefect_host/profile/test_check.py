"""prefect_host.profile.check: the server reached from the laptop; the results block against a real
server with the blocks registered (fixtures_server)."""

from __future__ import annotations

import tomllib

import pytest

from prefect_host.errors import ProfileError
from prefect_host.profile import newer_client_warning


def test_newer_laptop_is_warned_about():
    assert "newer than the server's 3.9.1" in newer_client_warning("3.10.0", "3.9.1")
    assert newer_client_warning("3.9.1", "3.9.1") is None
    assert newer_client_warning("3.8.3", "3.9.1") is None


def test_find_results_block_prefers_the_named_one_and_else_finds_it_by_bucket(stack_outputs, laptop):
    from prefect_host.profile import find_results_block

    def find(bucket: str, preferred: str) -> str:
        return find_results_block(
            api_url=stack_outputs.api_url,
            auth_string=stack_outputs.prefect_auth_string,
            bucket=bucket,
            preferred=preferred,
        )

    assert find(stack_outputs.bucket_name, laptop.blocks.results_slug) == laptop.blocks.results_slug
    # A teammate whose profile has another name finds the operator's block through the bucket.
    assert find(stack_outputs.bucket_name, "s3-bucket/teammate-results") == laptop.blocks.results_slug
    with pytest.raises(ProfileError, match=r"has no results block for bucket 'other-bucket'.*not written"):
        find("other-bucket", "s3-bucket/teammate-results")


def test_find_results_block_tells_an_unreachable_server_apart(stack_outputs):
    from prefect_host.profile import ServerUnreachable, find_results_block

    with pytest.raises(ServerUnreachable, match="401"):
        find_results_block(
            api_url=stack_outputs.api_url, auth_string="admin:wrong", bucket="b", preferred="s3-bucket/x-results"
        )


def test_client_only_profile_gets_the_servers_results_block(stack_outputs, laptop, profiles_path):
    from prefect_host.profile import write_and_check

    def write_teammates_profile():
        return write_and_check(
            "teammate",
            api_url=stack_outputs.api_url,
            auth_string=stack_outputs.prefect_auth_string,
            activate=False,
            results_block="s3-bucket/teammate-results",
            find_results_in_bucket=stack_outputs.bucket_name,
        )

    result = write_teammates_profile()
    assert result.results_block == laptop.blocks.results_slug and result.server_version == "3.9.1"
    settings = tomllib.loads(profiles_path.read_text())["profiles"]["teammate"]
    assert settings["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == laptop.blocks.results_slug
    again = write_teammates_profile()
    assert not again.changed
