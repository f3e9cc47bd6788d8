"""OCSP stapling upkeep: where an OCSP response is refreshed.

The worker runs `Stapler.run` every cycle. For each stapled certificate
(store/staples.py says which, and keeps the answers) it asks the responder
again when less than MDStaplingRenewWindow of the response's validity is
left, verifies the answer, backs off on errors (`ocsp/<md>/job.json`) and
drops responses no certificate uses once they are older than
MDStaplingKeepResponse. Apache reads the responses through the relay in
`wsgi/app.py` (docs/ocsp.md), so a TLS handshake never waits for a CA.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from ..core import ocsp
from ..core.job import now_utc
from ..core.jsonfmt import http_date
from ..core.model import Config, GlobalSettings
from ..core.ocsp import OCSPError
from ..core.problem import CAProblem
from ..core.schedule import backoff_delay
from ..notify import Messenger
from ..store import jobs
from ..store.fs import OCSP, Store, StoreError
from ..store.locks import Busy, store_lock
from ..store.staples import (
    MIN_SPACING,
    OTHER,
    Target,
    cleanup,
    load,
    refresh_at,
    targets,
)

log = logging.getLogger(__name__)

MAX_SLEEP = 300.0  # look at least this often: certificates activated by root show up here
FETCH_TIMEOUT = 10.0
MAX_RESPONSE = 64 * 1024
PROBLEM_REJECTED = "urn:org:apache-md:ocsp:response-rejected"
PROBLEM_UNREACHABLE = "urn:org:apache-md:ocsp:responder-unreachable"


# -- fetching --------------------------------------------------------------------------------

def http_fetch(url: str, der: bytes, proxy: str | None = None, proxy_ca: str | None = None,
               timeout: float = FETCH_TIMEOUT) -> bytes:
    """POST the request (RFC 6960 A.1), through MDHttpProxy as for the CA (ca/http)."""
    # loaded on the first fetch: the check loop rarely needs them (memory of an idle worker)
    import requests

    from . import http
    gate = http.gate_for(url)
    if held := gate.held_for(url):  # the responder's Retry-After still runs: do not ask yet
        raise Unreachable(f"{url} asked to wait (Retry-After)", held)
    try:
        session = http.session(proxy, proxy_ca)
    except CAProblem as e:
        raise Unreachable(e.detail or str(e)) from None
    with session as s:
        try:
            r = s.post(url, data=der, timeout=timeout, stream=True,
                       headers={"Content-Type": ocsp.CONTENT_TYPE_REQUEST,
                                "Accept": ocsp.CONTENT_TYPE_RESPONSE})
            body = r.raw.read(MAX_RESPONSE + 1, decode_content=True)
        except requests.RequestException as e:
            raise Unreachable(f"{url}: {e}") from None
    gate.answered(url, r)
    if r.status_code != 200:
        held = http.holds_back(r)
        raise Unreachable(f"{url} answered HTTP {r.status_code} {r.reason}", held)
    if len(body) > MAX_RESPONSE:
        raise OCSPError(f"{url}: response larger than {MAX_RESPONSE} bytes")
    return body


class Unreachable(OCSPError):
    """No OCSP answer at all (network, HTTP status); `retry_after`: the responder's."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Report:
    wake: datetime | None = None  # when a response needs attention next
    revoked: list[str] = field(default_factory=list)  # MDs newly found revoked
    renewed: list[str] = field(default_factory=list)  # "md: label" with a new response
    failed: list[str] = field(default_factory=list)
    targets: int = 0

    def wake_at(self, t: datetime | None) -> None:
        if t is not None and (self.wake is None or t < self.wake):
            self.wake = t


class Stapler:
    """Keeps OCSP responses fresh; one instance lives as long as the worker."""

    def __init__(self, fetch: Callable[..., bytes] = http_fetch,
                 rnd: random.Random | None = None):
        self.fetch = fetch
        self.rnd = rnd or random.Random()
        self._told: set[str] = set()  # problems logged once per certificate

    def _once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._told:
            self._told.add(key)
            log.info(msg, *args)

    def run(self, store: Store, config: Config, messenger: Messenger,
            now: datetime | None = None) -> Report:
        now = now or now_utc()
        report = Report()
        ts = targets(store, config)
        report.targets = len(ts)
        groups: dict[str, list[Target]] = {}
        for t in ts:
            if t.url is None:
                self._once(t.id, "%s: certificate (%s) with serial %s has no OCSP responder URL, "
                           "not stapled", t.md, t.label, t.serial)
            elif t.issuer is None:
                self._once(t.id, "%s: the issuer of certificate (%s) with serial %s is not in its "
                           "chain file, not stapled", t.md, t.label, t.serial)
            else:
                groups.setdefault(t.md, []).append(t)
        for md, group in groups.items():
            try:
                self._run_md(store, md, group, config.settings, messenger, now, report)
            except (StoreError, OSError) as e:
                log.error("%s: OCSP: %s", md, e)
        cleanup(store, config.settings.stapling_keep_response, {(t.md, t.file) for t in ts}, now)
        if report.revoked:
            report.wake_at(now)  # renew at once (plan sees the revoked status)
        return report

    def run_safely(self, store: Store, config: Config, messenger: Messenger) -> datetime | None:
        """`run` for the worker loop: a bug here must not stop renewals. Returns when the
        worker should look again: at the next refresh, and at least every MAX_SLEEP while
        anything is stapled (certificates activated by another process show up that way)."""
        cap = now_utc() + timedelta(seconds=MAX_SLEEP)
        try:
            report = self.run(store, config, messenger)
        except Exception:  # noqa: BLE001
            log.exception("OCSP stapling pass failed")
            return cap
        if report.targets:
            report.wake_at(cap)
        return report.wake

    def _run_md(self, store: Store, md: str, group: list[Target], settings: GlobalSettings,
                messenger: Messenger, now: datetime, report: Report) -> None:
        due, stored = [], {}
        for t in group:
            s, fetched = load(store, md, t.id)
            stored[t.id] = s
            at = refresh_at(s, fetched, settings)
            if at is None or at <= now:
                due.append(t)
            else:
                report.wake_at(at)
        if not due:
            return
        job = jobs.load(store, OCSP, md)
        if job.errors and job.next_run and job.next_run > now:
            report.wake_at(job.next_run)  # backing off
            return
        try:
            with store_lock(store, f"ocsp-{md}", timeout=0):
                self._refresh(store, md, due, stored, settings, messenger, now, report)
        except Busy:
            report.wake_at(now + MIN_SPACING)  # another worker is at it

    def _refresh(self, store: Store, md: str, due: list[Target], stored: dict,
                 settings: GlobalSettings, messenger: Messenger, now: datetime,
                 report: Report) -> None:
        job = jobs.load(store, OCSP, md)
        job.start_run(now)
        errors: list[tuple[Target, OCSPError]] = []
        for t in due:
            job.progress(None, f"status of certid {t.id}, contacting {t.url}")
            try:
                answer = self.ask(t, now)
            except OCSPError as e:
                errors.append((t, e))
                log.warning("%s: OCSP response for certificate (%s) serial %s: %s",
                            md, t.label, t.serial, e)
                continue
            store.write_json(OCSP, md, t.file, ocsp.to_json(answer))
            detail = (f"certificate status is {answer.status.upper()}, status valid "
                      f"{http_date(answer.this_update)} - {http_date(answer.valid_until)}")
            job.progress(None, f"status of certid {t.id}: {detail}")
            report.renewed.append(f"{md}: {t.label}")
            if answer.status == ocsp.REVOKED:
                old = stored.get(t.id)
                log.warning("%s: certificate (%s) with serial %s is REVOKED (OCSP)",
                            md, t.label, t.serial)
                if (old is None or old.status != ocsp.REVOKED) and md != OTHER:
                    report.revoked.append(md)
            else:
                log.info("%s: OCSP response for (%s) %s", md, t.label, detail)
            s, fetched = load(store, md, t.id)
            report.wake_at(refresh_at(s, fetched, settings))
        if errors:
            t, e = errors[-1]
            unreachable = isinstance(e, Unreachable)
            job.fail(20014 if unreachable else 22,
                     "OCSP responder unreachable" if unreachable else "OCSP response rejected",
                     PROBLEM_UNREACHABLE if unreachable else PROBLEM_REJECTED,
                     f"OCSP status update failed ({job.errors + 1}. time) for certificate "
                     f"({t.label}) serial {t.serial}: {e}", log_type="ocsp-error")
            delay = backoff_delay(job.errors, settings.retry_delay, rnd=self.rnd)
            retry = now + timedelta(seconds=max(delay, getattr(e, "retry_after", None) or 0))
            # job.json keeps whole seconds: round up, never retry before the backoff is over
            job.next_run = retry.replace(microsecond=0) + timedelta(seconds=bool(retry.microsecond))
            report.wake_at(job.next_run)
            report.failed += [f"{md}: {t.label}" for t, _ in errors]
            messenger.send(job, "ocsp-errored", md)
        else:
            job.finished = True
            job.errors = 0
            job.next_run = None
            job.last = {"status": 0}
            job.add_log("finished")
        if len(errors) < len(due):
            messenger.send(job, "ocsp-renewed", md)
        jobs.save(store, OCSP, job)

    def ask(self, t: Target, now: datetime) -> ocsp.Answer:
        """Request, fetch and verify one response."""
        assert t.url and t.issuer
        nonce = ocsp.new_nonce()
        der = self.fetch(t.url, ocsp.build_request(t.cert, t.issuer, nonce),
                         t.proxy, t.proxy_ca)
        return ocsp.verify(der, t.cert, t.issuer, now, nonce)


# -- what status and the relay see -----------------------------------------------------------


