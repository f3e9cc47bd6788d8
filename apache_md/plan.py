"""Which MDs to drive now, and when to look again: pure decisions over the store."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import credentials
from .drive import load_job
from .model import Config, ManagedDomain
from .schedule import renew_at, renewal_due, should_warn
from .status import will_renew
from .store import STAGING, Store


@dataclass
class Decision:
    md: ManagedDomain
    drive: bool
    reason: str
    next_run: datetime | None = None  # an earlier wake-up the job asks for
    warn: bool = False  # inside the warn window: send `expiring`
    staged_waiting: bool = False  # finished, waiting for activation
    renew_at: datetime | None = None  # when the renew window opens


def decide(store: Store, md: ManagedDomain, now: datetime, force: bool = False) -> Decision:
    active = credentials.active(store, md)
    warn = should_warn(md, active, now)
    if not will_renew(md):
        return Decision(md, False, "not renewed (renew mode or no vhost)", warn=warn)
    job = load_job(store, md.name) if store.exists(STAGING, md.name, "job.json") else None
    if job and job.finished and credentials.staged_complete(store, md):
        # A complete set waits for activation (or for its `renewed` message): never re-order it.
        return Decision(md, False, "staged, waiting for activation", job.next_run,
                        warn=warn, staged_waiting=True)
    reason = "forced" if force else renewal_due(md, active, now)
    if reason is None:
        return Decision(md, False, "certificate valid", warn=warn,
                        renew_at=renew_at(md, active, now))
    if job and job.next_run and job.next_run > now and not force:
        return Decision(md, False, f"waiting to retry ({reason})", job.next_run, warn=warn)
    return Decision(md, True, reason, warn=warn)


def plan(store: Store, config: Config, now: datetime, force: bool = False,
         names: list[str] | None = None) -> list[Decision]:
    mds = [m for m in config.mds if not names or m.name in names]
    return [decide(store, md, now, force) for md in mds]
