"""The bootstrap: resolve inputs, converge the host over SSH, verify over HTTP, write the profile.

Inputs come from flags, then `--outputs FILE`, then `--stack NAME` (first one that has a value
wins). Everything is validated before the first connection, so bad input changes nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from prefect_host.console import Console
from prefect_host.errors import (
    ConnectError,
    HostUnsupported,
    PrefectHostError,
    ProfileError,
    SudoError,
    UsageError,
    VerifyError,
)
from prefect_host.outputs import StackOutputs

if TYPE_CHECKING:
    import httpx

    from prefect_host.facts import HostFacts
    from prefect_host.ssh import HostSession

WORK_POOL_NAME = "default"
WORK_POOL_TYPE = "process"
JOURNAL_LINES = 40
_VERSION = re.compile(r"^\d+(\.\d+){1,3}((a|b|rc)\d+)?(\.post\d+)?$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]*$")
_PROFILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # so the profile child imports this same package


@dataclass(frozen=True)
class BootstrapInputs:
    host: str
    user: str
    host_key: str
    api_url: str
    ui_url: str
    prefect_version: str
    auth_string: str = field(repr=False)
    profile_name: str
    activate: bool = False
    client_only: bool = False
    identity_file: Path | None = None
    identity_text: str | None = field(default=None, repr=False)  # sshPrivateKey from the outputs
    index_url: str | None = None
    find_links: str | None = None
    connect_timeout: float = 300.0
    port: int = 22


def resolve_inputs(*, outputs_file: str | None, stack: str | None, host: str | None = None,
                   user: str | None = None, identity: str | None = None, host_key: str | None = None,
                   profile: str | None = None, activate: bool = False, client_only: bool = False,
                   index_url: str | None = None, find_links: str | None = None,
                   connect_timeout: float = 300.0) -> BootstrapInputs:
    """Merge flags > --outputs > --stack into validated inputs; raises before anything is changed."""
    if outputs_file:
        outputs = StackOutputs.from_file(outputs_file)
    elif stack:
        outputs = StackOutputs.from_stack(stack)
    else:
        raise UsageError("Give --outputs FILE (the JSON of `pulumi stack output --json --show-secrets`) "
                         "or --stack NAME: the server's URL, Prefect version and auth string come from "
                         "the stack outputs.")
    if connect_timeout is None or not connect_timeout > 0:
        raise UsageError(f"--connect-timeout {connect_timeout}: must be a number of seconds > 0.")
    for flag, url in (("--index-url", index_url), ("--find-links", find_links)):
        if url is not None:
            _check_url(flag, url)
    if index_url and find_links:
        raise UsageError("--index-url and --find-links: give one of them (--find-links installs from "
                         "that page only, without an index).")
    resolved_host = host or outputs.public_ip
    if not resolved_host or any(c.isspace() for c in resolved_host):
        raise UsageError(f"--host {resolved_host!r}: must be a host name or IP address.")
    resolved_user = user or outputs.ssh_user
    if not _USER.match(resolved_user):
        raise UsageError(f"--user {resolved_user!r}: not a valid Unix user name.")
    if not _VERSION.match(outputs.prefect_version):
        raise UsageError(f"prefectVersion {outputs.prefect_version!r}: must be a release number such as 3.9.1.")
    _check_url("apiUrl", outputs.api_url)
    if not outputs.api_url.rstrip("/").endswith("/api"):
        raise UsageError(f"apiUrl {outputs.api_url!r}: must be the server's API URL, ending in /api "
                         "(for example http://203.0.113.7:4200/api).")
    if any(c in outputs.prefect_auth_string for c in "\r\n\0"):
        raise UsageError("prefectAuthString contains a line break or NUL; it must be one line user:password.")
    profile_name = profile or f"prefect-host-{stack or resolved_host}"
    if not _PROFILE.match(profile_name):
        raise UsageError(f"--profile {profile_name!r}: use letters, digits, '.', '_' and '-' only, "
                         "starting with a letter or digit.")
    if not client_only and not identity and not outputs.ssh_private_key:
        raise UsageError("No SSH identity: pass --identity FILE (the private key whose public half is in "
                         f"{resolved_user}'s authorized_keys on the host). The outputs have no "
                         "sshPrivateKey because the stack was given sshPublicKey.")
    return BootstrapInputs(
        host=resolved_host, user=resolved_user, host_key=host_key or outputs.host_public_key,
        api_url=outputs.api_url.rstrip("/"), ui_url=outputs.ui_url,
        prefect_version=outputs.prefect_version, auth_string=outputs.prefect_auth_string,
        profile_name=profile_name, activate=activate, client_only=client_only,
        identity_file=Path(identity) if identity else None,
        identity_text=None if identity else outputs.ssh_private_key,
        index_url=index_url, find_links=find_links, connect_timeout=float(connect_timeout),
    )


def _check_url(setting: str, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise UsageError(f"{setting} {url!r}: must be an http:// or https:// URL.")


@dataclass
class Summary:
    seconds: float
    ui_url: str
    api_url: str
    profile_name: str
    profile_path: Path
    profile_active: bool
    server_version: str


def run(inputs: BootstrapInputs, console: Console) -> Summary:
    started = time.monotonic()
    console.add_secret(inputs.auth_string)
    console.add_secret(inputs.identity_text)
    request = {"name": inputs.profile_name, "api_url": inputs.api_url, "auth_string": inputs.auth_string,
               "activate": inputs.activate}
    if inputs.client_only:
        from prefect_host.profile import write_and_check

        def profile_step() -> Any:
            return write_and_check(**request)
    else:
        child = ProfileProcess()
        try:
            converge_host(inputs, console)
        except BaseException:
            child.cancel()
            raise

        def profile_step() -> Any:
            return child.run(request)
    with console.step(f"profile {inputs.profile_name}: write it, reach the server through it") as status:
        result = profile_step()
        status.changed = result.changed
    for warning in result.warnings:
        console.warn(warning)
    return Summary(seconds=time.monotonic() - started, ui_url=inputs.ui_url, api_url=inputs.api_url,
                   profile_name=result.name, profile_path=Path(result.path), profile_active=result.active,
                   server_version=result.server_version)


class ProfileProcess:
    """The profile step in a child process, started before the host steps.

    Importing Prefect costs ~1.5 s of CPU. In a thread it would compete with SSH and HTTP for the
    GIL; in a process of its own it runs on another core meanwhile, which keeps a re-run on a
    converged host well under 3 s. The request (with the auth string) goes over stdin.
    """

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen([sys.executable, "-m", "prefect_host.profile"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def run(self, request: dict[str, Any]) -> Any:
        from prefect_host.profile import ProfileResult

        out, err = self._process.communicate(json.dumps(request), timeout=300)
        try:
            answer = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            last = err.strip().splitlines()[-1] if err.strip() else "no output"
            raise ProfileError(f"Writing the Prefect profile failed in its child process: {last}") from None
        if "error" in answer:
            raise ProfileError(answer["error"])
        return ProfileResult(**answer["result"])

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()


def converge_host(inputs: BootstrapInputs, console: Console) -> None:
    """Connect, read facts, run the steps still needed, verify the server, ensure the work pool."""
    import httpx
    import paramiko

    from prefect_host import server_files as sf
    from prefect_host.facts import gather_facts
    from prefect_host.ssh import HostSession, PinnedHostKey, load_private_key, load_private_key_file
    from prefect_host.steps import Desired, PackageSource, plan
    from prefect_host.verify import check_server, ensure_work_pool

    pinned = PinnedHostKey.parse(inputs.host_key, setting="--host-key / hostPublicKey")
    if inputs.identity_file is not None:
        identity = load_private_key_file(inputs.identity_file, setting="--identity")
    else:
        identity = load_private_key(inputs.identity_text or "", source="output sshPrivateKey")
    desired = Desired(
        prefect_version=inputs.prefect_version,
        env_text=sf.env_file_text(api_url=inputs.api_url, auth_string=inputs.auth_string),
        unit_text=sf.unit_text(),
        packages=PackageSource(index_url=inputs.index_url, find_links=inputs.find_links),
        cloud_init_timeout=inputs.connect_timeout,
    )
    console.line(f"  host key pinned: {pinned.key_type} {pinned.fingerprint}")
    with console.step(f"connect to {inputs.user}@{inputs.host}"):
        session = HostSession.connect(inputs.host, user=inputs.user, identity=identity, host_key=pinned,
                                      port=inputs.port, connect_timeout=inputs.connect_timeout)
    try:
        with session, httpx.Client(timeout=10.0) as client:
            with console.step("read the host's state"):
                facts = gather_facts(session)
            _check_facts(facts, session)
            if facts.cloud_init_status == "error":
                console.warn("cloud-init on the host reports an error (`cloud-init status --long` there "
                             "says more); continuing, since SSH with the pinned key works.")
            steps = plan(facts, desired)
            if any(step.starts_server for step in steps):
                # A (re)start is when the work pool may need creating, with the process worker's job
                # template (~1.5 s to import): import it while this process mostly waits on the host.
                threading.Thread(target=_import_quietly, args=("prefect.workers.process",), daemon=True).start()
            for step in steps:
                # The journal (when wanted) comes after the step's [failed] line, before the error.
                with _journal_on_failure(step.starts_server, session, console), \
                        console.step(step.name, changed=True):
                    for command in step.commands:
                        session.run(command.script, sudo=True, stdin=command.stdin,
                                    timeout=command.timeout, label=command.label)
                    if step.starts_server:
                        _wait_for_start(session, client, inputs)
            with _journal_on_failure(True, session, console), \
                    console.step("verify the server (health, auth, version, UI)"):
                _wait_for_start(session, client, inputs)
                _http(lambda: check_server(client, api_url=inputs.api_url, auth_string=inputs.auth_string,
                                           prefect_version=inputs.prefect_version))
            with console.step(f"{WORK_POOL_TYPE} work pool {WORK_POOL_NAME!r}") as status:
                status.changed = _http(lambda: ensure_work_pool(
                    client, api_url=inputs.api_url, auth_string=inputs.auth_string, name=WORK_POOL_NAME,
                    pool_type=WORK_POOL_TYPE, base_job_template=_process_job_template))
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ConnectError(f"The SSH session to {inputs.user}@{inputs.host} broke ({exc or type(exc).__name__}); "
                           "run the bootstrap again: it continues where it stopped.") from None


def _check_facts(facts: "HostFacts", session: "HostSession") -> None:
    from prefect_host.ssh import sudo_refused_message

    if not facts.sudo_ok:
        raise SudoError(sudo_refused_message(session.user, session.host, facts.sudo_error or ""))
    if not facts.python3:
        raise HostUnsupported(f"{session.host} ({facts.os_pretty_name or 'unknown OS'}) has no python3; "
                              "the bootstrap needs the distribution's python3 (Debian 12/13 and Ubuntu "
                              "24.04 cloud images have it).")


def _wait_for_start(session: "HostSession", client: "httpx.Client", inputs: BootstrapInputs) -> None:
    """Wait until /api/health answers true; stop early if the service dies on the host."""
    from prefect_host.facts import service_state
    from prefect_host.verify import HealthTimeout, wait_until_healthy

    first_restarts = service_state(session)[2]

    def watch() -> None:
        state, _, restarts = service_state(session)
        if state == "failed" or restarts > first_restarts:
            raise VerifyError(f"The Prefect server on {inputs.host} exited while starting "
                              f"(state {state}, {restarts - first_restarts} restart(s) since the start); "
                              "its journal is printed above.")

    try:
        wait_until_healthy(client, inputs.api_url, watch=watch)
    except HealthTimeout:
        if _healthy_on_host(session):
            raise VerifyError(f"The server is healthy on the host, but {inputs.api_url} does not answer "
                              "from this machine: check that TCP port 4200 is open to it "
                              "(allowedCidrs, firewalls) and that apiUrl has the host's public address.") from None
        raise


def _healthy_on_host(session: "HostSession") -> bool:
    probe = ("python3 -c \"import urllib.request; print(urllib.request.urlopen("
             "'http://127.0.0.1:4200/api/health', timeout=3).read().decode())\"")
    result = session.run(probe, timeout=15, check=False, label="health check on the host")
    return result.exit_status == 0 and result.stdout.strip() == "true"


@contextmanager
def _journal_on_failure(wanted: bool, session: "HostSession", console: Console) -> Iterator[None]:
    """When the server fails to start or to verify, its journal says why: print its tail."""
    try:
        yield
    except PrefectHostError:
        if wanted:
            _print_journal(session, console)
        raise


def _print_journal(session: "HostSession", console: Console) -> None:
    from prefect_host import server_files as sf

    try:
        result = session.run(f"journalctl -u {sf.UNIT_NAME} -n {JOURNAL_LINES} --no-pager -o short-iso",
                             sudo=True, timeout=30, check=False, label="journalctl")
    except Exception:  # the journal is a help for the error that follows, never a new failure
        return
    if result.stdout.strip():
        console.block(f"Last {JOURNAL_LINES} lines of `journalctl -u {sf.UNIT_NAME}` on {session.host}:",
                      result.stdout)


def _http(call: Any) -> Any:
    import httpx

    try:
        return call()
    except httpx.HTTPError as exc:
        raise VerifyError(f"HTTP request to the server failed: {type(exc).__name__}: {exc}") from None


def _import_quietly(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception:  # the import where the module is needed reports the problem
        pass


def _process_job_template() -> dict[str, Any]:
    """The `process` worker's default job template, as `prefect work-pool create --type process`
    stores it (imported only when the pool must be created)."""
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()
