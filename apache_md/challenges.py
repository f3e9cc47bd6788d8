"""Challenge selection and setup: http-01 answers in the store, dns-01 via a command.

tls-alpn-01 needs a hook into mod_ssl's handshake that a WSGI application
cannot have, so it is never chosen (see DESIGN.md).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import josepy as jose

from .acmeclient import CAProblem
from .model import GlobalSettings, ManagedDomain
from .notify import run_command
from .store import CHALLENGES, Store

HTTP01_FILE = "acme-http-01.txt"
SUPPORTED = ("http-01", "dns-01")


def preferred_types(md: ManagedDomain, settings: GlobalSettings) -> list[str]:
    """The challenge types to try, best first (mod_md's auto selection minus tls-alpn-01)."""
    if md.challenges is not None:
        return [c for c in md.challenges if c in SUPPORTED]
    types = []
    if settings.port_map.get(80) is not None:
        types.append("http-01")
    if md.dns01_cmd:
        types.append("dns-01")
    return types


def explain_no_types(md: ManagedDomain, settings: GlobalSettings) -> str:
    if md.challenges is not None and "tls-alpn-01" in md.challenges:
        return ("tls-alpn-01 is not available with apache-md: answering it needs a hook into "
                "mod_ssl's TLS handshake. Use http-01 (port 80 reachable) or dns-01 "
                "(MDChallengeDns01).")
    return ("None of the ACME challenge methods configured for this domain are suitable. "
            "The http: challenge 'http-01' is disabled because the server seems not reachable "
            "on public port 80 (see MDPortMap), and dns-01 needs 'MDChallengeDns01'.")


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
        store.write_bytes(CHALLENGES, domain, HTTP01_FILE, key_authz.encode())
    return Setup("http-01", domain)


def setup_dns01(md: ManagedDomain, domain: str, key_authz: str, store_dir: str) -> Setup:
    if not md.dns01_cmd:
        raise CAProblem(22, "Invalid argument", "challenge-setup-failure",
                        f"dns-01 for {domain} needs MDChallengeDns01, which is not configured")
    value = dns01_value(key_authz)
    rc, err = run_command(md.dns01_cmd, ["setup", domain, value], store_dir)
    if rc != 0:
        raise CAProblem(20014, "dns-01 setup failed", "challenge-setup-failure",
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
