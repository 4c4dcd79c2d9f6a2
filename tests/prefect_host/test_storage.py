"""The S3 probe and the Prefect blocks, against a real Prefect server and moto with IAM auth."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time

import pytest

from prefect_host.storage import StorageError, block_slug, prefect_api, probe_bucket, register_blocks


def _probe_objects(s3_server, bucket):
    listing = s3_server.client("s3").list_objects_v2(Bucket=bucket, Prefix=".prefect-host-probe/")
    return [o["Key"] for o in listing.get("Contents", [])]


def test_probe_passes_with_the_stack_key_and_leaves_nothing(stack_outputs, s3_server):
    assert probe_bucket(stack_outputs) == 3  # put, get, delete: no retry needed
    assert _probe_objects(s3_server, stack_outputs.bucket_name) == []


def test_probe_with_a_wrong_secret_names_the_refused_call_not_the_secret(stack_outputs):
    wrong = "wrong-secret-Zx81-never-printed"
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        probe_bucket(dataclasses.replace(stack_outputs, aws_secret_access_key=wrong), deadline_s=3)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "PutObject" in message and "SignatureDoesNotMatch" in message
    assert repr(stack_outputs.bucket_name) in message and stack_outputs.aws_access_key_id in message
    leaked = [
        name
        for name, value in (("wrong secret", wrong), ("real secret", stack_outputs.aws_secret_access_key))
        if value in message
    ]
    assert leaked == []
    # Retried with backoff until the deadline, and not much longer.
    assert int(re.search(r"after (\d+) attempt", message).group(1)) > 1
    assert 1.0 < elapsed < 6.0


def test_probe_names_get_object_when_the_policy_allows_only_put(stack_outputs, s3_server):
    iam = s3_server.client("iam")
    iam.create_group(GroupName="put-only")
    iam.put_group_policy(
        GroupName="put-only",
        PolicyName="put",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{stack_outputs.bucket_name}/*",
                    }
                ],
            }
        ),
    )
    iam.create_user(UserName="put-only-user")
    iam.add_user_to_group(GroupName="put-only", UserName="put-only-user")
    key = iam.create_access_key(UserName="put-only-user")["AccessKey"]
    outputs = dataclasses.replace(
        stack_outputs, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    with pytest.raises(StorageError, match=r"GetObject .* refused with AccessDenied"):
        probe_bucket(outputs, deadline_s=1)


def test_probe_waits_for_a_key_whose_policy_arrives_late(stack_outputs, s3_server):
    """As on AWS, where a new key or policy takes seconds to be honoured: the probe retries."""
    iam = s3_server.client("iam")
    iam.create_user(UserName="late-user")
    key = iam.create_access_key(UserName="late-user")["AccessKey"]
    outputs = dataclasses.replace(
        stack_outputs, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    grant = threading.Timer(2.0, iam.add_user_to_group, kwargs={"GroupName": "S3-FullAccess", "UserName": "late-user"})
    grant.start()
    try:
        attempts = probe_bucket(outputs, deadline_s=30)
    finally:
        grant.join()
    assert attempts > 3


def test_blocks_registered_with_endpoint_and_the_secret_masked(stack_outputs, laptop):
    from prefect.client.orchestration import get_client

    assert laptop.blocks.credentials_slug == "aws-credentials/laptop-test"
    assert laptop.blocks.profile_settings() == {
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "s3-bucket/laptop-test-results",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    }
    with prefect_api(stack_outputs.api_url, stack_outputs.prefect_auth_string), get_client(sync_client=True) as client:
        creds = client.read_block_document_by_name("laptop-test", "aws-credentials", include_secrets=False)
        bucket = client.read_block_document_by_name("laptop-test-results", "s3-bucket", include_secrets=False)
    assert creds.data["aws_access_key_id"] == stack_outputs.aws_access_key_id
    assert creds.data["region_name"] == stack_outputs.bucket_region
    assert creds.data["aws_client_parameters"]["endpoint_url"] == stack_outputs.s3_endpoint_url
    assert set(creds.data["aws_secret_access_key"]) == {"*"}
    as_read = json.dumps(creds.data) + json.dumps(bucket.data, default=str)
    assert (stack_outputs.aws_secret_access_key in as_read) is False
    assert bucket.data["bucket_name"] == stack_outputs.bucket_name and bucket.data["bucket_folder"] == "results"
    assert bucket.block_document_references["credentials"]["block_document"]["id"] == str(creds.id)


def test_the_registered_blocks_reach_the_bucket(stack_outputs, laptop, s3_server):
    from prefect_aws import S3Bucket

    with prefect_api(stack_outputs.api_url, stack_outputs.prefect_auth_string):
        results = S3Bucket.load("laptop-test-results")
        results.write_path("blocks-check.txt", b"ok")
    body = s3_server.client("s3").get_object(Bucket=stack_outputs.bucket_name, Key="results/blocks-check.txt")
    assert body["Body"].read() == b"ok"


def _documents(outputs, profile):
    from prefect.client.orchestration import get_client

    slug = block_slug(profile)
    with prefect_api(outputs.api_url, outputs.prefect_auth_string), get_client(sync_client=True) as client:
        return [
            (d.id, d.updated)
            for d in (
                client.read_block_document_by_name(slug, "aws-credentials"),
                client.read_block_document_by_name(f"{slug}-results", "s3-bucket"),
            )
        ]


@pytest.fixture
def extra_blocks(stack_outputs):
    """Profiles whose blocks a test registers on the shared server's bucket, removed afterwards: the
    newest block on a bucket is what a teammate's profile finds (profile/test_check.py), whatever
    order the test files run in."""
    from prefect.client.orchestration import get_client

    profiles: list[str] = []
    yield profiles
    with prefect_api(stack_outputs.api_url, stack_outputs.prefect_auth_string), get_client(sync_client=True) as client:
        for profile in profiles:
            for document_id, _ in _documents(stack_outputs, profile):
                client.delete_block_document(document_id)


def test_registering_again_changes_nothing(stack_outputs, extra_blocks):
    extra_blocks.append("Idem Potent")
    first = register_blocks(stack_outputs.api_url, stack_outputs.prefect_auth_string, stack_outputs, "Idem Potent")
    assert first.changed == ("aws-credentials/idem-potent", "s3-bucket/idem-potent-results")
    before = _documents(stack_outputs, "Idem Potent")
    again = register_blocks(stack_outputs.api_url, stack_outputs.prefect_auth_string, stack_outputs, "Idem Potent")
    assert again.changed == ()
    assert _documents(stack_outputs, "Idem Potent") == before  # same ids, not even re-saved


def test_a_rotated_key_updates_only_the_credentials_block(stack_outputs, s3_server, extra_blocks):
    from prefect_aws import S3Bucket

    extra_blocks.append("rotation")
    register_blocks(stack_outputs.api_url, stack_outputs.prefect_auth_string, stack_outputs, "rotation")
    (creds_before, bucket_before) = _documents(stack_outputs, "rotation")
    key = s3_server.client("iam").create_access_key(UserName="prefect-host-test")["AccessKey"]
    rotated = dataclasses.replace(
        stack_outputs, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    result = register_blocks(rotated.api_url, rotated.prefect_auth_string, rotated, "rotation")
    assert result.changed == ("aws-credentials/rotation",)
    (creds_after, bucket_after) = _documents(stack_outputs, "rotation")
    assert creds_after[0] == creds_before[0] and creds_after[1] > creds_before[1]  # updated in place
    assert bucket_after == bucket_before
    with prefect_api(stack_outputs.api_url, stack_outputs.prefect_auth_string):
        assert S3Bucket.load("rotation-results").credentials.aws_access_key_id == key["AccessKeyId"]


def test_a_wrong_auth_string_is_a_clear_error(stack_outputs):
    wrong = "admin:not-the-password-Q7"
    with pytest.raises(StorageError, match="HTTP 401") as caught:
        register_blocks(stack_outputs.api_url, wrong, stack_outputs, "unauthorised")
    assert wrong.split(":")[1] not in str(caught.value)


def test_profile_names_become_block_names():
    assert block_slug("Team_A.prod") == "team-a-prod"
    with pytest.raises(StorageError, match="profile name '__'"):
        block_slug("__")
