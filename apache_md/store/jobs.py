"""Jobs (`job.json`) in the store, one accessor for every group that keeps one:

- `staging/<md>/job.json`: the renewal job (mod_md's; copied to `domains/<md>/` at activation);
- `watch/<md>/job.json`: the `message-<reason>` history of messages sent outside a renewal;
- `ocsp/<md>/job.json`: the OCSP fetching job (mod_md's).
"""
from __future__ import annotations

import logging

from ..core.job import Job
from .fs import Store, StoreError

log = logging.getLogger(__name__)
FILE = "job.json"


def exists(store: Store, group: str, name: str) -> bool:
    return store.exists(group, name, FILE)


def load(store: Store, group: str, name: str) -> Job:
    """The job in `<group>/<name>/job.json` (a fresh one when there is none); a corrupt
    file is replaced by a fresh job whose log notes the loss (the store error names the file)."""
    try:
        return Job.from_json(name, store.read_json(group, name, FILE))
    except StoreError as e:
        log.warning("%s", e)
        job = Job(name)
        job.add_log("progress", detail=f"discarded corrupt job.json: {e}")
        return job


def save(store: Store, group: str, job: Job) -> None:
    store.write_json(group, job.name, FILE, job.to_json())
