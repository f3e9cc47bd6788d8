"""A hedged read: a request safe to repeat whose answer is late gets a copy beside it.

The first try is kept, not given up: whichever answer comes first and is good is
taken. Given up (as before), a late first try left its copy only: a copy that
was late too cost its whole delay again. Kept, the first may be asked for a
copy much sooner, since a copy sent for nothing costs one request, not the
answer that was on its way.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Callable, Optional


class NotSent(Exception):
    """The copy did not go out (its endpoint held by a Retry-After, no nonce for it):
    the first try is waited for however long."""


class Pool:
    """Threads that run what is given them, each kept for the next task (its connection
    to the CA too), at most `most`. Daemon threads, unlike concurrent.futures': a try
    whose answer nobody waits for any more never holds up the process's exit."""

    def __init__(self, most: int, name: str):
        self.most, self.name = most, name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = self._idle = 0

    def submit(self, fn: Callable[[], object]) -> Future:
        fut: Future = Future()
        with self._lock:
            if self._idle:
                self._idle -= 1  # that one takes it
                spawn = False
            else:
                spawn = self._threads < self.most  # else it waits for one to be done
                self._threads += spawn
        self._tasks.put((fn, fut))
        if spawn:
            threading.Thread(target=self._work, daemon=True,
                             name=f"{self.name}_{self._threads}").start()
        return fut

    def _work(self) -> None:
        while True:
            fn, fut = self._tasks.get()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as e:  # noqa: BLE001 - the waiter's to see
                    fut.set_exception(e)
            with self._lock:
                self._idle += 1


def race(pool: Pool, first: Callable[[], object],
         copy: Callable[[], Optional[Callable[[], object]]], patience: float,
         good: Callable[[object], bool]) -> tuple[Future, bool]:
    """Run `first()` in `pool`; when it has not ended after `patience` seconds, `copy()`
    says what to send beside it (None: nothing) and that runs too. Returns the future
    whose outcome counts and whether it is the copy's: the first to end with a `good`
    result; when the first try fails, the copy's (a retry sent ahead); when the copy
    fails first, its failure (the caller's retry policy decides, as for any try).
    The other one ends on its own; its outcome is not looked at (`leftover` may)."""
    f = pool.submit(first)
    wait([f], timeout=patience)
    if f.done():
        return f, False
    send = copy()
    if send is None:
        wait([f])
        return f, False
    c = pool.submit(send)
    done, _ = wait([f, c], return_when=FIRST_COMPLETED)
    for fut in (f, c):  # both may have ended by now: the first try's answer first
        if fut in done and _good(fut, good):
            return fut, fut is c
    if f in done:  # the first failed: the copy is this try's answer now
        wait([c])
        return c, True
    if isinstance(c.exception(), NotSent):
        wait([f])
        return f, False
    return c, True


def _good(fut: Future, good: Callable[[object], bool]) -> bool:
    return fut.exception() is None and good(fut.result())
