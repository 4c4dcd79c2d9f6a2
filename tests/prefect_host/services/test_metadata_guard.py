"""The metadata guard: the script each unit runs as root before it starts, run here against stand-in
iptables commands (the e2e test proves the rules on a real Debian 13 host, from inside a flow run),
and where the units and the server's declaration name it."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
