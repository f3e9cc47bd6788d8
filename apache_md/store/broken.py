"""Store files that cannot be used: named once, set aside, and shown in md-status.

A file that does not parse is moved next to itself as `<file>.broken.<n>` (kept for
inspection, never deleted) and its reader goes on as if it were absent: a job starts
afresh, an ARI answer or an OCSP response is fetched again, an account is registered
anew, md.json is written again from the configuration. A file that cannot be read
at all (permissions) stays where it is. Either way the log names the file once
(not at every wake-up), and `status/store/broken.json` records it for md-status,
which shows what happened during the last week (`broken-files`, per MD and for the
store as a whole).
"""
from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..core.job import now_utc
from ..core.jsonfmt import http_date, parse_http_date
from .fs import DOMAINS, OCSP, STAGING, STATUS, WATCH, CorruptFile, Store, StoreError
from .locks import store_lock

log = logging.getLogger(__name__)
RECORD = (STATUS, "store", "broken.json")
SHOWN = timedelta(days=7)  # how long md-status lists a broken file
KEEP = 100  # entries kept in the record
MD_GROUPS = (DOMAINS, STAGING, WATCH, OCSP)  # groups whose directories are named for an MD

_reported: set[tuple[str, str]] = set()  # problems left in place, logged once per process
_reported_lock = threading.Lock()


def read_json(store: Store, group: str, name: str, file: str, then: str,
              md: str | None = None) -> dict[str, Any] | None:
    """store.read_json, with a broken file set aside and reported instead of raised.

    `then` says what follows for the reader ("the job starts afresh"); `md` is the
    MD the file belongs to when its directory does not say (accounts)."""
    md = md or (name if group in MD_GROUPS else None)
    try:
        return store.read_json(group, name, file)
    except CorruptFile as e:
        set_aside(store, e.path, e.problem, then, md, e.seen)
    except StoreError as e:
        unreadable(store, store.path(group, name, file), e, then, md)
    return None


def unreadable(store: Store, path: Path, error: StoreError, then: str,
               md: str | None = None) -> None:
    """A file that is there but cannot be read (permissions): reported once, left alone."""
    report(store, path, str(error).removeprefix(f"{path}: "), f"left in place; {then}", md,
           once=True)


def set_aside(store: Store, path: Path, problem: str, then: str, md: str | None = None,
              seen: tuple | None = None) -> Path | None:
    """Move a broken file aside (Store.set_aside) and report it; None when another
    process replaced or moved it first (then there is nothing to report)."""
    try:
        aside = store.set_aside(path, seen)
    except (OSError, StoreError) as e:
        report(store, path, problem, f"could not be moved aside ({e}); {then}", md, once=True)
        return None
    if aside is not None:
        report(store, path, problem, f"moved aside to {aside.name}; {then}", md)
    return aside


def report(store: Store, path: Path, problem: str, action: str, md: str | None = None,
           once: bool = False) -> None:
    """Log a broken file and record it for md-status. `once`: the file stays as it is,
    so only its first sighting in this process counts."""
    if record(store, path, problem, action, md, once):
        log.warning("%s: %s; %s", path, problem, action)


def record(store: Store, path: Path, problem: str, action: str, md: str | None = None,
           once: bool = False) -> bool:
    """Record a broken file for md-status (report() also logs it); False when `once` and
    this process has recorded it already."""
    rel = _relative(store, path)
    if once:
        with _reported_lock:
            if (rel, problem) in _reported:
                return False
            _reported.add((rel, problem))
    entry: dict[str, Any] = {"when": http_date(now_utc()), "file": rel, "problem": problem,
                             "action": action}
    if md:
        entry["md"] = md
    try:
        with store_lock(store, "broken", timeout=10):
            entries = _entries(store)
            if once and any(e.get("file") == rel and e.get("problem") == problem
                            for e in entries):
                return True  # recorded by an earlier process already
            store.write_json(*RECORD, {"entries": ([entry] + entries)[:KEEP]})
    except Exception as e:  # noqa: BLE001 - the log line is what counts
        log.debug("cannot record %s in %s: %s", rel, RECORD, e)
    return True


def recent(store: Store, now: datetime | None = None) -> list[dict[str, Any]]:
    """The entries of the last week, newest first."""
    since = (now or now_utc()) - SHOWN
    out = []
    for e in _entries(store):
        when = parse_http_date(e.get("when"))
        if when and when >= since:
            out.append(e)
    return out


def _entries(store: Store) -> list[dict[str, Any]]:
    try:
        doc = store.read_json(*RECORD) or {}
    except StoreError:
        return []  # the record itself is rewritten at the next report
    entries = doc.get("entries")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _relative(store: Store, path: Path) -> str:
    try:
        return os.path.relpath(path, store.base)
    except ValueError:
        return str(path)
