"""ACME account ids in the store (`accounts/ACME-<host>-NNNN/`, formats §3.7).

`<host>` is the last 16 characters of the CA's host name, NNNN the first free
number (mod_md's mk_acct_id). The accounts themselves are ca/accounts.py's.
"""
from __future__ import annotations

from urllib.parse import urlparse

from .fs import ACCOUNTS, Store, StoreError


def free_id(store: Store, ca_url: str) -> str:
    host = urlparse(ca_url).hostname or "unknown"
    prefix = f"ACME-{host[-16:]}-"
    taken = set(store.names(ACCOUNTS))
    for n in range(1000):
        cand = f"{prefix}{n:04d}"
        if cand not in taken:
            return cand
    raise StoreError(f"no free account id for {ca_url}")
