"""The facts script (built from the declarations) and its parsing: a pure function, from sample
outputs; and the script itself, run on this machine with stand-ins for sudo and systemctl."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from prefect_host.errors import HostUnsupported
from prefect_host.host.facts import UnitState, facts_script, gather_facts, parse_facts, unit_states
from prefect_host.host.model import BYTECODE_UNIT, Seed, Service, Units
from tests.prefect_host.host.host_samples import (
    END,
    HOST,
    VENV_PYTHON,
    WEB_APPLIED,
    WEB_CONFIG,
    WEB_UNIT,
    WEB_VENV,
    RecordingSession,
    converged_output,
    fresh_output,
    put_on_path,
    run_facts_here,
    web_service,
)

WEB = web_service(venv=WEB_VENV)
JOBS = Service(
    "jobs",
    units=Units(
        ("job@1.service", "job@2.service"), applied="/etc/jobs.applied", display="job@{1,2}", template="job@.service"
    ),
    fact_script='echo "jobs_queue=$(echo 7)"\n',
)
FRESH = fresh_output(WEB)

# What the stand-in systemctl does; stand_in_systemctl() sets its LISTED and STATES.
_SYSTEMCTL_BODY = """\
case "$1" in
  list-units) for unit in $LISTED; do echo "$unit loaded active running A job"; done; exit 0 ;;
  show) ;;
  *) exit 1 ;;
esac
first=yes
for unit in "$@"; do
  case "$unit" in *.service) ;; *) continue ;; esac
  [ "$first" = yes ] || echo
  first=no
  enabled= active=inactive
  eval "$(printf '%s\\n' "$STATES" | awk -v u="$unit" '$1 == u { print "enabled=" $2 " active=" $3 }')"
  printf 'Id=%s\\nUnitFileState=%s\\nActiveState=%s\\nNeedDaemonReload=no\\nMainPID=4242\\nNRestarts=2\\n' \\
    "$unit" "$enabled" "$active"
  echo "ActiveEnterTimestamp=@1767225600"
done
"""


def stand_in_systemctl(listed: str, states: str) -> str:
    """systemctl as the facts script calls it: `list-units` lists `listed`; `show` prints each unit named
    on its command line from `states` ("unit UnitFileState ActiveState" lines), a blank line between units."""
    return f"#!/bin/sh\nLISTED='{listed}'\nSTATES='{states}'\n" + _SYSTEMCTL_BODY


# --- parsing ---------------------------------------------------------------------------------------
def test_parse_fresh_host():
    facts = parse_facts(FRESH)
    assert facts.sudo_ok and facts.login_user == "admin" and facts.get("os_version_id") == "13"
    assert facts.python3 == "/usr/bin/python3" and facts.get("python3_version") == "3.13.5"
    assert facts.cloud_init_status is None  # no cloud-init line: not installed
    assert facts.get(f"uv:{WEB_VENV.uv_path}") is None and facts.get(f"venv:{WEB_VENV.path}:python") is None
    assert facts.venv_version(WEB_VENV, "web-app") is None
    assert facts.user_home("web") is None and not facts.dir_exists("/var/lib/web")
    assert facts.file_sha256(WEB_CONFIG) is None and facts.applied(WEB_APPLIED) is None
    assert facts.unit(WEB_UNIT).enabled == "" and facts.unit(WEB_UNIT).main_pid == 0
    assert facts.unit("unknown.service").active_state == "" and not facts.unit("unknown.service").running


def test_parse_converged_host():
    facts = parse_facts(converged_output(WEB))
    assert facts.get(f"uv:{WEB_VENV.uv_path}") == "0.13.8" and facts.venv_version(WEB_VENV, "web-app") == "2.0"
    assert facts.venv_version(WEB_VENV, "web-plugins") == "1.1"  # dist-info names escape "-" as "_"
    assert facts.get(f"venv:{WEB_VENV.path}:python") == VENV_PYTHON and facts.dir_exists("/var/lib/web")
    unit = facts.unit(WEB_UNIT)
    assert (unit.active_state, unit.main_pid, unit.restarts, unit.since) == ("active", 4242, 0, 1767225600.0)
    assert facts.applied(WEB_APPLIED) == WEB.applied_record() and not unit.need_daemon_reload
    assert facts.hostname == "ph-7" and facts.unit(BYTECODE_UNIT).active_state == "inactive"


def test_parse_unit_lines_that_are_short_or_odd():
    facts = parse_facts(HOST + "unit=a.service,enabled,failed,yes,x,,@\nunit=b.service\n" + END)
    a = facts.unit("a.service")
    assert (a.enabled, a.active_state, a.need_daemon_reload) == ("enabled", "failed", True)
    assert (a.main_pid, a.restarts) == (0, 0)  # not numbers, or missing: 0
    assert a.since == float("inf") and not a.running  # never active: no timestamp
    assert facts.unit("b.service") == UnitState("b.service")
    assert facts.unit("job@12.service").instance == "12" and facts.unit("b.service").instance == ""


def test_apt_version_is_that_of_an_installed_package_only():
    facts = parse_facts(HOST + "apt:a=installed 1.2-3\napt:b=config-files 1.0\napt:c=\n" + END)
    assert (facts.apt_version("a"), facts.apt_version("b"), facts.apt_version("c"), facts.apt_version("d")) == (
        "1.2-3",
        None,
        None,
        None,
    )


def test_parse_host_without_sudo():
    facts = parse_facts("login_user=bob\nsudo=no\nsudo_error=sudo: a password is required\nfacts_end=1\n")
    assert not facts.sudo_ok and facts.sudo_error == "sudo: a password is required"


def test_cut_short_output_is_an_error():
    with pytest.raises(HostUnsupported, match="stopped early"):
        parse_facts(FRESH.replace(END, ""))


def test_cloud_init_states():
    assert parse_facts("cloud_init_status=running\n" + FRESH).cloud_init_status == "running"
    assert parse_facts("cloud_init_status=\n" + FRESH).cloud_init_status == "unknown"


# --- the script ------------------------------------------------------------------------------------
def test_facts_script_has_one_line_per_declared_thing_and_parses():
    script = facts_script([WEB, JOBS])
    lines = script.splitlines()

    def count(key: str) -> int:
        return sum(f'echo "{key}=' in line for line in lines)

    assert [line for line in lines if line.startswith('echo "file:')] == [
        f'echo "file:{file.path}=$(sha {file.path})"' for file in WEB.files
    ]
    assert (count("user:web"), count("dir:/var/lib/web"), count("apt:nginx-light")) == (1, 1, 1)
    assert (count(f"applied:{WEB_APPLIED}"), count("applied:/etc/jobs.applied")) == (1, 1)
    venv_keys = ["python", "bytecode", "web_app", "web_plugins"]  # dist-info names escape "-" as "_"
    assert [count(f"uv:{WEB_VENV.uv_path}")] + [count(f"venv:{WEB_VENV.path}:{key}") for key in venv_keys] == [1] * 5
    # One `systemctl show` each: the venv's bytecode job, the web unit, the job template's instances.
    shows = [line for line in lines if "systemctl show" in line]
    assert len(shows) == 3 and BYTECODE_UNIT in shows[0] and WEB_UNIT in shows[1] and "$units" in shows[2]
    assert JOBS.fact_script in script and script.index(JOBS.fact_script) < script.rindex('echo "facts_end=1"')
    assert subprocess.run([shutil.which("dash") or "sh", "-n", "-c", script]).returncode == 0


def test_facts_script_reads_units_and_template_instances_through_systemctl(tmp_path):
    """Run for real, with a stand-in systemctl: the awk that turns `systemctl show` into unit= lines."""
    states = "web.service enabled active\njob@1.service enabled active\njob@3.service enabled failed"
    systemctl = stand_in_systemctl("job@1.service job@3.service", states)
    facts = run_facts_here(facts_script([WEB, JOBS]), tmp_path / "bin", {"systemctl": systemctl})
    web = facts.unit(WEB_UNIT)
    assert (web.enabled, web.active_state, web.main_pid, web.restarts, web.since) == (
        "enabled",
        "active",
        4242,
        2,
        1767225600.0,
    )
    # The wanted instances, and the one systemd lists beyond them (to stop it).
    assert sorted(name for name in facts.units if name.startswith("job@")) == [
        "job@1.service",
        "job@2.service",
        "job@3.service",
    ]
    assert (facts.unit("job@2.service").enabled, facts.unit("job@3.service").active_state) == ("", "failed")
    assert facts.get("jobs_queue") == "7" and facts.login_user and facts.sudo_ok


def test_facts_script_says_when_sudo_refuses(tmp_path):
    refusing = "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n"
    facts = run_facts_here(facts_script([WEB]), tmp_path / "bin", {"sudo": refusing})
    assert not facts.sudo_ok and facts.sudo_error == "sudo: a password is required"


def test_unit_states_reads_the_units_in_one_command(tmp_path):
    """To watch a start: the same `systemctl show` as the facts script, run here with a stand-in systemctl."""
    env = put_on_path(tmp_path / "bin", {"systemctl": stand_in_systemctl("", "a.service enabled failed")})

    def run_here() -> str:
        return subprocess.run(["sh", "-c", session.ran[-1].script], env=env, capture_output=True, text=True).stdout

    session = RecordingSession(on_run={"systemctl show": run_here})
    states = unit_states(session, ["a.service", "b.service"])
    assert len(session.ran) == 1 and not session.ran[0].sudo
    assert (states["a.service"].active_state, states["a.service"].restarts) == ("failed", 2)
    assert (states["b.service"].enabled, states["b.service"].active_state) == ("", "inactive")


def test_gather_facts_runs_the_script_in_one_round_trip():
    session = RecordingSession(converged_output(WEB))
    facts = gather_facts(session, [WEB])
    (ran,) = session.ran
    assert ran.script == "sh -s" and ran.stdin == facts_script([WEB]) and not ran.sudo
    assert facts.applied(WEB_APPLIED) == WEB.applied_record()


def test_a_venv_two_services_share_is_read_once():
    from tests.prefect_host.services.service_samples import server, worker_set

    script = facts_script([server(), worker_set()])
    assert script.count("uv:/opt/prefect-host/bin/uv=") == 1
    assert script.count("venv:/opt/prefect-host/venv:python=") == 1


def test_a_seeded_service_reads_whether_its_state_exists(tmp_path):
    """Run for real: the seed's path is reported only once it exists (then its steps never run)."""
    state = tmp_path / "state.db"
    seeded = Service("seeded", seed=Seed(str(state), ()))
    assert run_facts_here(facts_script([seeded]), tmp_path / "bin").get(f"exists:{state}") is None
    state.write_text("")
    assert run_facts_here(facts_script([seeded]), tmp_path / "bin").get(f"exists:{state}") == "1"
