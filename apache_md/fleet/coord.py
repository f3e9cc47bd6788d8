"""One renewer per MD, fleet-wide: a lock key per MD, created only if absent (an etcd
transaction) and bound to the holder's lease, so it vanishes with a dead holder."""
from __future__ import annotations

from .session import Session


def acquire(session: Session, md: str) -> str | None:
    """Take the MD's lock: None when this node holds it, else the holder's name.
    A lock left by this very node under an older lease (a worker that was restarted)
    is this node's to take back: its local file lock keeps two workers apart."""
    session.ensure()
    key = session.ks.lock(md)
    there = session.etcd.create(key, session.node, session.lease)
    if there is not None and there.value.decode(errors="replace") == session.node \
            and there.lease != session.lease:
        session.etcd.delete_if(key, session.node)
        there = session.etcd.create(key, session.node, session.lease)
    if there is None or there.lease == session.lease:
        session.held.add(md)
        return None
    return there.value.decode(errors="replace") or "?"


def release(session: Session, md: str) -> None:
    session.held.discard(md)
    session.etcd.delete_if(session.ks.lock(md), session.node)


def holders(session: Session) -> dict[str, str]:
    """MD -> node holding its lock."""
    under = session.ks.locks()
    return {session.ks.leaf(kv.key, under): kv.value.decode(errors="replace")
            for kv in session.etcd.get_prefix(under)}
