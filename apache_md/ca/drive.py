"""One renewal run for one MD: account, order, challenges, CSR, chain, staging.

Everything a run learns goes into `staging/<md>/job.json`, so status shows
progress while it runs and a restarted worker resumes with the same error
count and backoff. A run never raises for CA or network trouble: it records
the problem in the job and returns.
"""
from __future__ import annotations

import collections
import os
import contextlib
import logging
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Sequence

from ..core import aprstatus, crypto
from ..core.job import Job, now_utc
from ..core.mdjson import md_to_json
from ..core.model import GlobalSettings, ManagedDomain
from ..core.problem import CAProblem
from ..core.schedule import ARI_EXPLAINED, backoff_delay, missing_reason, next_check, ready_at
from ..notify import Messenger
from ..store import broken, castats, credentials, jobs
from ..store.fs import DOMAINS, STAGING, Store, StoreError
from ..store.locks import Busy, md_lock
from . import DRIVE_PARALLEL, accounts, keymaker, orders, preflight, tailscale
from .challenges import (
    Setup,
    authz_types,
    check_names,
    preferred_types,
    setup_dns01,
    setup_http01,
    teardown,
)
from .client import CAConnection, OrderDead, authorized, authz_problem, identifiers
from .outages import Outages

log = logging.getLogger(__name__)
PENDING, READY, PROCESSING, VALID, INVALID = "pending", "ready", "processing", "valid", "invalid"
IN_FLIGHT = 4  # MDs under way per working one (drive_all)
IDLE_BACK = 2.0  # seconds an MD back from waiting waits for a place at most
REFRESH_EVERY = 0.5  # seconds between status refreshes while drives run
# ... and at most this share of the time: the refresh renders every MD under way (their
# job logs change) in the interpreter the drives need; a third of it was half of the
# Python time of `renew` for 50 new MDs
REFRESH_SHARE = 0.1
# Seconds between job saves while a run progresses, as mod_md; what is not saved yet is
# saved before anything that may take a while (a command, waiting for the CA).
PROGRESS_SAVE_EVERY = 0.5


class _Stale(Exception):
    """An order left by an earlier run that cannot go on (an authorization invalid)."""


@dataclass
class RunResult:
    md: str
    outcome: str  # "renewed", "failed", "busy", "vetoed", "skipped"
    detail: str = ""
    job: Job | None = None


class Places:
    """`n` places to work: a semaphore that serves the MDs in the order they came, and
    an MD back from waiting for the CA before those: it is further on, and the MDs it
    waited with (an account registration) must not find their places taken by the next
    ones. (threading.Semaphore is not fair: MDs waiting longest could wait for ever.)"""

    def __init__(self, n: int):
        self.free = self.n = n
        self.back = 0  # MDs back from waiting that want a place
        self._queue: collections.deque[object] = collections.deque()  # the others, in order
        self._cond = threading.Condition()

    def acquire(self, blocking: bool = True, timeout: float | None = None,
                back: bool = False) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        me = object()
        with self._cond:
            if back:
                self.back += 1
            else:
                self._queue.append(me)
            try:
                while self.free == 0 or (not back and (self.back or self._queue[0] is not me)):
                    left = None if deadline is None else deadline - time.monotonic()
                    if not blocking or (left is not None and left <= 0):
                        return False
                    self._cond.wait(left)
                self.free -= 1
                return True
            finally:
                if back:
                    self.back -= 1
                else:
                    self._queue.remove(me)
                self._cond.notify_all()  # the next in line may go

    def release(self) -> None:
        with self._cond:
            if self.free >= self.n:
                raise ValueError("place released too many times")
            self.free += 1
            self._cond.notify_all()


class Driver:
    def __init__(self, store: Store, settings: GlobalSettings, messenger: Messenger,
                 stop: threading.Event | None = None, progress=None,
                 rnd: random.Random | None = None, outages: Outages | None = None):
        self.store = store
        self.settings = settings
        self.messenger = messenger
        self.stop = stop or threading.Event()
        self.progress_cb = progress  # called with (md_name, text) for `renew` output
        self.rnd = rnd or random.Random()
        self.outages = outages  # the worker's: CAs that failed, probed until they answer
        # places for MDs that work at once (drive_all); one that waits for the CA gives its
        # place to another meanwhile
        self.slots: Places | None = None
        self._local = threading.local()  # `held`: this thread's run has a place
        self._saved: dict[str, float] = {}  # MD -> time.monotonic() of its last job save
        self._unsaved: set[str] = set()  # MDs with progress not saved yet
        # In a fleet: share(md, domain, token, key_authz) makes every node serve an http-01
        # answer before the CA is told (raises CAProblem naming a node that lags)
        self.share: Callable[[ManagedDomain, str, str, str], None] | None = None
        # In a fleet: order_saved(store, md) shares the order under way (a new one, the key
        # staged for finalize), so the node taking a dead renewer's MD over goes on with it
        self.order_saved: Callable[[Store, ManagedDomain], None] | None = None
        self.keys: keymaker.KeyMaker | None = None  # drive_all's: keys made ahead for its MDs

    # -- entry point ---------------------------------------------------------------
    def run(self, md: ManagedDomain, reason: str | None = None) -> RunResult:
        """One renewal run; `reason` (why it is due) is the worker's to log: mod_md's
        job log has it only for a CA's ARI explanation."""
        self._local.untaken = list(md.keyspecs)  # the keys drive_all's KeyMaker counts on
        try:
            with self._slot(), md_lock(self.store, md.name, timeout=0):
                return self._run_locked(md, reason)
        except Busy:
            return RunResult(md.name, "busy", "another apache-md process is driving this MD")
        finally:
            self._settle(list(self._local.untaken))

    def _run_locked(self, md: ManagedDomain, reason: str | None = None) -> RunResult:
        job = jobs.find(self.store, STAGING, md.name)
        fresh = job is None
        job = job or Job(md.name)
        issuer = credentials.issuer_url(self.store, md)
        n = len(md.ca_urls)
        if fresh and issuer in md.ca_urls:
            # A new renewal starts at the CA that issued the current certificate,
            # so a failover sticks (mod_md keeps its effective CA the same way).
            job.ca_index = md.ca_urls.index(issuer)
        # `renewing` may veto, before every run (a first issuance too), as mod_md.
        if not self.messenger.send(job, "renewing", md.name):
            # asked again at the next check (MDCheckInterval), not at every wake-up
            job.next_run = now_utc() + timedelta(
                seconds=next_check(self.settings.check_interval, self.rnd))
            jobs.save(self.store, STAGING, job)
            return RunResult(md.name, "vetoed", "MDMessageCmd vetoed the renewal", job)
        if n > 1 and job.errors >= self.settings.retry_failover:
            job.ca_index = (job.ca_index + 1) % n  # failover: round robin over ca.urls
            self._purge_staged_set(md)
        ca_url = md.ca_urls[job.ca_index % n] if n else ""
        reset = not self._staging_current(md)  # before this run writes staging's md.json
        job.start_run()
        if reason and reason.startswith(ARI_EXPLAINED):
            job.progress(None, reason)
        staged_md = broken.read_json(self.store, STAGING, md.name, "md.json",
                                     "the renewal starts afresh")
        resume = self._resumable(md, job, staged_md, ca_url)
        account = orders.staged_account(staged_md) if resume else None
        # written again, durably, once the account is known; the account an order left
        # here was placed with stays, should this run end before it knows its own
        self.store.write_json(STAGING, md.name, "md.json",
                              md_to_json(md, ca_url=ca_url, account=account),
                              mode=accounts.SECRET_MODE if md.eab_hmac else None, durable=False)
        setups: list[Setup] = []  # the answers in place for the order under way
        try:
            if tailscale.applies(md):
                tailscale.obtain(self.store, md, ca_url,
                                 lambda a, d: self._progress(job, md, a, d), self.stop)
            else:
                self._obtain(md, job, ca_url, setups, reset, resume, account)
        except OrderDead as p:  # the next run places a new one
            orders.remove(self.store, md.name)
            return self._failed(md, job, p, ca_url)
        except CAProblem as p:  # the order, if any, goes on at the next run
            return self._failed(md, job, p, ca_url)
        except StoreError as e:
            return self._failed(md, job, CAProblem(20014, "store error", None, str(e)), ca_url)
        except Exception as e:  # noqa: BLE001 - a bug must not kill the worker
            log.exception("%s: unexpected error during renewal", md.name)
            return self._failed(md, job, CAProblem(20014, type(e).__name__, None,
                                                   f"internal error: {e}"), ca_url)
        finally:
            self._tear_down(md, setups)
        return self._succeeded(md, job, ca_url)

    @contextlib.contextmanager
    def _slot(self):
        """A place to work (drive_all's), for the whole run."""
        self._local.held = bool(self.slots) and self.slots.acquire()
        try:
            yield
        finally:
            if self._local.held:
                self.slots.release()

    @contextlib.contextmanager
    def _idle(self):
        """While the CA keeps this MD waiting, another may work in its place. Back, it
        works without one after IDLE_BACK seconds: the MDs in the places may be waiting
        for it (a lock it holds), never a deadlock."""
        if getattr(self._local, "idle", False):  # within another wait: without one already
            yield
            return
        if getattr(self._local, "held", False):
            self.slots.release()
            self._local.held = False
        self._local.idle = True
        try:
            yield
        finally:
            self._local.idle = False
            if self.slots:
                self._local.held = self.slots.acquire(timeout=IDLE_BACK, back=True)

    # -- the protocol ------------------------------------------------------------------
    def _staging_current(self, md: ManagedDomain) -> bool:
        """mod_md keeps a staging area whose md.json is not older than the live one."""
        try:
            staged = os.stat(self.store.fspath(STAGING, md.name, "md.json")).st_mtime
        except OSError:
            return False
        try:
            return staged >= os.stat(self.store.fspath(DOMAINS, md.name, "md.json")).st_mtime
        except OSError:
            return True

    def _obtain(self, md: ManagedDomain, job: Job, ca_url: str, setups: list[Setup],
                reset: bool = True, resume: bool = False,
                staged_account: str | None = None) -> None:
        # The job log follows mod_md's driver step by step (its md_result changes: an
        # activity, or the activity with what it learnt), so that md-status reads alike.
        types = preferred_types(md, self.settings)
        check_names(md, types, self.settings)
        self._progress(job, md, None, f"MDomain {md.name} initialized with support for ACME "
                                      f"challenges {' '.join(types)}")
        self._progress(job, md, "Checking staging area")
        if reset:
            self._progress(job, md, "Resetting staging area")
        self._progress(job, md, "Assessing current status")
        if reset:
            self._progress(job, md, f"Resetting staging for {md.name}")
        self._progress(job, md, f"Contacting ACME server for {md.name} at {ca_url}", save=True)
        for spec in md.keyspecs:  # a key spec that cannot be made fails before the CA
            self._check_spec(md, spec)
        conn = CAConnection(ca_url, ca_certs=md.ca_certs, proxy=md.proxy_url,
                            proxy_ca_certs=md.proxy_ca_certs, stop=self.stop)
        conn.on_wait = lambda: self._flush(job)
        conn.idle = self._idle
        go = self.keys.go if self.keys is not None else None
        conn.meanwhile = go  # while another MD's fetch of the directory waits for the CA
        meta = conn.meta
        profile = self._profile(md, meta)
        self._progress(job, md, f"Driving ACME to renew {md.keyspecs[0].name} certificate "
                                f"for {md.name}")
        self._progress(job, md, f"Selecting account to use for {md.name}")
        # Key types a run cut short has staged already are not ordered again (mod_md's
        # load_missing_creds) while the set is incomplete (a complete one: renewed anew,
        # forced); the key an order may have been finalized with is the staged one.
        partial = resume and not credentials.staged_complete(self.store, md)
        done = {s.name for s in md.keyspecs if partial and self._staged_done(md, s)}
        keys = {s.name: k for s in md.keyspecs if resume and s.name not in done
                and (k := self._staged_key(md, s)) is not None}
        staged_keys = set(keys)
        self._settle([s for s in md.keyspecs if s.name in done or s.name in staged_keys])
        # New keys are taken at finalize (ca/keymaker makes them ahead). They are made
        # after the account: on a fresh store the MDs' keys (40 ms of CPU each) made by
        # every key thread meanwhile slowed the account's own (250 ms) that every MD
        # waits for, so one thread works while it is made (warm); all of them while
        # waiting for the directory or the account only when that fetch or registration
        # waits for the CA (a Retry-After, a slow answer).
        account = accounts.obtain(self.store, conn, md, staged_account, meanwhile=go,
                                  registering=self.keys.warm if self.keys else None)
        if go is not None:
            go()
        # The account of this run (one per CA + EAB pair), for md.json's ca.account. Its
        # directory is synced with the certificate's (below): the staged set is durable
        # as a whole, with one directory sync instead of one per file.
        self.store.write_json(STAGING, md.name, "md.json",
                              md_to_json(md, ca_url=conn.url, account=account.id),
                              mode=accounts.SECRET_MODE if md.eab_hmac else None,
                              sync_dir=False)
        if account.new:
            self._progress(job, md, f"Creating new ACME account for {md.name}")
            if account.replaced:
                self._progress(job, md, None, f"the unusable account(s) "
                                              f"{', '.join(account.replaced)} were set aside")
            log.info("%s: registered a new account %s at %s", md.name, account.id, conn.url)
        if resume and staged_account and staged_account != account.id:
            self._drop_saved(md, job, f"it was placed with the account {staged_account}, "
                                      f"this run uses {account.id}")
        # `replaces` only where it can mean something: ARI on, offered by this CA,
        # and the current certificate issued by this very CA.
        ari = bool(md.ari_renewals and conn.has_renewal_info
                   and credentials.issuer_url(self.store, md) == ca_url)
        for i, spec in enumerate(md.keyspecs):
            self._check_stop()
            if i:
                self._progress(job, md, f"Driving ACME to renew {spec.name} certificate "
                                        f"for {md.name}")
                self._progress(job, md, f"Selecting account to use for {md.name}")
            if spec.name in done:
                self._progress(job, md, None, f"The {spec.name} certificate is staged already")
                continue
            # a staged key is the one an order of an earlier run may have been finalized
            # with: it stays that order's (and a new order's) key; no other is taken then
            key, staged = keys.get(spec.name), spec.name in staged_keys
            order = self._resumed(conn, md, job, setups) if resume else None
            if order is not None and order.body.status.name in (PROCESSING, VALID) \
                    and not staged:
                self._drop_order(md, setups, job, f"it is {order.body.status.name}, but the "
                                                  f"{spec.name} key it was finalized with is "
                                                  f"not staged")
                order = None
            if order is not None and order.body.status.name == PENDING:
                try:
                    self._authorize(conn, md, job, order, types, setups, resumed=True)
                except _Stale as e:  # mod_md: found 'invalid' domains, start over
                    self._drop_order(md, setups, job, str(e))
                    order = None
            if order is None:
                replaces = self._replaces(md, spec) if ari else None
                self._progress(job, md, f"Creating new order, key-spec={spec.label}, "
                                        f"profile={profile or 'none'}, "
                                        f"replacing-cert={replaces or 'none'}")
                order = conn.new_order(identifiers(md.domains), profile, replaces)
                self._save_order(md, order, setups)
                if self.order_saved is not None:
                    self.order_saved(self.store, md)
                self._authorize(conn, md, job, order, types, setups)
            if order.body.status.name in (PROCESSING, VALID):  # finalized by a run cut short
                self._progress(job, md, "Waiting for finalized order to become valid")
                cert_url = conn.issued(order.uri)
            else:
                self._progress(job, md, "Waiting for order to become ready")
                self._progress(job, md, f"Finalizing order for {md.name}")
                # staged before finalize (durable; its directory synced with the certificate's)
                if not staged:
                    key = keys[spec.name] = self._new_key(md, spec)
                    self.store.write_bytes(STAGING, md.name, spec.file_name("privkey"),
                                           crypto.key_to_pem(key, self.store.key), mode=0o600,
                                           sync_dir=False)
                    if self.order_saved is not None:
                        self.order_saved(self.store, md)
                self._progress(job, md, f"Creating {spec.name} CSR")
                csr = crypto.make_csr(key, md.domains, md.must_staple)
                self._progress(job, md, f"Submitting {spec.name} CSR to CA")
                cert_url = conn.finalize(order, csr)
                self._progress(job, md, "Waiting for finalized order to become valid")
            self._progress(job, md, None, "ACME server order status is 'valid'.")
            self._progress(job, md, "Waiting for finalized order to become valid")
            self._progress(job, md, f"Retrieving {spec.name} certificate chain for {md.name}")
            pem = conn.download(cert_url)
            chain = crypto.load_chain(pem.encode() if isinstance(pem, str) else pem)
            if not chain or not crypto.key_matches_cert(key, chain[0]):
                raise OrderDead(20014, "Bad certificate", None,
                                "the CA returned a certificate that does not match the key")
            if md.must_staple and not crypto.has_must_staple(chain[0]):
                # Let's Encrypt dropped Must-Staple in 2025; say so instead of looking broken.
                self._progress(job, md, None, f"MDMustStaple is on, but the CA issued the "
                                              f"{spec.name} certificate without the extension")
            self.store.write_bytes(STAGING, md.name, spec.file_name("pubcert"),
                                   crypto.chain_to_pem(chain))
            # done: its answers go, and the next key type places an order of its own
            self._drop_order(md, setups)

    # -- the order under way (ca/orders) ---------------------------------------------------
    def _resumable(self, md: ManagedDomain, job: Job, staged_md: dict | None,
                   ca_url: str) -> bool:
        """Whether what an earlier run left in staging/ may be continued; what may not is
        dropped: its order (the answers it left in place taken down) and, when its md.json
        was for other names or another CA, the key types it staged."""
        why = orders.stale(staged_md, md, ca_url)
        if why is None:
            return True
        self._drop_saved(md, job, why)
        if staged_md is not None and not credentials.staged_complete(self.store, md):
            self._purge_staged_set(md)
        return False

    def _resumed(self, conn: CAConnection, md: ManagedDomain, job: Job,
                 setups: list[Setup]):
        """The order an earlier run left, as the CA has it now, when it can go on."""
        saved = orders.load(self.store, md.name)
        if saved is None:
            return None
        self._progress(job, md, "Loaded order from staging", save=True)
        # what the run cut short left in place: taken down with this order's answers
        setups.extend(s for s in saved.setups if s not in setups)
        order = conn.order(saved.url)
        status = order.body.status.name if order is not None else None
        why = None
        if order is None:
            why = "the CA does not know it"
        elif status == INVALID:
            err = order.body.error
            why = "the CA declared it invalid" + (f" ({err.detail})" if err and err.detail else "")
        elif status not in (PENDING, READY, PROCESSING, VALID):
            why = f"its status is '{status}'"
        elif order.body.expires and order.body.expires <= now_utc() and status != VALID:
            why = f"it expired at {order.body.expires:%Y-%m-%d %H:%M:%S} UTC"
        if why:
            self._drop_order(md, setups, job, why, saved.url)
            return None
        self._progress(job, md, None, f"Continuing the order {saved.url} ({status})")
        return order

    def _save_order(self, md: ManagedDomain, order, setups: list[Setup]) -> None:
        orders.save(self.store, md.name, orders.Saved(
            order.uri, order.body.status.name, list(order.body.authorizations), list(setups),
            order.body.finalize))

    def _drop_order(self, md: ManagedDomain, setups: list[Setup], job: Job | None = None,
                    why: str | None = None, url: str | None = None) -> None:
        """The order under way is done with: its answers taken down, order.json gone."""
        for s in setups:
            teardown(self.store, s, md, self.settings.dns01_version, str(self.store.base))
        setups.clear()
        orders.remove(self.store, md.name)
        if why and job is not None:
            what = f"The order {url}" if url else "The order left by an earlier run"
            self._progress(job, md, None, f"{what} is not continued: {why}")
            log.info("%s: %s is not continued: %s", md.name, url or "the staged order", why)

    def _drop_saved(self, md: ManagedDomain, job: Job, why: str) -> None:
        """Drop the order an earlier run left, if any, with the answers it left in place."""
        saved = orders.load(self.store, md.name)
        if saved is not None:
            self._drop_order(md, saved.setups, job, why, saved.url)

    def _tear_down(self, md: ManagedDomain, setups: list[Setup]) -> None:
        """The end of a run: its answers go; an order kept for the next run says so."""
        if not setups:
            return
        for s in setups:
            teardown(self.store, s, md, self.settings.dns01_version, str(self.store.base))
        setups.clear()
        saved = orders.load(self.store, md.name)
        if saved is not None and saved.setups:
            saved.setups = []
            orders.save(self.store, md.name, saved)

    def _staged_key(self, md: ManagedDomain, spec):
        """The key staged for `spec` by an earlier run, when it is one of that kind."""
        pem = self.store.read_bytes(STAGING, md.name, spec.file_name("privkey"))
        if not pem:
            return None
        try:
            key = crypto.store_key_from_pem(pem, self.store.key)
        except (ValueError, TypeError, crypto.CryptoError):
            return None
        return key if crypto.key_matches_spec(key, spec) else None

    def _staged_done(self, md: ManagedDomain, spec) -> bool:
        """Whether an earlier run staged a usable certificate of `spec` for these names."""
        key = self._staged_key(md, spec)
        pem = self.store.read_bytes(STAGING, md.name, spec.file_name("pubcert"))
        if key is None or not pem:
            return False
        try:
            chain = crypto.load_chain(pem)
        except (ValueError, TypeError, crypto.CryptoError):
            return False
        if len(chain) < 2 or not crypto.key_matches_cert(key, chain[0]):
            return False
        names = crypto.cert_names(chain[0])
        return all(crypto.covers(names, d) for d in md.domains)

    @staticmethod
    def _check_spec(md: ManagedDomain, spec) -> None:
        if spec.kind == "EC" and crypto.curve(spec.curve) is None:
            raise CAProblem(22, "Invalid argument", None,
                            f"MDPrivateKeys of {md.name}: ec curve unknown: {spec.curve}")

    def _new_key(self, md: ManagedDomain, spec):
        """A key used by no one else: made ahead (ca/keymaker), while the worker was idle
        (store/keypool), or now."""
        untaken = getattr(self._local, "untaken", None)
        if untaken and spec in untaken:
            untaken.remove(spec)
        try:
            if self.keys is not None:
                return self.keys.take(spec)
            return keymaker.make_now(self.store, spec)
        except crypto.CryptoError as e:
            raise CAProblem(22, "Invalid argument", None,
                            f"MDPrivateKeys of {md.name}: {e}") from None

    def _settle(self, specs) -> None:
        """Keys this run will not take: drive_all's KeyMaker makes none for them."""
        untaken = getattr(self._local, "untaken", None)
        for spec in specs:
            if untaken and spec in untaken:
                untaken.remove(spec)
            if self.keys is not None:
                self.keys.settle([spec])

    def _profile(self, md: ManagedDomain, meta: dict) -> str | None:
        if not md.profile:
            return None
        offered = meta.get("profiles") or {}
        if md.profile in offered:
            return md.profile
        if md.profile_mandatory:
            raise CAProblem(22, "Invalid argument", None,
                            f"mandatory ACME profile '{md.profile}' is not offered by CA")
        return None

    def _replaces(self, md: ManagedDomain, spec) -> str | None:
        ch = credentials.chain(self.store, DOMAINS, md.name, spec)
        return crypto.ari_cert_id(ch[0]) if ch else None

    def _authorize(self, conn, md, job, order, types, setups, resumed: bool = False) -> None:
        """Set up one challenge per open authorization, tell the CA, wait for its verdict.
        Types are tried in order; a type whose setup fails (the pre-flight, the DNS
        command, MDMessageCmd's challenge-setup) gives way to the next, as in mod_md.
        Each answer set up is recorded in order.json before the CA is told. An order
        `resumed` with an authorization that is no longer pending raises _Stale."""
        for authzr in order.authorizations:  # before any is answered
            if not authorized(authzr) and authzr.body.status.name != PENDING:
                if resumed:
                    raise _Stale(f"the authorization for {authzr.body.identifier.value} is "
                                 f"{authzr.body.status.name}")
                raise authz_problem(authzr)
        pending = []
        self._progress(job, md, "Starting challenges for domains")
        for authzr in order.authorizations:
            if authorized(authzr):
                continue
            body = authzr.body
            domain = body.identifier.value
            self._progress(job, md, None, f"{domain}: selecting suitable authorization "
                                          f"challenge type, this domain supports "
                                          f"{' '.join(types)}")
            candidates = authz_types(types, domain, bool(getattr(body, "wildcard", False)))
            offered = {c.chall.typ: c for c in body.challenges}
            chosen = None
            last_err: CAProblem | None = None
            for typ in candidates:
                challb = offered.get(typ)
                if challb is None:
                    continue
                self._progress(job, md, f"Setting up challenge '{typ}' for domain {domain}")
                try:
                    self._set_up(conn, md, job, typ, domain, challb, setups,
                                 lambda: self._save_order(md, order, setups))
                except CAProblem as p:
                    last_err = p
                    continue
                chosen = challb
                break
            if chosen is None:
                if last_err:
                    raise last_err
                raise CAProblem(22, "Invalid argument", "challenge-mismatch",
                                f"None of offered challenge types for domain {domain} are "
                                f"supported. The CA offers {', '.join(offered) or 'none'}, "
                                f"usable here: {', '.join(candidates) or 'none'}.")
            conn.answer(authzr, chosen)
            pending.append(authzr)
        self._progress(job, md, f"Monitoring challenge status for {md.name}")
        if pending:
            conn.await_authorizations(pending)
        for authzr in order.authorizations:
            self._progress(job, md, None, f"domain authorization for "
                                          f"{authzr.body.identifier.value} is valid")

    def _set_up(self, conn, md, job, typ, domain, challb, setups, record) -> None:
        """One answer in place, `record()`ed (order.json) before anything may take a while."""
        key_authz = conn.key_authorization(challb)
        if typ == "http-01":
            self._add(setups, setup_http01(self.store, domain, key_authz))
            record()
            self._preflight(job, md, domain, challb.chall.encode("token"), key_authz)
            if self.share is not None:
                self._progress(job, md, f"Waiting for every fleet node to serve the http-01 "
                                        f"answer for {domain}", save=True)
                self.share(md, domain, challb.chall.encode("token"), key_authz)
        else:
            self._flush(job)  # the DNS command may take a while
            self._add(setups, setup_dns01(md, domain, key_authz, str(self.store.base)))
            record()
        # before the CA is told: in a cluster, the command distributes the answer
        event = f"challenge-setup:{typ}:{domain}"
        if self.messenger.message_cmd:
            self._flush(job)
        if not self.messenger.send(job, event, md.name):
            job.errors += 1  # as mod_md's md_job_notify: the run's failure counts once more
            status = job.last.get("status") or aprstatus.EGENERAL  # the command's
            raise CAProblem(status, aprstatus.strerror(status), "challenge-setup-failure",
                            f"{job.last.get('detail')} (for {event})")

    @staticmethod
    def _add(setups: list[Setup], setup: Setup) -> None:
        if setup not in setups:  # set up again for an order resumed
            setups.append(setup)

    def _preflight(self, job: Job, md: ManagedDomain, domain: str, token: str,
                   key_authz: str) -> None:
        """Our own http-01 answer, fetched as the CA will; a wrong one fails here."""
        r = preflight.check_configured(self.settings, domain, token, key_authz)
        if r.unanswered:
            raise CAProblem(111, "Apache is not answering", "challenge-setup-failure", r.detail)
        if r.ok is False:
            raise CAProblem(20014, "http-01 answer not served", "challenge-setup-failure",
                            f"the http-01 answer for {domain} is not served correctly "
                            f"(checked locally before asking the CA): {r.detail}")
        if r.ok is None:
            log.info("%s: http-01 preflight for %s skipped: %s", md.name, domain, r.detail)
            job.add_log("progress", detail=f"http-01 preflight skipped: {r.detail}")

    # -- outcome ---------------------------------------------------------------------------
    def _succeeded(self, md: ManagedDomain, job: Job, ca_url: str = "") -> RunResult:
        castats.record(self.store, ca_url, renewed=True)
        if self.outages:
            self.outages.answered(ca_url)
        staged = credentials.staged(self.store, md)
        active = credentials.active(self.store, md)
        complete = credentials.uses_managed(self.store, md) and missing_reason(md, active) is None
        valid_from = ready_at(max(i.not_before for i in staged.values() if i), active, complete,
                              self.settings.activation_delay, now_utc())
        when = valid_from.strftime('%a, %d %b %Y %H:%M:%S GMT')
        job.succeed(valid_from, "The certificate for the managed domain has been renewed "
                    + (f"successfully and can be used from {when} on." if valid_from > now_utc()
                       else f"successfully and can be used (valid since {when}). A graceful "
                            "server restart now is recommended."))
        self._notify_renewed(md, job)
        jobs.save(self.store, STAGING, job)
        return RunResult(md.name, "renewed", "certificates staged", job)

    def _notify_renewed(self, md: ManagedDomain, job: Job) -> None:
        """`renewed` once the staged set may be used; a failing command is retried later."""
        if job.valid_from and job.valid_from > now_utc():
            job.next_run = job.valid_from
            return
        if not self.messenger.send(job, "renewed", md.name):
            job.errors += 1
            job.next_run = now_utc() + timedelta(
                seconds=backoff_delay(job.errors, self.settings.retry_delay, rnd=self.rnd))

    def notify_pending(self, md: ManagedDomain) -> bool:
        """Send a deferred `renewed` for a finished job; True when the job changed."""
        job = jobs.load(self.store, STAGING, md.name)
        if not job.finished or job.notified_renewed:
            return False
        if job.next_run and job.next_run > now_utc():
            return False  # not valid yet, or backing off after a failed notification
        self._notify_renewed(md, job)
        jobs.save(self.store, STAGING, job)
        return True

    def _failed(self, md: ManagedDomain, job: Job, p: CAProblem, ca_url: str = "") -> RunResult:
        if p.description != "Stopped":  # a shutdown is no failure
            castats.record(self.store, ca_url, request_failed=p.ca_url is not None,
                           renewed=False, problem=p.problem or p.description)
        if p.detail or p.problem:  # mod_md: the activity with what went wrong, then the error
            job.progress(job.last.get("activity"), p.detail, p.problem)
        job.fail(p.status, p.description, p.problem, p.detail, subproblems=p.subproblems)
        delay = backoff_delay(job.errors, self.settings.retry_delay, p.problem, self.rnd)
        if p.retry_after:
            delay = max(delay, p.retry_after)
        job.next_run = now_utc() + timedelta(seconds=delay)
        if self.outages and p.ca_trouble:
            self.outages.failed(md, ca_url, p.ca_trouble)
        self.messenger.send(job, "errored", md.name)
        jobs.save(self.store, STAGING, job)
        log.warning("%s: renewal failed: %s", md.name, p.detail or p.description)
        return RunResult(md.name, "failed", p.detail or p.description, job)

    def _purge_staged_set(self, md: ManagedDomain) -> None:
        """The key types staged (a failover, or the names changed) and the order."""
        saved = orders.load(self.store, md.name)
        if saved is not None:
            self._drop_order(md, saved.setups)
        for spec in md.keyspecs:
            self.store.remove(STAGING, md.name, spec.file_name("privkey"))
            self.store.remove(STAGING, md.name, spec.file_name("pubcert"))

    def _progress(self, job: Job, md: ManagedDomain, activity: str | None,
                  detail: str | None = None, save: bool = False) -> None:
        """What the run does now (md-status `renewal.last.activity`, as mod_md says it),
        or a `detail` it learnt; both go into the job log (saved every
        PROGRESS_SAVE_EVERY seconds at most, or now with `save`)."""
        if activity is None and detail:
            activity = job.last.get("activity")  # mod_md's result keeps its activity
        job.progress(activity, detail)
        if save or time.monotonic() - self._saved.get(md.name, 0.0) >= PROGRESS_SAVE_EVERY:
            self._save(job)
        else:
            self._unsaved.add(md.name)
        if self.progress_cb:
            self.progress_cb(md.name, ": ".join(t for t in (activity, detail) if t))

    def _save(self, job: Job) -> None:
        jobs.save(self.store, STAGING, job, durable=False)  # progress: the outcome is synced
        self._saved[job.name] = time.monotonic()
        self._unsaved.discard(job.name)

    def _flush(self, job: Job) -> None:
        """Save progress not saved yet: something that may take a while comes."""
        if job.name in self._unsaved:
            self._save(job)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise CAProblem(20014, "Stopped", None, "apache-md is shutting down")


@contextlib.contextmanager
def keys_closed(driver: Driver):
    """drive_all's KeyMaker stops with it (its threads end, the keys not taken go)."""
    try:
        yield
    finally:
        keys, driver.keys = driver.keys, None
        if keys is not None:
            keys.close()


def drive_all(driver: Driver, decisions: Sequence, parallel: int = DRIVE_PARALLEL,
              refresh: Callable[[], None] | None = None,
              done: Callable[[RunResult], None] | None = None) -> list[RunResult]:
    """Drive the MDs of `decisions` (core/plan), `parallel` at a time.

    `parallel` MDs work at once; one that waits for the CA (its request on the way, a
    Retry-After, a pause before another try) lets another work meanwhile, up to
    IN_FLIGHT times as many under way. While they run, `refresh()` (the status
    snapshot, the watchdog) is called every REFRESH_EVERY seconds, and never for more
    than REFRESH_SHARE of the time however long it takes with many MDs; `done(result)`
    as each run ends.
    Results in the order of `decisions`.
    """
    if not decisions:
        return []
    driver.slots = Places(max(1, parallel))
    driver.keys = keys = keymaker.KeyMaker(driver.store, pool_size=driver.settings.key_pool)
    for d in decisions:
        keys.want(d.md.keyspecs)
    threads = max(1, min(parallel * IN_FLIGHT, len(decisions)))
    with keys_closed(driver), ThreadPoolExecutor(max_workers=threads,
                                                 thread_name_prefix="drive") as pool:
        futures = [pool.submit(driver.run, d.md, d.reason) for d in decisions]
        pending, cost, last = set(futures), 0.0, time.monotonic()
        while pending:
            interval = max(REFRESH_EVERY, cost * (1 - REFRESH_SHARE) / REFRESH_SHARE)
            finished, pending = wait(pending, timeout=max(0.0, last + interval - time.monotonic()),
                                     return_when=FIRST_COMPLETED)
            if done:
                for f in finished:
                    done(f.result())
            if pending and refresh and time.monotonic() - last >= interval:
                start = time.monotonic()
                refresh()
                last = time.monotonic()
                cost = last - start
        return [f.result() for f in futures]
