"""The GCP graph, whole: own network, every firewall rule and nothing else, the hardened instance."""

import subprocess
from collections import Counter

import pytest
from cryptography.hazmat.primitives import serialization

from infra_test_configs import GCP, SSH_FROM, STORAGE_ACCESS_AND_CREDENTIALS

FIREWALL = "gcp:compute/firewall:Firewall"
PREFECT_PORTS = [("tcp", 80), ("tcp", 443), ("tcp", 4200), ("udp", 4200)]


def firewall_rules(run) -> set[tuple]:
    """(protocol, port, CIDR) for every source range of every rule; each rule targets the VM's tag only."""
    network = run.one("gcp:compute/network:Network")
    instance = run.one("gcp:compute/instance:Instance")
    found = []
    for rule in run.of_type(FIREWALL):
        i = rule.inputs
        assert i["network"] == network.id and i["direction"] == "INGRESS"
        assert i["targetTags"] == instance.inputs["tags"] == ["prefect-host-dev"]
        assert "denies" not in i and "sourceTags" not in i
        assert len({":" in cidr for cidr in i["sourceRanges"]}) == 1  # one address family per rule
        for allow in i["allows"]:
            found += [(allow["protocol"], int(port), cidr) for port in allow["ports"] for cidr in i["sourceRanges"]]
    assert len(found) == len(set(found))
    return set(found)


def expected_rules(allowed, ssh) -> set[tuple]:
    return {(p, port, cidr) for p, port in PREFECT_PORTS for cidr in allowed} | {("tcp", 22, cidr) for cidr in ssh}


def test_default_graph_has_exactly_these_resources(program):
    run = program(GCP)
    assert Counter(r.type for r in run.resources) == Counter(
        {
            "prefect-host:host_keys:HostKeys": 1,
            "tls:index/privateKey:PrivateKey": 2,
            "prefect-host:gcp_host:GcpHost": 1,
            "gcp:compute/network:Network": 1,
            "gcp:compute/subnetwork:Subnetwork": 1,
            FIREWALL: 5,
            "gcp:compute/address:Address": 1,
            "gcp:compute/instance:Instance": 1,
            **STORAGE_ACCESS_AND_CREDENTIALS,
        }
    )
    # No AWS lookups on GCP: the image is a debian-cloud family.
    assert [v.token for v in run.invokes] == []


def test_default_rules(program):
    run = program(GCP)
    assert firewall_rules(run) == expected_rules(["0.0.0.0/0"], [SSH_FROM])
    # The VM has a network of its own: the project's `default` network allows SSH from anywhere.
    network = run.one("gcp:compute/network:Network")
    assert network.inputs["autoCreateSubnetworks"] is False
    subnet = run.one("gcp:compute/subnetwork:Subnetwork")
    assert subnet.inputs["network"] == network.id and subnet.inputs["region"] == "europe-west1"


def test_custom_ranges_with_ipv6_and_public_ssh_opt_in(program):
    allowed, ssh = ["198.51.100.0/24", "2001:db8::/32"], ["203.0.113.7/32", "::/0"]
    run = program(
        {
            **GCP,
            "prefect-host:allowedCidrs": allowed,
            "prefect-host:sshAllowedCidrs": ssh,
            "prefect-host:allowPublicSsh": True,
        }
    )
    assert firewall_rules(run) == expected_rules(allowed, ssh)
    assert len(run.of_type(FIREWALL)) == 10  # 5 port/protocol pairs x 2 address families


def test_instance_is_hardened_and_wired(program):
    run = program(GCP)
    instance = run.one("gcp:compute/instance:Instance")
    i = instance.inputs
    assert (i["machineType"], i["zone"]) == ("e2-small", "europe-west1-b")
    assert i["shieldedInstanceConfig"] == {
        "enableSecureBoot": True,
        "enableVtpm": True,
        "enableIntegrityMonitoring": True,
    }
    assert i["bootDisk"] == {
        "autoDelete": True,
        "initializeParams": {
            "image": "projects/debian-cloud/global/images/family/debian-13-trixie",
            "size": 20,
            "type": "pd-balanced",
        },
    }
    address = run.one("gcp:compute/address:Address")
    assert address.inputs["region"] == "europe-west1" and address.inputs["addressType"] == "EXTERNAL"
    assert i["networkInterfaces"] == [
        {
            "subnetwork": run.one("gcp:compute/subnetwork:Subnetwork").id,
            "accessConfigs": [{"natIp": address.outputs["address"], "networkTier": "PREMIUM"}],
        }
    ]
    # No service account: the VM holds no Google credentials.
    assert "serviceAccount" not in i
    ip = address.outputs["address"]
    assert run.outputs["publicIp"] == ip and run.outputs["apiUrl"] == f"https://{ip}/api"


def test_metadata_blocks_project_keys_disables_the_serial_port_and_pins_the_host_key(program):
    run = program(GCP)
    instance = run.one("gcp:compute/instance:Instance")
    metadata = instance.inputs["metadata"]
    assert "metadata" in instance.secret_inputs
    assert set(metadata) == {
        "block-project-ssh-keys",
        "serial-port-enable",
        "ssh-keys",
        "startup-script",
        "enable-oslogin",
    }
    assert metadata["block-project-ssh-keys"] == "true" and metadata["serial-port-enable"] == "false"
    assert metadata["enable-oslogin"] == "FALSE"
    operator_key = serialization.load_ssh_private_key(run.outputs["sshPrivateKey"].encode(), password=None)
    operator_public = (
        operator_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    assert metadata["ssh-keys"] == f"admin:{operator_public}" and run.outputs["sshUser"] == "admin"
    script = metadata["startup-script"]
    assert script.startswith("#!/bin/sh\n") and run.outputs["hostPublicKey"] in script
    assert "user-data" not in metadata  # Debian's GCE images have no cloud-init to read it


def test_given_login_key_goes_to_ssh_keys(program):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoZlLxqExRb/G4E/Mld64B7T1GCdfwZRHFppOzUYs26 bob@laptop"
    run = program({**GCP, "prefect-host:sshPublicKey": key})
    assert run.one("gcp:compute/instance:Instance").inputs["metadata"]["ssh-keys"] == f"admin:{key}"
    assert "sshPrivateKey" not in run.outputs


@pytest.mark.parametrize(
    "image, machine_type, family, disk_type",
    [
        ("debian-12", "e2-medium", "debian-12-bookworm", "pd-balanced"),
        ("debian-12", "t2a-standard-1", "debian-12-bookworm-arm64", "pd-balanced"),
        ("debian-13", "c4a-standard-2", "debian-13-trixie-arm64", "hyperdisk-balanced"),
        ("debian-13", "n4-standard-2", "debian-13-trixie", "hyperdisk-balanced"),
    ],
)
def test_image_family_follows_the_image_and_the_machine_architecture(program, image, machine_type, family, disk_type):
    run = program(
        {**GCP, "prefect-host:image": image, "prefect-host:instanceType": machine_type, "prefect-host:diskSizeGb": 100}
    )
    params = run.one("gcp:compute/instance:Instance").inputs["bootDisk"]["initializeParams"]
    assert params == {"image": f"projects/debian-cloud/global/images/family/{family}", "size": 100, "type": disk_type}


def test_names_derive_from_the_stack(program):
    run = program(GCP, stack="Team_A")
    assert all(r.name.startswith("prefect-host-team-a") for r in run.resources)
    assert run.one("gcp:compute/instance:Instance").inputs["tags"] == ["prefect-host-team-a"]
    assert run.outputs["iamUserName"] == "prefect-host-Team_A"


def test_startup_script_installs_exactly_the_pinned_key(program, tmp_path):
    """Run the real script against a scratch /etc/ssh with a stand-in systemctl."""
    run = program(GCP)
    script = run.one("gcp:compute/instance:Instance").inputs["metadata"]["startup-script"]
    ssh_dir, bin_dir = tmp_path / "ssh", tmp_path / "bin"
    ssh_dir.mkdir(), bin_dir.mkdir()
    for stale in (
        "ssh_host_rsa_key",
        "ssh_host_rsa_key.pub",
        "ssh_host_ecdsa_key",
        "ssh_host_ecdsa_key.pub",
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ):
        (ssh_dir / stale).write_text("generated by the guest agent\n")
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.log\n')
    (bin_dir / "systemctl").chmod(0o755)
    assert script.count("ssh_dir=/etc/ssh\n") == 1
    (tmp_path / "startup.sh").write_text(script.replace("ssh_dir=/etc/ssh\n", f"ssh_dir={ssh_dir}\n"))
    for _ in range(2):  # every boot: idempotent
        subprocess.run(["sh", str(tmp_path / "startup.sh")], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert sorted(p.name for p in ssh_dir.iterdir()) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    private = ssh_dir / "ssh_host_ed25519_key"
    assert private.stat().st_mode & 0o777 == 0o600
    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    assert (
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        == run.outputs["hostPublicKey"]
    )
    assert (ssh_dir / "ssh_host_ed25519_key.pub").read_text().strip() == run.outputs["hostPublicKey"]
    assert (tmp_path / "systemctl.log").read_text() == "reload-or-restart ssh.service\n" * 2
