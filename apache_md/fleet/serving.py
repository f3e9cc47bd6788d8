"""What each node serves, as the other nodes, md-status and the metrics see it: per
MD and key type the serial and expiry of the live certificate.

Published in shards of MDs, one etcd value per shard under the node's lease, and a
shard only when it changed: at 10,000 MDs a single value would be about 1 MB, close to
etcd's default request limit (1.5 MB), and sent again at every cycle.
"""
from __future__ import annotations

import json
import zlib
from typing import Any

from .etcd import Etcd
from .keyspace import Keyspace

SHARDS = 64  # 10,000 MDs: ~16 KB per value


def shard_of(md_name: str) -> int:
    return zlib.crc32(md_name.encode()) % SHARDS


def split(serves: dict[str, dict]) -> dict[int, str]:
    """{shard: its value}, the same bytes for the same content."""
    by: dict[int, dict[str, dict]] = {}
    for name, certs in serves.items():
        by.setdefault(shard_of(name), {})[name] = certs
    return {i: json.dumps(d, sort_keys=True, separators=(",", ":")) for i, d in by.items()}


class Publisher:
    """Puts the shards that changed since the last put under the same lease (a new
    lease has none of them: all go again)."""

    def __init__(self, etcd: Etcd, ks: Keyspace, node: str):
        self.etcd, self.ks, self.node = etcd, ks, node
        self.lease = 0
        self.sent: dict[int, str] = {}

    def publish(self, serves: dict[str, dict], lease: int) -> int:
        """The number of values written; EtcdError when etcd does not answer (what was
        not written goes at the next call)."""
        if lease != self.lease:
            self.lease, self.sent = lease, {}
        want = split(serves)
        n = 0
        for i, value in sorted(want.items()):
            if self.sent.get(i) != value:
                self.etcd.put(self.ks.serves(self.node, i), value, lease)
                self.sent[i] = value
                n += 1
        for i in sorted(set(self.sent) - set(want)):  # its MDs were all removed
            self.etcd.delete(self.ks.serves(self.node, i))
            del self.sent[i]
            n += 1
        return n


def read_all(etcd: Etcd, ks: Keyspace) -> dict[str, dict[str, Any]]:
    """{node: {md: {key type: {serial, not-after}}}}; EtcdError when etcd does not answer."""
    out: dict[str, dict[str, Any]] = {}
    under = ks.serving()
    for kv in etcd.get_prefix(under):
        node = ks.leaf(kv.key, under).partition("/")[0]
        try:
            doc = json.loads(kv.value)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.setdefault(node, {}).update(doc)
    return out
