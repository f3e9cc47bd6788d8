"""The order a renewer has under way, shared: the node that takes a dead renewer's MD
over goes on with its order (ca/orders.py) instead of placing another, so the CA sees
one order per MD.

The renewer puts `<prefix>/orders/<md>` when it places an order and when it stages the
key it finalizes with: its order.json, its staging md.json (the CA, the account's URL),
the staged private keys sealed with the fleet key; the account itself goes to
`<prefix>/accounts/` at the same time. It is not bound to a lease: it must outlive the
renewer. A node that takes the MD's lock writes it into its own staging/<md>/, the
account by its local id, keys encrypted with its own store key. The key goes when the
order is done with (after the run: no order.json left in staging/).
"""
from __future__ import annotations

import json
import logging
from typing import Any

from ..core import crypto, jsonfmt
from ..core.model import ManagedDomain
from ..store.accounts import SECRET_MODE
from ..store.fs import ACCOUNTS, STAGING, Store, StoreError
from ..store.locks import Busy, md_lock
from . import seal, sets
from .etcd import Etcd
from .keyspace import Keyspace

log = logging.getLogger(__name__)
ORDER = "order.json"


def _account_url(store: Store, acct_id: str | None) -> str | None:
    if not acct_id:
        return None
    doc = store.read_json(ACCOUNTS, acct_id, "account.json") or {}
    url = doc.get("url")
    return url if isinstance(url, str) else None


def publish(etcd: Etcd, ks: Keyspace, store: Store, md: ManagedDomain, fleet_key: bytes,
            node: str) -> bool:
    """Put the order in staging/ (False when there is none)."""
    order = store.read_json(STAGING, md.name, ORDER)
    md_json = store.read_json(STAGING, md.name, "md.json")
    if not order or not md_json:
        return False
    where = ks.order(md.name)
    acct_id = (md_json.get("ca") or {}).get("account")
    url = _account_url(store, acct_id)
    if url:
        sets.publish_account(etcd, ks, store, acct_id, fleet_key, node)
    keys = {}
    for spec in md.keyspecs:
        f = spec.file_name("privkey")
        pem = store.read_bytes(STAGING, md.name, f)
        if pem:
            key = crypto.store_key_from_pem(pem, store.key)
            keys[f] = seal.seal(fleet_key, crypto.key_to_pem(key), f"{where}/{f}")
    etcd.put(where, jsonfmt.dumps({"md": md.name, "order.json": order, "md.json": md_json,
                                   "account-url": url, "keys": keys, "by": node}))
    return True


def forget(etcd: Etcd, ks: Keyspace, name: str) -> None:
    etcd.delete(ks.order(name))


def adopt(etcd: Etcd, ks: Keyspace, store: Store, md: ManagedDomain, fleet_key: bytes) -> str:
    """Write the fleet's order for `md` into staging/ unless staging has it already; what
    happened, for the log ("" when nothing). Raises SealError, StoreError, EtcdError."""
    kv = etcd.get(ks.order(md.name))
    if kv is None:
        return ""
    try:
        doc: dict[str, Any] = json.loads(kv.value)
        order, md_json = doc["order.json"], doc["md.json"]
        url = order["url"]
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"etcd {kv.key}: not an order") from None
    mine = store.read_json(STAGING, md.name, ORDER) or {}
    if mine.get("url") == url:
        return ""
    acct_id = _local_account(etcd, ks, store, doc.get("account-url"), fleet_key)
    if doc.get("account-url") and acct_id is None:
        return f"the order of node {doc.get('by')} is not continued: its account is not here"
    keys = {}
    for f, sealed in (doc.get("keys") or {}).items():
        if f in {s.file_name("privkey") for s in md.keyspecs}:
            pem = seal.unseal(fleet_key, sealed, f"{kv.key}/{f}")
            keys[f] = crypto.key_to_pem(crypto.store_key_from_pem(pem), store.key)
    md_json = dict(md_json)
    md_json["ca"] = {**(md_json.get("ca") or {}), "account": acct_id}
    try:
        with md_lock(store, md.name, timeout=0):
            for spec in md.keyspecs:  # the key types this node staged are not the order's
                store.remove(STAGING, md.name, spec.file_name("privkey"))
                store.remove(STAGING, md.name, spec.file_name("pubcert"))
            for f, pem in keys.items():
                store.write_bytes(STAGING, md.name, f, pem, mode=0o600)
            store.write_json(STAGING, md.name, "md.json", md_json,
                             mode=SECRET_MODE if md.eab_hmac else None)
            store.write_json(STAGING, md.name, ORDER, order)
    except Busy:
        return ""
    return f"took over the order {url} of node {doc.get('by')}"


def _local_account(etcd: Etcd, ks: Keyspace, store: Store, url: Any,
                   fleet_key: bytes) -> str | None:
    """This store's id of the account at `url`, mirrored from etcd if need be."""
    if not isinstance(url, str):
        return None
    for attempt in (1, 2):
        for acct_id in store.names(ACCOUNTS):
            if _account_url(store, acct_id) == url:
                return acct_id
        if attempt == 1:
            sets.mirror_accounts(etcd, ks, store, fleet_key)
    return None
