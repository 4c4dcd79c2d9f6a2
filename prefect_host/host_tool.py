"""The bootstrap's operations ON THE HOST, as root: Litestream's restore, position, list, snapshot; status.

The bootstrap and `prefect-host backup` / `status` send this file as the stdin of `python3 - ARGS`
(the host's own python3, standard library only), like get_uv.py. It reads the bucket key from the
root-only env file itself, so no secret crosses a command line.

- restore: the replica (newest, or at --timestamp) into a staging file beside the database, checked
  (`PRAGMA quick_check` by Litestream), then moved into place owned by the service user. An existing
  database is never overwritten: without --replace it refuses; with --replace (a stopped server) the
  old file is kept beside the new one. No replica yet (a new stack): exit 0, the server starts empty.
- position: force a sync through the daemon's control socket, wait for the bucket to have it, print
  JSON {txid, replica_txid, last_sync_at}.
- list: the replica's files summed per compaction level (JSON).
- status: the local server's health, readiness, processes, version and workers (asked on loopback with
  the root-only env file's auth string), the units, Litestream, the database's size.
- snapshot: a full snapshot now (`replicate -once -force-snapshot`, the daemon stopped meanwhile).

Exit status: 0 done; 1 the replica cannot be read or written (denied, unreachable) or nothing was
replicated before --timestamp; 2 bad arguments. Errors are one line on stderr."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

REFUSED = ("StatusCode: 403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId")
UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "deadline exceeded", "no route to host")


def read_env_file(path: str) -> dict[str, str]:
    """KEY='value' / KEY="value" lines as prefect-host writes them for systemd's EnvironmentFile=."""
    values = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
            elif len(value) >= 2 and value[0] == value[-1] == '"':
                body, value, i = value[1:-1], "", 0
                while i < len(body):
                    if body[i] == "\\" and i + 1 < len(body):
                        i += 1
                    value += body[i]
                    i += 1
            values[key] = value
    return values


def why(stderr: str) -> str:
    """Litestream's error, said plainly (its last line names the S3 call and the status)."""
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    last = last if len(last) <= 300 else last[:297] + "..."
    if any(word in last for word in REFUSED):
        return f"the bucket refused the stack's key (403): {last}"
    if any(word in last.lower() for word in UNREACHABLE):
        return f"the S3 endpoint cannot be reached: {last}"
    return last


def litestream(
    args: argparse.Namespace, command: str, *options: str, config: bool = True, db: bool = True, as_owner: bool = False
) -> str:
    """`litestream COMMAND [CONFIG] OPTIONS [DB]` (Go's flags come before the database); `as_owner`:
    as the database's owner, so what Litestream writes beside the database stays the daemon's."""
    env = {**os.environ, **read_env_file(args.env_file)}
    env.pop("AWS_CA_BUNDLE", None)  # Litestream's S3 client refuses a custom bundle with its HTTP client
    settings = ["-no-expand-env", "-config", args.config] if config else []
    prefix = ["runuser", "-u", args.owner, "--"] if as_owner else []
    command_line = [*prefix, args.litestream, command, *settings, *options, *([args.db] if db else [])]
    proc = subprocess.run(command_line, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"cannot read the replica (litestream {command}): {why(proc.stderr)}")
    return proc.stdout


def json_output(text: str):
    """Litestream's -json output; log lines may come first on stdout (the integrity check's)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("{", "["))), len(lines))
    return json.loads("\n".join(lines[start:]) or "null")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def replica_files(args: argparse.Namespace) -> list[dict]:
    return json_output(litestream(args, "ltx", "-json", "-level", "all")) or []


def restore(args: argparse.Namespace) -> int:
    target = args.output or args.db
    if os.path.exists(target) and not args.replace:
        print(f"{target} exists: a restore never overwrites a database", file=sys.stderr)
        return 1
    try:
        files = replica_files(args)
    except SystemExit as exc:
        raise SystemExit(
            f"{exc} -- Prefect is not started on an empty database: fix the bucket's key or endpoint, or "
            "pass --no-restore to start empty on purpose."
        ) from None
    if not files:
        print("no replica in the bucket yet: the server starts with an empty database")
        return 0
    if args.timestamp and not any(parse_time(f["timestamp"]) <= parse_time(args.timestamp) for f in files):
        oldest = min(f["timestamp"] for f in files)
        print(f"nothing was replicated at or before {args.timestamp}; the oldest is {oldest}", file=sys.stderr)
        return 1
    staging = f"{target}.restoring"
    for leftover in (staging, f"{staging}-wal", f"{staging}-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    options = ["-timestamp", args.timestamp] if args.timestamp else []
    started = time.monotonic()
    summary = json_output(litestream(args, "restore", "-json", "-integrity-check", "quick", "-o", staging, *options))
    seconds = time.monotonic() - started
    txid = int(summary["txid"], 16)
    last = max(f["timestamp"] for f in files if int(f["max_txid"], 16) <= txid)
    user = pwd.getpwnam(args.owner)
    os.chown(staging, user.pw_uid, user.pw_gid)
    os.chmod(staging, 0o600)
    # Only a rename lies between the old files moving aside and the new one in place. A WAL or
    # shared-memory file without its database (deleted by hand) goes aside too: SQLite would replay it.
    present = [suffix for suffix in ("", "-wal", "-shm") if os.path.exists(target + suffix)]
    if present:
        kept = f"{target}.before-restore-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
        for suffix in present:
            os.replace(target + suffix, kept + suffix)
        print(f"kept {'the database it replaced' if '' in present else 'stray SQLite files'} as {kept}")
    os.replace(staging, target)
    size = os.path.getsize(target)
    shown = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"
    check = summary.get("integrity_check", "none")
    print(
        f"restored transaction {txid} (last written {last}), {shown} in {seconds:.1f} s; "
        + ("integrity check passed" if check != "none" else "no integrity check")
    )
    return 0


def position(args: argparse.Namespace) -> int:
    """Where the database and its replica are, once a forced sync has reached the bucket."""
    synced = json.loads(
        litestream(args, "sync", "-wait", "-json", "-timeout", str(args.timeout), "-socket", args.socket, config=False)
    )
    listed, _ = daemon(args, "list")
    databases = (listed or {}).get("databases", [])
    last_sync = next((d.get("last_sync_at") for d in databases if d.get("path") == args.db), None)
    print(json.dumps({"txid": synced["txid"], "replica_txid": synced["replica_txid"], "last_sync_at": last_sync}))
    return 0


def listing(args: argparse.Namespace) -> int:
    """The replica per compaction level: files, bytes, transaction and time ranges (JSON)."""
    levels: dict[int, dict] = {}
    for f in replica_files(args):
        level = levels.setdefault(f["level"], {"level": f["level"], "files": 0, "bytes": 0, "txids": [], "times": []})
        level["files"] += 1
        level["bytes"] += f["size"]
        level["txids"] += [int(f["min_txid"], 16), int(f["max_txid"], 16)]
        level["times"].append(f["timestamp"])
    rows = [
        {
            "level": level["level"],
            "files": level["files"],
            "bytes": level["bytes"],
            "min_txid": min(level["txids"]),
            "max_txid": max(level["txids"]),
            "oldest": min(level["times"]),
            "newest": max(level["times"]),
        }
        for level in sorted(levels.values(), key=lambda row: row["level"])
    ]
    print(json.dumps(rows))
    return 0


def snapshot(args: argparse.Namespace) -> int:
    """A full snapshot now; the daemon is stopped meanwhile and always started again."""
    subprocess.run(["systemctl", "stop", args.unit], check=True)
    try:
        litestream(args, "replicate", "-once", "-force-snapshot", db=False, as_owner=True)
    finally:
        subprocess.run(["systemctl", "start", args.unit], check=True)
    files = [f for f in replica_files(args) if f["level"] == 9]
    newest = max(files, key=lambda f: f["timestamp"])
    print(json.dumps({"txid": int(newest["max_txid"], 16), "timestamp": newest["timestamp"], "bytes": newest["size"]}))
    return 0


def api(base: str, auth: str, method: str, path: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def units(names: list[str]) -> dict[str, str]:
    active = [subprocess.run(["systemctl", "is-active", n], capture_output=True, text=True) for n in names]
    return {name: proc.stdout.strip() or "unknown" for name, proc in zip(names, active, strict=True)}


def worker_units() -> list[str]:
    proc = subprocess.run(
        ["systemctl", "list-units", "--plain", "--no-legend", "--all", "prefect-worker@*.service"],
        capture_output=True,
        text=True,
    )
    return sorted(line.split()[0] for line in proc.stdout.splitlines() if line.strip())


def server(env: dict[str, str], pool: str, db_path: str) -> dict:
    base = f"http://127.0.0.1:{env.get('PREFECT_SERVER_API_PORT', '4200')}/api"
    auth = env.get("PREFECT_SERVER_API_AUTH_STRING", "")
    # Whether the server writes its database elsewhere than the replicated file (the URL itself may hold a
    # password: it never leaves the host).
    url = env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL")
    report: dict = {"database_elsewhere": bool(url) and not url.endswith(f"/{os.path.basename(db_path)}")}
    report["api_processes"] = api_processes()
    try:
        report["health"] = api(base, auth, "GET", "/health")
        report["ready"] = ready(base)
        report["version"] = api(base, auth, "GET", "/admin/version")
        workers = api(base, auth, "POST", f"/work_pools/{pool}/workers/filter", {})
        report["workers"] = [
            {"name": w["name"], "status": w.get("status"), "last_heartbeat": w.get("last_heartbeat_time")}
            for w in workers
        ]
    except Exception as exc:  # noqa: BLE001 (reported, not raised)
        report["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return report


def ready(base: str) -> int:
    """/api/ready's status: 200, or 503 while the database is unreachable."""
    try:
        with urllib.request.urlopen(f"{base}/ready", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def api_processes() -> int:
    """The API's processes: uvicorn's workers (children of the unit's main process), or the main one alone."""
    main = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "prefect-server"], capture_output=True)
    children = subprocess.run(["ps", "--ppid", main.stdout.strip() or b"0", "-o", "args="], capture_output=True)
    return sum(b"spawn_main" in line for line in children.stdout.splitlines()) or 1


def replication(args: argparse.Namespace) -> dict:
    if not os.path.exists(args.config):
        return {"configured": False}
    report: dict = {"configured": True}
    for command in ("list", "info"):
        answer, error = daemon(args, command)
        if error:
            report["error"] = error
            return report
        report[command] = answer
    return report


def daemon(args: argparse.Namespace, command: str) -> tuple[dict | None, str]:
    """A question to the running Litestream through its control socket: (its JSON answer, "") or
    (None, why not)."""
    proc = subprocess.run(
        [args.litestream, command, "-json", "-socket", args.socket], capture_output=True, text=True, timeout=20
    )
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["no answer"])[-1][:300]
    return json.loads(proc.stdout or "{}"), ""


def database(path: str) -> dict:
    sizes = {suffix: os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix)}
    usage = shutil.disk_usage(os.path.dirname(path))
    return {"path": path, "exists": "" in sizes, "bytes": sum(sizes.values()), "disk_free": usage.free}


def probe(read, *args) -> dict:
    """One part of the status; a part that fails says why instead of failing the whole report."""
    try:
        return read(*args)
    except Exception as exc:  # noqa: BLE001 (reported, not raised)
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def status(args: argparse.Namespace) -> int:
    """What `prefect-host status` shows, as one JSON object; every probe that fails says why in its
    own field instead of failing the whole report."""
    env = read_env_file(args.server_env) if os.path.exists(args.server_env) else {}
    report = {
        "hostname": socket.gethostname(),
        "units": units(args.status_unit + worker_units()),
        "server": probe(server, env, args.pool, args.db),
        "replication": probe(replication, args),
        "database": probe(database, args.db),
    }
    print(json.dumps(report))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="litestream_host")
    top.add_argument("command", choices=("restore", "position", "list", "snapshot", "status"))
    for name in ("--litestream", "--config", "--env-file", "--db"):
        top.add_argument(name, required=True)
    top.add_argument("--owner", default="prefect")
    top.add_argument("--socket", default="/run/prefect-litestream/litestream.sock")
    top.add_argument("--unit", default="prefect-litestream.service")
    top.add_argument("--timeout", type=int, default=30)
    top.add_argument("--timestamp")
    top.add_argument("--replace", action="store_true")
    top.add_argument("--output", help="restore: where to (default: --db, the configured database)")
    top.add_argument("--server-env", default="/etc/prefect-host/server.env")
    top.add_argument("--pool", default="default")
    top.add_argument("--status-unit", action="append", default=[])
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    commands = {"restore": restore, "position": position, "list": listing, "snapshot": snapshot, "status": status}
    return commands[args.command](args)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 (one line for the caller, never a traceback)
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
