"""Each component's argument object, built from the one validated StackConfig.

The only module besides stack_config that reads StackConfig: the components see just the fields they
use, plus the outputs of the components they depend on (HostKeys' keys, BucketStorage's bucket ARN).
"""

from __future__ import annotations

from aws_host import AwsHostArgs, DebianAmi
from bucket_access import BucketAccessArgs
from bucket_storage import BucketStorage, BucketStorageArgs
from gcp_host import GcpHostArgs
from host_keys import HostKeys, HostKeysArgs
from stack_config import StackConfig


def host_keys_args(config: StackConfig) -> HostKeysArgs:
    return HostKeysArgs(ssh_public_key=config.ssh_public_key)


def aws_host_args(config: StackConfig, ami: DebianAmi, keys: HostKeys) -> AwsHostArgs:
    return AwsHostArgs(
        stack=config.stack,
        instance_type=config.instance_type,
        disk_size_gb=config.disk_size_gb,
        allowed_cidrs=config.allowed_cidrs,
        ssh_allowed_cidrs=config.ssh_allowed_cidrs,
        ami=ami,
        operator_public_key=keys.operator_public_key,
        host_private_key=keys.host_private_key,
        host_public_key=keys.host_public_key,
    )


def gcp_host_args(config: StackConfig, keys: HostKeys) -> GcpHostArgs:
    # parse_stack_config sets both for cloud gcp; anything else is a caller's mistake.
    if config.gcp_region is None or config.gcp_zone is None:
        raise ValueError(f"gcp_host_args needs a config with cloud gcp, not {config.cloud}")
    return GcpHostArgs(
        stack=config.stack,
        region=config.gcp_region,
        zone=config.gcp_zone,
        instance_type=config.instance_type,
        image=config.image,
        disk_size_gb=config.disk_size_gb,
        allowed_cidrs=config.allowed_cidrs,
        ssh_allowed_cidrs=config.ssh_allowed_cidrs,
        operator_public_key=keys.operator_public_key,
        host_private_key=keys.host_private_key,
        host_public_key=keys.host_public_key,
    )


def bucket_storage_args(config: StackConfig) -> BucketStorageArgs:
    return BucketStorageArgs(
        stack=config.stack,
        bucket_name=config.bucket_name,
        bucket_name_prefix=config.bucket_name_prefix,
        retain_data=config.retain_data,
    )


def bucket_access_args(config: StackConfig, storage: BucketStorage) -> BucketAccessArgs:
    return BucketAccessArgs(
        stack=config.stack,
        iam_group_name=config.iam_group_name,
        iam_user_name=config.iam_user_name,
        s3_access=config.s3_access,
        bucket_arn=storage.bucket_arn,
    )
