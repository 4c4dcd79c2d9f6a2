"""The stack outputs: the one contract between the Pulumi program (infra/) and the bootstrap.

`pulumi stack output --json --show-secrets` gives a JSON object with exactly these camelCase names.
tests/infra/test_outputs_contract.py holds infra's exports to OUTPUT_FIELDS, so the two sides
cannot drift apart.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from prefect_host.console import mention, shown
from prefect_host.durations import (
    DEFAULT_BACKUP_RETENTION,
    DEFAULT_BACKUP_SNAPSHOT_INTERVAL,
    DURATION_FORM,
    RETENTION_BOUNDS,
    SNAPSHOT_INTERVAL_BOUNDS,
    hours_within,
)
from prefect_host.errors import OutputsError

# acme: a public certificate for `domain`; internal: Caddy's own CA certifies the public IP;
# off: plain HTTP on port 4200 (the stack refuses it unless allowPlaintext is set).
TLS_MODES = ("acme", "internal", "off")
# Exported by infra/ only when they apply: a domain when one is set, the ACME settings in acme mode.
CONDITIONAL_OUTPUTS = frozenset({"domain", "acmeCa", "acmeEmail"})
# Outputs are one line of text; only sshPrivateKey (a PEM/OpenSSH key) has line breaks. Control characters and
# lone surrogates (JSON's "\ud800") reach no file, command line or message.
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_MULTI_LINE_OUTPUTS = frozenset({"sshPrivateKey"})


@dataclass(frozen=True)
class WorkerHost:
    """A worker VM of the stack (output workerHosts): flows run there, the server VM serves the API."""

    name: str
    public_ip: str
    host_public_key: str


_WORKER_HOST_KEYS = {"name": "name", "publicIp": "public_ip", "hostPublicKey": "host_public_key"}
_WORKER_HOST_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_WORKER_HOSTS = 20


def _output(name: str, *, secret: bool = False, required: bool = True, default: Any = None):
    """A dataclass field that knows its camelCase output name and whether Pulumi keeps it secret."""
    meta = {"output": name, "secret": secret, "required": required}
    if required:
        return field(metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class StackOutputs:
    cloud: str = _output("cloud")
    public_ip: str = _output("publicIp")
    ssh_user: str = _output("sshUser")
    host_public_key: str = _output("hostPublicKey")
    api_url: str = _output("apiUrl")
    ui_url: str = _output("uiUrl")
    prefect_version: str = _output("prefectVersion")
    prefect_auth_string: str = _output("prefectAuthString", secret=True)
    bucket_name: str = _output("bucketName")
    bucket_region: str = _output("bucketRegion")
    iam_group_name: str = _output("iamGroupName")
    iam_user_name: str = _output("iamUserName")
    aws_access_key_id: str = _output("awsAccessKeyId")
    aws_secret_access_key: str = _output("awsSecretAccessKey", secret=True)
    # Absent when the operator gave `sshPublicKey`: then they hold the private half themselves.
    ssh_private_key: str | None = _output("sshPrivateKey", secret=True, required=False)
    # Always exported by infra/. Outputs without it (a stack from before TLS, or written by hand)
    # are read as "off" when apiUrl is http://, the plaintext server such outputs describe.
    tls_mode: str | None = _output("tlsMode", required=False)
    domain: str | None = _output("domain", required=False)
    acme_ca: str | None = _output("acmeCa", required=False)
    acme_email: str | None = _output("acmeEmail", required=False)
    # Litestream's settings (prefect_host.durations). Outputs from before the backups lack them: then the
    # bootstrap uses DEFAULT_BACKUP_RETENTION and DEFAULT_BACKUP_SNAPSHOT_INTERVAL.
    backup_retention: str | None = _output("backupRetention", required=False)
    backup_snapshot_interval: str | None = _output("backupSnapshotInterval", required=False)
    # Prefect's database, "sqlite" (on the VM) or "postgres" (RDS / Cloud SQL), and how many API processes share it
    # (a whole number as text; 1 with sqlite). Absent from older stacks: sqlite and 1.
    database: str | None = _output("database", required=False)
    api_workers: str | None = _output("apiWorkers", required=False)
    # postgres only: postgresql+asyncpg://prefect:<password>@<private host>:5432/prefect?ssl=require
    database_url: str | None = _output("databaseUrl", secret=True, required=False)
    # The worker VMs (a JSON list of {name, publicIp, hostPublicKey}); absent from older stacks: none.
    worker_hosts: tuple[WorkerHost, ...] = _output("workerHosts", required=False, default=())
    # Not exported by infra/: an S3-compatible endpoint (MinIO, moto in tests) given by the user.
    s3_endpoint_url: str | None = _output("s3EndpointUrl", required=False)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "the stack outputs") -> StackOutputs:
        if not isinstance(data, dict):
            raise OutputsError(
                f"{source}: expected a JSON object of stack outputs "
                f"(from `pulumi stack output --json --show-secrets`), got {type(data).__name__}."
            )
        missing = [
            f.metadata["output"] for f in fields(cls) if f.metadata["required"] and f.metadata["output"] not in data
        ]
        if missing:
            raise OutputsError(
                f"{source}: missing output(s) {', '.join(missing)}. Expected the JSON of "
                "`pulumi stack output --json --show-secrets` for a prefect-host stack."
            )
        values: dict[str, Any] = {"worker_hosts": _worker_hosts(data.get("workerHosts"), source)}
        for f in fields(cls):
            if f.name == "worker_hosts":
                continue
            value = _checked_value(f.metadata, data.get(f.metadata["output"]), source)
            if value is not None:
                values[f.name] = value
        if values["cloud"] not in ("aws", "gcp", "local"):
            raise OutputsError(f"{source}: output cloud is {shown(values['cloud'])}; allowed: aws, gcp, local.")
        if ":" not in values["prefect_auth_string"]:
            raise OutputsError(f"{source}: output prefectAuthString must have the form user:password.")
        values["tls_mode"] = _check_tls(values, source)
        _check_backup(values, source)
        _check_database(values, source)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> StackOutputs:
        source = f"--outputs {mention(str(path))}"
        try:
            raw = Path(path).read_bytes()
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise OutputsError(f"{source}: cannot read the file ({getattr(exc, 'strerror', None) or exc}).") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise OutputsError(
                f"{source}: not UTF-8 text (byte {exc.start}); expected the JSON of "
                "`pulumi stack output --json --show-secrets`."
            ) from None
        return cls.from_mapping(_json(text, source), source=source)

    @classmethod
    def from_stack(cls, stack: str, *, cwd: str | Path | None = None) -> StackOutputs:
        if shutil.which("pulumi") is None:
            raise OutputsError(
                f"--stack {mention(stack)}: the pulumi CLI is not on PATH. Install it, or pass "
                "--outputs FILE with the JSON of `pulumi stack output --json --show-secrets`."
            )
        source = f"--stack {mention(stack)}"
        try:
            proc = subprocess.run(
                ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack],
                cwd=cwd,
                capture_output=True,
                text=True,
                errors="replace",
            )
        except (OSError, ValueError) as exc:  # a NUL in the name, or a name longer than a command line takes
            raise OutputsError(f"{source}: cannot run `pulumi stack output` ({exc}).") from None
        if proc.returncode != 0:
            failure = " ".join(proc.stderr.split())
            failure = failure if len(failure) <= 500 else f"...{failure[-497:]}"
            raise OutputsError(f"{source}: `pulumi stack output` failed: {failure}")
        try:
            data = json.loads(proc.stdout)
        except (ValueError, RecursionError):
            raise OutputsError(f"{source}: `pulumi stack output --json` did not print JSON.") from None
        return cls.from_mapping(data, source=source)

    def to_mapping(self) -> dict[str, Any]:
        """The camelCase JSON shape (what `pulumi stack output --json --show-secrets` prints); workerHosts
        only when there are some."""
        mapping: dict[str, Any] = {
            f.metadata["output"]: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None and f.name != "worker_hosts"
        }
        if self.worker_hosts:
            mapping["workerHosts"] = [
                {key: getattr(host, attribute) for key, attribute in _WORKER_HOST_KEYS.items()}
                for host in self.worker_hosts
            ]
        return mapping

    @property
    def auth_user(self) -> str:
        return self.prefect_auth_string.split(":", 1)[0]


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputsError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    except (ValueError, RecursionError) as exc:  # a number of 5000 digits, or lists nested 100000 deep
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise OutputsError(f"{source}: not usable JSON ({reason}).") from None


def _checked_value(meta: dict[str, Any], value: Any, source: str) -> str | None:
    """One output's value, a non-empty string of text (None: an optional output left out)."""
    name, secret = meta["output"], meta["secret"]
    if value is None:
        if meta["required"]:
            raise OutputsError(f"{source}: output {name} is null; it must be a non-empty string.")
        return None
    if not isinstance(value, str) or not value.strip():
        detail = "" if secret else f", got {shown(value)}"
        raise OutputsError(f"{source}: output {name} must be a non-empty string{detail}.")
    if secret and value == "[secret]":
        raise OutputsError(
            f"{source}: output {name} is masked as [secret]; export the outputs with "
            "`pulumi stack output --json --show-secrets`."
        )
    if (_NOT_TEXT if name in _MULTI_LINE_OUTPUTS else _NOT_ONE_LINE).search(value):
        detail = "" if secret else f" ({shown(value)})"
        raise OutputsError(
            f"{source}: output {name}{detail} contains a line break or another control character; "
            "take the outputs unchanged from `pulumi stack output --json --show-secrets`."
        )
    return value


def _worker_hosts(value: Any, source: str) -> tuple[WorkerHost, ...]:
    """workerHosts: a list of {name, publicIp, hostPublicKey}, names unique (absent or null: none)."""
    if value is None:
        return ()
    form = "a JSON list of {name, publicIp, hostPublicKey} objects"
    if not isinstance(value, list) or len(value) > MAX_WORKER_HOSTS:
        raise OutputsError(f"{source}: output workerHosts must be {form}, at most {MAX_WORKER_HOSTS}.")
    hosts = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != set(_WORKER_HOST_KEYS):
            raise OutputsError(
                f"{source}: output workerHosts[{index}] must be an object with exactly name, publicIp and "
                "hostPublicKey."
            )
        checked = {
            attribute: _checked_value(
                {"output": f"workerHosts[{index}].{key}", "secret": False, "required": True}, item[key], source
            )
            for key, attribute in _WORKER_HOST_KEYS.items()
        }
        if not _WORKER_HOST_NAME.fullmatch(checked["name"]):
            raise OutputsError(
                f"{source}: output workerHosts[{index}].name is {shown(checked['name'])}; allowed: lower case "
                "letters, digits and '-', starting with a letter, at most 63 characters."
            )
        hosts.append(WorkerHost(**checked))
    names = [host.name for host in hosts]
    if len(set(names)) != len(names):
        raise OutputsError(f"{source}: output workerHosts names a host twice; each name must be unique.")
    return tuple(hosts)


def _scheme(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).scheme
    except ValueError:  # "http://[::1/api": not a URL at all
        return None


def _check_tls(values: dict[str, Any], source: str) -> str:
    """The TLS outputs agree with each other and with the URLs' scheme; returns the TLS mode."""
    mode = values.get("tls_mode")
    api_scheme = _scheme(values["api_url"])
    if mode is None:
        if api_scheme != "http":
            raise OutputsError(
                f"{source}: missing output tlsMode; it is required with an apiUrl that is not http:// "
                "(one of: " + ", ".join(TLS_MODES) + ")."
            )
        mode = "off"
    if mode not in TLS_MODES:
        raise OutputsError(f"{source}: output tlsMode is {shown(mode)}; allowed: {', '.join(TLS_MODES)}.")
    scheme = "http" if mode == "off" else "https"
    for name, key in (("apiUrl", "api_url"), ("uiUrl", "ui_url")):
        if _scheme(values[key]) != scheme:
            raise OutputsError(
                f"{source}: output {name} is {shown(values[key])}, but tlsMode {mode} serves "
                f"{scheme}:// URLs; take all outputs from the same `pulumi stack output`."
            )
    if mode == "acme":
        missing = [name for name, key in (("domain", "domain"), ("acmeCa", "acme_ca")) if key not in values]
        if missing:
            raise OutputsError(
                f"{source}: tlsMode acme needs output(s) {', '.join(missing)} "
                "(the certificate's domain and the ACME directory)."
            )
    else:
        extra = [name for name, key in (("acmeCa", "acme_ca"), ("acmeEmail", "acme_email")) if key in values]
        if extra:
            raise OutputsError(
                f"{source}: output(s) {', '.join(extra)} only apply to tlsMode acme, but tlsMode is {mode}."
            )
    if mode == "internal" and "domain" in values:
        raise OutputsError(
            f"{source}: tlsMode internal certifies the public IP, but output domain is "
            f"{shown(values['domain'])}; a stack with a domain uses tlsMode acme."
        )
    return mode


def _check_backup(values: dict[str, Any], source: str) -> None:
    """backupSnapshotInterval and backupRetention as infra/ allows them; the retention covers one interval."""
    hours: dict[str, int] = {}
    for name, key, default, bounds in (
        (
            "backupSnapshotInterval",
            "backup_snapshot_interval",
            DEFAULT_BACKUP_SNAPSHOT_INTERVAL,
            SNAPSHOT_INTERVAL_BOUNDS,
        ),
        ("backupRetention", "backup_retention", DEFAULT_BACKUP_RETENTION, RETENTION_BOUNDS),
    ):
        found = hours_within(values.get(key, default), bounds)
        if found is None:
            raise OutputsError(
                f"{source}: output {name} is {shown(values[key])}; allowed: {DURATION_FORM}, {bounds[1]}."
            )
        hours[name] = found
    if hours["backupRetention"] < hours["backupSnapshotInterval"]:
        retention = values.get("backup_retention", f"{DEFAULT_BACKUP_RETENTION} (the default)")
        interval = values.get("backup_snapshot_interval", f"{DEFAULT_BACKUP_SNAPSHOT_INTERVAL} (the default)")
        raise OutputsError(
            f"{source}: output backupRetention {retention} is shorter than backupSnapshotInterval {interval}; "
            "allowed: a retention at least as long as the interval between full snapshots."
        )


OUTPUT_FIELDS = {f.metadata["output"]: f.metadata for f in fields(StackOutputs)}
SECRET_OUTPUTS = frozenset(n for n, m in OUTPUT_FIELDS.items() if m["secret"])
# What infra/ exports: everything but the user-supplied extras.
INFRA_OUTPUTS = frozenset(OUTPUT_FIELDS) - {"s3EndpointUrl"}


def _check_database(values: dict[str, Any], source: str) -> None:
    """database sqlite (or absent) or postgres with its databaseUrl; apiWorkers a whole number, 1 with sqlite."""
    database = values.get("database", "sqlite")
    if database not in ("sqlite", "postgres"):
        raise OutputsError(f"{source}: output database is {shown(database)}; allowed: sqlite, postgres.")
    workers = values.get("api_workers", "1")
    if not re.fullmatch(r"[1-9][0-9]{0,2}", workers) or (database == "sqlite" and workers != "1"):
        allowed = "1 with sqlite" if database == "sqlite" else "a whole number from 1"
        raise OutputsError(f"{source}: output apiWorkers is {shown(workers)}; allowed: {allowed}.")
    if (database == "postgres") != ("database_url" in values):
        raise OutputsError(f"{source}: output databaseUrl must be there exactly when database is postgres.")
