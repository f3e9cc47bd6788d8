"""The order a renewal has under way at the CA, in `staging/<md>/order.json` as mod_md
keeps it (md_acme_order.c): `url`, `status`, `authorizations`, `challenge-setups`,
`finalize`, `certificate`.

A run that is cut short (kill -9, a stop, a failure the order survives) leaves it there,
and the next run goes on with the same order instead of placing another: one order per
MD at the CA. It is removed once its certificate is staged, and as soon as it cannot go
on (the CA declared it invalid, expired or forgot it; the MD's names or CA changed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.model import ManagedDomain
from ..store import broken
from ..store.fs import STAGING, Store
from .challenges import Setup

FILE = "order.json"


@dataclass
class Saved:
    url: str
    status: str = "pending"
    authorizations: list[str] = field(default_factory=list)
    setups: list[Setup] = field(default_factory=list)  # the answers in place for it
    finalize: str | None = None
    certificate: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"url": self.url, "status": self.status,
                               "authorizations": list(self.authorizations),
                               "challenge-setups": [s.to_json() for s in self.setups]}
        if self.finalize:
            doc["finalize"] = self.finalize
        if self.certificate:
            doc["certificate"] = self.certificate
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Saved | None":
        url = doc.get("url")
        if not isinstance(url, str) or not url:
            return None

        def strings(key: str) -> list[str]:
            v = doc.get(key)
            return [s for s in v if isinstance(s, str)] if isinstance(v, list) else []

        def text(key: str) -> str | None:
            v = doc.get(key)
            return v if isinstance(v, str) and v else None
        return cls(url, text("status") or "pending", strings("authorizations"),
                   [Setup.from_json(s) for s in strings("challenge-setups")],
                   text("finalize"), text("certificate"))


def load(store: Store, name: str) -> Saved | None:
    """The order left by an earlier run; a file that does not parse is set aside."""
    doc = broken.read_json(store, STAGING, name, FILE, "a new order is placed")
    return Saved.from_json(doc) if doc else None


def save(store: Store, name: str, order: Saved) -> None:
    # not synced: lost with the machine, the next run places a new order (as before)
    store.write_json(STAGING, name, FILE, order.to_json(), durable=False)


def remove(store: Store, name: str) -> None:
    store.remove(STAGING, name, FILE)


def stale(staged_md: dict[str, Any] | None, md: ManagedDomain, ca_url: str) -> str | None:
    """Why what an earlier run left in staging/ (its order, the keys and certificates of
    its key types done) is not for this run: its md.json names other domains, another CA
    or another profile. None when it may go on. (mod_md resets staging when the MD's
    configuration is newer than it, or its CA changed.)"""
    if staged_md is None:
        return "no staged md.json says what it was for"
    domains = staged_md.get("domains")
    if not isinstance(domains, list) or {str(d).lower() for d in domains} != \
            {d.lower() for d in md.domains}:
        return "the MD's domains changed"
    ca = staged_md.get("ca") if isinstance(staged_md.get("ca"), dict) else {}
    if ca.get("url") != ca_url:
        return f"it was for the CA {ca.get('url') or '(none)'}, this run uses {ca_url}"
    if (staged_md.get("profile") or None) != (md.profile or None):
        return "the MD's MDProfile changed"
    return None


def staged_account(staged_md: dict[str, Any] | None) -> str | None:
    ca = (staged_md or {}).get("ca")
    acct = ca.get("account") if isinstance(ca, dict) else None
    return acct if isinstance(acct, str) and acct else None
