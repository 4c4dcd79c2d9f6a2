"""The stack's configuration: one typed, validated object, built in one place.

`load_stack_config()` reads `pulumi.Config("prefect-host")` and the provider keys (`aws:region`,
`gcp:project`, `gcp:region`, `gcp:zone`); `parse_stack_config()` does the validation on plain
strings so tests can call it without the Pulumi runtime. Every invalid value raises one
StackConfigError naming the key, the value and what is allowed, before any resource exists.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from backup_config import DEFAULTS as BACKUP_DEFAULTS
from backup_config import RETENTION, SNAPSHOT_INTERVAL, backup_problem

NAMESPACE = "prefect-host"

CLOUDS = ("aws", "gcp")
IMAGES = ("debian-13", "debian-12")
S3_ACCESS_LEVELS = ("bucket", "all")
DEFAULT_INSTANCE_TYPES = {"aws": "t3.small", "gcp": "e2-small"}
DEFAULT_PREFECT_VERSION = "3.9.1"
# Older releases have known auth bugs (websocket auth fixed in 3.8.3, an auth bypass in 3.6.22).
MIN_PREFECT_VERSION = (3, 8, 3)
DISK_SIZE_RANGE = (10, 2000)
DEFAULT_ALLOWED_CIDRS = ("0.0.0.0/0",)
# Without allowPublicSsh, sshAllowedCidrs may cover at most a /8 of IPv4 and a /32 of IPv6 (addresses summed
# over the list, overlaps merged): ["0.0.0.0/1", "128.0.0.0/1"] is the whole internet too.
SSH_MAX_ADDRESSES = {4: 2**24, 6: 2**96}
DEFAULT_IAM_GROUP = "S3-FullAccess"
# AWS key pairs import only these two types, so they are the ones both clouds accept.
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa")
TLS_SETTINGS = ("auto", "acme", "internal", "off")
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING_DIRECTORY = "https://acme-staging-v02.api.letsencrypt.org/directory"
# Caddy's port for plain HTTP when tls is off: the port users and the tutorial know.
PLAINTEXT_PORT = 4200
# Prefect's database: SQLite on the VM (one API process), or a managed PostgreSQL 17 (RDS / Cloud SQL) that several
# API processes share (Prefect's `prefect server start --workers N` refuses N > 1 with SQLite).
DATABASES = ("sqlite", "postgres")
DEFAULT_DB_INSTANCE_CLASSES = {"aws": "db.t4g.micro", "gcp": "db-custom-1-3840"}
# Days of automated backups: RDS keeps them for at most 35 days (Cloud SQL keeps one backup a day, as many).
DB_BACKUP_RETENTION_DAYS = (1, 35)
DEFAULT_DB_BACKUP_RETENTION_DAYS = 7
DEFAULT_API_WORKERS = {"sqlite": 1, "postgres": 2}
# The most API processes per vCPU of the VM (checked against the provider's lookup of instanceType).
API_WORKERS_PER_VCPU = 2
# Worker VMs that run the flows off the server VM; the bootstrap reads at most as many (prefect_host/outputs.py's
# MAX_WORKER_HOSTS, held equal by tests/infra/test_outputs_contract.py).
WORKER_HOSTS_RANGE = (0, 20)

# Keys of the prefect-host namespace, in the order they are validated (the table).
KEYS = (
    "cloud",
    "instanceType",
    "image",
    "diskSizeGb",
    "allowedCidrs",
    "sshAllowedCidrs",
    "allowPublicSsh",
    "prefectVersion",
    "bucketName",
    "iamGroupName",
    "s3Access",
    "sshPublicKey",
    "retainData",
    "domain",
    "tls",
    "acmeEmail",
    "acmeCa",
    "allowPlaintext",
    RETENTION,
    SNAPSHOT_INTERVAL,
    "database",
    "dbInstanceClass",
    "dbBackupRetentionDays",
    "apiWorkers",
    "workerHosts",
    "workerInstanceType",
    "workerDiskSizeGb",
)
PROVIDER_KEYS = ("aws:region", "gcp:project", "gcp:region", "gcp:zone")


class StackConfigError(pulumi.RunError):
    """An invalid setting. A RunError, so the language host prints the message without a traceback."""


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    cloud: str
    instance_type: str
    image: str
    disk_size_gb: int
    allowed_cidrs: tuple[str, ...]
    ssh_allowed_cidrs: tuple[str, ...]
    allow_public_ssh: bool
    prefect_version: str
    bucket_name: str | None
    iam_group_name: str
    s3_access: str
    ssh_public_key: str | None
    retain_data: bool
    domain: str | None
    tls_mode: str  # resolved: acme, internal or off (never auto)
    acme_email: str | None
    acme_ca: str
    allow_plaintext: bool
    backup_retention: str  # Litestream's snapshot retention, e.g. "7d" (backup_config)
    backup_snapshot_interval: str  # how often Litestream takes a full snapshot, e.g. "1d"
    database: str  # sqlite or postgres
    db_instance_class: str | None  # postgres only: an RDS instance class or a Cloud SQL tier
    db_backup_retention_days: int | None  # postgres only: days of automated backups
    api_workers: int  # Prefect API processes: 1 with sqlite; with postgres at most API_WORKERS_PER_VCPU per vCPU
    worker_hosts: int  # worker VMs, 0 to 20
    worker_instance_type: str  # default: instance_type
    worker_disk_size_gb: int  # default: disk_size_gb
    aws_region: str
    gcp_project: str | None
    gcp_region: str | None
    gcp_zone: str | None

    def server_url(self, public_ip: str) -> str:
        """Where users reach the UI (the API is under /api): HTTPS on 443 through Caddy, with the
        domain when there is one, else the static IP; plain HTTP on 4200 only when tls is off."""
        host = self.domain or public_ip
        return f"http://{host}:{PLAINTEXT_PORT}" if self.tls_mode == "off" else f"https://{host}"

    @property
    def resource_prefix(self) -> str:
        """Logical names of components and their children: `<project>-<stack>`, lowercase.

        Kept short and within [a-z0-9-] so that provider auto-names built from it stay inside
        GCP's 63-character limit and naming rules.
        """
        return _slug(f"{self.project}-{self.stack}", max_len=40)

    @property
    def worker_host_names(self) -> tuple[str, ...]:
        """The worker VMs' names (output workerHosts, and their resources' logical names): `<prefix>-worker-<n>`,
        n from 1. Numbered, so `workerHosts` going from 3 to 2 removes the last VM and keeps the others."""
        return tuple(f"{self.resource_prefix}-worker-{n}" for n in range(1, self.worker_hosts + 1))

    @property
    def iam_user_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9+=,.@_-]", "-", f"{self.project}-{self.stack}")[:64]

    @property
    def bucket_name_prefix(self) -> str:
        """Derived bucket names are `<prefix>-<8 random hex digits>`: 63 characters at most."""
        return _slug(f"{self.project}-{self.stack}", max_len=63 - 9)


def _slug(text: str, *, max_len: int) -> str:
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")
    slug = slug[:max_len].rstrip("-")
    if not slug or not slug[0].isalpha():
        slug = ("p-" + slug)[:max_len].rstrip("-")
    return slug


def _error(key: str, raw: str | None, allowed: str) -> StackConfigError:
    if raw is None:
        return StackConfigError(f"Config {key} is not set; it is required: {allowed}.")
    return StackConfigError(f"Config {key} = {json.dumps(raw, ensure_ascii=False)} is invalid; allowed: {allowed}.")


def parse_choice(key: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise _error(key, raw, " or ".join(choices))
    return raw


def parse_bool(key: str, raw: str) -> bool:
    if raw not in ("true", "false"):
        raise _error(key, raw, "true or false")
    return raw == "true"


def parse_disk_size(key: str, raw: str) -> int:
    low, high = DISK_SIZE_RANGE
    if not re.fullmatch(r"[0-9]+", raw) or not low <= int(raw) <= high:
        raise _error(key, raw, f"a whole number of GB from {low} to {high}")
    return int(raw)


def parse_instance_type(key: str, raw: str, cloud: str) -> str:
    # Only the shape is checked here; the provider's lookup proves the type exists in the region.
    pattern, example = {
        "aws": (r"[a-z0-9-]+\.[a-z0-9-]+", "an EC2 instance type such as t3.small or t4g.small"),
        "gcp": (r"[a-z0-9]+(-[a-z0-9]+)+", "a Compute Engine machine type such as e2-small or t2a-standard-1"),
    }[cloud]
    if not re.fullmatch(pattern, raw):
        raise _error(key, raw, f"{example} (cloud is {cloud})")
    return raw


def parse_db_instance_class(key: str, raw: str, cloud: str) -> str:
    # Only the shape is checked here; the provider refuses a class it does not offer when the database is created.
    pattern, example = {
        "aws": (r"db\.[a-z0-9]+\.[a-z0-9]+", "an RDS DB instance class such as db.t4g.micro or db.m7g.large"),
        "gcp": (
            r"db-[A-Za-z0-9]+(-[A-Za-z0-9]+)*",
            "a Cloud SQL tier such as db-custom-1-3840, db-g1-small or db-perf-optimized-N-2",
        ),
    }[cloud]
    if not re.fullmatch(pattern, raw):
        raise _error(key, raw, f"{example} (cloud is {cloud})")
    return raw


def parse_db_backup_retention_days(key: str, raw: str) -> int:
    low, high = DB_BACKUP_RETENTION_DAYS
    if not re.fullmatch(r"[1-9][0-9]{0,5}", raw) or not low <= int(raw) <= high:
        raise _error(
            key, raw, f"a whole number of days from {low} to {high} (RDS keeps automated backups for at most {high})"
        )
    return int(raw)


def parse_api_workers(key: str, raw: str, database: str) -> int:
    """How many API processes: a whole number, exactly 1 with SQLite. The upper bound with PostgreSQL depends on the
    VM's vCPUs, which only the provider's lookup knows: check_api_workers."""
    if database == "sqlite":
        if raw != "1":
            raise _error(
                key,
                raw,
                f"1 with {NAMESPACE}:database sqlite (SQLite serves one API process; set {NAMESPACE}:database "
                "postgres to run several)",
            )
        return 1
    if not re.fullmatch(r"[1-9][0-9]{0,5}", raw):
        raise _error(
            key, raw, f"a whole number of API processes from 1 to {API_WORKERS_PER_VCPU} per vCPU of instanceType"
        )
    return int(raw)


def parse_worker_hosts(key: str, raw: str) -> int:
    low, high = WORKER_HOSTS_RANGE
    if not re.fullmatch(r"0|[1-9][0-9]{0,5}", raw) or not low <= int(raw) <= high:
        raise _error(
            key, raw, f"a whole number of worker VMs from {low} to {high} ({low}: the flows run on the server VM)"
        )
    return int(raw)


def check_api_workers(config: StackConfig, vcpus: int) -> None:
    """apiWorkers against the VM's vCPUs (from the provider's instance or machine type lookup)."""
    limit = API_WORKERS_PER_VCPU * vcpus
    if config.api_workers > limit:
        raise _error(
            f"{NAMESPACE}:apiWorkers",
            str(config.api_workers),
            f"1 to {limit}: at most {API_WORKERS_PER_VCPU} API processes per vCPU, and {NAMESPACE}:instanceType "
            f"{config.instance_type} has {vcpus} vCPU{'s' if vcpus != 1 else ''}",
        )


def parse_cidr_list(key: str, raw: str) -> tuple[str, ...]:
    """A JSON list of CIDRs in canonical form (the network address, an explicit prefix length)."""
    allowed = (
        'a non-empty list of IPv4/IPv6 CIDRs such as ["203.0.113.0/24", "2001:db8::/32"] '
        f"(pulumi config set --path '{key}[0]' 203.0.113.0/24)"
    )
    try:
        items = json.loads(raw)
    except json.JSONDecodeError:
        raise _error(key, raw, allowed) from None
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise _error(key, raw, allowed)
    networks: list[str] = []
    for item in items:
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError:
            raise StackConfigError(
                f"Config {key} contains {json.dumps(item)}, which is not a CIDR with its network address "
                f"and prefix length; allowed: {allowed}."
            ) from None
        if "/" not in item:
            raise StackConfigError(
                f"Config {key} contains {json.dumps(item)} without a prefix length; allowed: {allowed}, "
                f"e.g. {network} written as {network.with_prefixlen}."
            )
        if str(network) in networks:
            raise StackConfigError(f"Config {key} lists {json.dumps(item)} twice; allowed: each CIDR once.")
        networks.append(str(network))
    return tuple(networks)


def parse_ssh_cidrs(key: str, raw: str | None, *, allow_public: bool) -> tuple[str, ...]:
    if raw is None:
        raise _error(
            key,
            None,
            f"the list of CIDRs that may reach SSH (port 22), e.g. pulumi config set --path '{key}[0]' 203.0.113.7/32",
        )
    cidrs = parse_cidr_list(key, raw)
    if allow_public:
        return cidrs
    world = [c for c in cidrs if ipaddress.ip_network(c).prefixlen == 0]
    if world:
        raise StackConfigError(
            f"Config {key} contains {world[0]}, which opens SSH to the whole internet; allowed: "
            f"your own address ranges (e.g. 203.0.113.7/32), or set {NAMESPACE}:allowPublicSsh true "
            "to accept SSH from anywhere."
        )
    for version, covered in address_counts(cidrs).items():
        if covered > SSH_MAX_ADDRESSES[version]:
            shown = json.dumps(list(cidrs))
            shown = shown if len(shown) <= 200 else shown[:197] + "..."
            raise StackConfigError(
                f"Config {key} = {shown} opens SSH to {covered} IPv{version} addresses; allowed: ranges covering "
                f"at most a /8 of IPv4 ({SSH_MAX_ADDRESSES[4]} addresses) and a /32 of IPv6 in all (e.g. "
                f"203.0.113.7/32), or set {NAMESPACE}:allowPublicSsh true to accept SSH from that many."
            )
    return cidrs


def address_counts(cidrs: tuple[str, ...]) -> dict[int, int]:
    """IP version -> how many addresses the CIDRs cover together (overlaps merged)."""
    networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    return {
        version: sum(n.num_addresses for n in ipaddress.collapse_addresses(n for n in networks if n.version == version))
        for version in (4, 6)
    }


def parse_prefect_version(key: str, raw: str) -> str:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", raw)
    minimum = ".".join(map(str, MIN_PREFECT_VERSION))
    if not match or tuple(int(part) for part in match.groups()) < MIN_PREFECT_VERSION:
        raise _error(key, raw, f"a Prefect release X.Y.Z at or above {minimum} (older ones have known auth bugs)")
    return raw


def parse_bucket_name(key: str, raw: str) -> str:
    """S3's general purpose bucket naming rules."""
    allowed = (
        "3 to 63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit, "
        "no '..', not an IP address, none of S3's reserved prefixes (xn--, sthree-, amzn-s3-demo-) "
        "or suffixes (-s3alias, --ol-s3, .mrap, --x-s3, --table-s3)"
    )
    valid = (
        re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", raw) is not None
        and ".." not in raw
        and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", raw) is None
        and not raw.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not raw.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )
    if not valid:
        raise _error(key, raw, allowed)
    return raw


def parse_iam_group_name(key: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9+=,.@_-]{1,128}", raw):
        raise _error(key, raw, "an IAM name of 1 to 128 characters from A-Z a-z 0-9 and +=,.@_-")
    return raw


def parse_ssh_public_key(key: str, raw: str) -> str:
    """One OpenSSH public key line whose base64 blob really holds a key of the named type."""
    allowed = f"one OpenSSH public key line of type {' or '.join(SSH_KEY_TYPES)} (the contents of a .pub file)"
    parts = raw.strip().split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES or "\n" in raw.strip():
        raise _error(key, raw, allowed)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise _error(key, raw, allowed) from None
    name_length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + name_length].decode("ascii", "replace") != parts[0]:
        raise _error(key, raw, allowed)
    return raw.strip()


_DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"


def parse_domain(key: str, raw: str) -> str:
    """A DNS name that can get a public certificate, lower-cased (DNS ignores case)."""
    allowed = (
        "a DNS name you point at the static IP, e.g. prefect.example.com: two or more labels of "
        "letters, digits and inner hyphens, at most 63 characters each and 253 in all, no trailing "
        "dot, no wildcard, not an IP address (international names in their xn-- form)"
    )
    name = raw.lower()
    if len(name) > 253 or not re.fullmatch(rf"{_DNS_LABEL}(\.{_DNS_LABEL})+", name) or name.rsplit(".", 1)[1].isdigit():
        raise _error(key, raw, allowed)
    return name


def parse_acme_email(key: str, raw: str) -> str:
    if len(raw) > 254 or not re.fullmatch(r"[A-Za-z0-9.!$%&*+/=?^_|~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", raw):
        raise _error(key, raw, "an e-mail address such as ops@example.com, where the ACME CA may send expiry notices")
    return raw


def parse_acme_ca(key: str, raw: str) -> str:
    """The https URL of an ACME directory; it is exported as a plain output, so no credentials in it."""
    allowed = (
        f"the https:// URL of an ACME (RFC 8555) directory without credentials, spaces or quotes, e.g. "
        f"{LETS_ENCRYPT_DIRECTORY} (the default) or Let's Encrypt staging {LETS_ENCRYPT_STAGING_DIRECTORY}"
    )
    try:
        parts = urllib.parse.urlsplit(raw)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise _error(key, raw, allowed) from None
    if (
        parts.scheme != "https"
        or not parts.hostname
        or "@" in parts.netloc
        or parts.fragment
        or not port_ok
        or re.search(r"[\s\"'{}#`\\]", raw)
    ):
        raise _error(key, raw, allowed)
    return raw


def resolve_tls_mode(key: str, raw: str, *, domain: str | None, allow_plaintext: bool) -> str:
    """`auto` is acme with a domain and internal without; acme needs a domain; off needs the opt-in."""
    setting = parse_choice(key, raw, TLS_SETTINGS)
    if setting == "auto":
        return "acme" if domain else "internal"
    if setting == "acme" and domain is None:
        raise _error(
            key,
            raw,
            f"acme only together with {NAMESPACE}:domain (the DNS name pointing at the "
            "static IP); without a domain use internal (or auto)",
        )
    if setting == "internal" and domain is not None:
        raise _error(
            key,
            raw,
            f"internal only without {NAMESPACE}:domain (Caddy's own CA certifies the static "
            f"IP, not {domain}); with a domain use acme (or auto)",
        )
    if setting == "off" and not allow_plaintext:
        raise _error(
            key,
            raw,
            f"auto, acme or internal; off sends the API's auth string over the network in "
            f"clear text, so it needs {NAMESPACE}:allowPlaintext true as well",
        )
    return setting


def check_acme_reachable(key: str, allowed_cidrs: tuple[str, ...], acme_ca: str) -> None:
    """Let's Encrypt validates from many undisclosed addresses on the internet: with ports 80/443
    closed to the world the certificate can never be issued."""
    if acme_ca not in (LETS_ENCRYPT_DIRECTORY, LETS_ENCRYPT_STAGING_DIRECTORY):
        return
    if not any(ipaddress.ip_network(c) == ipaddress.ip_network("0.0.0.0/0") for c in allowed_cidrs):
        raise StackConfigError(
            f"Config {key} = {json.dumps(list(allowed_cidrs))} keeps ports 80 and 443 closed to Let's Encrypt, "
            f"which validates the domain from addresses all over the internet; allowed with tls acme and "
            f"Let's Encrypt: a list including 0.0.0.0/0, or use {NAMESPACE}:tls internal, or an ACME CA "
            f"({NAMESPACE}:acmeCa) that can reach the listed ranges."
        )


def parse_aws_region(key: str, raw: str | None) -> str:
    allowed = (
        "an AWS region such as eu-west-1 (pulumi config set aws:region eu-west-1); the bucket is S3 on both clouds"
    )
    if raw is None:
        raise _error(key, None, allowed)
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", raw):
        raise _error(key, raw, allowed)
    return raw


def parse_gcp_project(key: str, raw: str | None) -> str:
    allowed = "a Google Cloud project ID such as my-project-123 (6 to 30 characters of a-z, 0-9 and '-')"
    if raw is None:
        raise _error(key, None, allowed)
    if not re.fullmatch(r"([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]", raw):
        raise _error(key, raw, allowed)
    return raw


def parse_gcp_zone(key: str, raw: str | None) -> str:
    allowed = "a Compute Engine zone such as europe-west1-b"
    if raw is None:
        raise _error(key, None, allowed)
    if not re.fullmatch(r"[a-z]+-[a-z]+\d+-[a-z]", raw):
        raise _error(key, raw, allowed)
    return raw


def parse_gcp_region(key: str, raw: str | None, zone: str) -> str:
    zone_region = zone.rsplit("-", 1)[0]
    if raw is not None and raw != zone_region:
        raise _error(key, raw, f"the region of gcp:zone {zone}, i.e. {zone_region} (or leave it unset)")
    return zone_region


def parse_stack_config(
    values: Mapping[str, str], *, project: str, stack: str, secret_keys: frozenset[str] = frozenset()
) -> StackConfig:
    """Validate full-key config values ("prefect-host:cloud", "aws:region", ...) into a StackConfig."""
    prefix = f"{NAMESPACE}:"
    unknown = sorted(k for k in values if k.startswith(prefix) and k[len(prefix) :] not in KEYS)
    if unknown:
        raise _masked(
            StackConfigError(
                f"Config {unknown[0]} = {json.dumps(values[unknown[0]])} is not a setting of this project; "
                "allowed keys: " + ", ".join(prefix + k for k in KEYS) + "."
            ),
            values,
            secret_keys,
        )

    def raw(key: str, default: str | None = None) -> str | None:
        # Only an unset key takes the default; an empty string is a value (and invalid everywhere).
        value = values.get(prefix + key)
        return default if value is None else value

    def full(key: str) -> str:
        return prefix + key

    try:
        cloud = parse_choice(full("cloud"), raw("cloud", "aws"), CLOUDS)
        allow_public_ssh = parse_bool(full("allowPublicSsh"), raw("allowPublicSsh", "false"))
        allowed_cidrs, bucket_name, ssh_public_key = raw("allowedCidrs"), raw("bucketName"), raw("sshPublicKey")
        domain, acme_email, acme_ca = raw("domain"), raw("acmeEmail"), raw("acmeCa")
        fields = dict(
            cloud=cloud,
            instance_type=parse_instance_type(
                full("instanceType"), raw("instanceType", DEFAULT_INSTANCE_TYPES[cloud]), cloud
            ),
            image=parse_choice(full("image"), raw("image", IMAGES[0]), IMAGES),
            disk_size_gb=parse_disk_size(full("diskSizeGb"), raw("diskSizeGb", "20")),
            allowed_cidrs=(
                DEFAULT_ALLOWED_CIDRS if allowed_cidrs is None else parse_cidr_list(full("allowedCidrs"), allowed_cidrs)
            ),
            ssh_allowed_cidrs=parse_ssh_cidrs(
                full("sshAllowedCidrs"), raw("sshAllowedCidrs"), allow_public=allow_public_ssh
            ),
            allow_public_ssh=allow_public_ssh,
            prefect_version=parse_prefect_version(
                full("prefectVersion"), raw("prefectVersion", DEFAULT_PREFECT_VERSION)
            ),
            bucket_name=None if bucket_name is None else parse_bucket_name(full("bucketName"), bucket_name),
            iam_group_name=parse_iam_group_name(full("iamGroupName"), raw("iamGroupName", DEFAULT_IAM_GROUP)),
            s3_access=parse_choice(full("s3Access"), raw("s3Access", S3_ACCESS_LEVELS[0]), S3_ACCESS_LEVELS),
            ssh_public_key=None
            if ssh_public_key is None
            else parse_ssh_public_key(full("sshPublicKey"), ssh_public_key),
            retain_data=parse_bool(full("retainData"), raw("retainData", "true")),
            domain=None if domain is None else parse_domain(full("domain"), domain),
            allow_plaintext=parse_bool(full("allowPlaintext"), raw("allowPlaintext", "false")),
            acme_email=None if acme_email is None else parse_acme_email(full("acmeEmail"), acme_email),
            acme_ca=LETS_ENCRYPT_DIRECTORY if acme_ca is None else parse_acme_ca(full("acmeCa"), acme_ca),
            aws_region=parse_aws_region("aws:region", values.get("aws:region")),
            gcp_project=None,
            gcp_region=None,
            gcp_zone=None,
        )
        fields["tls_mode"] = resolve_tls_mode(
            full("tls"), raw("tls", "auto"), domain=fields["domain"], allow_plaintext=fields["allow_plaintext"]
        )
        if fields["tls_mode"] == "acme":
            check_acme_reachable(full("allowedCidrs"), fields["allowed_cidrs"], fields["acme_ca"])
        else:  # most often a forgotten domain
            _refuse_unused(
                {"acmeEmail": acme_email, "acmeCa": acme_ca},
                applies=f"when certificates come from ACME ({NAMESPACE}:tls acme, or auto with {NAMESPACE}:domain set)",
                here=f"tls is {fields['tls_mode']} here",
                fix=f"Set {NAMESPACE}:domain",
            )
        backup = backup_problem(raw(RETENTION), raw(SNAPSHOT_INTERVAL))
        if backup is not None:
            raise _error(*backup)
        fields.update(
            backup_retention=raw(RETENTION, BACKUP_DEFAULTS[RETENTION]),
            backup_snapshot_interval=raw(SNAPSHOT_INTERVAL, BACKUP_DEFAULTS[SNAPSHOT_INTERVAL]),
        )
        fields.update(_database_fields(raw, cloud))
        fields.update(_worker_fields(raw, cloud, fields["instance_type"], fields["disk_size_gb"]))
        if cloud == "gcp":
            zone = parse_gcp_zone("gcp:zone", values.get("gcp:zone"))
            fields.update(
                gcp_project=parse_gcp_project("gcp:project", values.get("gcp:project")),
                gcp_zone=zone,
                gcp_region=parse_gcp_region("gcp:region", values.get("gcp:region"), zone),
            )
    except StackConfigError as error:
        raise _masked(error, values, secret_keys) from None
    return StackConfig(project=project, stack=stack, **fields)


def _refuse_unused(settings: dict[str, str | None], *, applies: str, here: str, fix: str) -> None:
    """Settings that are set but unused here are refused: left silently unused, they would hide a mistake."""
    for name, value in settings.items():
        if value is not None:
            raise StackConfigError(
                f"Config {NAMESPACE}:{name} = {json.dumps(value)} only applies {applies}; {here}. {fix}, or remove "
                f"{NAMESPACE}:{name}."
            )


def _database_fields(raw: Callable[..., str | None], cloud: str) -> dict[str, object]:
    """database, dbInstanceClass, dbBackupRetentionDays and apiWorkers; the database settings only with postgres."""
    key = f"{NAMESPACE}:database"
    database = parse_choice(key, raw("database", DATABASES[0]), DATABASES)
    instance_class, retention_days = raw("dbInstanceClass"), raw("dbBackupRetentionDays")
    api_workers = parse_api_workers(
        f"{NAMESPACE}:apiWorkers", raw("apiWorkers", str(DEFAULT_API_WORKERS[database])), database
    )
    if database == "sqlite":  # most often a forgotten `database: postgres`
        _refuse_unused(
            {"dbInstanceClass": instance_class, "dbBackupRetentionDays": retention_days},
            applies=f"with {key} postgres (the managed PostgreSQL database)",
            here="database is sqlite here",
            fix=f"Set {key} postgres",
        )
        return dict(database=database, db_instance_class=None, db_backup_retention_days=None, api_workers=api_workers)
    return dict(
        database=database,
        db_instance_class=parse_db_instance_class(
            f"{NAMESPACE}:dbInstanceClass",
            DEFAULT_DB_INSTANCE_CLASSES[cloud] if instance_class is None else instance_class,
            cloud,
        ),
        db_backup_retention_days=parse_db_backup_retention_days(
            f"{NAMESPACE}:dbBackupRetentionDays",
            str(DEFAULT_DB_BACKUP_RETENTION_DAYS) if retention_days is None else retention_days,
        ),
        api_workers=api_workers,
    )


def _worker_fields(
    raw: Callable[..., str | None], cloud: str, instance_type: str, disk_size_gb: int
) -> dict[str, object]:
    """workerHosts, workerInstanceType and workerDiskSizeGb; the last two default to the server VM's settings and
    apply only with one worker VM or more."""
    key = f"{NAMESPACE}:workerHosts"
    count = parse_worker_hosts(key, raw("workerHosts", "0"))
    worker_type, worker_disk = raw("workerInstanceType"), raw("workerDiskSizeGb")
    if count == 0:  # most often a forgotten workerHosts
        _refuse_unused(
            {"workerInstanceType": worker_type, "workerDiskSizeGb": worker_disk},
            applies=f"with {key} 1 or more (the worker VMs)",
            here="workerHosts is 0 here",
            fix=f"Set {key}",
        )
    return dict(
        worker_hosts=count,
        worker_instance_type=instance_type
        if worker_type is None
        else parse_instance_type(f"{NAMESPACE}:workerInstanceType", worker_type, cloud),
        worker_disk_size_gb=disk_size_gb
        if worker_disk is None
        else parse_disk_size(f"{NAMESPACE}:workerDiskSizeGb", worker_disk),
    )


def _masked(error: StackConfigError, values: Mapping[str, str], secret_keys: frozenset[str]) -> StackConfigError:
    """A value set with `pulumi config set --secret` never appears in an error message."""
    message = str(error)
    for key in secret_keys:
        value = values.get(key)
        if value:
            message = message.replace(json.dumps(value), "[secret]").replace(value, "[secret]")
    return StackConfigError(message)


def load_stack_config() -> StackConfig:
    """Read the stack's configuration as the language host passes it, and validate it."""
    all_keys = set(CONFIG.get()) | set(get_config_env())
    relevant = {k for k in all_keys if k.startswith(f"{NAMESPACE}:")} | set(PROVIDER_KEYS)
    values: dict[str, str] = {}
    for key in relevant:
        namespace, name = key.split(":", 1)
        value = pulumi.Config(namespace).get(name)
        if value is not None:
            values[key] = value
    secret_keys = frozenset(k for k in values if pulumi.runtime.is_config_secret(k))
    return parse_stack_config(values, project=pulumi.get_project(), stack=pulumi.get_stack(), secret_keys=secret_keys)
