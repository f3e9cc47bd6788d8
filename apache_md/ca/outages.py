"""CAs that stopped answering, and the renewals that failed because of it.

A renewal that fails because its CA is unreachable, or keeps failing after
the retries in place (CAProblem.ca_trouble), backs off like any failure. When
the CA comes back, those MDs should not sit out their backoff: the worker asks
the CA (one GET of its directory, not retried) PROBE_FIRST seconds after the
failure, then at doubling intervals up to PROBE_MOST, and once the CA answers
after it was seen down (no connection, or a probe that failed), the backoff of
the MDs it failed for is lifted: they run at once. MDs that fail for their own
reasons keep their backoff, and so do the MDs of a CA that answers its
directory but keeps failing their orders (nobody saw it down: lifting would
only fail them again).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..core.job import now_utc
from ..core.model import ManagedDomain
from ..core.problem import CAProblem
from ..store import jobs
from ..store.fs import STAGING, Store
from ..store.locks import Busy, md_lock

log = logging.getLogger(__name__)
PROBE_FIRST, PROBE_MOST = 1.0, 10.0  # seconds


@dataclass
class _Outage:
    md: ManagedDomain  # one MD that uses the CA: its trust and proxy settings for the probe
    names: set[str] = field(default_factory=set)  # MDs whose renewal failed there
    seen_down: bool = False
    interval: float = PROBE_FIRST
    next_probe: float = 0.0  # time.monotonic()


class Outages:
    """One per worker; the drive threads report, the check loop probes and lifts."""

    def __init__(self) -> None:
        self._down: dict[str, _Outage] = {}  # by CA URL
        self._lock = threading.Lock()

    def failed(self, md: ManagedDomain, ca_url: str, trouble: str) -> None:
        """A renewal of `md` at `ca_url` failed with the CA's trouble ("unreachable" or
        "failing")."""
        with self._lock:
            o = self._down.get(ca_url)
            if o is None:
                o = self._down[ca_url] = _Outage(md, next_probe=time.monotonic() + PROBE_FIRST)
            o.names.add(md.name)
            o.seen_down |= trouble == "unreachable"

    def answered(self, ca_url: str) -> None:
        """A renewal at `ca_url` succeeded: probe it at the next look."""
        with self._lock:
            if ca_url in self._down:
                self._down[ca_url].next_probe = 0.0

    def next_probe(self) -> datetime | None:
        """When the check loop should look again for a probe."""
        with self._lock:
            if not self._down:
                return None
            soonest = min(o.next_probe for o in self._down.values())
        return now_utc() + timedelta(seconds=max(0.0, soonest - time.monotonic()))

    def revive(self, store: Store, stop: threading.Event | None = None) -> list[str]:
        """Probe the CAs whose probe is due; the names of the MDs now free to run."""
        with self._lock:
            due = [(url, o) for url, o in self._down.items() if o.next_probe <= time.monotonic()]
        lifted: list[str] = []
        for url, o in due:
            problem = _probe(url, o.md, stop)
            with self._lock:
                if problem is not None:
                    o.seen_down = True
                    o.interval = min(PROBE_MOST, o.interval * 2)
                    o.next_probe = time.monotonic() + o.interval
                    continue
                del self._down[url]
            if o.seen_down:
                log.info("the CA at %s answers again: renewing %s now", url,
                         ", ".join(sorted(o.names)))
                lifted += [n for n in sorted(o.names) if _lift(store, n, url)]
        return lifted


def _probe(url: str, md: ManagedDomain, stop: threading.Event | None) -> CAProblem | None:
    from .client import CAConnection  # the acme library, only when a CA was down
    try:
        conn = CAConnection(url, ca_certs=md.ca_certs, proxy=md.proxy_url,
                            proxy_ca_certs=md.proxy_ca_certs, timeout=10, stop=stop)
    except CAProblem as p:
        return p
    return conn.reachable()


def _lift(store: Store, name: str, url: str) -> bool:
    """The MD's next run is now (unless another process drives it, or it is done)."""
    try:
        with md_lock(store, name, timeout=0):
            job = jobs.load(store, STAGING, name)
            if job.finished or not job.next_run or job.next_run <= now_utc():
                return False
            job.next_run = None
            job.add_log("progress", detail=f"The CA at {url} answers again: retrying now")
            jobs.save(store, STAGING, job)
            return True
    except Busy:
        return False
