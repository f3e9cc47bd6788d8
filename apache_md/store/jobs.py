"""Jobs (`job.json`) in the store, one accessor for every group that keeps one:

- `staging/<md>/job.json`: the renewal job (mod_md's; copied to `domains/<md>/` at activation);
- `watch/<md>/job.json`: the `message-<reason>` history of messages sent outside a renewal;
- `ocsp/<md>/job.json`: the OCSP fetching job (mod_md's).

A job.json that does not parse is set aside and reported (store/broken.py); the
job then starts afresh, as if there had been none.
"""
from __future__ import annotations

from ..core.job import Job
from . import broken
from .fs import DOMAINS, OCSP, STAGING, WATCH, Store

FILE = "job.json"
THEN = {STAGING: "the renewal job starts afresh",
        DOMAINS: "the time of the last renewal is no longer known",
        WATCH: "the history of sent messages starts afresh",
        OCSP: "the OCSP job starts afresh"}


def find(store: Store, group: str, name: str) -> Job | None:
    """The job in `<group>/<name>/job.json`; None when there is none (or it was broken)."""
    obj = broken.read_json(store, group, name, FILE, THEN.get(group, "the job starts afresh"))
    return None if obj is None else Job.from_json(name, obj)


def load(store: Store, group: str, name: str) -> Job:
    """The job, or a fresh one."""
    return find(store, group, name) or Job(name)


def save(store: Store, group: str, job: Job, durable: bool = True) -> None:
    """`durable` False for progress saved while a run goes on (fs.atomic_write)."""
    store.write_json(group, job.name, FILE, job.to_json(), durable=durable)
