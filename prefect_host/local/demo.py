"""`make demo` and `make demo-down`: your own Prefect host on this machine, with no cloud.

`up` plays `pulumi up` with a local Debian guest for the VM (prefect_host.local.LocalHost) and a local
S3-API server for the bucket, then does what the README tells a user to do: writes the stack outputs
(cloud "local"), runs scripts/bootstrap.py on them, runs a flow through the new profile, deploys the
example flow on a 5-minute schedule with scripts/deploy.py and runs it once now. Everything keeps
running afterwards. Run again, it reuses what is running and converges (the bootstrap changes nothing).

`down` stops the services, destroys the guest, removes the demo profile (unless it is the active one:
that stays the user's choice) and the state files. Run again, it has nothing left to do.

The profile goes into the user's real Prefect home (PREFECT_HOME / PREFECT_PROFILES_PATH honoured):
using it from the command line afterwards is the point of the demo. It is never activated.

State, in the state directory (default .demo/ in the repository, gitignored; files with secrets 0600):
  host.json      the guest (LocalHost.save_state: it outlives this process)
  state.json     the services process: its PID and its S3 server's, with start times
  services.json  written by the services process: URLs, the bucket, the IAM user's access key
  outputs.json   the stack outputs, with the SSH key and the auth string (bootstrap --outputs)
  known_hosts    the guest's pinned host key, for `ssh -o UserKnownHostsFile=...`
  services.log   the services process's output
  flow-run.json  what the flow run through the profile reported
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prefect_host.errors import PrefectHostError
from prefect_host.local.apt_repo import ensure_apt_repo
from prefect_host.local.common import require_root_and_tools
from prefect_host.local.image import build_image
from prefect_host.local.machine import LocalHost, _alive, _process_start
from prefect_host.local.services import write_private_json
from prefect_host.local.wheelhouse import (
    GUEST_PREFECT_VERSION,
    GUEST_PYTHON,
    GUEST_REQUIREMENTS,
    ensure_wheelhouse,
)
from prefect_host.outputs import StackOutputs
from prefect_host.storage import RESULTS_FOLDER

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP_SCRIPT = REPO / "scripts" / "bootstrap.py"
DEPLOY_SCRIPT = REPO / "scripts" / "deploy.py"
EXAMPLE_DIR = REPO / "examples" / "flows"
EXAMPLE_ENTRYPOINT = "duration_model.py:train_duration_model"
DEFAULT_STATE_DIR = REPO / ".demo"

DEMO_PROFILE = "prefect-host-demo"
DEMO_BUCKET = "prefect-host-demo"
DEMO_IAM_USER = "prefect-host-demo"
AUTH_USER = "admin"
SCHEDULE_SECONDS = 300  # the tutorial's 5 minutes
STATE_VERSION = 1
SERVICES_START_TIMEOUT = 60.0
SERVICES_STOP_TIMEOUT = 10.0
BOOTSTRAP_CONNECT_TIMEOUT = 120
# Set in the environment, these win over any profile: the demo's own runs use its profile only.
PROFILE_OVERRIDES = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY", "PREFECT_PROFILE")

# A small flow run from this machine through nothing but the profile; it reports to the file in argv[1].
HELLO_FLOW = """\
import json, sys
from prefect import flow, task
from prefect.settings import get_current_settings

@task
def greet(name: str) -> str:
    return f"hello from {name}"

@flow(log_prints=True)
def hello_prefect_host(name: str = "your own Prefect host") -> str:
    message = greet(name)
    print(message)
    return message

state = hello_prefect_host(return_state=True)
record = getattr(state.data, "metadata", None)  # a persisted result's record names its storage key
with open(sys.argv[1], "w") as report:
    json.dump({"flow_run_id": str(state.state_details.flow_run_id), "state": state.type.value,
               "result_key": getattr(record, "storage_key", None),
               "profiles_path": str(get_current_settings().profiles_path)}, report)
sys.exit(0 if state.is_completed() else 1)
"""


class DemoError(PrefectHostError):
    """The demo could not be brought up or down; the message says what to do."""


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def host_state(self) -> Path:
        return self.root / "host.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def services(self) -> Path:
        return self.root / "services.json"

    @property
    def services_log(self) -> Path:
        return self.root / "services.log"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs.json"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def flow_report(self) -> Path:
        return self.root / "flow-run.json"

    def state_files(self) -> list[Path]:
        """Everything the demo writes here, except the lock."""
        return [self.host_state, self.state, self.services, self.services_log, self.outputs,
                self.known_hosts, self.flow_report]


# --- pure parts ---------------------------------------------------------------------------------

def new_auth_string() -> str:
    return f"{AUTH_USER}:{secrets.token_urlsafe(24)}"


# The outputs always carry a bucket; a host bootstrapped with --no-storage never reads these.
NO_STORAGE = {"bucket": "no-storage", "region": "us-east-1", "iam_group": "no-storage", "iam_user": "no-storage",
              "access_key_id": "no-storage", "secret_access_key": "no-storage", "s3_endpoint_url": None}


def local_outputs(*, address: str, ssh_user: str, host_public_key: str, ssh_private_key: str,
                  auth_string: str, storage: Mapping[str, str | None] | None) -> dict[str, str]:
    """What `pulumi stack output --json --show-secrets` would print for a local host, checked with
    the same contract the bootstrap reads it with. `storage` is a services record (services.json);
    None gives placeholders, for a bootstrap with --no-storage."""
    storage = storage or NO_STORAGE
    outputs = {
        "cloud": "local", "publicIp": address, "sshUser": ssh_user, "hostPublicKey": host_public_key,
        "sshPrivateKey": ssh_private_key,
        # As infra/ exports with no domain: Caddy's internal CA, HTTPS on 443 (and 4200).
        "tlsMode": "internal", "apiUrl": f"https://{address}/api", "uiUrl": f"https://{address}",
        "prefectVersion": GUEST_PREFECT_VERSION,
        "prefectAuthString": auth_string, "bucketName": storage["bucket"], "bucketRegion": storage["region"],
        "iamGroupName": storage["iam_group"], "iamUserName": storage["iam_user"],
        "awsAccessKeyId": storage["access_key_id"], "awsSecretAccessKey": storage["secret_access_key"],
    }
    if storage["s3_endpoint_url"]:
        outputs["s3EndpointUrl"] = storage["s3_endpoint_url"]
    StackOutputs.from_mapping(outputs, source="the local host's outputs")
    return outputs


def host_outputs(host: LocalHost, auth_string: str, storage: Mapping[str, str | None] | None) -> dict[str, str]:
    return local_outputs(address=host.address, ssh_user=host.ssh_user, host_public_key=host.host_public_key,
                         ssh_private_key=host.identity_file.read_text(), auth_string=auth_string,
                         storage=storage)


def previous_auth_string(outputs_path: Path) -> str | None:
    """The auth string of an earlier run, so a re-run converges instead of rotating it."""
    try:
        value = json.loads(outputs_path.read_text()).get("prefectAuthString")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(value, str) and value.startswith(f"{AUTH_USER}:") and len(value) > len(AUTH_USER) + 16:
        return value
    return None


def profile_env(environ: Mapping[str, str], profile: str) -> dict[str, str]:
    """`environ` with Prefect's settings coming from `profile` only."""
    env = {k: v for k, v in environ.items() if k not in PROFILE_OVERRIDES}
    env["PREFECT_PROFILE"] = profile
    return env


def read_json(path: Path, what: str) -> dict | None:
    """The JSON object in `path`; None when there is no such file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DemoError(f"{path} ({what}) is unreadable: {exc}. Run `make demo-down` to clear the demo's "
                        "state, then `make demo`.") from None
    if not isinstance(data, dict):
        raise DemoError(f"{path} ({what}) does not hold a JSON object. Run `make demo-down` to clear the "
                        "demo's state, then `make demo`.")
    return data


def url_port(url: str) -> int:
    """The port of an http URL (0 when it has none): a restarted service asks for it again."""
    return urllib.parse.urlsplit(url).port or 0


def deployed_result_key(deploy_output: str, bucket: str) -> str | None:
    """The object key of the result that `deploy.py --run-now` reports ("... result at s3://B/KEY")."""
    match = re.search(rf"result at s3://{re.escape(bucket)}/(\S+)", deploy_output)
    return match.group(1) if match else None


def summary_lines(*, ui_url: str, api_url: str, state_dir: Path, profile: str, profiles_path: str,
                  prefect_cli: str, flow_run_url: str, results: Mapping[str, tuple[str, int]], bucket: str,
                  s3_endpoint_url: str, ssh_command: str, seconds: float) -> list[str]:
    outputs = _relative(state_dir / "outputs.json")
    read_auth = f"import json; print(json.load(open(\"{outputs}\"))[\"prefectAuthString\"])"
    host = urllib.parse.urlsplit(ui_url).hostname
    lines = [
        f"demo: ready in {seconds:.0f} s; it all keeps running until `make demo-down`.",
        f"  Prefect UI    {ui_url}   (API {api_url})",
        f"  sign in with  the auth string, prefectAuthString in {outputs}:",
        f"                  python3 -c '{read_auth}'",
        "  reach it      on this machine: open the URL. From another computer: `ssh -D 1080 <you>@<this machine>`",
        f"                and set the browser's SOCKS proxy to localhost:1080 (the UI calls the API at {host},",
        "                so a plain `ssh -L` port forward is not enough).",
        f"  profile       {profile} in {profiles_path} (your Prefect home; not activated):",
        f"                  PREFECT_PROFILE={profile} {prefect_cli} flow-run ls",
        f"                  {prefect_cli} profile use {profile}      # to make it your default",
        f"  flow run      {flow_run_url}",
        f"  schedule      {EXAMPLE_ENTRYPOINT} (examples/flows) every {SCHEDULE_SECONDS // 60} minutes, "
        "run by the worker on the host",
    ]
    if results:
        lines.append(f"  results       in bucket {bucket} at {s3_endpoint_url} (moto: kept in memory):")
        lines += [f"                  s3://{bucket}/{key}  ({size} bytes, {what})"
                  for what, (key, size) in results.items()]
    lines += [f"  host shell    {ssh_command}",
              "  stop it all   make demo-down"]
    return lines


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- up -----------------------------------------------------------------------------------------

def _say(text: str) -> None:
    print(text, flush=True)  # flushed: the product's commands write to the same terminal in between


def up(paths: DemoPaths, say: Callable[[str], None] = _say) -> None:
    started = time.monotonic()
    require_root_and_tools("systemd-nspawn", "ip", "nsenter", "mount", "umount")
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _exclusive(paths):
        wheels = ensure_wheelhouse(GUEST_REQUIREMENTS, python_version=GUEST_PYTHON)
        host = _ensure_host(paths, say)
        services = _ensure_services(paths, host, wheels, say)
        outputs = host_outputs(host, previous_auth_string(paths.outputs) or new_auth_string(), services)
        write_private_json(paths.outputs, outputs)
        paths.known_hosts.write_text(f"{host.address} {host.host_public_key}\n")
        say(f"demo: stack outputs in {paths.outputs}; running scripts/bootstrap.py on them")
        _run_step([sys.executable, str(BOOTSTRAP_SCRIPT), "--outputs", str(paths.outputs),
                   "--find-links", services["index_url"], "--apt-source", services["apt_source"],
                   "--profile", DEMO_PROFILE,
                   "--connect-timeout", str(BOOTSTRAP_CONNECT_TIMEOUT)],
                  what="the bootstrap", cwd=paths.root, env=dict(os.environ))
        say(f"demo: a flow run from this machine through the profile {DEMO_PROFILE}")
        paths.flow_report.unlink(missing_ok=True)
        _run_step([sys.executable, "-c", HELLO_FLOW, str(paths.flow_report)], what="the flow run",
                  cwd=paths.root, env=profile_env(os.environ, DEMO_PROFILE))
        report = read_json(paths.flow_report, "the flow run's report") or {}
        say(f"demo: deploying {EXAMPLE_ENTRYPOINT} every {SCHEDULE_SECONDS} s, and running it once now")
        deployed = _run_step([sys.executable, str(DEPLOY_SCRIPT), EXAMPLE_ENTRYPOINT, "--profile", DEMO_PROFILE,
                              "--interval", str(SCHEDULE_SECONDS), "--run-now"],
                             what="the deployment", cwd=EXAMPLE_DIR, env=profile_env(os.environ, DEMO_PROFILE))
        keys = {"hello-prefect-host, run on this machine":
                report.get("result_key") and f"{RESULTS_FOLDER}/{report['result_key']}",
                "the deployed flow, run by the worker on the host": deployed_result_key(deployed, services["bucket"])}
        results = _check_results(services, {what: key for what, key in keys.items() if key})
    say("")
    for line in summary_lines(
            ui_url=outputs["uiUrl"], api_url=outputs["apiUrl"], state_dir=paths.root, profile=DEMO_PROFILE,
            profiles_path=report.get("profiles_path", "your Prefect home"),
            prefect_cli=_relative(Path(sys.executable).parent / "prefect"),
            flow_run_url=f"{outputs['uiUrl']}/runs/flow-run/{report.get('flow_run_id', '')}", results=results,
            bucket=services["bucket"], s3_endpoint_url=services["s3_endpoint_url"],
            ssh_command=(f"ssh -o UserKnownHostsFile={_relative(paths.known_hosts)} -i {host.identity_file} "
                         f"{host.ssh_user}@{host.address}"),
            seconds=time.monotonic() - started):
        say(line)


@contextlib.contextmanager
def _exclusive(paths: DemoPaths) -> Iterator[None]:
    """One `make demo` / `make demo-down` at a time; a second one is told, not kept waiting."""
    with open(paths.lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(f"Another `make demo` or `make demo-down` is running on {paths.root} (it holds "
                            f"{paths.lock}); wait for it to finish.") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_host(paths: DemoPaths) -> LocalHost | None:
    """The demo's guest, from the freshest record: the host's own state file is rewritten the moment
    systemd-nspawn starts, so it knows the guest's PID even when `make demo` was interrupted then."""
    if not paths.host_state.exists():
        return None
    host = LocalHost.from_state(paths.host_state)
    own = host.host_dir / "state.json"
    return LocalHost.from_state(own) if own.exists() else host


def _ensure_host(paths: DemoPaths, say: Callable[[str], None]) -> LocalHost:
    host = _load_host(paths)
    if host is not None:
        if host.is_running:
            say(f"demo: reusing the demo host {host.name} at {host.address}")
            return host
        if (host.root / "etc/passwd").is_file() and Path(f"/run/netns/{host.netns}").exists():
            say(f"demo: the demo host {host.name} is powered off; booting it again")
            host.boot()
            host.save_state(paths.host_state)
            return host
        say(f"demo: the demo host {host.name} is gone (this machine restarted?); removing what is left of it "
            "and starting a new one")
        host.destroy()
    host = LocalHost.create(build_image())
    host.save_state(paths.host_state)  # from here on `make demo-down` removes it, whatever happens next
    host.boot()
    host.save_state(paths.host_state)
    return host


def _read_state(paths: DemoPaths) -> dict | None:
    state = read_json(paths.state, "the demo's process state")
    if state is not None and state.get("version") != STATE_VERSION:
        raise DemoError(f"{paths.state} was written by another version of the demo (version "
                        f"{state.get('version')!r}, expected {STATE_VERSION}). Run `make demo-down` to clear the "
                        "demo's state, then `make demo`.")
    return state


def _ensure_services(paths: DemoPaths, host: LocalHost, wheels: Path, say: Callable[[str], None]) -> dict:
    state = _read_state(paths)
    record = read_json(paths.services, "the services record")
    if (state and record and _alive(state.get("pid"), state.get("start")) and record.get("pid") == state["pid"]
            and "apt_source" in record
            and urllib.parse.urlsplit(record.get("index_url", "")).hostname == host.gateway):
        say(f"demo: reusing the package index {record['index_url']} and S3 server {record['s3_endpoint_url']}")
        return record
    _stop_services(state)
    ports = ({"index": url_port(record.get("index_url", "")), "s3": url_port(record.get("s3_endpoint_url", ""))}
             if record and urllib.parse.urlsplit(record.get("index_url", "")).hostname == host.gateway
             else {"index": 0, "s3": 0})
    paths.services.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with open(paths.services_log, "ab") as log:
        os.fchmod(log.fileno(), 0o600)
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect_host.local.services", "--bind", host.gateway, "--wheels", str(wheels),
             "--apt-repo", str(ensure_apt_repo(("caddy",), suite="trixie")),
             "--bucket", DEMO_BUCKET, "--iam-user", DEMO_IAM_USER, "--ready", str(paths.services),
             "--index-port", str(ports["index"]), "--s3-port", str(ports["s3"])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd="/",
            start_new_session=True)  # detached: it outlives this process and the terminal
    state = {"version": STATE_VERSION, "pid": process.pid, "start": _process_start(process.pid)}
    write_private_json(paths.state, state)  # before waiting: an interrupted demo can still be taken down
    deadline = time.monotonic() + SERVICES_START_TIMEOUT
    while not paths.services.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_services(state)
            tail = "\n".join(paths.services_log.read_text(errors="replace").splitlines()[-10:])
            raise DemoError(f"The demo's package index and S3 server did not start (log {paths.services_log}):\n"
                            f"{tail}")
        time.sleep(0.1)
    record = read_json(paths.services, "the services record")
    state |= {"s3_pid": record["s3_pid"], "s3_start": _process_start(record["s3_pid"])}
    write_private_json(paths.state, state)
    say(f"demo: package index {record['index_url']}, S3 server {record['s3_endpoint_url']} "
        f"(bucket {record['bucket']}), PID {process.pid}")
    return record


def _stop_services(state: dict | None) -> bool:
    """Stops the services process and its S3 server, each only if it is still the process that was
    started (PID and start time); True when something was running."""
    if not state:
        return False
    stopped = False
    for pid_key, start_key in (("pid", "start"), ("s3_pid", "s3_start")):
        pid, start = state.get(pid_key), state.get(start_key)
        if not _alive(pid, start):
            continue
        stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + SERVICES_STOP_TIMEOUT
        while _alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return stopped


def _run_step(argv: list[str], *, what: str, cwd: Path, env: dict[str, str]) -> str:
    """Runs one of the product's commands with its output on this terminal; returns its stdout."""
    lines = []
    with subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          text=True, bufsize=1) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    if process.returncode != 0:
        raise DemoError(f"{what} failed (exit status {process.returncode}; its message is above). The demo "
                        "host stays up: fix the cause and run `make demo` again (it continues where it stopped), "
                        "or remove it all with `make demo-down`.")
    return "".join(lines)


def _check_results(services: Mapping[str, str], keys: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """(key, size) of each result object, read back with the stack's own key: proof they landed."""
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("s3", endpoint_url=services["s3_endpoint_url"], region_name=services["region"],
                          aws_access_key_id=services["access_key_id"],
                          aws_secret_access_key=services["secret_access_key"])
    found = {}
    for what, key in keys.items():
        try:
            found[what] = (key, client.head_object(Bucket=services["bucket"], Key=key)["ContentLength"])
        except ClientError as exc:
            raise DemoError(f"The result of {what} is not in the bucket: HEAD s3://{services['bucket']}/{key} "
                            f"answered {exc.response['Error']['Code']}.") from None
    return found


# --- down ---------------------------------------------------------------------------------------

def down(paths: DemoPaths, say: Callable[[str], None] = _say) -> None:
    if not paths.root.is_dir() or not any(p.exists() for p in paths.state_files()):
        say(f"demo: nothing to stop (no demo state in {paths.root}).")
        return
    with _exclusive(paths):
        try:
            state = _read_state(paths)
        except DemoError as exc:
            say(f"demo: {exc} Going on without it.")
            state = None
        if _stop_services(state):
            say("demo: stopped the package index and the S3 server")
        host = _load_host(paths)
        if host is not None:
            host.destroy()
            say(f"demo: removed the demo host {host.name} ({host.address})")
        say(f"demo: {_remove_profile(DEMO_PROFILE)}")
        for path in paths.state_files():
            path.unlink(missing_ok=True)
    say(f"demo: down; nothing of it is left running, and its state files in {paths.root} are gone.")


def _remove_profile(name: str) -> str:
    """Removes the demo's profile from the user's Prefect profiles, unless it is the active one."""
    with _without_profile_overrides():
        from prefect.settings import load_profiles, save_profiles

        own = load_profiles(include_defaults=False)
        if name not in own.names:
            return f"no profile {name} to remove"
        if own.active_name == name:
            return (f"kept the profile {name}: it is your active profile and points at the removed host. "
                    f"Switch with `prefect profile use <another>`, then `prefect profile delete {name}`.")
        profiles = load_profiles()
        profiles.remove_profile(name)
        save_profiles(profiles)
    return f"removed the profile {name} from your Prefect profiles"


@contextlib.contextmanager
def _without_profile_overrides() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in PROFILE_OVERRIDES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="demo.py", description="A Prefect host on this machine, no cloud: `up` (make demo) starts it or "
                                    "converges it, `down` (make demo-down) removes it.")
    parser.add_argument("action", nargs="?", choices=("up", "down"), default="up")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help=f"where the demo keeps its state (default {DEFAULT_STATE_DIR})")
    args = parser.parse_args(argv)
    paths = DemoPaths(args.state_dir.resolve())
    try:
        (up if args.action == "up" else down)(paths)
    except PrefectHostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted. `make demo` continues where it stopped; `make demo-down` removes what was started.",
              file=sys.stderr)
        return 130
    return 0
