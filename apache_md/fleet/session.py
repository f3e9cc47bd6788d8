"""A node's session with etcd: one lease, kept alive by a thread, that carries the
node's heartbeat key and every lock the node holds. A node that dies (kill -9, power,
network) stops refreshing it; etcd drops the lease after MDClusterLeaseTTL and with it
the node's locks, so another node takes its MDs over."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from ..core.job import now_utc
from .etcd import Etcd, EtcdError
from .keyspace import Keyspace

log = logging.getLogger(__name__)


class Session:
    def __init__(self, etcd: Etcd, ks: Keyspace, node: str, ttl: float):
        self.etcd, self.ks, self.node = etcd, ks, node
        self.ttl = max(2, int(round(ttl)))
        self.lease = 0
        self.lease_ok = 0.0  # time.monotonic() of the lease's last refresh
        self.held: set[str] = set()  # MDs locked under this lease
        self.info: dict[str, Any] = {}  # what the node key tells the others
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """The lease is ours and was refreshed within its TTL."""
        return bool(self.lease) and time.monotonic() - self.lease_ok < self.ttl

    def ensure(self) -> None:
        """A live lease with the node key on it; EtcdError when etcd does not answer."""
        with self._lock:
            if self.alive:
                return
            if self.lease:
                log.warning("etcd: the lease of node %s expired; its locks are gone", self.node)
            self.held.clear()
            self.lease = self.etcd.grant(self.ttl)
            self.lease_ok = time.monotonic()
        self.put_node()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._keep_alive, name="etcd-lease",
                                            daemon=True)
            self._thread.start()

    def put_node(self, **info: Any) -> None:
        """The heartbeat: the node key, refreshed with `info` (what it serves)."""
        self.info.update(info)
        value = {"node": self.node, "pid": os.getpid(), "heartbeat": now_utc().isoformat(),
                 **self.info}
        self.etcd.put(self.ks.node(self.node), json.dumps(value), self.lease)

    def _keep_alive(self) -> None:
        interval = max(0.5, self.ttl / 3)
        while not self._stop.wait(interval):
            lease = self.lease
            if not lease:
                continue
            try:
                ttl = self.etcd.keepalive(lease)
            except EtcdError as e:
                log.debug("etcd keepalive: %s", e)
                continue
            with self._lock:
                if lease != self.lease:
                    continue
                if ttl > 0:
                    self.lease_ok = time.monotonic()
                else:  # expired (etcd was away longer than the TTL)
                    self.lease, self.lease_ok = 0, 0.0
                    self.held.clear()

    def close(self) -> None:
        """Give the locks and the node key up at once (a clean stop)."""
        self._stop.set()
        lease, self.lease = self.lease, 0
        self.held.clear()
        if lease:
            try:
                self.etcd.revoke(lease)
            except EtcdError as e:
                log.info("etcd: could not revoke the lease (%s); it expires by itself", e)
