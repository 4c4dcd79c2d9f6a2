"""The stack outputs: the one contract between the Pulumi program (infra/) and the bootstrap.

`pulumi stack output --json --show-secrets` gives a JSON object with exactly these camelCase names.
tests/infra/test_outputs_contract.py holds infra's exports to OUTPUT_FIELDS, so the two sides
cannot drift apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from prefect_host.errors import OutputsError

# acme: a public certificate for `domain`; internal: Caddy's own CA certifies the public IP;
# off: plain HTTP on port 4200 (the stack refuses it unless allowPlaintext is set).
TLS_MODES = ("acme", "internal", "off")
# Exported by infra/ only when they apply: a domain when one is set, the ACME settings in acme mode.
CONDITIONAL_OUTPUTS = frozenset({"domain", "acmeCa", "acmeEmail"})


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
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["output"]
            value = data.get(name)
            if value is None:
                if f.metadata["required"]:
                    raise OutputsError(f"{source}: output {name} is null; it must be a non-empty string.")
                continue
            if not isinstance(value, str) or not value.strip():
                raise OutputsError(
                    f"{source}: output {name} must be a non-empty string, got {value!r}"
                    if not f.metadata["secret"]
                    else f"{source}: output {name} must be a non-empty string."
                )
            if f.metadata["secret"] and value == "[secret]":
                raise OutputsError(
                    f"{source}: output {name} is masked as [secret]; export the outputs with "
                    "`pulumi stack output --json --show-secrets`."
                )
            values[f.name] = value
        if values["cloud"] not in ("aws", "gcp", "local"):
            raise OutputsError(f"{source}: output cloud is {values['cloud']!r}; allowed: aws, gcp, local.")
        if ":" not in values["prefect_auth_string"]:
            raise OutputsError(f"{source}: output prefectAuthString must have the form user:password.")
        values["tls_mode"] = _check_tls(values, source)
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> StackOutputs:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise OutputsError(f"--outputs {path}: cannot read the file ({exc.strerror}).") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OutputsError(f"--outputs {path}: not valid JSON (line {exc.lineno}: {exc.msg}).") from None
        return cls.from_mapping(data, source=f"--outputs {path}")

    @classmethod
    def from_stack(cls, stack: str, *, cwd: str | Path | None = None) -> StackOutputs:
        if shutil.which("pulumi") is None:
            raise OutputsError(
                f"--stack {stack}: the pulumi CLI is not on PATH. Install it, or pass "
                "--outputs FILE with the JSON of `pulumi stack output --json --show-secrets`."
            )
        proc = subprocess.run(
            ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack],
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise OutputsError(f"--stack {stack}: `pulumi stack output` failed: {proc.stderr.strip()}")
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise OutputsError(f"--stack {stack}: `pulumi stack output --json` did not print JSON.") from None
        return cls.from_mapping(data, source=f"--stack {stack}")

    def to_mapping(self) -> dict[str, str]:
        """The camelCase JSON shape (what `pulumi stack output --json --show-secrets` prints)."""
        return {f.metadata["output"]: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def auth_user(self) -> str:
        return self.prefect_auth_string.split(":", 1)[0]


def _check_tls(values: dict[str, Any], source: str) -> str:
    """The TLS outputs agree with each other and with the URLs' scheme; returns the TLS mode."""
    mode = values.get("tls_mode")
    api_scheme = urllib.parse.urlsplit(values["api_url"]).scheme
    if mode is None:
        if api_scheme != "http":
            raise OutputsError(
                f"{source}: missing output tlsMode; it is required with an {api_scheme}:// "
                "apiUrl (one of: " + ", ".join(TLS_MODES) + ")."
            )
        mode = "off"
    if mode not in TLS_MODES:
        raise OutputsError(f"{source}: output tlsMode is {mode!r}; allowed: {', '.join(TLS_MODES)}.")
    scheme = "http" if mode == "off" else "https"
    for name, key in (("apiUrl", "api_url"), ("uiUrl", "ui_url")):
        if urllib.parse.urlsplit(values[key]).scheme != scheme:
            raise OutputsError(
                f"{source}: output {name} is {values[key]!r}, but tlsMode {mode} serves "
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
            f"{values['domain']!r}; a stack with a domain uses tlsMode acme."
        )
    return mode


OUTPUT_FIELDS = {f.metadata["output"]: f.metadata for f in fields(StackOutputs)}
SECRET_OUTPUTS = frozenset(n for n, m in OUTPUT_FIELDS.items() if m["secret"])
# What infra/ exports: everything but the user-supplied extras.
INFRA_OUTPUTS = frozenset(OUTPUT_FIELDS) - {"s3EndpointUrl"}
