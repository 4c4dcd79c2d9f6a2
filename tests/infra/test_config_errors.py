"""Through the whole program: every config key's bad value stops it before any resource exists."""

import pytest

import mockstack
from infra_test_configs import AWS, GCP
from stack_config import StackConfigError

AWS_WITH_DOMAIN = {**AWS, "prefect-host:domain": "prefect.example.com"}
AWS_PG = {**AWS, "prefect-host:database": "postgres"}
GCP_PG = {**GCP, "prefect-host:database": "postgres"}
AWS_WORKERS = {**AWS, "prefect-host:workerHosts": 2}
GCP_WORKERS = {**GCP, "prefect-host:workerHosts": 2}

# (base config, key, bad value or None to unset it, text the message must contain)
CASES = [
    (AWS, "prefect-host:cloud", "azure", '"azure" is invalid; allowed: aws or gcp'),
    (AWS, "prefect-host:instanceType", "t3", "EC2 instance type"),
    (GCP, "prefect-host:instanceType", "e2.small", "Compute Engine machine type"),
    (AWS, "prefect-host:image", "debian-11", "debian-13 or debian-12"),
    (AWS, "prefect-host:diskSizeGb", 5, "from 10 to 2000"),
    (GCP, "prefect-host:diskSizeGb", "big", "from 10 to 2000"),
    (AWS, "prefect-host:allowedCidrs", ["10.0.0.0/33"], "10.0.0.0/33"),
    (GCP, "prefect-host:allowedCidrs", ["2001:db8::1/32"], "2001:db8::1/32"),
    (AWS, "prefect-host:sshAllowedCidrs", None, "is not set"),
    (AWS, "prefect-host:sshAllowedCidrs", ["0.0.0.0/0"], "whole internet"),
    (GCP, "prefect-host:sshAllowedCidrs", ["::/0"], "whole internet"),
    (AWS, "prefect-host:allowPublicSsh", "maybe", "true or false"),
    (AWS, "prefect-host:prefectVersion", "3.6.22", "at or above 3.8.3"),
    (AWS, "prefect-host:bucketName", "Prefect_Bucket", "3 to 63 characters"),
    (AWS, "prefect-host:iamGroupName", "S3 Full Access", "IAM name"),
    (AWS, "prefect-host:s3Access", "admin", "bucket or all"),
    (AWS, "prefect-host:sshPublicKey", "ssh-ed25519", "OpenSSH public key"),
    (AWS, "prefect-host:retainData", "no", "true or false"),
    (AWS, "aws:region", None, "AWS region"),
    (GCP, "aws:region", "eu_west_1", "AWS region"),
    (GCP, "gcp:project", None, "project ID"),
    (GCP, "gcp:zone", "europe-west1", "zone"),
    (GCP, "gcp:region", "us-east1", "region of gcp:zone"),
    (AWS, "prefect-host:instancetype", "t3.small", "not a setting of this project"),
    (AWS, "prefect-host:domain", "203.0.113.7", "not an IP address"),
    (GCP, "prefect-host:domain", "*.example.com", "no wildcard"),
    (AWS, "prefect-host:tls", "letsencrypt", "auto or acme or internal or off"),
    (GCP, "prefect-host:tls", "acme", "only together with prefect-host:domain"),
    (AWS, "prefect-host:tls", "off", "allowPlaintext true"),
    (AWS_WITH_DOMAIN, "prefect-host:tls", "internal", "with a domain use acme"),
    (AWS, "prefect-host:allowPlaintext", "yes", "true or false"),
    (AWS_WITH_DOMAIN, "prefect-host:acmeEmail", "ops", "e-mail address"),
    (AWS_WITH_DOMAIN, "prefect-host:acmeCa", "http://acme.example/dir", "https:// URL"),
    (AWS, "prefect-host:acmeCa", "https://acme.example/dir", "only applies when certificates come from ACME"),
    (AWS_WITH_DOMAIN, "prefect-host:allowedCidrs", ["198.51.100.0/24"], "closed to Let's Encrypt"),
    (AWS, "prefect-host:backupRetention", "7", "hours or days such as 36h or 7d"),
    (GCP, "prefect-host:backupRetention", "1w", "hours or days"),
    (AWS, "prefect-host:backupRetention", "3651d", "from 1h to 3650d"),
    (AWS, "prefect-host:backupSnapshotInterval", "0d", "hours or days"),
    (GCP, "prefect-host:backupSnapshotInterval", "31d", "from 1h to 30d"),
    (AWS, "prefect-host:backupSnapshotInterval", "8d", "at most prefect-host:backupRetention"),
    (AWS, "prefect-host:backupRetention", "12h", "at least prefect-host:backupSnapshotInterval"),
    # Valid in shape, refused by the provider's instance type lookup: a Mac has no Debian AMI.
    (AWS, "prefect-host:instanceType", "mac2.metal", "x86_64 or arm64"),
    (AWS, "prefect-host:database", "mysql", '"mysql" is invalid; allowed: sqlite or postgres'),
    (GCP, "prefect-host:database", "", "sqlite or postgres"),
    (AWS, "prefect-host:apiWorkers", 2, "1 with prefect-host:database sqlite"),
    (GCP, "prefect-host:dbInstanceClass", "db-g1-small", "only applies with prefect-host:database postgres"),
    (AWS_PG, "prefect-host:dbInstanceClass", "", "RDS DB instance class such as db.t4g.micro"),
    (AWS_PG, "prefect-host:dbInstanceClass", "db.t4g micro", "RDS DB instance class"),
    (GCP_PG, "prefect-host:dbInstanceClass", "db custom", "Cloud SQL tier"),
    (AWS_PG, "prefect-host:dbBackupRetentionDays", 0, "from 1 to 35"),
    (GCP_PG, "prefect-host:dbBackupRetentionDays", 40, "from 1 to 35"),
    (AWS_PG, "prefect-host:apiWorkers", 0, "whole number of API processes from 1 to 2 per vCPU"),
    (GCP_PG, "prefect-host:apiWorkers", "many", "whole number of API processes"),
    (AWS_PG, "prefect-host:apiWorkers", 1.5, "whole number of API processes"),
    # Valid in shape, more than the provider's lookup of instanceType allows: t3.small and e2-small have 2 vCPUs.
    (AWS_PG, "prefect-host:apiWorkers", 5, "1 to 4: at most 2 API processes per vCPU"),
    (GCP_PG, "prefect-host:apiWorkers", 5, "instanceType e2-small has 2 vCPUs"),
    # A machine type the zone does not offer (the lookup runs with postgres, to bound apiWorkers).
    (GCP_PG, "prefect-host:instanceType", "e2-tiny", "a machine type that zone europe-west1-b offers"),
    (AWS, "prefect-host:workerHosts", 21, "a whole number of worker VMs from 0 to 20"),
    (GCP, "prefect-host:workerHosts", "some", "a whole number of worker VMs from 0 to 20"),
    (AWS, "prefect-host:workerInstanceType", "t3.large", "only applies with prefect-host:workerHosts 1 or more"),
    (GCP, "prefect-host:workerDiskSizeGb", 50, "only applies with prefect-host:workerHosts 1 or more"),
    (AWS_WORKERS, "prefect-host:workerInstanceType", "t3", "EC2 instance type"),
    (GCP_WORKERS, "prefect-host:workerInstanceType", "e2.small", "Compute Engine machine type"),
    (AWS_WORKERS, "prefect-host:workerDiskSizeGb", 5, "from 10 to 2000"),
    (GCP_WORKERS, "prefect-host:workerDiskSizeGb", 2001, "from 10 to 2000"),
    # Valid in shape, refused by the provider's lookup of the worker type, as instanceType is: no Debian AMI for a Mac.
    (AWS_WORKERS, "prefect-host:workerInstanceType", "mac2.metal", "x86_64 or arm64"),
]


@pytest.mark.parametrize("base, key, value, message", CASES, ids=[f"{c[1]}={c[2]}" for c in CASES])
def test_bad_config_names_the_error_and_registers_nothing(base, key, value, message):
    config = {k: v for k, v in base.items() if k != key}
    if value is not None:
        config[key] = value
    run = mockstack.record_program(config)
    assert isinstance(run.error, StackConfigError), run.error
    assert key in str(run.error) and message in str(run.error)
    assert run.resources == []
    assert run.outputs == {}


def test_the_error_reaches_the_caller_of_run_program():
    with pytest.raises(StackConfigError, match="prefect-host:image"):
        mockstack.run_program({**AWS, "prefect-host:image": "windows"})
