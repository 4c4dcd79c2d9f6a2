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

Here: the steps of up and down. The state directory is demo_state.py, the services process
demo_services.py, the outputs stack_outputs.py, the closing summary demo_report.py; the command line
is prefect_host/cli/demo.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prefect_host.local.common import require_root_and_tools
from prefect_host.local.demo_report import (
    SCHEDULE_SECONDS,
    check_results,
    deployed_result_key,
    relative_to_cwd,
    summary_lines,
)
from prefect_host.local.demo_services import ensure_services, stop_services, url_port
from prefect_host.local.demo_state import DemoError, DemoPaths, load_host, one_demo_at_a_time, read_json, read_state
from prefect_host.local.image import build_image
from prefect_host.local.machine import LocalHost
from prefect_host.local.product import BOOTSTRAP_SCRIPT, DEPLOY_SCRIPT, EXAMPLE_DIR, EXAMPLE_ENTRYPOINT, REPO
from prefect_host.local.services import write_private_json
from prefect_host.local.stack_outputs import host_outputs, local_outputs, new_auth_string, previous_auth_string
from prefect_host.local.wheelhouse import GUEST_PYTHON, GUEST_REQUIREMENTS, ensure_wheelhouse
from prefect_host.storage import RESULTS_FOLDER

# Also the names the tests and the command line reach through this module, wherever they are defined.
__all__ = [
    "DEFAULT_STATE_DIR",
    "DEMO_PROFILE",
    "SCHEDULE_SECONDS",
    "DemoError",
    "DemoPaths",
    "deployed_result_key",
    "down",
    "load_host",
    "local_outputs",
    "new_auth_string",
    "one_demo_at_a_time",
    "previous_auth_string",
    "profile_env",
    "read_json",
    "read_state",
    "stop_services",
    "summary_lines",
    "up",
    "url_port",
]

DEFAULT_STATE_DIR = REPO / ".demo"
DEMO_PROFILE = "prefect-host-demo"
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


def profile_env(environ: Mapping[str, str], profile: str) -> dict[str, str]:
    """`environ` with Prefect's settings coming from `profile` only."""
    env = {k: v for k, v in environ.items() if k not in PROFILE_OVERRIDES}
    env["PREFECT_PROFILE"] = profile
    return env


# --- up -----------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)  # flushed: the product's commands write to the same terminal in between


def up(paths: DemoPaths, say: Callable[[str], None] = _say) -> None:
    started = time.monotonic()
    require_root_and_tools("systemd-nspawn", "ip", "nsenter", "mount", "umount")
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with one_demo_at_a_time(paths):
        wheels = ensure_wheelhouse(GUEST_REQUIREMENTS, python_version=GUEST_PYTHON)
        host = _ensure_host(paths, say)
        services = ensure_services(paths, host, wheels, say)
        outputs = host_outputs(host, previous_auth_string(paths.outputs) or new_auth_string(), services)
        write_private_json(paths.outputs, outputs)
        paths.known_hosts.write_text(f"{host.address} {host.host_public_key}\n")
        report, results = _run_what_a_user_runs(paths, services, say)
    say("")
    for line in summary_lines(
        ui_url=outputs["uiUrl"],
        api_url=outputs["apiUrl"],
        state_dir=paths.root,
        profile=DEMO_PROFILE,
        profiles_path=report.get("profiles_path", "your Prefect home"),
        prefect_cli=relative_to_cwd(Path(sys.executable).parent / "prefect"),
        flow_run_url=f"{outputs['uiUrl']}/runs/flow-run/{report.get('flow_run_id', '')}",
        results=results,
        bucket=services["bucket"],
        s3_endpoint_url=services["s3_endpoint_url"],
        ssh_command=(
            f"ssh -o UserKnownHostsFile={relative_to_cwd(paths.known_hosts)} -i {host.identity_file} "
            f"{host.ssh_user}@{host.address}"
        ),
        seconds=time.monotonic() - started,
    ):
        say(line)


def _run_what_a_user_runs(
    paths: DemoPaths, services: Mapping[str, str], say: Callable[[str], None]
) -> tuple[dict, dict[str, tuple[str, int]]]:
    """The bootstrap on the outputs, a flow run through its profile, the example deployed and run once:
    what the flow run reported, and (key, size) of each result the runs left in the bucket."""
    say(f"demo: stack outputs in {paths.outputs}; running scripts/bootstrap.py on them")
    _run_step(
        [
            sys.executable,
            str(BOOTSTRAP_SCRIPT),
            "--outputs",
            str(paths.outputs),
            "--find-links",
            services["index_url"],
            "--apt-source",
            services["apt_source"],
            "--profile",
            DEMO_PROFILE,
            "--connect-timeout",
            str(BOOTSTRAP_CONNECT_TIMEOUT),
        ],
        what="the bootstrap",
        cwd=paths.root,
        env=dict(os.environ),
    )
    say(f"demo: a flow run from this machine through the profile {DEMO_PROFILE}")
    paths.flow_report.unlink(missing_ok=True)
    _run_step(
        [sys.executable, "-c", HELLO_FLOW, str(paths.flow_report)],
        what="the flow run",
        cwd=paths.root,
        env=profile_env(os.environ, DEMO_PROFILE),
    )
    report = read_json(paths.flow_report, "the flow run's report") or {}
    say(f"demo: deploying {EXAMPLE_ENTRYPOINT} every {SCHEDULE_SECONDS} s, and running it once now")
    deployed = _run_step(
        [
            sys.executable,
            str(DEPLOY_SCRIPT),
            EXAMPLE_ENTRYPOINT,
            "--profile",
            DEMO_PROFILE,
            "--interval",
            str(SCHEDULE_SECONDS),
            "--run-now",
        ],
        what="the deployment",
        cwd=EXAMPLE_DIR,
        env=profile_env(os.environ, DEMO_PROFILE),
    )
    keys = {
        "hello-prefect-host, run on this machine": report.get("result_key")
        and f"{RESULTS_FOLDER}/{report['result_key']}",
        "the deployed flow, run by the worker on the host": deployed_result_key(deployed, services["bucket"]),
    }
    return report, check_results(services, {what: key for what, key in keys.items() if key})


def _ensure_host(paths: DemoPaths, say: Callable[[str], None]) -> LocalHost:
    host = load_host(paths)
    if host is not None:
        if host.is_running:
            say(f"demo: reusing the demo host {host.name} at {host.address}")
            return host
        if (host.root / "etc/passwd").is_file() and Path(f"/run/netns/{host.netns}").exists():
            say(f"demo: the demo host {host.name} is powered off; booting it again")
            host.boot()
            host.save_state(paths.host_state)
            return host
        say(
            f"demo: the demo host {host.name} is gone (this machine restarted?); removing what is left of it "
            "and starting a new one"
        )
        host.destroy()
    host = LocalHost.create(build_image())
    host.save_state(paths.host_state)  # from here on `make demo-down` removes it, whatever happens next
    host.boot()
    host.save_state(paths.host_state)
    return host


def _run_step(argv: list[str], *, what: str, cwd: Path, env: dict[str, str]) -> str:
    """Runs one of the product's commands with its output on this terminal; returns its stdout."""
    lines = []
    with subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, bufsize=1
    ) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    if process.returncode != 0:
        raise DemoError(
            f"{what} failed (exit status {process.returncode}; its message is above). The demo "
            "host stays up: fix the cause and run `make demo` again (it continues where it stopped), "
            "or remove it all with `make demo-down`."
        )
    return "".join(lines)


# --- down ---------------------------------------------------------------------------------------


def down(paths: DemoPaths, say: Callable[[str], None] = _say) -> None:
    if not paths.root.is_dir() or not any(p.exists() for p in paths.state_files()):
        say(f"demo: nothing to stop (no demo state in {paths.root}).")
        return
    with one_demo_at_a_time(paths):
        try:
            state = read_state(paths)
        except DemoError as exc:
            say(f"demo: {exc} Going on without it.")
            state = None
        if stop_services(state):
            say("demo: stopped the package index and the S3 server")
        host = load_host(paths)
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
            return (
                f"kept the profile {name}: it is your active profile and points at the removed host. "
                f"Switch with `prefect profile use <another>`, then `prefect profile delete {name}`."
            )
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
