"""Caddy's internal CA (tls internal), able to vouch for nothing but this server.

The CA Caddy would make itself can sign for any name, and its key is on the VM: whoever trusts it
(a browser, a keychain) would let root on the VM impersonate any HTTPS site to them. So a script
run by caddy.service before every start and reload (as the caddy user, in Caddy's sandbox) makes,
once, a root and an intermediate that both carry critical X.509 name constraints. Permitted: the
public IP (an IPv4 /32) and the domain if any (that name exactly: its subdomains are excluded).
Per RFC 5280 a name type without a permitted subtree is unconstrained, so DNS names (without a
domain), e-mail addresses and URIs get one that names only the reserved `invalid` TLD (RFC 6761),
which no real site has; any IPv6 address falls outside the IPv4 /32. Directory names are left
alone: they name no TLS server, and Caddy's intermediate has one.

The root's key exists only in the script's memory (a shell variable, passed to openssl through a
pipe) while it signs the root and the intermediate, then is gone: no one, root on the VM included,
can sign another intermediate under it. Caddy signs its certificates with the intermediate, whose
key (0600, caddy) is all the VM holds; verifiers that ignore a trust anchor's own constraints
(RFC 5280 does not require them) still apply the intermediate's. The intermediate is also limited
to TLS servers (extended key usage serverAuth) and to signing end-entity certificates (pathlen 0).

The script keeps the CA while the configuration it was made from is unchanged (re-runs, reboots,
reloads). A changed configuration (another IP or domain) makes a new CA, and drops the certificates
Caddy issued from the old one and Caddy's own CA of earlier releases (its root key included), so
the `caddy reload` or start that follows issues from the new one.
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from cryptography import x509

from prefect_host.caddy import CADDY_DATA_DIR, CADDY_OWN_CA_DIR, CADDYFILE_PATH, INTERNAL_CA_DIR, TlsConfigError

CONFIG_PATH = "/etc/caddy/internal-ca.cnf"
SCRIPT_PATH = "/etc/caddy/internal-ca.sh"
DROPIN_PATH = "/etc/systemd/system/caddy.service.d/20-prefect-host-internal-ca.conf"
# The reserved TLD no real name is under (RFC 6761): the permitted subtree of a name type that
# must match nothing.
NOWHERE = "invalid"
ROOT_DAYS = 3653
INTERMEDIATE_DAYS = 3650  # within the root's validity
# Made again this long before the intermediate expires (at a start or reload).
RENEW_SECONDS = 30 * 24 * 3600
# A DNS name as Caddy serves one (prefect_host.caddy): lower-case LDH labels, two at least.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")

# Before every start and reload, the CA is there and fits the configuration. The reload replaces
# Debian's ExecReload with the same command, after the script.
DROPIN = f"""\
# prefect-host: Caddy's internal CA, constrained to this server's names, made before Caddy starts
# or reloads ({SCRIPT_PATH}; nothing to do once it exists).
[Service]
ExecStartPre=/bin/sh {SCRIPT_PATH}
ExecReload=
ExecReload=/bin/sh {SCRIPT_PATH}
ExecReload=/usr/bin/caddy reload --config {CADDYFILE_PATH} --force
"""


def _checked(ip: str, domain: str | None) -> tuple[ipaddress.IPv4Address, str | None]:
    try:
        address = ipaddress.IPv4Address(ip)
    except (ipaddress.AddressValueError, TypeError):
        raise TlsConfigError(f"The internal CA certifies the host's public IPv4 address; got {ip!r}.") from None
    if domain is not None and (not isinstance(domain, str) or not _DOMAIN.fullmatch(domain) or len(domain) > 253):
        raise TlsConfigError(f"domain={domain!r} cannot be a name constraint of the internal CA: not a DNS name.")
    return address, domain


def name_constraints(ip: str, domain: str | None = None) -> x509.NameConstraints:
    """What the root and the intermediate permit: `ip` and `domain` (exactly), nothing else."""
    address, domain = _checked(ip, domain)
    dns = x509.DNSName(domain or NOWHERE)
    permitted = [
        x509.IPAddress(ipaddress.IPv4Network(f"{address}/32")),
        dns,
        x509.RFC822Name(NOWHERE),
        x509.UniformResourceIdentifier(NOWHERE),
    ]
    excluded = [x509.DNSName(f".{domain}")] if domain else None
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)


def ca_config(ip: str, domain: str | None = None) -> str:
    """The openssl configuration the script makes the CA from: names, extensions, the root's name."""
    address, domain = _checked(ip, domain)
    names = [
        f"permitted;IP.0 = {address}/255.255.255.255",
        f"permitted;DNS.0 = {domain or NOWHERE}",
        f"permitted;email.0 = {NOWHERE}",
        f"permitted;URI.0 = {NOWHERE}",
    ]
    if domain:
        names.append(f"excluded;DNS.0 = .{domain}")
    return (
        "# prefect-host: Caddy's internal CA for this server. " + SCRIPT_PATH + " makes it from this\n"
        "# file, once, and again only when this file changes (a new CA: clients pin it again).\n"
        "[req]\ndistinguished_name = root_name\nprompt = no\n"
        f"[root_name]\nO = prefect-host\nCN = prefect-host CA for {address}\n"
        "[root]\nbasicConstraints = critical, CA:true, pathlen:1\nkeyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\nnameConstraints = critical, @names\n"
        "[intermediate]\nbasicConstraints = critical, CA:true, pathlen:0\n"
        "keyUsage = critical, keyCertSign, cRLSign\nextendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\nnameConstraints = critical, @names\n"
        "[names]\n" + "".join(f"{line}\n" for line in names)
    )


def generator_script(
    config: str = CONFIG_PATH, ca_dir: str = INTERNAL_CA_DIR, caddy_data_dir: str = CADDY_DATA_DIR
) -> str:
    """The script caddy.service runs before every start and reload (other paths: tests)."""
    q = shlex.quote
    own_ca = CADDY_OWN_CA_DIR.replace(CADDY_DATA_DIR, caddy_data_dir, 1)
    issued = q(f"{caddy_data_dir}/certificates/local")
    return f"""\
# prefect-host: Caddy's internal CA, made from the configuration below unless the CA there was
# made from it (prefect_host/internal_ca.py says why and how). caddy.service runs it as caddy.
set -eu
umask 077
config={q(config)}
ca={q(ca_dir)}
# Caddy's own CA (earlier releases) could vouch for any name: never kept, its root key included,
# nor what it issued.
if [ -e {q(own_ca)} ]; then rm -rf {q(own_ca)} {issued}; fi
# No configuration: a Caddy serving tls acme since, with this script left from tls internal.
[ -f "$config" ] || exit 0
command -v openssl >/dev/null || {{ echo "internal CA: openssl is missing (apt-get install openssl)" >&2; exit 1; }}
if [ -s "$ca/root.crt" ] && [ -s "$ca/intermediate.crt" ] && [ -s "$ca/intermediate.key" ] &&
  cmp -s "$config" "$ca/made-from.cnf" &&
  openssl x509 -checkend {RENEW_SECONDS} -noout -in "$ca/intermediate.crt" >/dev/null; then
  exit 0
fi
new="$ca.new"
rm -rf "$new"
mkdir -p "$new"
trap 'rm -rf "$new"' EXIT
# The root's key: in this shell's memory and openssl's pipes only, never in a file.
root_key=$(openssl ecparam -name prime256v1 -genkey -noout)
printf '%s\\n' "$root_key" | openssl req -new -x509 -sha256 -config "$config" -extensions root \\
  -key /dev/stdin -days {ROOT_DAYS} -out "$new/root.crt"
openssl ecparam -name prime256v1 -genkey -noout -out "$new/intermediate.key"
openssl req -new -sha256 -config "$config" -key "$new/intermediate.key" \\
  -subj "/O=prefect-host/CN=prefect-host intermediate" -out "$new/intermediate.csr"
printf '%s\\n' "$root_key" | openssl x509 -req -sha256 -in "$new/intermediate.csr" -CA "$new/root.crt" \\
  -CAkey /dev/stdin -extfile "$config" -extensions intermediate -days {INTERMEDIATE_DAYS} \\
  -set_serial "0x$(openssl rand -hex 16)" -out "$new/intermediate.crt"
root_key=
rm -f "$new/intermediate.csr"
cp "$config" "$new/made-from.cnf"
rm -rf "$ca.old"
if [ -e "$ca" ]; then mv "$ca" "$ca.old"; fi
mv "$new" "$ca"
rm -rf "$ca.old"
# What Caddy issued from an earlier CA: issued again, from this one, when Caddy (re)loads.
rm -rf {issued}
echo "internal CA: made a new one; root $(openssl x509 -noout -fingerprint -sha256 -in "$ca/root.crt")"
"""


def constrained_to(pem: str, ip: str, domain: str | None = None) -> bool:
    """Whether the CA certificate `pem` carries exactly the critical name constraints for `ip`
    (and `domain`): a root of Caddy's own making, or one made for another address, does not."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        extension = certificate.extensions.get_extension_for_class(x509.NameConstraints)
    except (ValueError, x509.ExtensionNotFound):
        return False
    wanted, found = name_constraints(ip, domain), extension.value
    return (
        extension.critical
        and set(found.permitted_subtrees or ()) == set(wanted.permitted_subtrees or ())
        and set(found.excluded_subtrees or ()) == set(wanted.excluded_subtrees or ())
    )


def permitted_names(pem: str) -> list[str] | None:
    """The names a CA certificate can vouch for, as people write them, leaving out the impossible
    `invalid` subtrees; None when it carries no name constraints (it can vouch for any name)."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    names = []
    for name in constraints.permitted_subtrees or ():
        if isinstance(name, x509.IPAddress):
            network = name.value
            names.append(str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network))
        elif name.value != NOWHERE:
            names.append(str(name.value))
    return names
