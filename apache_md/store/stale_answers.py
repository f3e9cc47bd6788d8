"""http-01 answers in challenges/ for names no MD of the configuration has: left by a
run cut short, by another tool, or by mod_md before a switch. Removed when the worker
takes a configuration, as mod_md does at its start (md_reg_cleanup_challenges,
test_910_01); an MD's own names stay, a renewal of it may be using them.
"""
from __future__ import annotations

import logging

from ..core.crypto import a_label
from ..core.model import Config
from .fs import CHALLENGES, Store

log = logging.getLogger(__name__)


def purge(store: Store, config: Config) -> list[str]:
    """Remove the answers of names no MD has; returns those names."""
    keep = set()
    for md in config.mds:
        for name in (md.name, *md.domains):
            keep.update(n.lower() for n in (name, a_label(name)) if n)
    gone = [name for name in store.names(CHALLENGES) if name.lower() not in keep]
    for name in gone:
        store.purge(CHALLENGES, name)
    if gone:
        log.info("challenges/: removed the answers of %s, which no MD has", ", ".join(gone))
    return gone
