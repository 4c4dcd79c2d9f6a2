"""The metadata guard: the script each unit runs as root before it starts, run here against stand-in
iptables commands (the e2e test proves the rules on a real Debian 13 host, from inside a flow run),
and where the units and the server's declaration name it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from prefect_host.caddy import HARDENING_DROPIN
from prefect_host.services import metadata_guard as guard
from prefect_host.services import prefect_server, workers
from tests.prefect_host.host.host_samples import put_on_path
from tests.prefect_host.services.service_samples import server, unit_directives, worker_set

# Each stand-in logs its arguments and what it was fed; `iptables -C` finds the jump when $JUMP_EXISTS=1.
STAND_IN = """#!/bin/sh
name=$(basename "$0")
echo "$name $*" >> "$LOG"
case "$name" in *-restore) cat > "$LOG.$name"; exit "${RESTORE_STATUS:-0}";; esac
[ "$2" = -C ] && [ "${JUMP_EXISTS:-0}" != 1 ] && exit 1
exit 0
"""
STAND_IN_ID = """#!/bin/sh
case "$2" in prefect) echo 996;; prefect-flow) echo 995;; caddy) [ -n "$NO_CADDY" ] && exit 1; echo 994;; esac
"""


def run_guard(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    tools = ("iptables", "ip6tables", "iptables-restore", "ip6tables-restore")
    environment = put_on_path(
        tmp_path / "bin", {**dict.fromkeys(tools, STAND_IN), "id": STAND_IN_ID, "flock": "#!/bin/sh\nexit 0\n"}
    )
    log = tmp_path / "calls.log"
    script = tmp_path / "guard"
    # The lock file is the only thing the script writes itself: here, under tmp_path.
    script.write_text(guard.script_text().replace("/run/lock/", f"{tmp_path}/"))
    environment.update(LOG=str(log), **env)
    done = subprocess.run(["sh", str(script)], env=environment, capture_output=True, text=True, timeout=30)
    return done, log


def restored(log: Path, family: str) -> list[str]:
    return Path(f"{log}.{family}tables-restore").read_text().splitlines()


def test_rejects_what_the_three_users_send_except_dns_and_jumps_there_once(tmp_path):
    done, log = run_guard(tmp_path)
    assert done.returncode == 0, done.stderr
    chain = guard.CHAIN
    assert restored(log, "ip") == [
        "*filter",
        f":{chain} - [0:0]",  # declared again: its old rules are replaced in the same commit
        f"-A {chain} -p udp --dport 53 -j RETURN",
        f"-A {chain} -p tcp --dport 53 -j RETURN",
        f"-A {chain} -m owner --uid-owner 996 -j REJECT --reject-with icmp-admin-prohibited",
        f"-A {chain} -m owner --uid-owner 995 -j REJECT --reject-with icmp-admin-prohibited",
        f"-A {chain} -m owner --uid-owner 994 -j REJECT --reject-with icmp-admin-prohibited",
        "COMMIT",
    ]
    assert (
        restored(log, "ip6")[-2] == f"-A {chain} -m owner --uid-owner 994 -j REJECT --reject-with icmp6-adm-prohibited"
    )
    assert log.read_text().splitlines() == [
        "iptables-restore -w --noflush",  # --noflush: every other chain and table is left alone
        f"iptables -w -C OUTPUT -d 169.254.169.254/32 -j {chain}",
        f"iptables -w -I OUTPUT -d 169.254.169.254/32 -j {chain}",
        "ip6tables-restore -w --noflush",
        f"ip6tables -w -C OUTPUT -d fd00:ec2::254/128 -j {chain}",
        f"ip6tables -w -I OUTPUT -d fd00:ec2::254/128 -j {chain}",
    ]


def test_a_second_run_replaces_the_rules_and_adds_no_second_jump(tmp_path):
    done, log = run_guard(tmp_path, JUMP_EXISTS="1")
    assert done.returncode == 0, done.stderr
    assert [line for line in log.read_text().splitlines() if " -I " in line] == []


def test_a_user_that_does_not_exist_is_skipped(tmp_path):
    done, log = run_guard(tmp_path, NO_CADDY="1")  # tls off: no Caddy, no caddy user
    assert done.returncode == 0, done.stderr
    assert [line for line in restored(log, "ip") if "--uid-owner" in line] == [
        f"-A {guard.CHAIN} -m owner --uid-owner 996 -j REJECT --reject-with icmp-admin-prohibited",
        f"-A {guard.CHAIN} -m owner --uid-owner 995 -j REJECT --reject-with icmp-admin-prohibited",
    ]


def test_a_failure_fails_the_script(tmp_path):
    done, log = run_guard(tmp_path, RESTORE_STATUS="4")
    assert done.returncode != 0 and log.read_text().splitlines() == ["iptables-restore -w --noflush"]


def test_the_guarded_users_are_the_servers_the_workers_and_caddys():
    assert guard.GUARDED_USERS == (prefect_server.SERVICE_USER, workers.FLOW_USER, "caddy")


def test_each_unit_runs_it_as_root_first_and_only_the_workers_insist():
    server_unit = unit_directives(prefect_server.unit_text())
    worker_unit = unit_directives(workers.unit_text(pool="default"))
    caddy_dropin = unit_directives(HARDENING_DROPIN)
    # `+`: as root, outside the sandbox; `-`: a failure does not stop the server or Caddy from starting.
    assert server_unit["ExecStartPre"] == [f"-+{guard.PATH}"]
    assert caddy_dropin["ExecStartPre"] == [f"-+{guard.PATH}"]
    assert worker_unit["ExecStartPre"] == [f"+{guard.PATH}"]  # no flow run without the rules


def test_the_server_declares_the_script_and_iptables():
    declared = server()
    (script,) = [f for f in declared.files if f.path == guard.PATH]
    assert (script.mode, script.owner, script.on_change, script.text) == (0o755, "root", "restart", guard.script_text())
    assert guard.PACKAGE in declared.packages
    assert guard.PATH not in [f.path for f in worker_set().files]  # declared once


# --- the bootstrap's check: what `iptables -S` prints on a guarded host, read back ------------------
UIDS = "uid prefect 996\nuid prefect-flow 995\nuid caddy 994\n"


def family_rules(family: str, address: str, uids=(996, 995, 994), jump: bool = True) -> str:
    chain = guard.CHAIN
    icmp = "icmp-admin-prohibited" if family == "IPv4" else "icmp6-adm-prohibited"
    lines = [f"== {family}", "-P OUTPUT ACCEPT"]
    lines += [f"-A OUTPUT -d {address} -j {chain}"] if jump else []
    lines += [f"-N {chain}", f"-A {chain} -p udp -m udp --dport 53 -j RETURN"]
    lines += [f"-A {chain} -m owner --uid-owner {uid} -j REJECT --reject-with {icmp}" for uid in uids]
    return "\n".join(lines) + "\n"


def ipv4(**changes) -> str:
    return family_rules("IPv4", "169.254.169.254/32", **changes)


def ipv6(**changes) -> str:
    return family_rules("IPv6", "fd00:ec2::254/128", **changes)


def test_the_rules_in_force_in_both_families_are_all_there_is():
    assert guard.missing_rules(UIDS + ipv4() + ipv6()) == []
    assert guard.missing_rules(UIDS + ipv4()) == []  # no IPv6 on the host: only IPv4 is read


def test_a_user_without_its_reject_rule_is_named():
    assert guard.missing_rules(UIDS + ipv4() + ipv6(uids=(996, 995))) == [
        f"IPv6: no REJECT rule in {guard.CHAIN} for caddy (uid 994)"
    ]


def test_output_not_jumping_to_the_chain_is_named():
    assert guard.missing_rules(UIDS + ipv4(jump=False) + ipv6()) == [
        f"IPv4: OUTPUT does not jump to {guard.CHAIN} for 169.254.169.254"
    ]


@pytest.mark.parametrize(
    "chain",
    [f"-N {guard.CHAIN}\n", "iptables: No chain/target/match by that name.\n"],
    ids=["flushed", "deleted"],
)
def test_a_flushed_or_missing_chain_names_every_user_that_exists(chain):
    rules = f"== IPv4\n-A OUTPUT -d 169.254.169.254/32 -j {guard.CHAIN}\n{chain}"
    assert guard.missing_rules("uid prefect 996\nuid prefect-flow 995\n" + rules) == [
        f"IPv4: no REJECT rule in {guard.CHAIN} for prefect (uid 996), prefect-flow (uid 995)"
    ]


@pytest.mark.parametrize(
    "rule",
    [
        "-A {chain} -m owner --uid-owner 995 -j RETURN",
        "-A {chain} -m owner ! --uid-owner 995 -j REJECT",
        "-A {chain} -m owner --uid-owner 9950 -j REJECT",
        "-A OUTPUT -m owner --uid-owner 995 -j REJECT",  # not in the chain OUTPUT jumps to
    ],
)
def test_only_a_reject_of_that_uid_in_the_chain_counts(rule):
    rules = ipv4(uids=(996,)) + rule.format(chain=guard.CHAIN) + "\n"
    assert guard.missing_rules("uid prefect 996\nuid prefect-flow 995\n" + rules) == [
        f"IPv4: no REJECT rule in {guard.CHAIN} for prefect-flow (uid 995)"
    ]


STAND_IN_SHOW = """#!/bin/sh
# `iptables -w -S CHAIN`: the rules in $RULES/<tool>.<chain>, or iptables's error for a chain that is not there.
cat "$RULES/$(basename "$0").$3" 2>/dev/null || echo "iptables: No chain/target/match by that name."
"""


def test_the_read_script_prints_what_the_check_parses(tmp_path):
    """The read script against stand-ins: `id` knows prefect and prefect-flow (no caddy: tls off);
    iptables has their rules, ip6tables has no chain (where this machine has IPv6 at all)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    v4 = ipv4(uids=(996, 995)).splitlines()[1:]
    (rules / "iptables.OUTPUT").write_text("\n".join(v4[:2]) + "\n")
    (rules / f"iptables.{guard.CHAIN}").write_text("\n".join(v4[2:]) + "\n")
    env = put_on_path(tmp_path / "bin", {"iptables": STAND_IN_SHOW, "ip6tables": STAND_IN_SHOW, "id": STAND_IN_ID})
    env.update(RULES=str(rules), NO_CADDY="1")
    done = subprocess.run(["sh", "-c", guard.read_rules_script()], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("uid prefect 996\nuid prefect-flow 995\n== IPv4\n-P OUTPUT ACCEPT\n")
    ipv6_missing = [
        f"IPv6: OUTPUT does not jump to {guard.CHAIN} for fd00:ec2::254",
        f"IPv6: no REJECT rule in {guard.CHAIN} for prefect (uid 996), prefect-flow (uid 995)",
    ]
    assert guard.missing_rules(done.stdout) == (ipv6_missing if Path("/proc/net/if_inet6").exists() else [])
