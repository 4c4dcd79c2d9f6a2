"""`make plan`: the stack file reader, the printed graph, the policy verdict and the exit codes."""

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import mockstack
from mockstack import plan

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "aws": REPO / "examples" / "stack-aws.yaml",
    "gcp": REPO / "examples" / "stack-gcp.yaml",
    "aws-postgres": REPO / "examples" / "stack-aws-postgres.yaml",
    "gcp-postgres": REPO / "examples" / "stack-gcp-postgres.yaml",
    "aws-workers": REPO / "examples" / "stack-aws-workers.yaml",
    "gcp-workers": REPO / "examples" / "stack-gcp-workers.yaml",
}


def run_main(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = plan.main([str(a) for a in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_stack_file_keys_are_full_and_structured_values_kept(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(
        "config:\n  aws:region: eu-west-1\n  cloud: gcp\n  prefect-host:allowedCidrs:\n    - 198.51.100.0/24\n"
        "  prefect-host:diskSizeGb: 30\n"
    )
    assert plan.load_stack_file(path) == {
        "aws:region": "eu-west-1",
        "prefect-host:cloud": "gcp",
        "prefect-host:allowedCidrs": ["198.51.100.0/24"],
        "prefect-host:diskSizeGb": 30,
    }
    assert plan.stack_name_for(path) == "prod" and plan.stack_name_for(EXAMPLES["aws"]) == "dev"


@pytest.mark.parametrize(
    "text, message",
    [
        ("config:\n  prefect-host:sshPublicKey:\n    secure: AAABAKx\n", "encrypted"),
        ("- just\n- a list\n", "`config:` mapping"),
        ("config: [\n", "not valid YAML"),
    ],
)
def test_unusable_stack_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(text)
    code, out, err = run_main(path)
    assert code == plan.EXIT_CONFIG_ERROR and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_examples_plan_shows_the_graph_the_secret_outputs_and_a_clean_verdict(example):
    cloud = example.split("-")[0]
    code, out, err = run_main(EXAMPLES[example])
    assert err == ""
    assert "tcp/22 from 203.0.113.0/24" in out and "tcp/4200 from 0.0.0.0/0" in out and "udp/4200 from 0.0.0.0/0" in out
    assert "blockPublicAcls=True, blockPublicPolicy=True, ignorePublicAcls=True, restrictPublicBuckets=True" in out
    assert "AES256" in out and "versioning Enabled" in out and '"aws:SecureTransport": "false"' in out
    assert "retained on destroy" in out
    assert "TLS: internal: Caddy's own CA on the host certifies publicIp" in out
    if cloud == "aws":
        assert "IMDS tokens required" in out and "gp3 20 GB encrypted=True" in out
    else:
        assert "shielded=True, block-project-ssh-keys=true, serial-port-enable=false" in out
    secrets = ["prefectAuthString", "awsSecretAccessKey", "sshPrivateKey"]
    for name in secrets + (["databaseUrl"] if example.endswith("postgres") else []):
        assert any(line.split() == [name, "secret"] for line in out.splitlines())
    # Never a secret value: the same (deterministic) run's secrets are nowhere in the text.
    run = mockstack.run_program(plan.load_stack_file(EXAMPLES[example]), stack="dev")
    for name in run.secret_outputs:
        assert run.outputs[name].splitlines()[1 if "\n" in run.outputs[name] else 0] not in out
    if (REPO / "policy" / "rules.py").exists():
        assert "policy pack: 0 violations" in out and code == plan.EXIT_OK


def test_postgres_examples_show_the_database_and_its_locks():
    _, aws, _ = run_main(EXAMPLES["aws-postgres"])
    assert (
        "Database: postgres: managed PostgreSQL 17 on a private address, TLS required; 4 API processes; "
        "the secret output databaseUrl holds the connection URL" in aws.splitlines()
    )
    assert (
        "postgres 17 db.t4g.small, gp3 20 GB encrypted=True, public=False, backups 14 days, deletion protection, "
        "final snapshot on delete, password secret=True" in aws
    )
    assert "postgres17: rds.force_ssl=1" in aws and "tcp/5432 from security group sg-" in aws
    _, gcp, _ = run_main(EXAMPLES["gcp-postgres"])
    assert (
        "POSTGRES_17 db-custom-1-3840 (ENTERPRISE) in europe-west1-b, public IP=False, private network, sslMode "
        "ENCRYPTED_ONLY, backups=True (8 kept), point-in-time recovery=True (7 days), deletion protection=True" in gcp
    )
    assert "INTERNAL /16 for VPC_PEERING" in gcp and "servicenetworking.googleapis.com peering" in gcp
    assert "2 API processes" in gcp
    _, sqlite, _ = run_main(EXAMPLES["aws"])
    assert "Database: sqlite on the VM; 1 API process" in sqlite.splitlines()


def test_a_disposable_database_is_judged_with_the_packs_deletion_config(tmp_path):
    """retainData false: the deletion-protection policies stand down (policy/allow-database-deletion.json)."""
    document = yaml.safe_load(EXAMPLES["aws-postgres"].read_text())
    document["config"]["prefect-host:retainData"] = False
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(document))
    code, out, err = run_main(path)
    assert err == "" and code == plan.EXIT_OK and "policy pack: 0 violations" in out
    assert "no deletion protection, no final snapshot" in out
    without = plan.policy_violations(plan.record_program(plan.load_stack_file(path), stack="dev").resources)
    assert {v.policy for v in without} == {"CKV_AWS_293"}


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_worker_examples_show_the_worker_vms_and_the_servers_ports_for_them(cloud):
    code, out, err = run_main(EXAMPLES[f"{cloud}-workers"])
    assert err == "" and code == plan.EXIT_OK and "policy pack: 0 violations" in out
    run = mockstack.run_program(plan.load_stack_file(EXAMPLES[f"{cloud}-workers"]), stack="dev")
    hosts = run.outputs["workerHosts"]
    assert [h["name"] for h in hosts] == ["prefect-host-dev-worker-1", "prefect-host-dev-worker-2"]
    lines = out.splitlines()
    assert any(line.split()[:2] == ["workerHosts", "-"] for line in lines)
    for host in hosts:
        vm = next(line for line in lines if f" {host['name']}-vm " in line)
        ip = next(line for line in lines if f" {host['name']}-ip " in line)
        assert host["publicIp"] in ip
        if cloud == "aws":
            assert "root gp3 20 GB encrypted=True, IMDS tokens required, user data secret=True" in vm
            assert f"tcp/443 from {host['publicIp']}/32" in out and f"tcp/4200 from {host['publicIp']}/32" in out
        else:
            assert "shielded=True, block-project-ssh-keys=true, serial-port-enable=false" in vm
            assert f"tcp/443 from {host['publicIp']}/32; tcp/4200 from {host['publicIp']}/32" in out
    component = "AwsWorkerHosts" if cloud == "aws" else "GcpWorkerHosts"
    assert any(line.startswith(f"prefect-host:{cloud}_worker_hosts:{component} ") for line in lines)


@pytest.mark.parametrize(
    "extra, line",
    [
        (
            "  prefect-host:domain: prefect.example.com\n",
            "TLS: acme: Caddy on the host gets a certificate for prefect.example.com from "
            "https://acme-v02.api.letsencrypt.org/directory (point the domain's DNS at publicIp); "
            "URLs https://prefect.example.com",
        ),
        (
            '  prefect-host:tls: "off"\n  prefect-host:allowPlaintext: true\n',
            "TLS: off (allowPlaintext): the API's auth string crosses the network in clear text; "
            "URLs http://<publicIp>:4200",
        ),
    ],
)
def test_plan_says_how_clients_reach_the_server(tmp_path, extra, line):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(EXAMPLES["aws"].read_text() + extra)
    code, out, err = run_main(path)
    assert err == "" and code == plan.EXIT_OK
    assert line in out.splitlines()


def test_config_error_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text("config:\n  aws:region: eu-west-1\n  prefect-host:sshAllowedCidrs: [0.0.0.0/0]\n")
    code, out, err = run_main(path)
    assert code == plan.EXIT_CONFIG_ERROR and out == ""
    assert err.count("\n") == 1 and "prefect-host:sshAllowedCidrs" in err and "allowPublicSsh" in err


def test_a_stack_that_allows_public_ssh_is_judged_with_the_packs_config(tmp_path):
    """allowPublicSsh: the SSH policies stand down (policy/allow-public-ssh.json); the others still judge."""
    document = yaml.safe_load(EXAMPLES["aws"].read_text())
    document["config"].update({"prefect-host:sshAllowedCidrs": ["0.0.0.0/0"], "prefect-host:allowPublicSsh": True})
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(document))
    code, out, err = run_main(path)
    assert err == "" and code == plan.EXIT_OK and "policy pack: 0 violations" in out
    without = plan.policy_violations(plan.record_program(plan.load_stack_file(path), stack="dev").resources)
    assert {v.policy for v in without} == {"CKV_AWS_24"}


@dataclass
class FakeViolation:
    policy: str
    resource: str
    message: str


def test_violations_are_listed_and_fail_the_plan(monkeypatch):
    seen = []

    def evaluate(resources, **_):
        seen.extend(resources)
        return [FakeViolation("CKV_AWS_79", "prefect-host-dev-vm", "IMDSv2 is not required")]

    monkeypatch.setattr(plan, "policy_violations", evaluate)
    code, out, _ = run_main(EXAMPLES["aws"])
    assert code == plan.EXIT_VIOLATIONS
    assert "policy pack: 1 violation\n  CKV_AWS_79: prefect-host-dev-vm: IMDSv2 is not required" in out
    assert {r.type for r in seen} >= {"aws:ec2/instance:Instance", "aws:s3/bucket:Bucket"}


def test_the_script_is_the_thin_entry_point(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("config:\n  prefect-host:image: debian-11\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "plan.py"), str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().startswith(f"plan: {path}: Config prefect-host:image") and "Traceback" not in proc.stderr
