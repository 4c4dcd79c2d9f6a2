"""infra's exports against the bootstrap's contract (prefect_host.outputs): names and secretness."""

import pytest
from infra_test_configs import AWS, GCP

from prefect_host.outputs import INFRA_OUTPUTS, SECRET_OUTPUTS, StackOutputs

GIVEN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoZlLxqExRb/G4E/Mld64B7T1GCdfwZRHFppOzUYs26 me@laptop"


@pytest.mark.parametrize("base, cloud", [(AWS, "aws"), (GCP, "gcp")])
def test_exports_are_the_contract_with_secrets_secret(program, base, cloud):
    run = program(base)
    assert set(run.outputs) == INFRA_OUTPUTS
    assert run.secret_outputs == SECRET_OUTPUTS & INFRA_OUTPUTS
    outputs = StackOutputs.from_mapping(run.outputs, source="the mocked stack")
    assert outputs.cloud == cloud and outputs.ssh_user == "admin" and outputs.prefect_version == "3.9.1"
    assert outputs.auth_user == "admin" and len(outputs.prefect_auth_string) == len("admin:") + 32


@pytest.mark.parametrize("base", [AWS, GCP], ids=["aws", "gcp"])
def test_with_a_given_key_only_the_private_key_is_missing(program, base):
    run = program({**base, "prefect-host:sshPublicKey": GIVEN_KEY})
    assert set(run.outputs) == INFRA_OUTPUTS - {"sshPrivateKey"}
    assert run.secret_outputs == SECRET_OUTPUTS - {"sshPrivateKey"}
    assert StackOutputs.from_mapping(run.outputs).ssh_private_key is None


def test_prefect_version_is_passed_through(program):
    assert program({**AWS, "prefect-host:prefectVersion": "3.8.3"}).outputs["prefectVersion"] == "3.8.3"
