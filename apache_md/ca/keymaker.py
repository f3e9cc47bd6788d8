"""Private keys made ahead for the MDs of one drive (drive_all), in a few threads.

A new MD's key (RSA 2048: ~45 ms of CPU) is needed only at its CSR, after its
order and challenges. Made by the MD's own thread it waited in line with the
others' Python work; made here, a few threads (`cryptography` releases the
interpreter lock while it makes a key, so they run on every CPU) keep up to
AHEAD keys ready while the drives talk to the CA, and an MD takes its key at
finalize. Nothing is made before `warm()` or `go()`. `warm()` (the drive, when a
new account's key is about to be made) lets one thread work: on a fresh store the
account key (RSA 3072, ~0.2 s) is made by one thread while every MD waits for it
and the other CPUs idle; all the threads, made then, slowed that key. `go()` (once
the account is there, or while its registration waits for the CA) lets them all.

Each key goes to one taker only, and only in memory: a key is in the store once
the drive stages it (encrypted, 0600) before finalize. Keys the idle worker made
(store/keypool) are used first, by the takers themselves: only the keys the pool
cannot give are made ahead, from the start (an idle worker's pool of 16 and 50 new
MDs: 34 made while the first 16 MDs take the pool's), and none is taken from the pool
ahead (MDs that then fail would lose them). What is left at the end (MDs that failed or had a staged key)
goes to the pool, up to its size (`pool_size`, MDKeyPool): it was never used nor
written anywhere. `want()` counts the keys the drive's MDs will ask for, `settle()`
takes an ended MD's back, so no more are made than will be taken.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from typing import Iterable

from ..core import crypto
from ..core.model import KeySpec
from ..store import keypool
from ..store.fs import Store

log = logging.getLogger(__name__)
AHEAD = 32  # keys ready or being made at most (as many as MDs under way: drive's 8 x 4)
THREADS = max(1, min(4, os.cpu_count() or 1))


def make_now(store: Store, spec: KeySpec):
    """A key of `spec` at once: from the pool, else a new one. Raises crypto.CryptoError."""
    return keypool.take(store, spec) or crypto.generate_key(spec)


class KeyMaker:
    def __init__(self, store: Store, threads: int = THREADS, ahead: int = AHEAD,
                 pool_size: int = 0):
        self.store = store
        self.threads = threads
        self.ahead = ahead
        self.pool_size = pool_size  # what close() may keep in the pool, per kind
        self._cond = threading.Condition()
        self._specs: dict[str, KeySpec] = {}  # kind -> spec
        self._wanted: Counter[str] = Counter()  # kind -> keys still to be taken
        self._ready: dict[str, list] = {}  # kind -> keys made, not taken
        self._making: Counter[str] = Counter()  # kind -> keys being made now
        self._failed: set[str] = set()  # kinds that could not be made here: the taker makes
        self._allowed = 0  # key threads that may work: 1 after warm(), all after go()
        self._closed = False
        self._workers: list[threading.Thread] = []

    def want(self, specs: Iterable[KeySpec]) -> None:
        """The keys one MD will take (its key specs)."""
        with self._cond:
            for spec in specs:
                k = keypool.kind(spec)
                if k is not None:
                    self._specs.setdefault(k, spec)
                    self._wanted[k] += 1
            self._cond.notify_all()

    def settle(self, specs: Iterable[KeySpec]) -> None:
        """An MD's run ended without taking these: no key is made for them."""
        with self._cond:
            for spec in specs:
                k = keypool.kind(spec)
                if self._wanted[k] > 0:
                    self._wanted[k] -= 1
            self._cond.notify_all()

    def warm(self) -> None:
        """Let one thread make keys (idempotent)."""
        self._allow(1)

    def go(self) -> None:
        """Let every thread make keys (idempotent)."""
        self._allow(self.threads)

    def _allow(self, n: int) -> None:
        with self._cond:
            if self._closed or n <= self._allowed:
                return
            self._allowed = n
            while len(self._workers) < n:
                t = threading.Thread(target=self._work, args=(len(self._workers),),
                                     name=f"keymaker_{len(self._workers)}", daemon=True)
                self._workers.append(t)
                t.start()
            self._cond.notify_all()

    def take(self, spec: KeySpec):
        """A key of `spec`, used by no one else: one made ahead, else from the pool, else
        one being made (waited for), else made now. Raises crypto.CryptoError."""
        k = keypool.kind(spec)
        with self._cond:
            if k is not None and self._wanted[k] > 0:
                self._wanted[k] -= 1
            ready = self._ready.get(k) if k is not None else None
            if ready:
                self._cond.notify_all()  # a place ahead is free
                return ready.pop(0)
        pooled = keypool.take(self.store, spec)  # before waiting: the pool's are made
        if pooled is not None:
            return pooled
        with self._cond:
            try:
                while k is not None:
                    ready = self._ready.get(k)
                    if ready:
                        return ready.pop(0)
                    if not self._making[k] or self._closed:
                        break
                    self._cond.wait()
            finally:
                self._cond.notify_all()  # a place ahead is free, or one fewer to make
        try:
            return make_now(self.store, spec)
        finally:
            with self._cond:  # the pool may have just run dry: the key threads look again
                self._cond.notify_all()

    def close(self) -> None:
        """No more keys; those not taken go to the pool (up to pool_size per kind)."""
        with self._cond:
            self._closed = True
            left = [(self._specs[k], key) for k, keys in self._ready.items() for key in keys]
            self._ready.clear()
            self._cond.notify_all()
        for t in self._workers:
            t.join()
        kept = sum(keypool.give(self.store, spec, key, self.pool_size) for spec, key in left)
        if left:
            log.debug("%d keys made ahead were not taken, %d kept in the pool", len(left), kept)

    def _next(self, i: int) -> str | None:
        """The kind thread `i` makes next, under the lock; None: nothing to make now."""
        if self._closed or i >= self._allowed:
            return None
        if sum(self._making.values()) + sum(len(v) for v in self._ready.values()) >= self.ahead:
            return None
        short = [(self._wanted[k] - self._making[k] - len(self._ready.get(k, ()))
                  - keypool.count(self.store, self._specs[k]), k)
                 for k in self._wanted if k not in self._failed]
        need, k = max(short, default=(0, None))
        return k if need > 0 else None

    def _work(self, i: int) -> None:
        while True:
            with self._cond:
                while (k := self._next(i)) is None:
                    if self._closed:
                        return
                    self._cond.wait()
                self._making[k] += 1
                spec = self._specs[k]
            key = None
            try:
                key = crypto.generate_key(spec)
            except Exception as e:  # noqa: BLE001 - the taker makes it and reports
                log.debug("key %s not made ahead: %s", k, e)
            with self._cond:
                self._making[k] -= 1
                if key is None:
                    self._failed.add(k)
                elif not self._closed:
                    self._ready.setdefault(k, []).append(key)
                self._cond.notify_all()
