"""Everything the store says about one MD (core/facts.MDFacts), read once per cycle."""
from __future__ import annotations

from ..core import ocsp
from ..core.crypto import CertInfo
from ..core.facts import MDFacts
from ..core.model import Config, ManagedDomain
from . import credentials, jobs, staples, watch
from .fs import DOMAINS, STAGING, Store


def read(store: Store, md: ManagedDomain) -> MDFacts:
    managed = credentials.uses_managed(store, md)
    active = credentials.infos(store, DOMAINS, md) if managed else credentials.static_infos(md)
    job = jobs.find(store, STAGING, md.name)
    ari = watch.load_ari(store, md.name) if managed and md.ari_renewals else {}
    return MDFacts(managed=managed, active=active, ca=credentials.stored_ca(store, md), job=job,
                   staged_complete=credentials.staged_complete(store, md),
                   ari=ari, revoked=_revoked(store, md, active))


def read_all(store: Store, config: Config, names: list[str] | None = None
             ) -> dict[str, MDFacts]:
    return {md.name: read(store, md) for md in config.mds if not names or md.name in names}


def _revoked(store: Store, md: ManagedDomain, active: dict[str, CertInfo | None]) -> list[str]:
    """Key types whose live certificate OCSP says is revoked (mod_md md_reg_has_revoked_certs)."""
    if not md.stapling:
        return []
    out = []
    for name, info in active.items():
        if info and info.sha1:
            s, _ = staples.load(store, md.name, info.sha1)
            if s and s.status == ocsp.REVOKED:
                out.append(name)
    return out
