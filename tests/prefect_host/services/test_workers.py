"""The workers' declaration: their env file and template unit, the digest their applied record
holds, and the steps planned from the host's facts (after the server's, which owns the venv)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from prefect_host.host.facts import parse_facts
from prefect_host.host.model import File, Service, Step, User, Venv
from prefect_host.services import prefect_server, workers
from prefect_host.services.python_env import PREFECT_AWS_VERSION, VENV_DIR
from prefect_host.services.systemd import env_value
from tests.prefect_host.host.host_samples import (
    assert_secret_only_on_stdin,
    assert_shell_parses,
    converged_output,
    fresh_output,
    lanes_for,
    names,
    replace_file,
    unit_line,
)
from tests.prefect_host.services.service_samples import (
    AUTH,
    PASSWORD,
    RESULTS,
    UI_URL,
    env_settings,
    pinned_venv,
    server,
    unit_directives,
    worker_env,
    worker_set,
)

CONVERGED = converged_output(server(), worker_set())
GPU = "prefect-worker@gpu.service"  # an operator's own instance of the template: not ours


def worker_steps(output: str, declared: Service | None = None, *, venv: Venv | None = None) -> tuple[Step, ...]:
    """The workers' steps, planned after the server's (the server's lane owns the shared venv)."""
    venv = venv or pinned_venv()
    return lanes_for(output, server(venv), declared or worker_set(1, venv))[1].steps


# --- the files -------------------------------------------------------------------------------------
def test_worker_env_has_the_local_api_the_poll_interval_and_the_result_storage():
    settings = env_settings(
        workers.env_text(auth_string="admin:it's", ui_url="https://203.0.113.7", result_settings=RESULTS, tls=True)
    )
    assert settings == {
        "PREFECT_HOME": "'/var/lib/prefect-worker'",
        # The worker on the host keeps talking to the server over loopback, behind Caddy's back.
        "PREFECT_API_URL": "'http://127.0.0.1:4201/api'",
        "PREFECT_API_AUTH_STRING": '"admin:it\'s"',
        "PREFECT_UI_URL": "'https://203.0.113.7'",
        "PREFECT_WORKER_QUERY_SECONDS": "'5'",
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "'s3-bucket/team-results'",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "'true'",
    }
    # Without storage: no result settings at all (a run then keeps its results on the host).
    bare = env_settings(workers.env_text(auth_string="a:b", ui_url="http://h:4200", result_settings={}, tls=False))
    assert not [name for name in bare if name.startswith("PREFECT_RESULTS_")]
    assert bare["PREFECT_API_URL"] == "'http://127.0.0.1:4200/api'"  # tls off: Prefect itself on 4200


def test_worker_template_runs_one_named_worker_per_instance_as_the_flow_user():
    unit = unit_directives(workers.unit_text(pool="default"))
    # Not the server's user: flow code can neither signal the server nor open its files.
    assert unit["User"] == ["prefect-flow"] and unit["Group"] == ["prefect-flow"]
    assert workers.FLOW_USER != prefect_server.SERVICE_USER
    assert unit["EnvironmentFile"] == [workers.ENV_FILE]
    assert unit["ExecStart"] == [
        "/opt/prefect-host/venv/bin/prefect worker start --pool default --type process --name %H-%i"
    ]
    assert unit["Restart"] == ["always"] and unit["WantedBy"] == ["multi-user.target"]
    assert unit["After"] == [f"network-online.target {prefect_server.UNIT_NAME}"]
    # Flow runs get a writable home and state of their own, not the server's.
    assert unit["Environment"] == [f"HOME={workers.STATE_DIR_WORKERS}"]
    assert unit["WorkingDirectory"] == [workers.STATE_DIR_WORKERS] and unit["StateDirectory"] == ["prefect-worker"]
    # The server's database, every env file and Caddy's CA key, whatever their modes.
    assert unit["InaccessiblePaths"] == ["-/var/lib/prefect -/etc/prefect-host -/var/lib/caddy"]
    assert workers.unit_name(2) == "prefect-worker@2.service"


def test_worker_template_is_sandboxed_and_holds_no_secret():
    unit = unit_directives(workers.unit_text(pool="default"))
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == [""] and unit["PrivateUsers"] == ["yes"] and unit["PrivateTmp"] == ["yes"]
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged"]
    assert "ProcSubset" not in unit and "MemoryDenyWriteExecute" not in unit and "RemoveIPC" not in unit
    assert "AUTH_STRING" not in workers.unit_text(pool="default")


def test_the_declared_files_and_units():
    declared = worker_set(3)
    assert [(f.path, f.mode, f.on_change, f.systemd) for f in declared.files] == [
        (workers.UNIT_PATH, 0o644, "restart", True),
        (workers.ENV_FILE, 0o600, "restart", False),
    ]
    assert declared.units.names == ("prefect-worker@1.service", "prefect-worker@2.service", "prefect-worker@3.service")
    assert (declared.units.template, declared.units.display) == (workers.UNIT_TEMPLATE, "prefect-worker@{1,2,3}")
    assert worker_set(0).units.names == ()
    # Its home is the units' StateDirectory=: systemd creates it, and chowns it from an earlier owner.
    assert declared.users == (
        User("prefect-flow", workers.STATE_DIR_WORKERS, "Prefect workers and flow runs", state_directory=True),
    )


# --- the applied record: what a host converged by an earlier release holds ------------------------
@pytest.mark.parametrize("prefect_version, prefect_aws_version", [("3.9.1", PREFECT_AWS_VERSION), ("3.9.2", "0.7.13")])
def test_applied_record_is_the_digest_earlier_releases_recorded(prefect_version, prefect_aws_version):
    declared = worker_set(2, pinned_venv(prefect_version, prefect_aws_version=prefect_aws_version))
    parts = (prefect_version, prefect_aws_version, workers.unit_text(pool="default"), worker_env())
    earlier = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    assert declared.restart_digest() == earlier and declared.applied_record() == earlier


# --- facts -----------------------------------------------------------------------------------------
def test_parse_worker_facts():
    declared = worker_set(2)
    facts = parse_facts(converged_output(server(), declared, extra=unit_line(GPU, "disabled", "failed", "yes")))
    assert facts.hostname == "ph-7" and facts.venv_version(declared.venv, "prefect-aws") == "0.7.12"
    assert facts.applied(workers.APPLIED_FILE) == declared.applied_record()
    known = [facts.units[name] for name in sorted(facts.units) if name.startswith("prefect-worker@")]
    assert [(u.name, u.instance, u.enabled, u.running, u.need_daemon_reload) for u in known] == [
        ("prefect-worker@1.service", "1", "enabled", True, False),
        ("prefect-worker@2.service", "2", "enabled", True, False),
        (GPU, "gpu", "disabled", False, True),
    ]
    fresh = parse_facts(fresh_output(server(), worker_set()))
    assert fresh.unit(workers.unit_name(1)).enabled == "" and not fresh.unit(workers.unit_name(1)).running
    assert fresh.file_sha256(workers.ENV_FILE) is None and fresh.applied(workers.APPLIED_FILE) is None


# --- the steps -------------------------------------------------------------------------------------
def test_fresh_host_gets_the_worker_steps_after_the_server():
    steps = worker_steps(fresh_output(server(), worker_set()))
    assert names(steps) == [
        "create service user prefect-flow",
        f"write {workers.ENV_FILE}",
        f"install {workers.UNIT_TEMPLATE}",
        "enable prefect-worker@1",
        "start prefect-worker@1",
    ]
    assert [step.starts for step in steps] == [None, None, None, None, workers.NAME]
    assert "install -d" not in steps[0].commands[0].script  # systemd makes the home at the start
    start = steps[-1].commands[0].script
    assert start.startswith("systemctl restart prefect-worker@1.service && ")
    assert start.endswith(f"{worker_set().applied_record()} > {workers.APPLIED_FILE}")


def test_host_from_before_the_workers_gets_prefect_aws_without_a_server_restart():
    """A host bootstrapped before workers existed: prefect is there, prefect-aws and the units not."""
    old = converged_output(server()).replace(f"venv:{VENV_DIR}:prefect_aws=0.7.12\n", "")
    server_lane, worker_lane = lanes_for(old, server(), worker_set())
    assert names(server_lane.steps) == ["install prefect-aws 0.7.12", "compile bytecode (in the background)"]
    install = server_lane.steps[0].commands[0].script
    assert "prefect==3.9.1 prefect-aws==0.7.12" in install  # both pinned: uv keeps them consistent
    assert names(worker_lane.steps) == [
        "create service user prefect-flow",
        f"write {workers.ENV_FILE}",
        f"install {workers.UNIT_TEMPLATE}",
        "enable prefect-worker@1",
        "start prefect-worker@1",
    ]


@pytest.mark.parametrize(
    "venv_changes, changed, expected",
    [
        (
            {},
            lambda venv: worker_set(1, venv, env=worker_env(auth_string="admin:rotated")),
            [f"write {workers.ENV_FILE}", "restart prefect-worker@1"],
        ),
        (
            {},
            lambda venv: replace_file(
                worker_set(1, venv), workers.UNIT_PATH, workers.unit_text(pool="default") + "#\n"
            ),
            [f"install {workers.UNIT_TEMPLATE}", "restart prefect-worker@1"],
        ),
        ({"prefect_version": "3.9.2"}, lambda venv: worker_set(1, venv), ["restart prefect-worker@1"]),
        ({"prefect_aws_version": "0.7.13"}, lambda venv: worker_set(1, venv), ["restart prefect-worker@1"]),
        ({}, lambda venv: worker_set(3, venv), ["enable prefect-worker@{2,3}", "start prefect-worker@{2,3}"]),
    ],
)
def test_one_worker_change_gives_only_its_steps(venv_changes, changed, expected):
    venv = pinned_venv(**venv_changes)
    assert names(worker_steps(CONVERGED, changed(venv), venv=venv)) == expected


def test_workers_that_ran_as_the_servers_user_switch_to_their_own_with_one_restart():
    """A host converged by a release whose workers ran as `prefect`: the new user, the new template,
    one restart (at which systemd chowns the state directory over to the new user)."""
    unit = workers.unit_text(pool="default")
    earlier_unit = unit.replace("User=prefect-flow\nGroup=prefect-flow\n", "User=prefect\nGroup=prefect\n")
    assert earlier_unit != unit
    earlier = dataclasses.replace(replace_file(worker_set(), workers.UNIT_PATH, earlier_unit), users=())
    steps = worker_steps(converged_output(server(), earlier))
    assert names(steps) == [
        "create service user prefect-flow",
        f"install {workers.UNIT_TEMPLATE}",
        "restart prefect-worker@1",
    ]


def test_a_new_prefect_aws_reinstalls_without_restarting_the_server():
    venv = pinned_venv(prefect_aws_version="0.7.13")
    server_lane = lanes_for(CONVERGED, server(venv), worker_set(1, venv))[0]
    assert names(server_lane.steps) == ["install prefect-aws 0.7.13", "compile bytecode (in the background)"]


def test_fewer_workers_stop_and_disable_the_rest_but_not_hand_made_instances():
    three = converged_output(server(), worker_set(3), extra=unit_line(GPU))
    steps = worker_steps(three, worker_set(1))
    assert names(steps) == ["stop and disable prefect-worker@{2,3}"]
    assert (
        steps[0].commands[0].script
        == "systemctl disable --now --quiet prefect-worker@2.service prefect-worker@3.service"
    )
    # The bootstrap removes them from the work pool.
    assert steps[0].stops == ("prefect-worker@2.service", "prefect-worker@3.service") and steps[0].starts is None
    assert names(worker_steps(three, worker_set(0))) == ["stop and disable prefect-worker@{1,2,3}"]


def test_stopped_or_disabled_extra_instances_are_left_alone():
    extra = converged_output(server(), worker_set(), extra=unit_line(workers.unit_name(2), "disabled", "failed"))
    assert worker_steps(extra) == ()


def test_a_dead_worker_is_started_alone():
    dead = converged_output(server(), worker_set(2)).replace(
        unit_line(workers.unit_name(2)), unit_line(workers.unit_name(2), state="failed")
    )
    steps = worker_steps(dead, worker_set(2))
    assert names(steps) == ["start prefect-worker@2"] and steps[0].starts == workers.NAME
    assert steps[0].commands[0].script == "systemctl start prefect-worker@2.service"


def test_an_auto_restarting_worker_counts_as_running():
    restarting = CONVERGED.replace(unit_line(workers.unit_name(1)), unit_line(workers.unit_name(1), state="activating"))
    assert worker_steps(restarting) == ()


def test_a_disabled_worker_is_enabled_again():
    disabled = CONVERGED.replace(unit_line(workers.unit_name(1)), unit_line(workers.unit_name(1), "disabled"))
    assert names(worker_steps(disabled)) == ["enable prefect-worker@1"]


def test_pending_daemon_reload_of_a_worker_reinstalls_the_template():
    pending = CONVERGED.replace(unit_line(workers.unit_name(1)), unit_line(workers.unit_name(1), need_reload="yes"))
    steps = worker_steps(pending)
    assert names(steps) == [f"install {workers.UNIT_TEMPLATE}"]
    assert steps[0].commands[-1].script == "systemctl daemon-reload"


def test_interrupted_worker_restart_is_done_again():
    interrupted = CONVERGED.replace(f"applied:{workers.APPLIED_FILE}={worker_set().applied_record()}\n", "")
    assert names(worker_steps(interrupted)) == ["restart prefect-worker@1"]


def test_worker_secrets_only_travel_on_stdin():
    steps = worker_steps(fresh_output(server(), worker_set()))
    assert_secret_only_on_stdin(steps, PASSWORD)
    env_command = steps[1].commands[0]
    assert f"PREFECT_API_AUTH_STRING={env_value(AUTH)}\n".encode() in env_command.stdin
    assert "chmod 0600" in env_command.script and f'mv -f "$tmp" {workers.ENV_FILE}' in env_command.script


def test_shell_of_every_step_parses():
    assert_shell_parses(worker_steps(fresh_output(server(), worker_set())))
    assert_shell_parses(worker_steps(converged_output(server(), worker_set(3), extra=unit_line(GPU)), worker_set(1)))


def test_pending_daemon_reload_of_an_extra_instance_reinstalls_the_template_too():
    """systemd flags every instance of a changed template, the operator's own ones included."""
    pending = converged_output(server(), worker_set(), extra=unit_line(GPU, need_reload="yes"))
    assert names(worker_steps(pending)) == [f"install {workers.UNIT_TEMPLATE}"]


# --- worker hosts: a work queue, the server's URL and CA, extra files ---------------------------------
DEFAULT_EXEC_START = "/opt/prefect-host/venv/bin/prefect worker start --pool default --type process --name %H-%i"


def test_a_queue_adds_work_queue_to_the_command_and_changes_nothing_else():
    default = workers.unit_text(pool="default")
    pinned = workers.unit_text(pool="default", queue="gpu.v2")
    assert unit_directives(pinned)["ExecStart"] == [f"{DEFAULT_EXEC_START} --work-queue gpu.v2"]
    assert pinned == default.replace(
        f"ExecStart={DEFAULT_EXEC_START}\n", f"ExecStart={DEFAULT_EXEC_START} --work-queue gpu.v2\n"
    )
    assert pinned.count("--work-queue") == 1
    # Without a queue the unit is the one earlier releases installed: no restart of their workers.
    assert workers.unit_text(pool="default", queue=None) == default
    assert unit_directives(default)["ExecStart"] == [DEFAULT_EXEC_START]


def test_a_worker_hosts_env_names_the_servers_url_and_ca_and_nothing_else_changes():
    local = env_settings(worker_env())
    remote = env_settings(
        workers.env_text(
            auth_string=AUTH,
            ui_url="https://203.0.113.7",
            result_settings=RESULTS,
            tls=True,
            api_url="https://203.0.113.7/api",
            ca_file="/etc/prefect-host-server-ca.pem",
        )
    )
    assert remote["PREFECT_API_URL"] == "'https://203.0.113.7/api'"
    assert remote["PREFECT_API_SSL_CERT_FILE"] == "'/etc/prefect-host-server-ca.pem'"
    assert {k: v for k, v in remote.items() if k not in ("PREFECT_API_URL", "PREFECT_API_SSL_CERT_FILE")} == {
        k: v for k, v in local.items() if k != "PREFECT_API_URL"
    }
    # The system trust store (acme): the URL alone.
    plain = env_settings(
        workers.env_text(
            auth_string=AUTH, ui_url=UI_URL, result_settings=RESULTS, tls=True, api_url="https://p.example.com/api"
        )
    )
    assert plain["PREFECT_API_URL"] == "'https://p.example.com/api'" and "PREFECT_API_SSL_CERT_FILE" not in plain
    # The server's own workers: loopback as before, no CA file.
    assert local["PREFECT_API_URL"] == "'http://127.0.0.1:4201/api'" and "PREFECT_API_SSL_CERT_FILE" not in local
    assert worker_env() == workers.env_text(
        auth_string=AUTH, ui_url=UI_URL, result_settings=RESULTS, tls=True, api_url=None, ca_file=None
    )


def test_no_workers_declare_no_flow_user():
    assert worker_set(0).users == () and worker_set(0).units.names == ()
    assert worker_set(2).users == (workers.flow_user(),)
    # A server converged with workers, now with none: they stop, and the user is left as it is.
    steps = worker_steps(converged_output(server(), worker_set(2)), worker_set(0))
    assert names(steps) == ["stop and disable prefect-worker@{1,2}"]


def test_extra_files_come_last_and_their_change_restarts_the_workers():
    ca = File("/etc/prefect-host-server-ca.pem", "CA one\n", mode=0o644)
    venv = pinned_venv()
    plain = worker_set(2, venv)
    with_ca = workers.workers_service(count=2, pool="default", venv=venv, env=worker_env(), extra=(ca,))
    assert [f.path for f in with_ca.files] == [workers.UNIT_PATH, workers.ENV_FILE, ca.path]
    assert with_ca.restart_digest() != plain.restart_digest()
    other = dataclasses.replace(ca, text="CA two\n")
    again = workers.workers_service(count=2, pool="default", venv=venv, env=worker_env(), extra=(other,))
    assert again.restart_digest() != with_ca.restart_digest()
    steps = worker_steps(converged_output(server(venv), with_ca), again, venv=venv)
    assert names(steps) == [f"write {ca.path}", "restart prefect-worker@{1,2}"]


def test_a_new_queue_reinstalls_the_template_and_restarts_the_workers():
    venv = pinned_venv()
    queued = workers.workers_service(count=1, pool="default", venv=venv, env=worker_env(), queue="gpu")
    assert queued.restart_digest() != worker_set(1, venv).restart_digest()
    assert names(worker_steps(CONVERGED, queued, venv=venv)) == [
        f"install {workers.UNIT_TEMPLATE}",
        "restart prefect-worker@1",
    ]
