"""Per-CA counters for the metrics: failed requests and renewal outcomes.

Prometheus counters must survive restarts of the worker, and `apache-md
renew` counts too, so they live in the store (`status/counters/ca-stats.json`, small,
rewritten atomically under a lock): {"<directory url>": {"request-failures": n,
"renewals": n, "renewal-failures": n, "last-failure": <ts>, "last-problem": ...}}.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..core.job import now_utc
from ..core.jsonfmt import http_date
from . import broken
from .fs import STATUS, Store
from .locks import store_lock

log = logging.getLogger(__name__)
GROUP, NAME, FILE = STATUS, "counters", "ca-stats.json"
COUNTERS = ("request-failures", "renewals", "renewal-failures")


def load(store: Store) -> dict[str, dict[str, Any]]:
    """The counters per CA url; an unreadable file counts as empty (a counter reset)."""
    doc = broken.read_json(store, GROUP, NAME, FILE, "the counters start from zero") or {}
    return {url: entry for url, entry in doc.items()
            if isinstance(url, str) and isinstance(entry, dict)}


def record(store: Store, ca_url: str, *, request_failed: bool = False,
           renewed: bool | None = None, problem: str | None = None,
           when: datetime | None = None) -> None:
    """Count one outcome. Never raises: statistics must not break a renewal."""
    if not ca_url:
        return
    try:
        with store_lock(store, "ca-stats", timeout=10):
            doc = load(store)
            entry = doc.setdefault(ca_url, {})
            for key in COUNTERS:
                if not isinstance(entry.get(key), int):
                    entry[key] = 0
            if request_failed:
                entry["request-failures"] += 1
                entry["last-failure"] = http_date(when or now_utc())
                if problem:
                    entry["last-problem"] = problem
            if renewed is True:
                entry["renewals"] += 1
            elif renewed is False:
                entry["renewal-failures"] += 1
            store.write_json(GROUP, NAME, FILE, doc)
    except Exception as e:  # noqa: BLE001 - see docstring
        log.warning("cannot update CA statistics: %s", e)
