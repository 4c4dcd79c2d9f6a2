"""The TLS front door's desired state and steps (pure), with the shell they emit run for real
where that is possible here: the facts script, and the apt install against a stand-in apt-get."""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_host import server_files as sf
from prefect_host.caddy import (
    ACME_CA_ROOT_PATH,
    CADDYFILE_PATH,
    HARDENING_DROPIN,
    HARDENING_DROPIN_PATH,
    CaddySettings,
    TlsConfigError,
    render_caddyfile,
)
from prefect_host.local.pebble import free_port, make_tls_ca_and_certificate
from prefect_host.outputs import StackOutputs
from prefect_host.tls import (
    APT_LOCK_TIMEOUT,
    CADDY_APPLIED_FILE,
    CADDY_FACTS_SCRIPT,
    UPSTREAM_PORT,
    CaddyDesired,
    CaddyFacts,
    TlsError,
    TlsSettings,
    browser_trust_hint,
    certificate_timeout_error,
    desired_caddy,
    load_ca_certificate,
    parse_caddy_facts,
    plan_caddy,
    server_ssl_context,
    settings_from_outputs,
    wait_for_certificate,
)

IP = "203.0.113.7"
DOMAIN = "prefect.example.com"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
MIRROR = "deb [trusted=yes] http://10.77.0.1:8123/ ./"
BASE = {
    "cloud": "aws", "publicIp": IP, "sshUser": "admin", "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdummy",
    "prefectVersion": "3.9.1", "prefectAuthString": "admin:hunter2", "bucketName": "b-1", "bucketRegion": "eu-west-1",
    "iamGroupName": "S3-FullAccess", "iamUserName": "u", "awsAccessKeyId": "AKIA", "awsSecretAccessKey": "s",
}
INTERNAL = {**BASE, "apiUrl": f"https://{IP}/api", "uiUrl": f"https://{IP}", "tlsMode": "internal"}
ACME = {**BASE, "apiUrl": f"https://{DOMAIN}/api", "uiUrl": f"https://{DOMAIN}", "tlsMode": "acme",
        "domain": DOMAIN, "acmeCa": LETS_ENCRYPT, "acmeEmail": "ops@example.com"}
PLAINTEXT = {**BASE, "apiUrl": f"http://{IP}:4200/api", "uiUrl": f"http://{IP}:4200", "tlsMode": "off"}


def outputs(data: dict, **changes) -> StackOutputs:
    return StackOutputs.from_mapping({**data, **changes})


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory) -> str:
    ca_path, _, _ = make_tls_ca_and_certificate(tmp_path_factory.mktemp("ca"), "10.77.0.1")
    return ca_path.read_text()


@pytest.fixture(scope="module")
def leaf_pem(tmp_path_factory) -> str:
    _, cert_path, _ = make_tls_ca_and_certificate(tmp_path_factory.mktemp("leaf"), "10.77.0.1")
    return cert_path.read_text()


# --- settings from the outputs ----------------------------------------------------------------

def test_internal_serves_the_public_ip_with_prefect_behind_on_loopback_4201():
    settings = settings_from_outputs(outputs(INTERNAL))
    assert (settings.mode, settings.address, settings.apt_source) == ("internal", IP, None)
    desired = desired_caddy(settings)
    assert desired.caddyfile == render_caddyfile(CaddySettings("internal", IP, UPSTREAM_PORT))
    assert "tls internal" in desired.caddyfile and f"reverse_proxy 127.0.0.1:{UPSTREAM_PORT}" in desired.caddyfile
    assert desired.dropin == HARDENING_DROPIN and desired.acme_ca_root_pem is None
    assert UPSTREAM_PORT == 4201


def test_acme_takes_domain_email_and_directory_from_the_outputs(ca_pem):
    plain = desired_caddy(settings_from_outputs(outputs(ACME)))
    assert plain.caddyfile == render_caddyfile(CaddySettings("acme", DOMAIN, UPSTREAM_PORT, acme_email="ops@example.com",
                                                             acme_directory=LETS_ENCRYPT))
    assert "acme_ca_root" not in plain.caddyfile
    pebble = desired_caddy(settings_from_outputs(outputs(ACME, acmeCa="https://10.77.0.1:14000/dir"),
                                                 acme_ca_root_pem=ca_pem, apt_source=MIRROR))
    assert f"acme_ca_root {ACME_CA_ROOT_PATH}" in pebble.caddyfile
    assert "acme_ca https://10.77.0.1:14000/dir" in pebble.caddyfile
    assert (pebble.acme_ca_root_pem, pebble.apt_source) == (ca_pem, MIRROR)
    # The root Caddy trusts is part of what a reload applies.
    assert pebble.config_digest != dataclasses.replace(pebble, acme_ca_root_pem=ca_pem + "\n").config_digest


def test_plaintext_has_no_caddy():
    settings = settings_from_outputs(outputs(PLAINTEXT), apt_source=MIRROR)
    assert (settings.mode, settings.address) == ("off", None)
    assert desired_caddy(settings) is None


@pytest.mark.parametrize("data, kwargs, words", [
    (dict(INTERNAL, apiUrl="https://198.51.100.1/api", uiUrl="https://198.51.100.1"), {},
     ["apiUrl", "https://198.51.100.1/api", f"https://{IP}/api", "publicIp"]),
    (dict(ACME, apiUrl=f"https://{IP}/api", uiUrl=f"https://{IP}"), {}, ["apiUrl", f"https://{DOMAIN}/api", "domain"]),
    (dict(ACME, domain="prefect_host.example.com", apiUrl="https://prefect_host.example.com/api"), {},
     ["domain", "prefect_host.example.com", "not a DNS name"]),
    (dict(ACME, acmeEmail="ops at example.com"), {}, ["acmeEmail", "ops at example.com"]),
    (INTERNAL, {"acme_ca_root_pem": "x"}, ["--acme-ca-root", "tlsMode acme", "internal"]),
    (ACME, {"apt_source": "http://10.77.0.1/ ./"}, ["--apt-source", "http://10.77.0.1/ ./", "deb "]),
    (ACME, {"apt_source": MIRROR + "\ndeb http://evil.example/ ./"}, ["--apt-source"]),
])
def test_inconsistent_settings_are_refused_naming_them(data, kwargs, words):
    with pytest.raises(TlsConfigError) as error:
        settings_from_outputs(outputs(data), **kwargs)
    for word in words:
        assert word in str(error.value)


def test_the_acme_ca_root_must_be_a_ca_certificate(leaf_pem):
    with pytest.raises(TlsError, match="--acme-ca-root: not a PEM certificate"):
        settings_from_outputs(outputs(ACME), acme_ca_root_pem="-----BEGIN CERTIFICATE-----\nAAAA\n")
    with pytest.raises(TlsError, match="--acme-ca-root: CN=10.77.0.1 is not a CA certificate"):
        settings_from_outputs(outputs(ACME), acme_ca_root_pem=leaf_pem)


def test_ca_fingerprint_is_the_one_openssl_and_browsers_show(tmp_path, ca_pem):
    ca = load_ca_certificate(ca_pem, source="the host")
    path = tmp_path / "ca.pem"
    path.write_text(ca_pem)
    openssl = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(path)],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert openssl == f"sha256 Fingerprint={ca.fingerprint}" or openssl == f"SHA256 Fingerprint={ca.fingerprint}"
    assert ca.pem == ca_pem


# --- facts -------------------------------------------------------------------------------------

def fresh_facts() -> CaddyFacts:
    return parse_caddy_facts("caddy_package=\ncaddyfile_sha256=\ncaddy_dropin_sha256=\nacme_ca_root_sha256=\n"
                             "caddy_enabled=\ncaddy_ActiveState=inactive\ncaddy_NeedDaemonReload=no\n")


def converged_facts(desired: CaddyDesired, **changes) -> CaddyFacts:
    facts = CaddyFacts(
        package_version="2.6.2-13+b1", caddyfile_sha256=sf.sha256_text(desired.caddyfile),
        dropin_sha256=desired.dropin_digest,
        acme_ca_root_sha256=None if desired.acme_ca_root_pem is None else sf.sha256_text(desired.acme_ca_root_pem),
        applied=desired.applied_marker, enabled="enabled", active_state="active")
    return dataclasses.replace(facts, **changes)


def test_parse_facts_of_a_host_with_caddy_running(ca_pem):
    root = base64.b64encode(ca_pem.encode()).decode()
    facts = parse_caddy_facts(f"login_user=admin\ncaddy_package=installed 2.6.2-13+b1\ncaddyfile_sha256={'a' * 64}\n"
                              f"caddy_dropin_sha256={'b' * 64}\nacme_ca_root_sha256=\ncaddy_applied=x y\n"
                              "caddy_enabled=enabled\ncaddy_ActiveState=active\ncaddy_NeedDaemonReload=yes\n"
                              f"internal_ca_root_b64={root}\nfacts_end=1\n")
    assert facts == CaddyFacts(package_version="2.6.2-13+b1", caddyfile_sha256="a" * 64, dropin_sha256="b" * 64,
                               acme_ca_root_sha256=None, applied="x y", enabled="enabled", active_state="active",
                               need_daemon_reload=True, internal_ca_root_pem=ca_pem)


def test_parse_facts_of_a_fresh_host_and_of_a_removed_package():
    assert fresh_facts() == CaddyFacts(active_state="inactive")
    # `apt remove` leaves the conffiles: dpkg says config-files, which is not installed.
    assert parse_caddy_facts("caddy_package=config-files 2.6.2-13+b1\n").package_version is None
    assert parse_caddy_facts("internal_ca_root_b64=!!not base64\n").internal_ca_root_pem is None


def test_facts_script_reads_this_machines_caddy_package():
    """Run for real: the dpkg-query format and the parsing agree (Debian's caddy is installed here)."""
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "caddy"], capture_output=True, text=True,
                             check=True).stdout
    result = subprocess.run(["sh", "-s"], input=CADDY_FACTS_SCRIPT, capture_output=True, text=True)
    facts = parse_caddy_facts(result.stdout)
    assert facts.package_version == version
    assert facts.caddyfile_sha256 == sf.sha256_text(Path(CADDYFILE_PATH).read_text())
    assert facts.dropin_sha256 is None or Path(HARDENING_DROPIN_PATH).exists()


# --- steps -------------------------------------------------------------------------------------

def names(steps) -> list[str]:
    return [step.name for step in steps]


def scripts(steps) -> str:
    return "\n".join(command.script for step in steps for command in step.commands)


INTERNAL_DESIRED = desired_caddy(settings_from_outputs(outputs(INTERNAL)))
ACME_DESIRED = desired_caddy(settings_from_outputs(outputs(ACME)))


def test_fresh_host_installs_writes_sandboxes_and_starts_caddy():
    steps = plan_caddy(fresh_facts(), INTERNAL_DESIRED)
    assert names(steps) == ["install caddy (apt)", f"write {CADDYFILE_PATH}", "sandbox caddy.service",
                            "enable caddy.service", "start Caddy"]
    write = steps[1].commands[0]
    assert write.stdin == INTERNAL_DESIRED.caddyfile.encode() and "chmod 0644" in write.script
    assert [c.script for c in steps[2].commands][1] == "systemctl daemon-reload"
    assert steps[2].commands[0].stdin == HARDENING_DROPIN.encode()
    # The marker is written only once systemd has accepted the restart.
    start = steps[-1].commands[0].script
    assert start.startswith("systemctl restart caddy.service && ")
    assert INTERNAL_DESIRED.applied_marker in start and CADDY_APPLIED_FILE in start


def test_install_is_non_interactive_waits_for_the_lock_and_uses_the_hosts_sources_by_default():
    (install,) = plan_caddy(fresh_facts(), INTERNAL_DESIRED)[0].commands
    assert "DEBIAN_FRONTEND=noninteractive" in install.script
    assert f"-o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}" in install.script and "-o Acquire::Retries=3" in install.script
    assert "--force-confold" in install.script and "--no-install-recommends install caddy" in install.script
    assert "Dir::Etc::SourceList" not in install.script and install.timeout >= 900


def test_debians_default_caddy_is_restarted_once_onto_the_sandbox_and_our_caddyfile():
    """What the postinst leaves: caddy installed, enabled and running Debian's Caddyfile."""
    debian = CaddyFacts(package_version="2.6.2-13+b1", caddyfile_sha256="d" * 64, enabled="enabled",
                        active_state="active")
    assert names(plan_caddy(debian, INTERNAL_DESIRED)) == [
        f"write {CADDYFILE_PATH}", "sandbox caddy.service", "restart Caddy"]


def test_converged_host_has_no_steps():
    assert plan_caddy(converged_facts(INTERNAL_DESIRED), INTERNAL_DESIRED) == []
    assert plan_caddy(converged_facts(ACME_DESIRED), ACME_DESIRED) == []


def test_a_changed_mode_or_domain_reloads_caddy_and_restarts_nothing():
    steps = plan_caddy(converged_facts(INTERNAL_DESIRED), ACME_DESIRED)
    assert names(steps) == [f"write {CADDYFILE_PATH}", "reload Caddy"]
    assert "restart" not in scripts(steps) and "daemon-reload" not in scripts(steps)
    assert steps[-1].commands[0].script.startswith("systemctl reload caddy.service && ")
    other_domain = desired_caddy(settings_from_outputs(outputs(
        ACME, domain="flows.example.org", apiUrl="https://flows.example.org/api", uiUrl="https://flows.example.org")))
    assert names(plan_caddy(converged_facts(ACME_DESIRED), other_domain)) == [f"write {CADDYFILE_PATH}", "reload Caddy"]


def test_a_private_acme_root_is_written_and_reloaded_and_removed_when_no_longer_wanted(ca_pem):
    pebble = desired_caddy(settings_from_outputs(outputs(ACME, acmeCa="https://10.77.0.1:14000/dir"),
                                                 acme_ca_root_pem=ca_pem))
    steps = plan_caddy(converged_facts(ACME_DESIRED), pebble)
    assert names(steps) == [f"write {ACME_CA_ROOT_PATH}", f"write {CADDYFILE_PATH}", "reload Caddy"]
    assert steps[0].commands[0].stdin == ca_pem.encode() and "chmod 0644" in steps[0].commands[0].script
    back = plan_caddy(converged_facts(pebble), ACME_DESIRED)
    assert names(back) == [f"remove {ACME_CA_ROOT_PATH}", f"write {CADDYFILE_PATH}", "reload Caddy"]


def test_an_unfinished_earlier_run_is_finished():
    # The files were written but the reload failed (or the bootstrap stopped): reload only.
    stale = converged_facts(ACME_DESIRED, applied=f"{ACME_DESIRED.dropin_digest} {INTERNAL_DESIRED.config_digest}")
    assert names(plan_caddy(stale, ACME_DESIRED)) == ["reload Caddy"]
    # Everything written, but Caddy never restarted onto the sandbox: restart.
    assert names(plan_caddy(converged_facts(INTERNAL_DESIRED, applied=None), INTERNAL_DESIRED)) == ["restart Caddy"]
    # A Caddy that died or was stopped is started, which also applies any new configuration.
    stopped = converged_facts(INTERNAL_DESIRED, active_state="failed")
    assert names(plan_caddy(stopped, ACME_DESIRED)) == [f"write {CADDYFILE_PATH}", "start Caddy"]


def test_a_changed_sandbox_restarts_caddy():
    old = dataclasses.replace(INTERNAL_DESIRED, dropin=HARDENING_DROPIN.replace("ProtectHome=true\n", ""))
    steps = plan_caddy(converged_facts(old), INTERNAL_DESIRED)
    assert names(steps) == ["sandbox caddy.service", "restart Caddy"]
    # Someone else changed unit files: systemd is told, Caddy keeps running.
    reloaded = plan_caddy(converged_facts(INTERNAL_DESIRED, need_daemon_reload=True), INTERNAL_DESIRED)
    assert names(reloaded) == ["sandbox caddy.service"]
    disabled = plan_caddy(converged_facts(INTERNAL_DESIRED, enabled="disabled"), INTERNAL_DESIRED)
    assert names(disabled) == ["enable caddy.service"]


def test_tls_off_stops_and_disables_a_caddy_left_from_another_mode():
    running = converged_facts(INTERNAL_DESIRED)
    (step,) = plan_caddy(running, None)
    assert step.name == "stop and disable caddy.service (tls off)"
    assert step.commands[0].script.startswith("systemctl disable --now --quiet caddy.service && rm -f ")
    assert plan_caddy(dataclasses.replace(running, active_state="inactive", enabled="enabled"), None) != []
    assert plan_caddy(dataclasses.replace(running, active_state="inactive", enabled="disabled"), None) == []
    assert plan_caddy(fresh_facts(), None) == []


# --- the apt install, run against a stand-in apt-get ------------------------------------------

FAKE_APT_GET = """#!/bin/sh
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


def run_install(tmp_path: Path, fail_times: int, apt_source: str | None) -> tuple[subprocess.CompletedProcess, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("apt-get", FAKE_APT_GET), ("sleep", "#!/bin/sh\necho \"sleep $1\" >> \"$LOG\"\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    log = tmp_path / "apt.log"
    desired = dataclasses.replace(INTERNAL_DESIRED, apt_source=apt_source)
    (install,) = plan_caddy(fresh_facts(), desired)[0].commands
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "FAIL_TIMES": str(fail_times),
           "TMPDIR": str(tmp_path)}
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


def test_shell_of_every_step_parses(ca_pem):
    pebble = desired_caddy(settings_from_outputs(outputs(ACME, acmeCa="https://10.77.0.1:14000/dir"),
                                                 acme_ca_root_pem=ca_pem, apt_source=MIRROR))
    steps = (plan_caddy(fresh_facts(), pebble) + plan_caddy(converged_facts(INTERNAL_DESIRED), pebble)
             + plan_caddy(converged_facts(pebble), INTERNAL_DESIRED) + plan_caddy(converged_facts(pebble), None))
    shell = shutil.which("dash") or "sh"
    for step in steps:
        for command in step.commands:
            assert subprocess.run([shell, "-n", "-c", command.script]).returncode == 0, command.script


# --- waiting for a trusted certificate ---------------------------------------------------------

class TlsServer:
    """Accepts TLS handshakes on loopback with a certificate for 127.0.0.1 from its own CA."""

    def __init__(self, directory: Path):
        self.ca_path, cert, key = make_tls_ca_and_certificate(directory, "127.0.0.1")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._context = context
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self._context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def tls_server(tmp_path) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path)
    yield server
    server.close()


def test_wait_for_certificate_returns_once_it_verifies(tls_server):
    context = server_ssl_context(tls_server.ca_path.read_text())
    assert wait_for_certificate("127.0.0.1", tls_server.port, context, timeout=5) is None


def test_wait_for_certificate_reports_why_it_gave_up(tls_server, ca_pem):
    other_ca = server_ssl_context(ca_pem)
    started = time.monotonic()
    last = wait_for_certificate("127.0.0.1", tls_server.port, other_ca, timeout=0.6, poll_every=0.1)
    assert 0.6 <= time.monotonic() - started < 5
    assert last.startswith("the certificate served does not verify") and "unable to get local issuer" in last
    # The system trust store does not know a private CA either.
    assert "does not verify" in wait_for_certificate("127.0.0.1", tls_server.port, server_ssl_context(None), timeout=0)
    closed = free_port("127.0.0.1")
    assert "ConnectionRefusedError" in wait_for_certificate("127.0.0.1", closed, other_ca, timeout=0)


def test_acme_timeout_names_the_likely_causes_with_what_dns_says():
    acme = TlsSettings(mode="acme", address="localhost", acme_directory=LETS_ENCRYPT)
    message = str(certificate_timeout_error(acme, public_ip=IP, waited=180, last="ConnectionRefusedError"))
    assert f"for localhost from {LETS_ENCRYPT} within 180 s (last: ConnectionRefusedError)" in message
    assert f"localhost resolves to 127.0.0.1, not to the static IP {IP}" in message
    assert "ports 80 and 443" in message and "allowedCidrs" in message and "rate-limited" in message
    unknown = TlsSettings(mode="acme", address="prefect-host.invalid", acme_directory=LETS_ENCRYPT)
    assert "prefect-host.invalid does not resolve here" in str(
        certificate_timeout_error(unknown, public_ip=IP, waited=5, last="x"))
    internal = TlsSettings(mode="internal", address=IP)
    assert "CA read from the host" in str(certificate_timeout_error(internal, public_ip=IP, waited=5, last="x"))


def test_browser_hint_names_the_file_and_fingerprint(ca_pem):
    ca = load_ca_certificate(ca_pem, source="test")
    lines = browser_trust_hint("/home/me/.prefect/p-ca.pem", ca.fingerprint)
    assert lines[0] == "CA certificate: /home/me/.prefect/p-ca.pem" and ca.fingerprint in lines[1]
    assert any("certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n prefect-host -i /home/me/.prefect/p-ca.pem" in line
               for line in lines)
