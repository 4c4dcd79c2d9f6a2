"""The local S3-API server: what provision() creates, and that IAM auth is really enforced."""

from __future__ import annotations

import socket

import pytest
from botocore.exceptions import ClientError

from prefect_host.errors import PrefectHostError
from prefect_host.local.s3 import S3Credentials, S3Server


@pytest.fixture(scope="module")
def server():
    with S3Server("127.0.0.1") as s3:
        yield s3


@pytest.fixture(scope="module")
def team(server):
    return server.provision("team-bucket", user="team-user")


def _code(call, **kwargs) -> str:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]["Code"]


def test_provisioned_key_reads_and_writes_its_bucket(server, team):
    assert server.endpoint_url.startswith("http://127.0.0.1:") and server.port > 0
    s3 = server.client("s3", team)
    s3.put_object(Bucket="team-bucket", Key="a/b.txt", Body=b"hello")
    assert s3.get_object(Bucket="team-bucket", Key="a/b.txt")["Body"].read() == b"hello"
    s3.delete_object(Bucket="team-bucket", Key="a/b.txt")


def test_what_provision_created_mirrors_infra(server, team):
    iam = server.client("iam")
    groups = iam.list_groups_for_user(UserName="team-user")["Groups"]
    assert [g["GroupName"] for g in groups] == ["S3-FullAccess"]
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName="team-user")["AccessKeyMetadata"]] == [
        team.access_key_id
    ]
    assert "team-bucket" in [b["Name"] for b in server.client("s3").list_buckets()["Buckets"]]


def test_a_wrong_secret_is_refused(server, team):
    bad = server.client("s3", team._replace(secret_access_key="not-the-secret"))
    assert _code(bad.put_object, Bucket="team-bucket", Key="x", Body=b"x") == "SignatureDoesNotMatch"


def test_an_unknown_key_is_refused(server):
    stranger = server.client("s3", S3Credentials("AKIAUNKNOWNKEY000000", "whatever", "us-east-1"))
    assert _code(stranger.list_objects_v2, Bucket="team-bucket") == "InvalidAccessKeyId"


def test_the_policy_is_scoped_to_the_bucket_and_to_s3(server, team):
    server.provision("other-bucket", group="Other-Group", user="other-user")
    s3 = server.client("s3", team)
    assert _code(s3.put_object, Bucket="other-bucket", Key="x", Body=b"x") == "AccessDenied"
    assert _code(server.client("iam", team).list_users) == "AccessDenied"


def test_provision_again_reuses_bucket_group_user_and_adds_a_working_key(server, team):
    server.client("s3", team).put_object(Bucket="team-bucket", Key="kept", Body=b"1")
    second = server.provision("team-bucket", user="team-user")
    assert second.access_key_id != team.access_key_id
    assert server.client("s3", second).get_object(Bucket="team-bucket", Key="kept")["Body"].read() == b"1"


def test_other_regions_get_their_bucket_there():
    with S3Server("127.0.0.1", region="eu-west-1") as s3:
        creds = s3.provision("eu-bucket", user="eu-user")
        assert creds.region == "eu-west-1"
        location = s3.client("s3", creds).get_bucket_location(Bucket="eu-bucket")["LocationConstraint"]
        assert location == "eu-west-1"


def test_stop_ends_the_child_and_frees_the_port():
    s3 = S3Server("127.0.0.1").start()
    assert s3.is_running and s3.pid is not None
    port = s3.port
    assert s3.stop() == 0  # a clean exit on SIGTERM, not a kill
    assert not s3.is_running and s3.pid is None and s3.stop() is None
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    with pytest.raises(PrefectHostError, match="not started"):
        _ = s3.endpoint_url


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(PrefectHostError, match=f"moto did not start on 127.0.0.1:{taken.getsockname()[1]}"):
            S3Server("127.0.0.1", port=taken.getsockname()[1]).start()
