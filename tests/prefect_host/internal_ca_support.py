"""The internal CA as the tests make it: the script caddy.service runs, run here on temporary
paths; and certificates signed as anyone holding a CA key could sign them."""

from __future__ import annotations

import dataclasses
import datetime
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from prefect_host.caddy import ACME_CA_ROOT_PATH, CADDYFILE_PATH, HARDENING_DROPIN_PATH
from prefect_host.host.model import Service
from prefect_host.internal_ca import ca_config, generator_script

IP = "192.0.2.10"


def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("`openssl` is missing: install Debian's openssl package.")
    return path


@dataclass
class MadeCa:
    """A CA the script made in `ca` from `config`, with Caddy's data directory `data`."""

    config: Path
    ca: Path
    data: Path
    script: Path

    def run(self) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(self.script)], capture_output=True, text=True, timeout=60)

    def configure(self, ip: str, domain: str | None = None) -> None:
        self.config.write_text(ca_config(ip, domain))

    @property
    def root(self) -> Path:
        return self.ca / "root.crt"

    @property
    def intermediate(self) -> Path:
        return self.ca / "intermediate.crt"

    def intermediate_key(self) -> ec.EllipticCurvePrivateKey:
        return serialization.load_pem_private_key((self.ca / "intermediate.key").read_bytes(), None)


def make_ca(directory: Path, ip: str = IP, domain: str | None = None, caddy_data: Path | None = None) -> MadeCa:
    """Runs the script as caddy.service would, on paths under `directory` (Caddy's data directory:
    `caddy_data`, by default there too)."""
    openssl()
    directory.mkdir(parents=True, exist_ok=True)
    data = caddy_data or directory / "caddy-data"
    made = MadeCa(directory / "internal-ca.cnf", directory / "ca", data, directory / "ca.sh")
    made.script.write_text(generator_script(str(made.config), str(made.ca), str(made.data)))
    made.configure(ip, domain)
    result = made.run()
    assert result.returncode == 0, result.stderr
    return made


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def leaf(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    names: list[x509.GeneralName],
    common_name: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for `names` and its key, as anyone holding `issuer_key` could make one."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=12))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not common_name)
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def without_pki(caddyfile: str) -> str:
    """The Caddyfile without its `pki` option: `tls internal` then issues from Caddy's own CA."""
    return re.sub(r"\tpki \{\n.*?\n\t\}\n", "", caddyfile, flags=re.S)


def earlier_release(declared: Service) -> Service:
    """Caddy as releases before the constrained CA declared it (given as this release declares it):
    the Caddyfile without `pki`, no CA files, no openssl."""
    files = tuple(
        dataclasses.replace(f, text=without_pki(f.text)) if f.path == CADDYFILE_PATH else f
        for f in declared.files
        if f.path in (CADDYFILE_PATH, ACME_CA_ROOT_PATH, HARDENING_DROPIN_PATH)
    )
    return dataclasses.replace(declared, files=files, packages=declared.packages[:1])
