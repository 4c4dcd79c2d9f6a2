"""The bootstrap's inputs: flags > `--outputs FILE` > `--stack NAME`, validated into one object
before the first connection, so bad input changes nothing."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_host.console import clip_values, mention, redact_url, shown
from prefect_host.errors import PrefectHostError, UsageError
from prefect_host.outputs import StackOutputs
from prefect_host.services.python_env import PREFECT_AWS_MIN_PREFECT, PREFECT_AWS_VERSION
from prefect_host.services.scale_out import Database
from prefect_host.storage import block_slug
from prefect_host.tls import CaCertificate, TlsSettings, check_apt_source, load_ca_certificate, settings_from_outputs

from .backup_inputs import NO_BACKUP, BackupSettings, backup_settings
from .database_inputs import check_backup_flags, database_from_outputs
from .worker_host_inputs import SERVER_DEFAULT_WORKERS, WorkerHostInputs, resolve_workers

# The work pool the host's workers poll, created by the bootstrap.
WORK_POOL_NAME = "default"
WORK_POOL_TYPE = "process"
DEFAULT_WORKERS = SERVER_DEFAULT_WORKERS
# Matched whole (fullmatch): `$` alone would let a trailing newline through.
_VERSION = re.compile(r"\d+(\.\d+){1,3}((a|b|rc)\d+)?(\.post\d+)?")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")  # useradd's limit: 32 characters
PLAINTEXT = TlsSettings(mode="off", address=None)  # frozen: one shared default is safe
_PROFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HOST_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*\.?")  # and 253 characters at most
_MAX_URL = 2048
# Control characters (line breaks, tabs, NUL, ...) and lone surrogates: nothing a one-line setting may hold;
# a URL holds no whitespace either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_IN_A_URL = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")


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
    tls: TlsSettings = PLAINTEXT
    public_ip: str = ""
    # --ca-file: the CA this machine verifies the server against (default: internal mode, the CA
    # read from the host; acme, the system trust store).
    ca: CaCertificate | None = None
    backup: BackupSettings = field(default=NO_BACKUP, repr=False)
    allow_downgrade: bool = False
    cloud: str = ""  # the outputs' cloud: aws, gcp or local
    # The scale-out mode's PostgreSQL (None: SQLite on the host), and --migrate-objects.
    database: Database | None = field(default=None, repr=False)
    migrate_objects: bool = False
    # The stack's worker VMs (output workerHosts); `workers` is then the server's (--server-workers).
    worker_hosts: tuple[WorkerHostInputs, ...] = ()

    @property
    def tls_on(self) -> bool:
        return self.tls.mode != "off"

    @property
    def results_block(self) -> str | None:
        """The results block the bootstrap registers (named after the profile), for the profile and
        the workers' environment; None without storage."""
        return f"s3-bucket/{block_slug(self.profile_name)}-results" if self.storage else None


@dataclass(frozen=True)
class BootstrapFlags:
    """The command line as given (None: not given); resolve_inputs validates and completes it."""

    outputs_file: str | None
    stack: str | None
    host: str | None = None
    user: str | None = None
    identity: str | None = None
    host_key: str | None = None
    profile: str | None = None
    activate: bool = False
    client_only: bool = False
    index_url: str | None = None
    find_links: str | None = None
    connect_timeout: float = 300.0
    workers: int | None = None  # None: the default for where they run (worker_host_inputs)
    server_workers: int | None = None
    queues: tuple[str, ...] = ()
    no_storage: bool = False
    s3_endpoint_url: str | None = None
    apt_source: str | None = None
    acme_ca_root: str | None = None
    ca_file: str | None = None
    no_backup: bool = False
    no_restore: bool = False
    restore_at: str | None = None
    allow_downgrade: bool = False
    migrate_objects: bool = False


def resolve_inputs(**flags: Any) -> BootstrapInputs:
    """Merge flags > --outputs > --stack into validated inputs; raises before anything is changed.
    Takes BootstrapFlags' fields as keywords."""
    given = BootstrapFlags(**flags)
    outputs = _load_outputs(given.outputs_file, given.stack)
    _check_flags(given, outputs)
    host, user = _target(given, outputs)
    workers, worker_hosts = resolve_workers(
        outputs, workers=given.workers, server_workers=given.server_workers, queues=tuple(given.queues)
    )
    _check_server_outputs(outputs)
    profile_name = given.profile or f"prefect-host-{given.stack or host}"
    if not _PROFILE.fullmatch(profile_name):
        raise UsageError(
            f"--profile {shown(profile_name)}: use 1-128 letters, digits, '.', '_' and '-', starting with a "
            "letter or digit."
        )
    if not given.client_only:
        _check_prefect_aws_fits(outputs.prefect_version)
    database = database_from_outputs(outputs)
    check_backup_flags(database, no_restore=given.no_restore, restore_at=given.restore_at)
    tls, ca = _trust(given, outputs, user=user)
    endpoint = given.s3_endpoint_url or outputs.s3_endpoint_url
    storage = None if given.no_storage else dataclasses.replace(outputs, s3_endpoint_url=endpoint)
    backup = backup_settings(
        storage, no_backup=given.no_backup, no_restore=given.no_restore, restore_at=given.restore_at
    )
    if database is not None:
        backup = BackupSettings(off_reason="database postgres: the managed database keeps its own backups")
    return BootstrapInputs(
        host=host,
        user=user,
        host_key=given.host_key or outputs.host_public_key,
        api_url=outputs.api_url.rstrip("/"),
        ui_url=outputs.ui_url,
        prefect_version=outputs.prefect_version,
        auth_string=outputs.prefect_auth_string,
        profile_name=profile_name,
        activate=given.activate,
        client_only=given.client_only,
        identity_file=Path(given.identity) if given.identity else None,
        identity_text=None if given.identity else outputs.ssh_private_key,
        index_url=given.index_url,
        find_links=given.find_links,
        connect_timeout=float(given.connect_timeout),
        workers=workers,
        worker_hosts=worker_hosts,
        storage=storage,
        tls=tls,
        public_ip=outputs.public_ip,
        ca=ca,
        backup=backup,
        allow_downgrade=given.allow_downgrade,
        cloud=outputs.cloud,
        database=database,
        migrate_objects=given.migrate_objects,
    )


def _target(given: BootstrapFlags, outputs: StackOutputs) -> tuple[str, str]:
    """The host and the SSH user."""
    host = given.host or outputs.public_ip
    if not _is_host(host):
        raise UsageError(f"{'--host' if given.host else 'publicIp'} {shown(host)}: must be a host name or IP address.")
    user = given.user or outputs.ssh_user
    if not _USER.fullmatch(user):
        raise UsageError(f"{'--user' if given.user else 'sshUser'} {shown(user)}: not a valid Unix user name.")
    return host, user


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and _HOST_NAME.fullmatch(host) is not None


def _trust(given: BootstrapFlags, outputs: StackOutputs, *, user: str) -> tuple[TlsSettings, CaCertificate | None]:
    """The TLS settings, and the CA this machine pins (--ca-file), checked against each other."""
    acme_ca_root = None if given.acme_ca_root is None else _read_text("--acme-ca-root", given.acme_ca_root)
    try:
        tls = settings_from_outputs(outputs, apt_source=given.apt_source, acme_ca_root_pem=acme_ca_root)
    except PrefectHostError as exc:  # its messages quote the outputs whole: show long ones cut
        raise type(exc)(clip_values(str(exc), outputs.to_mapping().values())) from None
    ca_file = given.ca_file
    ca = (
        None
        if ca_file is None
        else load_ca_certificate(_read_text("--ca-file", ca_file), source=f"--ca-file {mention(ca_file)}")
    )
    if ca is not None and tls.mode == "off":
        raise UsageError(
            f"--ca-file {mention(ca_file)}: this stack's tlsMode is off (plain HTTP), so there is no "
            "certificate to verify; leave --ca-file out."
        )
    has_identity = bool(given.identity or outputs.ssh_private_key)
    if given.client_only and tls.mode == "internal" and ca is None and not has_identity:
        raise UsageError(
            f"tlsMode internal: {outputs.public_ip} has a certificate from its own CA, which this "
            "machine must pin. Pass --ca-file FILE (the CA file the operator's bootstrap wrote "
            "beside their profile; check its SHA-256 fingerprint with them), or an SSH identity "
            "(--identity FILE) to read the CA from the host over the pinned SSH session."
        )
    if not given.client_only and not has_identity:
        raise UsageError(
            "No SSH identity: pass --identity FILE (the private key whose public half is in "
            f"{user}'s authorized_keys on the host). The outputs have no "
            "sshPrivateKey because the stack was given sshPublicKey."
        )
    return tls, ca


def _load_outputs(outputs_file: str | None, stack: str | None) -> StackOutputs:
    if outputs_file:
        return StackOutputs.from_file(outputs_file)
    if stack:
        return StackOutputs.from_stack(stack)
    raise UsageError(
        "Give --outputs FILE (the JSON of `pulumi stack output --json --show-secrets`) "
        "or --stack NAME: the server's URL, Prefect version and auth string come from "
        "the stack outputs."
    )


def _check_flags(given: BootstrapFlags, outputs: StackOutputs) -> None:
    connect_timeout, index_url, find_links = given.connect_timeout, given.index_url, given.find_links
    s3_endpoint_url = given.s3_endpoint_url
    if connect_timeout is None or not (math.isfinite(connect_timeout) and connect_timeout > 0):
        raise UsageError(f"--connect-timeout {connect_timeout}: must be a number of seconds > 0, and finite.")
    for flag, url in (("--index-url", index_url), ("--find-links", find_links)):
        if url is not None:
            _check_url(flag, url)
    if index_url and find_links:
        raise UsageError(
            "--index-url and --find-links: give one of them (--find-links installs from "
            "that page only, without an index)."
        )
    if s3_endpoint_url is not None:
        if given.no_storage:
            raise UsageError(
                "--s3-endpoint-url and --no-storage: the endpoint is for result storage, "
                "which --no-storage leaves out; give one of them."
            )
        _check_url("--s3-endpoint-url", s3_endpoint_url)
    elif outputs.s3_endpoint_url is not None:
        _check_url("s3EndpointUrl", outputs.s3_endpoint_url)
    if given.apt_source is not None:
        _check_apt_source(given.apt_source)


def _check_apt_source(line: str) -> None:
    if _CONTROL.search(line):  # tls's pattern ends in `$`, which a trailing newline passes
        raise UsageError(
            f"--apt-source {shown(line)}: one apt source line, its words separated by spaces "
            "(no line break, tab or other control character)."
        )
    try:
        check_apt_source(line)
    except PrefectHostError as exc:
        raise type(exc)(clip_values(str(exc), [line])) from None


def _check_server_outputs(outputs: StackOutputs) -> None:
    if not _VERSION.fullmatch(outputs.prefect_version):
        raise UsageError(f"prefectVersion {shown(outputs.prefect_version)}: must be a release number such as 3.9.1.")
    _check_url("apiUrl", outputs.api_url)
    _check_url("uiUrl", outputs.ui_url)
    if not outputs.api_url.rstrip("/").endswith("/api"):
        raise UsageError(
            f"apiUrl {shown(outputs.api_url)}: must be the server's API URL, ending in /api "
            "(for example http://203.0.113.7:4200/api)."
        )
    if any(c in outputs.prefect_auth_string for c in "\r\n\0"):
        raise UsageError("prefectAuthString contains a line break or NUL; it must be one line user:password.")


def _read_text(flag: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        raise UsageError(f"{flag} {mention(path)}: cannot read the file ({reason}).") from None


def _check_prefect_aws_fits(prefect_version: str) -> None:
    if release(prefect_version) < release(PREFECT_AWS_MIN_PREFECT):
        raise UsageError(
            f"prefectVersion {prefect_version}: the host's workers and the storage blocks need "
            f"prefect-aws {PREFECT_AWS_VERSION}, which needs Prefect {PREFECT_AWS_MIN_PREFECT} or "
            "later; raise prefectVersion in the stack config."
        )


def release(version: str) -> tuple[int, ...]:
    """3.9.1rc2 -> (3, 9, 1): enough to compare releases against a minimum."""
    return tuple(int(part) for part in re.match(r"\d+(?:\.\d+)*", version).group().split("."))


def _check_url(setting: str, url: str) -> None:
    """An http(s) URL of a host name or IP address (and a valid port), one line, at most _MAX_URL long;
    credentials in it never reach the message."""
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and _is_host(parts.hostname or "") and parts.port != 0
    except ValueError:  # "http://[::1/", "http://h:99999/"
        valid = False
    if not valid or len(url) > _MAX_URL or _NOT_IN_A_URL.search(url):
        raise UsageError(
            f"{setting} {shown(redact_url(url))}: must be an http:// or https:// URL of a host name or IP address, "
            f"at most {_MAX_URL} characters."
        )
