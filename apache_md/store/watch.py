"""Monitoring state of an MD between renewal runs (`<store>/watch/<md>/`).

mod_md keeps everything in the staging job, which exists only while a
renewal runs and is purged at activation. What must outlive that lives here:
- `ari.json`: the CA's renewalInfo answers per certificate (core/schedule.py's entries);
- `job.json` (read and written by store/jobs.py): a job in mod_md's format whose
  log holds the `message-<reason>` entries of messages sent outside a renewal run
  (`expiring`), so their rate limits survive restarts, without making md-status
  show a renewal.
"""
from __future__ import annotations

from typing import Any

from . import broken
from .fs import WATCH, Store


def load_ari(store: Store, md_name: str) -> dict[str, dict[str, Any]]:
    doc = broken.read_json(store, WATCH, md_name, "ari.json",
                           "the CA's renewalInfo is asked again") or {}
    certs = doc.get("certs")
    return {k: v for k, v in certs.items() if isinstance(v, dict)} \
        if isinstance(certs, dict) else {}


def save_ari(store: Store, md_name: str, entries: dict[str, dict[str, Any]]) -> None:
    store.write_json(WATCH, md_name, "ari.json", {"certs": entries})

