"""The bootstrap: resolve inputs, converge the host over SSH (Prefect on loopback behind Caddy's
TLS, or on 4200 itself when tlsMode is off), verify over HTTPS, register the storage blocks, write
the profile with the server's CA pinned.

Inputs come from flags, then `--outputs FILE`, then `--stack NAME` (first one that has a value
wins). Everything is validated before the first connection, and the bucket is probed before the
first change, so bad input changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import queue
import re
import shlex
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
from prefect_host.profile import ANSWER_PREFIX, results_settings
from prefect_host.storage import block_slug
from prefect_host.tls import CaCertificate, TlsSettings, load_ca_certificate, settings_from_outputs

if TYPE_CHECKING:
    import ssl

    import httpx

    from prefect_host.facts import HostFacts
    from prefect_host.ssh import HostSession

WORK_POOL_NAME = "default"
WORK_POOL_TYPE = "process"
JOURNAL_LINES = 40
DEFAULT_WORKERS = 1
MAX_WORKERS = 16  # each is a Python process with Prefect loaded, its flow runs more processes
# Workers check in seconds after they start; the margin covers a slow host, and a server that is
# itself still starting (after a reboot) while a worker retries.
WORKERS_TIMEOUT = 120.0
CHILD_TIMEOUT = 300.0
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
    workers: int = DEFAULT_WORKERS
    # The stack outputs (with the S3 endpoint the flag gives) for result storage; None: --no-storage.
    storage: StackOutputs | None = field(default=None, repr=False)
    tls: TlsSettings = TlsSettings(mode="off", address=None)
    public_ip: str = ""
    # --ca-file: the CA this machine verifies the server against (default: internal mode, the CA
    # read from the host; acme, the system trust store).
    ca: CaCertificate | None = None

    @property
    def tls_on(self) -> bool:
        return self.tls.mode != "off"

    @property
    def results_block(self) -> str | None:
        """The results block the bootstrap registers (named after the profile), for the profile and
        the workers' environment; None without storage."""
        return f"s3-bucket/{block_slug(self.profile_name)}-results" if self.storage else None


def resolve_inputs(*, outputs_file: str | None, stack: str | None, host: str | None = None,
                   user: str | None = None, identity: str | None = None, host_key: str | None = None,
                   profile: str | None = None, activate: bool = False, client_only: bool = False,
                   index_url: str | None = None, find_links: str | None = None,
                   connect_timeout: float = 300.0, workers: int = DEFAULT_WORKERS, no_storage: bool = False,
                   s3_endpoint_url: str | None = None, apt_source: str | None = None,
                   acme_ca_root: str | None = None, ca_file: str | None = None) -> BootstrapInputs:
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
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers {workers!r}: must be a whole number from 0 to {MAX_WORKERS} (0: no "
                         "worker on the host; each one runs its own flow runs).")
    if s3_endpoint_url is not None:
        if no_storage:
            raise UsageError("--s3-endpoint-url and --no-storage: the endpoint is for result storage, "
                             "which --no-storage leaves out; give one of them.")
        _check_url("--s3-endpoint-url", s3_endpoint_url)
    elif outputs.s3_endpoint_url is not None:
        _check_url("s3EndpointUrl", outputs.s3_endpoint_url)
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
    if not client_only:
        _check_prefect_aws_fits(outputs.prefect_version)
    tls = settings_from_outputs(outputs, apt_source=apt_source, acme_ca_root_pem=(
        None if acme_ca_root is None else _read_text("--acme-ca-root", acme_ca_root)))
    ca = None if ca_file is None else load_ca_certificate(_read_text("--ca-file", ca_file),
                                                          source=f"--ca-file {ca_file}")
    if ca is not None and tls.mode == "off":
        raise UsageError(f"--ca-file {ca_file}: this stack's tlsMode is off (plain HTTP), so there is no "
                         "certificate to verify; leave --ca-file out.")
    has_identity = bool(identity or outputs.ssh_private_key)
    if client_only and tls.mode == "internal" and ca is None and not has_identity:
        raise UsageError(f"tlsMode internal: {outputs.public_ip} has a certificate from its own CA, which this "
                         "machine must pin. Pass --ca-file FILE (the CA file the operator's bootstrap wrote "
                         "beside their profile; check its SHA-256 fingerprint with them), or an SSH identity "
                         "(--identity FILE) to read the CA from the host over the pinned SSH session.")
    if not client_only and not has_identity:
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
        index_url=index_url, find_links=find_links, connect_timeout=float(connect_timeout), workers=workers,
        storage=None if no_storage else dataclasses.replace(
            outputs, s3_endpoint_url=s3_endpoint_url or outputs.s3_endpoint_url),
        tls=tls, public_ip=outputs.public_ip, ca=ca,
    )


def _read_text(flag: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{flag} {path}: cannot read the file ({getattr(exc, 'strerror', None) or exc}).") from None


def _check_prefect_aws_fits(prefect_version: str) -> None:
    from prefect_host.steps import PREFECT_AWS_MIN_PREFECT, PREFECT_AWS_VERSION

    if _release(prefect_version) < _release(PREFECT_AWS_MIN_PREFECT):
        raise UsageError(f"prefectVersion {prefect_version}: the host's workers and the storage blocks need "
                         f"prefect-aws {PREFECT_AWS_VERSION}, which needs Prefect {PREFECT_AWS_MIN_PREFECT} or "
                         "later; raise prefectVersion in the stack config.")


def _release(version: str) -> tuple[int, ...]:
    """3.9.1rc2 -> (3, 9, 1): enough to compare releases against a minimum."""
    return tuple(int(part) for part in re.match(r"\d+(?:\.\d+)*", version).group().split("."))


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
    workers: int | None  # None: --client-only, the host was not touched
    results_block: str | None
    results_url: str | None  # s3://bucket/results/
    tls_mode: str = "off"
    ca: CaCertificate | None = None  # the CA the profile pins (PREFECT_API_SSL_CERT_FILE)
    ca_path: Path | None = None


def run(inputs: BootstrapInputs, console: Console) -> Summary:
    started = time.monotonic()
    console.add_secret(inputs.auth_string)
    console.add_secret(inputs.identity_text)
    if inputs.storage is not None:
        console.add_secret(inputs.storage.aws_secret_access_key)
    if inputs.tls.mode == "off":
        console.warn("tlsMode is off (allowPlaintext): every request carries the API's auth string over the "
                     "network in clear text. Set tls to auto, internal or acme in the stack config.")
    request = {"name": inputs.profile_name, "api_url": inputs.api_url, "auth_string": inputs.auth_string,
               "activate": inputs.activate, "results_block": inputs.results_block}
    profile_step = f"profile {inputs.profile_name}: write it, reach the server through it"
    ca_step = f"CA certificate for profile {inputs.profile_name}"
    ca_path = None
    if inputs.client_only:
        from prefect_host.profile import store_ca, write_and_check

        ca = _client_trust(inputs, console)
        if ca is not None:
            with console.step(ca_step) as status:
                stored = store_ca(inputs.profile_name, ca.pem)
                status.changed, ca_path = stored["changed"], stored["path"]
        # The blocks exist on the server already (the full bootstrap registered them): find them.
        with console.step(profile_step) as status:
            result = write_and_check(**request, ssl_cert_file=ca_path, find_results_in_bucket=(
                inputs.storage.bucket_name if inputs.storage is not None else None))
            status.changed = result.changed
    else:
        from prefect_host.profile import ProfileResult

        child = ProfileProcess()
        try:
            ca = converge_host(inputs, console)
            if ca is not None:
                with console.step(ca_step) as status:
                    stored = child.call("store_ca", name=inputs.profile_name, pem=ca.pem)
                    status.changed, ca_path = stored["changed"], stored["path"]
            if inputs.storage is not None:
                with console.step(f"storage block {inputs.results_block}") as status:
                    blocks = child.call("register_storage_blocks", api_url=inputs.api_url,
                                        auth_string=inputs.auth_string, outputs=inputs.storage.to_mapping(),
                                        profile_name=inputs.profile_name, ssl_cert_file=ca_path)
                    status.changed = bool(blocks["changed"])
            with console.step(profile_step) as status:
                result = ProfileResult(**child.call("profile", **request, ssl_cert_file=ca_path))
                status.changed = result.changed
        except BaseException:
            child.cancel()
            raise
        child.close()
    for warning in result.warnings:
        console.warn(warning)
    bucket = inputs.storage.bucket_name if inputs.storage is not None else None
    return Summary(seconds=time.monotonic() - started, ui_url=inputs.ui_url, api_url=inputs.api_url,
                   profile_name=result.name, profile_path=Path(result.path), profile_active=result.active,
                   server_version=result.server_version, workers=None if inputs.client_only else inputs.workers,
                   results_block=result.results_block,
                   results_url=f"s3://{bucket}/results/" if bucket and result.results_block else None,
                   tls_mode=inputs.tls.mode, ca=ca, ca_path=Path(ca_path) if ca_path else None)


def _client_trust(inputs: BootstrapInputs, console: Console) -> CaCertificate | None:
    """A teammate's --client-only run: the CA to pin. --ca-file when given; in internal mode
    otherwise the CA read from the host over the pinned SSH session (read only, nothing changes)."""
    if inputs.ca is not None or inputs.tls.mode != "internal":
        return inputs.ca
    from prefect_host.tls import read_internal_ca_root

    with _ssh_session(inputs, console) as session, \
            console.step(f"read the CA certificate from {inputs.host}"):
        command = read_internal_ca_root(timeout=5)
        encoded = session.run(command.script, sudo=True, timeout=command.timeout, label=command.label).stdout
    return _host_ca(encoded, inputs)


def _host_ca(encoded: str, inputs: BootstrapInputs) -> CaCertificate:
    import base64
    import binascii

    from prefect_host.tls import TlsError

    try:
        pem = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise TlsError(f"The CA certificate read from {inputs.host} is not base64 of a PEM file.") from None
    return load_ca_certificate(pem, source=f"Caddy's CA on {inputs.host}")


class ProfileProcess:
    """The laptop's Prefect work (storage blocks, profile) in a child process, started before the
    host steps.

    Importing Prefect costs ~1.5 s of CPU. In a thread it would compete with SSH and HTTP for the
    GIL; in a process of its own it runs on another core meanwhile, which keeps a re-run on a
    converged host under 3 s. Requests (with the auth string and keys) go over stdin, one JSON line
    each; each gets one answer line (prefect_host.profile.serve).
    """

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen([sys.executable, "-m", "prefect_host.profile"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        # Pipes are read by threads (select() does not work on pipes on Windows); stderr is drained
        # so that the child never blocks on it, and its last line explains a crash.
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._stderr_tail: list[str] = []
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_answers(self) -> None:
        for line in self._process.stdout:
            if line.startswith(ANSWER_PREFIX):
                self._answers.put(line[len(ANSWER_PREFIX):])
        self._answers.put(None)  # end of output: the child exited

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            if line.strip():
                self._stderr_tail = [*self._stderr_tail[-4:], line.rstrip()]

    def call(self, op: str, **arguments: Any) -> Any:
        """Run one operation in the child; its PrefectHostError comes back as a ProfileError."""
        try:
            self._process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
            self._process.stdin.flush()
        except OSError:
            pass  # the child has exited; reading its answer says why
        try:
            answer = self._answers.get(timeout=CHILD_TIMEOUT)
        except queue.Empty:
            self.cancel()
            raise ProfileError(f"The laptop's Prefect step ({op}) did not answer within {CHILD_TIMEOUT:g} s.") from None
        if answer is None:
            self._process.wait()
            last = self._stderr_tail[-1] if self._stderr_tail else "no output"
            raise ProfileError(f"The laptop's Prefect step ({op}) failed in its child process: {last}")
        decoded = json.loads(answer)
        if "error" in decoded:
            raise ProfileError(decoded["error"])
        return decoded["result"]

    def close(self) -> None:
        """End the child: it exits at the end of its stdin, or is killed when it is still busy."""
        if self._process.poll() is None:
            try:
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.cancel()
        self._process.wait()

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()


def converge_host(inputs: BootstrapInputs, console: Console) -> CaCertificate | None:
    """Connect, read facts, probe the bucket, run the steps still needed (Prefect's, and Caddy's in
    front of it), verify the server over HTTPS, ensure the work pool, then converge the workers and
    wait for them to check in. Returns the CA the laptop pins (None: the system trust store, or
    plain HTTP)."""
    import httpx
    import paramiko

    from prefect_host import server_files as sf
    from prefect_host.facts import gather_facts
    from prefect_host.steps import Desired, DesiredWorkers, PackageSource, plan, plan_workers
    from prefect_host.tls import desired_caddy, plan_caddy
    from prefect_host.verify import check_server, ensure_work_pool

    desired = Desired(
        prefect_version=inputs.prefect_version,
        env_text=sf.env_file_text(auth_string=inputs.auth_string, tls=inputs.tls_on),
        unit_text=sf.unit_text(),
        packages=PackageSource(index_url=inputs.index_url, find_links=inputs.find_links),
        cloud_init_timeout=inputs.connect_timeout,
        workers=DesiredWorkers(
            count=inputs.workers,
            env_text=sf.worker_env_file_text(
                auth_string=inputs.auth_string, ui_url=inputs.ui_url, tls=inputs.tls_on,
                result_settings=results_settings(inputs.results_block) if inputs.results_block else {}),
            unit_text=sf.worker_unit_text(pool=WORK_POOL_NAME)),
    )
    try:
        with _ssh_session(inputs, console) as session, contextlib.ExitStack() as closing:
            with console.step("read the host's state"):
                facts = gather_facts(session)
            _check_facts(facts, session)
            if facts.cloud_init_status == "error":
                console.warn("cloud-init on the host reports an error (`cloud-init status --long` there "
                             "says more); continuing, since SSH with the pinned key works.")
            if inputs.storage is not None:
                # Before the first change: a key the bucket refuses is bad input, like a wrong host key.
                _probe_bucket(inputs.storage, console)
            steps = plan(facts, desired)
            caddy_steps = plan_caddy(facts.caddy, desired_caddy(inputs.tls))
            if any(step.starts_server for step in steps):
                # A (re)start is when the work pool may need creating, with the process worker's job
                # template (~1.5 s to import): import it while this process mostly waits on the host.
                threading.Thread(target=_import_quietly, args=("prefect.workers.process",), daemon=True).start()
            # Port 4200 changes hands: with TLS Prefect moves to loopback before Caddy binds 4200;
            # with tls off Caddy lets go of it before Prefect binds it.
            if not inputs.tls_on:
                _run_caddy_steps(caddy_steps, session, console)
            client = None if inputs.tls_on else closing.enter_context(httpx.Client(timeout=10.0))
            for step in steps:
                # The journal (when wanted) comes after the step's [failed] line, before the error.
                with _journal_on_failure(step.starts_server, session, console), \
                        console.step(step.name, changed=True):
                    for command in step.commands:
                        session.run(command.script, sudo=True, stdin=command.stdin,
                                    timeout=command.timeout, label=command.label)
                    if step.starts_server:
                        _wait_for_start(session, client, inputs)
            ca = None
            if inputs.tls_on:
                _run_caddy_steps(caddy_steps, session, console)
                ca = _server_ca(inputs, facts, session, console)
                context = _verify_context(inputs, ca, session, console)
                client = closing.enter_context(httpx.Client(timeout=10.0, verify=context))
            with _journal_on_failure(True, session, console), \
                    console.step("verify the server (health, auth, version, UI)"):
                _wait_for_start(session, client, inputs)
                _http(lambda: check_server(client, api_url=inputs.api_url, auth_string=inputs.auth_string,
                                           prefect_version=inputs.prefect_version))
            with console.step(f"{WORK_POOL_TYPE} work pool {WORK_POOL_NAME!r}") as status:
                status.changed = _http(lambda: ensure_work_pool(
                    client, api_url=inputs.api_url, auth_string=inputs.auth_string, name=WORK_POOL_NAME,
                    pool_type=WORK_POOL_TYPE, base_job_template=_process_job_template))
            for step in plan_workers(facts, desired):
                with _journal_on_failure(step.starts_workers, session, console, units=desired.workers.units), \
                        console.step(step.name, changed=True):
                    for command in step.commands:
                        session.run(command.script, sudo=True, stdin=command.stdin,
                                    timeout=command.timeout, label=command.label)
                    # Gone for good: out of the pool's list of workers, instead of shown offline there.
                    for instance in step.stops_workers:
                        _http(lambda: _forget_worker(client, inputs, f"{facts.hostname}-{instance}"))
            if desired.workers.count:
                names = [f"{facts.hostname}-{i}" for i in range(1, desired.workers.count + 1)]
                with _journal_on_failure(True, session, console, units=desired.workers.units), \
                        console.step(f"{_describe_names(names)} polling pool {WORK_POOL_NAME!r}"):
                    _wait_for_workers(session, client, inputs, dict(zip(desired.workers.units, names)))
            return ca if ca is not None else inputs.ca
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ConnectError(f"The SSH session to {inputs.user}@{inputs.host} broke ({exc or type(exc).__name__}); "
                           "run the bootstrap again: it continues where it stopped.") from None


@contextmanager
def _ssh_session(inputs: BootstrapInputs, console: Console) -> Iterator["HostSession"]:
    """The SSH session to the host, its key pinned (no trust on first use)."""
    from prefect_host.ssh import HostSession, PinnedHostKey, load_private_key, load_private_key_file

    pinned = PinnedHostKey.parse(inputs.host_key, setting="--host-key / hostPublicKey")
    if inputs.identity_file is not None:
        identity = load_private_key_file(inputs.identity_file, setting="--identity")
    else:
        identity = load_private_key(inputs.identity_text or "", source="output sshPrivateKey")
    console.line(f"  host key pinned: {pinned.key_type} {pinned.fingerprint}")
    with console.step(f"connect to {inputs.user}@{inputs.host}"):
        session = HostSession.connect(inputs.host, user=inputs.user, identity=identity, host_key=pinned,
                                      port=inputs.port, connect_timeout=inputs.connect_timeout)
    with session:
        yield session


def _run_caddy_steps(steps: list, session: "HostSession", console: Console) -> None:
    from prefect_host.tls import CADDY_UNIT

    for step in steps:
        with _journal_on_failure(True, session, console, units=[CADDY_UNIT]), console.step(step.name, changed=True):
            for command in step.commands:
                session.run(command.script, sudo=True, stdin=command.stdin, timeout=command.timeout,
                            label=command.label)


def _server_ca(inputs: BootstrapInputs, facts: "HostFacts", session: "HostSession",
               console: Console) -> CaCertificate | None:
    """internal: the CA of the host's Caddy, read over the pinned SSH session (in the facts on a
    re-run; created by Caddy's first start otherwise); --ca-file must be that same CA. acme: None
    (the system trust store), or --ca-file (a private ACME CA's root, as in the tests)."""
    from prefect_host.tls import CADDY_UNIT, TlsError, read_internal_ca_root

    if inputs.tls.mode != "internal":
        return None
    pem = facts.caddy.internal_ca_root_pem
    if pem is None:
        with _journal_on_failure(True, session, console, units=[CADDY_UNIT]), \
                console.step("read Caddy's CA certificate"):
            command = read_internal_ca_root()
            ca = _host_ca(session.run(command.script, sudo=True, timeout=command.timeout,
                                      label=command.label).stdout, inputs)
    else:
        ca = load_ca_certificate(pem, source=f"Caddy's CA on {inputs.host}")
    if inputs.ca is not None and inputs.ca.fingerprint != ca.fingerprint:
        raise TlsError(f"--ca-file holds the CA {inputs.ca.fingerprint}, but the host's Caddy certifies with "
                       f"{ca.fingerprint}: the file is not this server's CA (from an older host?). Leave "
                       "--ca-file out: the bootstrap reads the CA from the host.")
    return ca


def _verify_context(inputs: BootstrapInputs, ca: CaCertificate | None, session: "HostSession",
                    console: Console) -> "ssl.SSLContext":
    """The laptop's TLS verification, once Caddy serves a certificate it trusts: the pinned CA
    (internal, or --ca-file) or the system trust store (acme). Waits for that certificate first:
    Caddy obtains an ACME certificate seconds to minutes after its start."""
    from prefect_host.tls import (
        ACME_CERTIFICATE_TIMEOUT,
        CADDY_UNIT,
        INTERNAL_CA_ROOT_TIMEOUT,
        certificate_timeout_error,
        server_ssl_context,
        wait_for_certificate,
    )

    trusted = ca or inputs.ca
    context = server_ssl_context(trusted.pem if trusted else None)
    if inputs.tls.mode == "acme":
        timeout, issuer = ACME_CERTIFICATE_TIMEOUT, inputs.tls.acme_directory
    else:
        timeout, issuer = INTERNAL_CA_ROOT_TIMEOUT, "the host's own CA"
    with _journal_on_failure(True, session, console, units=[CADDY_UNIT]), \
            console.step(f"TLS certificate for {inputs.tls.address} from {issuer}"):
        last = wait_for_certificate(inputs.tls.address, 443, context, timeout=timeout)
        if last is not None:
            raise certificate_timeout_error(inputs.tls, public_ip=inputs.public_ip, waited=timeout, last=last)
    return context


def _check_facts(facts: "HostFacts", session: "HostSession") -> None:
    from prefect_host.ssh import sudo_refused_message

    if not facts.sudo_ok:
        raise SudoError(sudo_refused_message(session.user, session.host, facts.sudo_error or ""))
    if not facts.python3:
        raise HostUnsupported(f"{session.host} ({facts.os_pretty_name or 'unknown OS'}) has no python3; "
                              "the bootstrap needs the distribution's python3 (Debian 12/13 and Ubuntu "
                              "24.04 cloud images have it).")


def _wait_for_start(session: "HostSession", client: "httpx.Client | None", inputs: BootstrapInputs) -> None:
    """Wait until /api/health answers true; stop early if the service dies on the host. Without a
    client (TLS, before Caddy is converged) the health check runs on the host, on loopback."""
    from prefect_host.facts import service_state
    from prefect_host.verify import HEALTH_TIMEOUT, HealthTimeout, wait_until_healthy

    first_restarts = service_state(session)[2]

    def watch() -> None:
        state, _, restarts = service_state(session)
        if state == "failed" or restarts > first_restarts:
            raise VerifyError(f"The Prefect server on {inputs.host} exited while starting "
                              f"(state {state}, {restarts - first_restarts} restart(s) since the start); "
                              "its journal is printed above.")

    if client is None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        next_watch = time.monotonic() + 5.0
        while not _healthy_on_host(session, inputs):
            now = time.monotonic()
            if now >= deadline:
                raise HealthTimeout(f"The Prefect server on {inputs.host} did not answer on loopback "
                                    f"within {HEALTH_TIMEOUT:g} s.")
            if now >= next_watch:
                watch()
                next_watch = now + 5.0
            time.sleep(0.5)
        return
    try:
        wait_until_healthy(client, inputs.api_url, watch=watch)
    except HealthTimeout:
        if _healthy_on_host(session, inputs):
            ports = "443 and 4200" if inputs.tls_on else "4200"
            raise VerifyError(f"The server is healthy on the host, but {inputs.api_url} does not answer "
                              f"from this machine: check that TCP ports {ports} are open to it "
                              "(allowedCidrs, firewalls) and that apiUrl has the host's public address.") from None
        raise


def _healthy_on_host(session: "HostSession", inputs: BootstrapInputs) -> bool:
    from prefect_host import server_files as sf

    url = f"http://127.0.0.1:{sf.server_port(tls=inputs.tls_on)}/api/health"
    probe = f"python3 -c \"import urllib.request; print(urllib.request.urlopen('{url}', timeout=3).read().decode())\""
    result = session.run(probe, timeout=15, check=False, label="health check on the host")
    return result.exit_status == 0 and result.stdout.strip() == "true"


@contextmanager
def _journal_on_failure(wanted: bool, session: "HostSession", console: Console,
                        units: list[str] | None = None) -> Iterator[None]:
    """When a service fails to start or to verify, its journal says why: print its tail."""
    try:
        yield
    except PrefectHostError:
        if wanted:
            _print_journal(session, console, units)
        raise


def _print_journal(session: "HostSession", console: Console, units: list[str] | None = None) -> None:
    from prefect_host import server_files as sf

    units = units or [sf.UNIT_NAME]
    selection = " ".join(f"-u {shlex.quote(unit)}" for unit in units)
    try:
        result = session.run(f"journalctl {selection} -n {JOURNAL_LINES} --no-pager -o short-iso",
                             sudo=True, timeout=30, check=False, label="journalctl")
    except Exception:  # the journal is a help for the error that follows, never a new failure
        return
    if result.stdout.strip():
        console.block(f"Last {JOURNAL_LINES} lines of `journalctl {selection}` on {session.host}:",
                      result.stdout)


def _probe_bucket(storage: StackOutputs, console: Console) -> None:
    from prefect_host.storage import probe_bucket

    with console.step(f"S3 bucket {storage.bucket_name}: put, get, delete"):
        probe_bucket(storage)


def _wait_for_workers(session: "HostSession", client: "httpx.Client", inputs: BootstrapInputs,
                      workers: dict[str, str]) -> None:
    """Wait until every worker unit (unit -> worker name) has checked in since its unit started: its
    record in the pool is ONLINE with a heartbeat no older than the start. Host and server share
    one clock (the server runs on the host), so the two times compare. Stops early when a unit fails
    or restarts."""
    from datetime import datetime

    from prefect_host.verify import basic_auth

    started = _worker_units(session, list(workers))
    url = f"{inputs.api_url}/work_pools/{WORK_POOL_NAME}/workers/filter"
    deadline = time.monotonic() + WORKERS_TIMEOUT
    next_watch = time.monotonic() + 5.0
    while True:
        response = _http(lambda: client.post(url, json={}, auth=basic_auth(inputs.auth_string)))
        if response.status_code != 200:
            raise VerifyError(f"POST {url} answered HTTP {response.status_code}: {response.text[:300]}")
        records = {record["name"]: record for record in response.json()}

        def checked_in(unit: str) -> bool:
            record = records.get(workers[unit]) or {}
            heartbeat = record.get("last_heartbeat_time")
            return (record.get("status") == "ONLINE" and heartbeat is not None
                    and datetime.fromisoformat(heartbeat).timestamp() >= started[unit]["since"])

        waiting = [unit for unit in workers if not checked_in(unit)]
        if not waiting:
            return
        now = time.monotonic()
        if now >= deadline:
            raise VerifyError(f"Worker(s) {', '.join(workers[unit] for unit in waiting)} did not check in with "
                              f"the server within {WORKERS_TIMEOUT:g} s (their journal is printed above).")
        if now >= next_watch:
            for unit, state in _worker_units(session, list(workers)).items():
                if state["state"] == "failed" or state["restarts"] > started[unit]["restarts"]:
                    raise VerifyError(f"{unit} on {inputs.host} exited while starting (state {state['state']}, "
                                      f"{state['restarts'] - started[unit]['restarts']} restart(s)); its journal "
                                      "is printed above.")
            next_watch = now + 5.0
        time.sleep(0.5)


def _forget_worker(client: "httpx.Client", inputs: BootstrapInputs, name: str) -> None:
    from prefect_host.verify import basic_auth

    url = f"{inputs.api_url}/work_pools/{WORK_POOL_NAME}/workers/{urllib.parse.quote(name, safe='')}"
    response = client.delete(url, auth=basic_auth(inputs.auth_string))
    if response.status_code not in (204, 404):  # 404: it never checked in
        raise VerifyError(f"DELETE {url} answered HTTP {response.status_code}: {response.text[:300]}")


def _worker_units(session: "HostSession", units: list[str]) -> dict[str, dict[str, Any]]:
    """unit -> {"since": start time (epoch s), "restarts": NRestarts, "state": ActiveState}."""
    out = session.run("systemctl show --timestamp=unix -p Id -p ActiveEnterTimestamp -p NRestarts "
                      f"-p ActiveState {' '.join(shlex.quote(u) for u in units)}",
                      timeout=30, label="systemctl show (workers)").stdout
    found: dict[str, dict[str, Any]] = {}
    for block in out.strip().split("\n\n"):
        values = dict(line.partition("=")[::2] for line in block.splitlines())
        found[values.get("Id", "")] = {
            "since": float(values.get("ActiveEnterTimestamp", "").lstrip("@") or "inf"),
            "restarts": int(values.get("NRestarts") or 0), "state": values.get("ActiveState", "")}
    return found


def _describe_names(names: list[str]) -> str:
    return f"worker {names[0]}" if len(names) == 1 else f"workers {names[0]} ... {names[-1]}"


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
