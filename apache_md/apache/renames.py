"""A renamed MD keeps its certificate (mod_md's "MD renamed", core/renames.py).

When an MD of the configuration has no set in the store under its name, but an entry
no configured MD claims holds its names, that entry is the same MD under an earlier
name: its directories move to the new name (`domains/` and `staging/` as mod_md does,
and apache-md's `watch/` and `ocsp/`), each with one rename(2). The new name's include
then serves the certificate the MD had, and a renewal for names it lacks runs in the
background like any other. The include of the old name, which a vhost may still use
until its configuration is changed, is pointed at the moved set, so no reload ever
finds it pointing at nothing. Runs wherever the store is opened with a configuration
(the worker, every command), before anything could create `domains/<new>`.
"""
from __future__ import annotations

import logging
import os

from ..core import renames
from ..core.model import Config
from ..store import broken
from ..store.fs import (
    APACHE,
    DOMAINS,
    OCSP,
    STAGING,
    WATCH,
    Store,
    atomic_write,
    rename,
)
from ..store.locks import Busy, md_lock
from . import includes

log = logging.getLogger(__name__)
GROUPS = (DOMAINS, STAGING, WATCH, OCSP)


def follow(store: Store, config: Config) -> list[tuple[str, str]]:
    """Move the store entries of renamed MDs to their new names; returns (old, new)."""
    configured = [(md.name, md.domains) for md in config.mds]
    names = set(store.names(DOMAINS))
    if all(md.name in names for md in config.mds):
        return []  # the usual case: one listing, nothing read
    stored = {}
    for name in names:
        doc = broken.read_json(store, DOMAINS, name, "md.json",
                               "the entry is not matched to a renamed MD")
        domains = doc.get("domains") if doc else None
        stored[name] = [d for d in domains if isinstance(d, str)] \
            if isinstance(domains, list) else None
    done = []
    for old, new in renames.find(configured, stored):
        try:
            with md_lock(store, old), md_lock(store, new):
                _move(store, old, new)
        except Busy:
            log.info("MD %s looks renamed to %s, but a renewal of it runs: next time",
                     old, new)
            continue
        except OSError as e:
            log.error("MD %s renamed to %s: cannot move its store entry: %s", old, new, e)
            continue
        md = config.md_by_name(new)
        log.info("MD %s renamed to %s (%s): it keeps its certificate", old, new,
                 " ".join(md.domains))
        done.append((old, new))
    return done


def _move(store: Store, old: str, new: str) -> None:
    for group in GROUPS:
        src, dst = store.dir(group, old), store.dir(group, new)
        if src.is_dir() and not dst.exists():
            rename(src, dst)
    _repoint_include(store, old, new)


def _repoint_include(store: Store, old: str, new: str) -> None:
    path = store.dir(APACHE) / includes.include_file(old)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    src, dst = store.fsdir(DOMAINS, old) + os.sep, store.fsdir(DOMAINS, new) + os.sep
    if src in text:
        atomic_write(path, text.replace(src, dst).encode(), 0o644)
