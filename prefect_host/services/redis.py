"""Redis for Prefect's scale-out mode (database postgres): messaging, causal ordering, lease storage
and Docket, shared by the API processes and the background services.

Debian's `redis-server` package and its own sandboxed unit, pointed by a drop-in at our
configuration: loopback only, a password (`requirepass`), an append-only file so a restart loses
no queued event. The configuration holds the password, so it is 0600 and owned by `redis`; the
drop-in also takes back the write access to /etc/redis that Debian's unit grants (cluster mode
only). With database sqlite the service is absent: a Redis left from postgres mode is stopped.

The password is derived from the auth string (HMAC-SHA256): the bootstrap can write both the Redis
configuration and Prefect's env file without reading anything back from the host, it never leaves
the host's 0600 files, and rotating the auth string rotates it.
"""

from __future__ import annotations

import hashlib
import hmac

from prefect_host.host.model import AptPackage, File, Service, Units
from prefect_host.services.prefect_server import CONFIG_DIR
from prefect_host.services.systemd import HEADER

NAME = "redis"
PACKAGE = "redis-server"
UNIT = "redis-server.service"
CONFIG_PATH = "/etc/redis/prefect-host.conf"
DROPIN_PATH = f"/etc/systemd/system/{UNIT}.d/prefect-host.conf"
APPLIED_FILE = f"{CONFIG_DIR}/redis.applied"
HOST = "127.0.0.1"
PORT = 6379
# One Redis, two databases: Prefect's messaging / ordering / leases, and Docket's task queue.
MESSAGING_DB = 0
DOCKET_DB = 1


def password(auth_string: str) -> str:
    return hmac.new(auth_string.encode(), b"prefect-host redis requirepass", hashlib.sha256).hexdigest()


def url(auth_string: str, db: int) -> str:
    """What Prefect connects with (held only in 0600 env files)."""
    return f"redis://default:{password(auth_string)}@{HOST}:{PORT}/{db}"


def config_text(auth_string: str) -> str:
    return f"""\
{HEADER}
bind {HOST} -::1
port {PORT}
protected-mode yes
requirepass {password(auth_string)}
supervised systemd
daemonize no
pidfile /run/redis/redis-server.pid
# To the journal.
logfile ""
dir /var/lib/redis
# Prefect's event streams and leases survive a restart of Redis (at most a second of writes lost).
appendonly yes
appendfsync everysec
"""


DROPIN = f"""\
{HEADER}
[Service]
ExecStart=
ExecStart=/usr/bin/redis-server {CONFIG_PATH} --supervised systemd --daemonize no
# Debian's unit lets Redis rewrite /etc/redis (cluster mode); ours never does: only its data and logs.
ReadWritePaths=
ReadWritePaths=-/var/lib/redis -/var/log/redis -/run/redis
"""


def redis_service(auth_string: str, *, apt_source: str | None, absent: str = "") -> Service:
    """Redis as Prefect's scale-out mode needs it; `absent` (why not, e.g. "database sqlite"): stopped."""
    units = Units((UNIT,), applied=APPLIED_FILE, display="Redis")
    if absent:
        return Service(NAME, units=units, absent=absent)
    return Service(
        NAME,
        packages=(AptPackage(PACKAGE, source=apt_source),),
        files=(
            File(CONFIG_PATH, config_text(auth_string), mode=0o600, owner="redis"),
            File(DROPIN_PATH, DROPIN, systemd=True, describe=f"point {UNIT} at {CONFIG_PATH}"),
        ),
        units=units,
    )
