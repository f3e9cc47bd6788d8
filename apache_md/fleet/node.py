"""The fleet as the worker sees it: before planning, take what the fleet published;
before driving an MD, hold its lock; after a renewal, publish the set and let go.

etcd away never stops a site: nothing here raises for an outage. Mirroring is skipped,
MDs that are due wait (their lock cannot be held), and both resume when etcd answers.
"""
from __future__ import annotations

import logging
from typing import Iterable

from ..core.model import Config, GlobalSettings, ManagedDomain
from ..core.problem import CAProblem
from ..store import credentials
from ..store.fs import DOMAINS, STAGING, Store, StoreError
from . import challenges, coord, orders, seal, serving, sets, spread
from .etcd import Etcd, EtcdError, Unavailable
from .keyspace import Keyspace
from .session import Session

log = logging.getLogger(__name__)


class Fleet:
    def __init__(self, settings: GlobalSettings, verify: challenges.Verify | None = None):
        self.node = settings.cluster_node
        self.ks = Keyspace(settings.cluster_prefix)
        self.etcd = Etcd(settings.cluster_etcd, ca=settings.cluster_etcd_ca,
                         cert=settings.cluster_etcd_cert, key=settings.cluster_etcd_key)
        self.key = seal.load_key(settings.cluster_key_file or "")
        self.session = Session(self.etcd, self.ks, self.node, settings.cluster_lease_ttl)
        self.ttl = settings.cluster_lease_ttl
        self.outage: str | None = None  # what etcd said last when it did not answer
        self._seen = -1  # revision of the fleet's sets when last mirrored
        self.waiting: dict[str, str] = {}  # MD -> node holding its lock (last claim)
        self.mirror: challenges.Mirror | None = None  # the others' http-01 answers, here
        self.solo: set[str] = set()  # MDs renewed without the fleet (etcd away, warn window)
        self.serving = serving.Publisher(self.etcd, self.ks, self.node)
        self.verify = verify  # a mirrored http-01 answer is acknowledged once Apache serves it
        # MD -> its domains: a lock (and answers) finish() could not give back; tried
        # again at each heartbeat, or the others would wait for this node until its lease
        # ends, which is never while it lives
        self.unreleased: dict[str, list[str]] = {}
        self._view: dict = {"node": self.node, "prefix": self.ks.prefix}  # last from etcd

    # -- outages ---------------------------------------------------------------------------
    def _down(self, e: EtcdError) -> None:
        if self.outage is None:
            log.error("%s: the certificates here go on being served; renewals wait until "
                      "etcd is back", e)
        self.outage = str(e)

    def _up(self) -> None:
        if self.outage is not None:
            log.warning("etcd answers again")
            self.outage = None

    # -- mirroring -------------------------------------------------------------------------
    def changed(self) -> bool:
        """Whether the fleet published something since the last sync (one small range
        request, at every poll of a sleeping worker)."""
        try:
            rev = self.etcd.revision(self.ks.mds())
        except EtcdError:
            return self.outage is None  # just went away: a cycle says so
        return rev != self._seen or self.outage is not None

    def sync(self, store: Store, config: Config) -> list[str]:
        """Stage what the fleet has that is newer than what this node serves; the MDs
        staged. The accounts come along, so a renewal here uses the fleet's account."""
        try:
            self.session.ensure()
            rev = self.etcd.revision(self.ks.mds())
            sets.mirror_accounts(self.etcd, self.ks, store, self.key)
            published = sets.read_all_published(self.etcd, self.ks)
        except EtcdError as e:
            self._down(e)
            return []
        self._up()
        self._seen = rev
        for md in config.mds:  # ours expire later (renewed alone, a seed): the fleet's now
            if not md.is_static and self._newer_here(store, md, published.get(md.name)):
                self.publish(store, md, DOMAINS)
        if self.mirror is None or self.mirror.store is not store:
            self._stop_mirror()
            self.mirror = challenges.Mirror(self.session, store, config, self.verify)
            self.mirror.start()
        self.mirror.config = config
        return [md.name for md in config.mds if md.name in published
                and self._take(store, md, published[md.name])]

    @staticmethod
    def _newer_here(store: Store, md: ManagedDomain, pub: sets.Published | None) -> bool:
        live = sets.local_not_after(store, DOMAINS, md)
        if live is None:
            return False
        return pub is None or (pub.not_after is not None and live.replace(microsecond=0)
                               > pub.not_after)

    def _take(self, store: Store, md: ManagedDomain, pub: sets.Published) -> bool:
        if md.is_static or not sets.wanted(store, md, pub):
            return False
        try:
            staged = sets.stage(store, md, pub, self.key, self.ks.md_set(md.name))
        except (seal.SealError, StoreError, ValueError, TypeError) as e:
            log.error("%s: the fleet's set (from %s) cannot be used: %s", md.name, pub.by, e)
            return False
        if staged:
            log.info("%s: staged the certificates node %s published", md.name, pub.by)
        return staged

    # -- one renewer per MD ------------------------------------------------------------------
    def claim(self, store: Store, decisions: list, spread_out: bool = True
              ) -> tuple[list, dict[str, str]]:
        """The decisions this node may drive now (it holds their locks), and the MDs that
        wait, with the node that holds each (or why).

        The work is spread: a node takes at most its share of what is due (the due MDs
        over the live nodes), preferring the MDs that rank it first among the live nodes
        (rendezvous hashing, so the nodes rarely reach for the same lock). What it leaves
        is looked at again within a lease TTL, by whichever node gets there first. An MD
        inside its warn window is always taken, and so is everything with `spread_out`
        False (`apache-md renew`: the administrator asked this node)."""
        live = self._live_nodes() if spread_out else [self.node]
        share = -(-len(decisions) // len(live))
        mine, waiting = [], {}
        for d in spread.order(decisions, self.node, live, key=lambda d: d.md.name):
            if len(mine) >= share and not d.warn:
                waiting[d.md.name] = f"left to the other {len(live) - 1} node(s)"
                continue
            try:
                holder = coord.acquire(self.session, d.md.name)
                if holder is None:
                    # Someone may have finished it just before we got the lock.
                    pub = sets.read_published(self.etcd, self.ks, d.md.name)
                    if pub is not None and self._take(store, d.md, pub):
                        coord.release(self.session, d.md.name)
                        waiting[d.md.name] = f"staged from {pub.by}"
                        continue
            except EtcdError as e:
                self._down(e)
                if d.warn:  # a certificate must not expire because etcd is away
                    log.error("%s: etcd is unavailable and the certificate is inside its warn "
                              "window: renewing ALONE, without the fleet's lock; published "
                              "when etcd is back, where the set that expires last wins",
                              d.md.name)
                    self.solo.add(d.md.name)
                    mine.append(d)
                else:
                    waiting[d.md.name] = "etcd unavailable"
                continue
            if holder is None:
                self._adopt(store, d.md)
                mine.append(d)
            else:
                waiting[d.md.name] = holder
        self.waiting = waiting
        if waiting:
            log.info("waiting for the fleet: %s",
                     ", ".join(f"{n} ({h})" for n, h in waiting.items()))
        return mine, waiting

    def _adopt(self, store: Store, md: ManagedDomain) -> None:
        """The order a renewer before this one left (one killed mid-order): staged here,
        so this node's renewal goes on with it."""
        try:
            what = orders.adopt(self.etcd, self.ks, store, md, self.key)
        except EtcdError as e:
            self._down(e)
            return
        except (seal.SealError, StoreError, ValueError, TypeError) as e:
            log.error("%s: the fleet's order cannot be used: %s", md.name, e)
            return
        if what:
            log.info("%s: %s", md.name, what)

    def order_saved(self, store: Store, md: ManagedDomain) -> None:
        """The Driver's hook: the order under way is shared. Its trouble never fails the
        renewal (at worst a renewer taking over places another order)."""
        try:
            orders.publish(self.etcd, self.ks, store, md, self.key, self.node)
        except EtcdError as e:
            self._down(e)
        except (seal.SealError, StoreError, ValueError, TypeError) as e:
            log.error("%s: cannot share the order: %s", md.name, e)

    def _live_nodes(self) -> list[str]:
        """The nodes with a heartbeat key (this one among them); this one alone when etcd
        does not answer (claiming then meets the outage)."""
        try:
            under = self.ks.nodes()
            live = {self.ks.leaf(kv.key, under) for kv in self.etcd.get_prefix(under, True)}
        except EtcdError:
            live = set()
        return sorted(live | {self.node})

    def share(self, md: ManagedDomain, domain: str, token: str, key_authz: str) -> None:
        """The Driver's hook: every live node serves the answer before the CA is told.
        Renewing alone (etcd away) it goes on without them."""
        try:
            challenges.share(self.session, md, domain, token, key_authz)
        except CAProblem as p:
            if md.name not in self.solo:
                raise
            log.warning("%s: the fleet cannot serve the http-01 answer for %s (%s); asking "
                        "the CA anyway, as this node renews alone", md.name, domain, p.detail)

    def finish(self, store: Store, config: Config, results: Iterable) -> None:
        """Publish what was renewed, then take the answers back and let the locks go."""
        for r in results:
            md = config.md_by_name(r.md)
            try:
                if md is not None and r.outcome == "renewed":
                    self.publish(store, md, STAGING)
                if md is not None and r.outcome != "busy":
                    self._order_after(store, md)
            finally:
                self.solo.discard(r.md)
                self.unreleased[r.md] = list(md.domains) if md is not None else []
                self._release(r.md)

    def _order_after(self, store: Store, md: ManagedDomain) -> None:
        """After a run: an order it kept is shared as it is now, one done with forgotten."""
        try:
            if store.exists(STAGING, md.name, orders.ORDER):
                orders.publish(self.etcd, self.ks, store, md, self.key, self.node)
            else:
                orders.forget(self.etcd, self.ks, md.name)
        except EtcdError as e:
            self._down(e)
        except (seal.SealError, StoreError, ValueError, TypeError) as e:
            log.error("%s: cannot share the order: %s", md.name, e)

    def _release(self, name: str) -> None:
        try:
            challenges.unshare(self.session, self.unreleased[name])
            coord.release(self.session, name)
            del self.unreleased[name]
        except EtcdError as e:
            self._down(e)  # again at the next heartbeat

    def publish(self, store: Store, md: ManagedDomain, group: str) -> str:
        try:
            what = sets.publish(self.etcd, self.ks, store, group, md, self.key, self.node)
            staged = store.read_json(group, md.name, "md.json") or {}
            acct = (staged.get("ca") or {}).get("account")
            if isinstance(acct, str):
                sets.publish_account(self.etcd, self.ks, store, acct, self.key, self.node)
        except EtcdError as e:
            self._down(e)
            return f"not published: {e}"
        except StoreError as e:
            log.error("%s: cannot publish: %s", md.name, e)
            return f"not published: {e}"
        log.info("%s: %s", md.name, what)
        return what

    # -- the node's heartbeat ----------------------------------------------------------------
    def view(self) -> dict:
        """The fleet for md-status: nodes, locks, what each serves; with etcd away, the
        last view and why it is old."""
        from . import cluster
        try:
            if self.outage:  # this cycle's sync found etcd away: no more waiting on it
                raise Unavailable(self.outage)
            self._view = cluster.view(self)
            self._view.pop("error", None)
        except EtcdError as e:
            self._down(e)
            self._view = {**self._view, "error": str(e)}
        return self._view

    def heartbeat(self, store: Store, config: Config) -> None:
        """The node key, and what the node serves where it changed. Nothing while etcd is
        away: the lease is kept alive by its thread, and heartbeats resume with etcd."""
        if self.outage:
            return
        serves = {}
        for md in config.mds:
            serves[md.name] = {k: {"serial": i.serial, "not-after": sets.iso(i.not_after)}
                               for k, i in credentials.infos(store, DOMAINS, md).items()
                               if i is not None}
        for name in list(self.unreleased):
            self._release(name)
        try:
            self.session.ensure()
            self.session.put_node(mds=len(serves))
            self.serving.publish(serves, self.session.lease)
        except EtcdError as e:
            self._down(e)

    def _stop_mirror(self) -> None:
        if self.mirror is not None:
            self.mirror.stop.set()
            self.mirror = None

    def close(self) -> None:
        self._stop_mirror()
        self.session.close()


__all__ = ["Fleet", "Unavailable"]
