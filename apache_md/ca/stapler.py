"""OCSP stapling upkeep: which certificates, when to ask, where the answers live.

The worker runs `Stapler.run` every cycle. For each stapled certificate (MDs
with MDStapling on; with MDStapleOthers also the SSLCertificateFile
certificates no MD manages, kept under the name "other", as mod_md does) it
keeps a verified response in `ocsp/<md>/ocsp-<sha1>.json`, asks again when
less than MDStaplingRenewWindow of the response's validity is left, backs off
on errors (`ocsp/<md>/job.json`) and drops responses no certificate uses once
they are older than MDStaplingKeepResponse. Apache reads the responses through
the relay in `wsgi` (docs/ocsp.md), so a TLS handshake never waits for a CA.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from cryptography import x509

from ..core import ocsp
from ..core.crypto import CertInfo
from ..core.jsonfmt import http_date, period, put
from ..core.model import Config, GlobalSettings, ManagedDomain, VHost
from ..core.ocsp import OCSPError
from ..core.schedule import backoff_delay
from ..notify import Messenger
from ..store import credentials
from ..store import jobs as jobfile
from ..store.fs import DOMAINS, OCSP, Store, StoreError
from ..store.jobs import Job, now_utc
from ..store.locks import Busy, store_lock

log = logging.getLogger(__name__)

OTHER = "other"  # mod_md's name for certificates of no MD (MD_OTHER)
MAX_SLEEP = 300.0  # look at least this often: certificates activated by root show up here
MIN_SPACING = timedelta(seconds=60)  # see refresh_at
FETCH_TIMEOUT = 10.0
MAX_RESPONSE = 64 * 1024
PROBLEM_REJECTED = "urn:org:apache-md:ocsp:response-rejected"
PROBLEM_UNREACHABLE = "urn:org:apache-md:ocsp:responder-unreachable"

# Issuer lookups verify a signature: remember them per certificate id.
_issuers: dict[str, x509.Certificate | None] = {}


@dataclass
class Target:
    """One certificate to staple."""

    md: str  # MD name, or "other"
    label: str  # key type ("rsa", "secp256r1"), or the certificate file
    cert: x509.Certificate
    issuer: x509.Certificate | None
    id: str  # lowercase hex SHA-1 of the DER
    url: str | None
    proxy: str | None = None
    proxy_ca: str | None = None

    @property
    def file(self) -> str:
        return f"ocsp-{self.id}.json"

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "X")


def _target(md: str, label: str, chain: list[x509.Certificate] | None,
            proxy: str | None, proxy_ca: str | None) -> Target | None:
    if not chain:
        return None
    cid = ocsp.cert_id(chain[0])
    if cid not in _issuers:
        _issuers[cid] = ocsp.issuer_in(chain)
    return Target(md, label, chain[0], _issuers[cid], cid, ocsp.responder_url(chain[0]),
                  proxy, proxy_ca)


def stapled(md: ManagedDomain) -> bool:
    """mod_md staples an MD's certificates when it has MDStapling on and mod_ssl serves them."""
    return md.stapling and bool(md.ssl_vhosts)


def md_targets(store: Store, md: ManagedDomain) -> list[Target]:
    """The MD's active certificates."""
    if md.is_static:
        chains = [(str(i), credentials.file_chain(f)) for i, f in enumerate(md.cert_files)]
    else:
        chains = [(s.name, credentials.chain(store, DOMAINS, md.name, s)) for s in md.keyspecs]
    out = [_target(md.name, label, ch, md.proxy_url, md.proxy_ca_certs) for label, ch in chains]
    return [t for t in out if t]


def _staples_others(vh: VHost, settings: GlobalSettings) -> bool:
    on = vh.stapling if vh.stapling is not None else settings.stapling
    return bool(on and settings.staple_others)


def other_targets(store: Store, config: Config) -> list[Target]:
    """Certificates in SSLCertificateFile lines that no MD manages (MDStapleOthers)."""
    assigned = {id(v) for md in config.mds for v in md.vhosts}
    managed = {f for md in config.mds for f in md.cert_files}
    base = str(store.base) + os.sep
    out, seen = [], set()
    for vh in config.vhosts:
        if not vh.ssl or id(vh) in assigned or not _staples_others(vh, config.settings):
            continue
        for f in vh.cert_files:
            if f in managed or f.startswith(base) or f in seen:
                continue  # our own includes point into the store
            seen.add(f)
            t = _target(OTHER, f, credentials.file_chain(f), config.settings.proxy_url,
                        config.settings.proxy_ca_certs)
            if t and t.id not in {o.id for o in out}:
                out.append(t)
    return out


def targets(store: Store, config: Config) -> list[Target]:
    out = []
    for md in config.mds:
        if stapled(md):
            out += md_targets(store, md)
    return out + other_targets(store, config)


# -- stored responses ------------------------------------------------------------------------

def load(store: Store, md: str, cid: str) -> tuple[ocsp.Stored | None, datetime | None]:
    """The stored response for a certificate id and when it was stored (file mtime)."""
    path = store.path(OCSP, md, f"ocsp-{cid}.json")
    try:
        obj = store.read_json(OCSP, md, path.name)
        mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc) if obj else None
    except (StoreError, OSError) as e:
        log.warning("%s", e)
        return None, None
    return ocsp.from_json(obj), mtime


def refresh_at(stored: ocsp.Stored | None, fetched: datetime | None,
               settings: GlobalSettings) -> datetime | None:
    """When to ask again: once less than MDStaplingRenewWindow of the response's validity is
    left. A responder whose answers arrive already inside that window is not asked again
    sooner than a tenth of the time they have left (at most MIN_SPACING). None: ask now."""
    if not stored or not stored.valid_from or not stored.valid_until or not fetched:
        return None
    start = settings.stapling_renew_window.start(stored.valid_from, stored.valid_until)
    spacing = min(MIN_SPACING, max(timedelta(seconds=1), (stored.valid_until - fetched) / 10))
    return max(start, fetched + spacing)


def load_job(store: Store, md: str) -> Job:
    """The OCSP job of an MD (or of "other")."""
    return jobfile.load(store, OCSP, md)


def job_exists(store: Store, md: str) -> bool:
    return store.exists(OCSP, md, "job.json")


def save_job(store: Store, job: Job) -> None:
    store.write_json(OCSP, job.name, "job.json", job.to_json())


def revoked(store: Store, md: ManagedDomain, active: dict[str, CertInfo | None]) -> list[str]:
    """Key types whose active certificate OCSP says is revoked (mod_md md_reg_has_revoked_certs)."""
    if not md.stapling:
        return []
    out = []
    for name, info in active.items():
        if info and info.sha1:
            s, _ = load(store, md.name, info.sha1)
            if s and s.status == ocsp.REVOKED:
                out.append(name)
    return out


# -- fetching --------------------------------------------------------------------------------

def http_fetch(url: str, der: bytes, proxy: str | None = None, proxy_ca: str | None = None,
               timeout: float = FETCH_TIMEOUT) -> bytes:
    """POST the request (RFC 6960 A.1). MDHttpProxy as for the CA (ca/client): it replaces
    the environment's proxies, and MDHttpProxyCACertificateFile is the trust for an
    https:// proxy only."""
    # loaded on the first fetch: the check loop rarely needs them (memory of an idle worker)
    import requests

    from .client import CAProblem, _ProxyTLSAdapter, proxy_context  # same proxy rules
    with requests.Session() as s:
        if proxy:
            s.proxies = {"http": proxy, "https": proxy}
            s.trust_env = False
            if proxy.lower().startswith("https:"):
                try:
                    adapter = _ProxyTLSAdapter(proxy_context(proxy_ca))
                except CAProblem as e:
                    raise Unreachable(e.detail or str(e)) from None
                s.mount("http://", adapter)
                s.mount("https://", adapter)
        try:
            r = s.post(url, data=der, timeout=timeout, stream=True,
                       headers={"Content-Type": ocsp.CONTENT_TYPE_REQUEST,
                                "Accept": ocsp.CONTENT_TYPE_RESPONSE})
            body = r.raw.read(MAX_RESPONSE + 1, decode_content=True)
        except requests.RequestException as e:
            raise Unreachable(f"{url}: {e}") from None
    if r.status_code != 200:
        raise Unreachable(f"{url} answered HTTP {r.status_code} {r.reason}")
    if len(body) > MAX_RESPONSE:
        raise OCSPError(f"{url}: response larger than {MAX_RESPONSE} bytes")
    return body


class Unreachable(OCSPError):
    """No OCSP answer at all (network, HTTP status)."""


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
        job = load_job(store, md)
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
        job = load_job(store, md)
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
            retry = now + timedelta(
                seconds=backoff_delay(job.errors, settings.retry_delay, rnd=self.rnd))
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
        save_job(store, job)

    def ask(self, t: Target, now: datetime) -> ocsp.Answer:
        """Request, fetch and verify one response."""
        assert t.url and t.issuer
        nonce = ocsp.new_nonce()
        der = self.fetch(t.url, ocsp.build_request(t.cert, t.issuer, nonce),
                         t.proxy, t.proxy_ca)
        return ocsp.verify(der, t.cert, t.issuer, now, nonce)


def cleanup(store: Store, keep: float, in_use: set[tuple[str, str]], now: datetime) -> None:
    """Remove responses of certificates no longer stapled once older than MDStaplingKeepResponse."""
    limit = (now - timedelta(seconds=keep)).timestamp()
    for md in store.names(OCSP):
        try:
            files = list(store.dir(OCSP, md).glob("ocsp-*.json"))
        except OSError:
            continue
        for f in files:
            try:
                if (md, f.name) not in in_use and f.stat().st_mtime < limit:
                    f.unlink()
                    log.info("%s: removed old OCSP response %s", md, f.name)
            except OSError:
                continue


# -- what status and the relay see -----------------------------------------------------------

def cert_ocsp_json(store: Store, md: ManagedDomain, info: CertInfo, settings: GlobalSettings,
                   job: dict[str, Any] | None) -> dict[str, Any]:
    """md-status `cert.<key>.ocsp`: status and valid as mod_md, plus when it was fetched and
    when it is refreshed next (apache-md extras)."""
    obj: dict[str, Any] = {}
    if info.ocsp_url and info.sha1:
        s, fetched = load(store, md.name, info.sha1)
        obj["status"] = s.status if s else ocsp.UNKNOWN
        if s:
            put(obj, "valid", period(s.valid_from, s.valid_until))
            put(obj, "fetched", http_date(fetched))
            put(obj, "refresh-at", http_date(refresh_at(s, fetched, settings)))
        obj["responder"] = info.ocsp_url
    if job is not None:
        obj["renewal"] = job
    return obj


def add_status(cert_obj: dict[str, Any], store: Store, md: ManagedDomain,
               active: dict[str, CertInfo | None], settings: GlobalSettings | None,
               with_log: bool = True) -> None:
    """Put `ocsp` into each active certificate of an md-status `cert` object."""
    if not md.stapling:
        return
    settings = settings or GlobalSettings()
    job = None
    if job_exists(store, md.name):
        job = load_job(store, md.name).to_json(with_log=with_log)
        job.pop("ca-index", None)
    for name, info in active.items():
        if info and name in cert_obj:
            o = cert_ocsp_json(store, md, info, settings, job)
            if o:  # mod_md: nothing for a certificate it cannot staple and no job yet
                cert_obj[name]["ocsp"] = o


def relay_index(ts: list[Target]) -> dict[str, str]:
    """mod_ssl's request -> stored response file: "<issuer key hash>:<serial>" -> "<md>/<file>"."""
    return {ocsp.relay_key(ocsp.key_hash(t.issuer), t.cert.serial_number): f"{t.md}/{t.file}"
            for t in ts if t.issuer is not None and t.url}


def rows(store: Store, ts: list[Target], settings: GlobalSettings) -> list[dict[str, Any]]:
    """One row per stapled certificate (mod_md's "Managed Staplings" table), for status pages
    and metrics."""
    jobs: dict[str, Job | None] = {}
    out = []
    for t in ts:
        s, fetched = load(store, t.md, t.id)
        if t.md not in jobs:
            jobs[t.md] = load_job(store, t.md) if job_exists(store, t.md) else None
        job = jobs[t.md]
        row: dict[str, Any] = {"md": t.md, "certificate": t.label, "id": t.id,
                               "serial": t.serial, "status": s.status if s else ocsp.UNKNOWN}
        put(row, "responder", t.url)
        if t.url is None:
            row["skipped"] = "no OCSP responder URL in the certificate"
        elif t.issuer is None:
            row["skipped"] = "issuer certificate not in the chain"
        if s:
            put(row, "valid", period(s.valid_from, s.valid_until))
            put(row, "fetched", http_date(fetched))
            put(row, "refresh-at", http_date(refresh_at(s, fetched, settings)))
        if job is not None:
            row["errors"] = job.errors
            put(row, "next-run", http_date(job.next_run))
            if job.errors and job.last:
                put(row, "last-error", job.last.get("detail"))
        out.append(row)
    return out
