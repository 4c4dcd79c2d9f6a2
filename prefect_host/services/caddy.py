"""Caddy, the TLS front door: Debian's package, our Caddyfile (prefect_host.caddy renders it), a
sandboxing drop-in, and reloads instead of restarts when only the configuration changed. With
tls internal, also the internal CA's configuration and the script that makes the CA before every
start and reload (prefect_host.internal_ca): a new configuration (a new IP) is applied by the
reload, which makes the new CA first; the script and its drop-in change nothing by themselves.

Debian's postinst starts Caddy at once with its default Caddyfile (a file server on :80, the admin
API on TCP 2019), so the first time Caddy is restarted: only a restart applies the sandbox, and the
running default instance cannot be reloaded onto a Caddyfile whose admin API is a unix socket.
Afterwards a changed Caddyfile means `systemctl reload caddy`, which keeps every connection and
never touches Prefect. tls=off serves no Caddy: a Caddy left from an earlier mode is stopped and
disabled, because it would hold port 4200.
"""

from __future__ import annotations

import base64
import binascii
import shlex

from prefect_host import internal_ca
from prefect_host.caddy import (
    ACME_CA_ROOT_PATH,
    CADDY_OWN_CA_ROOT_PATH,
    CADDYFILE_PATH,
    HARDENING_DROPIN,
    HARDENING_DROPIN_PATH,
    INTERNAL_CA_ROOT_PATH,
    render_caddyfile,
)
from prefect_host.host.facts import HostFacts
from prefect_host.host.model import AptPackage, Command, File, Service, Units
from prefect_host.services.prefect_server import CONFIG_DIR
from prefect_host.tls import INTERNAL_CA_ROOT_TIMEOUT, TlsSettings, caddy_settings

NAME = "caddy"
PACKAGE = "caddy"
UNIT = "caddy.service"
# "<drop-in digest> <configuration digest>" that the running Caddy was started or reloaded with.
APPLIED_FILE = f"{CONFIG_DIR}/caddy.applied"
_CA_ROOT_FACT = "caddy_internal_ca_root_b64"
_OWN_CA_ROOT_FACT = "caddy_own_ca_root_b64"


def caddy_service(settings: TlsSettings, *, start_after: tuple[str, ...] = ()) -> Service:
    """Caddy's declaration for these settings; with tls off, a Caddy that must not run."""
    units = Units((UNIT,), applied=APPLIED_FILE, display="Caddy", reload=True)
    if settings.mode == "off":
        return Service(NAME, units=units, absent="tls off", start_after=start_after)
    packages = (AptPackage(PACKAGE, source=settings.apt_source),)
    # Reload-triggering files in digest order (Caddyfile, then the files it names): the digest
    # earlier releases recorded for tls acme.
    files = [
        File(CADDYFILE_PATH, render_caddyfile(caddy_settings(settings)), on_change="reload"),
        File(ACME_CA_ROOT_PATH, settings.acme_ca_root_pem, on_change="reload"),
    ]
    if settings.mode == "internal":
        # Not declared for tls acme, so a switch is the reload it was (the files stay, unused).
        packages += (AptPackage("openssl", source=settings.apt_source),)
        files += [
            File(internal_ca.CONFIG_PATH, internal_ca.ca_config(settings.address), on_change="reload"),
            File(internal_ca.SCRIPT_PATH, internal_ca.generator_script(), on_change="none"),
        ]
    files.append(File(HARDENING_DROPIN_PATH, HARDENING_DROPIN, systemd=True, describe=f"sandbox {UNIT}"))
    if settings.mode == "internal":
        files.append(
            File(
                internal_ca.DROPIN_PATH,
                internal_ca.DROPIN,
                systemd=True,
                on_change="none",
                describe=f"internal CA for {UNIT}",
            )
        )
    return Service(
        NAME,
        packages=packages,
        files=tuple(files),
        units=units,
        start_after=start_after,
        fact_script="".join(
            f'[ -s {path} ] && echo "{fact}=$(base64 -w0 {path})"\n'
            for fact, path in ((_CA_ROOT_FACT, INTERNAL_CA_ROOT_PATH), (_OWN_CA_ROOT_FACT, CADDY_OWN_CA_ROOT_PATH))
        ),
    )


def _decoded(facts: HostFacts, fact: str) -> str | None:
    encoded = facts.get(fact)
    try:
        return base64.b64decode(encoded, validate=True).decode() if encoded else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def internal_ca_root_pem(facts: HostFacts) -> str | None:
    """The internal CA's root as read with the facts; None before it was made (or unreadable: it
    is then read again, and checked, after the start)."""
    return _decoded(facts, _CA_ROOT_FACT)


def caddy_own_ca_root_pem(facts: HostFacts) -> str | None:
    """The root of the CA Caddy made itself (earlier releases), which the next start or reload
    removes; None when there is none."""
    return _decoded(facts, _OWN_CA_ROOT_FACT)


def read_internal_ca_root(timeout: float = INTERNAL_CA_ROOT_TIMEOUT) -> Command:
    """Prints the internal CA's root (base64 of the PEM) once it exists: the script caddy.service
    runs before it starts or reloads makes it."""
    path = shlex.quote(INTERNAL_CA_ROOT_PATH)
    tries = max(1, int(timeout / 0.2))
    return Command(
        f"for i in $(seq 1 {tries}); do [ -s {path} ] && exec base64 -w0 {path}; sleep 0.2; done; "
        f"echo 'No internal CA root at {INTERNAL_CA_ROOT_PATH} within {timeout:g} s' >&2; exit 1",
        f"read the internal CA's root {INTERNAL_CA_ROOT_PATH}",
        timeout=timeout + 30,
    )
