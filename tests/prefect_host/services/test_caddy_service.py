"""Caddy as the host declares it (Debian's package, our Caddyfile, a sandboxing drop-in, reloads for
configuration changes; with tls internal, the constrained CA's configuration, script and drop-in),
the steps planned from the host's facts, and the CA root read from the host."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from prefect_host import internal_ca
from prefect_host.caddy import (
    ACME_CA_ROOT_PATH,
    CADDY_OWN_CA_ROOT_PATH,
    CADDYFILE_PATH,
    HARDENING_DROPIN,
    HARDENING_DROPIN_PATH,
    INTERNAL_CA_ROOT_PATH,
    CaddySettings,
    render_caddyfile,
)
from prefect_host.console import Console
from prefect_host.errors import CommandFailed
from prefect_host.host.apply import apply
from prefect_host.host.facts import facts_script, parse_facts
from prefect_host.host.model import AptPackage, Service, Step, sha256_text
from prefect_host.host.planner import plan
from prefect_host.services import caddy, prefect_server
from prefect_host.tls import UPSTREAM_PORT, TlsSettings
from tests.prefect_host.host.host_samples import (
    END,
    HOST,
    PACKAGE_VERSION,
    RecordingSession,
    assert_shell_parses,
    converged_output,
    fresh_output,
    names,
    replace_file,
    run_facts_here,
    scripts,
    steps_for,
    unit_line,
)
from tests.prefect_host.internal_ca_support import earlier_release
from tests.prefect_host.services.service_samples import server, worker_set

IP = "203.0.113.7"
DOMAIN = "prefect.example.com"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
MIRROR = "deb [trusted=yes] http://10.77.0.1:8123/ ./"
# A CA certificate as the host holds it: Caddy's own root, or the root of a private ACME directory. Its
# content does not matter here (tls.py checks certificates): the host only stores and reads it.
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBsample\n-----END CERTIFICATE-----\n"
INTERNAL = TlsSettings(mode="internal", address=IP)
ACME = TlsSettings(mode="acme", address=DOMAIN, acme_email="ops@example.com", acme_directory=LETS_ENCRYPT)
PEBBLE = dataclasses.replace(
    ACME, acme_directory="https://10.77.0.1:14000/dir", acme_ca_root_pem=CA_PEM, apt_source=MIRROR
)
OFF = TlsSettings(mode="off", address=None, apt_source=MIRROR)


def front(settings: TlsSettings) -> Service:
    """Caddy as the bootstrap declares it: (re)started only after Prefect has left port 4200."""
    return caddy.caddy_service(settings, start_after=(prefect_server.NAME,))


def caddy_steps(output: str, settings: TlsSettings) -> list[Step]:
    return steps_for(output, front(settings))


def caddy_line(state: str = "active", enabled: str = "enabled", need_reload: str = "no") -> str:
    return unit_line(caddy.UNIT, enabled, state, need_reload)


FRESH = fresh_output(front(INTERNAL))


def converged(settings: TlsSettings) -> str:
    return converged_output(front(settings))


# --- the declaration -------------------------------------------------------------------------------
def test_internal_serves_our_caddyfile_in_the_sandbox_from_the_constrained_ca():
    declared = front(INTERNAL)
    files = {file.path: file for file in declared.files}
    assert files[CADDYFILE_PATH].text == render_caddyfile(CaddySettings("internal", IP, UPSTREAM_PORT))
    assert "tls internal" in files[CADDYFILE_PATH].text and "\tpki {\n" in files[CADDYFILE_PATH].text
    assert f"reverse_proxy 127.0.0.1:{UPSTREAM_PORT}" in files[CADDYFILE_PATH].text
    assert files[ACME_CA_ROOT_PATH].text is None and files[HARDENING_DROPIN_PATH].text == HARDENING_DROPIN
    assert files[internal_ca.CONFIG_PATH].text == internal_ca.ca_config(IP)
    assert files[internal_ca.SCRIPT_PATH].text == internal_ca.generator_script()
    assert files[internal_ca.DROPIN_PATH].text == internal_ca.DROPIN
    # The configuration and the CA's are reloaded (ExecReload makes the CA first); the sandbox needs a
    # restart (and systemd to read it first); the script and its drop-in change nothing by themselves.
    triggers = [(f.path, f.on_change, f.systemd) for f in declared.files]
    assert triggers == [
        (CADDYFILE_PATH, "reload", False),
        (ACME_CA_ROOT_PATH, "reload", False),
        (internal_ca.CONFIG_PATH, "reload", False),
        (internal_ca.SCRIPT_PATH, "none", False),
        (HARDENING_DROPIN_PATH, "restart", True),
        (internal_ca.DROPIN_PATH, "none", True),
    ]
    assert declared.packages == (AptPackage("caddy"), AptPackage("openssl")) and declared.units.reload
    assert declared.start_after == (prefect_server.NAME,) and not declared.absent


def test_acme_declares_nothing_of_the_internal_ca():
    """So a switch between the modes is the reload it was; files left from tls internal stay, unused."""
    for settings in (ACME, PEBBLE):
        declared = front(settings)
        assert {f.path for f in declared.files} == {CADDYFILE_PATH, ACME_CA_ROOT_PATH, HARDENING_DROPIN_PATH}
        assert [p.name for p in declared.packages] == ["caddy"]


def test_a_private_acme_directory_adds_its_root_and_the_mirror_installs_caddy():
    declared = front(PEBBLE)
    files = {file.path: file.text for file in declared.files}
    assert f"acme_ca_root {ACME_CA_ROOT_PATH}" in files[CADDYFILE_PATH]
    assert "acme_ca https://10.77.0.1:14000/dir" in files[CADDYFILE_PATH]
    assert files[ACME_CA_ROOT_PATH] == CA_PEM and declared.packages == (AptPackage("caddy", MIRROR),)
    assert "acme_ca_root" not in {file.path: file.text for file in front(ACME).files}[CADDYFILE_PATH]
    # The root Caddy trusts is part of what a reload applies, not of what a restart does.
    other_root = front(dataclasses.replace(PEBBLE, acme_ca_root_pem=CA_PEM + "\n"))
    assert other_root.reload_digest() != declared.reload_digest()
    assert other_root.restart_digest() == declared.restart_digest()


def test_plaintext_serves_no_caddy():
    declared = caddy.caddy_service(OFF)
    assert declared.absent == "tls off" and declared.files == () and declared.packages == ()
    assert declared.units.names == (caddy.UNIT,)


@pytest.mark.parametrize("settings", [ACME, PEBBLE])
def test_applied_record_is_the_marker_earlier_releases_recorded(settings):
    """ "<drop-in digest> <configuration digest>": a tls acme host converged by an earlier release sees no change."""
    declared = front(settings)
    caddyfile = render_caddyfile(caddy.caddy_settings(settings))
    config = hashlib.sha256("\0".join((caddyfile, settings.acme_ca_root_pem or "")).encode()).hexdigest()
    assert declared.applied_record() == f"{sha256_text(HARDENING_DROPIN)} {config}"


def test_internal_reloads_with_the_ca_configuration_and_restarts_for_nothing_new():
    """The CA's configuration is part of what a reload applies; the restart digest is the sandbox's
    alone, as for earlier releases: a host they converged is reloaded once (onto the new CA), not restarted."""
    declared = front(INTERNAL)
    caddyfile = render_caddyfile(caddy.caddy_settings(INTERNAL))
    config = hashlib.sha256("\0".join((caddyfile, "", internal_ca.ca_config(IP))).encode()).hexdigest()
    assert declared.applied_record() == f"{sha256_text(HARDENING_DROPIN)} {config}"


# --- facts -----------------------------------------------------------------------------------------
def test_parse_facts_of_a_host_with_caddy_running():
    root = base64.b64encode(CA_PEM.encode()).decode()
    facts = parse_facts(
        HOST + f"apt:caddy=installed {PACKAGE_VERSION}\nfile:{CADDYFILE_PATH}={'a' * 64}\n"
        f"file:{HARDENING_DROPIN_PATH}={'b' * 64}\nfile:{ACME_CA_ROOT_PATH}=\n"
        f"applied:{caddy.APPLIED_FILE}=x y\n{caddy_line(need_reload='yes')}"
        f"caddy_internal_ca_root_b64={root}\ncaddy_own_ca_root_b64={root}\n" + END
    )
    assert facts.apt_version("caddy") == PACKAGE_VERSION
    assert (facts.file_sha256(CADDYFILE_PATH), facts.file_sha256(HARDENING_DROPIN_PATH)) == ("a" * 64, "b" * 64)
    assert facts.file_sha256(ACME_CA_ROOT_PATH) is None and facts.applied(caddy.APPLIED_FILE) == "x y"
    unit = facts.unit(caddy.UNIT)
    assert (unit.enabled, unit.active_state, unit.need_daemon_reload) == ("enabled", "active", True)
    assert caddy.internal_ca_root_pem(facts) == CA_PEM and caddy.caddy_own_ca_root_pem(facts) == CA_PEM


def test_parse_facts_of_a_fresh_host_and_of_a_removed_package():
    fresh = parse_facts(FRESH)
    assert fresh.apt_version("caddy") is None and fresh.unit(caddy.UNIT).enabled == ""
    assert fresh.unit(caddy.UNIT).active_state == "inactive" and caddy.internal_ca_root_pem(fresh) is None
    assert caddy.caddy_own_ca_root_pem(fresh) is None
    # `apt remove` leaves the conffiles: dpkg says config-files, which is not installed.
    assert parse_facts(HOST + "apt:caddy=config-files 2.6.2-13+b1\n" + END).apt_version("caddy") is None
    assert caddy.internal_ca_root_pem(parse_facts(HOST + "caddy_internal_ca_root_b64=!!not base64\n" + END)) is None


def test_caddys_facts_come_in_the_same_round_trip():
    whole_host = facts_script([server(), front(INTERNAL), worker_set()])
    assert subprocess.run([shutil.which("dash") or "sh", "-n", "-c", whole_host]).returncode == 0
    script = facts_script([front(INTERNAL)])
    root_part = script[script.index("<<'ROOT_FACTS'") : script.rindex("ROOT_FACTS")]
    assert front(INTERNAL).fact_script in root_part  # read as root, Caddy's data is 0700
    assert INTERNAL_CA_ROOT_PATH in front(INTERNAL).fact_script and CADDY_OWN_CA_ROOT_PATH in front(ACME).fact_script
    assert root_part.index(front(INTERNAL).fact_script) < root_part.rindex('echo "facts_end=1"')


def test_facts_script_reads_this_machines_caddy_package(tmp_path):
    """Run for real: the dpkg-query format and the parsing agree (Debian's caddy is installed here)."""
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "caddy"], capture_output=True, text=True, check=True
    ).stdout
    facts = run_facts_here(facts_script([front(INTERNAL)]), tmp_path / "bin")
    assert facts.apt_version("caddy") == version
    assert facts.file_sha256(CADDYFILE_PATH) == sha256_text(Path(CADDYFILE_PATH).read_text())
    assert facts.file_sha256(HARDENING_DROPIN_PATH) is None or Path(HARDENING_DROPIN_PATH).exists()


# --- the steps -------------------------------------------------------------------------------------
def test_fresh_host_installs_writes_sandboxes_and_starts_caddy():
    steps = caddy_steps(FRESH, INTERNAL)
    assert names(steps) == [
        "install caddy (apt)",
        "install openssl (apt)",
        f"write {CADDYFILE_PATH}",
        f"write {internal_ca.CONFIG_PATH}",
        f"write {internal_ca.SCRIPT_PATH}",
        "sandbox caddy.service",
        "internal CA for caddy.service",
        "enable caddy.service",
        "start Caddy",
    ]
    write = steps[2].commands[0]
    assert write.stdin == front(INTERNAL).files[0].text.encode() and "chmod 0644" in write.script
    assert [c.script for c in steps[5].commands][1] == "systemctl daemon-reload"
    assert steps[5].commands[0].stdin == HARDENING_DROPIN.encode()
    assert steps[6].commands[0].stdin == internal_ca.DROPIN.encode()
    assert [c.script for c in steps[6].commands][1] == "systemctl daemon-reload"
    # The marker is written only once systemd has accepted the restart.
    start = steps[-1].commands[0].script
    assert start.startswith("systemctl restart caddy.service && ")
    assert front(INTERNAL).applied_record() in start and caddy.APPLIED_FILE in start


def test_install_is_non_interactive_waits_for_the_lock_and_uses_the_hosts_sources_by_default():
    (install,) = caddy_steps(FRESH, INTERNAL)[0].commands
    assert "DEBIAN_FRONTEND=noninteractive" in install.script
    assert "-o DPkg::Lock::Timeout=300" in install.script and "-o Acquire::Retries=3" in install.script
    assert "--force-confold" in install.script and "--no-install-recommends install caddy" in install.script
    assert "Dir::Etc::SourceList" not in install.script and install.timeout >= 900
    (mirrored,) = caddy_steps(FRESH, PEBBLE)[0].commands
    assert "Dir::Etc::SourceList" in mirrored.script and mirrored.label == "apt-get install caddy (from --apt-source)"


def test_debians_default_caddy_is_restarted_once_onto_the_sandbox_and_our_caddyfile():
    """What the postinst leaves: caddy installed, enabled and running Debian's Caddyfile."""
    debian = (
        HOST
        + f"apt:caddy=installed {PACKAGE_VERSION}\napt:openssl=installed 3.5.1-1\n"
        + f"file:{CADDYFILE_PATH}={'d' * 64}\n{caddy_line()}"
        + END
    )
    assert names(caddy_steps(debian, INTERNAL)) == [
        f"write {CADDYFILE_PATH}",
        f"write {internal_ca.CONFIG_PATH}",
        f"write {internal_ca.SCRIPT_PATH}",
        "sandbox caddy.service",
        "internal CA for caddy.service",
        "restart Caddy",
    ]
    assert names(caddy_steps(debian, ACME)) == [f"write {CADDYFILE_PATH}", "sandbox caddy.service", "restart Caddy"]


def test_a_host_with_caddys_own_ca_gets_the_constrained_one_with_one_reload():
    """The reload runs the script first (the drop-in, read by systemd before it): the CA is made,
    Caddy's own is removed; the sandbox is unchanged, so nothing restarts."""
    earlier = converged_output(earlier_release(front(INTERNAL))).replace(END, f"apt:openssl=installed 3.5.1-1\n{END}")
    steps = caddy_steps(earlier, INTERNAL)
    assert names(steps) == [
        f"write {CADDYFILE_PATH}",
        f"write {internal_ca.CONFIG_PATH}",
        f"write {internal_ca.SCRIPT_PATH}",
        "internal CA for caddy.service",
        "reload Caddy",
    ]
    assert steps[-1].commands[0].script.startswith("systemctl reload caddy.service && ")
    assert "restart" not in scripts(steps)
    # A tls acme host of an earlier release: nothing to do.
    assert caddy_steps(converged_output(earlier_release(front(ACME))), ACME) == []


def test_a_new_address_rewrites_the_ca_configuration_and_reloads():
    """The reload makes the CA for the new address before Caddy reloads onto it."""
    other = dataclasses.replace(INTERNAL, address="203.0.113.8")
    steps = caddy_steps(converged(INTERNAL), other)
    assert names(steps) == [f"write {CADDYFILE_PATH}", f"write {internal_ca.CONFIG_PATH}", "reload Caddy"]
    assert steps[1].commands[0].stdin == internal_ca.ca_config("203.0.113.8").encode()


def test_converged_host_has_no_steps():
    assert caddy_steps(converged(INTERNAL), INTERNAL) == []
    assert caddy_steps(converged(ACME), ACME) == []
    assert caddy_steps(converged(PEBBLE), PEBBLE) == []


def test_a_changed_mode_or_domain_reloads_caddy_and_restarts_nothing():
    steps = caddy_steps(converged(INTERNAL), ACME)
    assert names(steps) == [f"write {CADDYFILE_PATH}", "reload Caddy"]
    assert "restart" not in scripts(steps) and "daemon-reload" not in scripts(steps)
    assert steps[-1].commands[0].script.startswith("systemctl reload caddy.service && ")
    other_domain = dataclasses.replace(ACME, address="flows.example.org")
    assert names(caddy_steps(converged(ACME), other_domain)) == [f"write {CADDYFILE_PATH}", "reload Caddy"]


def test_a_private_acme_root_is_written_and_reloaded_and_removed_when_no_longer_wanted():
    """The Caddyfile first, then the root it names (earlier releases wrote them the other way round)."""
    steps = caddy_steps(converged(ACME), PEBBLE)
    assert names(steps) == [f"write {CADDYFILE_PATH}", f"write {ACME_CA_ROOT_PATH}", "reload Caddy"]
    assert steps[1].commands[0].stdin == CA_PEM.encode() and "chmod 0644" in steps[1].commands[0].script
    back = caddy_steps(converged(PEBBLE), ACME)
    assert names(back) == [f"write {CADDYFILE_PATH}", f"remove {ACME_CA_ROOT_PATH}", "reload Caddy"]
    (remove,) = back[1].commands
    assert remove.script == f"rm -f {ACME_CA_ROOT_PATH}"


def test_an_unfinished_earlier_run_is_finished():
    # The files were written but the reload failed (or the bootstrap stopped): reload only.
    acme_record = f"applied:{caddy.APPLIED_FILE}={front(ACME).applied_record()}"
    stale = converged(ACME).replace(acme_record, f"applied:{caddy.APPLIED_FILE}={front(INTERNAL).applied_record()}")
    assert names(caddy_steps(stale, ACME)) == ["reload Caddy"]
    # Everything written, but Caddy never restarted onto the sandbox: restart.
    unrecorded = converged(INTERNAL).replace(f"applied:{caddy.APPLIED_FILE}={front(INTERNAL).applied_record()}\n", "")
    assert names(caddy_steps(unrecorded, INTERNAL)) == ["restart Caddy"]
    # A Caddy that died or was stopped is started, which also applies any new configuration.
    stopped = converged(INTERNAL).replace(caddy_line(), caddy_line("failed"))
    assert names(caddy_steps(stopped, ACME)) == [f"write {CADDYFILE_PATH}", "start Caddy"]


def test_a_changed_sandbox_restarts_caddy():
    older_dropin = HARDENING_DROPIN.replace("ProtectHome=true\n", "")
    old_sandbox = replace_file(front(INTERNAL), HARDENING_DROPIN_PATH, older_dropin)
    steps = caddy_steps(converged_output(old_sandbox), INTERNAL)
    assert names(steps) == ["sandbox caddy.service", "restart Caddy"]
    # Someone else changed unit files: systemd is told, Caddy keeps running.
    pending = converged(INTERNAL).replace(caddy_line(), caddy_line(need_reload="yes"))
    assert names(caddy_steps(pending, INTERNAL)) == ["sandbox caddy.service"]
    disabled = converged(INTERNAL).replace(caddy_line(), caddy_line(enabled="disabled"))
    assert names(caddy_steps(disabled, INTERNAL)) == ["enable caddy.service"]


def test_tls_off_stops_and_disables_a_caddy_left_from_another_mode():
    running = converged(INTERNAL)
    (step,) = caddy_steps(running, OFF)
    assert step.name == "stop and disable caddy.service (tls off)"
    assert step.commands[0].script.startswith("systemctl disable --now --quiet caddy.service && rm -f ")
    assert caddy.APPLIED_FILE in step.commands[0].script
    assert caddy_steps(running.replace(caddy_line(), caddy_line("inactive", "enabled")), OFF) != []
    assert caddy_steps(running.replace(caddy_line(), caddy_line("inactive", "disabled")), OFF) == []
    assert caddy_steps(FRESH, OFF) == []


def test_shell_of_every_step_parses():
    assert_shell_parses(
        caddy_steps(FRESH, PEBBLE)
        + caddy_steps(converged(INTERNAL), PEBBLE)
        + caddy_steps(converged(PEBBLE), INTERNAL)
        + caddy_steps(converged(PEBBLE), OFF)
    )


# --- the CA root Caddy creates (internal mode) -----------------------------------------------------
def start_with_root_at(path: Path, timeout: float) -> subprocess.Popen:
    """The command run here, reading the CA root from `path` instead of Caddy's data directory."""
    script = caddy.read_internal_ca_root(timeout=timeout).script.replace(INTERNAL_CA_ROOT_PATH, str(path))
    return subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_read_internal_ca_root_prints_it_once_caddy_created_it(tmp_path):
    assert caddy.read_internal_ca_root(timeout=5).timeout == 35
    root = tmp_path / "root.crt"
    waiting = start_with_root_at(root, timeout=5)
    time.sleep(0.5)  # Caddy creates its CA when it first loads a `tls internal` configuration
    root.write_text(CA_PEM)
    out, _ = waiting.communicate(timeout=10)
    assert waiting.returncode == 0 and base64.b64decode(out) == CA_PEM.encode()


def test_read_internal_ca_root_gives_up_naming_the_path(tmp_path):
    missing = start_with_root_at(tmp_path / "none", timeout=0.4)
    out, err = missing.communicate(timeout=10)
    assert missing.returncode == 1 and out == ""
    assert f"No internal CA root at {tmp_path / 'none'} within 0.4 s" in err


# --- Caddy's journal when a step fails ---------------------------------------------------------------
def test_a_failed_reload_prints_caddys_journal():
    """`systemctl reload caddy` fails on a Caddyfile Caddy rejects; only its journal says why."""

    def reject() -> None:
        raise CommandFailed("systemctl reload caddy.service", 1, "Job for caddy.service failed.")

    session = RecordingSession(
        on_run={
            "systemctl reload caddy.service": reject,
            "journalctl": lambda: "caddy[7]: Error: adapting config using caddyfile\n",
        }
    )
    lanes = plan(parse_facts(converged(INTERNAL)), [front(ACME)])
    with pytest.raises(CommandFailed):
        apply(lanes, session, Console(io.StringIO(), io.StringIO()))
    assert "journalctl" in session.labels
