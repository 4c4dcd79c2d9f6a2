"""What the end-to-end modules share: the stack outputs they bootstrap from, the laptop's environment,
the secrets no output may show, scripts/bootstrap.py and scripts/deploy.py run as the operator runs
them, and the reading of what those print (the bootstrap's step lines, deploy's `run:` line).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from prefect_host.console import StepLine, parse_step_lines
from prefect_host.local.apt_repo import AptRepoServer, ensure_apt_repo

if TYPE_CHECKING:
    from prefect_host.local import LocalHost
    from prefect_host.local.s3 import S3Server

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "scripts" / "bootstrap.py"
DEPLOY = REPO / "scripts" / "deploy.py"
PREFECT_VERSION = "3.9.1"
# examples/flows' flow, which the modules deploy and run on the host's worker.
FLOW = "train-duration-model"
ENTRYPOINT = "duration_model.py:train_duration_model"
# Caddy's steps on a fresh host in internal mode, in order.
CADDY_FRESH_INTERNAL = [
    "install caddy (apt)",
    "write /etc/caddy/Caddyfile",
    "write /etc/caddy/internal-ca.cnf",
    "write /etc/caddy/internal-ca.sh",
    "sandbox caddy.service",
    "internal CA for caddy.service",
    "enable caddy.service",
    "start Caddy",
]
# Settings of this machine that would reach the laptop's commands around the profile under test.
NOT_FOR_THE_LAPTOP = ("PREFECT_", "AWS_", "SSL_CERT")
# deploy.py --run-now's last line: "run:  flow run 'NAME' Completed after S s; RESULT (T s)".
RUN_LINE = re.compile(
    r"^run: +flow run '(?P<name>[\w-]+)' Completed after (?P<seconds>\d+\.\d) s; "
    r"(?P<result>.*) \(\d+\.\d s\)$",
    re.MULTILINE,
)


# --- the stack outputs --------------------------------------------------------------------------


def build_outputs(public_ip: str, **overrides: str) -> dict[str, str]:
    """Outputs in the shape of `pulumi stack output --json --show-secrets` for a plaintext server at
    public_ip (no tlsMode, as before TLS), placeholders elsewhere; `overrides` replace or add keys.
    The placeholder secret key looks like one, so the leak checks find it if it is printed."""
    outputs = {
        "cloud": "local",
        "publicIp": public_ip,
        "sshUser": "admin",
        "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtestonly",
        "apiUrl": f"http://{public_ip}:4200/api",
        "uiUrl": f"http://{public_ip}:4200",
        "prefectVersion": PREFECT_VERSION,
        "prefectAuthString": "admin:placeholder-auth-string",
        "bucketName": "prefect-host-e2e",
        "bucketRegion": "eu-west-1",
        "iamGroupName": "S3-FullAccess",
        "iamUserName": "prefect-host-e2e",
        "awsAccessKeyId": "AKIAE2EEXAMPLE",
        "awsSecretAccessKey": "e2eSecretAccessKey/Never/Printed",
    }
    outputs.update(overrides)
    return outputs


def host_outputs(host: LocalHost, **overrides: str) -> dict[str, str]:
    """build_outputs for a booted guest: its address, SSH user, host key and the operator's private key."""
    return build_outputs(
        host.address,
        sshUser=host.ssh_user,
        hostPublicKey=host.host_public_key,
        sshPrivateKey=host.identity_file.read_text(),
        **overrides,
    )


def internal_tls(ip: str) -> dict[str, str]:
    """The outputs of a stack without a domain: Caddy's own CA certifies the IP."""
    return {"apiUrl": f"https://{ip}/api", "uiUrl": f"https://{ip}", "tlsMode": "internal"}


def acme_tls(domain: str, directory_url: str) -> dict[str, str]:
    """The outputs of a stack with a domain and an ACME directory (Pebble in the tests)."""
    return {
        "apiUrl": f"https://{domain}/api",
        "uiUrl": f"https://{domain}",
        "tlsMode": "acme",
        "domain": domain,
        "acmeCa": directory_url,
        "acmeEmail": "ops@example.com",
    }


def caddy_apt_repo(host: LocalHost) -> AptRepoServer:
    """Debian's caddy package (trixie) served on the guest's gateway; `.source_line` is for --apt-source."""
    return AptRepoServer(ensure_apt_repo(("caddy",), suite="trixie"), host.gateway)


def s3_outputs(s3: S3Server, bucket: str, user: str) -> dict[str, str]:
    """The bucket's outputs, with an IAM user's key for it provisioned on `s3` as infra/ provisions it."""
    creds = s3.provision(bucket, user=user)
    return {
        "bucketName": bucket,
        "bucketRegion": creds.region,
        "iamUserName": user,
        "awsAccessKeyId": creds.access_key_id,
        "awsSecretAccessKey": creds.secret_access_key,
        "s3EndpointUrl": s3.endpoint_url,
    }


# --- the laptop and its secrets -----------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Prefect, AWS or CA-bundle settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_FOR_THE_LAPTOP)}
    env.update(extra)
    return env


def laptop_env(home: Path, **extra: str) -> dict[str, str]:
    """The laptop's commands see Prefect through the profiles in `home` alone."""
    return clean_env(PREFECT_HOME=str(home), **extra)


def basic_credentials(auth: str) -> str:
    """The base64 part of the Authorization header that carries `user:password`."""
    return base64.b64encode(auth.encode()).decode()


def secrets_of(host: LocalHost, outputs: dict[str, str], *extra: str) -> list[str]:
    """What no output may show: the auth string (whole, its password, as a Basic header), the AWS
    secret key, the body lines of the operator's and the guest's private keys, and `extra`."""
    auth = outputs["prefectAuthString"]
    keys = (outputs.get("sshPrivateKey", ""), host.host_private_key_path.read_text())
    key_lines = [line for key in keys for line in key.splitlines()[1:-1] if len(line) > 20]
    return [auth, auth.split(":", 1)[1], basic_credentials(auth), outputs["awsSecretAccessKey"], *extra, *key_lines]


# --- what the commands print --------------------------------------------------------------------


def parse_steps(output: str) -> list[StepLine]:
    """The bootstrap's step lines in `output`, in order (progress lines are left out)."""
    return parse_step_lines(output)


def changed_steps(output: str) -> list[str]:
    """The names of the steps that changed the host or the server; a converged host has none."""
    return [step.name for step in parse_steps(output) if step.tag == "changed"]


def step_tag(output: str, name: str) -> str:
    """The tag of the step called `name`."""
    for step in parse_steps(output):
        if step.name == name:
            return step.tag
    raise AssertionError(f"no step {name!r} in:\n{output}")


@dataclass(frozen=True)
class CompletedRun:
    name: str
    seconds: float  # from the run's creation to Completed, as deploy measured it
    result: str  # where the result is: "result at s3://BUCKET/KEY", or why it is not


def completed_run(output: str) -> CompletedRun:
    """deploy.py --run-now's `run:` line in `output`."""
    match = RUN_LINE.search(output)
    assert match, output
    return CompletedRun(match["name"], float(match["seconds"]), match["result"])


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def printed(self) -> str:
        return self.stdout + self.stderr

    @property
    def steps(self) -> list[StepLine]:
        return parse_steps(self.stdout)

    @property
    def changed(self) -> list[str]:
        return changed_steps(self.stdout)

    def step(self, name: str) -> str:
        return step_tag(self.stdout, name)


# --- a stack: a guest and the laptop that bootstraps it -----------------------------------------


@dataclass
class Stack:
    """A guest as the laptop sees it: its outputs file, the laptop's PREFECT_HOME, the bootstrap's
    fixed arguments, and what every command run here printed (checked for secrets as it comes)."""

    host: LocalHost
    outputs: dict[str, str]
    work: Path
    profile: str
    bootstrap_args: list[str]  # --find-links URL and what the module's stack needs besides
    secrets: list[str]
    s3: S3Server | None = None  # where the bucket is, for modules with result storage
    runs: list[str] = field(default_factory=list)
    hosts_file: Path | None = None  # /etc/hosts for the laptop's commands once they use a domain

    @classmethod
    def create(
        cls,
        host: LocalHost,
        work: Path,
        *,
        profile: str,
        outputs: dict[str, str],
        bootstrap_args: list[str],
        s3: S3Server | None = None,
        extra_secrets: tuple[str, ...] = (),
        with_project: bool = False,
    ) -> Stack:
        stack = cls(
            host=host,
            outputs=outputs,
            work=work,
            profile=profile,
            bootstrap_args=bootstrap_args,
            secrets=secrets_of(host, outputs, *extra_secrets),
            s3=s3,
        )
        stack.write_outputs()
        if with_project:
            shutil.copytree(REPO / "examples" / "flows", stack.project)
        return stack

    @property
    def outputs_path(self) -> Path:
        return self.work / "outputs.json"

    @property
    def laptop_home(self) -> Path:
        return self.work / "laptop-prefect"

    @property
    def project(self) -> Path:
        """A copy of examples/flows, when created with_project."""
        return self.work / "flows"

    @property
    def ip(self) -> str:
        return self.host.address

    @property
    def api_url(self) -> str:
        return self.outputs["apiUrl"]

    @property
    def auth(self) -> tuple[str, str]:
        user, password = self.outputs["prefectAuthString"].split(":", 1)
        return user, password

    @property
    def hostname(self) -> str:
        return self.guest("uname -n").strip()

    def write_outputs(self, outputs: dict[str, str] | None = None, name: str = "outputs.json") -> Path:
        """self.outputs (or `outputs`) as the operator keeps them: a file only they can read."""
        path = self.work / name
        path.write_text(json.dumps(self.outputs if outputs is None else outputs))
        path.chmod(0o600)
        return path

    def profile_settings(self, home: Path | None = None, profile: str | None = None) -> dict[str, str]:
        profiles = tomllib.loads(((home or self.laptop_home) / "profiles.toml").read_text())
        return profiles["profiles"][profile or self.profile]

    def secrets_in(self, text: str) -> list[str]:
        return [secret for secret in self.secrets if secret in text]

    def guest(self, script: str, check: bool = True) -> str:
        """`sh -c script` in the guest, as root; its stdout."""
        return self.host.guest_exec(["sh", "-c", script], check=check).stdout

    def main_pid(self, unit: str) -> int:
        return int(self.guest(f"systemctl show -p MainPID --value {unit}"))

    def run(
        self, command: list[str], *, home: Path | None = None, cwd: Path | None = None, timeout: float = 900
    ) -> Run:
        """A command of the laptop's (its PREFECT_HOME is `home` or laptop_home), recorded in runs;
        it must print no traceback and no secret."""
        started = time.monotonic()
        done = subprocess.run(
            self.with_hosts_file(command),
            capture_output=True,
            text=True,
            env=laptop_env(home or self.laptop_home),
            cwd=cwd,
            timeout=timeout,
        )
        run = Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        self.runs.append(run.printed)
        assert "Traceback" not in run.printed, run.printed
        leaked = self.secrets_in(run.printed)
        assert not leaked, f"secrets in the output: {len(leaked)}"
        return run

    def with_hosts_file(self, command: list[str]) -> list[str]:
        """The command in a mount namespace of its own where /etc/hosts is hosts_file (when set):
        the real resolver path, without touching this machine's file."""
        if self.hosts_file is None:
            return command
        return [
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"',
            str(self.hosts_file),
            *command,
        ]

    def bootstrap(self, *args: str, home: Path | None = None, outputs_path: Path | None = None) -> Run:
        command = [
            sys.executable,
            str(BOOTSTRAP),
            "--outputs",
            str(outputs_path or self.outputs_path),
            *self.bootstrap_args,
            *args,
        ]
        if "--profile" not in args:
            command += ["--profile", self.profile]
        return self.run(command, home=home)

    def measured_bootstrap(
        self, record_property: Callable[[str, object], None], measure: str, what: str, *args: str, digits: int = 1
    ) -> Run:
        """A bootstrap that must succeed; its duration goes to the test report as `measure` and, with
        its output, to the log as `what`."""
        run = self.bootstrap(*args)
        assert run.returncode == 0, run.printed
        record_property(measure, round(run.seconds, digits))
        print(f"\n{what}: {run.seconds:.{digits}f} s\n{run.stdout}")
        return run

    def deploy(self, *args: str) -> Run:
        """deploy.py ENTRYPOINT in the project, through the laptop's profile."""
        return self.run([sys.executable, str(DEPLOY), ENTRYPOINT, *args], cwd=self.project, timeout=400)

    def run_flow_on_the_laptop(self, *, cwd: Path, home: Path | None = None, persist_result: bool = False) -> None:
        """A flow run in this machine's Python, configured by nothing but the profile: 21 * 2."""
        decorator = "@flow(persist_result=True)" if persist_result else "@flow"
        code = (
            f"from prefect import flow\n{decorator}\n"
            "def on_the_laptop(x: int) -> int:\n    return x * 2\nprint(on_the_laptop(21))\n"
        )
        done = self.run([sys.executable, "-c", code], home=home, cwd=cwd, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "42"

    def assert_the_hosts_worker_ran(self, flow_run: dict) -> None:
        """The flow run completed, and the host's first worker submitted it (its journal says so)."""
        assert flow_run["state_type"] == "COMPLETED"
        journal = self.guest("journalctl -u 'prefect-worker@*' --no-pager -o cat")
        assert f"Worker '{self.hostname}-1' submitting flow run '{flow_run['id']}'" in journal


# --- the guest's files and HTTPS ----------------------------------------------------------------


def files_state(stack: Stack, paths: list[str], stat_format: str = "%n %Y %a %U") -> str:
    """stat and sha256sum of the guest's files: what a converged or refused run must leave as it was."""
    joined = " ".join(paths)
    return stack.guest(f"stat -c '{stat_format}' {joined} && sha256sum {joined}")


def https_request(
    url: str,
    cafile: Path | None,
    *,
    resolve: tuple[str, str] | None = None,
    method: str = "GET",
    timeout: float = 15,
    auth: tuple[str, str] | None = None,
    **kwargs,
) -> httpx.Response:
    """A request verified against cafile alone (the default store when None). resolve=(name, ip):
    a URL naming `name` connects to ip, with SNI and Host for `name`, as if DNS said so."""
    verify = ssl.create_default_context(cafile=str(cafile)) if cafile else True
    name, ip = resolve or (None, None)
    with httpx.Client(verify=verify, timeout=timeout) as client:
        if name and name in url:
            request = client.build_request(method, url.replace(name, ip), **kwargs)
            request.headers["Host"] = name
            request.extensions["sni_hostname"] = name
        else:
            request = client.build_request(method, url, **kwargs)
        return client.send(request, auth=auth)


# What Prefect's own client retries (PrefectHttpxAsyncClient): a busy SQLite database answers 503
# ("Service Unavailable", is_client_retryable_exception), an overloaded proxy 502, a limit 429.
RETRYABLE_STATUS = frozenset({429, 502, 503})


def prefect_call(client: httpx.Client, method: str, url: str, *, attempts: int = 6, **kwargs) -> httpx.Response:
    """One API request as a Prefect client makes it: retried with backoff while the server answers
    a retryable status; any other answer (and the last retryable one) is returned as it is."""
    for attempt in range(attempts):
        response = client.request(method, url, **kwargs)
        if response.status_code not in RETRYABLE_STATUS or attempt == attempts - 1:
            return response
        time.sleep(min(2**attempt, 10) * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")
