"""The S3 bucket and the IAM side, on both clouds (the storage is S3 either way)."""

import json
import re

import pytest

from infra_test_configs import AWS, GCP

BUCKET = "aws:s3/bucket:Bucket"
BUCKET_SETTINGS = [
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketPolicy:BucketPolicy",
]
# Anything that would put permissions on the user directly.
USER_POLICY_TYPES = {
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
    "aws:iam/policy:Policy",
}


@pytest.fixture(params=["aws", "gcp"])
def base(request):
    return {"aws": AWS, "gcp": GCP}[request.param]


def test_bucket_is_private_encrypted_versioned_owner_enforced_and_tls_only(program, base):
    run = program(base)
    bucket = run.one(BUCKET)
    for setting in BUCKET_SETTINGS:
        assert run.one(setting).inputs["bucket"] == bucket.id
    assert run.one(BUCKET_SETTINGS[0]).inputs == {
        "bucket": bucket.id,
        "blockPublicAcls": True,
        "blockPublicPolicy": True,
        "ignorePublicAcls": True,
        "restrictPublicBuckets": True,
    }
    assert run.one(BUCKET_SETTINGS[1]).inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    assert run.one(BUCKET_SETTINGS[2]).inputs["rules"] == [
        {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}
    ]
    assert run.one(BUCKET_SETTINGS[3]).inputs["versioningConfiguration"] == {"status": "Enabled"}
    policy = json.loads(run.one(BUCKET_SETTINGS[4]).inputs["policy"])
    arn = bucket.outputs["arn"]
    assert policy["Statement"] == [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]
    assert (run.outputs["bucketName"], run.outputs["bucketRegion"]) == (bucket.inputs["bucket"], "eu-west-1")


def test_bucket_name_is_derived_and_globally_unique_unless_given(program, base):
    run = program(base, stack="prod")
    suffix = run.one("random:index/randomId:RandomId")
    assert suffix.inputs["byteLength"] == 4
    assert run.outputs["bucketName"] == f"prefect-host-prod-{suffix.outputs['hex']}"
    assert re.fullmatch(r"prefect-host-prod-[0-9a-f]{8}", run.outputs["bucketName"])

    run = program({**base, "prefect-host:bucketName": "team-flows.example"})
    assert run.one(BUCKET).inputs["bucket"] == run.outputs["bucketName"] == "team-flows.example"
    assert run.of_type("random:index/randomId:RandomId") == []


def test_retain_data_keeps_the_bucket_and_its_settings_and_never_force_destroys(program, base):
    run = program(base)
    assert run.one(BUCKET).inputs["forceDestroy"] is False
    for type_ in [BUCKET, *BUCKET_SETTINGS]:
        assert run.one(type_).retain_on_delete, type_
    assert not [r for r in run.resources if r.retain_on_delete and r.type not in [BUCKET, *BUCKET_SETTINGS]]

    run = program({**base, "prefect-host:retainData": False})
    assert run.one(BUCKET).inputs["forceDestroy"] is True
    assert not [r for r in run.resources if r.retain_on_delete]


def test_group_holds_a_bucket_only_policy_and_the_user_is_a_member(program, base):
    run = program(base)
    group, user = run.one("aws:iam/group:Group"), run.one("aws:iam/user:User")
    assert group.inputs["name"] == run.outputs["iamGroupName"] == "S3-FullAccess"
    assert user.inputs["name"] == run.outputs["iamUserName"] == "prefect-host-dev"
    membership = run.one("aws:iam/userGroupMembership:UserGroupMembership")
    assert membership.inputs == {"user": "prefect-host-dev", "groups": ["S3-FullAccess"]}
    group_policy = run.one("aws:iam/groupPolicy:GroupPolicy")
    assert group_policy.inputs["group"] == "S3-FullAccess"
    arn = run.one(BUCKET).outputs["arn"]
    statements = json.loads(group_policy.inputs["policy"])["Statement"]
    assert {s["Effect"] for s in statements} == {"Allow"}
    assert {(s["Resource"], a) for s in statements for a in s["Action"]} == {
        (arn, "s3:ListBucket"),
        (arn, "s3:GetBucketLocation"),
        (arn, "s3:ListBucketMultipartUploads"),
        *(
            (f"{arn}/*", a)
            for a in (
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            )
        ),
    }
    assert run.of_type("aws:iam/groupPolicyAttachment:GroupPolicyAttachment") == []
    assert not [r for r in run.resources if r.type in USER_POLICY_TYPES]
    access_key = run.one("aws:iam/accessKey:AccessKey")
    assert access_key.inputs == {"user": "prefect-host-dev"}
    assert run.outputs["awsAccessKeyId"] == access_key.id
    assert run.outputs["awsSecretAccessKey"] == access_key.outputs["secret"]
    assert "secret" in access_key.secret_outputs


@pytest.mark.parametrize("region, partition", [("eu-west-1", "aws"), ("cn-north-1", "aws-cn")])
def test_s3_access_all_attaches_the_managed_policy_to_the_group(program, base, region, partition):
    run = program(
        {**base, "aws:region": region, "prefect-host:s3Access": "all", "prefect-host:iamGroupName": "data-team"}
    )
    [attachment] = run.of_type("aws:iam/groupPolicyAttachment:GroupPolicyAttachment")
    assert attachment.inputs == {
        "group": "data-team",
        "policyArn": f"arn:{partition}:iam::aws:policy/AmazonS3FullAccess",
    }
    assert run.of_type("aws:iam/groupPolicy:GroupPolicy") == []
    assert not [r for r in run.resources if r.type in USER_POLICY_TYPES]
    assert run.one("aws:iam/userGroupMembership:UserGroupMembership").inputs["groups"] == ["data-team"]
