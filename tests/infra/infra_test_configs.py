"""Base stack configs for the infra tests (full keys, plain values as `pulumi config set --path` gives)."""

SSH_FROM = "203.0.113.0/24"
AWS = {"aws:region": "eu-west-1", "prefect-host:sshAllowedCidrs": [SSH_FROM]}
GCP = {
    "prefect-host:cloud": "gcp",
    "aws:region": "eu-west-1",
    "gcp:project": "my-project-123",
    "gcp:zone": "europe-west1-b",
    "prefect-host:sshAllowedCidrs": [SSH_FROM],
}
