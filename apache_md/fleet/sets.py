"""Certificate sets and ACME accounts between a node's store and etcd.

A set is published whole as one etcd value (<prefix>/md/<md>/set): every key type's
chain, its private key sealed with the fleet key, the MD's md.json and the renewal's
job.json. Every node mirrors a set that is newer than what it serves into its own
staging/<md>/ in mod_md's layout (keys encrypted with its own store key), and its own
activation puts it live, within its own MDActivationInterval/-Window.

Which set wins: the one whose certificates expire last (newest notAfter). A node
that renewed alone while etcd was away publishes when etcd is back, and keeps the
fleet's set if it is newer (docs/cluster.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..core import crypto, jsonfmt
from ..core.job import Job, now_utc
from ..core.model import ManagedDomain
from ..store import credentials
from ..store.accounts import SECRET_MODE, free_id
from ..store.fs import ACCOUNTS, DOMAINS, STAGING, Store, StoreError
from ..store.locks import Busy, md_lock, store_lock
from . import seal
from .etcd import Etcd, KV
from .keyspace import Keyspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """A set as etcd has it."""

    doc: dict[str, Any]
    mod_revision: int

    @property
    def serials(self) -> dict[str, str]:
        return {k: v.get("serial", "") for k, v in (self.doc.get("certs") or {}).items()}

    @property
    def not_after(self) -> datetime | None:
        return _parse_time(self.doc.get("not-after"))

    @property
    def by(self) -> str:
        return str(self.doc.get("by") or "?")


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def local_serials(store: Store, group: str, md: ManagedDomain) -> dict[str, str] | None:
    """Key type -> serial of the set in `group`, None unless complete."""
    infos = credentials.infos(store, group, md)
    if not infos or any(i is None for i in infos.values()):
        return None
    return {k: i.serial for k, i in infos.items()}


def local_not_after(store: Store, group: str, md: ManagedDomain) -> datetime | None:
    infos = credentials.infos(store, group, md)
    if not infos or any(i is None for i in infos.values()):
        return None
    return min(i.not_after for i in infos.values())


# -- publishing ------------------------------------------------------------------------
def set_doc(store: Store, group: str, md: ManagedDomain, fleet_key: bytes, where: str,
            node: str) -> dict[str, Any]:
    """The set in staging/ or domains/ as the value published at `where`; StoreError
    when it is incomplete or unreadable."""
    certs, files = {}, {}
    for spec, key, chain in credentials.load_set(store, group, md):
        key_file, cert_file = spec.file_name("privkey"), spec.file_name("pubcert")
        cert_pem = store.read_bytes(group, md.name, cert_file) or b""
        info = crypto.cert_info(chain[0])
        certs[spec.name] = {"serial": info.serial, "not-after": iso(info.not_after),
                            "key": key_file, "cert": cert_file}
        files[cert_file] = cert_pem.decode()
        files[key_file] = seal.seal(fleet_key, crypto.key_to_pem(key), f"{where}/{key_file}")
    md_json = store.read_json(group, md.name, "md.json")
    job = store.read_json(group, md.name, "job.json") if group == STAGING else None
    not_after = min(_parse_time(c["not-after"]) for c in certs.values())
    return {"md": md.name, "certs": certs, "files": files, "md.json": md_json, "job": job,
            "not-after": iso(not_after), "by": node,
            "at": iso(now_utc())}


def read_published(etcd: Etcd, ks: Keyspace, name: str) -> Published | None:
    kv = etcd.get(ks.md_set(name))
    return _published(kv) if kv else None


def read_all_published(etcd: Etcd, ks: Keyspace) -> dict[str, Published]:
    """Every MD's published set, by MD name, in one request."""
    out = {}
    for kv in etcd.get_prefix(ks.mds()):
        if kv.key.endswith("/set"):
            p = _published(kv)
            if p is not None:
                out[str(p.doc.get("md"))] = p
    return out


def _published(kv: KV) -> Published | None:
    try:
        doc = json.loads(kv.value)
    except ValueError:
        log.error("etcd %s: not JSON, ignored", kv.key)
        return None
    return Published(doc, kv.mod_revision) if isinstance(doc, dict) else None


def publish(etcd: Etcd, ks: Keyspace, store: Store, group: str, md: ManagedDomain,
            fleet_key: bytes, node: str) -> str:
    """Publish the set in `group` unless etcd has a set that expires as late or later
    (the newest notAfter wins). Returns what happened, for the log."""
    where = ks.md_set(md.name)
    doc = set_doc(store, group, md, fleet_key, where, node)
    for _ in range(5):  # lost a race to another publisher: look again
        there = read_published(etcd, ks, md.name)
        if there is not None:
            if there.serials == {k: c["serial"] for k, c in doc["certs"].items()}:
                return "already published"
            if there.not_after and there.not_after >= _parse_time(doc["not-after"]):
                return f"kept the fleet's set from {there.by} (it expires later)"
        if etcd.replace(where, jsonfmt.dumps(doc), there.mod_revision if there else 0):
            return "published"
    return "not published (etcd changed under it five times)"


# -- mirroring -------------------------------------------------------------------------
def wanted(store: Store, md: ManagedDomain, pub: Published) -> bool:
    """Whether `pub` should be staged here: not what is live or staged already, and
    expiring later than the live set."""
    serials = pub.serials
    if set(serials) != {s.name for s in md.keyspecs}:
        return False  # other key types (configs differ between nodes): not ours to take
    if serials in (local_serials(store, DOMAINS, md), local_serials(store, STAGING, md)):
        return False
    live = local_not_after(store, DOMAINS, md)
    return live is None or (pub.not_after is not None and pub.not_after > live)


def stage(store: Store, md: ManagedDomain, pub: Published, fleet_key: bytes,
          where: str) -> bool:
    """Write the published set into staging/<md>/ (False when a drive of the MD on this
    node holds its lock). Raises SealError/StoreError for a set that cannot be used."""
    files = pub.doc.get("files") or {}
    certs = pub.doc.get("certs") or {}
    plain = {}
    for spec in md.keyspecs:
        c = certs.get(spec.name) or {}
        sealed, cert = files.get(c.get("key", "")), files.get(c.get("cert", ""))
        if not isinstance(sealed, str) or not isinstance(cert, str):
            raise StoreError(f"{where}: the {spec.name} key or certificate is missing")
        key_pem = seal.unseal(fleet_key, sealed, f"{where}/{c['key']}")
        key = crypto.store_key_from_pem(key_pem)
        chain = crypto.load_chain(cert.encode())
        if not chain or not crypto.key_signs_for(key, chain[0]):
            raise StoreError(f"{where}: the {spec.name} key does not match its certificate")
        plain[spec] = (crypto.key_to_pem(key, store.key), cert.encode())
    try:
        with md_lock(store, md.name, timeout=0):
            store.purge(STAGING, md.name)
            for spec, (key_pem, cert_pem) in plain.items():
                store.write_bytes(STAGING, md.name, spec.file_name("privkey"), key_pem, mode=0o600)
                store.write_bytes(STAGING, md.name, spec.file_name("pubcert"), cert_pem)
            md_json = pub.doc.get("md.json")
            if isinstance(md_json, dict):
                store.write_json(STAGING, md.name, "md.json", md_json,
                                 mode=SECRET_MODE if md.eab_hmac else None)
            job = Job.from_json(md.name, pub.doc.get("job")) if pub.doc.get("job") else None
            if job is not None and job.finished:
                job.add_log("progress", detail=f"certificates from fleet node {pub.by}")
                store.write_json(STAGING, md.name, "job.json", job.to_json())
    except Busy:
        return False
    return True


# -- accounts --------------------------------------------------------------------------
def account_slot(url: str) -> str:
    """An account's name in etcd: from its URL, the same on every node."""
    return hashlib.sha256(url.encode()).hexdigest()[:24]


def publish_account(etcd: Etcd, ks: Keyspace, store: Store, acct_id: str, fleet_key: bytes,
                    node: str) -> bool:
    doc = store.read_json(ACCOUNTS, acct_id, "account.json")
    pem = store.read_bytes(ACCOUNTS, acct_id, "account.pem")
    if not doc or not pem or not isinstance(doc.get("url"), str):
        return False
    where = ks.account(account_slot(doc["url"]))
    if etcd.get(where) is not None:
        return False
    key = crypto.key_from_pem_cached(pem, store.key)
    value = {"id": acct_id, "account.json": doc, "by": node,
             "account.pem": seal.seal(fleet_key, crypto.key_to_pem(key), f"{where}/account.pem")}
    return etcd.replace(where, jsonfmt.dumps(value), 0)


def mirror_accounts(etcd: Etcd, ks: Keyspace, store: Store, fleet_key: bytes) -> list[str]:
    """Accounts etcd has and this store lacks (by URL), saved into accounts/: a node
    renewing an MD uses the fleet's account instead of registering its own."""
    known = set()
    for acct_id in store.names(ACCOUNTS):
        try:
            doc = store.read_json(ACCOUNTS, acct_id, "account.json") or {}
        except StoreError:
            continue
        known.add(doc.get("url"))
    added = []
    for kv in etcd.get_prefix(ks.accounts()):
        try:
            value = json.loads(kv.value)
            doc, sealed = value["account.json"], value["account.pem"]
            url = doc["url"]
        except (ValueError, KeyError, TypeError):
            log.error("etcd %s: not an account, ignored", kv.key)
            continue
        if url in known:
            continue
        key = crypto.key_from_pem(seal.unseal(fleet_key, sealed, f"{kv.key}/account.pem"))
        with store_lock(store, ACCOUNTS):
            acct_id = value.get("id") if isinstance(value.get("id"), str) else None
            if not acct_id or acct_id in store.names(ACCOUNTS):
                acct_id = free_id(store, str(doc.get("ca-url", "")))
            secret = isinstance(doc.get("eab"), dict) and doc["eab"].get("hmac")
            store.write_json(ACCOUNTS, acct_id, "account.json", doc,
                             mode=SECRET_MODE if secret else None)
            store.write_bytes(ACCOUNTS, acct_id, "account.pem",
                              crypto.key_to_pem(key, store.key), mode=0o600)
        known.add(url)
        added.append(acct_id)
    return added
