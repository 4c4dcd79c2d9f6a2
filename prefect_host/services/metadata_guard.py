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
the rules are back after every boot, and idempotent: one atomic iptables-restore per family. The
bootstrap reads them back at its end (`missing_rules`) and fails while they are not in force.
"""

from __future__ import annotations

import itertools

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


# --- the bootstrap's check that the rules are in force ---------------------------------------------
# What the guard script would apply, read back as root: each guarded user's uid (the users that
# exist), then each family's OUTPUT chain and the guard's chain (`iptables -S`; an error line, e.g. a
# chain that does not exist, carries no rule), IPv6 only where the kernel has it (as in the script).
_READ_FAMILY = "echo '== {family}'; {tool} -w -S OUTPUT 2>&1; {tool} -w -S {chain} 2>&1"
FAMILIES = (("IPv4", "iptables", IPV4_ADDRESS, 32), ("IPv6", "ip6tables", IPV6_ADDRESS, 128))


def read_rules_script() -> str:
    ipv4, ipv6 = (_READ_FAMILY.format(family=f, tool=t, chain=CHAIN) for f, t, _, _ in FAMILIES)
    return (
        f"for user in {' '.join(GUARDED_USERS)}; do "
        'uid=$(id -u "$user" 2>/dev/null) && echo "uid $user $uid"; done; '
        f"{ipv4}; if [ -e /proc/net/if_inet6 ]; then {ipv6}; fi; true"
    )


def missing_rules(output: str) -> list[str]:
    """What `read_rules_script()` printed -> what is missing for the guard to be in force, one phrase
    each (none: in each family read, OUTPUT sends the metadata address to the chain, and the chain
    rejects every guarded user that exists)."""
    uids: dict[str, str] = {}
    rules: dict[str, list[list[str]]] = {}
    family: list[list[str]] | None = None
    for line in output.splitlines():
        words = line.split()
        if words[:1] == ["uid"] and len(words) == 3 and family is None:
            uids[words[1]] = words[2]
        elif words[:1] == ["=="] and len(words) == 2:
            family = rules.setdefault(words[1], [])
        elif family is not None and words[:1] == ["-A"]:
            family.append(words[1:])
    missing = []
    for name, _, address, prefix in FAMILIES:
        if name not in rules:
            continue
        jump = ["OUTPUT", "-d", f"{address}/{prefix}", "-j", CHAIN]
        unguarded = [
            f"{user} (uid {uid})"
            for user, uid in uids.items()
            if not any(_rejects(rule, user, uid) for rule in rules[name])
        ]
        if jump not in rules[name]:
            missing.append(f"{name}: OUTPUT does not jump to {CHAIN} for {address}")
        if unguarded:
            missing.append(f"{name}: no REJECT rule in {CHAIN} for {', '.join(unguarded)}")
    return missing


def _rejects(rule: list[str], user: str, uid: str) -> bool:
    """`-A CHAIN -m owner --uid-owner UID -j REJECT ...` (the words after -A), for this user."""
    pairs = dict(itertools.pairwise(rule))
    return (
        rule[:1] == [CHAIN]
        and "!" not in rule
        and pairs.get("--uid-owner") in (uid, user)
        and pairs.get("-j") == "REJECT"
    )
