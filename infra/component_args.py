"""Each component's argument object, built from the one validated StackConfig.

The only module besides stack_config that reads StackConfig: the components see just the fields they
use, plus the outputs of the components they depend on (HostKeys' keys, BucketStorage's bucket ARN, the
host's VPC and security group or network for the database and the worker VMs).
"""

from __future__ import annotations

from aws_database import AwsDatabaseArgs
from aws_host import AwsHost, AwsHostArgs, DebianAmi
from aws_worker_hosts import AwsWorkerHostsArgs
from bucket_access import BucketAccessArgs
from bucket_storage import BucketStorage, BucketStorageArgs
from gcp_database import GcpDatabaseArgs
from gcp_host import GcpHost, GcpHostArgs
from gcp_worker_hosts import GcpWorkerHostsArgs
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


def aws_worker_hosts_args(config: StackConfig, ami: DebianAmi, keys: HostKeys, host: AwsHost) -> AwsWorkerHostsArgs:
    return AwsWorkerHostsArgs(
        stack=config.stack,
        names=config.worker_host_names,
        instance_type=config.worker_instance_type,
        disk_size_gb=config.worker_disk_size_gb,
        ssh_allowed_cidrs=config.ssh_allowed_cidrs,
        ami=ami,
        operator_public_key=keys.operator_public_key,
        server_security_group_id=host.security_group_id,
    )


def gcp_worker_hosts_args(config: StackConfig, keys: HostKeys, host: GcpHost) -> GcpWorkerHostsArgs:
    if config.gcp_region is None or config.gcp_zone is None:
        raise ValueError(f"gcp_worker_hosts_args needs a config with cloud gcp, not {config.cloud}")
    return GcpWorkerHostsArgs(
        stack=config.stack,
        region=config.gcp_region,
        zone=config.gcp_zone,
        names=config.worker_host_names,
        instance_type=config.worker_instance_type,
        image=config.image,
        disk_size_gb=config.worker_disk_size_gb,
        ssh_allowed_cidrs=config.ssh_allowed_cidrs,
        operator_public_key=keys.operator_public_key,
        server_network_id=host.network_id,
        server_target_tag=host.target_tag,
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


def _postgres_settings(config: StackConfig) -> tuple[str, int]:
    # parse_stack_config sets both for database postgres; anything else is a caller's mistake.
    if config.db_instance_class is None or config.db_backup_retention_days is None:
        raise ValueError(f"the database args need a config with database postgres, not {config.database}")
    return config.db_instance_class, config.db_backup_retention_days


def aws_database_args(config: StackConfig, host: AwsHost) -> AwsDatabaseArgs:
    instance_class, retention_days = _postgres_settings(config)
    return AwsDatabaseArgs(
        stack=config.stack,
        instance_class=instance_class,
        backup_retention_days=retention_days,
        retain_data=config.retain_data,
        vpc_id=host.vpc_id,
        host_security_group_id=host.security_group_id,
    )


def gcp_database_args(config: StackConfig, host: GcpHost) -> GcpDatabaseArgs:
    tier, retention_days = _postgres_settings(config)
    if config.gcp_region is None or config.gcp_zone is None:
        raise ValueError(f"gcp_database_args needs a config with cloud gcp, not {config.cloud}")
    return GcpDatabaseArgs(
        stack=config.stack,
        region=config.gcp_region,
        zone=config.gcp_zone,
        tier=tier,
        backup_retention_days=retention_days,
        retain_data=config.retain_data,
        network_id=host.network_id,
    )
