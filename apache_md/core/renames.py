"""Which store entries are MDs of the configuration under an earlier name (pure).

mod_md (md_reg.c md_reg_sync_start, find_closest_match): an MD of the configuration
that has no `domains/<name>` takes over an entry of `domains/` that no configured MD
claims: the first one that holds all of its names, or else the one sharing the most
names with it (the first of several). So dropping the first name, swapping
ServerName and ServerAlias, or adding a name keeps the MD's certificate.
"""
from __future__ import annotations

from typing import Iterable


def find(configured: Iterable[tuple[str, list[str]]], stored: dict[str, list[str] | None]
         ) -> list[tuple[str, str]]:
    """(old, new) names. `configured`: each MD's (name, domains) in configuration order;
    `stored`: the names in domains/ with the domains of their md.json (None: unreadable)."""
    configured = list(configured)
    claimed = {name for name, _ in configured}
    unassigned = [(name, {d.lower() for d in domains}) for name, domains in sorted(stored.items())
                  if name not in claimed and domains is not None]
    out = []
    for name, domains in configured:
        if name in stored:
            continue
        wanted = {d.lower() for d in domains}
        old = next((u for u in unassigned if wanted <= u[1]), None)
        if old is None:
            best = 0
            for u in unassigned:
                if len(wanted & u[1]) > best:
                    old, best = u, len(wanted & u[1])
        if old is not None:
            out.append((old[0], name))
            unassigned.remove(old)
    return out
