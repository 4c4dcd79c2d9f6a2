"""Each component takes its own frozen argument object holding only what it uses, built from StackConfig in
component_args alone; the components work without a StackConfig."""

import ast
import dataclasses
import inspect
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

import component_args
import mockstack
from aws_database import AwsDatabase, AwsDatabaseArgs
from aws_host import AwsHost, AwsHostArgs, DebianAmi
from bucket_access import BucketAccess, BucketAccessArgs
from bucket_storage import BucketStorage, BucketStorageArgs
from gcp_database import GcpDatabase, GcpDatabaseArgs
from gcp_host import GcpHost, GcpHostArgs
from host_keys import HostKeys, HostKeysArgs
from infra_test_configs import AWS, GCP
from server_credentials import ServerCredentials
from stack_config import parse_stack_config

COMPONENTS = [
    (AwsHost, AwsHostArgs),
    (GcpHost, GcpHostArgs),
    (BucketStorage, BucketStorageArgs),
    (BucketAccess, BucketAccessArgs),
    (HostKeys, HostKeysArgs),
    (AwsDatabase, AwsDatabaseArgs),
    (GcpDatabase, GcpDatabaseArgs),
]
IDS = [component.__name__ for component, _ in COMPONENTS]
INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
# Modules that may read StackConfig: where it is defined, where the args are built, and the program.
CONFIG_READERS = {"stack_config", "component_args", "__main__"}
KEYS = SimpleNamespace(
    operator_public_key="ssh-ed25519 AAAA operator",
    host_private_key="host private",
    host_public_key="ssh-ed25519 AAAA host",
)
AMI = DebianAmi(id="ami-0123", name="debian-13-amd64-20250814-2204", architecture="x86_64")


def stack_config(base: dict):
    values = {key: mockstack.config_text(value) for key, value in base.items()}
    return parse_stack_config(values, project="prefect-host", stack="dev")


def args_read_by(component: type) -> set[str]:
    """The `args.<field>` names the component's module reads (in __init__ or helpers it hands args to)."""
    tree = ast.parse(inspect.getsource(inspect.getmodule(component)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "args"
    }


@pytest.mark.parametrize("component, args_type", COMPONENTS, ids=IDS)
def test_the_constructor_is_name_args_opts_with_its_own_args_type(component, args_type):
    signature = inspect.signature(component.__init__, eval_str=True)
    assert list(signature.parameters) == ["self", "name", "args", "opts"]
    assert signature.parameters["args"].annotation is args_type
    assert args_type.__module__ == component.__module__ and args_type.__name__ == f"{component.__name__}Args"


def test_a_component_without_settings_takes_no_args():
    assert list(inspect.signature(ServerCredentials.__init__).parameters) == ["self", "name", "opts"]


@pytest.mark.parametrize("component, args_type", COMPONENTS, ids=IDS)
def test_args_are_frozen_and_hold_exactly_what_the_component_reads(component, args_type):
    assert dataclasses.is_dataclass(args_type) and args_type.__dataclass_params__.frozen
    assert {field.name for field in dataclasses.fields(args_type)} == args_read_by(component)


def test_args_cannot_be_changed_after_they_are_built():
    args = component_args.bucket_storage_args(stack_config(AWS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.retain_data = False


def imports_of(path) -> dict[str, set[str]]:
    """module -> the names imported from it (an empty set for a plain `import module`)."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom):
            found.setdefault(node.module or "", set()).update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted(INFRA_DIR.glob("*.py")), ids=lambda p: p.name)
def test_only_the_config_readers_import_stack_config(path):
    if path.stem not in CONFIG_READERS:
        # A provider lookup that rejects a config value raises the config's error; nothing else is shared.
        assert imports_of(path).get("stack_config", set()) <= {"StackConfigError"}


def test_aws_args_carry_the_validated_settings_and_the_keys():
    config = stack_config({**AWS, "prefect-host:diskSizeGb": "40", "prefect-host:allowedCidrs": ["198.51.100.0/24"]})
    args = component_args.aws_host_args(config, AMI, KEYS)
    assert args == AwsHostArgs(
        stack="dev",
        instance_type="t3.small",
        disk_size_gb=40,
        allowed_cidrs=("198.51.100.0/24",),
        ssh_allowed_cidrs=("203.0.113.0/24",),
        ami=AMI,
        operator_public_key=KEYS.operator_public_key,
        host_private_key=KEYS.host_private_key,
        host_public_key=KEYS.host_public_key,
    )


def test_gcp_args_carry_the_region_and_zone_of_gcp_zone():
    args = component_args.gcp_host_args(stack_config({**GCP, "prefect-host:image": "debian-12"}), KEYS)
    assert (args.region, args.zone, args.instance_type, args.image) == (
        "europe-west1",
        "europe-west1-b",
        "e2-small",
        "debian-12",
    )
    with pytest.raises(ValueError, match="cloud gcp"):
        component_args.gcp_host_args(stack_config(AWS), KEYS)


def test_bucket_and_key_args_carry_the_validated_settings():
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@example"
    config = stack_config(
        {
            **AWS,
            "prefect-host:bucketName": "my-bucket-1",
            "prefect-host:retainData": "false",
            "prefect-host:s3Access": "all",
            "prefect-host:iamGroupName": "G1",
            "prefect-host:sshPublicKey": key,
        }
    )
    assert component_args.bucket_storage_args(config) == BucketStorageArgs(
        stack="dev", bucket_name="my-bucket-1", bucket_name_prefix="prefect-host-dev", retain_data=False
    )
    storage = SimpleNamespace(bucket_arn="arn:aws:s3:::my-bucket-1")
    assert component_args.bucket_access_args(config, storage) == BucketAccessArgs(
        stack="dev",
        iam_group_name="G1",
        iam_user_name="prefect-host-dev",
        s3_access="all",
        bucket_arn="arn:aws:s3:::my-bucket-1",
    )
    assert component_args.host_keys_args(config) == HostKeysArgs(ssh_public_key=key)


def test_database_args_carry_the_settings_and_the_hosts_network():
    settings = {"prefect-host:database": "postgres", "prefect-host:dbBackupRetentionDays": "14"}
    aws_host = SimpleNamespace(vpc_id="vpc-1", security_group_id="sg-1")
    aws = stack_config({**AWS, **settings, "prefect-host:retainData": "false"})
    assert component_args.aws_database_args(aws, aws_host) == AwsDatabaseArgs(
        stack="dev",
        instance_class="db.t4g.micro",
        backup_retention_days=14,
        retain_data=False,
        vpc_id="vpc-1",
        host_security_group_id="sg-1",
    )
    gcp = stack_config({**GCP, **settings, "prefect-host:dbInstanceClass": "db-g1-small"})
    assert component_args.gcp_database_args(gcp, SimpleNamespace(network_id="net-1")) == GcpDatabaseArgs(
        stack="dev",
        region="europe-west1",
        zone="europe-west1-b",
        tier="db-g1-small",
        backup_retention_days=14,
        retain_data=True,
        network_id="net-1",
    )
    with pytest.raises(ValueError, match="database postgres"):
        component_args.aws_database_args(stack_config(AWS), aws_host)
    with pytest.raises(ValueError, match="cloud gcp"):
        component_args.gcp_database_args(aws, SimpleNamespace(network_id="net-1"))


def test_components_work_from_their_args_alone(tmp_path):
    """No StackConfig, no config at all: a program that builds the args objects itself."""
    (tmp_path / "__main__.py").write_text(
        textwrap.dedent("""
        import pulumi
        from bucket_access import BucketAccess, BucketAccessArgs
        from bucket_storage import BucketStorage, BucketStorageArgs
        from host_keys import HostKeys, HostKeysArgs

        keys = HostKeys("solo", HostKeysArgs(ssh_public_key=None))
        storage = BucketStorage("solo", BucketStorageArgs(stack="s", bucket_name="solo-bucket",
                                                          bucket_name_prefix="unused", retain_data=False))
        access = BucketAccess("solo", BucketAccessArgs(stack="s", iam_group_name="G", iam_user_name="solo-user",
                                                       s3_access="bucket", bucket_arn=storage.bucket_arn))
        pulumi.export("bucketName", storage.bucket_name)
        pulumi.export("userName", access.user_name)
    """)
    )
    run = mockstack.run_program({"aws:region": "eu-west-1"}, program_dir=tmp_path)
    assert run.outputs == {"bucketName": "solo-bucket", "userName": "solo-user"}
    bucket = run.one("aws:s3/bucket:Bucket")
    assert bucket.inputs["forceDestroy"] is True and not bucket.retain_on_delete
    policy = run.one("aws:iam/groupPolicy:GroupPolicy")
    assert "arn:aws:s3:::solo-bucket" in policy.inputs["policy"]
    assert {r.type for r in run.resources if not r.custom} == {
        "prefect-host:host_keys:HostKeys",
        "prefect-host:bucket_storage:BucketStorage",
        "prefect-host:bucket_access:BucketAccess",
    }
