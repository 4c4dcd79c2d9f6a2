"""The CA the bootstrap pins in tls internal mode: the host's constrained CA, read with the facts or,
when it was (re)made by this run's start or reload, over SSH after it; what it replaced is said."""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path

import pytest

from prefect_host.bootstrap import _client_trust
from prefect_host.bootstrap.checks import server_ca
from prefect_host.bootstrap.inputs import BootstrapInputs
from prefect_host.console import Console
from prefect_host.host.facts import parse_facts
from prefect_host.local.pebble import make_tls_ca_and_certificate
from prefect_host.services import caddy
from prefect_host.tls import TlsError, TlsSettings, load_ca_certificate
from tests.prefect_host.host.host_samples import END, HOST, RecordingSession
from tests.prefect_host.internal_ca_support import make_ca

IP = "203.0.113.7"
READ = caddy.read_internal_ca_root().label


def inputs(**changes) -> BootstrapInputs:
    return dataclasses.replace(
        BootstrapInputs(
            host=IP,
            user="admin",
            host_key="ssh-ed25519 AAAA",
            api_url=f"https://{IP}/api",
            ui_url=f"https://{IP}",
            prefect_version="3.9.1",
            auth_string="admin:pw",
            profile_name="p",
            tls=TlsSettings(mode="internal", address=IP),
            public_ip=IP,
        ),
        **changes,
    )


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, str]:
    """The constrained root for IP, one made for another address, and a CA without constraints (as
    Caddy makes its own)."""
    directory = tmp_path_factory.mktemp("roots")
    unconstrained, _, _ = make_tls_ca_and_certificate(directory, "10.0.0.1")
    return {
        "this": make_ca(directory / "this", IP).root.read_text(),
        "other": make_ca(directory / "other", "203.0.113.99").root.read_text(),
        "own": Path(unconstrained).read_text(),
    }


def facts(ours: str | None = None, own: str | None = None):
    """The facts with the internal CA's root (`ours`) and Caddy's own root (`own`) as the host has them."""
    pairs = (("caddy_internal_ca_root_b64", ours), ("caddy_own_ca_root_b64", own))
    lines = "".join(f"{fact}={base64.b64encode(pem.encode()).decode()}\n" for fact, pem in pairs if pem)
    return parse_facts(HOST + lines + END)


def quiet() -> tuple[Console, io.StringIO]:
    err = io.StringIO()
    return Console(io.StringIO(), err), err


def reading(pem: str) -> RecordingSession:
    return RecordingSession(on_run={READ: lambda: base64.b64encode(pem.encode()).decode()})


def test_the_constrained_root_in_the_facts_is_pinned_without_another_round_trip(roots):
    session, (console, err) = RecordingSession(), quiet()
    ca = server_ca(inputs(), facts(ours=roots["this"]), session, console)
    assert ca == load_ca_certificate(roots["this"], source="test") and session.labels == [] and err.getvalue() == ""


@pytest.mark.parametrize(
    "before, said",
    [
        ({"own": "own"}, "Caddy's own CA, which could vouch for any HTTPS site"),
        ({"ours": "other"}, "the internal CA made for 203.0.113.99"),
        ({}, None),
    ],
    ids=["caddys-own-ca", "made-for-another-address", "fresh-host"],
)
def test_a_new_ca_is_read_after_the_start_and_what_it_replaced_is_said(roots, before, said):
    session, (console, err) = reading(roots["this"]), quiet()
    ca = server_ca(inputs(), facts(**{fact: roots[name] for fact, name in before.items()}), session, console)
    assert ca.pem == load_ca_certificate(roots["this"], source="test").pem and session.labels == [READ]
    if said is None:
        assert err.getvalue() == ""
        return
    old = load_ca_certificate(roots[next(iter(before.values()))], source="test")
    warning = err.getvalue()
    assert said in warning and old.fingerprint in warning and ca.fingerprint in warning
    assert "remove it there" in warning and "for your user only" in warning


def test_a_ca_that_is_not_the_one_for_this_address_is_refused(roots):
    session, (console, _) = reading(roots["other"]), quiet()
    with pytest.raises(TlsError, match=f"is not the one for {IP}.*systemctl restart caddy"):
        server_ca(inputs(), facts(own=roots["own"]), session, console)


def test_a_teammates_ca_file_must_be_the_constrained_ca(roots):
    console, _ = quiet()
    good = load_ca_certificate(roots["this"], source="--ca-file")
    assert _client_trust(inputs(client_only=True, ca=good), console) == good
    for name in ("own", "other"):
        stale = load_ca_certificate(roots[name], source="--ca-file")
        with pytest.raises(TlsError, match=f"--ca-file .* is not the internal CA constrained to {IP}"):
            _client_trust(inputs(client_only=True, ca=stale), console)
