"""The maintenance loop: read the config, drive what is due, activate, reload.

Runs in the foreground (systemd Type=notify, or a terminal). SIGHUP re-reads
the Apache configuration, SIGTERM stops after the running steps. A config
that fails to load is reported and the last good one stays in force, so a
typo in an Apache file never stops renewals of the certificates already known;
but once mod_md is loaded (an administrator going back to it), the worker stands
down and waits for a configuration without it.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import os
import random
import shlex
import signal
import threading
import time
from datetime import datetime, timedelta
from typing import Callable, TypeVar

import sdnotify

from .apache import activation, renames
from .apache.ctl import default_reload_command
from .apache.syntax import PRETEND_MODULE as MOD_MD
from .ca import DRIVE_PARALLEL, ari
from .ca.outages import Outages
from .ca.stapler import Stapler
from .core.crypto import CryptoError
from .core.job import now_utc
from .core.model import Config, ManagedDomain
from .core.plan import hold_instant_renewals, next_wake, plan
from .core.schedule import next_check
from .notify import Messenger
from .status import snapshot
from .store import broken, certcache, credentials, facts, jobs, keypool, stale_answers, state
from .store.changes import Changes
from .store.fs import STAGING, WATCH, Store, StoreError, StoreKeyError

log = logging.getLogger(__name__)
T = TypeVar("T")
# Longest sleep between cycles: staged sets from `apache-md renew` or another
# node get activated within this time, and a cycle over unchanged certificates
# costs only stat() calls.
MAX_SLEEP = 60.0
# How often a sleeping worker looks for changes made by others, by stat() alone: to
# the config files (a few dozen; an MD added with `apache2ctl graceful`, no systemd
# to send SIGHUP, is seen soon) and to the MDs' files in the store (store/changes.py:
# a certificate copied in by hand shows in md-status within this time).
POLL = 5.0
RETRY_REFUSED = 60.0  # seconds between looks at an unusable md_store.json


class Worker:
    def __init__(self, load_config: Callable[[], Config], reload_command: list[str] | None,
                 max_parallel: int = DRIVE_PARALLEL, once: bool = False):
        self.load_config = load_config
        self.reload_command = reload_command
        self.max_parallel = max_parallel
        self.once = once
        self.renewed: dict[str, datetime] = {}  # MD -> when this process last renewed it
        self.instant_warned: dict[str, datetime] = {}  # MD -> the hold it was warned of
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.reread = threading.Event()
        self.notifier = sdnotify.SystemdNotifier()
        self.config: Config | None = None
        self.read_config: Config | None = None  # the last one read (maybe with errors)
        self.config_stamp: tuple = ()
        self.store: Store | None = None
        self.rnd = random.Random()
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog = int(usec) / 2e6 if usec and usec.isdigit() else None
        self._last_ping = 0.0
        self._renderer = snapshot.Renderer()  # bodies of MDs that did not change
        self.next_cycle = None  # datetime of the next planned check
        self.stapler = Stapler(rnd=self.rnd)
        self.refused: StoreKeyError | None = None  # md_store.json cannot be used
        self.stuck: str | None = None  # what stopped the last step (see _step)
        self.changes = Changes()
        self.outages = Outages()
        self.fleet = None  # fleet.node.Fleet with MDClusterEtcd (docs/cluster.md)
        self.pool_full = False  # the key pool had every key it keeps (until the next cycle)
        self.pool_child = None  # subprocess.Popen filling the key pool
        self._fleet_settings: tuple | None = None  # the MDCluster* values it was made from
        # activation.prepare() ran for the cycle about to start (the start's or a
        # re-read's activation, just before it): the cycle does not do it once more
        self.prepared = False

    # -- systemd -----------------------------------------------------------------------
    def sd(self, *lines: str) -> None:
        self.notifier.notify("\n".join(lines))

    def ping(self) -> None:
        if self.watchdog and time.monotonic() - self._last_ping >= self.watchdog:
            self.sd("WATCHDOG=1")
            self._last_ping = time.monotonic()

    # -- signals ---------------------------------------------------------------------------
    def install_signals(self) -> None:
        def later(*events: threading.Event) -> None:
            # Not set() in the handler: it runs in the main thread, maybe inside wait()
            # of one of these events while that holds the event's lock, and set() takes
            # the lock too (a SIGTERM hung the worker until systemd killed it).
            threading.Thread(target=lambda: [e.set() for e in events], daemon=True).start()

        def on_term(signum, frame):
            log.info("received %s, stopping", signal.Signals(signum).name)
            later(self.stop, self.wake)

        def on_hup(signum, frame):
            log.info("received SIGHUP, re-reading the configuration")
            later(self.reread, self.wake)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    # -- configuration -----------------------------------------------------------------------
    def refresh_config(self) -> bool:
        """Load the config; keep the previous one when the new one has errors."""
        try:
            config = self.load_config()
        except Exception as e:  # noqa: BLE001 - never die on a config problem
            log.error("cannot read the Apache configuration: %s", e)
            return self.config is not None
        # what was read, broken or not: it is read again once a file changes
        self.read_config, self.config_stamp = config, config_stamp(config)
        if config.errors:
            for p in config.errors:
                log.error("%s", p)
            if MOD_MD in config.modules:
                self._stand_down()
            elif self.config is not None:
                log.error("configuration has errors; keeping the previous configuration")
            self.sd("STATUS=configuration has errors, see the log")
            return self.config is not None
        for p in config.warnings:
            log.warning("%s", p)
        store = Store(config.settings.store_dir)
        refusal = None
        try:
            store.init()
        except StoreKeyError as e:
            refusal = e  # the store is there, its key is not: see store_usable()
        except StoreError as e:
            log.error("%s", e)
            return self.config is not None
        self.config, self.store = config, store
        certcache.load(store)  # what the last run knew of the certificates
        self._join_fleet(config)
        log.info("configuration: %d managed domain(s), store %s", len(config.mds), store.base)
        if refusal is not None:
            self._refuse(refusal)
        else:
            renames.follow(store, config)
            stale_answers.purge(store, config)
        return True

    def _join_fleet(self, config: Config) -> None:
        """A Fleet when the configuration names etcd endpoints (a new one only when the
        MDCluster* settings changed); without MDClusterEtcd nothing of it runs."""
        wanted = _cluster_settings(config.settings)
        if self.fleet is not None and wanted == self._fleet_settings:
            # An MD added or a vhost edited: the same node. Closing would drop its lease,
            # so the others would stop waiting for its acks while it answers nothing.
            return
        if self.fleet is not None:
            self.fleet.close()
            self.fleet = None
        self._fleet_settings = wanted
        if config.settings.clustered:
            from .fleet.node import Fleet
            self.fleet = Fleet(config.settings, verify=_verify_http01)
            log.info("fleet node %s, etcd %s", self.fleet.node,
                     " ".join(config.settings.cluster_etcd))

    def _stand_down(self) -> None:
        """mod_md is loaded (again): it manages the certificates, so the previous
        configuration must not stay in force; nothing is renewed or activated until a
        configuration without mod_md is read."""
        if self.config is None:
            return
        log.error("mod_md manages the certificates now: apache-md renews and activates "
                  "nothing until mod_md is disabled again")
        state.clear_worker_info(self.store)
        self.config = self.store = None

    # -- md_store.json -------------------------------------------------------------------------
    def store_usable(self) -> bool:
        """False while md_store.json cannot be used: then nothing is renewed or activated
        (Apache keeps what it serves), the reason is logged once and shown in md-status,
        and the file is looked at again at every wake-up (RETRY_REFUSED, SIGHUP)."""
        try:
            if self.refused:
                store = Store(self.store.base)  # a fresh look, with no cached key
                store.init()
                self.store = store
            else:
                self.store.check_key()
        except StoreKeyError as e:
            self._refuse(e)
            return False
        if self.refused:
            log.info("%s is usable again: renewing and activating again", self.refused.path)
            self.refused = None
        return True

    def _refuse(self, e: StoreKeyError) -> None:
        if self.refused is None or str(self.refused) != str(e):
            log.error("%s", e)
            broken.record(self.store, e.path, e.problem,
                          "refused: nothing is renewed or activated until it is repaired",
                          once=True)
        self.refused = e
        self.sd(f"STATUS=refusing to work: {e.path}: {e.problem}")

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        self.install_signals()
        if not self._await_config():
            return 1
        _settle(first=True)
        delay = self.config.settings.initial_delay
        if self.store_usable():
            self._activate_first()
            self.sd("READY=1", f"STATUS=managing {len(self.config.mds)} domain(s)")
        else:
            self.sd("READY=1")
        if delay > 0 and not self.once:
            self.prepared = False  # others may change the store meanwhile
            self._sleep_until(time.monotonic() + delay)
        while not self.stop.is_set():
            if self.reread.is_set():
                self.reread.clear()
                if not self._await_config(self.refresh_config()):
                    break  # stood down for mod_md, and stopped while waiting
                _settle()
                if self.store_usable():
                    self._activate_first()
            if self.store_usable():
                next_wake = self._step(self.cycle, MAX_SLEEP)
            else:
                self.write_snapshot()  # md-status says why
                next_wake = RETRY_REFUSED
            if self.once:
                break
            self._sleep_until(time.monotonic() + min(MAX_SLEEP, max(0.05, next_wake)))
        self.sd("STOPPING=1")
        self.stop.set()
        if self.pool_child is not None:
            self.pool_child.terminate()  # a key it was writing is a temporary file
            self.pool_child.wait()
        if self.fleet is not None:
            self.fleet.close()  # its locks go at once, not after the lease TTL
        if self.store is not None:
            state.clear_worker_info(self.store)
            # says no worker runs (the MDs' pieces keep what it planned) and leaves what
            # it made for the next start
            self.write_snapshot(persist=True)
        log.info("stopped")
        return 1 if self.refused or self.stuck else 0

    def _activate_first(self) -> None:
        """Activation before the cycle that follows at once: its prepare() is that
        cycle's (at 10,000 MDs the second look at every include and md.json was 0.4 s
        of a restart's first cycle)."""
        self.prepared = self._step(self.activate_and_reload, None) is not None

    def _step(self, step: Callable[[], T], otherwise: T) -> T:
        """A step of the loop, and `otherwise` when the store stops it (a file the
        worker's user may not read, a full disk): logged once while it lasts and tried
        again at the next wake-up, rather than the worker exiting and being restarted
        into the same wall. The message says what to do (for permissions: the chown)."""
        try:
            result = step()
        except (StoreError, OSError) as e:
            problem = str(e) if isinstance(e, StoreError) else self.store.describe(e)
            if problem != self.stuck:
                log.error("%s; nothing more is done until the next wake-up", problem)
                self.stuck = problem
            self.sd(f"STATUS=stuck: {problem}")
            return otherwise
        if self.stuck:
            log.info("the store is usable again")
            self.stuck = None
        return result

    def _await_config(self, loaded: bool | None = None) -> bool:
        """Until there is a configuration in force (`loaded`: refresh_config() said so
        already), read again every minute and at SIGHUP; False when stopped first, or at
        once with --once."""
        ok = self.refresh_config() if loaded is None else loaded
        while not ok:
            self.sd("READY=1", "STATUS=waiting for a valid configuration")
            if self.once:
                return False
            self.wake.wait(60)
            self.wake.clear()
            if self.stop.is_set():
                return False
            self.reread.clear()
            ok = self.refresh_config()
        return True

    def _sleep_until(self, deadline: float) -> None:
        """Sleep, pinging the watchdog; wake early for SIGHUP, SIGTERM, an edited
        configuration and changes others made to the MDs' files (then the next cycle
        shows them)."""
        while not self.stop.is_set() and not self.reread.is_set():
            if self.read_config is not None and \
                    config_stamp(self.read_config) != self.config_stamp:
                log.info("the Apache configuration changed, re-reading it")
                self.reread.set()
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._fill_key_pool()
            self.wake.wait(min(left, self.watchdog or left, POLL))
            self.wake.clear()
            self.ping()
            if not self.refused and self.store is not None:
                changed = self.changes.changed(self.store, self.config)
                if changed:
                    log.debug("files of %s changed: checking now", changed)
                    return
                if self.fleet is not None and self.fleet.changed():
                    log.debug("the fleet published: checking now")
                    return

    def _fill_key_pool(self) -> None:
        """Fill the key pool (store/keypool) while there is nothing else to do, so that
        new MDs need not wait for their keys: in a child process at low priority, which
        the sleeping loop looks at, so this one never loads `cryptography` for it."""
        child = self.pool_child
        if child is not None:
            if child.poll() is not None:
                self.pool_child, self.pool_full = None, True  # until the next cycle
            return
        if self.pool_full or self.refused or self.store is None or self.config is None:
            return
        config = self.config
        want = keypool.wanted({s for md in config.mds for s in md.keyspecs},
                              config.settings.key_pool)
        try:
            lacking = keypool.lacking(self.store, want)
        except (StoreError, OSError, CryptoError) as e:
            log.warning("the key pool is not filled: %s", e)
            lacking = False
        self.pool_child = keypool.start_filling(self.store, want) if lacking else None
        self.pool_full = self.pool_child is None

    def cycle(self) -> float:
        """One check over all MDs; returns seconds until the next one is needed.

        mod_md's order: ask ARI, renew what is due, send `renewed` for staged
        sets whose time has come, activate, then warn (`expiring`) about
        whatever is still inside its warn window without a finished renewal.
        """
        config, store = self.config, self.store
        settings = config.settings
        self.pool_full = False  # a run may take keys, the configuration want others
        self.changes.mark(store, config)  # what this cycle writes is looked at once more
        messenger = Messenger(settings.message_cmd, settings.notify_cmd, str(store.base))
        drivers: list = []

        def driver():
            # The acme library and requests are imported with the first Driver: an idle
            # worker (nothing due, nothing staged) never loads them.
            if not drivers:
                from .ca.drive import Driver
                drivers.append(Driver(store, settings, messenger, self.stop, rnd=self.rnd,
                                      outages=self.outages))
                if self.fleet is not None:
                    drivers[0].share = self.fleet.share
                    drivers[0].order_saved = self.fleet.order_saved
            return drivers[0]
        if not self.prepared:  # else the activation just before did it
            activation.prepare(store, config)  # a broken live set is renewed in this very cycle
        self.prepared = False
        if self.fleet is not None:
            mirror = self.fleet.mirror
            if mirror is None or mirror.config is not config:
                # The handlers must know a new MD before the mirror acknowledges its http-01
                # answers: a node's ack tells the renewer the CA may validate against it.
                self.write_snapshot()
            self.fleet.sync(store, config)  # what others renewed is staged, not renewed again
        known = facts.read_all(store, config)
        for name in self.outages.revive(store, self.stop):  # their CA is back
            if config.md_by_name(name):
                known[name] = facts.read(store, config.md_by_name(name))
        for name in ari.refresh_all(store, config, known, now_utc(), self.stop, self.rnd,
                                    tick=self.ping):
            known[name] = facts.read(store, config.md_by_name(name))
        decisions = self._decide(config, known, now_utc())
        due = [d for d in decisions if d.drive]
        changed = False  # did this cycle change what plan() reads?
        touched: set[str] = set()  # MDs whose facts this cycle may have changed
        for d in decisions:
            if d.staged_waiting:
                changed |= driver().notify_pending(d.md)
                touched.add(d.md.name)
        held_back: set[str] = set()  # vetoed or busy: next check, not at once
        fleet_wait = False  # another node holds an MD's lock: look again within its TTL
        if due and self.fleet is not None:
            due, waiting = self.fleet.claim(store, due)
            held_back |= set(waiting)
            fleet_wait = bool(waiting)
            changed |= bool(waiting)
        if due and not self.stop.is_set():
            self.sd(f"STATUS=renewing {len(due)} domain(s)")
            log.info("renewing: %s", ", ".join(f"{d.md.name} ({d.reason})" for d in due))
            results = self._drive_all(driver(), due)
            if self.fleet is not None:
                self.fleet.finish(store, config, results)
            held_back |= {r.md for r in results if r.outcome in ("vetoed", "busy")}
            self.renewed.update((r.md, now_utc()) for r in results if r.outcome == "renewed")
            touched |= {d.md.name for d in due}
        for name in touched:  # the others' facts stand: read once in this cycle
            known[name] = facts.read(store, config.md_by_name(name))
        changed |= bool(due) | self.activate_and_reload(snapshot=False, prepared=True,
                                                        known=known)
        # OCSP after activation, so new certificates get their response in this cycle.
        # (A revoked status it finds wakes us at once through ocsp_wake.)
        ocsp_wake = self.stapler.run_safely(store, config, messenger)
        now = now_utc()
        # Nothing driven, notified or activated: the decisions stand (a plan over a
        # thousand MDs costs a tenth of a second).
        if changed:
            known = facts.read_all(store, config)
        else:  # OCSP answers may have come: the stapled MDs' facts are read again
            known.update((md.name, facts.read(store, md)) for md in config.mds if md.stapling)
        after = self._decide(config, known, now) if changed else decisions
        for d in after:
            if d.warn:
                self._expiring(store, messenger, d.md)
        wake = next_wake(after, now,
                         now + timedelta(seconds=next_check(settings.check_interval, self.rnd)),
                         held_back)
        wake = min(wake, ocsp_wake or wake, self.outages.next_probe() or wake)
        if fleet_wait:
            wake = min(wake, now + timedelta(seconds=self.fleet.ttl))
        if self.fleet is not None:
            self.fleet.heartbeat(store, config)
        state.write_fleet_view(store, self.fleet.view() if self.fleet is not None else None)
        # the loop sleeps MAX_SLEEP at most
        self.next_cycle = min(wake, now_utc() + timedelta(seconds=MAX_SLEEP))
        self.write_snapshot(known)
        certcache.save(store)  # for the next start, when this cycle learned something
        self.sd(f"STATUS=managing {len(config.mds)} domain(s), next check "
                f"{wake:%Y-%m-%d %H:%M:%S} UTC")
        return max(0.0, (wake - now_utc()).total_seconds())

    def _decide(self, config: Config, known: dict, now) -> list:
        """plan(); a live worker holds what its own activation would renew again at once."""
        decisions = plan(config, known, now)
        if self.once:
            return decisions
        decisions, held = hold_instant_renewals(decisions, known, self.renewed,
                                                config.settings.check_interval, now)
        for d in held:  # once per certificate
            if self.instant_warned.get(d.md.name) != d.renew_at:
                self.instant_warned[d.md.name] = d.renew_at
                log.warning("%s: %s", d.md.name, d.reason)
        return decisions

    def _expiring(self, store: Store, messenger: Messenger, md: ManagedDomain) -> None:
        """`expiring` at most daily, unless a renewed set is already staged.

        Its rate limit lives in watch/<md>/job.json: the staging job vanishes
        at activation and must not exist for MDs that are not renewed. mod_md
        keeps it in its staging job (also for manual and static MDs), which
        counts too: after a switch from mod_md the day it gave is kept.
        """
        if credentials.staged_complete(store, md):
            return
        job = jobs.load(store, WATCH, md.name)
        theirs = jobs.find(store, STAGING, md.name)
        if messenger.rate_limited(job, "expiring") or (
                theirs is not None and messenger.rate_limited(theirs, "expiring")):
            return
        if not messenger.send(job, "expiring", md.name):
            log.warning("%s: %s", md.name, job.last.get("detail"))
        jobs.save(store, WATCH, job)

    def _drive_all(self, driver, decisions) -> list:
        from .ca.drive import drive_all

        def refresh() -> None:
            self.ping()
            self.write_snapshot()
        results = drive_all(driver, decisions, self.max_parallel, refresh)
        for r in results:
            level = logging.INFO if r.outcome in ("renewed", "busy") else logging.WARNING
            log.log(level, "%s: %s %s", r.md, r.outcome, r.detail)
        return results

    # -- activation ------------------------------------------------------------------------
    def activate_and_reload(self, snapshot: bool = True, prepared: bool = False,
                            known: dict | None = None) -> bool:
        """True when activation changed the store (activated, or discarded a failed set).
        `prepared`: activation.prepare() ran in this cycle already; `known`: the MDs'
        facts as this cycle read them."""
        config, store = self.config, self.store
        changed = False
        if self.reload_command is None and os.geteuid() != 0:
            # not allowed to reload Apache: root does it
            activation.request(store, config, prepared=prepared, known=known)
        else:
            report = activation.activate_and_reload(store, config, self.reload_command,
                                                    prepared=prepared, known=known,
                                                    before_reload=self.write_snapshot)
            changed = bool(report.activated or report.failed)
        if snapshot:
            self.write_snapshot()
        return changed

    def write_snapshot(self, known: dict | None = None, persist: bool | None = None) -> None:
        """`known`: the MDs' facts as the cycle read them (others are read); `persist`:
        as snapshot.write_snapshot's."""
        try:
            if not self.stop.is_set():
                state.write_worker_info(self.store, self.next_cycle)
            snapshot.write_snapshot(self.store, self.config, self._renderer, facts=known,
                                    persist=persist)
        except (StoreError, OSError) as e:
            log.error("cannot write the status snapshot: %s",
                      e if isinstance(e, StoreError) else self.store.describe(e))


def _settle(first: bool = False) -> None:
    """The objects alive now (the configuration's above all: 240,000 at 10,000 MDs) out
    of the cyclic collector's sight until the next configuration: every full collection
    of a start went over them again (0.3 s of a restart's first cycle at 10,000 MDs).
    Before freezing what a re-read made, what the previous configuration left in cycles
    is collected (frozen objects are never)."""
    if not first:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def config_stamp(config: Config) -> tuple:
    """The stat of every config file read and of its directory (a file added to
    conf-enabled/ changes that): a cheap test at every wake-up for an edited config, as
    `systemctl reload apache2` reaches the worker only under systemd. apache-md's own
    generated files are left out: the worker rewrites them."""
    own = os.path.join(config.settings.store_dir, "")
    stamp = []
    for path in sorted({p for f in config.files for p in (f, os.path.dirname(f))}):
        if path.startswith(own) or path == own.rstrip(os.sep):
            continue
        try:
            st = os.stat(path)
            stamp.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            stamp.append((path, None))
    return tuple(stamp)


def run_worker(load_config: Callable[[], Config], reload_command: str | None,
               once: bool = False, max_parallel: int = DRIVE_PARALLEL) -> int:
    cmd = shlex.split(reload_command) if reload_command else default_reload_command()
    return Worker(load_config, cmd, max_parallel=max_parallel, once=once).run()


def _verify_http01(settings, domain: str, token: str, key_authz: str):
    """Our own Apache's answer, fetched as the CA will, before the fleet is told it is
    served here (imported when first needed: an idle worker loads no ACME code)."""
    from .ca import preflight
    return preflight.check_configured(settings, domain, token, key_authz)


def _cluster_settings(settings) -> tuple:
    """The MDCluster* values: a Fleet is made anew only when one of them changed."""
    values = (getattr(settings, f.name) for f in dataclasses.fields(settings)
              if f.name.startswith("cluster_"))
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)
