"""HostSession against a real SSH server on 127.0.0.1 (paramiko's server side, running real shell
commands), plus the key parsing and file-writing helpers."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from prefect_host.errors import CommandFailed, ConnectError, HostKeyMismatch, UsageError
from prefect_host.ssh import (
    HostSession,
    PinnedHostKey,
    fingerprint,
    is_sudo_refusal,
    load_private_key,
    load_private_key_file,
    sudo_command,
    write_file_script,
)


def _openssh_private(key: ed25519.Ed25519PrivateKey, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption).decode()


def _public_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()} test"


def _new_key() -> paramiko.PKey:
    return load_private_key(_openssh_private(ed25519.Ed25519PrivateKey.generate()), source="test")


class _Server(paramiko.ServerInterface):
    def __init__(self, authorized: paramiko.PKey, log: list[str]):
        self.authorized = authorized
        self.log = log

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.log.append(f"auth {username}")
        return paramiko.AUTH_SUCCESSFUL if key == self.authorized else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.log.append(f"exec {command.decode()}")
        threading.Thread(target=_serve_exec, args=(channel, command.decode()), daemon=True).start()
        return True


def _serve_exec(channel: paramiko.Channel, command: str) -> None:
    """Run `command` with sh like sshd does, pumping the three streams concurrently."""
    proc = subprocess.Popen(
        ["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def feed() -> None:
        try:
            while data := channel.recv(65536):
                proc.stdin.write(data)
        except (OSError, EOFError):
            pass
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def pump(stream, send) -> None:
        while data := stream.read1(65536):
            send(data)

    threads = [
        threading.Thread(target=feed, daemon=True),
        threading.Thread(target=pump, args=(proc.stdout, channel.sendall), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, channel.sendall_stderr), daemon=True),
    ]
    for thread in threads:
        thread.start()
    threads[1].join()
    threads[2].join()
    channel.send_exit_status(proc.wait())
    channel.shutdown_write()
    channel.close()


@dataclass
class SshServer:
    port: int
    host_key: paramiko.PKey
    client_key: paramiko.PKey
    log: list[str] = field(default_factory=list)
    # Offered too, like a cloud VM's sshd (which has RSA and ECDSA keys besides the pinned one).
    other_host_keys: list[paramiko.PKey] = field(default_factory=list)

    def pinned(self) -> PinnedHostKey:
        return PinnedHostKey.parse(_public_line(self.host_key), setting="--host-key")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ssh_server_factory() -> Iterator:
    listeners: list[socket.socket] = []
    transports: list[paramiko.Transport] = []

    def start(server: SshServer) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", server.port))
        listener.listen(8)
        listeners.append(listener)

        def accept() -> None:
            while True:
                try:
                    sock, _ = listener.accept()
                except OSError:
                    return
                transport = paramiko.Transport(sock)
                for key in (*server.other_host_keys, server.host_key):
                    transport.add_server_key(key)
                transports.append(transport)
                # Each connection on its own thread, as sshd does: one a client gave up on (say after a
                # host key mismatch) must not hold up the next.
                threading.Thread(target=serve, args=(transport,), daemon=True).start()

        def serve(transport: paramiko.Transport) -> None:
            # A client that left mid-handshake (a key it refused, the test's end) is not the server's error.
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                transport.start_server(server=_Server(server.client_key, server.log))

        threading.Thread(target=accept, daemon=True).start()

    def make(delay: float = 0.0) -> SshServer:
        server = SshServer(port=_free_port(), host_key=_new_key(), client_key=_new_key())
        if delay:
            threading.Timer(delay, start, args=(server,)).start()
        else:
            start(server)
        return server

    yield make
    for listener in listeners:
        listener.close()
    for transport in transports:
        transport.close()


@pytest.fixture
def server(ssh_server_factory) -> SshServer:
    return ssh_server_factory()


def _connect(server: SshServer, **kwargs) -> HostSession:
    options = {
        "user": "admin",
        "identity": server.client_key,
        "host_key": server.pinned(),
        "port": server.port,
        "connect_timeout": 10,
    }
    options.update(kwargs)
    return HostSession.connect("127.0.0.1", **options)


def test_run_returns_output_and_status(server):
    with _connect(server) as session:
        result = session.run("echo out; echo err >&2; exit 0")
        assert (result.stdout, result.stderr, result.exit_status) == ("out\n", "err\n", 0)
        assert session.run("exit 4", check=False).exit_status == 4


def test_big_stdout_and_stderr_together_do_not_deadlock(server):
    with _connect(server) as session:
        result = session.run(
            "head -c 4000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero | tr '\\0' b >&2", timeout=60
        )
    assert len(result.stdout) == 4_000_000 and set(result.stdout) == {"a"}
    assert len(result.stderr) == 3_000_000 and set(result.stderr) == {"b"}


def test_big_stdin_while_the_command_echoes_it(server):
    payload = os.urandom(3_000_000).hex()[:3_000_000]
    with _connect(server) as session:
        result = session.run("cat; cat /dev/null >&2", stdin=payload, timeout=60)
    assert result.stdout == payload


def test_failure_names_label_status_and_stderr_tail(server):
    with _connect(server) as session, pytest.raises(CommandFailed) as caught:
        session.run("for i in $(seq 1 50); do echo line$i >&2; done; exit 3", label="install things")
    message = str(caught.value)
    assert "`install things` exited with status 3" in message
    assert "line50" in message and "line31" in message and "line30\n" not in message


def test_timeout_is_a_failure(server):
    with _connect(server) as session, pytest.raises(CommandFailed, match="ran out of time"):
        session.run("sleep 5", timeout=0.5, label="sleepy")


def test_host_key_mismatch_is_refused_at_once_before_authentication(server):
    other = PinnedHostKey.parse(_public_line(_new_key()), setting="--host-key")
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch) as caught:
        _connect(server, host_key=other, connect_timeout=30)
    assert time.monotonic() - started < 5, "a mismatch must not be retried"
    message = str(caught.value)
    assert other.fingerprint in message and fingerprint(server.host_key) in message
    assert not any(entry.startswith(("auth", "exec")) for entry in server.log)


def test_a_key_grace_waits_for_the_pinned_key_and_sends_nothing_meanwhile(server):
    """GCP's first boot: sshd serves the guest agent's key until the startup script installs the pinned one."""
    pinned_key = _new_key()
    pinned = PinnedHostKey.parse(_public_line(pinned_key), setting="--host-key")
    timer = threading.Timer(1.5, lambda: setattr(server, "host_key", pinned_key))
    timer.start()
    try:
        with _connect(server, host_key=pinned, connect_timeout=20, key_grace=15) as session:
            assert session.host_key.asbytes() == pinned_key.asbytes()
    finally:
        timer.cancel()
    # The attempts that met the other key never authenticated: one authentication, the last attempt's.
    assert [entry for entry in server.log if entry.startswith("auth")] == ["auth admin"]


def test_a_key_grace_ends_in_the_mismatch(server):
    other = PinnedHostKey.parse(_public_line(_new_key()), setting="--host-key")
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch):
        _connect(server, host_key=other, connect_timeout=8, key_grace=2)
    assert 2 <= time.monotonic() - started < 25
    assert not any(entry.startswith(("auth", "exec")) for entry in server.log)


def test_the_pinned_key_type_is_negotiated_among_several(server):
    server.other_host_keys = [paramiko.RSAKey.generate(2048), paramiko.ECDSAKey.generate()]
    for pinned_key in (server.host_key, *server.other_host_keys):
        pinned = PinnedHostKey.parse(_public_line(pinned_key), setting="--host-key")
        with _connect(server, host_key=pinned) as session:
            offered = session.host_key
            assert offered.get_name() == pinned.key_type and offered.asbytes() == pinned_key.asbytes()
    # A pinned ED25519 key that is not the host's: refused although the host has other types too.
    with pytest.raises(HostKeyMismatch):
        _connect(server, host_key=PinnedHostKey.parse(_public_line(_new_key()), setting="--host-key"))


def test_connect_retries_until_sshd_is_up(ssh_server_factory):
    late = ssh_server_factory(delay=1.5)
    started = time.monotonic()
    with _connect(late, connect_timeout=20) as session:
        assert session.run("echo up").stdout == "up\n"
    assert time.monotonic() - started >= 1.5


def test_connect_gives_up_after_the_timeout():
    pinned = PinnedHostKey.parse(_public_line(_new_key()), setting="--host-key")
    started = time.monotonic()
    with pytest.raises(ConnectError, match=r"within 2 s.*connection refused"):
        HostSession.connect(
            "127.0.0.1", port=_free_port(), user="admin", identity=_new_key(), host_key=pinned, connect_timeout=2
        )
    assert 1.9 < time.monotonic() - started < 5


def test_refused_identity_is_retried_then_named(server):
    wrong = _new_key()
    with pytest.raises(ConnectError) as caught:
        _connect(server, identity=wrong, connect_timeout=2)
    assert fingerprint(wrong) in str(caught.value) and "refused the key" in str(caught.value)


def test_pinned_key_parsing():
    key = _new_key()
    pinned = PinnedHostKey.parse(f"{key.get_name()} {key.get_base64()} comment here", setting="hostPublicKey")
    assert pinned.key_type == "ssh-ed25519" and pinned.fingerprint == fingerprint(key)
    for bad in ("", "ssh-ed25519", "ssh-ed25519 not-base64!", "ssh-foo AAAAC3NzaC1lZDI1NTE5"):
        with pytest.raises(UsageError, match="hostPublicKey"):
            PinnedHostKey.parse(bad, setting="hostPublicKey")


def test_fingerprint_matches_ssh_keygen(tmp_path):
    key = _new_key()
    path = tmp_path / "key.pub"
    path.write_text(_public_line(key) + "\n")
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True)
    assert listed.stdout.split()[1] == fingerprint(key)


def test_private_keys_from_memory_and_file(tmp_path):
    raw = ed25519.Ed25519PrivateKey.generate()
    key = load_private_key(_openssh_private(raw), source="output sshPrivateKey")
    assert isinstance(key, paramiko.Ed25519Key)
    path = tmp_path / "id"
    path.write_text(_openssh_private(raw))
    assert load_private_key_file(path).asbytes() == key.asbytes()
    with pytest.raises(UsageError, match="encrypted"):
        load_private_key(_openssh_private(raw, password=b"pw"), source="--identity k")
    with pytest.raises(UsageError, match="not a private key"):
        load_private_key("-----BEGIN NOTHING-----\nxx\n", source="--identity k")
    with pytest.raises(UsageError, match="cannot read"):
        load_private_key_file(tmp_path / "missing")


def test_write_file_script_writes_atomically_with_mode(tmp_path):
    target = tmp_path / "etc" / "app" / "secret.env"
    owner = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    script = write_file_script(str(target), mode=0o600, owner=owner)
    subprocess.run(["sh", "-c", script], input=b"KEY='value'\n", check=True)
    assert target.read_bytes() == b"KEY='value'\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret.env"]  # no temp file left
    subprocess.run(["sh", "-c", write_file_script(str(target), mode=0o644, owner=owner)], input=b"new\n", check=True)
    assert target.read_bytes() == b"new\n" and stat.S_IMODE(target.stat().st_mode) == 0o644


def test_sudo_command_quotes_and_never_prompts():
    command = sudo_command("echo 'a b' && id", as_user="prefect", cwd="/var/lib/prefect")
    assert command.startswith("sudo -n -u prefect -- sh -c ")
    # The shell sees exactly one argument after -c: the cd plus the script.
    argv = subprocess.run(
        ["python3", "-c", "import shlex,sys; print(shlex.split(sys.argv[1])[-1])", command],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert argv == "cd /var/lib/prefect && echo 'a b' && id"


def test_sudo_refusals_are_recognised():
    assert is_sudo_refusal("sudo: a password is required\n")
    assert is_sudo_refusal("sudo: bob is not in the sudoers file.\n")
    assert not is_sudo_refusal("cp: cannot stat 'x'\n")
