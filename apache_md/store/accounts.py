"""ACME accounts in the store (`accounts/ACME-<host>-NNNN/`, formats §3.7): their ids,
and accounts that come staged with a certificate. Using them is ca/accounts.py's.

An id is `ACME-<host>-NNNN`, `<host>` the last 16 characters of the CA's host name,
NNNN the first free number (mod_md's mk_acct_id).
"""
from __future__ import annotations

from urllib.parse import urlparse

from . import broken
from .fs import ACCOUNTS, STAGING, Store, StoreError
from .locks import store_lock

SECRET_MODE = 0o600  # account.json with an EAB hmac (mod_md leaves it 0644, in clear)


def free_id(store: Store, ca_url: str) -> str:
    host = urlparse(ca_url).hostname or "unknown"
    prefix = f"ACME-{host[-16:]}-"
    taken = set(store.names(ACCOUNTS))
    for n in range(1000):
        cand = f"{prefix}{n:04d}"
        if cand not in taken:
            return cand
    raise StoreError(f"no free account id for {ca_url}")


def save_staged(store: Store, md_name: str) -> str | None:
    """The account staged with an MD's set, saved into accounts/ (mod_md registers an
    account during a renewal and saves it at activation, §3.10 step 3): under the id of
    the account with the same URL, or a free one. Its id; None when none is staged."""
    doc = broken.read_json(store, STAGING, md_name, "account.json",
                           "the account staged with the set is not saved")
    pem = store.read_bytes(STAGING, md_name, "account.pem")
    if not doc or not pem or not isinstance(doc.get("url"), str) \
            or not isinstance(doc.get("ca-url"), str):
        return None
    with store_lock(store, ACCOUNTS):
        for acct_id in store.names(ACCOUNTS):
            try:
                known = store.read_json(ACCOUNTS, acct_id, "account.json") or {}
            except StoreError:
                continue
            if known.get("url") == doc["url"]:
                return acct_id
        acct_id = free_id(store, doc["ca-url"])
        store.write_bytes(ACCOUNTS, acct_id, "account.pem", pem)  # encrypted, as staged
        store.write_json(ACCOUNTS, acct_id, "account.json", doc,
                         mode=SECRET_MODE if "eab" in doc else None)
    return acct_id
