"""Challenge selection and setup: http-01 answers in the store, dns-01 via a command.

Selection follows mod_md: `MDCAChallenges` fixes the list and order; without it,
http-01 when public port 80 reaches a port Apache listens on (Listen +
MDPortMap), then dns-01 when `MDChallengeDns01` is set. In both cases http-01
is dropped when port 80 is not reachable. tls-alpn-01 needs a hook into
mod_ssl's handshake that a WSGI application cannot have, so it is never chosen
(see DESIGN.md). Per authorization, a wildcard can only use dns-01 and an IP
address only http-01 (RFC 8738).
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

import josepy as jose

from ..core import aprstatus
from ..core.crypto import a_label
from ..core.model import GlobalSettings, ManagedDomain
from ..core.problem import CAProblem
from ..notify import run_command
from ..store.fs import CHALLENGES, HTTP01_FILE, Store

SUPPORTED = ("http-01", "dns-01")
MISMATCH = "challenge-mismatch"
SETUP_FAILURE = "challenge-setup-failure"
TLS_ALPN_WHY = ("tls-alpn-01 is not available with apache-md: answering it needs a hook into "
                "mod_ssl's TLS handshake, which only a C module (mod_md) has")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def preferred_types(md: ManagedDomain, settings: GlobalSettings) -> list[str]:
    """The challenge types to try, best first."""
    if md.challenges is not None:
        types = [c for c in dict.fromkeys(md.challenges) if c in SUPPORTED]
    else:
        types = ["http-01"] + (["dns-01"] if md.dns01_cmd else [])
    if not settings.can_http:
        types = [t for t in types if t != "http-01"]
    return types


def authz_types(types: list[str], identifier: str, wildcard: bool) -> list[str]:
    """The types usable for one authorization."""
    if wildcard:
        return [t for t in types if t == "dns-01"]
    if is_ip(identifier):
        return [t for t in types if t == "http-01"]
    return types


def _http01_unreachable(settings: GlobalSettings) -> str:
    local = settings.port_map.get(80)
    if local is None:
        return "http-01 is not possible: 'MDPortMap http:-' says port 80 is not reachable"
    listen = ", ".join(map(str, settings.listen_ports)) or "none"
    return (f"http-01 is not possible: public port 80 arrives at local port {local} "
            f"(MDPortMap), but Apache does not listen there (Listen ports: {listen})")


def explain_no_types(md: ManagedDomain, settings: GlobalSettings) -> str:
    """Why no challenge type is left, naming each configured or automatic candidate."""
    why = []
    if md.challenges is not None:
        for t in dict.fromkeys(md.challenges):
            if t == "tls-alpn-01":
                why.append(TLS_ALPN_WHY)
            elif t == "http-01":
                why.append(_http01_unreachable(settings))
            elif t not in SUPPORTED:
                why.append(f"'{t}' is not a known challenge type")
        why.append(f"MDCAChallenges is '{' '.join(md.challenges)}'")
    else:
        if not settings.can_http:
            why.append(_http01_unreachable(settings))
        if not md.dns01_cmd:
            why.append("dns-01 needs a command that sets DNS TXT records (MDChallengeDns01)")
    return ("None of the ACME challenge methods configured for this domain are suitable: "
            + "; ".join(why) + ".")


def check_names(md: ManagedDomain, types: list[str], settings: GlobalSettings) -> None:
    """Refuse before contacting the CA when some name cannot be validated with `types`."""
    foreign = [d for d in md.domains if not d.isascii()]
    if foreign:  # the CA would refuse the order (RFC 8555 wants A-labels)
        said = ", ".join(f"{d} (write {a_label(d)})" if a_label(d) else d for d in foreign)
        raise CAProblem(22, "Invalid argument", "urn:ietf:params:acme:error:rejectedIdentifier",
                        f"not a DNS name a CA can certify: {said}")
    if not types:
        raise CAProblem(22, "Invalid argument", MISMATCH, explain_no_types(md, settings))
    wild = [d for d in md.domains if d.startswith("*.")]
    if wild and "dns-01" not in types:
        how = ("it is not among MDCAChallenges" if md.challenges is not None
               else "configure MDChallengeDns01 with a command that sets DNS TXT records")
        raise CAProblem(22, "Invalid argument", MISMATCH,
                        f"the wildcard name(s) {', '.join(wild)} can only be "
                        f"validated with the dns-01 challenge; {how}")
    ips = [d for d in md.domains if is_ip(d)]
    if ips and "http-01" not in types:
        why = (_http01_unreachable(settings) if not settings.can_http
               else "http-01 is not among MDCAChallenges")
        raise CAProblem(22, "Invalid argument", MISMATCH,
                        f"the IP address(es) {', '.join(ips)} can only be "
                        f"validated with the http-01 challenge (RFC 8738); {why}")


def dns01_value(key_authz: str) -> str:
    return jose.b64.b64encode(hashlib.sha256(key_authz.encode()).digest()).decode()


@dataclass
class Setup:
    """One challenge put in place, recorded in order.json `challenge-setups`."""

    type: str
    domain: str
    value: str = ""

    def to_json(self) -> str:
        return f"{self.type}:{self.domain}" + (f" {self.value}" if self.value else "")

    @classmethod
    def from_json(cls, text: str) -> "Setup":
        head, _, value = text.partition(" ")
        typ, _, domain = head.partition(":")
        return cls(typ, domain, value)


def setup_http01(store: Store, domain: str, key_authz: str) -> Setup:
    current = store.read_bytes(CHALLENGES, domain, HTTP01_FILE)
    if current != key_authz.encode():  # rewritten only when it changes, as mod_md
        store.write_bytes(CHALLENGES, domain, HTTP01_FILE, key_authz.encode(), durable=False)
    return Setup("http-01", domain)


def setup_dns01(md: ManagedDomain, domain: str, key_authz: str, store_dir: str) -> Setup:
    """`cmd setup <domain> <value>`; for a wildcard `domain` is the base name (as in the authz)."""
    if not md.dns01_cmd:
        raise CAProblem(22, "Invalid argument", SETUP_FAILURE,
                        f"dns-01 for {domain} needs MDChallengeDns01, which is not configured")
    value = dns01_value(key_authz)
    rc, err = run_command(md.dns01_cmd, ["setup", domain, value], store_dir)
    if rc != 0:
        status = aprstatus.exec_status(rc)
        raise CAProblem(status, aprstatus.strerror(status), SETUP_FAILURE,
                        f"MDChallengeDns01 setup {domain} exited with {rc}"
                        + (f": {err}" if err else ""))
    return Setup("dns-01", domain, value)


def teardown(store: Store, setup: Setup, md: ManagedDomain | None, dns01_version: int,
             store_dir: str) -> None:
    if setup.type == "http-01":
        store.purge(CHALLENGES, setup.domain)
    elif setup.type == "dns-01" and md and md.dns01_cmd:
        args = ["teardown", setup.domain] + ([setup.value] if dns01_version == 2 else [])
        run_command(md.dns01_cmd, args, store_dir)  # failures only logged, as mod_md
