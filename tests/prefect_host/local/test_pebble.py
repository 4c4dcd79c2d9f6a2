"""Pebble and its DNS server, run for real on loopback (each start takes well under a second).
The full ACME issuance through Caddy is in tests/prefect_host/test_caddy.py."""

from __future__ import annotations

import shutil
import socket
import ssl
import stat
import struct

import httpx
import pytest
from cryptography import x509

from prefect_host.local.common import LocalHostError
from prefect_host.local.pebble import FixedAnswerDns, Pebble, free_port, make_tls_ca_and_certificate

LOOPBACK = "127.0.0.1"
GUEST = "10.77.9.2"  # only ever an answer in DNS replies; nothing is sent to it
QTYPE_A, QTYPE_AAAA = 1, 28


@pytest.fixture(scope="module", autouse=True)
def pebble_installed():
    for tool in ("pebble", "pebble-challtestsrv"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` is missing: run scripts/install-system-deps.sh as root (make test does).")


@pytest.fixture(scope="module")
def dns():
    with FixedAnswerDns(LOOPBACK, GUEST) as server:
        yield server


@pytest.fixture(scope="module")
def pebble(dns):
    with Pebble(
        LOOPBACK, dns_server=dns.server, acme_port=free_port(LOOPBACK), management_port=free_port(LOOPBACK)
    ) as server:
        yield server


def query(server: str, name: str, qtype: int) -> list[tuple[int, bytes]]:
    """One UDP DNS question; returns the answer records as (type, rdata)."""
    host, port = server.rsplit(":", 1)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", 0x5150, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(3)
        udp.sendto(packet, (host, int(port)))
        reply = udp.recv(4096)
    answers = struct.unpack(">H", reply[6:8])[0]
    offset = 12 + len(question) + 4
    records = []
    for _ in range(answers):
        offset = _skip_name(reply, offset)
        rtype, _, _, length = struct.unpack(">HHIH", reply[offset : offset + 10])
        records.append((rtype, reply[offset + 10 : offset + 10 + length]))
        offset += 10 + length
    return records


def _skip_name(packet: bytes, offset: int) -> int:
    while packet[offset]:
        if packet[offset] >= 0xC0:  # compression pointer ends the name
            return offset + 2
        offset += packet[offset] + 1
    return offset + 1


def test_dns_answers_every_name_with_the_guest_address_and_no_ipv6(dns):
    for name in ("prefect.test", "anything.example.com"):
        assert query(dns.server, name, QTYPE_A) == [(QTYPE_A, socket.inet_aton(GUEST))]
    assert query(dns.server, "prefect.test", QTYPE_AAAA) == []


def test_directory_is_served_over_tls_that_only_its_own_ca_verifies(pebble):
    assert pebble.directory_url.startswith(f"https://{LOOPBACK}:") and pebble.directory_url.endswith("/dir")
    directory = httpx.get(pebble.directory_url, verify=ssl.create_default_context(cafile=str(pebble.tls_ca_path)))
    assert {"newAccount", "newNonce", "newOrder"} <= set(directory.json())
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(pebble.directory_url)
    assert (
        x509.load_pem_x509_certificate(pebble.tls_ca_pem().encode())
        .extensions.get_extension_for_class(x509.BasicConstraints)
        .value.ca
    )


def test_pebble_listens_on_its_bind_address_only(pebble):
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", pebble.acme_port), timeout=2).close()


def test_issuing_root_is_a_self_signed_ca_generated_at_each_start(pebble, dns):
    root = x509.load_pem_x509_certificate(pebble.root_ca_pem().encode())
    assert root.subject == root.issuer and "Pebble Root CA" in root.subject.rfc4514_string()
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with Pebble(
        LOOPBACK, dns_server=dns.server, acme_port=free_port(LOOPBACK), management_port=free_port(LOOPBACK)
    ) as another:
        assert another.root_ca_pem() != pebble.root_ca_pem()


def test_a_taken_port_fails_with_pebbles_own_words(dns):
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LocalHostError, match="address already in use"):
            Pebble(LOOPBACK, dns_server=dns.server, acme_port=port, management_port=free_port(LOOPBACK))


def test_tls_keys_are_private_and_the_certificate_names_the_address(tmp_path):
    ca, cert, key = make_tls_ca_and_certificate(tmp_path, "10.77.3.1")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.77.3.1"]
    assert leaf.issuer == x509.load_pem_x509_certificate(ca.read_bytes()).subject


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"bind_address": "localhost"}, ["bind_address", "'localhost'"]),
        ({"dns_server": "127.0.0.1"}, ["dns_server", "address:port"]),
        ({"http_port": 0}, ["http_port", "1 to 65535"]),
        ({"acme_port": 15000, "management_port": 15000}, ["acme_port", "management_port", "15000"]),
    ],
)
def test_pebble_refuses_bad_settings_before_starting(kwargs, words):
    settings = {"bind_address": LOOPBACK, "dns_server": "127.0.0.1:53", **kwargs}
    with pytest.raises(LocalHostError) as error:
        Pebble(settings.pop("bind_address"), **settings)
    for word in words:
        assert word in str(error.value)


def test_dns_refuses_an_ipv6_answer():
    with pytest.raises(LocalHostError, match="answer_ipv4='::1' must be an IPv4 address"):
        FixedAnswerDns(LOOPBACK, "::1")
