"""From (facts, desired state) to the steps still needed: pure functions, pyinfra-style.

A converged host yields no steps, so a second run changes nothing and restarts nothing. Each step
is data (a name and shell commands, run as root through `sudo -n`), so tests can inspect exactly
what would run; secrets only ever travel in a command's stdin.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from prefect_host import server_files as sf
from prefect_host.facts import HostFacts
from prefect_host.ssh import write_file_script

UV_VERSION = "0.13.8"
_GET_UV_SOURCE = Path(__file__).with_name("get_uv.py")
# cloud-init has nothing left to do in these states (bootstrap reports "error" as a warning).
_CLOUD_INIT_SETTLED = {"done", "disabled", "error", "degraded done"}


@dataclass(frozen=True)
class PackageSource:
    """Where the host gets uv and Prefect: a simple index (default PyPI) or a find-links page."""
    index_url: str | None = None
    find_links: str | None = None

    def uv_args(self) -> str:
        if self.find_links:
            return f"--no-index --find-links {shlex.quote(self.find_links)}"
        if self.index_url:
            return f"--index-url {shlex.quote(self.index_url)}"
        return ""

    def get_uv_args(self) -> str:
        if self.find_links:
            return f"--find-links {shlex.quote(self.find_links)}"
        if self.index_url:
            return f"--index-url {shlex.quote(self.index_url)}"
        return ""


@dataclass(frozen=True)
class Desired:
    prefect_version: str
    env_text: str = field(repr=False)  # holds the auth string
    unit_text: str
    packages: PackageSource = PackageSource()
    uv_version: str = UV_VERSION
    cloud_init_timeout: float = 300.0

    @property
    def digest(self) -> str:
        """Identifies what the server must run with: a change in any part means a restart."""
        return sf.sha256_text("\0".join((self.prefect_version, self.unit_text, self.env_text)))


@dataclass(frozen=True)
class Command:
    script: str
    label: str
    stdin: bytes | None = field(default=None, repr=False)
    timeout: float = 120.0


@dataclass(frozen=True)
class Step:
    name: str
    commands: tuple[Command, ...]
    # A step after which the server is (re)started: bootstrap watches the start.
    starts_server: bool = False


def plan(facts: HostFacts, desired: Desired) -> list[Step]:
    """The steps that take the host from `facts` to `desired`, in order; [] when converged."""
    steps: list[Step] = []
    if facts.cloud_init_status is not None and facts.cloud_init_status not in _CLOUD_INIT_SETTLED:
        steps.append(Step("wait for cloud-init to finish", (Command(
            # 0 = done, 2 = done with recoverable errors; only 1 (a fatal error) fails the step.
            "cloud-init status --wait >/dev/null; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 2 ]",
            "cloud-init status --wait", timeout=desired.cloud_init_timeout),)))
    if facts.service_user_home is None or not facts.state_dir_exists:
        steps.append(_create_user())
    if facts.uv_version != desired.uv_version:
        steps.append(_install_uv(desired))
    venv_missing = facts.venv_python is None
    if venv_missing:
        steps.append(_create_venv())
    install_prefect = venv_missing or facts.venv_prefect_version != desired.prefect_version
    if install_prefect:
        steps.append(_install_prefect(desired))
    if facts.env_sha256 != sf.sha256_text(desired.env_text):
        steps.append(Step(f"write {sf.ENV_FILE}", (_write(sf.ENV_FILE, desired.env_text, 0o600),)))
    if facts.unit_sha256 != sf.sha256_text(desired.unit_text) or facts.need_daemon_reload:
        steps.append(Step(f"install {sf.UNIT_NAME}", (
            _write(sf.UNIT_PATH, desired.unit_text, 0o644),
            Command("systemctl daemon-reload", "systemctl daemon-reload"))))
    if facts.unit_enabled != "enabled":
        steps.append(Step(f"enable {sf.UNIT_NAME}", (Command(
            f"systemctl enable --quiet {sf.UNIT_NAME}", f"systemctl enable {sf.UNIT_NAME}"),)))
    if facts.applied_digest != desired.digest or facts.unit_active_state != "active":
        verb = "restart" if facts.unit_active_state == "active" else "start"
        steps.append(Step(f"{verb} the Prefect server", (Command(
            # The digest is recorded only once systemd has accepted the (re)start.
            f"systemctl restart {sf.UNIT_NAME} && printf '%s\\n' {desired.digest} > "
            f"{sf.APPLIED_DIGEST_FILE}", f"systemctl restart {sf.UNIT_NAME}"),), starts_server=True))
    compiled = not install_prefect and facts.bytecode_version == desired.prefect_version
    if not compiled and facts.bytecode_job not in ("active", "activating"):
        steps.append(_compile_bytecode(desired))
    return steps


def _create_user() -> Step:
    q = shlex.quote
    return Step(f"create service user {sf.SERVICE_USER}", (Command(
        f"(getent passwd {q(sf.SERVICE_USER)} >/dev/null || useradd --system --user-group "
        f"--home-dir {q(sf.STATE_DIR)} --no-create-home --shell /usr/sbin/nologin "
        f"--comment 'Prefect server' {q(sf.SERVICE_USER)}) && "
        f"install -d -o {q(sf.SERVICE_USER)} -g {q(sf.SERVICE_USER)} -m 0750 {q(sf.STATE_DIR)}",
        f"create user {sf.SERVICE_USER}"),))


def _install_uv(desired: Desired) -> Step:
    # The fetcher runs on the host with its own python3 (its source is the stdin): it picks the
    # wheel for the host's platform, whatever the laptop is.
    return Step(f"install uv {desired.uv_version}", (Command(
        f"install -d -m 0755 {shlex.quote(sf.UV_PATH.rsplit('/', 1)[0])} && python3 - "
        f"--version {shlex.quote(desired.uv_version)} --dest {shlex.quote(sf.UV_PATH)} "
        f"{desired.packages.get_uv_args()}",
        f"fetch uv {desired.uv_version} for this host", stdin=_GET_UV_SOURCE.read_bytes(), timeout=300),))


def _create_venv() -> Step:
    venv = shlex.quote(sf.VENV_DIR)
    return Step("create the virtualenv", (Command(
        f"rm -rf {venv} && UV_PYTHON_DOWNLOADS=never {shlex.quote(sf.UV_PATH)} venv --quiet "
        f"--python /usr/bin/python3 {venv}", f"uv venv {sf.VENV_DIR}"),))


def _install_prefect(desired: Desired) -> Step:
    # No --compile-bytecode here: compiling takes ~5 s, and a first start without bytecode is only
    # ~2 s slower, so the bytecode is compiled after the start, off the critical path (below).
    requirement = shlex.quote(f"prefect=={desired.prefect_version}")
    return Step(f"install prefect {desired.prefect_version}", (Command(
        f"rm -f {shlex.quote(sf.BYTECODE_MARKER)} && "
        f"UV_CACHE_DIR={shlex.quote(sf.UV_CACHE_DIR)} UV_PYTHON_DOWNLOADS=never "
        f"{shlex.quote(sf.UV_PATH)} pip install --quiet "
        f"--python {shlex.quote(sf.VENV_DIR + '/bin/python')} {desired.packages.uv_args()} {requirement}",
        f"uv pip install prefect=={desired.prefect_version}", timeout=900),))


def _compile_bytecode(desired: Desired) -> Step:
    """The service user cannot write __pycache__ into the root-owned venv, so without compiled
    bytecode every later start would compile everything in memory again (5.7 s vs 9.2 s). A
    transient systemd job does it in the background; the marker records that it finished."""
    q = shlex.quote
    job = (f"{q(sf.VENV_DIR + '/bin/python')} -m compileall -q -j 0 {q(sf.VENV_DIR + '/lib')} && "
           f"echo {q(desired.prefect_version)} > {q(sf.BYTECODE_MARKER)}")
    return Step("compile bytecode (in the background)", (Command(
        f"systemd-run --quiet --no-block --collect --unit={q(sf.BYTECODE_UNIT)} --property=Nice=10 "
        f"sh -c {q(job)}", "systemd-run compileall"),))


def _write(path: str, content: str, mode: int) -> Command:
    return Command(write_file_script(path, mode=mode), f"write {path}", stdin=content.encode())
