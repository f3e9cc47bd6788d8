"""Changes to the MDs' files that this process did not make.

mod_md reads the store live; apache-md serves md-status from a snapshot. So that a
certificate copied into `domains/<md>/` or `staging/<md>/` by hand (or by another
tool, `apache-md renew`, a root-side activation) shows within seconds, the worker
looks every few seconds whether any of those files changed: one stat() per
directory and file that planning and status read, a few thousand system calls at
1,000 MDs, no parsing. A difference triggers a check cycle, which rebuilds the
snapshot (the parse caches key on the same stat fields, so a file copied with its
old mtime and size is read anew).
"""
from __future__ import annotations

import os

from ..core.model import Config
from .fs import DOMAINS, STAGING, Store

FILES = ("md.json", "job.json")


def stamp(st: os.stat_result) -> tuple:
    """What changes whenever a file's content does: ctime cannot be set back (cp -p,
    touch -r), and a replaced file has a new inode."""
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class Changes:
    def __init__(self) -> None:
        self._seen: dict[str, tuple | None] = {}

    def mark(self, store: Store, config: Config) -> None:
        """Remember the files as they are now (before the process itself works on them)."""
        self._seen = self._look(store, config)

    def changed(self, store: Store, config: Config) -> str | None:
        """The first file that changed since mark(), or None; the new state is marked."""
        now = self._look(store, config)
        if now == self._seen:
            return None
        seen, self._seen = self._seen, now
        # in looking order: a directory before its files
        return next((p for p, s in now.items() if p not in seen or seen[p] != s),
                    next((p for p in seen if p not in now), None))

    @staticmethod
    def _look(store: Store, config: Config) -> dict[str, tuple | None]:
        out: dict[str, tuple | None] = {}
        for md in config.mds:
            names = FILES + tuple(s.file_name(k) for s in md.keyspecs
                                  for k in ("pubcert", "privkey"))
            for group in (DOMAINS, STAGING):
                d = store.fsdir(group, md.name)
                try:
                    out[d] = stamp(os.stat(d))  # files added or removed
                except OSError:
                    out[d] = None
                    continue  # no directory, no files (staging/ mostly)
                for name in names:
                    p = os.path.join(d, name)
                    try:
                        out[p] = stamp(os.stat(p))  # files rewritten in place
                    except OSError:
                        out[p] = None
        return out
