"""Mock providers that answer like aws, gcp, tls and random do, deterministically.

Every value derives from a hash of the resource's type and name, so two runs of the same config
give the same graph. Addresses come from the documentation ranges (198.51.100.0/24 for AWS,
192.0.2.0/24 for GCP), account ids are AWS's documentation account 123456789012.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import string
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks

ACCOUNT_ID = "123456789012"
# Properties the real providers fill with `<logical name>-<7 hex>` when the program gives none.
AUTO_NAMED = {
    "aws:ec2/securityGroup:SecurityGroup": "name",
    "aws:ec2/keyPair:KeyPair": "keyName",
    "aws:s3/bucket:Bucket": "bucket",
    "aws:iam/group:Group": "name",
    "aws:iam/user:User": "name",
    "aws:iam/groupPolicy:GroupPolicy": "name",
    "gcp:compute/network:Network": "name",
    "gcp:compute/subnetwork:Subnetwork": "name",
    "gcp:compute/firewall:Firewall": "name",
    "gcp:compute/address:Address": "name",
    "gcp:compute/instance:Instance": "name",
    "aws:rds/instance:Instance": "identifier",
    "aws:rds/parameterGroup:ParameterGroup": "name",
    "aws:rds/subnetGroup:SubnetGroup": "name",
    "gcp:compute/globalAddress:GlobalAddress": "name",
    "gcp:sql/databaseInstance:DatabaseInstance": "name",
}
# EC2 families built on Graviton: a "g" after the generation digit (t4g, m7gd, c7gn, x2gd, im4gn), or a1.
ARM_EC2_FAMILY = re.compile(r"a1|[a-z]+\d+[a-z]*g[a-z]*")
# vCPUs by EC2 size as in the current families (t3, t4g, m7i, c7g, ...): up to large 2, xlarge 4, Nxlarge 4N. EC2's
# exceptions that matter here: t2's nano to small have 1, and so do Graviton's non-burstable mediums (m6g.medium).
EC2_SIZE_VCPUS = {"nano": 2, "micro": 2, "small": 2, "medium": 2, "large": 2, "xlarge": 4, "metal": 64}
# Compute Engine's shared-core machine types; the others name their vCPUs (e2-standard-4, n2-custom-6-16384).
GCE_SHARED_CORE_VCPUS = {"e2-micro": 2, "e2-small": 2, "e2-medium": 2, "f1-micro": 1, "g1-small": 1}


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


class ProviderMocks(Mocks):
    def __init__(self, config: dict[str, str], *, project: str, stack: str):
        self.config = config
        self.project = project
        self.stack = stack

    # -- helpers ---------------------------------------------------------------------------
    def _digest(self, *parts: str) -> bytes:
        return hashlib.sha256("\0".join((self.project, self.stack, *parts)).encode()).digest()

    def _hex(self, length: int, *parts: str) -> str:
        return self._digest(*parts).hex()[:length]

    def _octet(self, *parts: str) -> int:
        return 1 + self._digest(*parts)[0] % 254

    @property
    def aws_region(self) -> str:
        return self.config.get("aws:region", "us-east-1")

    @property
    def aws_partition(self) -> str:
        return partition_of(self.aws_region)

    def _arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.aws_partition}:{service}:{self.aws_region if region else ''}:"
            f"{ACCOUNT_ID if account else ''}:{resource}"
        )

    # -- resources -------------------------------------------------------------------------
    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict]:
        if not args.custom:
            return "", {}
        state = dict(args.inputs)
        auto_named = AUTO_NAMED.get(args.typ)
        if auto_named and auto_named not in state:
            state[auto_named] = f"{args.name}-{self._hex(7, args.typ, args.name)}"
        handler = RESOURCE_HANDLERS.get(args.typ)
        if handler is None:
            return f"{args.name}-{self._hex(8, args.typ, args.name)}", state
        resource_id, computed = handler(self, args, state)
        state.update(computed)
        return resource_id, state

    # -- invokes ---------------------------------------------------------------------------
    def call(self, args: MockCallArgs) -> tuple[dict, list]:
        handler = CALL_HANDLERS.get(args.token)
        if handler is None:
            raise NotImplementedError(f"mockstack has no answer for the invoke {args.token}")
        return handler(self, args.args), []


# --- resource handlers: (mocks, args, state with inputs) -> (id, computed outputs) ----------------


@functools.cache
def _openssh_private_key(seed: bytes) -> str:
    """Cached: the OpenSSH format holds a random check number, and a run must see one text per key."""
    return (
        Ed25519PrivateKey.from_private_bytes(seed)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )


def _tls_private_key(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    if state.get("algorithm") != "ED25519":
        raise NotImplementedError("mockstack's tls provider makes ED25519 keys only")
    seed = m._digest("tls", args.name)
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key()
    public_openssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    blob = base64.b64decode(public_openssh.split()[1])
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return m._hex(40, "tls-id", args.name), {
        "privateKeyOpenssh": _openssh_private_key(seed),
        "privateKeyPem": pkcs8,
        "privateKeyPemPkcs8": pkcs8,
        # Like the tls provider: the OpenSSH line ends with a newline.
        "publicKeyOpenssh": public_openssh + "\n",
        "publicKeyPem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "publicKeyFingerprintSha256": "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("="),
        "publicKeyFingerprintMd5": ":".join(f"{b:02x}" for b in hashlib.md5(blob).digest()),
    }


def _random_id(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    raw = m._digest("random-id", args.name)[: int(state["byteLength"])]
    b64_url = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return b64_url, {
        "hex": raw.hex(),
        "b64Std": base64.b64encode(raw).decode(),
        "b64Url": b64_url,
        "dec": str(int.from_bytes(raw, "big")),
    }


def _random_password(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    alphabet = ""
    if state.get("upper", True):
        alphabet += string.ascii_uppercase
    if state.get("lower", True):
        alphabet += string.ascii_lowercase
    if state.get("numeric", state.get("number", True)):
        alphabet += string.digits
    if state.get("special", True):
        alphabet += state.get("overrideSpecial", "!@#$%&*()-_=+[]{}<>:?")
    stream = b"".join(m._digest("password", args.name, str(i)) for i in range(4))
    result = "".join(alphabet[b % len(alphabet)] for b in stream[: int(state["length"])])
    return "none", {"result": result, "bcryptHash": "$2a$10$" + m._hex(53, "bcrypt", args.name)}


def _security_group(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    group_id = "sg-" + m._hex(17, args.typ, args.name)
    return group_id, {
        "arn": m._arn("ec2", f"security-group/{group_id}"),
        "ownerId": ACCOUNT_ID,
        "vpcId": "vpc-" + m._hex(17, "default-vpc"),
    }


def _security_group_rule(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    rule_id = "sgr-" + m._hex(17, args.typ, args.name)
    return rule_id, {"arn": m._arn("ec2", f"security-group-rule/{rule_id}"), "securityGroupRuleId": rule_id}


def _key_pair(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    return state["keyName"], {
        "arn": m._arn("ec2", f"key-pair/{state['keyName']}"),
        "keyPairId": "key-" + m._hex(17, args.typ, args.name),
        "fingerprint": m._hex(64, "fingerprint", args.name),
    }


def _instance(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    instance_id = "i-" + m._hex(17, args.typ, args.name)
    return instance_id, {
        "arn": m._arn("ec2", f"instance/{instance_id}"),
        "instanceState": "running",
        "privateIp": f"172.31.{m._octet('subnet', args.name)}.{m._octet('host', args.name)}",
        "publicIp": f"198.51.100.{m._octet('ephemeral-ip', args.name)}",
        "availabilityZone": f"{m.aws_region}a",
    }


def _eip(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    allocation_id = "eipalloc-" + m._hex(17, args.typ, args.name)
    public_ip = f"198.51.100.{m._octet('eip', args.name)}"
    return allocation_id, {
        "allocationId": allocation_id,
        "publicIp": public_ip,
        "publicDns": f"ec2-{public_ip.replace('.', '-')}.compute.amazonaws.com",
        "arn": m._arn("ec2", f"elastic-ip/{allocation_id}"),
    }


def _bucket(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    name = state["bucket"]
    return name, {
        "arn": f"arn:{m.aws_partition}:s3:::{name}",
        "bucketRegion": m.aws_region,
        "region": m.aws_region,
        "bucketDomainName": f"{name}.s3.amazonaws.com",
        "hostedZoneId": "Z" + m._hex(13, "zone").upper(),
    }


def _bucket_setting(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    return state["bucket"], {}


def _iam_named(kind: str, id_prefix: str) -> Callable:
    def handler(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
        return state["name"], {
            "arn": m._arn("iam", f"{kind}/{state['name']}", region=False),
            "uniqueId": id_prefix + m._hex(17, args.typ, args.name).upper(),
        }

    return handler


def _group_policy(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    return f"{state['group']}:{state['name']}", {}


def _group_policy_attachment(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    return f"{state['group']}-{m._hex(26, args.typ, args.name)}", {}


def _access_key(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    key_id = "AKIA" + base64.b32encode(m._digest("access-key", args.name)).decode()[:16]
    secret = base64.b64encode(m._digest("secret-key", args.name)).decode()[:40]
    return key_id, {"secret": secret, "status": "Active", "createDate": "2025-01-01T00:00:00Z"}


def _rds_instance(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    identifier = state["identifier"]
    address = f"{identifier}.c{m._hex(12, 'rds-zone')}.{m.aws_region}.rds.amazonaws.com"
    port = int(state.get("port", 5432))
    return identifier, {
        "address": address,
        "endpoint": f"{address}:{port}",
        "port": port,
        "arn": m._arn("rds", f"db:{identifier}"),
        "resourceId": "db-" + m._hex(26, args.typ, args.name).upper(),
        "engineVersionActual": f"{state.get('engineVersion', '17')}.5",
        "status": "available",
    }


def _rds_named(kind: str) -> Callable:
    def handler(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
        computed = {"arn": m._arn("rds", f"{kind}:{state['name']}")}
        if kind == "subgrp":
            computed["vpcId"] = "vpc-" + m._hex(17, "default-vpc")
        return state["name"], computed

    return handler


def _peering_range_octet(m: ProviderMocks) -> int:
    """The second octet of the stack's private services access range, which Cloud SQL's private IP is in."""
    return 100 + m._octet("peering-range") % 100


def _global_address(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    resource_id, computed = _gcp("addresses", "global")(m, args, state)
    computed["address"] = f"10.{_peering_range_octet(m)}.0.0"
    return resource_id, computed


def _sql_instance(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
    project = m.config.get("gcp:project", "mock-project")
    region = state.get("region") or m.config.get("gcp:region")
    private_ip = f"10.{_peering_range_octet(m)}.0.3"
    return state["name"], {
        "project": project,
        "connectionName": f"{project}:{region}:{state['name']}",
        "privateIpAddress": private_ip,
        "ipAddresses": [{"ipAddress": private_ip, "type": "PRIVATE"}],
        "selfLink": f"https://sqladmin.googleapis.com/sql/v1beta4/projects/{project}/instances/{state['name']}",
        "serviceAccountEmailAddress": f"p{m._hex(12, 'sa')}@gcp-sa-cloud-sql.iam.gserviceaccount.com",
    }


def _gcp(collection: str, scope: str) -> Callable:
    def handler(m: ProviderMocks, args: MockResourceArgs, state: dict) -> tuple[str, dict]:
        project = m.config.get("gcp:project", "mock-project")
        location = {
            "global": "global",
            "region": f"regions/{state.get('region') or m.config.get('gcp:region')}",
            "zone": f"zones/{state.get('zone') or m.config.get('gcp:zone')}",
        }[scope]
        resource_id = f"projects/{project}/{location}/{collection}/{state['name']}"
        computed: dict[str, Any] = {
            "selfLink": f"https://www.googleapis.com/compute/v1/{resource_id}",
            "project": project,
        }
        if collection == "addresses":
            computed["address"] = f"192.0.2.{m._octet('address', args.name)}"
        if collection == "instances":
            computed["instanceId"] = str(int.from_bytes(m._digest(args.typ, args.name)[:8], "big"))
            computed["currentStatus"] = "RUNNING"
        return resource_id, computed

    return handler


RESOURCE_HANDLERS: dict[str, Callable[[ProviderMocks, MockResourceArgs, dict], tuple[str, dict]]] = {
    "tls:index/privateKey:PrivateKey": _tls_private_key,
    "random:index/randomId:RandomId": _random_id,
    "random:index/randomPassword:RandomPassword": _random_password,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _security_group_rule,
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _security_group_rule,
    "aws:ec2/keyPair:KeyPair": _key_pair,
    "aws:ec2/instance:Instance": _instance,
    "aws:ec2/eip:Eip": _eip,
    "aws:s3/bucket:Bucket": _bucket,
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": _bucket_setting,
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": _bucket_setting,
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": _bucket_setting,
    "aws:s3/bucketVersioning:BucketVersioning": _bucket_setting,
    "aws:s3/bucketPolicy:BucketPolicy": _bucket_setting,
    "aws:iam/group:Group": _iam_named("group", "AGPA"),
    "aws:iam/user:User": _iam_named("user", "AIDA"),
    "aws:iam/groupPolicy:GroupPolicy": _group_policy,
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment": _group_policy_attachment,
    "aws:iam/accessKey:AccessKey": _access_key,
    "gcp:compute/network:Network": _gcp("networks", "global"),
    "gcp:compute/subnetwork:Subnetwork": _gcp("subnetworks", "region"),
    "gcp:compute/firewall:Firewall": _gcp("firewalls", "global"),
    "gcp:compute/address:Address": _gcp("addresses", "region"),
    "gcp:compute/instance:Instance": _gcp("instances", "zone"),
    "aws:rds/instance:Instance": _rds_instance,
    "aws:rds/parameterGroup:ParameterGroup": _rds_named("pg"),
    "aws:rds/subnetGroup:SubnetGroup": _rds_named("subgrp"),
    "gcp:compute/globalAddress:GlobalAddress": _global_address,
    "gcp:sql/databaseInstance:DatabaseInstance": _sql_instance,
}


# --- invoke handlers: (mocks, args) -> result --------------------------------------------------


def _get_instance_type(m: ProviderMocks, args: dict) -> dict:
    instance_type = args.get("instanceType", "")
    if not re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9]+", instance_type):
        raise ValueError(f"reading EC2 Instance Type ({instance_type}): couldn't find resource")
    family = instance_type.split(".", 1)[0]
    if family.startswith("mac"):
        architectures = ["arm64_mac"] if family.startswith("mac2") else ["x86_64_mac"]
    elif ARM_EC2_FAMILY.fullmatch(family):
        architectures = ["arm64"]
    else:
        architectures = ["i386", "x86_64"] if family in ("t2", "t3", "c5") else ["x86_64"]
    return {
        "id": instance_type,
        "instanceType": instance_type,
        "supportedArchitectures": architectures,
        "defaultVcpus": _ec2_vcpus(instance_type),
    }


def _ec2_vcpus(instance_type: str) -> int:
    family, size = instance_type.split(".", 1)
    if (family == "t2" and size in ("nano", "micro", "small")) or (
        size == "medium" and ARM_EC2_FAMILY.fullmatch(family) and not family.startswith("t")
    ):
        return 1
    multiple = re.fullmatch(r"(\d+)xlarge", size)
    return 4 * int(multiple.group(1)) if multiple else EC2_SIZE_VCPUS.get(size, 2)


def _gce_vcpus(machine_type: str) -> int | None:
    if machine_type in GCE_SHARED_CORE_VCPUS:
        return GCE_SHARED_CORE_VCPUS[machine_type]
    custom = re.fullmatch(r"(?:[a-z0-9]+-)?custom-(\d+)-\d+(?:-ext)?", machine_type)
    named = re.fullmatch(r"[a-z0-9]+-[a-z]+-(\d+)(?:-[a-z]+)?", machine_type)
    found = custom or named
    return int(found.group(1)) if found else None


def _get_subnets(m: ProviderMocks, args: dict) -> dict:
    filters = args.get("filters", [])
    [vpc] = [f["values"][0] for f in filters if f["name"] == "vpc-id"]
    return {
        "id": m.aws_region,
        "ids": [f"subnet-{m._hex(17, 'subnet', vpc, zone)}" for zone in "abc"],
        "filters": filters,
    }


def _get_machine_types(m: ProviderMocks, args: dict) -> dict:
    match = re.fullmatch(r'name = "([^"]+)"', args.get("filter", ""))
    if not match or not args.get("zone"):
        raise ValueError('mockstack answers machine type lookups by zone and the filter name = "<type>" only')
    name, zone = match.group(1), args["zone"]
    vcpus = _gce_vcpus(name)
    project = m.config.get("gcp:project", "mock-project")
    if vcpus is None:  # not a machine type: Compute Engine lists none
        return {"id": f"projects/{project}/zones/{zone}", "filter": args["filter"], "zone": zone, "machineTypes": []}
    found = [
        {
            "name": name,
            "guestCpus": vcpus,
            "isSharedCpus": name in GCE_SHARED_CORE_VCPUS,
            "memoryMb": 1024 * max(vcpus, 1) * 4,
            "architecture": "ARM64" if name.split("-", 1)[0] in ("t2a", "c4a") else "X86_64",
            "description": f"{vcpus} vCPUs",
            "maximumPersistentDisks": 128,
            "maximumPersistentDisksSizeGb": 263168,
            "selfLink": f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/machineTypes/{name}",
            "accelerators": [],
            "bundledLocalSsds": [],
            "deprecateds": [],
        }
    ]
    return {"id": f"projects/{project}/zones/{zone}", "filter": args["filter"], "zone": zone, "machineTypes": found}


def _get_ami(m: ProviderMocks, args: dict) -> dict:
    filters = {f["name"]: f["values"] for f in args.get("filters", [])}
    if not args.get("owners") or "name" not in filters:
        raise ValueError("mockstack answers AMI lookups by owner and name filter only")
    name = filters["name"][0].replace("*", "20250801-2204")
    return {
        "id": "ami-" + m._hex(17, "ami", name),
        "imageId": "ami-" + m._hex(17, "ami", name),
        "name": name,
        "architecture": filters.get("architecture", ["x86_64"])[0],
        "ownerId": args["owners"][0],
        "rootDeviceType": "ebs",
        "virtualizationType": "hvm",
        "mostRecent": bool(args.get("mostRecent")),
        "owners": args["owners"],
        "imageOwnerAlias": "",
        "public": True,
        "state": "available",
    }


def _get_partition(m: ProviderMocks, args: dict) -> dict:
    partition = m.aws_partition
    return {
        "id": partition,
        "partition": partition,
        "dnsSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com",
        "reverseDnsPrefix": "cn.com.amazonaws" if partition == "aws-cn" else "com.amazonaws",
    }


CALL_HANDLERS: dict[str, Callable[[ProviderMocks, dict], dict]] = {
    "aws:ec2/getInstanceType:getInstanceType": _get_instance_type,
    "aws:ec2/getAmi:getAmi": _get_ami,
    "aws:index/getPartition:getPartition": _get_partition,
    "aws:ec2/getSubnets:getSubnets": _get_subnets,
    "gcp:compute/getMachineTypes:getMachineTypes": _get_machine_types,
}
