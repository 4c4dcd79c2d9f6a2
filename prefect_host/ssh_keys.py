"""SSH keys: the host's pinned public key, OpenSSH fingerprints, and loading the operator's private key.

prefect_host.ssh re-exports these names; nothing here opens a connection or writes a key to disk.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import paramiko
from cryptography import exceptions as cryptography_exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from prefect_host.console import mention, shown
from prefect_host.errors import HostKeyMismatch, UsageError

# What --identity and sshPrivateKey may hold, for the messages that refuse anything else.
PRIVATE_KEY_FORMATS = (
    "an unencrypted ED25519, ECDSA or RSA private key in OpenSSH format (-----BEGIN OPENSSH PRIVATE KEY-----) "
    "or PEM (PKCS#8 -----BEGIN PRIVATE KEY-----, or -----BEGIN RSA/EC PRIVATE KEY-----)"
)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -lf` prints it."""
    return "SHA256:" + base64.b64encode(sha256(key.asbytes()).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class PinnedHostKey:
    key: paramiko.PKey

    @classmethod
    def parse(cls, line: str, *, setting: str) -> PinnedHostKey:
        """Parse an OpenSSH public key line (`ssh-ed25519 AAAA... [comment]`)."""
        parts = (line or "").split()
        if len(parts) < 2:
            raise UsageError(
                f'{setting}: expected an OpenSSH public key line such as "ssh-ed25519 AAAA...", got {shown(line)}.'
            )
        key_type, blob = parts[0], parts[1]
        try:
            raw = base64.b64decode(blob, validate=True)
            key = paramiko.PKey.from_type_string(key_type, raw)
        except (binascii.Error, paramiko.SSHException, paramiko.pkey.UnknownKeyType, ValueError, TypeError) as exc:
            reason = " ".join(str(exc).split())[:100]
            raise UsageError(
                f"{setting}: {mention(key_type, 40)} {mention(blob[:16])}... is not a valid OpenSSH public key "
                f"({reason}); allowed types: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa."
            ) from None
        if key.get_name() != key_type and not (key_type == "ssh-rsa" and key.get_name().startswith("rsa")):
            raise UsageError(f"{setting}: the key type says {mention(key_type, 40)} but the key is {key.get_name()}.")
        return cls(key)

    @property
    def key_type(self) -> str:
        return self.key.get_name()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def load_private_key(data: str | bytes, *, source: str) -> paramiko.PKey:
    """Load an unencrypted private key (OpenSSH, or PEM: PKCS#8 or the traditional RSA/EC forms) from
    memory; nothing is written to disk.

    cryptography reads every one of these; paramiko reads the key from its OpenSSH serialization, the
    one form it reads for every key type (it has no PKCS#8 reader)."""
    raw = data.encode(errors="replace") if isinstance(data, str) else data
    try:
        try:
            loaded = serialization.load_ssh_private_key(raw, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(raw, password=None)
    except TypeError:
        raise UsageError(
            f"{source}: the private key is encrypted; give {PRIVATE_KEY_FORMATS} "
            "(for example a copy decrypted with `ssh-keygen -p`)."
        ) from None
    except (ValueError, paramiko.SSHException, cryptography_exceptions.UnsupportedAlgorithm):
        raise UsageError(f"{source}: not a private key this bootstrap reads; give {PRIVATE_KEY_FORMATS}.") from None
    key_classes = {ed25519.Ed25519PrivateKey: paramiko.Ed25519Key, ec.EllipticCurvePrivateKey: paramiko.ECDSAKey}
    key_class = next((c for t, c in key_classes.items() if isinstance(loaded, t)), None)
    if isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    if key_class is None:
        raise UsageError(f"{source}: unsupported private key type {type(loaded).__name__}; give {PRIVATE_KEY_FORMATS}.")
    try:
        openssh = loaded.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        return key_class.from_private_key(io.StringIO(openssh.decode()))
    except (paramiko.SSHException, ValueError):  # an ECDSA curve SSH has no name for, for one
        raise UsageError(f"{source}: a key SSH cannot use; give {PRIVATE_KEY_FORMATS}.") from None


def load_private_key_file(path: str | Path, *, setting: str = "--identity") -> paramiko.PKey:
    named = f"{setting} {mention(str(path))}"
    try:
        data = Path(path).read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise UsageError(f"{named}: cannot read the file ({getattr(exc, 'strerror', None) or exc}).") from None
    return load_private_key(data, source=named)


def check_negotiated_key(client: paramiko.SSHClient, pinned: PinnedHostKey, host: str, port: int) -> None:
    """paramiko puts the pinned key's type first in its offer, and a server without that type
    negotiates another one; so compare type and key bytes explicitly before going on."""
    transport = client.get_transport()
    offered = transport.get_remote_server_key() if transport else None
    if offered is None or offered.get_name() != pinned.key_type or offered.asbytes() != pinned.key.asbytes():
        raise host_key_mismatch(host, port, pinned, offered)


def host_key_mismatch(host: str, port: int, pinned: PinnedHostKey, offered: paramiko.PKey | None) -> HostKeyMismatch:
    offered_text = f"{offered.get_name()} {fingerprint(offered)}" if offered is not None else "no key"
    return HostKeyMismatch(
        f"Host key mismatch for {host}:{port}: expected the pinned {pinned.key_type} "
        f"{pinned.fingerprint} (hostPublicKey / --host-key), but the host offered {offered_text}. "
        "Nothing was sent to the host. Either the address now belongs to another machine, or the "
        "host was rebuilt with a new key: check that --host and --host-key come from the same stack."
    )
