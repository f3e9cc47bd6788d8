"""OCSP responses in the store: which certificates are stapled and what is kept for them.

For each stapled certificate (MDs with MDStapling on; with MDStapleOthers also
the SSLCertificateFile certificates no MD manages, kept under the name
"other", as mod_md does) a verified response lives in
`ocsp/<md>/ocsp-<sha1>.json` and the fetching job in `ocsp/<md>/job.json`.
This module reads them for the stapler (ca/stapler.py, which refreshes them
over the network), for md-status and for the relay's index; it never talks
to a responder.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any


from ..core import ocsp
from ..core.crypto import CertInfo
from ..core.job import Job
from ..core.jsonfmt import http_date, period, put
from ..core.model import Config, GlobalSettings, ManagedDomain, VHost
from . import broken, credentials, jobs
from .fs import DOMAINS, OCSP, Store

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)

OTHER = "other"  # mod_md's name for certificates of no MD (MD_OTHER)
MIN_SPACING = timedelta(seconds=60)  # see refresh_at


# -- what is stapled ------------------------------------------------------------------------

# Issuer lookups verify a signature: remember them per certificate id.
_issuers: dict[str, x509.Certificate | None] = {}


@dataclass
class Target:
    """One certificate to staple."""

    md: str  # MD name, or "other"
    label: str  # key type ("rsa", "secp256r1"), or the certificate file
    cert: x509.Certificate
    issuer: x509.Certificate | None
    id: str  # lowercase hex SHA-1 of the DER
    url: str | None
    proxy: str | None = None
    proxy_ca: str | None = None

    @property
    def file(self) -> str:
        return f"ocsp-{self.id}.json"

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "X")


def _target(md: str, label: str, chain: list[x509.Certificate] | None,
            proxy: str | None, proxy_ca: str | None) -> Target | None:
    if not chain:
        return None
    cid = ocsp.cert_id(chain[0])
    if cid not in _issuers:
        _issuers[cid] = ocsp.issuer_in(chain)
    return Target(md, label, chain[0], _issuers[cid], cid, ocsp.responder_url(chain[0]),
                  proxy, proxy_ca)


def stapled(md: ManagedDomain) -> bool:
    """mod_md staples an MD's certificates when it has MDStapling on and mod_ssl serves them."""
    return md.stapling and bool(md.ssl_vhosts)


def md_targets(store: Store, md: ManagedDomain) -> list[Target]:
    """The MD's active certificates."""
    if md.is_static:
        chains = [(str(i), credentials.file_chain(f)) for i, f in enumerate(md.cert_files)]
    else:
        chains = [(s.name, credentials.chain(store, DOMAINS, md.name, s)) for s in md.keyspecs]
    out = [_target(md.name, label, ch, md.proxy_url, md.proxy_ca_certs) for label, ch in chains]
    return [t for t in out if t]


def _staples_others(vh: VHost, settings: GlobalSettings) -> bool:
    on = vh.stapling if vh.stapling is not None else settings.stapling
    return bool(on and settings.staple_others)


def other_targets(store: Store, config: Config) -> list[Target]:
    """Certificates in SSLCertificateFile lines that no MD manages (MDStapleOthers)."""
    assigned = {id(v) for md in config.mds for v in md.vhosts}
    managed = {f for md in config.mds for f in md.cert_files}
    base = str(store.base) + os.sep
    out, seen = [], set()
    for vh in config.vhosts:
        if not vh.ssl or id(vh) in assigned or not _staples_others(vh, config.settings):
            continue
        for f in vh.cert_files:
            if f in managed or f.startswith(base) or f in seen:
                continue  # our own includes point into the store
            seen.add(f)
            t = _target(OTHER, f, credentials.file_chain(f), config.settings.proxy_url,
                        config.settings.proxy_ca_certs)
            if t and t.id not in {o.id for o in out}:
                out.append(t)
    return out


def targets(store: Store, config: Config) -> list[Target]:
    out = []
    for md in config.mds:
        if stapled(md):
            out += md_targets(store, md)
    return out + other_targets(store, config)


# -- stored responses and jobs -----------------------------------------------------------------

def load(store: Store, md: str, cid: str) -> tuple[ocsp.Stored | None, datetime | None]:
    """The stored response for a certificate id and when it was stored (file mtime)."""
    path = store.path(OCSP, md, f"ocsp-{cid}.json")
    obj = broken.read_json(store, OCSP, md, path.name, "the response is fetched again",
                           md if md != OTHER else None)
    try:
        mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc) if obj else None
    except OSError:  # removed meanwhile
        return None, None
    return ocsp.from_json(obj), mtime


def refresh_at(stored: ocsp.Stored | None, fetched: datetime | None,
               settings: GlobalSettings) -> datetime | None:
    """When to ask again: once less than MDStaplingRenewWindow of the response's validity is
    left. A responder whose answers arrive already inside that window is not asked again
    sooner than a tenth of the time they have left (at most MIN_SPACING). None: ask now."""
    if not stored or not stored.valid_from or not stored.valid_until or not fetched:
        return None
    start = settings.stapling_renew_window.start(stored.valid_from, stored.valid_until)
    spacing = min(MIN_SPACING, max(timedelta(seconds=1), (stored.valid_until - fetched) / 10))
    return max(start, fetched + spacing)


def cleanup(store: Store, keep: float, in_use: set[tuple[str, str]], now: datetime) -> None:
    """Remove responses of certificates no longer stapled once older than MDStaplingKeepResponse."""
    limit = (now - timedelta(seconds=keep)).timestamp()
    for md in store.names(OCSP):
        try:
            files = list(store.dir(OCSP, md).glob("ocsp-*.json"))
        except OSError:
            continue
        for f in files:
            try:
                if (md, f.name) not in in_use and f.stat().st_mtime < limit:
                    f.unlink()
                    log.info("%s: removed old OCSP response %s", md, f.name)
            except OSError:
                continue


# -- what status and the relay see -----------------------------------------------------------

def cert_ocsp_json(store: Store, md: ManagedDomain, info: CertInfo, settings: GlobalSettings,
                   job: dict[str, Any] | None) -> dict[str, Any]:
    """md-status `cert.<key>.ocsp`: status and valid as mod_md, plus when it was fetched and
    when it is refreshed next (apache-md extras)."""
    obj: dict[str, Any] = {}
    if info.ocsp_url and info.sha1:
        s, fetched = load(store, md.name, info.sha1)
        obj["status"] = s.status if s else ocsp.UNKNOWN
        if s:
            put(obj, "valid", period(s.valid_from, s.valid_until))
            put(obj, "fetched", http_date(fetched))
            put(obj, "refresh-at", http_date(refresh_at(s, fetched, settings)))
        obj["responder"] = info.ocsp_url
    if job is not None:
        obj["renewal"] = job
    return obj


def add_status(cert_obj: dict[str, Any], store: Store, md: ManagedDomain,
               active: dict[str, CertInfo | None], settings: GlobalSettings | None,
               with_log: bool = True) -> None:
    """Put `ocsp` into each active certificate of an md-status `cert` object."""
    if not md.stapling:
        return
    settings = settings or GlobalSettings()
    found = jobs.find(store, OCSP, md.name)
    job = None
    if found is not None:
        job = found.to_json(with_log=with_log)
        job.pop("ca-index", None)
    for name, info in active.items():
        if info and name in cert_obj:
            o = cert_ocsp_json(store, md, info, settings, job)
            if o:  # mod_md: nothing for a certificate it cannot staple and no job yet
                cert_obj[name]["ocsp"] = o


def relay_index(ts: list[Target]) -> dict[str, str]:
    """mod_ssl's request -> stored response file: "<issuer key hash>:<serial>" -> "<md>/<file>"."""
    return {ocsp.relay_key(ocsp.key_hash(t.issuer), t.cert.serial_number): f"{t.md}/{t.file}"
            for t in ts if t.issuer is not None and t.url}


def rows(store: Store, ts: list[Target], settings: GlobalSettings) -> list[dict[str, Any]]:
    """One row per stapled certificate (mod_md's "Managed Staplings" table), for status pages
    and metrics."""
    loaded: dict[str, Job | None] = {}
    out = []
    for t in ts:
        s, fetched = load(store, t.md, t.id)
        if t.md not in loaded:
            loaded[t.md] = jobs.find(store, OCSP, t.md)
        job = loaded[t.md]
        row: dict[str, Any] = {"md": t.md, "certificate": t.label, "id": t.id,
                               "serial": t.serial, "status": s.status if s else ocsp.UNKNOWN}
        put(row, "responder", t.url)
        if t.url is None:
            row["skipped"] = "no OCSP responder URL in the certificate"
        elif t.issuer is None:
            row["skipped"] = "issuer certificate not in the chain"
        if s:
            put(row, "valid", period(s.valid_from, s.valid_until))
            put(row, "fetched", http_date(fetched))
            put(row, "refresh-at", http_date(refresh_at(s, fetched, settings)))
        if job is not None:
            row["errors"] = job.errors
            put(row, "next-run", http_date(job.next_run))
            if job.errors and job.last:
                put(row, "last-error", job.last.get("detail"))
        out.append(row)
    return out
