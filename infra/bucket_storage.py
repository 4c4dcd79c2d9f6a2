"""The S3 bucket for flow code and results (S3 on both clouds, as in the tutorial)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random


def tls_only_policy(bucket_arn: str) -> dict:
    """Deny every request to the bucket and its objects that does not use TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


@dataclass(frozen=True)
class BucketStorageArgs:
    """What BucketStorage uses. Without bucket_name the bucket is named bucket_name_prefix plus a random suffix."""

    stack: str
    bucket_name: str | None
    bucket_name_prefix: str
    retain_data: bool


class BucketStorage(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: BucketStorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("prefect-host:bucket_storage:BucketStorage", name, None, opts)
        # retainData: `pulumi destroy` forgets the bucket and its settings instead of deleting them,
        # so the data survives with its public access block, encryption and TLS-only policy intact.
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_data)

        if args.bucket_name is not None:
            bucket_name: pulumi.Input[str] = args.bucket_name
        else:
            # Bucket names are global across all AWS accounts: the stack's name plus a random suffix.
            suffix = random.RandomId(f"{name}-bucket-suffix", byte_length=4, opts=pulumi.ResourceOptions(parent=self))
            bucket_name = suffix.hex.apply(lambda hex_suffix: f"{args.bucket_name_prefix}-{hex_suffix}")

        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=bucket_name,
            # Only a disposable stack may delete a bucket that still holds objects.
            force_destroy=not args.retain_data,
            tags={"prefect-host:stack": args.stack},
            opts=keep,
        )
        access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=keep,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=keep
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=keep,
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=keep
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket.id,
            policy=pulumi.Output.json_dumps(bucket.arn.apply(tls_only_policy)),
            # S3 rejects policy writes that race the public access block being set.
            opts=pulumi.ResourceOptions.merge(keep, pulumi.ResourceOptions(depends_on=[access_block])),
        )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucketName": self.bucket_name, "bucketArn": self.bucket_arn})
