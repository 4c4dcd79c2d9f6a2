"""Facts parsing and step planning: pure functions, from sample outputs of the facts script."""

from __future__ import annotations

import dataclasses

import pytest

from prefect_host import server_files as sf
from prefect_host.errors import HostUnsupported
from prefect_host.facts import parse_facts
from prefect_host.steps import Desired, DesiredWorkers, PackageSource, plan, plan_workers

AUTH = "admin:Sup3r'$ecret\\pw"

FRESH = """\
login_user=admin
sudo=yes
os_id=debian
os_version_id=13
os_pretty_name=Debian GNU/Linux 13 (trixie)
arch=x86_64
python3=/usr/bin/python3
python3_version=3.13.5
venv_python=
service_user_home=
env_sha256=
unit_sha256=
unit_enabled=
unit_MainPID=0
unit_NRestarts=0
unit_ActiveState=inactive
unit_NeedDaemonReload=no
facts_end=1
"""


RESULTS = {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "s3-bucket/team-results",
           "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}


def workers(count: int = 1, **changes) -> DesiredWorkers:
    base = DesiredWorkers(count=count, env_text=sf.worker_env_file_text(
        auth_string=AUTH, ui_url="https://203.0.113.7", result_settings=RESULTS, tls=True),
        unit_text=sf.worker_unit_text(pool="default"))
    return dataclasses.replace(base, **changes)


def desired(**changes) -> Desired:
    base = Desired(prefect_version="3.9.1", env_text=sf.env_file_text(auth_string=AUTH, tls=True),
                   unit_text=sf.unit_text(), packages=PackageSource(find_links="http://10.77.0.1:8000/"),
                   workers=workers())
    return dataclasses.replace(base, **changes)


def converged_output(want: Desired) -> str:
    return f"""\
login_user=admin
sudo=yes
os_id=debian
os_version_id=13
arch=x86_64
python3=/usr/bin/python3
python3_version=3.13.5
uv_version={want.uv_version}
venv_python=/usr/bin/python3.13
venv_prefect_version={want.prefect_version}
venv_prefect_aws_version={want.prefect_aws_version}
bytecode_version={want.prefect_version}
bytecode_job=inactive
service_user_home={sf.STATE_DIR}
state_dir_exists=1
env_sha256={sf.sha256_text(want.env_text)}
unit_sha256={sf.sha256_text(want.unit_text)}
applied_digest={want.digest}
unit_enabled=enabled
unit_MainPID=4242
unit_NRestarts=0
unit_ActiveState=active
unit_NeedDaemonReload=no
hostname=ph-7
worker_env_sha256={sf.sha256_text(want.workers.env_text)}
worker_unit_sha256={sf.sha256_text(want.workers.unit_text)}
worker_applied_digest={want.worker_digest}
{worker_lines(want.workers.count)}facts_end=1
"""


def worker_lines(count: int, *, enabled: str = "enabled", state: str = "active") -> str:
    return "".join(f"worker_unit=prefect-worker@{i}.service,{enabled},{state},no\n" for i in range(1, count + 1))


def names(steps) -> list[str]:
    return [step.name for step in steps]


def test_parse_fresh_host():
    facts = parse_facts(FRESH)
    assert facts.sudo_ok and facts.login_user == "admin" and facts.os_version_id == "13"
    assert facts.python3 == "/usr/bin/python3" and facts.python3_version == "3.13.5"
    assert facts.cloud_init_status is None  # no cloud-init line: not installed
    assert facts.uv_version is None and facts.venv_python is None and facts.venv_prefect_version is None
    assert facts.service_user_home is None and not facts.state_dir_exists
    assert facts.env_sha256 is None and facts.unit_enabled is None and facts.main_pid == 0


def test_parse_converged_host():
    want = desired()
    facts = parse_facts(converged_output(want))
    assert facts.uv_version == "0.13.8" and facts.venv_prefect_version == "3.9.1"
    assert facts.unit_active_state == "active" and facts.main_pid == 4242
    assert facts.applied_digest == want.digest and not facts.need_daemon_reload


def test_parse_host_without_sudo():
    facts = parse_facts("login_user=bob\nsudo=no\nsudo_error=sudo: a password is required\nfacts_end=1\n")
    assert not facts.sudo_ok and facts.sudo_error == "sudo: a password is required"


def test_cut_short_output_is_an_error():
    with pytest.raises(HostUnsupported, match="stopped early"):
        parse_facts(FRESH.replace("facts_end=1\n", ""))


def test_cloud_init_states():
    assert parse_facts("cloud_init_status=running\n" + FRESH).cloud_init_status == "running"
    assert parse_facts("cloud_init_status=\n" + FRESH).cloud_init_status == "unknown"


def test_fresh_host_gets_every_step_in_order():
    steps = plan(parse_facts(FRESH), desired())
    assert names(steps) == [
        "create service user prefect", "install uv 0.13.8", "create the virtualenv",
        "install prefect 3.9.1 and prefect-aws 0.7.12", f"write {sf.ENV_FILE}", f"install {sf.UNIT_NAME}",
        f"enable {sf.UNIT_NAME}", "start the Prefect server", "compile bytecode (in the background)"]
    assert [step.starts_server for step in steps].count(True) == 1 and steps[-2].starts_server


def test_converged_host_gets_no_steps():
    want = desired()
    facts = parse_facts(converged_output(want))
    assert plan(facts, want) == [] and plan_workers(facts, want) == []


@pytest.mark.parametrize("change, expected", [
    (lambda w: dataclasses.replace(w, env_text=sf.env_file_text(auth_string="admin:rotated", tls=True)),
     [f"write {sf.ENV_FILE}", "restart the Prefect server"]),
    (lambda w: dataclasses.replace(w, unit_text=w.unit_text + "# edited\n"),
     [f"install {sf.UNIT_NAME}", "restart the Prefect server"]),
    (lambda w: dataclasses.replace(w, prefect_version="3.9.2"),
     ["install prefect 3.9.2", "restart the Prefect server", "compile bytecode (in the background)"]),
    (lambda w: dataclasses.replace(w, uv_version="0.14.0"), ["install uv 0.14.0"]),
])
def test_one_change_gives_only_its_steps(change, expected):
    before = desired()
    facts = parse_facts(converged_output(before))
    assert names(plan(facts, change(before))) == expected


def test_stopped_server_is_started_without_other_steps():
    want = desired()
    facts = parse_facts(converged_output(want).replace("unit_ActiveState=active", "unit_ActiveState=failed"))
    assert names(plan(facts, want)) == ["start the Prefect server"]


def test_interrupted_run_restarts_although_files_match():
    """Files written but the restart never happened (no applied digest): restart now."""
    want = desired()
    facts = parse_facts(converged_output(want).replace(f"applied_digest={want.digest}\n", ""))
    assert names(plan(facts, want)) == ["restart the Prefect server"]


def test_pending_daemon_reload_reinstalls_the_unit():
    want = desired()
    facts = parse_facts(converged_output(want).replace("NeedDaemonReload=no", "NeedDaemonReload=yes"))
    steps = plan(facts, want)
    assert names(steps) == [f"install {sf.UNIT_NAME}"]
    assert [c.script for c in steps[0].commands][-1] == "systemctl daemon-reload"


def test_broken_venv_is_recreated_and_refilled():
    want = desired()
    facts = parse_facts(converged_output(want).replace("venv_python=/usr/bin/python3.13", "venv_python="))
    assert names(plan(facts, want)) == ["create the virtualenv", "install prefect 3.9.1 and prefect-aws 0.7.12",
                                        "compile bytecode (in the background)"]


def test_bytecode_is_compiled_once_in_the_background():
    want = desired()
    missing = converged_output(want).replace(f"bytecode_version={want.prefect_version}\n", "")
    steps = plan(parse_facts(missing), want)
    assert names(steps) == ["compile bytecode (in the background)"]
    script = steps[0].commands[0].script
    assert script.startswith("systemd-run --quiet --no-block") and "compileall" in script
    assert f"echo 3.9.1 > {sf.BYTECODE_MARKER}" in script
    # Still running from the previous run (a re-run right after a fresh install): leave it be.
    assert plan(parse_facts(missing.replace("bytecode_job=inactive", "bytecode_job=active")), want) == []
    # Compiled for an older version: compile again.
    older = converged_output(want).replace("bytecode_version=3.9.1", "bytecode_version=3.8.3")
    assert names(plan(parse_facts(older), want)) == ["compile bytecode (in the background)"]


def test_cloud_init_still_running_is_waited_for_first():
    want = desired(cloud_init_timeout=123.0)
    steps = plan(parse_facts("cloud_init_status=running\n" + converged_output(want)), want)
    assert names(steps) == ["wait for cloud-init to finish"]
    assert "cloud-init status --wait" in steps[0].commands[0].script
    assert steps[0].commands[0].timeout == 123.0
    for settled in ("done", "disabled", "error"):
        assert plan(parse_facts(f"cloud_init_status={settled}\n" + converged_output(want)), want) == []


def test_secrets_only_travel_on_stdin():
    steps = plan(parse_facts(FRESH), desired())
    password = AUTH.split(":", 1)[1]
    for step in steps:
        for command in step.commands:
            assert password not in command.script and password not in command.label
    env_command = next(c for s in steps for c in s.commands if c.label == f"write {sf.ENV_FILE}")
    assert f"PREFECT_SERVER_API_AUTH_STRING={sf.env_value(AUTH)}\n".encode() in env_command.stdin
    assert "chmod 0600" in env_command.script


def test_package_source_flags():
    steps = plan(parse_facts(FRESH), desired(packages=PackageSource(find_links="http://10.77.0.1:8000/")))
    install = next(s for s in steps if s.name.startswith("install prefect")).commands[0].script
    assert "--no-index --find-links http://10.77.0.1:8000/" in install and "prefect==3.9.1" in install
    assert "--compile-bytecode" not in install  # compiled later, in the background
    uv = next(s for s in steps if s.name.startswith("install uv")).commands[0]
    assert "--find-links http://10.77.0.1:8000/" in uv.script and b"def choose_wheel" in uv.stdin
    steps = plan(parse_facts(FRESH), desired(packages=PackageSource(index_url="https://mirror.example/simple")))
    install = next(s for s in steps if s.name.startswith("install prefect")).commands[0].script
    assert "--index-url https://mirror.example/simple" in install and "--no-index" not in install
    default = plan(parse_facts(FRESH), desired(packages=PackageSource()))
    install = next(s for s in default if s.name.startswith("install prefect")).commands[0].script
    assert "--index-url" not in install and "--find-links" not in install


# --- workers ----------------------------------------------------------------------------------------

def test_parse_worker_facts():
    want = desired(workers=workers(2))
    facts = parse_facts(converged_output(want) + "worker_unit=prefect-worker@gpu.service,disabled,failed,yes\n")
    assert facts.hostname == "ph-7" and facts.venv_prefect_aws_version == "0.7.12"
    assert facts.worker_applied_digest == want.worker_digest
    assert [(w.name, w.instance, w.enabled, w.running, w.need_daemon_reload) for w in facts.workers] == [
        ("prefect-worker@1.service", "1", "enabled", True, False),
        ("prefect-worker@2.service", "2", "enabled", True, False),
        ("prefect-worker@gpu.service", "gpu", "disabled", False, True)]
    assert parse_facts(FRESH).workers == () and parse_facts(FRESH).worker_env_sha256 is None


def test_fresh_host_gets_the_worker_steps_after_the_server():
    steps = plan_workers(parse_facts(FRESH), desired())
    assert names(steps) == [f"write {sf.WORKER_ENV_FILE}", f"install {sf.WORKER_UNIT_TEMPLATE}",
                            "enable prefect-worker@1", "start prefect-worker@1"]
    assert [step.starts_workers for step in steps] == [False, False, False, True]
    start = steps[-1].commands[0].script
    assert start.startswith("systemctl restart prefect-worker@1.service && ")
    assert start.endswith(f"{desired().worker_digest} > {sf.WORKER_APPLIED_DIGEST_FILE}")


def test_host_from_before_the_workers_gets_prefect_aws_without_a_server_restart():
    """A host bootstrapped before workers existed: prefect is there, prefect-aws and the units not."""
    want = desired()
    old = converged_output(want).replace("venv_prefect_aws_version=0.7.12\n", "")
    old = "".join(line + "\n" for line in old.splitlines() if not line.startswith("worker_"))
    facts = parse_facts(old)
    assert names(plan(facts, want)) == ["install prefect-aws 0.7.12", "compile bytecode (in the background)"]
    install = plan(facts, want)[0].commands[0].script
    assert "prefect==3.9.1 prefect-aws==0.7.12" in install  # both pinned: uv keeps them consistent
    assert names(plan_workers(facts, want)) == [f"write {sf.WORKER_ENV_FILE}", f"install {sf.WORKER_UNIT_TEMPLATE}",
                                                "enable prefect-worker@1", "start prefect-worker@1"]


@pytest.mark.parametrize("change, expected", [
    (lambda w: dataclasses.replace(w, workers=workers(env_text=sf.worker_env_file_text(
        auth_string="admin:rotated", ui_url="https://203.0.113.7", result_settings=RESULTS, tls=True))),
     [f"write {sf.WORKER_ENV_FILE}", "restart prefect-worker@1"]),
    (lambda w: dataclasses.replace(w, workers=workers(unit_text=w.workers.unit_text + "# edited\n")),
     [f"install {sf.WORKER_UNIT_TEMPLATE}", "restart prefect-worker@1"]),
    (lambda w: dataclasses.replace(w, prefect_version="3.9.2"), ["restart prefect-worker@1"]),
    (lambda w: dataclasses.replace(w, prefect_aws_version="0.7.13"), ["restart prefect-worker@1"]),
    (lambda w: dataclasses.replace(w, workers=workers(3)),
     ["enable prefect-worker@{2,3}", "start prefect-worker@{2,3}"]),
])
def test_one_worker_change_gives_only_its_steps(change, expected):
    before = desired()
    facts = parse_facts(converged_output(before))
    assert names(plan_workers(facts, change(before))) == expected


def test_a_new_prefect_aws_reinstalls_without_restarting_the_server():
    before = desired()
    facts = parse_facts(converged_output(before))
    assert names(plan(facts, dataclasses.replace(before, prefect_aws_version="0.7.13"))) == [
        "install prefect-aws 0.7.13", "compile bytecode (in the background)"]


def test_fewer_workers_stop_and_disable_the_rest_but_not_hand_made_instances():
    facts = parse_facts(converged_output(desired(workers=workers(3)))
                        + "worker_unit=prefect-worker@gpu.service,enabled,active,no\n")
    steps = plan_workers(facts, desired(workers=workers(1)))
    assert names(steps) == ["stop and disable prefect-worker@{2,3}"]
    assert steps[0].commands[0].script == \
        "systemctl disable --quiet --now prefect-worker@2.service prefect-worker@3.service"
    assert steps[0].stops_workers == ("2", "3")
    none = plan_workers(facts, desired(workers=workers(0)))
    assert names(none) == ["stop and disable prefect-worker@{1,2,3}"]


def test_stopped_or_disabled_extra_instances_are_left_alone():
    facts = parse_facts(converged_output(desired()) + "worker_unit=prefect-worker@2.service,disabled,failed,no\n")
    assert plan_workers(facts, desired()) == []


def test_a_dead_worker_is_started_alone():
    want = desired(workers=workers(2))
    facts = parse_facts(converged_output(want).replace("prefect-worker@2.service,enabled,active",
                                                       "prefect-worker@2.service,enabled,failed"))
    steps = plan_workers(facts, want)
    assert names(steps) == ["start prefect-worker@2"] and steps[0].starts_workers
    assert steps[0].commands[0].script == "systemctl start prefect-worker@2.service"


def test_an_auto_restarting_worker_counts_as_running():
    want = desired()
    facts = parse_facts(converged_output(want).replace(",enabled,active,", ",enabled,activating,"))
    assert plan_workers(facts, want) == []


def test_a_disabled_worker_is_enabled_again():
    want = desired()
    facts = parse_facts(converged_output(want).replace(",enabled,active,", ",disabled,active,"))
    assert names(plan_workers(facts, want)) == ["enable prefect-worker@1"]


def test_pending_daemon_reload_of_a_worker_reinstalls_the_template():
    want = desired()
    facts = parse_facts(converged_output(want).replace(",enabled,active,no", ",enabled,active,yes"))
    steps = plan_workers(facts, want)
    assert names(steps) == [f"install {sf.WORKER_UNIT_TEMPLATE}"]
    assert steps[0].commands[-1].script == "systemctl daemon-reload"


def test_interrupted_worker_restart_is_done_again():
    want = desired()
    facts = parse_facts(converged_output(want).replace(f"worker_applied_digest={want.worker_digest}\n", ""))
    assert names(plan_workers(facts, want)) == ["restart prefect-worker@1"]


def test_worker_secrets_only_travel_on_stdin():
    steps = plan_workers(parse_facts(FRESH), desired())
    password = AUTH.split(":", 1)[1]
    for step in steps:
        for command in step.commands:
            assert password not in command.script and password not in command.label
    env_command = steps[0].commands[0]
    assert f"PREFECT_API_AUTH_STRING={sf.env_value(AUTH)}\n".encode() in env_command.stdin
    assert "chmod 0600" in env_command.script and f"mv -f \"$tmp\" {sf.WORKER_ENV_FILE}" in env_command.script


def test_caddy_facts_come_in_the_same_round_trip():
    from prefect_host.facts import FACTS_SCRIPT
    from prefect_host.tls import CADDY_FACTS_SCRIPT

    assert CADDY_FACTS_SCRIPT in FACTS_SCRIPT
    assert FACTS_SCRIPT.index(CADDY_FACTS_SCRIPT) < FACTS_SCRIPT.rindex('echo "facts_end=1"')  # inside ROOT_FACTS
    facts = parse_facts(FRESH.replace("facts_end=1", "caddy_package=installed 2.6.2-13+b1\n"
                                                     "caddy_ActiveState=active\nfacts_end=1"))
    assert (facts.caddy.package_version, facts.caddy.active_state) == ("2.6.2-13+b1", "active")
    assert parse_facts(FRESH).caddy.package_version is None
