"""File locks in `<store>/locks/`: one per MD, so that two drivers (a second
worker, `apache-md renew`, a cron job) never work on the same MD at once."""
from __future__ import annotations

import contextlib
from typing import Iterator

from filelock import Timeout

from ..core import compat
from .fs import LOCKS, Store, safe_name


class Busy(Exception):
    """Another process holds the lock."""


@contextlib.contextmanager
def store_lock(store: Store, name: str, timeout: float = -1) -> Iterator[None]:
    """Hold `locks/<name>.lock`; timeout -1 waits, 0 fails at once with Busy."""
    d = store.dir(LOCKS)
    d.mkdir(parents=True, exist_ok=True)
    lock = compat.file_lock(str(d / f"{safe_name(name)}.lock"), mode=0o644)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise Busy(name) from None
    try:
        yield
    finally:
        lock.release()


def md_lock(store: Store, md_name: str, timeout: float = 0):
    return store_lock(store, f"md-{md_name}", timeout)
