"""An SSH session to the host: pinned host key, bounded retries, commands through `sudo -n`.

The host key is pinned (the stack generated it and installed it on first boot), so there is no
trust-on-first-use: paramiko's RejectPolicy refuses unknown keys and a different key ends the
connection attempt before authentication, i.e. before anything is sent to the host.
"""

from __future__ import annotations

import errno
import random
import select
import shlex
import socket
import time
from dataclasses import dataclass

import paramiko

from prefect_host.errors import CommandFailed, ConnectError, HostKeyMismatch, SudoError

# The key handling lives in prefect_host.ssh_keys; these names stay importable from here.
from prefect_host.ssh_keys import PinnedHostKey, check_negotiated_key, fingerprint, host_key_mismatch
from prefect_host.ssh_keys import load_private_key as load_private_key
from prefect_host.ssh_keys import load_private_key_file as load_private_key_file

SSH_PORT = 22
DEFAULT_CONNECT_TIMEOUT = 300.0
# Per attempt: a booting VM may accept TCP but stall before its banner; do not wait on one attempt.
_ATTEMPT_TIMEOUT = 15.0
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 5.0
_KEEPALIVE_SECONDS = 15
_STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class CommandResult:
    stdout: str
    stderr: str
    exit_status: int


def sudo_command(script: str, *, as_user: str | None = None, cwd: str = "/") -> str:
    """`script` run by sh under `sudo -n` (never prompts), as root or `as_user`.

    The cwd is set because Prefect's CLI reads `.env` from it and fails on an unreadable one.
    """
    user = f"-u {shlex.quote(as_user)} " if as_user else ""
    return f"sudo -n {user}-- sh -c {shlex.quote(f'cd {shlex.quote(cwd)} && {script}')}"


class HostSession:
    """One authenticated SSH connection; `run` executes commands, `put_file` writes files."""

    def __init__(self, client: paramiko.SSHClient, *, host: str, user: str, port: int = SSH_PORT):
        self._client = client
        self.host = host
        self.user = user
        self.port = port

    @classmethod
    def connect(
        cls,
        host: str,
        *,
        user: str,
        identity: paramiko.PKey,
        host_key: PinnedHostKey,
        port: int = SSH_PORT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        key_grace: float = 0.0,
    ) -> HostSession:
        """Connect, retrying with full-jitter backoff until `connect_timeout` while the host boots.

        Retried: refused/unreachable/timeouts, resets, banner errors, and authentication failures
        (a new VM's cloud-init may not have installed the key yet). A host key mismatch raises
        HostKeyMismatch at once, or after `key_grace` seconds of retries: on GCP, sshd first serves
        the guest agent's own keys until the startup script installs the pinned one. Nothing is ever
        sent to a host whose key does not match, so waiting is safe.
        """
        client = _connect_with_retries(
            host,
            port=port,
            user=user,
            identity=identity,
            host_key=host_key,
            connect_timeout=connect_timeout,
            key_grace=key_grace,
        )
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(_KEEPALIVE_SECONDS)
        return cls(client, host=host, user=user, port=port)

    @property
    def host_key(self) -> paramiko.PKey | None:
        """The host key this session negotiated, which connect() checked against the pinned one."""
        transport = self._client.get_transport()
        return transport.get_remote_server_key() if transport is not None else None

    # --- commands ------------------------------------------------------------------------------
    def run(
        self,
        command: str,
        *,
        sudo: bool = False,
        as_user: str | None = None,
        stdin: bytes | str | None = None,
        timeout: float = 600.0,
        label: str | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run `command` (a shell line); stdout and stderr are read fully before the exit status.

        Secrets go in `stdin`, never in `command` (a command line shows in `ps` and in errors).
        """
        label = label or command
        if sudo or as_user:
            command = sudo_command(command, as_user=as_user)
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"The SSH session to {self.user}@{self.host} was closed.")
        channel = transport.open_session(timeout=30)
        try:
            channel.exec_command(command)
            out, err, status = _exchange(channel, _as_bytes(stdin), time.monotonic() + timeout)
        finally:
            channel.close()
        stdout = out.decode(errors="replace")
        stderr = err.decode(errors="replace")
        if status is None:
            raise CommandFailed(label, None, _tail(stderr))
        if (sudo or as_user) and status == 1 and is_sudo_refusal(stderr):
            raise SudoError(sudo_refused_message(self.user, self.host, _tail(stderr)))
        if check and status != 0:
            raise CommandFailed(label, status, _tail(stderr))
        return CommandResult(stdout, stderr, status)

    def put_file(
        self,
        path: str,
        content: bytes | str,
        *,
        mode: int,
        owner: str = "root",
        group: str | None = None,
        label: str | None = None,
    ) -> None:
        """Atomically write a file as root; the content travels on stdin, never on a command line."""
        self.run(
            write_file_script(path, mode=mode, owner=owner, group=group),
            sudo=True,
            stdin=content,
            label=label or f"write {path}",
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HostSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_file_script(path: str, *, mode: int, owner: str = "root", group: str | None = None) -> str:
    """A shell script that writes stdin to `path` atomically with the given owner and mode.

    umask 077 keeps the temporary file private until its final mode is set.
    """
    q = shlex.quote
    directory = path.rsplit("/", 1)[0] or "/"
    return (
        f"umask 077 && mkdir -p {q(directory)} && tmp=$(mktemp {q(path + '.XXXXXX')}) && "
        f'cat > "$tmp" && chown {q(owner)}:{q(group or owner)} "$tmp" && '
        f'chmod {mode:04o} "$tmp" && mv -f "$tmp" {q(path)}'
    )


def _exchange(channel: paramiko.Channel, stdin: bytes | None, deadline: float) -> tuple[bytes, bytes, int | None]:
    """Feed stdin and drain stdout and stderr together until EOF, so neither side can block the
    other on a full window; then wait for the exit status. Returns status None on timeout."""
    out, err = bytearray(), bytearray()
    pending = memoryview(stdin or b"")
    if not pending:
        channel.shutdown_write()
    while True:
        progressed = False
        while channel.recv_ready():
            out += channel.recv(65536)
            progressed = True
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
            progressed = True
        if pending and channel.send_ready():
            sent = channel.send(pending[:32768])
            pending = pending[sent:]
            progressed = True
            if not pending:
                channel.shutdown_write()
        if channel.eof_received and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        if time.monotonic() > deadline:
            return bytes(out), bytes(err), None
        if not progressed:
            # The channel's fileno becomes readable on stdout data, stderr data and EOF alike.
            select.select([channel], [], [], 0.01 if pending else 0.2)
    while not channel.exit_status_ready():
        if time.monotonic() > deadline:
            return bytes(out), bytes(err), None
        channel.status_event.wait(0.2)
    return bytes(out), bytes(err), channel.recv_exit_status()


def _as_bytes(data: bytes | str | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-_STDERR_TAIL_LINES:])


def _connect_with_retries(
    host: str,
    *,
    port: int,
    user: str,
    identity: paramiko.PKey,
    host_key: PinnedHostKey,
    connect_timeout: float,
    key_grace: float = 0.0,
) -> paramiko.SSHClient:
    """Attempt after attempt, with full-jitter backoff between them, until one connects or the
    `connect_timeout` runs out (ConnectError naming the last failure); a key mismatch only within
    the first `key_grace` seconds."""
    started = time.monotonic()
    deadline = started + connect_timeout
    attempt, offered_other_key = 0, None
    while True:
        try:
            client, last_error = _connect_once(
                host, port=port, user=user, identity=identity, host_key=host_key, deadline=deadline
            )
        except HostKeyMismatch as mismatch:
            if time.monotonic() - started >= min(key_grace, connect_timeout):
                raise
            client, last_error, offered_other_key = None, str(mismatch), mismatch
        else:
            offered_other_key = None  # this attempt got past the key check (or never reached it)
        if client is not None:
            return client
        attempt += 1
        remaining = deadline - time.monotonic()
        if remaining <= 0 and offered_other_key is not None:
            raise offered_other_key  # the host answered, with another key: that is the news
        if remaining <= 0:
            raise ConnectError(
                f"Could not open an SSH session to {user}@{host}:{port} within "
                f"{connect_timeout:g} s ({attempt} attempt(s)); last error: {last_error}. Check the "
                f"address, that port {port} is open to this machine (sshAllowedCidrs), and that the "
                "VM is running; a longer --connect-timeout helps when it is still booting."
            )
        # Full jitter: spreads retries out and never waits longer than the time left.
        time.sleep(min(remaining, random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))))


def _connect_once(
    host: str,
    *,
    port: int,
    user: str,
    identity: paramiko.PKey,
    host_key: PinnedHostKey,
    deadline: float,
) -> tuple[paramiko.SSHClient | None, str]:
    """One connection attempt: (the connected client, "") or, on a failure worth retrying, (None,
    why). Raises at once on a host key mismatch, an unresolvable name or no common algorithms."""
    client = paramiko.SSHClient()
    # Known-hosts syntax: the bare host on port 22, `[host]:port` otherwise.
    known_name = host if port == SSH_PORT else f"[{host}]:{port}"
    client.get_host_keys().add(known_name, host_key.key_type, host_key.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    remaining = deadline - time.monotonic()
    per_attempt = max(1.0, min(_ATTEMPT_TIMEOUT, remaining))
    try:
        client.connect(
            host,
            port=port,
            username=user,
            pkey=identity,
            timeout=per_attempt,
            banner_timeout=per_attempt,
            auth_timeout=per_attempt,
            allow_agent=False,
            look_for_keys=False,
        )
        check_negotiated_key(client, host_key, host, port)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise host_key_mismatch(host, port, host_key, exc.key) from None
    except HostKeyMismatch:
        client.close()
        raise
    except socket.gaierror as exc:
        client.close()
        raise ConnectError(f"--host {host}: the name does not resolve ({exc.strerror}).") from None
    except paramiko.ssh_exception.IncompatiblePeer as exc:
        client.close()
        raise ConnectError(f"{user}@{host}:{port}: no SSH algorithms in common ({exc}).") from None
    except paramiko.AuthenticationException:
        client.close()
        return None, (
            f"the host refused the key {fingerprint(identity)} for user {user} "
            "(is it the private half of the key in the user's authorized_keys?)"
        )
    except (paramiko.SSHException, OSError, EOFError) as exc:
        client.close()
        return None, _describe(exc)
    return client, ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {e.errno for e in exc.errors.values()}
        if codes == {errno.ECONNREFUSED}:
            return "connection refused (sshd not up yet?)"
        return "no route to the host / connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text


def sudo_refused_message(user: str, host: str, detail: str) -> str:
    return (
        f"{user}@{host} cannot run commands through `sudo -n` ({detail.strip() or 'sudo refused'}). "
        "The bootstrap needs passwordless sudo for the SSH user (--user / sshUser), as cloud "
        "images give their default user."
    )


def is_sudo_refusal(stderr: str) -> bool:
    return stderr.lstrip().startswith("sudo:") and (
        "password is required" in stderr or "not in the sudoers" in stderr or "not allowed to" in stderr
    )
