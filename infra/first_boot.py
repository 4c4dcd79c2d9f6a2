"""What the VM runs on boot to install the pinned SSH host key (pure text; tests render and run it).

AWS: Debian's EC2 AMIs run cloud-init, whose `ssh_keys` writes the given host key and whose
`ssh_deletekeys` removes every other one, before sshd starts.
GCP: Debian's Compute Engine images ship google-guest-agent and no cloud-init (Debian's image
builds install only google-guest-agent and google-compute-engine-oslogin for GCE), so `user-data`
would be ignored. A `startup-script` installs the key instead. It runs on every boot, after the
guest agent generated its own host keys on the first one, so it replaces them and restarts sshd.
"""

from __future__ import annotations

import json

SSH_DIR = "/etc/ssh"


def cloud_config(host_private_key: str, host_public_key: str) -> str:
    """`#cloud-config` user data. JSON is valid YAML, which spares escaping the multi-line key."""
    document = {
        "ssh_deletekeys": True,
        "ssh_keys": {
            "ed25519_private": host_private_key,
            "ed25519_public": host_public_key.strip(),
        },
    }
    return "#cloud-config\n" + json.dumps(document, indent=2) + "\n"


def startup_script(host_private_key: str, host_public_key: str) -> str:
    """A POSIX shell script that installs the host key, removes the others and restarts sshd."""
    private_key = host_private_key.strip()
    public_key = host_public_key.strip()
    if "'" in public_key or "PREFECT_HOST_KEY" in private_key:
        raise ValueError("host key text cannot be embedded in the startup script")
    return f"""#!/bin/sh
# prefect-host: install the SSH host key pinned by the Pulumi program (idempotent, every boot).
set -eu
ssh_dir={SSH_DIR}
umask 077
tmp=$(mktemp "$ssh_dir/.pinned-host-key.XXXXXX")
cat > "$tmp" <<'PREFECT_HOST_KEY'
{private_key}
PREFECT_HOST_KEY
mv -f "$tmp" "$ssh_dir/ssh_host_ed25519_key"
printf '%s\\n' '{public_key}' > "$ssh_dir/ssh_host_ed25519_key.pub"
chmod 0644 "$ssh_dir/ssh_host_ed25519_key.pub"
rm -f "$ssh_dir/ssh_host_rsa_key" "$ssh_dir/ssh_host_rsa_key.pub" \\
      "$ssh_dir/ssh_host_ecdsa_key" "$ssh_dir/ssh_host_ecdsa_key.pub"
systemctl reload-or-restart ssh.service
"""
