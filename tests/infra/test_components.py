"""Structure: components with their tokens, children parented to them, secrets kept secret everywhere."""

import json

import pytest

from infra_test_configs import AWS, GCP

AWS_PG = {**AWS, "prefect-host:database": "postgres"}
GCP_PG = {**GCP, "prefect-host:database": "postgres"}
AWS_WORKERS = {**AWS_PG, "prefect-host:workerHosts": 2}
GCP_WORKERS = {**GCP_PG, "prefect-host:workerHosts": 2}
ALL_CONFIGS = [AWS, GCP, AWS_PG, GCP_PG, AWS_WORKERS, GCP_WORKERS]
ALL_IDS = ["aws", "gcp", "aws-postgres", "gcp-postgres", "aws-postgres-workers", "gcp-postgres-workers"]

COMMON = {
    "prefect-host:host_keys:HostKeys",
    "prefect-host:bucket_storage:BucketStorage",
    "prefect-host:bucket_access:BucketAccess",
    "prefect-host:server_credentials:ServerCredentials",
}


@pytest.mark.parametrize(
    "base, own",
    [
        (AWS, {"prefect-host:aws_host:AwsHost"}),
        (GCP, {"prefect-host:gcp_host:GcpHost"}),
        (AWS_PG, {"prefect-host:aws_host:AwsHost", "prefect-host:aws_database:AwsDatabase"}),
        (GCP_PG, {"prefect-host:gcp_host:GcpHost", "prefect-host:gcp_database:GcpDatabase"}),
        (
            AWS_WORKERS,
            {
                "prefect-host:aws_host:AwsHost",
                "prefect-host:aws_database:AwsDatabase",
                "prefect-host:aws_worker_hosts:AwsWorkerHosts",
            },
        ),
        (
            GCP_WORKERS,
            {
                "prefect-host:gcp_host:GcpHost",
                "prefect-host:gcp_database:GcpDatabase",
                "prefect-host:gcp_worker_hosts:GcpWorkerHosts",
            },
        ),
    ],
    ids=ALL_IDS,
)
def test_every_resource_belongs_to_a_component_of_this_project(program, base, own):
    run = program(base)
    components = [r for r in run.resources if not r.custom]
    assert {c.type for c in components} == COMMON | own
    by_urn = {r.urn: r for r in run.resources}
    for component in components:
        module = component.type.split(":")[1]
        assert component.type.startswith(f"prefect-host:{module}:") and component.parent is None
        assert component.name == "prefect-host-dev"
        children = run.children_of(component)
        assert children and all(child.custom for child in children)
        assert all(child.name.startswith(f"{component.name}-") for child in children)
        assert component.outputs, f"{component.type} registers no outputs"
    for resource in run.resources:
        if resource.custom:
            assert resource.parent in by_urn and not by_urn[resource.parent].custom, resource.name


def test_component_outputs_are_the_real_values(program):
    run = program(AWS)
    host = run.one("prefect-host:aws_host:AwsHost")
    assert host.outputs["publicIp"] == run.one("aws:ec2/eip:Eip").outputs["publicIp"]
    assert host.outputs["securityGroupId"] == run.one("aws:ec2/securityGroup:SecurityGroup").id
    storage = run.one("prefect-host:bucket_storage:BucketStorage")
    assert storage.outputs["bucketName"] == run.outputs["bucketName"]
    keys = run.one("prefect-host:host_keys:HostKeys")
    assert keys.outputs["hostPublicKey"] == run.outputs["hostPublicKey"]
    assert {"hostPrivateKey", "operatorPrivateKey"} <= keys.secret_outputs
    credentials = run.one("prefect-host:server_credentials:ServerCredentials")
    assert credentials.outputs["authString"] == run.outputs["prefectAuthString"]
    assert credentials.secret_outputs == {"authString"}


@pytest.mark.parametrize("base", ALL_CONFIGS, ids=ALL_IDS)
def test_secret_values_appear_only_where_marked_secret(program, base):
    run = program(base)
    # The server's host key, and each worker VM's.
    host_keys = [r.outputs["privateKeyOpenssh"] for r in run.of_type("tls:index/privateKey:PrivateKey")]
    assert run.one("prefect-host:host_keys:HostKeys").outputs["hostPrivateKey"] in host_keys
    assert len(host_keys) == 2 + base.get("prefect-host:workerHosts", 0)
    # The auth string's password, and with postgres the database's.
    passwords = [r.outputs["result"] for r in run.of_type("random:index/randomPassword:RandomPassword")]
    assert len(passwords) == (2 if "prefect-host:database" in base else 1)
    # Whole one-line secrets, and each base64 line of the private keys (JSON escapes their newlines).
    fragments = [*passwords, run.outputs["awsSecretAccessKey"]] + [
        line for key in host_keys for line in key.splitlines() if "PRIVATE KEY" not in line
    ]
    assert len(fragments) >= 8 and all(len(f) >= 30 for f in fragments)

    def leaks(value) -> bool:
        text = json.dumps(value)
        return any(fragment in text for fragment in fragments)

    for resource in run.resources:
        for key, value in resource.inputs.items():
            assert key in resource.secret_inputs or not leaks(value), f"{resource.name}.{key}"
        for key, value in resource.outputs.items():
            assert key in resource.secret_outputs or not leaks(value), f"{resource.name} output {key}"
    for name, value in run.outputs.items():
        assert name in run.secret_outputs or not leaks(value), name


@pytest.mark.parametrize("base", ALL_CONFIGS, ids=ALL_IDS)
def test_every_nested_property_name_is_one_the_sdk_knows(program, base):
    """The SDK turns the snake_case keys it knows into the provider's camelCase names and passes
    unknown ones through unchanged: a snake_case key in the graph is a misspelt property."""
    run = program(base)

    def keys(value, path):
        if isinstance(value, dict):
            for key, item in value.items():
                yield f"{path}.{key}", key
                if key not in ("tags", "metadata"):  # user-defined keys
                    yield from keys(item, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                yield from keys(item, path)

    misspelt = [path for r in run.resources for path, key in keys(r.inputs, r.name) if "_" in key]
    assert misspelt == []
