"""The cloud's metadata service, out of reach of Prefect, its flow runs and Caddy.

Any process on a VM can ask 169.254.169.254 (and fd00:ec2::254 on AWS) for the instance's user data
or startup script, which holds the pinned SSH host *private* key. A netfilter owner match rejects
what the server's, the workers' and Caddy's users send there; root (cloud-init, the guest agent)
still reaches it. Port 53 stays open: on GCP the metadata server is also the VM's DNS server, and
Debian's GCE images point /etc/resolv.conf at it.

Why not systemd's IPAddressDeny=: it matches addresses only (so on GCP it would cut DNS too), and it
needs cgroup BPF, which a systemd-nspawn container (the tests' hosts) refuses: there it is ignored
with a log line. An owner match works in both. iptables is on Debian's cloud images (the image
builds install it); the script is run as root by each unit before it starts (ExecStartPre=+), so
the rules are back after every boot, and idempotent: one atomic iptables-restore per family.
"""

from __future__ import annotations

from prefect_host.host.model import AptPackage, File
from prefect_host.services.systemd import HEADER

PATH = "/usr/local/sbin/prefect-host-metadata-guard"
PACKAGE = AptPackage("iptables")
CHAIN = "PREFECT-HOST-METADATA"
IPV4_ADDRESS = "169.254.169.254"  # AWS, GCP (metadata.google.internal), Azure, OpenStack
IPV6_ADDRESS = "fd00:ec2::254"  # AWS's IPv6 endpoint (off unless the instance turns it on)
# The server's, the workers' (and so the flow runs') and Caddy's users (Debian's caddy package makes
# `caddy`); a user that does not exist (yet) is skipped, e.g. caddy with tls off.
GUARDED_USERS = ("prefect", "prefect-flow", "caddy")
# In the units: the workers do not start without the rules (flow code must never run unguarded);
# the server and Caddy start anyway (a broken iptables must not take the API down).
EXEC_START_PRE = f"ExecStartPre=+{PATH}"
EXEC_START_PRE_OPTIONAL = f"ExecStartPre=-+{PATH}"


def script_text() -> str:
    users = " ".join(GUARDED_USERS)
    return f"""\
#!/bin/sh
{HEADER}
# Rejects what the users {users} send to the cloud's metadata service, except DNS.
# Run as root by their units before they start; idempotent; one atomic restore per address family.
set -eu
exec 9>/run/lock/prefect-host-metadata-guard
flock 9  # units starting together at boot take turns
chain={CHAIN}
rules() {{  # $1: what the rejection answers
  echo '*filter'
  echo ":$chain - [0:0]"
  echo "-A $chain -p udp --dport 53 -j RETURN"
  echo "-A $chain -p tcp --dport 53 -j RETURN"
  for user in {users}; do
    uid=$(id -u "$user" 2>/dev/null) || continue
    echo "-A $chain -m owner --uid-owner $uid -j REJECT --reject-with $1"
  done
  echo 'COMMIT'
}}
rules icmp-admin-prohibited | iptables-restore -w --noflush
iptables -w -C OUTPUT -d {IPV4_ADDRESS}/32 -j "$chain" 2>/dev/null ||
  iptables -w -I OUTPUT -d {IPV4_ADDRESS}/32 -j "$chain"
if [ -e /proc/net/if_inet6 ]; then
  rules icmp6-adm-prohibited | ip6tables-restore -w --noflush
  ip6tables -w -C OUTPUT -d {IPV6_ADDRESS}/128 -j "$chain" 2>/dev/null ||
    ip6tables -w -I OUTPUT -d {IPV6_ADDRESS}/128 -j "$chain"
fi
"""


def script_file() -> File:
    """Declared by the server (its lane runs first); a change restarts the server, whose start
    applies the new rules for every guarded user."""
    return File(PATH, script_text(), mode=0o755, describe=f"install {PATH}")
