"""The AWS graph, whole: every resource, every ingress rule and nothing else, the hardened instance."""

from collections import Counter

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from infra_test_configs import AWS, SSH_FROM, STORAGE_ACCESS_AND_CREDENTIALS

PREFECT_PORTS = [("tcp", 80), ("tcp", 443), ("tcp", 4200), ("udp", 4200)]
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"


def ingress(run) -> set[tuple]:
    """(protocol, from, to, CIDR) of every ingress rule, each bound to the one security group."""
    group = run.one("aws:ec2/securityGroup:SecurityGroup")
    rules = run.of_type(INGRESS)
    assert all(r.inputs["securityGroupId"] == group.id for r in rules)
    found = [
        (
            r.inputs["ipProtocol"],
            r.inputs["fromPort"],
            r.inputs["toPort"],
            r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6"),
        )
        for r in rules
    ]
    assert all(("cidrIpv4" in r.inputs) != ("cidrIpv6" in r.inputs) for r in rules)
    assert len(found) == len(set(found))
    return set(found)


def expected_ingress(allowed, ssh) -> set[tuple]:
    return {(p, port, port, cidr) for p, port in PREFECT_PORTS for cidr in allowed} | {
        ("tcp", 22, 22, cidr) for cidr in ssh
    }


def public_key_of(private_openssh: str) -> str:
    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_default_graph_has_exactly_these_resources(program):
    run = program(AWS)
    assert Counter(r.type for r in run.resources) == Counter(
        {
            "prefect-host:host_keys:HostKeys": 1,
            "tls:index/privateKey:PrivateKey": 2,
            "prefect-host:aws_host:AwsHost": 1,
            "aws:ec2/securityGroup:SecurityGroup": 1,
            INGRESS: 5,
            EGRESS: 2,
            "aws:ec2/keyPair:KeyPair": 1,
            "aws:ec2/instance:Instance": 1,
            "aws:ec2/eip:Eip": 1,
            **STORAGE_ACCESS_AND_CREDENTIALS,
        }
    )


def test_default_rules_open_the_prefect_ports_to_the_world_and_ssh_only_to_the_given_range(program):
    run = program(AWS)
    assert ingress(run) == expected_ingress(["0.0.0.0/0"], [SSH_FROM])
    group = run.one("aws:ec2/securityGroup:SecurityGroup")
    # No inline rules that would bypass the standalone ones.
    assert "ingress" not in group.inputs and "egress" not in group.inputs
    assert {
        (r.inputs["ipProtocol"], r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6")) for r in run.of_type(EGRESS)
    } == {("-1", "0.0.0.0/0"), ("-1", "::/0")}


@pytest.mark.parametrize(
    "allowed, ssh",
    [
        (["198.51.100.0/24", "2001:db8::/32"], ["203.0.113.7/32", "2001:db8:1::/48"]),
        (["192.0.2.0/24"], ["192.0.2.10/32", "198.51.100.0/24"]),
    ],
)
def test_custom_ranges_ipv4_and_ipv6_give_one_rule_per_port_protocol_and_cidr(program, allowed, ssh):
    run = program({**AWS, "prefect-host:allowedCidrs": allowed, "prefect-host:sshAllowedCidrs": ssh})
    assert ingress(run) == expected_ingress(allowed, ssh)
    v6 = [r for r in run.of_type(INGRESS) if ":" in (r.inputs.get("cidrIpv6") or "")]
    assert all("cidrIpv4" not in r.inputs for r in v6)
    assert len(v6) == 4 * sum(":" in c for c in allowed) + sum(":" in c for c in ssh)


def test_ssh_is_public_only_with_the_opt_in(program):
    run = program({**AWS, "prefect-host:sshAllowedCidrs": ["0.0.0.0/0", "::/0"], "prefect-host:allowPublicSsh": True})
    assert {r for r in ingress(run) if r[1] == 22} == {("tcp", 22, 22, "0.0.0.0/0"), ("tcp", 22, 22, "::/0")}
    for config in (AWS, {**AWS, "prefect-host:allowedCidrs": ["0.0.0.0/0", "::/0"]}):
        assert not [r for r in ingress(program(config)) if r[1] == 22 and r[3] in ("0.0.0.0/0", "::/0")]


def test_instance_is_hardened_and_wired(program):
    run = program(AWS)
    instance = run.one("aws:ec2/instance:Instance")
    i = instance.inputs
    assert i["instanceType"] == "t3.small"
    assert i["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1}
    assert i["rootBlockDevice"] == {
        "volumeType": "gp3",
        "volumeSize": 20,
        "encrypted": True,
        "deleteOnTermination": True,
    }
    assert i["vpcSecurityGroupIds"] == [run.one("aws:ec2/securityGroup:SecurityGroup").id]
    assert i["keyName"] == run.one("aws:ec2/keyPair:KeyPair").outputs["keyName"]
    assert instance.ignore_changes == ("ami",)
    # A newer AMI must not replace the server; the AMI is the lookup's answer.
    ami_lookup = [v for v in run.invokes if v.token == "aws:ec2/getAmi:getAmi"]
    assert len(ami_lookup) == 1 and i["ami"].startswith("ami-")
    eip = run.one("aws:ec2/eip:Eip")
    assert eip.inputs["instance"] == instance.id and eip.inputs["domain"] == "vpc"
    ip = eip.outputs["publicIp"]
    assert run.outputs["publicIp"] == ip
    assert run.outputs["apiUrl"] == f"https://{ip}/api" and run.outputs["uiUrl"] == f"https://{ip}"


def test_metadata_service_answers_one_hop_only_and_only_with_a_token(program):
    """The user data holds the host's private key: IMDSv2 (a PUT for a token first) with a hop limit
    of 1, so the token's answer never reaches a container behind a bridge or NAT on the VM; the IPv6
    endpoint (fd00:ec2::254) is left at AWS's default, off. The names are the installed SDK's own
    (a misspelt key of a typed dict would be dropped, not refused)."""
    from pulumi_aws.ec2 import InstanceMetadataOptionsArgsDict

    assert {"http_tokens", "http_put_response_hop_limit", "http_protocol_ipv6"} <= set(
        InstanceMetadataOptionsArgsDict.__annotations__
    )
    options = program(AWS).one("aws:ec2/instance:Instance").inputs["metadataOptions"]
    assert options["httpPutResponseHopLimit"] == 1 and options["httpTokens"] == "required"
    assert "httpProtocolIpv6" not in options


def test_user_data_pins_the_host_key_and_is_secret(program):
    run = program(AWS)
    instance = run.one("aws:ec2/instance:Instance")
    assert "userData" in instance.secret_inputs
    user_data = instance.inputs["userData"]
    assert user_data.startswith("#cloud-config\n")
    cloud_config = yaml.safe_load(user_data)
    assert cloud_config["ssh_deletekeys"] is True
    keys = cloud_config["ssh_keys"]
    assert set(keys) == {"ed25519_private", "ed25519_public"}
    assert keys["ed25519_public"] == run.outputs["hostPublicKey"]
    assert public_key_of(keys["ed25519_private"]) == run.outputs["hostPublicKey"]
    assert run.outputs["hostPublicKey"].startswith("ssh-ed25519 ") and "\n" not in run.outputs["hostPublicKey"]


def test_login_key_is_generated_unless_given(program):
    run = program(AWS)
    operator_public = public_key_of(run.outputs["sshPrivateKey"])
    assert run.one("aws:ec2/keyPair:KeyPair").inputs["publicKey"] == operator_public
    assert operator_public != run.outputs["hostPublicKey"]

    given = "ssh-ed25519 " + operator_public.split()[1] + " alice@laptop"
    run = program({**AWS, "prefect-host:sshPublicKey": given})
    assert run.one("aws:ec2/keyPair:KeyPair").inputs["publicKey"] == given
    assert [r.name for r in run.of_type("tls:index/privateKey:PrivateKey")] == ["prefect-host-dev-host-key"]
    assert "sshPrivateKey" not in run.outputs


@pytest.mark.parametrize(
    "image, instance_type, arch, debian_arch",
    [
        ("debian-13", "t3.small", "x86_64", "amd64"),
        ("debian-12", "t4g.small", "arm64", "arm64"),
        ("debian-12", "m7gd.large", "arm64", "arm64"),
        ("debian-13", "c5.xlarge", "x86_64", "amd64"),
    ],
)
def test_ami_is_debian_official_for_the_image_and_the_instance_architecture(
    program, image, instance_type, arch, debian_arch
):
    run = program(
        {**AWS, "prefect-host:image": image, "prefect-host:instanceType": instance_type, "prefect-host:diskSizeGb": 64}
    )
    [type_lookup] = [v for v in run.invokes if v.token == "aws:ec2/getInstanceType:getInstanceType"]
    assert type_lookup.args["instanceType"] == instance_type
    [ami_lookup] = [v for v in run.invokes if v.token == "aws:ec2/getAmi:getAmi"]
    assert ami_lookup.args["owners"] == ["136693071363"] and ami_lookup.args["mostRecent"] is True
    filters = {f["name"]: f["values"] for f in ami_lookup.args["filters"]}
    assert filters == {
        "name": [f"{image}-{debian_arch}-*"],
        "architecture": [arch],
        "virtualization-type": ["hvm"],
        "root-device-type": ["ebs"],
    }
    instance = run.one("aws:ec2/instance:Instance")
    assert instance.inputs["instanceType"] == instance_type
    assert instance.inputs["rootBlockDevice"]["volumeSize"] == 64
    assert run.one("prefect-host:aws_host:AwsHost").outputs["amiName"].startswith(f"{image}-{debian_arch}-")


def test_names_derive_from_the_stack(program):
    run = program(AWS, stack="staging")
    assert {r.name.split("-staging")[0] for r in run.resources} == {"prefect-host"}
    instance = run.one("aws:ec2/instance:Instance")
    assert instance.inputs["tags"]["Name"] == "prefect-host-staging"
    assert run.outputs["iamUserName"] == "prefect-host-staging"
    assert run.outputs["bucketName"].startswith("prefect-host-staging-")
