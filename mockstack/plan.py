"""`make plan`: what `pulumi up` would create for a stack config, without a cloud account.

Reads a stack config in the shape of `Pulumi.<stack>.yaml`, runs the program under the mocks,
prints the resource graph with the properties that matter and which outputs are secret (never
a value), then the policy pack's verdict when policy/rules.py exists.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

import pulumi
import yaml

from mockstack import REPO_ROOT, MockResource, StackRun, record_program

PROJECT = "prefect-host"
EXIT_OK, EXIT_VIOLATIONS, EXIT_CONFIG_ERROR = 0, 1, 2


class PlanInputError(Exception):
    """The stack config file cannot be used; the message is one line for the user."""


def load_stack_file(path: Path, *, project: str = PROJECT) -> dict[str, object]:
    """The `config:` mapping of a Pulumi.<stack>.yaml, with full keys (bare keys get the project's namespace)."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PlanInputError(f"{path}: cannot read the stack config ({exc.strerror}).") from None
    except yaml.YAMLError as exc:
        raise PlanInputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}).") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise PlanInputError(
            f"{path}: expected a Pulumi stack config with a `config:` mapping, "
            "e.g. config: {prefect-host:cloud: aws}."
        )
    values: dict[str, object] = {}
    for key, value in config.items():
        full_key = key if ":" in str(key) else f"{project}:{key}"
        if isinstance(value, dict) and "secure" in value:
            raise PlanInputError(
                f"{path}: {full_key} is encrypted (secure:), which the plan cannot decrypt; "
                "give it as a plain value in the file you plan with."
            )
        values[full_key] = value
    return values


def stack_name_for(path: Path) -> str:
    match = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", path.name)
    return match.group(1) if match else "dev"


def _rule(protocol: Any, from_port: Any, to_port: Any, source: Any) -> str:
    ports = str(int(from_port)) if from_port == to_port else f"{int(from_port)}-{int(to_port)}"
    return f"{protocol}/{ports} from {source}"


def _ingress_source(i: dict) -> Any:
    if i.get("referencedSecurityGroupId"):
        return f"security group {i['referencedSecurityGroupId']}"
    return i.get("cidrIpv4") or i.get("cidrIpv6")


def _rds_instance(i: dict, r: MockResource) -> str:
    protected = "deletion protection" if i.get("deletionProtection") else "no deletion protection"
    snapshot = "no final snapshot" if i.get("skipFinalSnapshot") else "final snapshot on delete"
    return (
        f"{i.get('engine')} {i.get('engineVersion')} {i.get('instanceClass')}, {i.get('storageType')} "
        f"{int(i.get('allocatedStorage', 0))} GB encrypted={i.get('storageEncrypted')}, "
        f"public={i.get('publiclyAccessible')}, backups {int(i.get('backupRetentionPeriod', 0))} days, "
        f"{protected}, {snapshot}, password secret={'password' in r.secret_inputs}"
    )


def _sql_instance(i: dict, r: MockResource) -> str:
    settings = i.get("settings", {})
    ip, backup = settings.get("ipConfiguration", {}), settings.get("backupConfiguration", {})
    kept = int(backup.get("backupRetentionSettings", {}).get("retainedBackups", 0))
    return (
        f"{i.get('databaseVersion')} {settings.get('tier')} ({settings.get('edition')}) in "
        f"{settings.get('locationPreference', {}).get('zone')}, public IP={ip.get('ipv4Enabled')}, private network, "
        f"sslMode {ip.get('sslMode')}, backups={backup.get('enabled')} ({kept} kept), "
        f"point-in-time recovery={backup.get('pointInTimeRecoveryEnabled')} "
        f"({int(backup.get('transactionLogRetentionDays', 0))} days), "
        f"deletion protection={settings.get('deletionProtectionEnabled')}"
    )


DETAILS: dict[str, Callable[[dict, MockResource], str]] = {
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": lambda i, r: _rule(
        i.get("ipProtocol"), i.get("fromPort"), i.get("toPort"), _ingress_source(i)
    ),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": lambda i, r: (
        f"outbound {'all' if i.get('ipProtocol') == '-1' else i.get('ipProtocol')} to "
        f"{i.get('cidrIpv4') or i.get('cidrIpv6')}"
    ),
    "aws:ec2/instance:Instance": lambda i, r: (
        f"{i.get('instanceType')}, ami {i.get('ami')}, root {i['rootBlockDevice'].get('volumeType')} "
        f"{int(i['rootBlockDevice'].get('volumeSize'))} GB encrypted={i['rootBlockDevice'].get('encrypted')}, "
        f"IMDS tokens {i['metadataOptions'].get('httpTokens')}, user data secret={'userData' in r.secret_inputs}"
    ),
    "aws:ec2/eip:Eip": lambda i, r: f"static public IP {r.outputs.get('publicIp')}",
    "aws:ec2/keyPair:KeyPair": lambda i, r: f"login key {str(i.get('publicKey', '')).split(' ')[0]}",
    "aws:s3/bucket:Bucket": lambda i, r: (
        f"bucket {i.get('bucket')}, forceDestroy={i.get('forceDestroy')}, "
        f"{'retained' if r.retain_on_delete else 'deleted'} on destroy"
    ),
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": lambda i, r: ", ".join(
        f"{k}={i.get(k)}" for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    ),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": lambda i, r: str(i["rule"].get("objectOwnership")),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": lambda i, r: ", ".join(
        rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] for rule in i.get("rules", [])
    ),
    "aws:s3/bucketVersioning:BucketVersioning": lambda i, r: f"versioning {i['versioningConfiguration'].get('status')}",
    "aws:s3/bucketPolicy:BucketPolicy": lambda i, r: "; ".join(
        f"{s['Effect']} {s['Action']} when {json.dumps(s.get('Condition'))}"
        for s in json.loads(i["policy"])["Statement"]
    ),
    "aws:iam/group:Group": lambda i, r: f"group {i.get('name')}",
    "aws:iam/groupPolicy:GroupPolicy": lambda i, r: (
        "allow "
        + "; ".join(f"{','.join(s['Action'])} on {s['Resource']}" for s in json.loads(i["policy"])["Statement"])
    ),
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment": lambda i, r: f"managed policy {i.get('policyArn')}",
    "aws:iam/user:User": lambda i, r: f"user {i.get('name')}",
    "aws:iam/userGroupMembership:UserGroupMembership": lambda i, r: (
        f"{i.get('user')} in {', '.join(i.get('groups', []))}"
    ),
    "aws:iam/accessKey:AccessKey": lambda i, r: f"access key for {i.get('user')} (secret is a secret output)",
    "gcp:compute/firewall:Firewall": lambda i, r: "; ".join(
        _rule(a.get("protocol"), p, p, ", ".join(i.get("sourceRanges", [])))
        for a in i.get("allows", [])
        for p in a.get("ports", [])
    ),
    "gcp:compute/instance:Instance": lambda i, r: (
        f"{i.get('machineType')} in {i.get('zone')}, image {i['bootDisk']['initializeParams'].get('image')}, "
        f"{i['bootDisk']['initializeParams'].get('type')} {int(i['bootDisk']['initializeParams'].get('size'))} GB, "
        f"shielded={all(i.get('shieldedInstanceConfig', {}).values())}, "
        f"block-project-ssh-keys={i['metadata'].get('block-project-ssh-keys')}, "
        f"serial-port-enable={i['metadata'].get('serial-port-enable')}"
    ),
    "gcp:compute/address:Address": lambda i, r: f"static {i.get('addressType')} IP {r.outputs.get('address')}",
    "gcp:compute/network:Network": lambda i, r: f"own VPC, autoCreateSubnetworks={i.get('autoCreateSubnetworks')}",
    "gcp:compute/subnetwork:Subnetwork": lambda i, r: f"{i.get('ipCidrRange')} in {i.get('region')}",
    "tls:index/privateKey:PrivateKey": lambda i, r: f"{i.get('algorithm')} key pair",
    "random:index/randomPassword:RandomPassword": lambda i, r: f"{int(i.get('length'))} characters",
    "random:index/randomId:RandomId": lambda i, r: f"{int(i.get('byteLength'))} random bytes",
    "aws:rds/instance:Instance": _rds_instance,
    "aws:rds/parameterGroup:ParameterGroup": lambda i, r: (
        f"{i.get('family')}: " + ", ".join(f"{p.get('name')}={p.get('value')}" for p in i.get("parameters", []))
    ),
    "aws:rds/subnetGroup:SubnetGroup": lambda i, r: f"{len(i.get('subnetIds', []))} subnets of the VM's VPC",
    "aws:ec2/securityGroup:SecurityGroup": lambda i, r: f"in {i['vpcId']}" if i.get("vpcId") else "default VPC",
    "gcp:sql/databaseInstance:DatabaseInstance": _sql_instance,
    "gcp:sql/database:Database": lambda i, r: f"database {i.get('name')}",
    "gcp:sql/user:User": lambda i, r: f"user {i.get('name')}, password secret={'password' in r.secret_inputs}",
    "gcp:compute/globalAddress:GlobalAddress": lambda i, r: (
        f"{i.get('addressType')} /{int(i.get('prefixLength', 0))} for {i.get('purpose')}"
    ),
    "gcp:servicenetworking/connection:Connection": lambda i, r: (
        f"{i.get('service')} peering, ranges {', '.join(i.get('reservedPeeringRanges', []))}"
    ),
    "gcp:projects/service:Service": lambda i, r: f"enable {i.get('service')}",
}


def _details(resource: MockResource) -> str:
    """The properties that matter for this resource type, in one line."""
    if not resource.custom:
        return "component"
    describe = DETAILS.get(resource.type)
    return describe(resource.inputs, resource) if describe else ""


def display_type(token: str) -> str:
    """Types as the Pulumi CLI shows them: aws:ec2/securityGroup:SecurityGroup -> aws:ec2:SecurityGroup."""
    package, module, name = token.split(":", 2)
    return f"{package}:{module.split('/', 1)[0]}:{name}"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    )


def format_plan(run: StackRun) -> str:
    by_urn = {r.urn: r for r in run.resources}

    def depth(resource: MockResource) -> int:
        return 0 if resource.parent is None else 1 + depth(by_urn[resource.parent])

    ordered: list[MockResource] = []

    def visit(parent_urn: str | None) -> None:
        # Sorted: the program registers resources concurrently, so their order varies between runs.
        for resource in sorted(run.resources, key=lambda r: (r.type, r.name)):
            if resource.parent == parent_urn:
                ordered.append(resource)
                visit(resource.urn)

    visit(None)
    rows = [("TYPE", "NAME", "PROPERTIES")]
    rows += [("  " * depth(r) + display_type(r.type), r.name, _details(r)) for r in ordered]
    outputs = [("OUTPUT", "SECRET")] + [
        (name, "secret" if name in run.secret_outputs else "-") for name in sorted(run.outputs)
    ]
    return (
        f"{len(run.resources)} resources\n\n{_table(rows)}\n\n"
        f"{len(run.outputs)} outputs (values not shown)\n\n{_table(outputs)}"
    )


def tls_summary(outputs: dict[str, Any]) -> str:
    """How clients will reach the server, from the outputs that say so (tlsMode, domain, acmeCa)."""
    mode = outputs.get("tlsMode")
    if mode == "acme":
        return (
            f"TLS: acme: Caddy on the host gets a certificate for {outputs.get('domain')} from "
            f"{outputs.get('acmeCa')} (point the domain's DNS at publicIp); URLs https://{outputs.get('domain')}"
        )
    if mode == "internal":
        return (
            "TLS: internal: Caddy's own CA on the host certifies publicIp; the bootstrap pins that CA in "
            "the Prefect profile; URLs https://<publicIp>"
        )
    return (
        "TLS: off (allowPlaintext): the API's auth string crosses the network in clear text; "
        "URLs http://<publicIp>:4200"
    )


def database_summary(outputs: dict[str, Any]) -> str:
    """Prefect's database and its API processes, from the outputs (database, apiWorkers, databaseUrl)."""
    workers = outputs.get("apiWorkers", "1")
    processes = f"{workers} API process{'es' if workers != '1' else ''}"
    if outputs.get("database") == "postgres":
        return (
            f"Database: postgres: managed PostgreSQL 17 on a private address, TLS required; {processes}; "
            "the secret output databaseUrl holds the connection URL"
        )
    return f"Database: sqlite on the VM; {processes}"


def policy_violations(
    resources: Iterable[MockResource], *, allow_public_ssh: bool = False, allow_database_deletion: bool = False
) -> list | None:
    """The policy pack's verdict, or None when the pack is not there (policy/rules.py). A stack that sets
    allowPublicSsh is judged with policy/allow-public-ssh.json, one with retainData false with
    policy/allow-database-deletion.json, as `pulumi preview --policy-pack-config` with that file would (the README
    says to pass it)."""
    if not (REPO_ROOT / "policy" / "rules.py").exists():
        return None
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    rules = importlib.import_module("policy.rules")
    pack_config: dict[str, Any] = {}
    for wanted, file in (
        (allow_public_ssh, "allow-public-ssh.json"),
        (allow_database_deletion, "allow-database-deletion.json"),
    ):
        if wanted:
            pack_config |= json.loads((REPO_ROOT / "policy" / file).read_text())
    return list(rules.evaluate(resources, pack_config or None))


def main(argv: list[str] | None = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(description="Show what `pulumi up` would create for a stack config.")
    parser.add_argument("config", type=Path, help="a stack config in the shape of Pulumi.<stack>.yaml")
    parser.add_argument("--stack", help="stack name (default: from Pulumi.<stack>.yaml, else dev)")
    args = parser.parse_args(argv)

    try:
        config = load_stack_file(args.config)
    except PlanInputError as exc:
        print(f"plan: {exc}", file=err)
        return EXIT_CONFIG_ERROR
    stack = args.stack or stack_name_for(args.config)
    run = record_program(config, stack=stack, project=PROJECT)
    if isinstance(run.error, pulumi.RunError):
        # What the language host does with a RunError: the message alone, no traceback.
        print(f"plan: {args.config}: {run.error}", file=err)
        return EXIT_CONFIG_ERROR
    if run.error is not None:
        raise run.error

    print(f"Plan for stack {stack} ({config.get(f'{PROJECT}:cloud', 'aws')}) from {args.config}\n", file=out)
    print(f"{tls_summary(run.outputs)}\n", file=out)
    print(f"{database_summary(run.outputs)}\n", file=out)
    print(format_plan(run), file=out)
    violations = policy_violations(
        run.resources,
        allow_public_ssh=config.get(f"{PROJECT}:allowPublicSsh") in (True, "true"),
        allow_database_deletion=config.get(f"{PROJECT}:retainData") in (False, "false"),
    )
    if violations is None:
        print("\npolicy pack: not found (policy/rules.py)", file=out)
        return EXIT_OK
    print(f"\npolicy pack: {len(violations)} violation{'s' if len(violations) != 1 else ''}", file=out)
    for violation in violations:
        print(f"  {violation.policy}: {violation.resource}: {violation.message}", file=out)
    return EXIT_VIOLATIONS if violations else EXIT_OK
