"""File locks in `<store>/locks/`: one per MD, so that two drivers (a second
worker, `apache-md renew`, a cron job) never work on the same MD at once."""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from filelock import Timeout

from ..core import compat
from .fs import LOCKS, Store, safe_name


class Busy(Exception):
    """Another process holds the lock."""


# The threads of one process queue on a threading lock per file before taking the
# file lock: filelock makes waiters poll (50 ms and more, with a growing backoff), so
# MDs driven in parallel that wait for one account registration woke up seconds late.
_threads: dict[str, threading.Lock] = {}
_threads_lock = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _threads_lock:
        lock = _threads.get(path)
        if lock is None:
            lock = _threads[path] = threading.Lock()
        return lock


@contextlib.contextmanager
def store_lock(store: Store, name: str, timeout: float = -1) -> Iterator[None]:
    """Hold `locks/<name>.lock`; timeout -1 waits, 0 fails at once with Busy."""
    d = store.dir(LOCKS)
    path = str(d / f"{safe_name(name)}.lock")
    mine = _thread_lock(path)
    start = time.monotonic()
    if not (mine.acquire(blocking=False) if timeout == 0 else mine.acquire(timeout=timeout)):
        raise Busy(name)
    try:
        d.mkdir(parents=True, exist_ok=True)
        lock = compat.file_lock(path, mode=0o644)
        left = timeout if timeout <= 0 else max(0.0, timeout - (time.monotonic() - start))
        try:
            lock.acquire(timeout=left)
        except Timeout:
            raise Busy(name) from None
        try:
            yield
        finally:
            lock.release()
    finally:
        mine.release()


def md_lock(store: Store, md_name: str, timeout: float = 0):
    return store_lock(store, f"md-{md_name}", timeout)
