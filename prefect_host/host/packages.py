"""The steps that put a service's software on the host: its system users, apt packages, and the
Prefect venv (uv for the host's own platform, exact pins, bytecode compiled in the background)."""

from __future__ import annotations

import shlex
from pathlib import Path

from prefect_host.console import url_password
from prefect_host.host.facts import HostFacts
from prefect_host.host.model import BYTECODE_UNIT, AptPackage, Step, User, Venv

APT_LOCK_TIMEOUT = 300
APT_ATTEMPTS = 3
_GET_UV_SOURCE = Path(__file__).resolve().parents[1] / "get_uv.py"


def create_user(user: User) -> Step:
    q = shlex.quote
    script = (
        f"(getent passwd {q(user.name)} >/dev/null || useradd --system --user-group "
        f"--home-dir {q(user.home)} --no-create-home --shell /usr/sbin/nologin "
        f"--comment {q(user.comment)} {q(user.name)})"
    )
    if not user.state_directory:
        script += f" && install -d -o {q(user.name)} -g {q(user.name)} -m {user.home_mode:04o} {q(user.home)}"
    return Step.shell(f"create service user {user.name}", script, f"create user {user.name}")


def install_apt(package: AptPackage) -> Step:
    """apt-get, non-interactive, waiting for the dpkg lock (cloud-init or unattended-upgrades may
    hold it at first boot) and retrying downloads; the whole update+install is retried too (a
    mirror mid-sync, the lists lock). With a source line, apt reads only that source, with package
    lists of its own: the host's sources and lists are neither used nor changed."""
    q = shlex.quote
    options = (
        f"-q -o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT} -o Acquire::Retries=3 "
        "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
    )
    prepare = ""
    if package.source is not None:
        prepare = (
            "apt_dir=$(mktemp -d) && trap 'rm -rf \"$apt_dir\"' EXIT && "
            'mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial" && '
            f"printf '%s\\n' {q(package.source)} > \"$apt_dir/sources.list\" && "
        )
        options += (
            " -o Dir::Etc::SourceList=$apt_dir/sources.list -o Dir::Etc::SourceParts=$apt_dir/parts"
            " -o Dir::State::Lists=$apt_dir/lists -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache="
        )
    script = (
        f"export DEBIAN_FRONTEND=noninteractive && {prepare}"
        f"for attempt in $(seq 1 {APT_ATTEMPTS}); do "
        f"apt-get {options} update && "
        f"apt-get {options} -y --no-install-recommends install {q(package.name)} && exit 0; "
        f'[ "$attempt" -lt {APT_ATTEMPTS} ] && sleep $((attempt * 10)); '
        "done; exit 1"
    )
    label = f"apt-get install {package.name}" + (" (from --apt-source)" if package.source else "")
    return Step.shell(f"install {package.name} (apt)", script, label, timeout=1200)


def venv_install_steps(facts: HostFacts, venv: Venv) -> tuple[list[Step], bool]:
    """The steps, and whether they (re)install packages (then the bytecode is stale)."""
    steps = []
    q = shlex.quote
    if facts.get(f"uv:{venv.uv_path}") != venv.uv_version:
        # The fetcher runs on the host with its own python3 (its source is the stdin): it picks the
        # wheel for the host's platform, whatever the laptop is, and checks it against its pinned sha256.
        read_url, source_args, url_line = _source(venv, get_uv=True)
        fetch = (
            f"{read_url}install -d -m 0755 {q(str(Path(venv.uv_path).parent))} && python3 - "
            f"--version {q(venv.uv_version)} --dest {q(venv.uv_path)} {source_args}"
        )
        steps.append(
            Step.shell(
                f"install uv {venv.uv_version}",
                fetch,
                f"fetch uv {venv.uv_version} for this host",
                stdin=url_line + _GET_UV_SOURCE.read_bytes(),
                timeout=300,
            )
        )
    missing = facts.get(f"venv:{venv.path}:python") is None
    if missing:
        create = (
            f"rm -rf {q(venv.path)} && UV_PYTHON_DOWNLOADS=never {q(venv.uv_path)} venv --quiet "
            f"--python /usr/bin/python3 {q(venv.path)}"
        )
        steps.append(Step.shell("create the virtualenv", create, f"uv venv {venv.path}"))
    outdated = [(name, version) for name, version in venv.pins if missing or facts.venv_version(venv, name) != version]
    if outdated:
        # Every pin on every install, so uv keeps the set consistent whichever of them changed. No
        # --compile-bytecode: compiling takes ~5 s, and a first start without bytecode is only ~2 s
        # slower, so the bytecode is compiled after the start, off the critical path.
        read_url, source_args, url_line = _source(venv)
        install = (
            f"{read_url}rm -f {q(venv.bytecode_marker)} && UV_CACHE_DIR={q(venv.cache_dir)} UV_PYTHON_DOWNLOADS=never "
            f"{q(venv.uv_path)} pip install --quiet --python {q(venv.python)} {source_args} "
            + " ".join(q(f"{name}=={version}") for name, version in venv.pins)
        )
        name = f"install {' and '.join(f'{n} {v}' for n, v in outdated)}"
        label = f"uv pip install {venv.pins_text}"
        steps.append(Step.shell(name, install, label, stdin=url_line or None, timeout=900))
    return steps, bool(outdated)


def _source(venv: Venv, *, get_uv: bool = False) -> tuple[str, str, bytes]:
    """Where uv (or get_uv) installs from: (a shell prefix, arguments, a first stdin line). A URL with
    credentials is read from stdin into UV_FIND_LINKS / UV_INDEX_URL, which both read, instead of going on
    the command line: `ps` shows that to every user of the host, and a failed step's message quotes it."""
    source = venv.source
    if source.find_links:
        url, flag, env, extra = source.find_links, "--find-links", "UV_FIND_LINKS", "" if get_uv else "--no-index"
    elif source.index_url:
        url, flag, env, extra = source.index_url, "--index-url", "UV_INDEX_URL", ""
    else:
        return "", "", b""
    if url_password(url) is None:
        return "", f"{extra} {flag} {shlex.quote(url)}".strip(), b""
    return f"IFS= read -r {env} && export {env} && ", extra, f"{url}\n".encode()


def bytecode_compile_steps(facts: HostFacts, venv: Venv, venv_changed: bool) -> list[Step]:
    """The service user cannot write __pycache__ into the root-owned venv, so without compiled
    bytecode every later start would compile everything in memory again (5.7 s vs 9.2 s). A
    transient systemd job does it in the background after the start; the marker records that it
    finished for these pins."""
    compiled = not venv_changed and facts.get(f"venv:{venv.path}:bytecode") == venv.bytecode_tag
    if compiled or facts.unit(BYTECODE_UNIT).active_state in ("active", "activating"):
        return []
    q = shlex.quote
    job = (
        f"{q(venv.python)} -m compileall -q -j 0 {q(venv.path + '/lib')} && "
        f"echo {q(venv.bytecode_tag)} > {q(venv.bytecode_marker)}"
    )
    # A job still running since the facts were read (an earlier run's, compiling a venv this run has just
    # refilled: it would fail or mark stale files) is stopped first, so this one compiles what is there now.
    script = (
        f"systemctl stop {q(BYTECODE_UNIT)} 2>/dev/null; systemctl reset-failed {q(BYTECODE_UNIT)} 2>/dev/null; "
        f"systemd-run --quiet --no-block --collect --unit={q(BYTECODE_UNIT)} --property=Nice=10 sh -c {q(job)}"
    )
    return [Step.shell("compile bytecode (in the background)", script, "systemd-run compileall")]
