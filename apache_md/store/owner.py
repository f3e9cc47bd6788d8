"""The store's owner, and working as them when root runs apache-md.

On Debian the store belongs to the worker's user (apache-md). Whatever root creates in
it must belong to that user too, or the worker is locked out (a `sudo apache-md status`
once left md_store.json root:root 0600 behind). So root never writes the store as root:

- become(): for good, in the network-facing commands (renew, worker), as mod_md runs its
  ACME client in an unprivileged child;
- acting_as(): for a block (check, status, activate), with root's rights only inside
  as_root() where they are needed: Apache's configuration test and reload, and the
  MDMessageCmd/MDNotifyCmd scripts (mod_md runs those as root at a restart).

Besides ownership this keeps root from following links the store's owner could plant
in it. A store that root owns (or that does not exist yet) changes nothing.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

log = logging.getLogger(__name__)

# root's effective gid and groups while acting_as() runs, for as_root() to restore
_root: list[tuple[int, list[int]]] = []


def owner(store_dir: str | os.PathLike) -> tuple[int, int] | None:
    """(uid, gid) of the store's owner when this process is root and the store is
    another user's; None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(store_dir)
    except OSError:
        return None
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)


def stranger(store_dir: str | os.PathLike) -> bool:
    """True when this process is neither root nor the store's owner: the store's private
    files (md_store.json, domains/, keys) are closed to it."""
    if os.geteuid() == 0:
        return False
    try:
        return os.stat(store_dir).st_uid != os.geteuid()
    except OSError:
        return False


def become(store_dir: str | os.PathLike) -> None:
    """Become the store's owner for the rest of the process (no way back to root)."""
    ids = owner(store_dir)
    if ids is None:
        return
    os.setgroups([])
    os.setgid(ids[1])
    os.setuid(ids[0])
    log.info("running as uid %d (owner of %s)", ids[0], store_dir)


@contextlib.contextmanager
def acting_as(store_dir: str | os.PathLike) -> Iterator[None]:
    """Work as the store's owner inside the block (effective ids only; single-threaded
    callers, since the ids are the process's)."""
    ids = owner(store_dir)
    if ids is None:
        yield
        return
    saved = (os.getegid(), os.getgroups())
    os.setgroups([ids[1]])
    os.setegid(ids[1])
    os.seteuid(ids[0])
    _root.append(saved)
    try:
        yield
    finally:
        _root.pop()
        os.seteuid(0)
        os.setegid(saved[0])
        os.setgroups(saved[1])


@contextlib.contextmanager
def as_root() -> Iterator[None]:
    """root's rights again for the block, inside acting_as(); elsewhere nothing changes."""
    if not _root or os.geteuid() == 0:
        yield
        return
    uid, gid, groups = os.geteuid(), os.getegid(), os.getgroups()
    os.seteuid(0)
    os.setegid(_root[-1][0])
    os.setgroups(_root[-1][1])
    try:
        yield
    finally:
        os.setgroups(groups)
        os.setegid(gid)
        os.seteuid(uid)
