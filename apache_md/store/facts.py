"""Everything the store says about one MD (core/facts.MDFacts), read once per cycle.

A cycle over thousands of MDs asks for the same facts of each several times (plan,
activation, md-status) and finds them unchanged almost always. read() keeps the last
MDFacts of each MD with a signature of the files they came from (changes.stamp of
each: inode, size, mtime, ctime; a hash of them, not the tuples): an unchanged
signature returns the same object, so a check is a few stat() calls per MD, and a
file replaced or rewritten by hand, even with its old mtime and size, is read anew
by the next reader. Callers never change an MDFacts.
"""
from __future__ import annotations

import os
import threading
import zlib

from ..core import ocsp
from ..core.crypto import CertInfo
from ..core.facts import MDFacts
from ..core.model import Config, ManagedDomain
from . import changes, credentials, jobs, staples, watch
from .fs import DOMAINS, OCSP, STAGING, WATCH, Store

# (store base, MD name): (the MD it was read for, signature hash, facts). The MD is kept,
# so a configuration read again (new MD objects) reads again.
_cache: dict[tuple[str, str], tuple[ManagedDomain, int, MDFacts]] = {}
_lock = threading.Lock()


def read(store: Store, md: ManagedDomain) -> MDFacts:
    key = (str(store.base), md.name)
    sig = signature(store, md)
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] is md and hit[1] == sig:
        return hit[2]
    facts = _read(store, md)
    # The files may have changed while they were read: the signature taken before
    # makes the next reader read again rather than keep what was half old.
    with _lock:
        _cache[key] = (md, sig, facts)
    return facts


def _read(store: Store, md: ManagedDomain) -> MDFacts:
    managed = credentials.uses_managed(store, md)
    active = credentials.infos(store, DOMAINS, md) if managed else credentials.static_infos(md)
    job = jobs.find(store, STAGING, md.name)
    ari = watch.load_ari(store, md.name) if managed and md.ari_renewals else {}
    return MDFacts(managed=managed, active=active, ca=credentials.stored_ca(store, md), job=job,
                   staged_complete=credentials.staged_complete(store, md),
                   ari=ari, revoked=_revoked(store, md, active))


def read_all(store: Store, config: Config, names: list[str] | None = None
             ) -> dict[str, MDFacts]:
    got = {md.name: read(store, md) for md in config.mds if not names or md.name in names}
    if not names:
        forget(store, config)
    return got


def forget(store: Store, config: Config) -> None:
    """Drop what is kept of MDs that left the configuration."""
    base = str(store.base)
    wanted = {md.name for md in config.mds}
    with _lock:
        for key in [k for k in _cache if k[0] == base and k[1] not in wanted]:
            del _cache[key]


def signature_of(store: Store, md: ManagedDomain, facts: MDFacts) -> int | None:
    """The signature `facts` were read under (None: not read by read(), or since read
    again): what status/snapshot.py keeps, with the pieces made of them, for the next
    process."""
    with _lock:
        hit = _cache.get((str(store.base), md.name))
    return hit[1] if hit is not None and hit[2] is facts and hit[0] is md else None


def _stamp(path: str) -> tuple:
    try:
        return changes.stamp(os.stat(path))
    except OSError:
        return ()


def signature(store: Store, md: ManagedDomain) -> int:
    """A hash of the stamps of every file the MD's facts and its md-status object are
    made of (status/snapshot.py keeps an MD's pieces while its facts are the same
    object): the live certificates, md.json and job.json in domains/, the staging
    directory and its files, the ARI answers and, when stapled, the OCSP files."""
    out: list = []
    add = out.append
    domains = store.fsdir(DOMAINS, md.name)
    for spec in md.keyspecs:
        add(_stamp(os.path.join(domains, spec.file_name("pubcert"))))
        if md.is_static:  # the managed set takes over once complete (uses_managed)
            add(_stamp(os.path.join(domains, spec.file_name("privkey"))))
    for f in md.cert_files:
        add(_stamp(f))
    add(_stamp(os.path.join(domains, "md.json")))
    add(_stamp(os.path.join(domains, jobs.FILE)))  # md-status last-renewal
    staging = store.fsdir(STAGING, md.name)
    seen = _stamp(staging)
    add(seen)
    if seen:  # mostly absent: one stat()
        for f in (jobs.FILE, "md.json") + tuple(s.file_name(k) for s in md.keyspecs
                                               for k in ("pubcert", "privkey")):
            add(_stamp(os.path.join(staging, f)))
    if md.ari_renewals:
        add(_stamp(os.path.join(store.fsdir(WATCH, md.name), "ari.json")))
    if md.stapling:
        d = store.fsdir(OCSP, md.name)
        add(_stamp(d))
        try:
            names = sorted(os.listdir(d))
        except OSError:
            names = []
        for f in names:
            add((zlib.crc32(f.encode()), _stamp(os.path.join(d, f))))
    # Of ints and tuples alone, no str (their hash differs from one process to the next):
    # the same files give the same signature in the next process too.
    return hash(tuple(out))


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
