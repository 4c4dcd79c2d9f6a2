"""What the host looks like now, gathered in ONE round trip and parsed by a pure function.

The script runs as the SSH user, checks `sudo -n`, and reads the rest as root (the env file is
0600 root). It prints `key=value` lines; `parse_facts` turns them into a typed HostFacts.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from prefect_host import server_files as sf
from prefect_host.errors import HostUnsupported
from prefect_host.ssh import HostSession
from prefect_host.tls import CADDY_FACTS_SCRIPT, CaddyFacts, parse_caddy_facts

_END = "facts_end=1"
_WORKER_GLOB = sf.worker_unit_name("*")

FACTS_SCRIPT = f"""\
echo "login_user=$(id -un)"
if ! sudo -n true 2>/dev/null; then
  echo "sudo=no"; echo "sudo_error=$(sudo -n true 2>&1 | head -n 1)"; echo "{_END}"; exit 0
fi
echo "sudo=yes"
sudo -n sh <<'ROOT_FACTS'
cd /
sha() {{ [ -f "$1" ] && sha256sum "$1" | cut -d' ' -f1; }}
. /etc/os-release 2>/dev/null
echo "os_id=$ID"
echo "os_version_id=$VERSION_ID"
echo "os_pretty_name=$PRETTY_NAME"
echo "arch=$(uname -m)"
py=$(command -v python3)
echo "python3=$py"
[ -n "$py" ] && echo "python3_version=$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
command -v cloud-init >/dev/null 2>&1 &&
  echo "cloud_init_status=$(cloud-init status 2>/dev/null | sed -n 's/^status: //p')"
[ -x {sf.UV_PATH} ] && echo "uv_version=$({sf.UV_PATH} --version 2>/dev/null | cut -d' ' -f2)"
echo "venv_python=$(readlink -e {sf.VENV_DIR}/bin/python)"
for d in {sf.VENV_DIR}/lib/python3*/site-packages/prefect-*.dist-info; do
  [ -d "$d" ] && v="${{d##*/prefect-}}" && echo "venv_prefect_version=${{v%.dist-info}}"
done
[ -f {sf.BYTECODE_MARKER} ] && echo "bytecode_version=$(cat {sf.BYTECODE_MARKER})"
echo "bytecode_job=$(systemctl show -p ActiveState --value {sf.BYTECODE_UNIT} 2>/dev/null)"
echo "service_user_home=$(getent passwd {sf.SERVICE_USER} | cut -d: -f6)"
[ -d {sf.STATE_DIR} ] && echo "state_dir_exists=1"
echo "env_sha256=$(sha {sf.ENV_FILE})"
echo "unit_sha256=$(sha {sf.UNIT_PATH})"
[ -f {sf.APPLIED_DIGEST_FILE} ] && echo "applied_digest=$(cat {sf.APPLIED_DIGEST_FILE})"
echo "unit_enabled=$(systemctl is-enabled {sf.UNIT_NAME} 2>/dev/null)"
systemctl show {sf.UNIT_NAME} -p ActiveState -p MainPID -p NeedDaemonReload -p NRestarts 2>/dev/null | sed 's/^/unit_/'
# What systemd puts for %H in the worker names.
echo "hostname=$(uname -n)"
for d in {sf.VENV_DIR}/lib/python3*/site-packages/prefect_aws-*.dist-info; do
  [ -d "$d" ] && v="${{d##*/prefect_aws-}}" && echo "venv_prefect_aws_version=${{v%.dist-info}}"
done
echo "worker_env_sha256=$(sha {sf.WORKER_ENV_FILE})"
echo "worker_unit_sha256=$(sha {sf.WORKER_UNIT_PATH})"
[ -f {sf.WORKER_APPLIED_DIGEST_FILE} ] && echo "worker_applied_digest=$(cat {sf.WORKER_APPLIED_DIGEST_FILE})"
# Every worker instance systemd knows (loaded, or enabled but not loaded): one line each.
workers=$( {{ systemctl list-units --all --plain --no-legend '{_WORKER_GLOB}' 2>/dev/null | cut -d' ' -f1
             cd /etc/systemd/system/multi-user.target.wants 2>/dev/null &&
               ls -d {_WORKER_GLOB} 2>/dev/null; }} | sort -u)
[ -n "$workers" ] && systemctl show -p Id -p UnitFileState -p ActiveState -p NeedDaemonReload $workers | awk -F= '
  $1 == "Id" {{ id = $2 }} $1 == "UnitFileState" {{ f = $2 }} $1 == "ActiveState" {{ a = $2 }}
  $1 == "NeedDaemonReload" {{ r = $2 }}
  /^$/ {{ if (id != "") print "worker_unit=" id "," f "," a "," r; id = f = a = r = "" }}
  END {{ if (id != "") print "worker_unit=" id "," f "," a "," r }}'
{CADDY_FACTS_SCRIPT}echo "{_END}"
ROOT_FACTS
"""


@dataclass(frozen=True)
class WorkerUnit:
    """One instance of the worker template, as systemd sees it."""
    name: str  # prefect-worker@1.service
    enabled: str  # UnitFileState: enabled, disabled, ...
    active_state: str
    need_daemon_reload: bool

    @property
    def instance(self) -> str:
        return self.name.split("@", 1)[1].removesuffix(".service")

    @property
    def running(self) -> bool:
        """Running or about to (activating covers a pending automatic restart)."""
        return self.active_state in ("active", "activating", "reloading")


@dataclass(frozen=True)
class HostFacts:
    login_user: str
    sudo_ok: bool
    sudo_error: str | None = None
    os_id: str | None = None
    os_version_id: str | None = None
    os_pretty_name: str | None = None
    arch: str | None = None
    python3: str | None = None
    python3_version: str | None = None
    cloud_init_status: str | None = None  # None: no cloud-init on this host
    uv_version: str | None = None
    venv_python: str | None = None  # None: no venv, or its interpreter is gone (OS upgrade)
    venv_prefect_version: str | None = None
    bytecode_version: str | None = None  # the Prefect version the venv's bytecode was compiled for
    bytecode_job: str | None = None  # ActiveState of the background compile job
    service_user_home: str | None = None  # None: the service user does not exist
    state_dir_exists: bool = False
    env_sha256: str | None = None
    unit_sha256: str | None = None
    applied_digest: str | None = None
    unit_enabled: str | None = None
    unit_active_state: str | None = None
    main_pid: int = 0
    need_daemon_reload: bool = False
    n_restarts: int = 0
    hostname: str | None = None
    venv_prefect_aws_version: str | None = None
    worker_env_sha256: str | None = None
    worker_unit_sha256: str | None = None
    worker_applied_digest: str | None = None
    workers: tuple[WorkerUnit, ...] = ()
    caddy: CaddyFacts = CaddyFacts()


def parse_facts(text: str) -> HostFacts:
    """Parse the facts script's output. Raises if it was cut short (no end marker)."""
    values: dict[str, str] = {}
    workers: list[WorkerUnit] = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.strip() == "worker_unit":
            name, enabled, active, reload = (value.strip().split(",") + ["", "", ""])[:4]
            workers.append(WorkerUnit(name, enabled, active, reload == "yes"))
        else:
            values[key.strip()] = value.strip()
    if values.get("facts_end") != "1":
        raise HostUnsupported("Reading the host's state failed: the facts script stopped early "
                              f"(its output: {text.strip()[-300:]!r}).")

    def text_or_none(key: str) -> str | None:
        return values.get(key) or None

    def as_int(key: str) -> int:
        try:
            return int(values.get(key, "0") or 0)
        except ValueError:
            return 0

    return HostFacts(
        login_user=values.get("login_user", ""),
        sudo_ok=values.get("sudo") == "yes",
        sudo_error=text_or_none("sudo_error"),
        os_id=text_or_none("os_id"),
        os_version_id=text_or_none("os_version_id"),
        os_pretty_name=text_or_none("os_pretty_name"),
        arch=text_or_none("arch"),
        python3=text_or_none("python3"),
        python3_version=text_or_none("python3_version"),
        cloud_init_status=(values["cloud_init_status"] or "unknown") if "cloud_init_status" in values else None,
        uv_version=text_or_none("uv_version"),
        venv_python=text_or_none("venv_python"),
        venv_prefect_version=text_or_none("venv_prefect_version"),
        bytecode_version=text_or_none("bytecode_version"),
        bytecode_job=text_or_none("bytecode_job"),
        service_user_home=text_or_none("service_user_home"),
        state_dir_exists=values.get("state_dir_exists") == "1",
        env_sha256=text_or_none("env_sha256"),
        unit_sha256=text_or_none("unit_sha256"),
        applied_digest=text_or_none("applied_digest"),
        unit_enabled=text_or_none("unit_enabled"),
        unit_active_state=text_or_none("unit_ActiveState"),
        main_pid=as_int("unit_MainPID"),
        need_daemon_reload=values.get("unit_NeedDaemonReload") == "yes",
        n_restarts=as_int("unit_NRestarts"),
        hostname=text_or_none("hostname"),
        venv_prefect_aws_version=text_or_none("venv_prefect_aws_version"),
        worker_env_sha256=text_or_none("worker_env_sha256"),
        worker_unit_sha256=text_or_none("worker_unit_sha256"),
        worker_applied_digest=text_or_none("worker_applied_digest"),
        workers=tuple(workers),
        caddy=parse_caddy_facts(text),
    )


def gather_facts(session: HostSession) -> HostFacts:
    result = session.run("sh -s", stdin=FACTS_SCRIPT, timeout=60, label="read the host's state")
    return parse_facts(result.stdout)


def service_state(session: HostSession) -> tuple[str, int, int]:
    """(ActiveState, MainPID, NRestarts) of the server unit, for watching a start."""
    out = session.run(f"systemctl show {shlex.quote(sf.UNIT_NAME)} -p ActiveState -p MainPID -p NRestarts",
                      timeout=30, label="systemctl show").stdout
    values = dict(line.partition("=")[::2] for line in out.splitlines())
    return (values.get("ActiveState", ""), int(values.get("MainPID") or 0),
            int(values.get("NRestarts") or 0))
