"""The internal CA (prefect_host.internal_ca): the script caddy.service runs, run here with openssl on
temporary paths. Its root and intermediate can vouch for the server's IP (and domain) only: a
certificate for any other name, signed with the key the host holds (or even with a root key,
had one been kept), fails OpenSSL's verification and a TLS handshake with Python's ssl."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from prefect_host.caddy import TlsConfigError
from prefect_host.internal_ca import (
    DROPIN,
    NOWHERE,
    SCRIPT_PATH,
    ca_config,
    constrained_to,
    generator_script,
    name_constraints,
    permitted_names,
)
from tests.prefect_host.internal_ca_support import IP, MadeCa, leaf, load, make_ca, openssl, pem

DOMAIN = "prefect.example.com"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> MadeCa:
    return make_ca(tmp_path_factory.mktemp("internal-ca"))


def openssl_verify(root: Path, chain: list[x509.Certificate], tmp_path: Path) -> subprocess.CompletedProcess:
    """`openssl verify` of chain[0] for a TLS server, against `root` alone, with chain[1:] as the
    intermediates the server sends."""
    leaf_file, untrusted = tmp_path / "leaf.pem", tmp_path / "untrusted.pem"
    leaf_file.write_bytes(pem(chain[0]))
    untrusted.write_bytes(pem(*chain[1:]))
    command = [openssl(), "verify", "-purpose", "sslserver", "-CAfile", str(root)]
    if chain[1:]:
        command += ["-untrusted", str(untrusted)]
    return subprocess.run([*command, str(leaf_file)], capture_output=True, text=True)


def violation(result: subprocess.CompletedProcess) -> bool:
    """`openssl verify` refused the certificate for a name outside the CA's name constraints."""
    return result.returncode != 0 and "permitted subtree violation" in result.stdout + result.stderr


def handshake(
    root: Path, chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey, server_name: str, tmp_path: Path
) -> None:
    """A TLS handshake on loopback: a server sending `chain` (its leaf's key `key`), Python's ssl
    trusting `root` only and checking `server_name`. Raises ssl.SSLCertVerificationError when the
    chain does not verify."""
    chain_file, key_file = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain_file.write_bytes(pem(*chain))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = ssl.create_default_context(cafile=str(root))
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            client.wrap_socket(raw, server_hostname=server_name),
        ):
            pass
    finally:
        listener.close()
        thread.join(5)


# --- the configuration ------------------------------------------------------------------------------


def test_config_permits_the_ip_and_gives_every_other_name_type_an_impossible_subtree():
    config = ca_config(IP)
    assert "nameConstraints = critical, @names" in config and config.count("critical, @names") == 2
    names = config[config.index("[names]") :].splitlines()[1:]
    assert names == [
        f"permitted;IP.0 = {IP}/255.255.255.255",
        f"permitted;DNS.0 = {NOWHERE}",
        f"permitted;email.0 = {NOWHERE}",
        f"permitted;URI.0 = {NOWHERE}",
    ]
    assert f"CN = prefect-host CA for {IP}" in config
    # With a domain: that name exactly, its subdomains excluded.
    with_domain = ca_config(IP, DOMAIN)
    assert f"permitted;DNS.0 = {DOMAIN}\n" in with_domain and f"excluded;DNS.0 = .{DOMAIN}\n" in with_domain
    constraints = name_constraints(IP, DOMAIN)
    assert x509.DNSName(DOMAIN) in constraints.permitted_subtrees
    assert constraints.excluded_subtrees == [x509.DNSName(f".{DOMAIN}")]


@pytest.mark.parametrize(
    "ip, domain",
    [("2001:db8::1", None), ("prefect.example.com", None), ("203.0.113.7/24", None), (IP, "a b"), (IP, "")],
)
def test_what_cannot_be_a_constraint_is_refused(ip, domain):
    with pytest.raises(TlsConfigError):
        ca_config(ip, domain)


def test_the_script_is_posix_sh_and_runs_before_every_start_and_reload():
    dash = shutil.which("dash") or "sh"
    assert subprocess.run([dash, "-n", "-c", generator_script()]).returncode == 0
    lines = DROPIN.splitlines()
    start = lines.index("[Service]")
    assert lines[start + 1 :] == [
        f"ExecStartPre=/bin/sh {SCRIPT_PATH}",
        "ExecReload=",
        f"ExecReload=/bin/sh {SCRIPT_PATH}",
        "ExecReload=/usr/bin/caddy reload --config /etc/caddy/Caddyfile --force",
    ]


# --- what the script makes -------------------------------------------------------------------------


def test_root_and_intermediate_carry_the_constraints_critical_and_no_root_key_is_kept(made):
    root, intermediate = load(made.root), load(made.intermediate)
    wanted = name_constraints(IP)
    for certificate in (root, intermediate):
        extension = certificate.extensions.get_extension_for_class(x509.NameConstraints)
        assert extension.critical
        assert set(extension.value.permitted_subtrees) == set(wanted.permitted_subtrees)
        assert extension.value.excluded_subtrees is None
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    usage = intermediate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    intermediate.verify_directly_issued_by(root)
    assert constrained_to(made.root.read_text(), IP) and not constrained_to(made.root.read_text(), "192.0.2.11")
    assert permitted_names(made.root.read_text()) == [IP]
    # The host keeps the intermediate's key only (0600 in a 0700 directory): the root's is gone.
    assert sorted(p.name for p in made.ca.iterdir()) == [
        "intermediate.crt",
        "intermediate.key",
        "made-from.cnf",
        "root.crt",
    ]
    assert stat.S_IMODE(made.ca.stat().st_mode) == 0o700
    assert stat.S_IMODE((made.ca / "intermediate.key").stat().st_mode) == 0o600
    held = (
        made.intermediate_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert held != root.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert "PRIVATE KEY" not in made.run().stdout + made.run().stderr


def test_a_certificate_for_the_permitted_ip_verifies(made, tmp_path):
    intermediate = load(made.intermediate)
    certificate, key = leaf(intermediate, made.intermediate_key(), [x509.IPAddress(ipaddress.ip_address(IP))])
    result = openssl_verify(made.root, [certificate, intermediate], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    handshake(made.root, [certificate, intermediate], key, IP, tmp_path)


OTHER_NAMES = {
    "another-ip": ([x509.IPAddress(ipaddress.ip_address("192.0.2.11"))], None, "192.0.2.11"),
    "ipv6": ([x509.IPAddress(ipaddress.ip_address("2001:db8::1"))], None, "2001:db8::1"),
    "dns-name": ([x509.DNSName("bank.example.com")], None, "bank.example.com"),
    "dns-name-beside-the-ip": (
        [x509.IPAddress(ipaddress.ip_address(IP)), x509.DNSName("bank.example.com")],
        None,
        "bank.example.com",
    ),
    "common-name-only": ([], "bank.example.com", None),
    "email": ([x509.RFC822Name("ceo@example.com")], None, None),
    "uri": ([x509.UniformResourceIdentifier("https://bank.example.com/")], None, None),
}


@pytest.mark.parametrize("names, common_name, server_name", OTHER_NAMES.values(), ids=OTHER_NAMES.keys())
def test_a_certificate_for_any_other_name_signed_with_the_hosts_key_fails(
    made, tmp_path, names, common_name, server_name
):
    """What root on the VM could sign with the key Caddy holds: nothing a client accepts."""
    intermediate = load(made.intermediate)
    certificate, key = leaf(intermediate, made.intermediate_key(), names, common_name)
    result = openssl_verify(made.root, [certificate, intermediate], tmp_path)
    assert violation(result)
    if server_name is not None:
        with pytest.raises(ssl.SSLCertVerificationError, match="permitted subtree violation"):
            handshake(made.root, [certificate, intermediate], key, server_name, tmp_path)


def test_even_the_roots_key_could_vouch_for_no_other_name(made, tmp_path):
    """The root's own constraints hold too: a root made from the same configuration whose key
    this test keeps (the script keeps none) signs a leaf for another name, and an intermediate
    without constraints with a leaf under it: OpenSSL refuses both."""
    key_file, root_file = tmp_path / "root.key", tmp_path / "root.crt"
    subprocess.run(
        [openssl(), "req", "-x509", "-new", "-config", str(made.config), "-extensions", "root", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key_file), "-days", "1",
         "-out", str(root_file)],
        check=True, capture_output=True,
    )  # fmt: skip
    root, root_key = load(root_file), serialization.load_pem_private_key(key_file.read_bytes(), None)
    other = [x509.DNSName("bank.example.com")]
    direct, _ = leaf(root, root_key, other)
    assert violation(openssl_verify(root_file, [direct], tmp_path))
    now = datetime.datetime.now(datetime.UTC)
    sub_key = ec.generate_private_key(ec.SECP256R1())
    unconstrained = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unconstrained")]))
        .issuer_name(root.subject)
        .public_key(sub_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    below, _ = leaf(unconstrained, sub_key, other)
    assert violation(openssl_verify(root_file, [below, unconstrained], tmp_path))
    # The same path for the permitted IP verifies: the refusals are the constraints, nothing else.
    fine, _ = leaf(unconstrained, sub_key, [x509.IPAddress(ipaddress.ip_address(IP))])
    assert openssl_verify(root_file, [fine, unconstrained], tmp_path).returncode == 0


def test_with_a_domain_that_name_exactly_is_permitted(tmp_path):
    with_domain = make_ca(tmp_path, domain=DOMAIN)
    intermediate, key = load(with_domain.intermediate), with_domain.intermediate_key()
    for names, verifies in [
        ([x509.DNSName(DOMAIN), x509.IPAddress(ipaddress.ip_address(IP))], True),
        ([x509.DNSName(f"www.{DOMAIN}")], False),
        ([x509.DNSName("example.com")], False),
    ]:
        certificate, _ = leaf(intermediate, key, names)
        result = openssl_verify(with_domain.root, [certificate, intermediate], tmp_path)
        assert (result.returncode == 0) == verifies, (names, result.stdout)
    assert permitted_names(with_domain.root.read_text()) == [IP, DOMAIN]
    assert constrained_to(with_domain.root.read_text(), IP, DOMAIN)
    assert not constrained_to(with_domain.root.read_text(), IP)


# --- kept, made again, and what it replaces -------------------------------------------------------


def test_the_ca_is_made_once_and_kept_and_a_new_address_makes_a_new_one(tmp_path):
    made = make_ca(tmp_path)
    root = made.root.read_bytes()
    issued = made.data / "certificates/local/192.0.2.10/192.0.2.10.crt"
    issued.parent.mkdir(parents=True)
    issued.write_text("issued by this CA")
    again = made.run()
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert made.root.read_bytes() == root and issued.exists()

    # Caddy's own CA, left by an earlier release, goes at the next start or reload, its key included,
    # and what it issued with it.
    own = made.data / "pki/authorities/local"
    own.mkdir(parents=True)
    (own / "root.key").write_text("Caddy's own root key")
    assert made.run().returncode == 0 and not own.exists() and made.root.read_bytes() == root
    assert not issued.exists()
    issued.parent.mkdir(parents=True)
    issued.write_text("issued by this CA")

    # A new address: a new CA, and what Caddy issued from the old one is dropped.
    made.configure("192.0.2.20")
    renewed = made.run()
    assert renewed.returncode == 0 and "internal CA: made a new one" in renewed.stdout
    assert made.root.read_bytes() != root and constrained_to(made.root.read_text(), "192.0.2.20")
    assert not issued.exists() and not (tmp_path / "ca.new").exists() and not (tmp_path / "ca.old").exists()


def test_an_unfinished_ca_is_made_again(tmp_path):
    made = make_ca(tmp_path)
    root = made.root.read_bytes()
    (made.ca / "intermediate.key").unlink()
    assert made.run().returncode == 0 and made.root.read_bytes() != root
    assert (made.ca / "intermediate.key").is_file()


def test_without_a_configuration_the_script_leaves_everything_alone(tmp_path):
    """tls acme since: the script (left from tls internal) still runs, and does nothing."""
    made = make_ca(tmp_path)
    made.config.unlink()
    result = made.run()
    assert (result.returncode, result.stdout) == (0, "") and made.root.is_file()
