"""Stack outputs for the bootstrap's tests: a complete, plausible set, with changes."""

from __future__ import annotations

AUTH = "admin:Precedence-Secret-42"


def outputs_mapping(**changes) -> dict:
    data = {
        "cloud": "gcp",
        "publicIp": "203.0.113.7",
        "sshUser": "admin",
        "hostPublicKey": "ssh-ed25519 AAAAfromoutputs",
        "apiUrl": "http://203.0.113.7:4200/api",
        "uiUrl": "http://203.0.113.7:4200",
        "prefectVersion": "3.9.1",
        "prefectAuthString": AUTH,
        "bucketName": "b",
        "bucketRegion": "europe-west1",
        "iamGroupName": "g",
        "iamUserName": "u",
        "awsAccessKeyId": "AKIA",
        "awsSecretAccessKey": "secret-from-outputs",
        "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nPRIVATEMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def sample_inputs(**changes):
    """Plausible validated inputs, for the tests of what runs after resolve_inputs."""
    import dataclasses

    from prefect_host.bootstrap.inputs import BootstrapInputs

    inputs = BootstrapInputs(
        host="203.0.113.7",
        user="admin",
        host_key="ssh-ed25519 AAAA",
        api_url="http://203.0.113.7:4200/api",
        ui_url="http://203.0.113.7:4200",
        prefect_version="3.9.1",
        auth_string="admin:pw",
        profile_name="p",
    )
    return dataclasses.replace(inputs, **changes)
