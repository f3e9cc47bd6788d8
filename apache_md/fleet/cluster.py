"""What the fleet looks like from etcd: its nodes (heartbeat, what each serves), who
holds each MD's lock, the published sets. For `apache-md cluster status`, md-status
and the metrics; and `cluster seed`, which publishes a single server's store."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..core.job import now_utc
from ..core.model import Config
from ..store.fs import ACCOUNTS, DOMAINS, Store, StoreError
from . import serving, sets
from .node import Fleet


def view(fleet: Fleet) -> dict[str, Any]:
    """{"nodes": {node: {heartbeat, age, serves}}, "locks": {md: node},
    "published": {md: {by, serials, not-after}}}; EtcdError when etcd does not answer."""
    now = now_utc()
    nodes = {}
    serves = serving.read_all(fleet.etcd, fleet.ks)
    under = fleet.ks.nodes()
    for kv in fleet.etcd.get_prefix(under):
        try:
            doc = json.loads(kv.value)
        except ValueError:
            continue
        beat = _time(doc.get("heartbeat"))
        name = fleet.ks.leaf(kv.key, under)
        nodes[name] = {
            "heartbeat": doc.get("heartbeat"),
            "age": round((now - beat).total_seconds(), 1) if beat else None,
            # a node of an earlier version puts what it serves into its node key
            "serves": serves.get(name) or doc.get("serves") or {}}
    from . import coord
    locks = coord.holders(fleet.session)
    published = {name: {"by": p.by, "serials": p.serials, "not-after": p.doc.get("not-after")}
                 for name, p in sets.read_all_published(fleet.etcd, fleet.ks).items()}
    return {"node": fleet.node, "prefix": fleet.ks.prefix, "nodes": nodes, "locks": locks,
            "published": published}


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def render(v: dict[str, Any]) -> str:
    lines = [f"fleet {v['prefix']} (this node: {v['node']})", "nodes:"]
    for name, n in sorted(v["nodes"].items()):
        lines.append(f"  {name}: heartbeat {n.get('heartbeat')}, serves {len(n['serves'])} "
                     "MD(s)")
    mds = sorted(set(v["published"]) | set(v["locks"])
                 | {m for n in v["nodes"].values() for m in n["serves"]})
    lines.append("managed domains:")
    for md in mds:
        pub = v["published"].get(md) or {}
        serial = ", ".join(f"{k} {s}" for k, s in sorted((pub.get("serials") or {}).items()))
        lock = v["locks"].get(md)
        lines.append(f"  {md}: published {serial or 'nothing'}"
                     + (f" by {pub['by']}" if pub else "")
                     + (f", renewing on {lock}" if lock else ""))
        for name, n in sorted(v["nodes"].items()):
            served = n["serves"].get(md) or {}
            what = ", ".join(f"{k} {c.get('serial')}" for k, c in sorted(served.items()))
            lines.append(f"    {name} serves {what or 'nothing'}")
    return "\n".join(lines)


def seed(fleet: Fleet, store: Store, config: Config) -> list[tuple[str, str]]:
    """Publish the live sets and the accounts of this store: (MD, what happened)."""
    out = []
    for acct_id in store.names(ACCOUNTS):
        try:
            sets.publish_account(fleet.etcd, fleet.ks, store, acct_id, fleet.key, fleet.node)
        except (StoreError, ValueError, TypeError) as e:
            out.append((f"account {acct_id}", f"not published: {e}"))
    for md in config.mds:
        if md.is_static:
            out.append((md.name, "static certificate files: not published"))
        elif sets.local_serials(store, DOMAINS, md) is None:
            out.append((md.name, "no complete live set: nothing to publish"))
        else:
            out.append((md.name, fleet.publish(store, md, DOMAINS)))
    return out
