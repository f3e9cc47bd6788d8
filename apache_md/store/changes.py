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
    """Per MD, a hash of the stamps of its files (not the stamps: at 10,000 MDs the
    paths and tuples were a tenth of the worker's memory)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._config: Config | None = None

    def mark(self, store: Store, config: Config) -> None:
        """Remember the files as they are now (before the process itself works on them).
        For the configuration marked last, what the last look saw stands: a check cycle
        after a look costs no stat() here, and what changed since is seen at the next."""
        if config is not self._config:
            self._seen, self._config = self._look(store, config), config

    def changed(self, store: Store, config: Config) -> str | None:
        """The first MD whose files changed since mark(), or None; the new state is
        marked."""
        now = self._look(store, config)
        if now == self._seen:
            return None
        seen, self._seen, self._config = self._seen, now, config
        # in configuration order
        return next((n for n, h in now.items() if seen.get(n) != h),
                    next((n for n in seen if n not in now), None))

    @staticmethod
    def _look(store: Store, config: Config) -> dict[str, int]:
        out: dict[str, int] = {}
        for md in config.mds:
            names = FILES + tuple(s.file_name(k) for s in md.keyspecs
                                  for k in ("pubcert", "privkey"))
            got: list = []
            for group in (DOMAINS, STAGING):
                d = store.fsdir(group, md.name)
                try:
                    got.append(stamp(os.stat(d)))  # files added or removed
                except OSError:
                    got.append(None)
                    continue  # no directory, no files (staging/ mostly)
                for name in names:
                    try:
                        got.append(stamp(os.stat(os.path.join(d, name))))  # rewritten in place
                    except OSError:
                        got.append(None)
            out[md.name] = hash(tuple(got))
        return out
