"""Credential sets: the pubcert/privkey pairs of an MD, active or staged.

Parsing a certificate costs far more than a stat(), so parsed results are
cached per path and changes.stamp() (inode, size, mtime, ctime): a check cycle
over a thousand unchanged certificates parses nothing, and a file copied over
with its old mtime and size is still read anew.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import crypto
from ..core.crypto import CertInfo
from ..core.model import KeySpec, ManagedDomain, RenewMode
from . import broken, certcache, changes
from .fs import DOMAINS, STAGING, Store, StoreError

if TYPE_CHECKING:
    from cryptography import x509

# path: (hash of its stamp, info, chain): the chain only once someone asked for it (OCSP, ARI):
# parsed certificate objects of a thousand MDs were a tenth of the worker's memory.
_cache: dict[str, tuple[int, CertInfo, list[x509.Certificate] | None]] = {}
_cache_lock = threading.Lock()
_stored_ca: dict[str, tuple[int, dict]] = {}  # md.json path: (hash of its stamp, ca)


def _load(path: str | Path, want_chain: bool = False
          ) -> tuple[CertInfo, list[x509.Certificate] | None] | None:
    key = os.fspath(path)
    try:
        st = os.stat(key)
    except OSError:
        return None
    stamp = changes.stamp(st)
    h = hash(stamp)  # what is kept: the tuples of 10,000 MDs were megabytes
    with _cache_lock:
        hit = _cache.get(key)
    if hit and hit[0] == h and (hit[2] is not None or not want_chain):
        return hit[1], hit[2]
    data: list[bytes] = []

    def read() -> bytes:
        if not data:
            with open(key, "rb") as f:
                data.append(f.read())
        return data[0]
    try:
        # as a previous run of the worker found it: no parsing, no `cryptography`
        info = None if want_chain else certcache.cert(key, stamp, read)
        if info is not None:
            with _cache_lock:
                _cache[key] = (h, info, None)
            return info, None
        chain = crypto.load_chain(read())
    except (OSError, crypto.CryptoError):
        return None
    if not chain:
        return None
    info = hit[1] if hit and hit[0] == h else crypto.cert_info(chain[0])
    certcache.put_cert(key, stamp, read(), info)
    with _cache_lock:
        _cache[key] = (h, info, chain if want_chain else None)
    return info, chain


def chain(store: Store, group: str, md_name: str, spec: KeySpec) -> list[x509.Certificate] | None:
    hit = _load(store.fspath(group, md_name, spec.file_name("pubcert")), want_chain=True)
    return hit[1] if hit else None


def info(store: Store, group: str, md_name: str, spec: KeySpec) -> CertInfo | None:
    hit = _load(store.fspath(group, md_name, spec.file_name("pubcert")))
    return hit[0] if hit else None


def infos(store: Store, group: str, md: ManagedDomain) -> dict[str, CertInfo | None]:
    """Per key-type name, the parsed leaf (None when missing or unreadable)."""
    return {s.name: info(store, group, md.name, s) for s in md.keyspecs}


def active(store: Store, md: ManagedDomain) -> dict[str, CertInfo | None]:
    if not uses_managed(store, md):
        return static_infos(md)
    return infos(store, DOMAINS, md)


def managed_complete(store: Store, group: str, md: ManagedDomain) -> bool:
    return all(store.exists(group, md.name, s.file_name("privkey"))
               and store.exists(group, md.name, s.file_name("pubcert"))
               for s in md.keyspecs)


def uses_managed(store: Store, md: ManagedDomain) -> bool:
    """Whether the MD is served (and judged) by certificates in domains/.

    Static MDs (MDCertificateFile) use their files; with `MDRenewMode always`
    they are renewed, and the managed set takes over once it is complete, so
    a migration from static files ends instead of renewing forever (mod_md #163).
    """
    if not md.is_static:
        return True
    return md.renew_mode == RenewMode.ALWAYS and managed_complete(store, DOMAINS, md)


# What follows when domains/<md>/md.json does not parse (it is set aside).
MD_JSON_BROKEN = ("it is written again from the configuration; the CA of the live "
                  "certificate is no longer known")


CA_KEYS = ("url", "account")  # what readers of stored_ca() use


def stored_ca(store: Store, md: ManagedDomain) -> dict:
    """The "ca" object of domains/<md>/md.json, its CA_KEYS ({} when absent or
    unreadable)."""
    # Asked for every MD and cycle: cached while the file's stat is unchanged (every
    # store write replaces the file, so its inode changes).
    path = store.fspath(DOMAINS, md.name, "md.json")
    try:
        st = os.stat(path)
        stamp = hash(changes.stamp(st))
    except OSError:
        stamp = None
    hit = _stored_ca.get(path)
    if hit is not None and stamp is not None and hit[0] == stamp:
        return hit[1]
    doc = broken.read_json(store, DOMAINS, md.name, "md.json", MD_JSON_BROKEN) or {}
    return remember_md_json(path, stamp, doc)


def remember_md_json(path: str, stamp: int | None, doc: dict) -> dict:
    """Keep the "ca" of md.json at `path` as read by someone under `stamp` (the hash of
    its changes.stamp taken before the read; None: not kept), and return it: the
    worker's start read every md.json twice (activation's sync, then the facts)."""
    ca = doc.get("ca") if isinstance(doc.get("ca"), dict) else {}
    # Only what is asked for, the URL shared between MDs: the whole object of every MD
    # was a tenth of the worker's memory at 10,000 MDs.
    ca = {k: sys.intern(v) for k, v in ca.items()
          if k in CA_KEYS and isinstance(v, str)}  # "account": 7 by hand is no account
    if stamp is not None:
        _stored_ca[path] = (stamp, ca)
    return ca


def issuer_url(store: Store, md: ManagedDomain) -> str | None:
    """The CA the active certificates came from (domains/<md>/md.json ca.url)."""
    url = stored_ca(store, md).get("url")
    return url if isinstance(url, str) and url else None


def staged(store: Store, md: ManagedDomain) -> dict[str, CertInfo | None]:
    return infos(store, STAGING, md)


def file_info(path: str | Path) -> CertInfo | None:
    """The leaf's summary of any PEM file, cached like the store's."""
    hit = _load(path)
    return hit[0] if hit else None


def file_chain(path: str | Path) -> list[x509.Certificate] | None:
    """The chain in any PEM file (e.g. a vhost's SSLCertificateFile), cached like the store's."""
    hit = _load(Path(path), want_chain=True)
    return hit[1] if hit else None


def static_infos(md: ManagedDomain) -> dict[str, CertInfo | None]:
    """MDCertificateFile MDs: keyed by index ("0", "1", ...) as mod_md's status does."""
    out: dict[str, CertInfo | None] = {}
    for i, f in enumerate(md.cert_files):
        hit = _load(Path(f))
        out[str(i)] = hit[0] if hit else None
    return out


def load_set(store: Store, group: str, md: ManagedDomain) -> list[tuple[KeySpec, object, list]]:
    """(spec, private key, chain) per key spec of the set in `group`, the key matching its
    certificate; StoreError naming what is missing, unreadable or mismatched."""
    where = "staged" if group == STAGING else group
    out = []
    for spec in md.keyspecs:
        key_pem = store.read_bytes(group, md.name, spec.file_name("privkey"))
        cert_pem = store.read_bytes(group, md.name, spec.file_name("pubcert"))
        if not key_pem or not cert_pem:
            raise StoreError(f"{where} set of {md.name} lacks the {spec.name} key or certificate")
        try:
            key = crypto.store_key_from_pem(key_pem, store.key)
            chain = crypto.load_chain(cert_pem)
        except (ValueError, TypeError, crypto.CryptoError) as e:
            raise StoreError(f"{where} {spec.name} set of {md.name} is unreadable: {e}") from None
        if not chain or not crypto.key_signs_for(key, chain[0]):
            raise StoreError(f"{where} {spec.name} certificate of {md.name} does not match "
                             "its key")
        out.append((spec, key, chain))
    return out


def staged_complete(store: Store, md: ManagedDomain) -> bool:
    return managed_complete(store, STAGING, md)
