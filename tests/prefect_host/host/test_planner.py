"""The planner on a made-up service: what each kind of declared thing gives when it is missing or
changed, and nothing on a converged host; and the apt install, run against a stand-in apt-get."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from prefect_host.host.model import AptPackage, Service, Units, User
from prefect_host.host.packages import APT_LOCK_TIMEOUT
from tests.prefect_host.host.host_samples import (
    WEB_APPLIED,
    WEB_CONFIG,
    WEB_NOTES,
    WEB_RETIRED,
    WEB_SITE,
    WEB_UNIT,
    WEB_UNIT_PATH,
    WEB_VENV,
    assert_shell_parses,
    converged_output,
    fresh_output,
    lanes_for,
    names,
    put_on_path,
    replace_file,
    scripts,
    steps_for,
    unit_line,
    web_service,
)

CONVERGED = converged_output(web_service())


def test_converged_host_gets_no_steps():
    assert lanes_for(CONVERGED, web_service())[0].steps == ()
    assert steps_for(converged_output(web_service(venv=WEB_VENV)), web_service(venv=WEB_VENV)) == []


def test_fresh_host_gets_what_the_service_needs_then_what_runs_it():
    (lane,) = lanes_for(fresh_output(web_service()), web_service())
    # Plain files before the unit that names them; a file that must not exist and does not is left alone.
    assert names(lane.prepare) == [
        "create service user web",
        "install nginx-light (apt)",
        f"write {WEB_CONFIG}",
        f"write {WEB_SITE}",
        f"write {WEB_NOTES}",
        f"write {WEB_UNIT_PATH}",
    ]
    assert names(lane.start) == [f"enable {WEB_UNIT}", "start the web server"]
    assert [c.script for c in lane.prepare[-1].commands][-1] == "systemctl daemon-reload"
    assert lane.start[-1].starts == "web" and [step.starts for step in lane.prepare] == [None] * 6
    config = lane.prepare[2].commands[0]
    assert config.stdin == b"port=8080\n" and "chmod 0600" in config.script and "chown root:root" in config.script


@pytest.mark.parametrize(
    "changed, expected",
    [
        (web_service(config="port=9090\n"), [f"write {WEB_CONFIG}", "restart the web server"]),
        (web_service(site="site B\n"), [f"write {WEB_SITE}", "reload the web server"]),
        (web_service(notes="other notes\n"), [f"write {WEB_NOTES}"]),
        (web_service(version="1.1"), ["restart the web server"]),
        # A file that must go is removed, and what it triggers happens.
        (web_service(site=None), [f"remove {WEB_SITE}", "reload the web server"]),
        (web_service(unit="[Service]\nExecStart=/bin/true\n"), [f"write {WEB_UNIT_PATH}", "restart the web server"]),
    ],
)
def test_each_trigger_gives_only_its_steps(changed, expected):
    assert names(steps_for(CONVERGED, changed)) == expected


def test_a_reload_records_both_digests_once_systemd_accepted_it():
    (_, reload) = steps_for(CONVERGED, web_service(site="site B\n"))
    record = web_service(site="site B\n").applied_record()
    assert reload.commands[0].script == (
        f"systemctl reload {WEB_UNIT} && mkdir -p /etc/web && printf '%s\\n' '{record}' > {WEB_APPLIED}"
    )
    assert "restart" not in scripts([reload]) and reload.starts is None


def test_a_file_that_must_not_exist_is_removed_without_a_restart_when_the_declaration_is_unchanged():
    present = CONVERGED.replace(f"file:{WEB_RETIRED}=\n", f"file:{WEB_RETIRED}={'e' * 64}\n")
    (remove,) = steps_for(present, web_service())
    assert remove.name == f"remove {WEB_RETIRED}"
    assert [c.script for c in remove.commands] == [f"rm -f {WEB_RETIRED}"]


def test_a_systemd_file_is_followed_by_one_daemon_reload():
    steps = steps_for(CONVERGED, web_service(unit="[Service]\nExecStart=/bin/true\n"))
    assert [c.label for c in steps[0].commands] == [f"write {WEB_UNIT_PATH}", "systemctl daemon-reload"]
    # systemd has pending changes of its own: the unit is written again and systemd reloaded, nothing restarted.
    pending = CONVERGED.replace(unit_line(WEB_UNIT), unit_line(WEB_UNIT, need_reload="yes"))
    assert names(steps_for(pending, web_service())) == [f"write {WEB_UNIT_PATH}"]


def test_a_stopped_unit_is_started_and_a_disabled_one_enabled():
    stopped = CONVERGED.replace(unit_line(WEB_UNIT), unit_line(WEB_UNIT, state="inactive"))
    assert names(steps_for(stopped, web_service(site="site B\n"))) == [f"write {WEB_SITE}", "start the web server"]
    disabled = CONVERGED.replace(unit_line(WEB_UNIT), unit_line(WEB_UNIT, enabled="disabled"))
    assert names(steps_for(disabled, web_service())) == [f"enable {WEB_UNIT}"]


def test_a_user_whose_home_is_a_state_directory_gets_no_directory_from_its_step():
    """systemd creates and chowns a StateDirectory= home at start (recursively when it belonged to
    another user): the user step must not chown its top, nor wait for it to exist."""
    plain = web_service()
    own = dataclasses.replace(plain, users=(dataclasses.replace(plain.users[0], state_directory=True),))
    create = steps_for(fresh_output(own), own)[0]
    assert create.name == "create service user web"
    assert "useradd --system --user-group --home-dir /var/lib/web --no-create-home" in create.commands[0].script
    assert "install -d" not in create.commands[0].script
    plain_create = steps_for(fresh_output(plain), plain)[0]
    assert "install -d -o web -g web -m 0750 /var/lib/web" in plain_create.commands[0].script
    # The user exists, its home not (yet): nothing to do for a state directory, the user step otherwise.
    no_home = CONVERGED.replace("dir:/var/lib/web=1\n", "")
    assert steps_for(no_home, own) == []
    assert names(steps_for(no_home, plain)) == ["create service user web"]
    assert_shell_parses(steps_for(fresh_output(own), own))


def retired(**changes) -> Service:
    return dataclasses.replace(web_service(), absent="retired", **changes)


@pytest.mark.parametrize(
    "enabled, state, stopped",
    [
        ("enabled", "active", True),
        ("disabled", "activating", True),
        ("enabled", "inactive", True),
        ("disabled", "inactive", False),
        ("", "inactive", False),
    ],
)
def test_an_absent_service_is_stopped_and_disabled_only_if_running_or_enabled(enabled, state, stopped):
    host = CONVERGED.replace(unit_line(WEB_UNIT), unit_line(WEB_UNIT, enabled, state))
    lane = lanes_for(host, retired())[0]
    assert lane.prepare == () and names(lane.start) == (["stop and disable web.service (retired)"] if stopped else [])
    if stopped:
        assert lane.start[0].commands[0].script == f"systemctl disable --now --quiet {WEB_UNIT} && rm -f {WEB_APPLIED}"


def test_a_venv_two_services_share_is_planned_once():
    jobs = Service(
        "jobs",
        venv=WEB_VENV,
        units=Units(("jobs.service",), applied="/etc/jobs.applied", display="jobs"),
        version=WEB_VENV.pins_text,
    )
    web_lane, jobs_lane = lanes_for(fresh_output(web_service(venv=WEB_VENV), jobs), web_service(venv=WEB_VENV), jobs)
    assert names(web_lane.prepare)[2:5] == [
        "install uv 0.13.8",
        "create the virtualenv",
        "install web-app 2.0 and web-plugins 1.1",
    ]
    assert names(web_lane.start)[-1] == "compile bytecode (in the background)"
    assert names(jobs_lane.steps) == ["enable jobs.service", "start jobs"]
    # A new pin: installed by the first lane, and each service restarts onto it.
    newer = dataclasses.replace(WEB_VENV, pins=(("web-app", "2.1"), ("web-plugins", "1.1")))
    converged = converged_output(web_service(venv=WEB_VENV), jobs)
    web_lane, jobs_lane = lanes_for(
        converged, web_service(venv=newer), dataclasses.replace(jobs, venv=newer, version=newer.pins_text)
    )
    assert names(web_lane.steps) == ["install web-app 2.1", "compile bytecode (in the background)"]
    assert names(jobs_lane.steps) == ["restart jobs"]


def test_lanes_follow_the_declaration_order():
    other = Service("other", units=Units(("other.service",), applied="/etc/other.applied", display="other"))
    lanes = lanes_for(fresh_output(web_service(), other), other, web_service())
    assert [lane.service.name for lane in lanes] == ["other", "web"]
    assert names(steps_for(fresh_output(web_service(), other), other, web_service()))[:2] == [
        "enable other.service",
        "start other",
    ]


def test_shell_of_every_step_parses():
    assert_shell_parses(steps_for(fresh_output(web_service(venv=WEB_VENV)), web_service(venv=WEB_VENV)))
    assert_shell_parses(steps_for(CONVERGED, web_service(config=None, site="site B\n", version="2")))
    assert_shell_parses(steps_for(CONVERGED, retired()))
    assert_shell_parses(steps_for(fresh_output(web_service()), replace_file(web_service(), WEB_NOTES, "it's $HOME")))


# --- the apt install, run against a stand-in apt-get ------------------------------------------------
MIRROR = "deb [trusted=yes] http://10.77.0.1:8123/ ./"
STAND_IN_APT_GET = """#!/bin/sh
# Records each call; fails the first $FAIL_TIMES update calls like a mirror mid-sync would.
echo "$*" >> "$LOG"
for arg in "$@"; do
  case "$arg" in Dir::Etc::SourceList=*) cat "${arg#Dir::Etc::SourceList=}" >> "$LOG.sources";; esac
done
if [ "${*##* }" = update ]; then
  count=$(($(cat "$LOG.updates" 2>/dev/null || echo 0) + 1)); echo $count > "$LOG.updates"
  [ "$count" -le "$FAIL_TIMES" ] && { echo "E: Failed to fetch (simulated)" >&2; exit 100; }
fi
exit 0
"""
STAND_IN_SLEEP = '#!/bin/sh\necho "sleep $1" >> "$LOG"\n'  # records the back-off instead of waiting


def run_install(tmp_path: Path, fail_times: int, apt_source: str | None) -> tuple[subprocess.CompletedProcess, Path]:
    proxy = Service("proxy", packages=(AptPackage("caddy", source=apt_source),))
    (step,) = steps_for(fresh_output(proxy), proxy)
    (install,) = step.commands
    assert step.name == "install caddy (apt)" and install.timeout >= 900
    assert f"-o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}" in install.script
    log = tmp_path / "apt.log"
    env = put_on_path(tmp_path / "bin", {"apt-get": STAND_IN_APT_GET, "sleep": STAND_IN_SLEEP})
    env.update(LOG=str(log), FAIL_TIMES=str(fail_times), TMPDIR=str(tmp_path))
    return subprocess.run(["sh", "-c", install.script], env=env, capture_output=True, text=True, timeout=30), log


def test_install_retries_transient_failures(tmp_path):
    result, log = run_install(tmp_path, fail_times=2, apt_source=None)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[-1] for c in calls] == ["update", "10", "update", "20", "update", "caddy"]
    assert calls[1] == "sleep 10" and calls[3] == "sleep 20"


def test_install_gives_up_after_three_attempts(tmp_path):
    result, log = run_install(tmp_path, fail_times=5, apt_source=None)
    assert result.returncode == 1
    assert len([c for c in log.read_text().splitlines() if c.endswith("update")]) == 3
    assert "Failed to fetch" in result.stderr


def test_install_from_a_mirror_reads_only_that_source_in_lists_of_its_own(tmp_path):
    result, log = run_install(tmp_path, fail_times=0, apt_source=MIRROR)
    assert result.returncode == 0, result.stderr
    update, install = log.read_text().splitlines()
    for call in (update, install):
        assert "Dir::Etc::SourceParts=" in call and "Dir::State::Lists=" in call and "Dir::Cache::pkgcache=" in call
        assert "/var/lib/apt/lists" not in call
    assert Path(f"{log}.sources").read_text() == f"{MIRROR}\n{MIRROR}\n"
    # Its private apt directory is gone afterwards.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tmp.")] == []


def test_a_user_two_services_declare_is_created_once_by_the_first():
    user = User("web", "/var/lib/web", "Web server")
    first, second = Service("first", users=(user,)), Service("second", users=(user,))
    lanes = lanes_for(fresh_output(first, second), first, second)
    assert names(lanes[0].steps) == ["create service user web"] and lanes[1].steps == ()
