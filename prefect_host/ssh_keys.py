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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from prefect_host.errors import UsageError


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
                f'{setting}: expected an OpenSSH public key line such as "ssh-ed25519 AAAA...", got {line!r}.'
            )
        key_type, blob = parts[0], parts[1]
        try:
            raw = base64.b64decode(blob, validate=True)
            key = paramiko.PKey.from_type_string(key_type, raw)
        except (binascii.Error, paramiko.SSHException, paramiko.pkey.UnknownKeyType, ValueError) as exc:
            raise UsageError(
                f"{setting}: {key_type} {blob[:16]}... is not a valid OpenSSH public key "
                f"({exc}); allowed types: ssh-ed25519, ecdsa-sha2-nistp256/384/521, "
                "ssh-rsa."
            ) from None
        if key.get_name() != key_type and not (key_type == "ssh-rsa" and key.get_name().startswith("rsa")):
            raise UsageError(f"{setting}: the key type says {key_type} but the key is {key.get_name()}.")
        return cls(key)

    @property
    def key_type(self) -> str:
        return self.key.get_name()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)


def load_private_key(data: str | bytes, *, source: str) -> paramiko.PKey:
    """Load an unencrypted private key (OpenSSH or PEM) from memory; nothing is written to disk."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        try:
            loaded = serialization.load_ssh_private_key(raw, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(raw, password=None)
    except TypeError:
        raise UsageError(
            f"{source}: the private key is encrypted; give an unencrypted key "
            "(for example a copy decrypted with `ssh-keygen -p`)."
        ) from None
    except (ValueError, paramiko.SSHException):
        raise UsageError(f"{source}: not a private key in OpenSSH or PEM format.") from None
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    else:
        raise UsageError(
            f"{source}: unsupported private key type {type(loaded).__name__}; allowed: ED25519, ECDSA, RSA."
        )
    return key_class.from_private_key(io.StringIO(raw.decode()))


def load_private_key_file(path: str | Path, *, setting: str = "--identity") -> paramiko.PKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{setting} {path}: cannot read the file ({exc.strerror}).") from None
    return load_private_key(data, source=f"{setting} {path}")
