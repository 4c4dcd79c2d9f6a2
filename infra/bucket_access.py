"""Who may use the bucket: an IAM group holding the policy, a user in the group, an access key."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

# What prefect-aws's S3Bucket block needs: list the bucket, read/write/delete objects, multipart uploads.
BUCKET_ACTIONS = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
OBJECT_ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]


def bucket_only_policy(bucket_arn: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Bucket", "Effect": "Allow", "Action": BUCKET_ACTIONS, "Resource": bucket_arn},
            {"Sid": "Objects", "Effect": "Allow", "Action": OBJECT_ACTIONS, "Resource": f"{bucket_arn}/*"},
        ],
    }


@dataclass(frozen=True)
class BucketAccessArgs:
    """What BucketAccess uses: the IAM names, the access level (bucket or all) and BucketStorage's bucket ARN."""

    stack: str
    iam_group_name: str
    iam_user_name: str
    s3_access: str
    bucket_arn: pulumi.Input[str]


class BucketAccess(pulumi.ComponentResource):
    group_name: pulumi.Output[str]
    user_name: pulumi.Output[str]
    access_key_id: pulumi.Output[str]
    secret_access_key: pulumi.Output[str]

    def __init__(self, name: str, args: BucketAccessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:bucket_access:BucketAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        group = aws.iam.Group(f"{name}-group", name=args.iam_group_name, opts=child)
        # Permissions live on the group only, never on the user (CKV_AWS_40).
        if args.s3_access == "bucket":
            aws.iam.GroupPolicy(
                f"{name}-bucket-policy",
                group=group.name,
                policy=pulumi.Output.json_dumps(pulumi.Output.from_input(args.bucket_arn).apply(bucket_only_policy)),
                opts=child,
            )
        else:
            # The tutorial's choice: the AWS managed AmazonS3FullAccess, in the provider's partition.
            partition = aws.get_partition_output().partition
            aws.iam.GroupPolicyAttachment(
                f"{name}-s3-full-access",
                group=group.name,
                policy_arn=partition.apply(lambda p: f"arn:{p}:iam::aws:policy/AmazonS3FullAccess"),
                opts=child,
            )

        user = aws.iam.User(
            f"{name}-user", name=args.iam_user_name, tags={"prefect-host:stack": args.stack}, opts=child
        )
        # Not GroupMembership: that one claims the group's whole member list; this adds one user.
        aws.iam.UserGroupMembership(f"{name}-membership", user=user.name, groups=[group.name], opts=child)
        access_key = aws.iam.AccessKey(f"{name}-access-key", user=user.name, opts=child)

        self.group_name = group.name
        self.user_name = user.name
        self.access_key_id = access_key.id
        self.secret_access_key = pulumi.Output.secret(access_key.secret)
        self.register_outputs(
            {
                "groupName": self.group_name,
                "userName": self.user_name,
                "accessKeyId": self.access_key_id,
                "secretAccessKey": self.secret_access_key,
            }
        )
