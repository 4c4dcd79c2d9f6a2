"""The pinned SSH host key travels through the real first-boot code: program text -> first boot -> handshake.

For each cloud the Pulumi program runs under mockstack's mocks (as tests/infra run it), and a guest boots with
none of the harness's keys (no host key, no authorized key: they are removed before the first boot), only with
what that run rendered for the VM:

- AWS: Debian's cloud-init (the image variant `build_cloud_init_image`) reads a NoCloud seed: the
  `aws:ec2/instance:Instance`'s `userData` as user-data, and as meta-data the `public-keys` EC2's metadata
  service serves from the instance's key pair (the program generates the operator's pair here: no sshPublicKey,
  so the identity is the run's `sshPrivateKey` export).
- GCP: Debian's GCE images have no cloud-init; google-guest-agent makes the host keys on a first boot and the
  `ssh-keys` user, and google-startup-scripts.service runs the `startup-script` item as root. Two oneshot units
  stand in for them here, reading the `gcp:compute/instance:Instance`'s metadata items from a root-only directory
  (the metadata server): the agent's before ssh.service (`ssh-keygen -A`, admin's authorized_keys from
  `ssh-keys`), the startup script's after it, as on GCE (the script replaces the agent's keys and restarts sshd;
  run before ssh.service its `systemctl reload-or-restart ssh.service` would wait on ssh's start job, which waits
  for it). The run's config sets sshPublicKey to a key of this test's own.

Then the project's pinned session (HostSession, RejectPolicy) connects pinning the run's `hostPublicKey` and runs
commands, and pinning any other key is refused with a host key mismatch. Had the first-boot text been ignored,
the guest would offer a key of its own (cloud-init's or the agent's) or none, and both connections would fail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import mockstack
from prefect_host.errors import HostKeyMismatch
from prefect_host.local import LocalHost, build_image
from prefect_host.local.image import NOCLOUD_SEED, build_cloud_init_image
from prefect_host.ssh import HostSession, PinnedHostKey, fingerprint, load_private_key

pytestmark = pytest.mark.e2e

# The local hosts' addresses (10.77.<slot>.2) are where SSH comes from, as far as the program is concerned.
SSH_FROM = "10.77.0.0/16"
AWS_CONFIG = {"aws:region": "eu-west-1", "prefect-host:sshAllowedCidrs": [SSH_FROM]}
GCP_CONFIG = {
    "prefect-host:cloud": "gcp",
    "aws:region": "eu-west-1",
    "gcp:project": "first-boot-e2e",
    "gcp:zone": "europe-west1-b",
    "prefect-host:sshAllowedCidrs": [SSH_FROM],
}
# What LocalHost.create installs the way a cloud would; removed, so that only the cloud's own first boot can.
HARNESS_KEYS = ("etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub", "home/admin/.ssh/authorized_keys")
PINNED_KEY_FILES = ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"]
# The GCE stand-ins: the metadata items they read (root only: the startup script holds the host's private key).
METADATA_DIR = "/var/lib/prefect-host-test/metadata"
AGENT_SCRIPT_PATH = "/var/lib/prefect-host-test/guest-agent"
AGENT_UNIT = "google-guest-agent-standin.service"
STARTUP_UNIT = "google-startup-scripts-standin.service"
AGENT_SCRIPT = f"""#!/bin/sh
# Stand-in for google-guest-agent on an instance's first boot: host keys of its own, users from `ssh-keys`.
set -eu
ssh-keygen -A
while IFS= read -r entry; do
  user=${{entry%%:*}}
  home=$(getent passwd "$user" | cut -d: -f6)
  install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
  printf '%s\\n' "${{entry#*:}}" >> "$home/.ssh/authorized_keys"
  chown "$user:$user" "$home/.ssh/authorized_keys"
  chmod 0600 "$home/.ssh/authorized_keys"
done < {METADATA_DIR}/ssh-keys
"""
AGENT_UNIT_TEXT = f"""[Unit]
Description=Stand-in for google-guest-agent (first boot: host keys, ssh-keys)
Before=ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh {AGENT_SCRIPT_PATH}

[Install]
WantedBy=multi-user.target
"""
STARTUP_UNIT_TEXT = f"""[Unit]
Description=Stand-in for google-startup-scripts.service (runs the startup-script metadata item as root)
After={AGENT_UNIT} ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh {METADATA_DIR}/startup-script

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class FirstBoot:
    """A guest after its first boot, and what the stack run that rendered its first-boot text exported."""

    cloud: str
    host: LocalHost
    user: str  # the run's sshUser
    identity: paramiko.PKey
    host_public_key: str  # the run's hostPublicKey
    seconds: float  # from creating the guest to its boot (and the cloud's first-boot code) finished

    def connect(self, host_key: str, timeout: float = 30) -> HostSession:
        pinned = PinnedHostKey.parse(host_key, setting="hostPublicKey")
        return HostSession.connect(
            self.host.address, user=self.user, identity=self.identity, host_key=pinned, connect_timeout=timeout
        )


def ed25519_pair(comment: str) -> tuple[paramiko.PKey, str]:
    """(the private key for paramiko, the public key as an OpenSSH line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return load_private_key(private, source=comment), f"{public.decode()} {comment}"


def write_private(path: Path, text: str) -> None:
    """A root-only file in the guest's tree (its directory made root-only first)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)


def strip_harness_keys(host: LocalHost) -> None:
    for relative in HARNESS_KEYS:
        (host.root / relative).unlink()
    assert not list((host.root / "etc/ssh").glob("ssh_host_*")), "the guest still has a host key before booting"
    assert not (host.root / HARNESS_KEYS[-1]).exists()


def aws_guest(host: LocalHost) -> tuple[str, paramiko.PKey, str]:
    """Seeds the guest as EC2 would serve the program's instance; (sshUser, identity, hostPublicKey)."""
    run = mockstack.run_program(AWS_CONFIG, stack="first-boot-aws")
    instance = run.one("aws:ec2/instance:Instance")
    key_pair = run.one("aws:ec2/keyPair:KeyPair")
    assert instance.inputs["keyName"] == key_pair.outputs["keyName"]
    seed = host.root / NOCLOUD_SEED
    write_private(seed / "user-data", instance.inputs["userData"])
    meta_data = {"instance-id": instance.id, "local-hostname": host.name, "public-keys": [key_pair.inputs["publicKey"]]}
    write_private(seed / "meta-data", json.dumps(meta_data))
    identity = load_private_key(run.outputs["sshPrivateKey"], source="sshPrivateKey")
    return run.outputs["sshUser"], identity, run.outputs["hostPublicKey"]


def gcp_guest(host: LocalHost) -> tuple[str, paramiko.PKey, str]:
    """Gives the guest the program's instance metadata and the stand-ins that act on it; (sshUser, identity,
    hostPublicKey)."""
    identity, public = ed25519_pair("operator@first-boot-gcp")
    run = mockstack.run_program({**GCP_CONFIG, "prefect-host:sshPublicKey": public}, stack="first-boot-gcp")
    metadata = run.one("gcp:compute/instance:Instance").inputs["metadata"]
    directory = host.root / METADATA_DIR.lstrip("/")
    write_private(directory / "ssh-keys", metadata["ssh-keys"] + "\n")
    write_private(directory / "startup-script", metadata["startup-script"])
    write_private(host.root / AGENT_SCRIPT_PATH.lstrip("/"), AGENT_SCRIPT)
    units = host.root / "etc/systemd/system"
    for name, text in ((AGENT_UNIT, AGENT_UNIT_TEXT), (STARTUP_UNIT, STARTUP_UNIT_TEXT)):
        (units / name).write_text(text)
        (units / "multi-user.target.wants" / name).symlink_to(f"/etc/systemd/system/{name}")
    return run.outputs["sshUser"], identity, run.outputs["hostPublicKey"]


def wait_for_sshd(host: LocalHost, timeout: float = 15) -> None:
    """The startup script's `systemctl reload-or-restart ssh` re-executes sshd; wait until it is back."""
    deadline = time.monotonic() + timeout
    while True:
        state = host.guest_exec(["systemctl", "show", "-p", "ActiveState", "-p", "SubState", "ssh.service"]).stdout
        if state.split() == ["ActiveState=active", "SubState=running"]:
            return
        assert time.monotonic() < deadline, f"ssh.service did not come back: {state}"
        time.sleep(0.2)


@pytest.fixture(scope="module", params=["aws", "gcp"])
def first_boot(request: pytest.FixtureRequest) -> Iterator[FirstBoot]:
    """One first boot per cloud, shared by its tests; the guest is removed afterwards."""
    cloud = request.param
    image = build_cloud_init_image() if cloud == "aws" else build_image()
    assert not list((image / "etc/ssh").glob("ssh_host_*")), "the image itself must hold no host key"
    started = time.monotonic()
    with LocalHost.create(image) as host:
        strip_harness_keys(host)
        user, identity, host_public_key = (aws_guest if cloud == "aws" else gcp_guest)(host)
        host.boot(timeout=90)
        if cloud == "gcp":
            wait_for_sshd(host)
        seconds = time.monotonic() - started
        print(f"\n{cloud}: guest created and first boot finished in {seconds:.1f} s")
        yield FirstBoot(cloud, host, user, identity, host_public_key, seconds)


def test_the_clouds_first_boot_code_ran_cleanly(first_boot: FirstBoot, record_property) -> None:
    record_property(f"{first_boot.cloud}_first_boot_seconds", round(first_boot.seconds, 1))
    host = first_boot.host
    if first_boot.cloud == "aws":
        done = host.guest_exec(["cloud-init", "status", "--wait", "--format", "json"], check=False, timeout=60)
        status = json.loads(done.stdout)
        assert (status["status"], status["extended_status"], done.returncode) == ("done", "done", 0), done.stdout
        assert status["datasource"] == "nocloud", done.stdout
        assert status["errors"] == [] and not status["recoverable_errors"], done.stdout
        return
    for unit in (AGENT_UNIT, STARTUP_UNIT):
        state = host.guest_exec(["systemctl", "show", "-p", "Result", "-p", "ActiveState", unit]).stdout
        assert state.split() == ["Result=success", "ActiveState=active"], f"{unit}: {state}"
    # The startup script really replaced keys of the agent's own: it made all three types, one is left.
    journal = host.guest_exec(["journalctl", "-u", AGENT_UNIT, "-o", "cat", "--no-pager"]).stdout
    assert "generating new host keys: RSA ECDSA ED25519" in journal, journal


def test_the_pinned_session_reaches_the_host(first_boot: FirstBoot) -> None:
    with first_boot.connect(first_boot.host_public_key) as session:
        pinned = PinnedHostKey.parse(first_boot.host_public_key, setting="hostPublicKey")
        assert session.host_key is not None and session.host_key.asbytes() == pinned.key.asbytes()
        session.run("true")
        assert session.run("hostname").stdout.strip() == first_boot.host.name
        assert session.run("id -un").stdout.strip() == first_boot.user
        # The pinned key is the only host key left (cloud-init's ssh_deletekeys, the script's rm).
        keys = session.run("ls /etc/ssh/ssh_host_*").stdout.split()
        assert keys == PINNED_KEY_FILES
        served = session.run("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
        assert served == first_boot.host_public_key.split()[:2]


def test_another_pinned_key_is_refused(first_boot: FirstBoot) -> None:
    _, other = ed25519_pair("not-the-programs-key")
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch) as refused:
        first_boot.connect(other).close()
    message = str(refused.value)
    assert message.startswith(f"Host key mismatch for {first_boot.host.address}:22"), message
    program_key = PinnedHostKey.parse(first_boot.host_public_key, setting="hostPublicKey").key
    assert f"offered ssh-ed25519 {fingerprint(program_key)}" in message, message
    assert time.monotonic() - started < 15, "a mismatch must not be retried"
