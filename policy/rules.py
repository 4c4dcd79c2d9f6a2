"""The prefect-host security rules, importable without starting anything.

`policy/__main__.py` hands `ALL` to `pulumi_policy.PolicyPack` (whose constructor starts the analyzer's
gRPC server and never returns), so the rules live here where tests, `make plan` and the pack share them.
`evaluate()` runs the very same `Policy.validate` callbacks over plain resource records, with arguments
built the way pulumi_policy's analyzer builds them.

Resource policies see a resource's *inputs* (wire names, camelCase), as `pulumi preview`/`up` sends them
before creating it. Stack policies see every resource's *outputs* after the deployment (in a preview: the
planned outputs, with unknowns), plus which resources each input property depends on; they are used where a
rule needs a related resource (a bucket and its public access block, encryption or policy) or several resources
together (SSH opened on one security group or network by many rules).

Names follow the checkov check a rule mirrors (checkov's terraform checks, same semantics unless a comment
says otherwise); rules without a checkov counterpart are named `prefect-host-...`.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import _NotApplicableError  # what `args.not_applicable()` raises; evaluate() catches it
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

# Resource type tokens and (below) property names as in the pinned pulumi-aws 7.51.1 and pulumi-gcp 10.2.0 SDKs.
AWS_SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
AWS_DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
AWS_SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
AWS_VPC_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
AWS_INSTANCE = "aws:ec2/instance:Instance"
AWS_BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
AWS_PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
AWS_BUCKET_ENCRYPTION = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
AWS_BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
AWS_USER_POLICY = "aws:iam/userPolicy:UserPolicy"
AWS_USER_POLICY_ATTACHMENT = "aws:iam/userPolicyAttachment:UserPolicyAttachment"
AWS_POLICY_ATTACHMENT = "aws:iam/policyAttachment:PolicyAttachment"
GCP_FIREWALL = "gcp:compute/firewall:Firewall"
GCP_NETWORK = "gcp:compute/network:Network"
GCP_INSTANCE = "gcp:compute/instance:Instance"
AWS_RDS_INSTANCE = "aws:rds/instance:Instance"
AWS_RDS_PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
GCP_SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"

# What may be reachable from anywhere: the Prefect UI/API (4200, also UDP as the issue asks) and 80/443.
PUBLIC_PORTS = {"tcp": frozenset({80, 443, 4200}), "udp": frozenset({4200})}
SSH_PORT = 22
# The most SSH may be open to, summed over a resource's source ranges (overlaps merged): a /8 of IPv4, a /32 of
# IPv6. ["0.0.0.0/1", "128.0.0.0/1"] is the world as surely as 0.0.0.0/0 (infra/ refuses both in sshAllowedCidrs
# unless allowPublicSsh is set).
SSH_MAX_ADDRESSES = {4: 2**24, 6: 2**96}
# The SSH policies' one config property (see _unless_public_ssh_allowed), set with
# `pulumi preview --policy-pack policy --policy-pack-config policy/allow-public-ssh.json`.
ALLOW_PUBLIC_SSH = "allowPublicSsh"
SSH_CONFIG_SCHEMA = PolicyConfigSchema(
    properties={
        ALLOW_PUBLIC_SSH: {
            "type": "boolean",
            "default": False,
            "description": "The stack sets prefect-host:allowPublicSsh: SSH from anywhere is intended.",
        }
    }
)
ENCRYPTION_ALGORITHMS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})
# The deletion-protection policies' one config property (see _unless_allowed), set with
# `--policy-pack-config policy/allow-database-deletion.json` for a stack with prefect-host:retainData false.
ALLOW_DATABASE_DELETION = "allowDatabaseDeletion"
DATABASE_DELETION_CONFIG_SCHEMA = PolicyConfigSchema(
    properties={
        ALLOW_DATABASE_DELETION: {
            "type": "boolean",
            "default": False,
            "description": "The stack sets prefect-host:retainData false: a database that may be deleted is intended.",
        }
    }
)
# RDS keeps automated backups for 1 to 35 days.
RDS_BACKUP_RETENTION_DAYS = (1, 35)
# Cloud SQL's sslMode values that refuse unencrypted connections.
CLOUD_SQL_TLS_MODES = frozenset({"ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"})


@dataclass(frozen=True)
class Violation:
    policy: str
    resource: str
    message: str


# ---------------------------------------------------------------------------------------------------------
# Reading properties. Values arrive wrapped in pulumi_policy's unknown-checking proxies, which are
# Mapping/Sequence but not dict/list, and raise UnknownValueError when an unknown (preview) value is read;
# letting that propagate makes the engine report "can't run policy during preview" instead of guessing.


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return []


def _as_list(value: Any) -> list:
    """IAM policy fields hold either one value or a list of them."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _known(props: Mapping, key: str) -> Any:
    try:
        return props.get(key)
    except UnknownValueError:
        return None


def _port(value: Any) -> int:
    # Numbers cross gRPC as doubles (22.0); GCP ports are strings.
    return int(float(value))


def _is_world(cidr: Any) -> bool:
    """0.0.0.0/0, ::/0 and any spelling of a zero-length prefix (e.g. "10.0.0.0/0") mean everyone."""
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------------------
# Ingress from the whole internet, in every form a resource can declare it.


@dataclass(frozen=True)
class _Opening:
    protocol: str  # "tcp", "udp", "all", or another protocol as the provider names it
    first_port: int
    last_port: int
    source: str

    def covers(self, protocol: str, port: int) -> bool:
        return self.protocol in (protocol, "all") and self.first_port <= port <= self.last_port

    def describe(self) -> str:
        if self.protocol == "all":
            return f"all protocols and ports from {self.source}"
        if self.protocol not in PUBLIC_PORTS:
            return f"protocol {self.protocol} from {self.source}"
        ports = str(self.first_port) if self.first_port == self.last_port else f"{self.first_port}-{self.last_port}"
        return f"{self.protocol} port {ports} from {self.source}"


_PROTOCOL_NAMES = {"-1": "all", "all": "all", "6": "tcp", "tcp": "tcp", "17": "udp", "udp": "udp"}


def _protocol(value: Any) -> str:
    name = str(value).strip().lower()
    return _PROTOCOL_NAMES.get(name, name)


def _aws_ports(protocol: str, from_port: Any, to_port: Any) -> tuple[int, int]:
    # "-1"/"all" ignores the ports; a missing or negative port is read as "every port".
    if protocol != "all" and from_port is not None and to_port is not None:
        first, last = _port(from_port), _port(to_port)
        if first >= 0 and last >= 0:
            return first, last
    return 0, 65535


def _coverage(cidrs: Iterable[str]) -> dict[int, tuple[int, list[str]]]:
    """IP version -> how many addresses the CIDRs cover together (overlaps merged), and those CIDRs;
    unparsable ones are left out."""
    networks: dict[int, dict[str, Any]] = {4: {}, 6: {}}
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            continue
        networks[network.version][cidr] = network
    return {
        version: (sum(n.num_addresses for n in ipaddress.collapse_addresses(found.values())), sorted(found))
        for version, found in networks.items()
    }


# Which openings a rule cares about, judged on protocol and ports alone: a resource's source ranges are read only
# for those. A range computed from another resource (a worker VM's address as a /32 on the server's API ports) is
# unknown in a preview, and reading it would make every rule that looks at the resource undecidable there.
_Relevant = Callable[[_Opening], bool]


def _aws_openings(
    protocol_value: Any, from_port: Any, to_port: Any, cidrs: Callable[[], Iterable[Any]], relevant: _Relevant
) -> list[_Opening]:
    protocol = _protocol(protocol_value)
    first, last = _aws_ports(protocol, from_port, to_port)
    if not relevant(_Opening(protocol, first, last, "")):
        return []
    return [_Opening(protocol, first, last, cidr) for cidr in cidrs() if isinstance(cidr, str)]


def _gcp_openings(props: Mapping, relevant: _Relevant) -> list[_Opening]:
    if str(props.get("direction") or "INGRESS").upper() != "INGRESS" or props.get("disabled") is True:
        return []
    ports = []
    for allow in _items(props.get("allows")):
        allow = _mapping(allow)
        protocol = _protocol(allow.get("protocol"))
        specs = _items(allow.get("ports")) if protocol in PUBLIC_PORTS else []
        ranges = []
        for spec in specs:  # "22" or "20-30"
            first, _, last = str(spec).partition("-")
            ranges.append((_port(first), _port(last or first)))
        # No ports listed: every port.
        ports += [(protocol, first, last) for first, last in ranges or [(0, 65535)]]
    ports = [port for port in ports if relevant(_Opening(*port, ""))]
    if not ports:
        return []
    sources = [cidr for cidr in _items(props.get("sourceRanges")) if isinstance(cidr, str)]
    return [_Opening(*port, cidr) for port in ports for cidr in sources]


def _ingress_openings(resource_type: str, props: Mapping, relevant: _Relevant) -> list[_Opening]:
    """Ingress a resource opens, from any source: inline security group ingress, a SecurityGroupRule of
    type ingress, a vpc.SecurityGroupIngressRule, or a GCP ingress firewall rule; only the `relevant` ones."""
    if resource_type in (AWS_SECURITY_GROUP, AWS_DEFAULT_SECURITY_GROUP):
        openings = []
        for rule in _items(props.get("ingress")):
            rule = _mapping(rule)
            openings += _aws_openings(
                rule.get("protocol"),
                rule.get("fromPort"),
                rule.get("toPort"),
                lambda rule=rule: _items(rule.get("cidrBlocks")) + _items(rule.get("ipv6CidrBlocks")),
                relevant,
            )
        return openings
    if resource_type == AWS_SECURITY_GROUP_RULE:
        if props.get("type") != "ingress":
            return []
        return _aws_openings(
            props.get("protocol"),
            props.get("fromPort"),
            props.get("toPort"),
            lambda: _items(props.get("cidrBlocks")) + _items(props.get("ipv6CidrBlocks")),
            relevant,
        )
    if resource_type == AWS_VPC_INGRESS_RULE:
        return _aws_openings(
            props.get("ipProtocol"),
            props.get("fromPort"),
            props.get("toPort"),
            lambda: [props.get("cidrIpv4"), props.get("cidrIpv6")],
            relevant,
        )
    if resource_type == GCP_FIREWALL:
        return _gcp_openings(props, relevant)
    return []


def _covers_ssh(opening: _Opening) -> bool:
    return opening.covers("tcp", SSH_PORT)


def _beyond_public_ports(opening: _Opening) -> bool:
    """Opens something besides the ports that may be public (and SSH, which the SSH rules judge, once)."""
    allowed = PUBLIC_PORTS.get(opening.protocol, frozenset())
    if opening.protocol == "tcp":
        allowed = allowed | {SSH_PORT}
    return not all(port in allowed for port in range(opening.first_port, opening.last_port + 1))


# ---------------------------------------------------------------------------------------------------------
# Resource rules.


def _listed(names: list[str]) -> str:
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")


def _too_wide(sources: Iterable[str]) -> list[tuple[int, int, list[str]]]:
    """(IP version, addresses covered, the CIDRs) for each version whose CIDRs together cover more than
    SSH_MAX_ADDRESSES: judged by what the ranges cover together, so two /1s are the world as well."""
    return [
        (version, covered, cidrs)
        for version, (covered, cidrs) in _coverage(sources).items()
        if covered > SSH_MAX_ADDRESSES[version]
    ]


def _limit(version: int) -> str:
    return f"/{8 if version == 4 else 32}"


def _ssh_not_public(resource_types: tuple[str, ...]) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in resource_types:
            return
        ssh = _ingress_openings(args.resource_type, args.props, _covers_ssh)
        world = [o for o in ssh if _is_world(o.source)]
        for opening in world:
            report_violation(
                f"SSH (tcp 22) is open to the world: {opening.describe()}. Allow port 22 only from sshAllowedCidrs."
            )
        if world:
            return
        for version, covered, sources in _too_wide(o.source for o in ssh):
            report_violation(
                f"SSH (tcp 22) is open to {covered} IPv{version} addresses (from {_listed(sources)}), more than a "
                f"{_limit(version)}. Allow port 22 only from sshAllowedCidrs."
            )

    return validate


def _unless_public_ssh_allowed(
    validate: Callable[[Any, ReportViolation], None],
) -> Callable[[Any, ReportViolation], None]:
    """An SSH-exposure validation that the policy config's allowPublicSsh turns off.

    With allowPublicSsh true the policy is *skipped*: what it would report is raised as "not applicable"
    (`args.not_applicable`), with that text as the reason, instead of as violations. Not advisory, because a
    validation cannot choose the level of what it reports: the level is one per policy, which the CLI sets
    from the config file (`"enforcementLevel"`), and `report_violation` takes none. And skipping is sound:
    the flag mirrors infra's allowPublicSsh, which lifts the SSH limit altogether, so SSH from anywhere is
    then the declared intent, chosen per `pulumi preview`/`up` run by passing the config file; every other
    policy (prefect-host-public-ports-only above all) still applies. Whoever wants the findings shown as
    warnings instead sets these policies to "advisory" in the config file, without allowPublicSsh.
    """
    return _unless_allowed(ALLOW_PUBLIC_SSH, validate)


def _unless_allowed(
    flag: str, validate: Callable[[Any, ReportViolation], None]
) -> Callable[[Any, ReportViolation], None]:
    """A validation that the policy config property `flag` (a boolean) turns into "not applicable", naming what
    it found: allowPublicSsh for the SSH rules, allowDatabaseDeletion for the deletion-protection rules."""

    def wrapped(args: Any, report_violation: ReportViolation) -> None:
        if not _is_true(args.get_config().get(flag)):
            validate(args, report_violation)
            return
        found: list[str] = []
        validate(args, lambda message, urn=None: found.append(message))
        if found:
            args.not_applicable(f"{flag} is set in the policy pack config; not enforced: " + " ".join(found))

    return wrapped


def _public_ports_only(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for opening in _ingress_openings(args.resource_type, args.props, _beyond_public_ports):
        if _is_world(opening.source):
            report_violation(f"Open to the world: {opening.describe()}; only tcp 80, 443, 4200 and udp 4200 may be.")


def _imdsv2_required(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != AWS_INSTANCE:
        return
    options = _mapping(args.props.get("metadataOptions"))
    # As CKV_AWS_79: a disabled metadata endpoint passes too. Without metadataOptions AWS allows IMDSv1.
    if options.get("httpEndpoint") == "disabled" or options.get("httpTokens") == "required":
        return
    report_violation(f'metadataOptions.httpTokens is {options.get("httpTokens")!r}; set it to "required" (IMDSv2).')


def _encrypted_disks(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != AWS_INSTANCE:
        return
    root = args.props.get("rootBlockDevice")
    if not isinstance(root, Mapping):
        # As CKV_AWS_8: without rootBlockDevice the root volume is unencrypted unless the account happens to
        # encrypt EBS by default, which the program cannot see.
        report_violation("No rootBlockDevice: the root volume would be unencrypted; set rootBlockDevice.encrypted.")
    elif not _is_true(root.get("encrypted")):
        report_violation("rootBlockDevice.encrypted is not true.")
    # Stricter than checkov, which lets a volume restored from a snapshot inherit the snapshot's encryption.
    for device in _items(args.props.get("ebsBlockDevices")):
        device = _mapping(device)
        if not _is_true(device.get("encrypted")):
            report_violation(f"ebsBlockDevices entry {device.get('deviceName')!r} is not encrypted.")


def _public_access_flag(flag: str) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type == AWS_PUBLIC_ACCESS_BLOCK and not _is_true(args.props.get(flag)):
            report_violation(f"{flag} is not true (it defaults to false).")

    return validate


def _no_user_policies(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type in (AWS_USER_POLICY, AWS_USER_POLICY_ATTACHMENT):
        report_violation(f"A policy is attached to user {args.props.get('user')!r}; attach it to a group instead.")
    elif args.resource_type == AWS_POLICY_ATTACHMENT and _items(args.props.get("users")):
        report_violation(f"PolicyAttachment lists users {list(args.props['users'])}; attach to groups instead.")


def _gcp_vtpm_and_integrity(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != GCP_INSTANCE:
        return
    config = args.props.get("shieldedInstanceConfig")
    if not isinstance(config, Mapping):
        report_violation("No shieldedInstanceConfig.")
        return
    # As CKV_GCP_39: vTPM and integrity monitoring default to true, so only an explicit false fails.
    for key in ("enableVtpm", "enableIntegrityMonitoring"):
        if config.get(key) is False:
            report_violation(f"shieldedInstanceConfig.{key} is false.")


def _gcp_secure_boot(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != GCP_INSTANCE:
        return
    if _mapping(args.props.get("shieldedInstanceConfig")).get("enableSecureBoot") is not True:
        report_violation("shieldedInstanceConfig.enableSecureBoot is not true (it defaults to false).")


def _gcp_metadata(args: ResourceValidationArgs) -> Mapping | None:
    return _mapping(args.props.get("metadata")) if args.resource_type == GCP_INSTANCE else None


def _gcp_block_project_ssh_keys(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    metadata = _gcp_metadata(args)
    if metadata is not None and not _is_true(metadata.get("block-project-ssh-keys")):
        report_violation(
            f'metadata block-project-ssh-keys is {metadata.get("block-project-ssh-keys")!r}; set it to "true".'
        )


def _gcp_serial_port_off(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    metadata = _gcp_metadata(args)
    if metadata is None or "serial-port-enable" not in metadata:
        return  # off unless enabled
    value = metadata.get("serial-port-enable")
    # GCE reads several spellings as true; accept only explicit "off" spellings.
    if str(value).strip().lower() not in ("false", "0", "no", "n"):
        report_violation(f'metadata serial-port-enable is {value!r}; remove it or set it to "false".')


# ---------------------------------------------------------------------------------------------------------
# Managed PostgreSQL: RDS instances and Cloud SQL instances.


def _rds_name(props: Mapping, fallback: str) -> str:
    identifier = _known(props, "identifier")
    return identifier if isinstance(identifier, str) else fallback


def _rds_encrypted(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == AWS_RDS_INSTANCE and not _is_true(args.props.get("storageEncrypted")):
        report_violation(
            "storageEncrypted is not true (it defaults to false): the database's storage, backups and snapshots "
            "would be unencrypted."
        )


def _rds_not_public(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == AWS_RDS_INSTANCE and _is_true(args.props.get("publiclyAccessible")):
        report_violation("publiclyAccessible is true: the database gets a public address; leave it false.")


def _rds_backups(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != AWS_RDS_INSTANCE:
        return
    # Stricter than CKV_AWS_133, which passes an unset period (assuming AWS's API default of 1 day): the provider's
    # default is 0, no automated backups, so the period must be declared.
    value = args.props.get("backupRetentionPeriod")
    low, high = RDS_BACKUP_RETENTION_DAYS
    try:
        days = None if value is None else _port(value)
    except (TypeError, ValueError):
        days = None
    if days is None or not low <= days <= high:
        report_violation(
            f"backupRetentionPeriod is {value!r}; set it to {low}..{high} days (unset, the provider's default is 0: "
            "no automated backups)."
        )


def _rds_deletion_protection(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type == AWS_RDS_INSTANCE and not _is_true(args.props.get("deletionProtection")):
        report_violation("deletionProtection is not true (it defaults to false): the database can be deleted.")


def _cloud_sql_settings(args: ResourceValidationArgs) -> Mapping | None:
    return _mapping(args.props.get("settings")) if args.resource_type == GCP_SQL_INSTANCE else None


def _cloud_sql_no_public_ip(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    settings = _cloud_sql_settings(args)
    if settings is None:
        return
    # Stricter than CKV_GCP_60, which passes an instance without ipv4Enabled: Cloud SQL then gives it a public IP.
    enabled = _mapping(settings.get("ipConfiguration")).get("ipv4Enabled")
    if not _is_false(enabled):
        report_violation(
            f"settings.ipConfiguration.ipv4Enabled is {enabled!r}; set it to false (Cloud SQL assigns a public IP "
            "unless told not to) and use a private network."
        )


def _cloud_sql_tls_only(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    settings = _cloud_sql_settings(args)
    if settings is None:
        return
    # As CKV_GCP_6 (sslMode decides when set, else the deprecated requireSsl), except that ENCRYPTED_ONLY passes
    # too: TLS is required, client certificates are not (Prefect's asyncpg connection authenticates with a
    # password over TLS). Checkov passes only TRUSTED_CLIENT_CERTIFICATE_REQUIRED for PostgreSQL.
    ip_configuration = _mapping(settings.get("ipConfiguration"))
    mode = ip_configuration.get("sslMode")
    if mode in CLOUD_SQL_TLS_MODES or (mode is None and _is_true(ip_configuration.get("requireSsl"))):
        return
    report_violation(
        f"settings.ipConfiguration.sslMode is {mode!r}; set it to one of {sorted(CLOUD_SQL_TLS_MODES)} so that "
        "unencrypted connections are refused."
    )


def _cloud_sql_backups(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    settings = _cloud_sql_settings(args)
    # As CKV_GCP_14: a read replica (masterInstanceName) has no backups of its own and is not judged.
    if settings is None or args.props.get("masterInstanceName"):
        return
    if not _is_true(_mapping(settings.get("backupConfiguration")).get("enabled")):
        report_violation("settings.backupConfiguration.enabled is not true: the database has no automated backups.")


def _cloud_sql_deletion_protection(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    settings = _cloud_sql_settings(args)
    if settings is not None and not _is_true(settings.get("deletionProtectionEnabled")):
        report_violation(
            "settings.deletionProtectionEnabled is not true (it defaults to false): Cloud SQL lets any client "
            "(console, gcloud, API) delete the database."
        )


def _reference(resource: PolicyResource, prop: str, candidates: Iterable[PolicyResource]) -> PolicyResource | None:
    """The candidate that `resource`'s input `prop` names: through the engine's property dependencies (a preview
    names a new resource that way while its name is unknown), else by the value against the candidate's name and
    id. An unknown value that no dependency explains raises: the engine then reports that the policy cannot decide
    in this preview, rather than a false violation."""
    candidates = list(candidates)
    depends_on = {dep.urn for dep in resource.property_dependencies.get(prop, [])}
    for candidate in candidates:
        if candidate.urn in depends_on:
            return candidate
    value = resource.props.get(prop)
    for candidate in candidates:
        if isinstance(value, str) and value in {_known(candidate.props, key) for key in ("name", "id")}:
            return candidate
    return None


def _force_ssl(parameter_group: PolicyResource) -> Any:
    for parameter in _items(parameter_group.props.get("parameters")):
        parameter = _mapping(parameter)
        if parameter.get("name") == "rds.force_ssl":
            return parameter.get("value")
    return None


def _is_one(value: Any) -> bool:
    """RDS parameter values are strings ("1"); a number (1, or 1.0 as numbers cross gRPC) means the same."""
    try:
        return not isinstance(value, bool) and float(value) == 1
    except (TypeError, ValueError):
        return False


def _rds_tls_enforced(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    # Stricter than CKV2_AWS_69, which passes an instance without a parameter group of its own: RDS's default one
    # enforces TLS only from PostgreSQL 15 on, so the parameter group must be in the stack, with rds.force_ssl 1.
    groups = [r for r in args.resources if r.resource_type == AWS_RDS_PARAMETER_GROUP]
    for instance in (r for r in args.resources if r.resource_type == AWS_RDS_INSTANCE):
        engine = _known(instance.props, "engine")
        if not (isinstance(engine, str) and engine.startswith("postgres")):
            continue
        name = _rds_name(instance.props, instance.name)
        group = _reference(instance, "parameterGroupName", groups)
        if group is None:
            report_violation(
                f"RDS instance {name!r} uses no parameter group of this stack; give it one with rds.force_ssl = 1 "
                "so that unencrypted connections are refused.",
                instance.urn,
            )
        elif not _is_one(_force_ssl(group)):
            report_violation(
                f"RDS instance {name!r} uses parameter group {group.name!r}, whose rds.force_ssl is "
                f"{_force_ssl(group)!r}; set it to 1 so that unencrypted connections are refused.",
                instance.urn,
            )


# ---------------------------------------------------------------------------------------------------------
# Stack rule: SSH summed over every resource that opens it on one target.
#
# The rules above judge one resource's source ranges; a stack can open SSH to the world through many
# resources that each pass (one vpc.SecurityGroupIngressRule per /9, as infra/ registers one rule per CIDR,
# or several firewalls on one network). The target is the security group (its inline ingress and every
# SecurityGroupRule / vpc.SecurityGroupIngressRule on it) or, on GCP, the network (its INGRESS firewalls,
# whatever their target tags or service accounts: a network's exposure is judged as a whole, which can only
# over-count). Not combined: several security groups on one instance, which AWS unites.
# Reported per target and IP version when the sum is too wide *and* more than one resource adds to it: what
# one resource opens alone is exactly what CKV_AWS_24 / CKV_GCP_2 judge, and is reported there, once.

AWS_SECURITY_GROUPS = (AWS_SECURITY_GROUP, AWS_DEFAULT_SECURITY_GROUP)
# Resource type -> (the input naming its target, the target's resource types, what the target is).
_SSH_TARGET_REFERENCE = {
    AWS_SECURITY_GROUP_RULE: ("securityGroupId", AWS_SECURITY_GROUPS, "security group"),
    AWS_VPC_INGRESS_RULE: ("securityGroupId", AWS_SECURITY_GROUPS, "security group"),
    GCP_FIREWALL: ("network", (GCP_NETWORK,), "network"),
}


@dataclass
class _SshTarget:
    label: str
    resource: PolicyResource | None  # None: the target is not in this stack (or not identifiable)
    sources: list[tuple[PolicyResource, str]]  # (a resource opening SSH on it, one of its source ranges)


def _ip_version(cidr: str) -> int | None:
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).version
    except ValueError:
        return None


def _network_reference(value: str) -> str:
    """A network as a firewall names it: self link, `projects/P/global/networks/N` or plain `N`. Compared by
    name N: names are unique within a project, and a stack's networks normally share one; merging two
    projects' same-named networks could only over-count."""
    return value.strip().rstrip("/").rsplit("/", 1)[-1]


def _target_identifiers(resources: Iterable[PolicyResource]) -> dict[tuple[str, str], PolicyResource]:
    """(kind, identifier) -> the security group or network in the stack that a rule's reference may name."""
    found: dict[tuple[str, str], PolicyResource] = {}
    for resource in resources:
        if resource.resource_type in AWS_SECURITY_GROUPS:
            if isinstance(group_id := _known(resource.props, "id"), str):
                found["security group", group_id.strip()] = resource
        elif resource.resource_type == GCP_NETWORK:
            for key in ("id", "selfLink", "name"):
                if isinstance(value := _known(resource.props, key), str):
                    found["network", _network_reference(value)] = resource
    return found


def _ssh_target(
    resource: PolicyResource, identifiers: Mapping[tuple[str, str], PolicyResource]
) -> tuple[tuple, str, PolicyResource | None] | None:
    """The key, description and resource (if in the stack) of the target a resource opens SSH on; None
    when nothing identifies it (the resource rules then judge it alone)."""
    if resource.resource_type in AWS_SECURITY_GROUPS:
        return ("resource", resource.urn), f"security group {resource.name}", resource
    prop, target_types, kind = _SSH_TARGET_REFERENCE[resource.resource_type]
    # The engine tells which resources the reference was computed from: `security_group_id=group.id` names
    # the group even in a preview, where a new group's id is unknown.
    depends_on = resource.property_dependencies.get(prop, [])
    targets = {d.urn: d for d in depends_on if d.resource_type in target_types}
    if len(targets) == 1:
        [target] = targets.values()
        return ("resource", target.urn), f"{kind} {target.name}", target
    value = _known(resource.props, prop)
    if isinstance(value, str) and value.strip():
        reference = _network_reference(value) if kind == "network" else value.strip()
        if (target := identifiers.get((kind, reference))) is not None:
            return ("resource", target.urn), f"{kind} {target.name}", target
        return ("value", kind, reference), f"{kind} {value.strip()}", None
    # Unknown in a preview and computed from no security group or network of the stack (another resource's
    # output, e.g. a VPC's default security group): grouped by what is known, the resources it is computed
    # from, so rules taking it from the same place are summed. `pulumi up` runs the stack policies again on
    # the deployed outputs, where the value is known and groups by it.
    if depends_on:
        sources = tuple(sorted(d.urn for d in depends_on))
        return ("computed", kind, sources), f"the {kind} computed from {_listed([d.name for d in depends_on])}", None
    return None


def _ssh_openings(resource: PolicyResource) -> list[_Opening]:
    # A security group's `ingress` is a computed output: unknown in a preview unless declared inline, so
    # unknown means none declared (the separate rules that AWS later lists there are counted themselves).
    if resource.resource_type in AWS_SECURITY_GROUPS and _known(resource.props, "ingress") is None:
        return []
    # Any other unknown (an SSH rule's source range computed from another resource) raises: the engine then reports
    # that the policy cannot run in this preview, rather than a sum that leaves ranges out. Rules that do not open
    # SSH are not read beyond their protocol and ports.
    return _ingress_openings(resource.resource_type, resource.props, _covers_ssh)


def _ssh_total_per_target(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    identifiers = _target_identifiers(args.resources)
    targets: dict[tuple, _SshTarget] = {}
    for resource in args.resources:
        if resource.resource_type not in (*AWS_SECURITY_GROUPS, *_SSH_TARGET_REFERENCE):
            continue
        openings = _ssh_openings(resource)
        if not openings or (found := _ssh_target(resource, identifiers)) is None:
            continue
        key, label, target_resource = found
        target = targets.setdefault(key, _SshTarget(label, target_resource, []))
        target.sources += [(resource, o.source) for o in openings]
    for target in targets.values():
        for version, covered, sources in _too_wide(source for _, source in target.sources):
            members = {r.urn: r.name for r, source in target.sources if _ip_version(source) == version}
            if len(members) < 2:
                continue
            report_violation(
                f"SSH (tcp 22) to {target.label} is open to {covered} IPv{version} addresses in all, more than a "
                f"{_limit(version)}: {len(members)} resources ({_listed(list(members.values()))}) allow it from "
                f"{_listed(sources)}. Allow port 22 only from sshAllowedCidrs.",
                target.resource.urn if target.resource is not None else None,
            )


# ---------------------------------------------------------------------------------------------------------
# Stack rules: a bucket and the resources that configure it.


def _buckets(args: StackValidationArgs) -> list[PolicyResource]:
    return [r for r in args.resources if r.resource_type in AWS_BUCKETS]


def _bucket_name(bucket: PolicyResource) -> str:
    name = _known(bucket.props, "bucket")
    return name if isinstance(name, str) else bucket.name


def _configuring(
    bucket: PolicyResource, resources: Iterable[PolicyResource], types: Iterable[str]
) -> list[PolicyResource]:
    """The resources of `types` whose `bucket` input names this bucket.

    The engine tells which resources each input was computed from (property_dependencies), which identifies
    the bucket even in a preview where `bucket.id` is still unknown. Without that (a literal bucket name, or
    `evaluate()` over mocked resources), the value is compared with the bucket's name and id: in a real stack
    both are the bucket name; under mocks `id` is whatever the mock returned.
    If nothing matches while some candidate's `bucket` is unknown, the answer is unknowable: raise, so the
    engine reports that the policy could not run in this preview rather than a false violation.
    """
    identifiers = {value for key in ("bucket", "id") if isinstance(value := _known(bucket.props, key), str)}
    matches, undecided = [], None
    for resource in resources:
        if resource.resource_type not in types:
            continue
        if any(dep.urn == bucket.urn for dep in resource.property_dependencies.get("bucket", [])):
            matches.append(resource)
            continue
        try:
            if resource.props.get("bucket") in identifiers:
                matches.append(resource)
        except UnknownValueError as unknown:
            undecided = unknown
    if not matches and undecided is not None:
        raise undecided
    return matches


def _bucket_has_public_access_block(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for bucket in _buckets(args):
        if not _configuring(bucket, args.resources, (AWS_PUBLIC_ACCESS_BLOCK,)):
            report_violation(f"Bucket {_bucket_name(bucket)!r} has no BucketPublicAccessBlock.", bucket.urn)


def _algorithms_of_rules(rules: Iterable[Any], default_key: str) -> list[Any]:
    algorithms = []
    for rule in rules:
        defaults = _mapping(rule).get(default_key)
        for default in _items(defaults) if not isinstance(defaults, Mapping) else [defaults]:
            algorithms.append(_mapping(default).get("sseAlgorithm"))
    return algorithms


def _bucket_encryption_algorithms(bucket: PolicyResource, resources: list[PolicyResource]) -> list[Any]:
    algorithms = []
    for config in _configuring(bucket, resources, AWS_BUCKET_ENCRYPTION):
        algorithms += _algorithms_of_rules(_items(config.props.get("rules")), "applyServerSideEncryptionByDefault")
    # The deprecated inline forms: Bucket has one configuration with one `rule`, BucketV2 lists of both.
    # They are computed outputs too (S3 reports its default encryption), unknown in a preview: skip them then.
    inline = _known(bucket.props, "serverSideEncryptionConfiguration")
    if isinstance(inline, Mapping):
        algorithms += _algorithms_of_rules([inline.get("rule")], "applyServerSideEncryptionByDefault")
    for config in _items(_known(bucket.props, "serverSideEncryptionConfigurations")):
        algorithms += _algorithms_of_rules(_items(_mapping(config).get("rules")), "applyServerSideEncryptionByDefaults")
    return algorithms


def _bucket_encrypted(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    # Stricter than today's CKV_AWS_19, which passes a bucket without configuration because S3 now applies
    # SSE-S3 by default: here the default encryption must be declared (and so visible and reviewable).
    for bucket in _buckets(args):
        if not any(a in ENCRYPTION_ALGORITHMS for a in _bucket_encryption_algorithms(bucket, args.resources)):
            report_violation(
                f"Bucket {_bucket_name(bucket)!r} has no default encryption "
                f"(a server-side encryption rule with one of {sorted(ENCRYPTION_ALGORITHMS)}).",
                bucket.urn,
            )


def _parse_policy(document: Any) -> Mapping:
    if isinstance(document, Mapping):
        return document
    if isinstance(document, str):
        try:
            parsed = json.loads(document)
        except ValueError:
            return {}
        return _mapping(parsed)
    return {}


def _denies_plain_http(statement: Mapping, bucket_arn: str | None) -> bool:
    """A statement denying every principal every S3 action on the bucket and its objects unless TLS is used."""
    if statement.get("Effect") != "Deny":
        return False
    principal = statement.get("Principal")
    if principal != "*" and "*" not in _as_list(_mapping(principal).get("AWS")):
        return False
    if not {"s3:*", "*"} & set(_as_list(statement.get("Action"))):
        return False
    condition = _mapping(statement.get("Condition"))
    values = [_mapping(condition.get(op)).get("aws:SecureTransport") for op in ("Bool", "BoolIfExists")]
    if not any(str(v).lower() == "false" for value in values for v in _as_list(value)):
        return False
    resources = set(_as_list(statement.get("Resource")))
    if "*" in resources:
        return True
    arns = [bucket_arn] if bucket_arn else [r for r in resources if isinstance(r, str) and not r.endswith("/*")]
    return any(arn in resources and f"{arn}/*" in resources for arn in arns)


def _bucket_tls_only(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for bucket in _buckets(args):
        arn, name = _known(bucket.props, "arn"), _known(bucket.props, "bucket")
        bucket_arn = arn if isinstance(arn, str) else f"arn:aws:s3:::{name}" if isinstance(name, str) else None
        documents = [p.props.get("policy") for p in _configuring(bucket, args.resources, (AWS_BUCKET_POLICY,))]
        documents.append(_known(bucket.props, "policy"))  # deprecated inline form, a computed output as well
        statements = [s for d in documents for s in _as_list(_parse_policy(d).get("Statement"))]
        if not any(_denies_plain_http(_mapping(s), bucket_arn) for s in statements):
            report_violation(
                f"Bucket {_bucket_name(bucket)!r} has no policy statement denying s3:* to every "
                "principal on the bucket and its objects when aws:SecureTransport is false.",
                bucket.urn,
            )


# ---------------------------------------------------------------------------------------------------------
# The rules. Each is mandatory: a violation fails `pulumi preview`/`up` with `--policy-pack policy`. The SSH
# exposure rules take one config property, allowPublicSsh (policy/allow-public-ssh.json sets it on all three); the
# deletion-protection rules take allowDatabaseDeletion (policy/allow-database-deletion.json, for retainData false).

MANDATORY = EnforcementLevel.MANDATORY


def _resource_rule(name: str, description: str, validate) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(name=name, description=description, validate=validate, enforcement_level=MANDATORY)


def _stack_rule(name: str, description: str, validate) -> StackValidationPolicy:
    return StackValidationPolicy(name=name, description=description, validate=validate, enforcement_level=MANDATORY)


def _deletion_rule(name: str, description: str, validate) -> ResourceValidationPolicy:
    """A deletion-protection rule: mandatory, and skipped when its config sets allowDatabaseDeletion."""
    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=_unless_allowed(ALLOW_DATABASE_DELETION, validate),
        enforcement_level=MANDATORY,
        config_schema=DATABASE_DELETION_CONFIG_SCHEMA,
    )


def _ssh_rule(policy_type: type[Policy], name: str, description: str, validate) -> Policy:
    """An SSH-exposure rule: mandatory, and skipped when its config sets allowPublicSsh."""
    return policy_type(
        name=name,
        description=description,
        validate=_unless_public_ssh_allowed(validate),
        enforcement_level=MANDATORY,
        config_schema=SSH_CONFIG_SCHEMA,
    )


ALL: list[Policy] = [
    _ssh_rule(
        ResourceValidationPolicy,
        "CKV_AWS_24",
        "No security group allows ingress to port 22 from 0.0.0.0/0 or ::/0, or from ranges covering more than a "
        "/8 of IPv4 or a /32 of IPv6.",
        _ssh_not_public(
            (AWS_SECURITY_GROUP, AWS_DEFAULT_SECURITY_GROUP, AWS_SECURITY_GROUP_RULE, AWS_VPC_INGRESS_RULE)
        ),
    ),
    _ssh_rule(
        ResourceValidationPolicy,
        "CKV_GCP_2",
        "No GCP firewall rule allows ingress to port 22 from 0.0.0.0/0 or ::/0, or from ranges covering more than a "
        "/8 of IPv4 or a /32 of IPv6.",
        _ssh_not_public((GCP_FIREWALL,)),
    ),
    _ssh_rule(
        StackValidationPolicy,
        "prefect-host-ssh-total-per-target",
        "No security group (its inline ingress and every rule on it, summed) or GCP network (its INGRESS "
        "firewalls, summed) lets port 22 in from more than a /8 of IPv4 or a /32 of IPv6.",
        _ssh_total_per_target,
    ),
    _resource_rule(
        "prefect-host-public-ports-only",
        "Only tcp 80, 443, 4200 and udp 4200 are open to the world (AWS and GCP).",
        _public_ports_only,
    ),
    _resource_rule(
        "CKV_AWS_79", "EC2 instances require IMDSv2 (metadataOptions.httpTokens = required).", _imdsv2_required
    ),
    _resource_rule("CKV_AWS_8", "EC2 instance volumes (root and EBS) are encrypted.", _encrypted_disks),
    _resource_rule(
        "CKV_AWS_53", "S3 public access blocks set blockPublicAcls.", _public_access_flag("blockPublicAcls")
    ),
    _resource_rule(
        "CKV_AWS_54", "S3 public access blocks set blockPublicPolicy.", _public_access_flag("blockPublicPolicy")
    ),
    _resource_rule(
        "CKV_AWS_55", "S3 public access blocks set ignorePublicAcls.", _public_access_flag("ignorePublicAcls")
    ),
    _resource_rule(
        "CKV_AWS_56", "S3 public access blocks set restrictPublicBuckets.", _public_access_flag("restrictPublicBuckets")
    ),
    _stack_rule("CKV2_AWS_6", "Every S3 bucket has a public access block.", _bucket_has_public_access_block),
    _stack_rule("CKV_AWS_19", "Every S3 bucket has default server-side encryption configured.", _bucket_encrypted),
    _stack_rule("prefect-host-s3-tls-only", "Every S3 bucket policy denies requests without TLS.", _bucket_tls_only),
    _resource_rule(
        "CKV_AWS_40", "IAM policies are attached to groups or roles, never directly to users.", _no_user_policies
    ),
    _resource_rule(
        "CKV_GCP_39", "GCP instances are shielded VMs with vTPM and integrity monitoring.", _gcp_vtpm_and_integrity
    ),
    _resource_rule(
        "prefect-host-gcp-secure-boot", "GCP instances boot with Shielded VM secure boot.", _gcp_secure_boot
    ),
    _resource_rule("CKV_GCP_32", "GCP instances block project-wide SSH keys.", _gcp_block_project_ssh_keys),
    _resource_rule("CKV_GCP_35", "GCP instances keep the serial port console disabled.", _gcp_serial_port_off),
    _resource_rule("CKV_AWS_16", "RDS instances encrypt their storage (storageEncrypted).", _rds_encrypted),
    _resource_rule("CKV_AWS_17", "RDS instances are not publicly accessible.", _rds_not_public),
    _resource_rule(
        "CKV_AWS_133", "RDS instances keep automated backups for 1 to 35 days (backupRetentionPeriod).", _rds_backups
    ),
    _deletion_rule("CKV_AWS_293", "RDS instances have deletion protection.", _rds_deletion_protection),
    _stack_rule(
        "CKV2_AWS_69",
        "RDS for PostgreSQL instances use a parameter group of the stack with rds.force_ssl = 1 (TLS only).",
        _rds_tls_enforced,
    ),
    _resource_rule(
        "CKV_GCP_60",
        "Cloud SQL instances have no public IP (ipConfiguration.ipv4Enabled false).",
        _cloud_sql_no_public_ip,
    ),
    _resource_rule(
        "CKV_GCP_6",
        "Cloud SQL instances refuse unencrypted connections (sslMode ENCRYPTED_ONLY or "
        "TRUSTED_CLIENT_CERTIFICATE_REQUIRED).",
        _cloud_sql_tls_only,
    ),
    _resource_rule("CKV_GCP_14", "Cloud SQL instances have automated backups enabled.", _cloud_sql_backups),
    _deletion_rule(
        "prefect-host-gcp-sql-deletion-protection",
        "Cloud SQL instances have Cloud SQL's own deletion protection (settings.deletionProtectionEnabled).",
        _cloud_sql_deletion_protection,
    ),
]


# ---------------------------------------------------------------------------------------------------------
# Running the rules without the engine.


def _options(parent: str | None) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=parent,
    )


def _policy_config(policy: Policy, config: Mapping[str, Any]) -> dict[str, Any]:
    """A policy's properties as the engine hands them over: the schema's defaults, then what the config file
    gives (its "enforcementLevel" is the engine's business, not the policy's)."""
    schema = policy.config_schema.properties if policy.config_schema is not None else {}
    given = _mapping(config.get(policy.name))
    return {
        **{key: spec["default"] for key, spec in schema.items() if "default" in spec},
        **{key: value for key, value in given.items() if key != "enforcementLevel"},
    }


def evaluate(resources: Iterable[Any], config: Mapping[str, Any] | None = None) -> list[Violation]:
    """Run every rule over `resources` (objects with `.type`, `.name`, `.inputs`, optionally `.urn`, `.id`,
    `.outputs`, `.parent`) and return the violations, in rule order.

    As in the engine, resource rules get each resource's inputs; stack rules get its outputs, which the
    bridged AWS/GCP providers return as a superset of the inputs, with the resource's id among them, so
    mocked outputs (and `.id`) are laid over the inputs. Nothing here knows property dependencies, so stack
    rules match related resources by value.
    `config` is the policy pack config, shaped as the file `--policy-pack-config` takes: policy name ->
    properties. A policy that declares itself not applicable under it reports nothing.
    """
    records = list(resources)
    config = config or {}
    urns = [
        getattr(r, "urn", None) or f"urn:pulumi:evaluate::evaluate::{r.type}::{r.name}#{i}"
        for i, r in enumerate(records)
    ]
    name_of = dict(zip(urns, (r.name for r in records), strict=True))
    violations: list[Violation] = []

    def reporter(policy: Policy, default_resource: str) -> ReportViolation:
        def report_violation(message: str, urn: str | None = None) -> None:
            violations.append(Violation(policy.name, name_of.get(urn, default_resource), message))

        return report_violation

    def run(policy: Policy, args: Any, report_violation: ReportViolation) -> None:
        with contextlib.suppress(_NotApplicableError):
            policy.validate(args, report_violation)

    for policy in ALL:
        policy_config = _policy_config(policy, config)
        if isinstance(policy, ResourceValidationPolicy):
            for record, urn in zip(records, urns, strict=True):
                props = unknown_checking_proxy(copy.deepcopy(dict(record.inputs)))
                args = ResourceValidationArgs(
                    record.type,
                    props,
                    urn,
                    record.name,
                    _options(getattr(record, "parent", None)),
                    None,
                    copy.deepcopy(policy_config),
                )
                run(policy, args, reporter(policy, record.name))
        else:
            stack = []
            for record, urn in zip(records, urns, strict=True):
                props = {**record.inputs, **(getattr(record, "outputs", None) or {})}
                if getattr(record, "id", None) and "id" not in props:
                    props["id"] = record.id
                stack.append(
                    PolicyResource(
                        record.type,
                        unknown_checking_proxy(copy.deepcopy(props)),
                        urn,
                        record.name,
                        _options(getattr(record, "parent", None)),
                        None,
                        None,
                        [],
                        {},
                    )
                )
            run(policy, StackValidationArgs(stack, copy.deepcopy(policy_config)), reporter(policy, ""))
    return violations
