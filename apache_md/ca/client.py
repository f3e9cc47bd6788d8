"""A thin layer over the `acme` library: one CA connection, fast polling, errors as values.

The library's own polling sleeps a whole second between requests; issuing
for many MDs in parallel is dominated by that, so we poll with a short,
growing interval that honours Retry-After.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import ipaddress
import logging
import re
import threading
import time
from collections import deque
from concurrent import futures
from concurrent.futures import Future
from typing import Any, Callable, ContextManager
from urllib.parse import urlsplit

import josepy as jose
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages

from .. import __version__
from ..core import aprstatus, compat, crypto
from ..core.problem import CAProblem
from . import hedge, http

log = logging.getLogger(__name__)
UP_LINKS_MAX = 10  # issuers fetched by `up` link for one certificate (mod_md's bound)
_acme_log = logging.getLogger(acme_client.__name__)
USER_AGENT = f"apache-md/{__version__}"
POLL_FIRST, POLL_MAX = 0.05, 1.0
DIRECTORY_TTL = 300.0  # seconds a fetched directory serves later connections to its CA
NONCE_TTL = 60.0  # unused nonces older than this are not offered (CAs expire them)
NONCE_KEEP = 32
# Unused nonces kept ready while MDs are driven: a request whose nonce was lost (an
# error without Replay-Nonce: a load balancer's 5xx, a reset) takes one instead of
# asking new-nonce, which every thread shares, and waits on when that is held.
NONCE_RESERVE = 4
# badNonce answers in a row that are retried at once, each with the fresh nonce the answer
# brought (RFC 8555 §6.5); the next pauses. Pebble rejects 5% of nonces at random: 50 new
# MDs see ~15 badNonces, and most runs one of them twice in a row, which paused that MD's
# request 0.2-0.4 s (0.8 s for three) when the second went at once as well as the first.
BAD_NONCES_AT_ONCE = 3
# A try of a request safe to repeat (http.repeatable: a read, new-account) or of new-order
# (http.hedgeable: a second order is left pending) whose answer is
# later than PATIENCE_FACTOR times the CA's median answer time, HEDGE_LEAST seconds at
# least, gets a copy beside it (ca/hedge: the first answer that is good counts): an answer
# held up somewhere (a slow replica, a lost packet) then costs that, not its whole delay.
# One copy per try (a CA that is slow for everyone makes a longer median), never before
# PATIENCE_SAMPLES answers have shown what is usual. A request that changes something
# (finalize, a challenge answer: Unanswered), sent once, has the CA's state read beside it
# after PATIENCE_LEAST seconds at least: when that shows the request arrived, its answer is
# not waited for; else it is (nothing was given up).
PATIENCE_LEAST = 0.4
PATIENCE_FACTOR = 4.0
PATIENCE_SAMPLES = 3
HEDGE_LEAST = 0.4  # a copy sent for nothing costs a request, not the answer on its way
HEDGE_THREADS = 64  # the threads that send them (two per drive thread at most)
# The nonce of a POST sent while new-nonce is held or failed (_Network._get_nonce, a copy's:
# _nonce_for_copy): none the CA issued, so it answers badNonce with a fresh one.
STAND_IN_NONCE = b"apache-md: new-nonce is held"
IDLE_LEAST = 0.5  # seconds of waiting for the CA for which a drive lets another MD work
# seconds after which an MD waiting for another's fetch of the directory does its own
# work meanwhile (CAConnection.meanwhile): that fetch waits for the CA then (a
# Retry-After, a slow answer), a fast one would only be slowed by it
MEANWHILE_AFTER = 0.5
ORDER_TIMEOUT = 300.0  # seconds for the CA to decide authorizations, or to issue


def problem_from_exception(e: BaseException, ca_url: str = "", proxy: str | None = None,
                           step_for: Callable[[str], str] | None = None) -> CAProblem:
    """`e` in mod_md's terms; `step_for(url)` names what a request was for."""
    if isinstance(e, CAProblem):
        return e
    e = compat.network_cause(e)
    resp = _response_of(e)
    if resp is not None:  # an error status without an ACME problem document
        step = step_for(resp.url) if step_for else resp.url
        return CAProblem(20014, resp.reason or f"HTTP {resp.status_code}", None,
                         f"the CA answered {resp.status_code} {resp.reason or ''} to {step}"
                         .replace("  ", " ") + f" (ACME server at {ca_url})",
                         http_status=resp.status_code)
    if isinstance(e, requests.exceptions.ProxyError):
        text = str(e)
        desc = "Connection refused" if "refused" in text.lower() else "Proxy failed"
        hint = " (see MDHttpProxyCACertificateFile)" if "ssl" in text.lower() else ""
        log.warning("ACME server at %s through the proxy %s: %s", ca_url, proxy, _reason(e))
        return CAProblem(111, desc, None,
                         f"Unsuccessful in contacting ACME server at <{ca_url}> through the "
                         f"proxy {proxy}{hint}: {desc}.")
    if isinstance(e, messages.Error):
        subs = None
        if getattr(e, "subproblems", None):
            subs = [s.to_partial_json() if hasattr(s, "to_partial_json") else s
                    for s in e.subproblems]
        status = aprstatus.acme_status(e.typ)
        return CAProblem(status, aprstatus.strerror(status), e.typ, e.detail or e.title, subs)
    if isinstance(e, requests.exceptions.SSLError):
        return CAProblem(20014, "TLS error", None,
                         f"TLS connection to ACME server at {ca_url} failed: {e} "
                         "(see MDCACertificateFile)")
    if isinstance(e, requests.exceptions.ConnectionError):
        text = str(e)
        desc = "Connection refused" if "refused" in text.lower() else "Connection failed"
        if http.unresolved(e):  # mod_md: refused (curl_status), the name said here
            desc = f"Connection refused: the name {urlsplit(ca_url).hostname} does not resolve"
        through = f" through the proxy {proxy}" if proxy else ""
        return CAProblem(111, desc.partition(":")[0], None,
                         f"Unsuccessful in contacting ACME server at {ca_url}{through}: {desc}")
    if isinstance(e, requests.exceptions.Timeout):
        return CAProblem(70007, "Timeout", None, f"Timeout talking to ACME server at {ca_url}")
    if isinstance(e, acme_errors.TimeoutError):
        return CAProblem(70007, "Timeout", None, "The CA did not complete in time")
    if isinstance(e, acme_errors.ClientError) and "Unexpected response" in str(e):
        return CAProblem(20014, "Bad response", None, f"Unexpected response from {ca_url}: {e}")
    return CAProblem(20014, type(e).__name__, None, str(e) or type(e).__name__)


def directory_problem(p: CAProblem, ca_url: str, proxy: str | None = None) -> CAProblem:
    """A failed fetch of the directory as mod_md reports it (md_acme_setup): its words,
    which administrators search for; the cause goes to the log. What names a directive
    to look at (a proxy, TLS trust) stays as it is."""
    if p.retry_after or p.description in ("Stopped", "TLS error") \
            or (p.problem and p.http_status is None) or (proxy and p.http_status is None):
        return p
    if p.detail:
        log.warning("ACME server at %s: %s", ca_url, p.detail)
    if p.http_status == 503:
        return dataclasses.replace(
            p, status=11, description="Resource temporarily unavailable", problem=None,
            subproblems=None,
            detail=f"The ACME server at <{ca_url}> reports that Service is Unavailable "
                   "(503). This may happen during maintenance for short periods of time.")
    if p.http_status is not None:  # whatever the body says (the log has it)
        return dataclasses.replace(
            p, status=11, description="Resource temporarily unavailable", problem=None,
            subproblems=None,
            detail=f"The ACME server at <{ca_url}> responded with HTTP status "
                   f"{p.http_status}. This is unusual. Please verify that the URL is correct "
                   "and that you can indeed make request from the server to it by other "
                   "means, e.g. invoking curl/wget.")
    return dataclasses.replace(
        p, detail=f"Unsuccessful in contacting ACME server at <{ca_url}>. If this problem "
                  "persists, please check your network connectivity from your Apache server "
                  "to the ACME server. Also, older servers might have trouble verifying the "
                  "certificates of the ACME server. You can check if you are able to contact "
                  "it manually via the curl command. Sometimes, the ACME server might be down "
                  "for maintenance, so failing to contact it is not an immediate problem. "
                  "Apache will continue retrying this.")


def not_understood(ca_url: str) -> CAProblem:
    return CAProblem(22, "Invalid argument", None,
                     f"Unable to understand ACME server response from <{ca_url}>. "
                     "Wrong ACME protocol version or link?")


def directory_json(resp: requests.Response, ca_url: str) -> dict[str, Any]:
    """The directory in an answer as mod_md reads it (md_json_read_http): JSON only by
    its content type (*/json, *+json, text/plain: else ENOENT), EINVAL when it does not
    parse, and an ACME v2 directory only with newAccount, newOrder and newNonce."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not (ctype.endswith(("/json", "+json")) or ctype == "text/plain"):
        log.warning("ACME server at %s: the directory came as %r, not JSON", ca_url,
                    ctype or "no content type")
        raise directory_problem(CAProblem(2, "No such file or directory"), ca_url)
    try:
        raw = json.loads(resp.content)
    except ValueError as e:
        log.warning("ACME server at %s: the directory is no JSON: %s", ca_url, e)
        raise directory_problem(CAProblem(22, "Invalid argument"), ca_url) from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) and raw[k] for k in
                                            ("newAccount", "newOrder", "newNonce")):
        log.warning("ACME server at %s: no ACME v2 directory (newAccount, newOrder and "
                    "newNonce): %.200s", ca_url, resp.text)
        raise not_understood(ca_url)
    return raw


class OrderDead(CAProblem):
    """The CA declared the order, or one of its authorizations, invalid: it cannot go on
    (the next run places a new one)."""


def _response_of(e: BaseException) -> requests.Response | None:
    """The response the library's ClientError carries (alone, or with a parse error)."""
    if not isinstance(e, acme_errors.ClientError) or not e.args:
        return None
    arg = e.args[0]
    if isinstance(arg, tuple) and arg and isinstance(arg[0], requests.Response):
        return arg[0]
    return arg if isinstance(arg, requests.Response) else None


def _reason(e: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, without the pool noise."""
    while True:
        nxt = getattr(e, "reason", None) or (e.args[0] if e.args and
                                              isinstance(e.args[0], BaseException) else None)
        if not isinstance(nxt, BaseException) or nxt is e:
            return str(e)
        e = nxt


class Unanswered(CAProblem):
    """A request that changes something (a challenge answer, finalize), sent once, whose
    answer is much later than the CA's usual (a read gets a copy instead: ca/hedge): the CA has most
    likely got it and works on it, which its state shows. The caller reads that instead of
    waiting out the answer (an answer held up somewhere costs that, not its whole delay),
    and sends the request again only when the state says it did not arrive."""


class _CAShared:
    """What every connection to one CA (same URL, trust and proxy) in this process
    shares: kept-alive HTTPS connections, the directory and unused nonces. Driving
    many MDs then costs no TLS handshake, directory fetch or nonce request per MD
    (each is a round trip to a real CA; with Pebble, a fifth of the requests).

    Each thread keeps its own connection (a session per thread): what a thread sends
    on it follows what it has read there, a Retry-After too, so the fault proxy can
    tell a request sent despite a Retry-After from one that crossed it on the way."""

    def __init__(self, proxy: str | None, proxy_ca_certs: str | None):
        self._proxy, self._proxy_ca_certs = proxy, proxy_ca_certs
        self._local = threading.local()
        self.session  # noqa: B018 - the proxy's trust is loaded now: CAProblem here
        self.lock = threading.Lock()
        self.directory_lock = threading.Lock()
        # (directory, its JSON as the CA sent it)
        self.directory: tuple[messages.Directory, dict[str, Any]] | None = None
        self.directory_at = 0.0
        self.nonces: list[tuple[float, str]] = []  # (time received, nonce), newest last
        self.refilling = False  # a request for the reserve is out
        self.answer_times: deque[float] = deque(maxlen=32)  # seconds, the latest answers
        # the threads that send requests safe to repeat, each on its own connection, so
        # that a late one may get a copy beside it (ca/hedge); one per request under way
        self.hedges = hedge.Pool(HEDGE_THREADS, "ca")

    def answered_in(self, seconds: float) -> None:
        with self.lock:
            self.answer_times.append(seconds)

    def patience(self, hedged: bool = False) -> float | None:
        """Seconds a first try of a request waits before it is given up, or gets a copy
        beside it (`hedged`); None: the whole timeout."""
        with self.lock:
            times = sorted(self.answer_times)
        if len(times) < PATIENCE_SAMPLES:
            return None
        return max(HEDGE_LEAST if hedged else PATIENCE_LEAST,
                   PATIENCE_FACTOR * times[len(times) // 2])

    @property
    def session(self) -> requests.Session:
        """This thread's session (closed with the thread)."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = http.session(self._proxy, self._proxy_ca_certs)
        return s

    def take_nonce(self) -> str | None:
        with self.lock:
            while self.nonces:
                at, nonce = self.nonces.pop()
                if time.monotonic() - at < NONCE_TTL:
                    return nonce
            return None

    def give_nonces(self, nonces) -> None:
        with self.lock:
            self.nonces.extend((time.monotonic(), n) for n in nonces)
            del self.nonces[:-NONCE_KEEP]

    def start_refill(self) -> bool:
        """True when the reserve is short and nobody refills it yet: the caller does."""
        with self.lock:
            if self.refilling or len(self.nonces) >= NONCE_RESERVE:
                return False
            self.refilling = True
            return True


_shared: dict[tuple, _CAShared] = {}
_shared_lock = threading.Lock()


def _shared_for(url: str, ca_certs: str | None, proxy: str | None,
                proxy_ca_certs: str | None) -> _CAShared:
    key = (url, ca_certs, proxy, proxy_ca_certs)
    with _shared_lock:
        shared = _shared.get(key)
        if shared is None:
            shared = _shared[key] = _CAShared(proxy, proxy_ca_certs)
        return shared


class _Network(acme_client.ClientNetwork):
    """The library's ClientNetwork on a shared session and nonce pool, retrying
    transient trouble in place (ca/http.RetryPolicy) and keeping to the CA's
    Retry-After for each endpoint (ca/http.Gate)."""

    def __init__(self, shared: _CAShared, ca_url: str, stop: threading.Event, **kwargs):
        self._shared: _CAShared | None = None
        super().__init__(None, **kwargs)
        self._own_session.close()  # the library's: the shared ones serve instead
        self._shared = shared
        self.ca_url = ca_url
        self._stop = stop
        self._policy = http.DEFAULT_POLICY
        self._gate = http.gate_for(ca_url)
        self._deadline: float | None = None  # end of the running request's retry budget
        self._response: requests.Response | None = None  # the last one of the running try
        self._jws_nonce: bytes | None = None  # the nonce of the JWS about to be sent
        # the running request changes something and is sent once, but the caller can
        # tell from the CA's state whether it arrived: after the usual answer time it
        # stops waiting for the answer and raises Unanswered (CAConnection.answer, finalize)
        self.abandonable = False
        # the try of such a request still on its way after Unanswered (its URL, its future,
        # its nonce), and whether the next request to that URL takes its answer instead of
        # being sent (CAConnection._adopting: the CA's state does not show it yet)
        self._pending: tuple[str, Future, bytes | None] | None = None
        self.adopting = False
        # the running request waits its whole timeout (it had its early copy, or it is
        # not retried: a probe)
        self._patient = True
        self.step: str | None = None  # what the connection is doing (failure messages)
        # called before a poll or a retry pauses (the job saves its progress meanwhile)
        self.on_wait: Callable[[], None] | None = None
        # called with what the ACME server itself said (a 5xx or 429 with a problem
        # document) before the request is sent again: it may raise to end the retries,
        # when the state of what the request was for says another try cannot succeed
        # (CAConnection.finalize: an order the CA declared invalid)
        self.recheck: Callable[[CAProblem], None] | None = None
        # entered while the CA keeps this connection waiting (IDLE_LEAST seconds or more):
        # the drive gives its place to another MD meanwhile (ca/drive)
        self.idle: Callable[[], ContextManager] | None = None
        self.names: dict[str, str] = {ca_url: "directory"}  # URLs of the directory

    @property
    def session(self) -> requests.Session:
        return self._own_session if self._shared is None else self._shared.session

    @session.setter
    def session(self, value: requests.Session) -> None:
        self._own_session = value  # the library's __init__

    def __del__(self) -> None:
        # The session outlives this connection (the library would close it here);
        # a nonce left over serves the next connection.
        try:
            self._shared.give_nonces(self._nonces)
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def _get_nonce(self, url: str, new_nonce_url: str) -> str:
        if not self._nonces:
            nonce = self._shared.take_nonce()
            if nonce is not None:
                return nonce
            if new_nonce_url and self._fetch_nonce(new_nonce_url):
                if self._shared.start_refill():
                    threading.Thread(target=self._refill, args=(new_nonce_url,), daemon=True,
                                     name="nonces").start()
            if new_nonce_url and not self._nonces:
                # new-nonce is held by its Retry-After, which every MD that needs a nonce
                # would wait out: the POST goes with a nonce the CA never issued, and the
                # CA's badNonce answer brings a fresh one (RFC 8555 §6.5), retried at
                # once: a round trip instead of the hold
                return STAND_IN_NONCE
        return super()._get_nonce(url, new_nonce_url)

    def _fetch_nonce(self, new_nonce_url: str) -> bool:
        """A nonce from new-nonce, unless a Retry-After holds it (then False): retried
        as a request of its own, so that its trouble neither uses up the tries of the
        POST it is for, nor is named after it."""
        def once() -> requests.Response:
            held = self._gate.held_for(new_nonce_url)  # by another thread's 429 too
            if held > 0:
                raise http.Held(held)
            return self._check_response(self.head(new_nonce_url), content_type=None)
        try:
            self._add_nonce(self._retrying(new_nonce_url, once, wait_out_holds=False))
        except CAProblem as p:
            if p.retry_after is None:
                raise
            return False
        return True

    def _refill(self, new_nonce_url: str) -> None:
        """Fill the shared reserve of nonces, beside the drive threads: one request at a
        time, never while new-nonce is held, never retried (a failure ends it)."""
        shared, gate = self._shared, self._gate
        try:
            while len(shared.nonces) < NONCE_RESERVE and not gate.held_for(new_nonce_url) \
                    and not self._stop.is_set():
                r = shared.session.head(
                    new_nonce_url, verify=self.verify_ssl, timeout=self._default_timeout,
                    headers={"User-Agent": self.user_agent})
                gate.answered(new_nonce_url, r, True)
                nonce = r.headers.get(self.REPLAY_NONCE_HEADER) if r.ok else None
                if not nonce:
                    return
                shared.give_nonces([jose.decode_b64jose(nonce)])
        except Exception as e:  # noqa: BLE001 - the reserve is a help, its trouble nobody's
            log.debug("%s: refilling the nonces stopped: %s", self.ca_url, _reason(e))
        finally:
            shared.refilling = False

    def wait(self, seconds: float) -> None:
        """Wait for the CA (a pause before another try, a poll); CAProblem "Stopped" when
        apache-md stops meanwhile."""
        with self._idle(seconds):
            if self._stop.wait(seconds):
                raise CAProblem(20014, "Stopped", None, "apache-md is shutting down")

    def _idle(self, seconds: float) -> ContextManager:
        return self.idle() if self.idle and seconds >= IDLE_LEAST else contextlib.nullcontext()

    def _send_request(self, method: str, url: str, *args, **kwargs) -> requests.Response:
        with self._idle(self._gate.held_for(url)):
            self._gate.wait(url, self._stop, self._deadline)
        self._response = None
        # the nonce this request carries (a POST's JWS), taken back when it never reached
        # the CA
        nonce, self._jws_nonce = self._jws_nonce, None
        patience = None
        copy = http.hedgeable(method, self.names.get(url), kwargs.get("data"))
        if not self._patient and (copy or self.abandonable):
            patience = self._shared.patience(hedged=copy)
        pending = self._pending if self.adopting else None
        if pending is not None and pending[0] != url:
            pending = None
        if pending is not None:
            self._pending = None
            # not sent again: the answer of the try on its way is this one's, and the
            # nonce just signed for it is unused
            if nonce is not None:
                self._reuse(nonce)
            fut, nonce = pending[1], pending[2]
        try:
            # the place to work is for CPU: another MD uses it while this one's request
            # is on its way (which a fault may hold up), so all are under way at once.
            # The answer's time and Retry-After are noted before this MD waits for its
            # place back: the other threads keep to a Retry-After as soon as it came.
            with self.idle() if self.idle else contextlib.nullcontext():
                if pending is not None:
                    response = fut.result()
                elif patience is not None and copy:
                    fut, nonce = self._hedged(method, url, nonce, patience, args, kwargs)
                    response = fut.result()
                elif patience is not None:
                    response = self._unless_late(method, url, nonce, patience, args, kwargs)
                else:
                    response = self._noted(method, url, *args, **kwargs)
        except Unanswered:
            raise  # its nonce is on its way with it
        except Exception as e:  # noqa: BLE001 - re-raised
            cause = compat.network_cause(e)
            if nonce is not None and http.transient(cause, None) is not None and \
                    not isinstance(cause, requests.exceptions.Timeout):
                self._reuse(nonce)  # a reset: perhaps before the CA had it
            raise
        self._response = response
        if not response.ok:
            if self.REPLAY_NONCE_HEADER in response.headers:
                # the library keeps only the nonces of successes; an error's (a badNonce,
                # a rate limit) saves the next try a request to new-nonce
                try:
                    self._add_nonce(response)
                except acme_errors.BadNonce:
                    pass
            elif nonce is not None:
                # an error without a nonce comes from before the ACME server (a load
                # balancer's 5xx or 429), which answers every POST with one (RFC 8555
                # §6.5): the nonce sent is unused
                self._reuse(nonce)
        return response

    def _noted(self, method: str, url: str, *args, **kwargs) -> requests.Response:
        """One request; its answer time and Retry-After noted at once (any thread)."""
        start = time.monotonic()
        response = self._send_once(method, url, *args, **kwargs)
        self._shared.answered_in(time.monotonic() - start)
        self._gate.answered(url, response, self.names.get(url) in ("directory", "new-nonce"))
        return response

    def _unless_late(self, method: str, url: str, nonce: bytes | None, patience: float,
                     args: tuple, kwargs: dict) -> requests.Response:
        """A request that changes something, sent once from the shared threads: its answer,
        or Unanswered when it is later than `patience`. The try goes on meanwhile (nothing
        is given up): the caller reads the CA's state, and when that does not show the
        request yet, takes this try's answer after all (`adopting`), never sending it twice."""
        def first() -> requests.Response:
            self._gate.wait(url, self._stop, self._deadline)
            return self._noted(method, url, *args, **kwargs)
        fut = self._shared.hedges.submit(first)
        futures.wait([fut], timeout=patience)
        if fut.done():
            return fut.result()
        self._pending = (url, fut, nonce)
        raise Unanswered(70007, "Timeout", None,
                         f"no answer to {self.step_for(url)} within {patience:.1f} s")

    def answered_meanwhile(self) -> bool:
        """The request that raised Unanswered has its answer by now."""
        return self._pending is not None and self._pending[1].done()

    def _hedged(self, method: str, url: str, nonce: bytes | None, patience: float,
                args: tuple, kwargs: dict) -> tuple[Future, bytes | None]:
        """A request safe to repeat, sent from the shared threads (each its own connection):
        when its answer is later than `patience`, a copy goes beside it (ca/hedge), a POST
        with a nonce of its own. The outcome that counts, and the nonce it carried."""
        copy_nonce: list[bytes] = []

        def copy() -> Callable[[], requests.Response] | None:
            if self._gate.held_for(url) > 0:
                return self._held_nonce(url)
            body = kwargs.get("data")
            if method != "POST" or body is None:
                return lambda: self._copy_sent(method, url, args, kwargs)
            mine = self._nonces.pop() if self._nonces else None
            mine = mine or self._shared.take_nonce()

            def send() -> requests.Response:
                n = mine or self._nonce_for_copy()
                copy_nonce.append(n)
                return self._copy_sent(method, url, args,
                                       {**kwargs, "data": self._resigned(body, n)})
            return send

        def first() -> requests.Response:
            # waited for already: again only should the threads all be busy meanwhile
            self._gate.wait(url, self._stop, self._deadline)
            return self._noted(method, url, *args, **kwargs)

        fut, is_copy = hedge.race(self._shared.hedges, first, copy, patience, lambda r: r.ok)
        if is_copy:
            log.debug("%s: %s answered late, a copy beside it", self.ca_url, self.step_for(url))
        return fut, (copy_nonce[0] if is_copy and copy_nonce else nonce)

    def _copy_sent(self, method: str, url: str, args: tuple, kwargs: dict) -> requests.Response:
        if self._gate.held_for(url) > 0:  # a Retry-After came meanwhile
            held = self._held_nonce(url)
            if held is not None:
                held()
            raise hedge.NotSent(url)
        return self._noted(method, url, *args, **kwargs)

    def _held_nonce(self, url: str) -> Callable[[], requests.Response] | None:
        """For a late new-nonce answer whose copy a Retry-After holds back (another MD's
        request to new-nonce got a 429 after this one went out): what ends the wait for it
        (http.Held: _get_nonce's POST goes with the stand-in nonce, a round trip, instead of
        the rest of that late answer). None for other endpoints: their first try is waited
        for."""
        if self.names.get(url) != "new-nonce":
            return None
        seconds = self._gate.held_for(url)

        def held() -> requests.Response:
            raise http.Held(seconds)
        return held

    def _nonce_for_copy(self) -> bytes:
        """One new-nonce request for a copy, not retried. When new-nonce is held or this
        request meets trouble, the stand-in: the copy's badNonce answer brings a fresh
        nonce, and the retry goes with it at once (_retrying), where no copy would have
        left the late first try to be waited out (timelines: 2.5 s on a last MD's order)."""
        url = next((u for u, n in self.names.items() if n == "new-nonce"), None)
        if url is None:
            raise hedge.NotSent(url)
        if self._gate.held_for(url) > 0:
            return STAND_IN_NONCE
        try:
            r = self._noted("HEAD", url)
            nonce = r.headers.get(self.REPLAY_NONCE_HEADER) if r.ok else None
        except requests.exceptions.RequestException:
            nonce = None
        return jose.decode_b64jose(nonce) if nonce else STAND_IN_NONCE

    def _resigned(self, body: str, nonce: bytes) -> str:
        """The JWS `body` with `nonce` instead of its own, signed again."""
        jws = json.loads(body)
        protected = json.loads(jose.decode_b64jose(jws["protected"]))
        protected["nonce"] = jose.encode_b64jose(nonce)
        head = jose.encode_b64jose(json.dumps(protected).encode())
        signature = self.alg.sign(self.key.key, f"{head}.{jws['payload']}".encode())
        return json.dumps({"protected": head, "signature": jose.encode_b64jose(signature),
                           "payload": jws["payload"]}, indent=2)

    def _reuse(self, nonce: bytes) -> None:
        """Send `nonce` again with the next try instead of asking new-nonce, which every
        thread shares and which a Retry-After may hold. Should the CA have used it after
        all, it answers badNonce with a fresh one, retried at once (_retrying): a round
        trip, what a request to new-nonce costs."""
        self._nonces.add(nonce)

    def _send_once(self, method: str, url: str, *args, **kwargs) -> requests.Response:
        """The library's _send_request without its debug log, which decodes and formats
        every answer even when the log is off (as much CPU as the request itself)."""
        if _acme_log.isEnabledFor(logging.DEBUG):
            return super()._send_request(method, url, *args, **kwargs)
        kwargs["verify"] = self.verify_ssl
        headers = kwargs.setdefault("headers", {})
        headers.setdefault("User-Agent", self.user_agent)
        kwargs.setdefault("timeout", self._default_timeout)
        response = self.session.request(method, url, *args, **kwargs)
        if "Accept" not in headers:
            response.encoding = "utf-8"  # as the library: .text is UTF-8, not guessed
        return response

    def _wrap_in_jws(self, obj: jose.JSONDeSerializable, nonce: bytes, url: str) -> str:
        """The library's JWS (RFC 8555 §6.2) for an RSA account key, built directly: josepy
        builds, checks and serialises a tree of objects for each one, twice the signature's
        own CPU. The same JSON members; other keys go through the library."""
        self._jws_nonce = nonce
        if not isinstance(self.key, jose.JWKRSA) or self.alg is not jose.RS256:
            return super()._wrap_in_jws(obj, nonce, url)
        # the members in josepy's order, the same bytes as the library's
        protected: dict[str, Any] = {"alg": "RS256"}
        if self.account is None:  # new-account: the key itself, not the account's URL
            protected["jwk"] = self.key.public_key().to_partial_json()
        else:
            protected["kid"] = self.account["uri"]
        protected["nonce"], protected["url"] = jose.encode_b64jose(nonce), url
        payload = jose.encode_b64jose(obj.json_dumps(indent=2).encode() if obj else b"")
        head = jose.encode_b64jose(json.dumps(protected).encode())
        signature = self.key.key.sign(f"{head}.{payload}".encode(), padding.PKCS1v15(),
                                      hashes.SHA256())
        return json.dumps({"protected": head, "signature": jose.encode_b64jose(signature),
                           "payload": payload}, indent=2)

    def post(self, *args, **kwargs) -> requests.Response:
        return self._retrying(args[0], lambda: self._post_once(*args, **kwargs))

    def get(self, url: str, *args, retry: bool = True, **kwargs) -> requests.Response:
        once = super().get
        if not retry:
            return once(url, *args, **kwargs)
        return self._retrying(url, lambda: once(url, *args, **kwargs))

    def _retrying(self, url: str, attempt: Callable[[], requests.Response],
                  wait_out_holds: bool = True) -> requests.Response:
        """`attempt()` until it succeeds, fails for good, or the policy gives up. Within
        a running one (a nonce fetched for a POST), within what is left of its budget.
        A Retry-After is waited out in place, or with `wait_out_holds` False raised at
        once (CAProblem with retry_after: the caller has something else to do)."""
        outer, outer_patient = self._deadline, self._patient
        self._patient = False
        self._deadline = time.monotonic() + self._policy.budget
        if outer is not None:
            self._deadline = min(outer, self._deadline)
        tries = backoffs = nonces = 0  # nonces: badNonce answers in a row
        try:
            while True:
                tries += 1
                try:
                    return attempt()
                except http.Held as h:
                    raise self._held(url, h.seconds, tries) from None
                except CAProblem:
                    raise
                except Exception as e:  # noqa: BLE001 - what is not transient goes on up
                    trouble = self._transient(e)
                    if trouble is None:
                        raise
                    left = self._deadline - time.monotonic()
                    nonces = nonces + 1 if trouble.kind == "badNonce" else 0
                    if 0 < nonces <= BAD_NONCES_AT_ONCE and tries < self._policy.tries:
                        # retried at once: a copy of a request held up somewhere; with a
                        # fresh nonce, as the library and mod_md do (also when the nonce
                        # tried again after an error had been used: _reuse); only a
                        # badNonce again and again pauses
                        pause: float | None = 0.0
                    else:
                        # a Retry-After is the CA's own pace: it makes no later pause longer
                        backoffs += trouble.retry_after is None
                        pause = self._policy.pause(tries, left, trouble.retry_after,
                                                   backoffs=backoffs)
                    if trouble.retry_after is not None and not wait_out_holds:
                        raise self._held(url, trouble.retry_after, tries, e) from None
                    if pause is None:
                        if trouble.retry_after is not None and trouble.retry_after > left \
                                and tries < self._policy.tries:
                            raise self._held(url, trouble.retry_after, tries, e) from None
                        raise self._exhausted(url, trouble, tries, e) from None
                    if trouble.kind == "http" and self.recheck is not None and \
                            isinstance(compat.network_cause(e), messages.Error):
                        self._recheck(self.said(url, trouble, compat.network_cause(e)))
                    log.debug("%s: the CA %s to %s; try %d in %.1f s", self.ca_url,
                              trouble.what, self.step_for(url), tries + 1, pause)
                    if self.on_wait:
                        self.on_wait()
                    self.wait(pause)
        finally:
            self._deadline, self._patient = outer, outer_patient

    def _recheck(self, said: CAProblem) -> None:
        """self.recheck(said), its own requests without it (they are no retries of the
        running one) and named as theirs; trouble reading the state is no reason to stop."""
        recheck, step = self.recheck, self.step
        self.recheck, self.step = None, None
        try:
            recheck(said)
        except OrderDead:
            raise
        except Exception as e:  # noqa: BLE001 - the retries go on as before
            log.debug("%s: reading the state before another try failed: %s", self.ca_url,
                      getattr(e, "detail", None) or _reason(e))
        finally:
            self.recheck, self.step = recheck, step

    def said(self, url: str, t: http.Transient, err: messages.Error) -> CAProblem:
        """What the ACME server itself answered to a request, its own words kept."""
        words = err.detail or err.title
        return CAProblem(20014, f"HTTP {t.status}", err.typ,
                         f"the CA answered {t.status} to {self.step_for(url)}"
                         + (f": {words}" if words else ""))

    def _transient(self, e: BaseException) -> http.Transient | None:
        e = compat.network_cause(e)
        if isinstance(e, messages.Error) and e.code == "badNonce":
            return http.Transient("badNonce")  # CAs reject nonces at random (Pebble: 5%)
        return http.transient(e, self._response)

    def step_for(self, url: str) -> str:
        name = self.names.get(url)
        if name:
            return name
        info = self.names.get("renewalInfo")
        if info and url.startswith(info):
            return "renewal-info"
        return self.step or urlsplit(url).path or url

    def _exhausted(self, url: str, t: http.Transient, tries: int, e: BaseException) -> CAProblem:
        step, n = self.step_for(url), _tries(tries)
        where = f" (ACME server at {self.ca_url})"
        if t.kind == "http":
            err = e if isinstance(e, messages.Error) else None
            detail = f"the CA {t.what} to {step}, {n}"
            if err is not None and (err.detail or err.title):
                detail += f": {err.detail or err.title}"
            phrase = t.what.split(" ", 2)[2] if t.what.count(" ") >= 2 else f"HTTP {t.status}"
            return CAProblem(20014, phrase, err.typ if err else None, detail + where,
                             ca_trouble="failing", http_status=t.status)
        if t.kind == "badNonce":
            return CAProblem(11, "Resource temporarily unavailable",
                             "urn:ietf:params:acme:error:badNonce",
                             f"the CA rejected the nonce of {step}, {n}{where}")
        if t.kind == "timeout":
            return CAProblem(70007, "Timeout", None,
                             f"the CA did not answer {step} within {self._default_timeout} s, "
                             f"{n}{where}", ca_trouble="failing")
        return CAProblem(104, "Connection reset by peer", None,
                         f"the connection to the CA broke during {step}, {n}{where}",
                         ca_trouble="failing")

    def _held(self, url: str, seconds: float, tries: int,
              e: BaseException | None = None) -> CAProblem:
        """The CA asks us to wait longer than a renewal should: the job backs off as long."""
        err = e if isinstance(e, messages.Error) else None
        said = f": {err.detail or err.title}" if err is not None and (err.detail or err.title) \
            else ""  # the CA's own words (which limit, until when) are what an admin needs
        return CAProblem(20014, "Retry later", err.typ if err else None,
                         f"the CA asks to wait {seconds:.0f} s (Retry-After) before "
                         f"{self.step_for(url)}, {_tries(tries)}{said} "
                         f"(ACME server at {self.ca_url})",
                         retry_after=seconds)


def _tries(n: int) -> str:
    return f"{n} {'try' if n == 1 else 'tries'}"


class CAConnection:
    """One account at one CA: the directory, the account key, requests to the CA.

    Connections to the same CA share their HTTP session, directory and nonces
    (see _CAShared), so one per MD driven in parallel is cheap."""

    def __init__(self, url: str, *, ca_certs: str | None = None, proxy: str | None = None,
                 proxy_ca_certs: str | None = None, timeout: float = 30,
                 stop: threading.Event | None = None):
        self.url = url
        self.stop = stop or threading.Event()
        self.proxy = proxy
        self._shared = _shared_for(url, ca_certs, proxy, proxy_ca_certs)
        self.net = _Network(self._shared, url, self.stop, user_agent=USER_AGENT,
                            timeout=int(timeout))
        # The library passes verify= on every request, so set it there, not on the session.
        if ca_certs:
            self.net.verify_ssl = ca_certs
        self._directory: messages.Directory | None = None
        self._raw_directory: dict[str, Any] = {}
        # called once while this connection has waited MEANWHILE_AFTER seconds for another
        # MD's fetch of the directory (that fetch waits for the CA): the drive's own work
        self.meanwhile: Callable[[], None] | None = None
        self.client: acme_client.ClientV2 | None = None

    @property
    def directory(self) -> messages.Directory:
        if self._directory is None:
            shared = self._shared
            with contextlib.ExitStack() as locked:  # one fetch when many MDs start at once
                if shared.directory_lock.acquire(blocking=False):
                    locked.callback(shared.directory_lock.release)
                else:
                    # waiting for the MD that fetches it, which needs a place to work; the
                    # lock is let go before this MD waits for its place back (unwound in
                    # reverse), or every MD behind it would wait for both in turn
                    locked.enter_context(self.waiting())
                    if self.meanwhile is None or \
                            not shared.directory_lock.acquire(timeout=MEANWHILE_AFTER):
                        if self.meanwhile is not None:  # that fetch waits for the CA
                            self.meanwhile()
                        shared.directory_lock.acquire()
                    locked.callback(shared.directory_lock.release)
                cached = shared.directory
                if cached is None or time.monotonic() - shared.directory_at > DIRECTORY_TTL:
                    cached = self._fetch_directory()
                    shared.directory, shared.directory_at = cached, time.monotonic()
            self._directory, self._raw_directory = cached
            self.net.names.update(_resource_names(self._raw_directory))
            self.client = acme_client.ClientV2(self._directory, self.net)
        return self._directory

    def _fetch_directory(self) -> tuple[messages.Directory, dict[str, Any]]:
        """As ClientV2.get_directory, keeping the JSON (older `acme`, Debian 12's 2.1,
        drops what it has no field for: meta.profiles); what mod_md could not read as a
        directory fails as there (md_acme.c update_directory)."""
        try:
            # the body is read here, as mod_md reads it, not by the library
            resp = self.call(self.net.get, self.url, content_type=None)
        except CAProblem as p:
            answer = self.net._response  # noqa: SLF001 - the error answer, if one came
            if p.http_status is None and p.retry_after is None and answer is not None \
                    and not answer.ok:  # a problem document: mod_md reads only the status
                p = dataclasses.replace(p, http_status=answer.status_code)
            raise directory_problem(p, self.url, self.proxy) from None
        except Exception as e:  # noqa: BLE001 - mapped to a CAProblem
            raise self._request_failed(e) from None
        raw = directory_json(resp, self.url)
        try:
            # a copy: acme 2.1 replaces raw["meta"] in place with its Meta object
            return messages.Directory.from_json(copy.deepcopy(raw)), raw
        except Exception:  # noqa: BLE001 - a field of a type the library refuses
            raise not_understood(self.url) from None

    @property
    def on_wait(self) -> Callable[[], None] | None:
        """Called before a poll or a retry pauses."""
        return self.net.on_wait

    @on_wait.setter
    def on_wait(self, fn: Callable[[], None] | None) -> None:
        self.net.on_wait = fn

    @property
    def raw_directory(self) -> dict[str, Any]:
        """The directory object exactly as the CA sent it."""
        self.directory  # noqa: B018
        return self._raw_directory

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.raw_directory.get("meta")
        return meta if isinstance(meta, dict) else {}

    def call(self, fn: Callable, *args, step: str | None = None, **kwargs):
        """Run one protocol step; every failure becomes a CAProblem. `step` names it
        in failure messages (requests to directory URLs are named after them)."""
        self.net.step = step
        try:
            return fn(*args, **kwargs)
        except CAProblem as p:
            p.ca_url = p.ca_url or self.url
            raise
        except Exception as e:  # noqa: BLE001
            raise self._request_failed(e) from None
        finally:
            self.net.step = None

    def reachable(self) -> CAProblem | None:
        """One fresh GET of the directory, not retried: None when the CA answers."""
        try:
            self.call(self.net.get, self.url, retry=False, step="directory")
        except CAProblem as p:
            return p
        return None

    def _request_failed(self, e: BaseException) -> CAProblem:
        p = problem_from_exception(e, self.url, self.proxy, self.net.step_for)
        p.ca_url = self.url
        if http.unreachable(compat.network_cause(e)):
            p.ca_trouble = "unreachable"
        return p

    def use_account(self, key: jose.JWK, regr: messages.RegistrationResource | None) -> None:
        self.directory  # noqa: B018
        self.net.key = key
        self.net.alg = jose.RS256 if isinstance(key, jose.JWKRSA) else jose.ES256
        self.net.account = regr

    @property
    def idle(self) -> Callable[[], ContextManager] | None:
        """Entered while the CA keeps this connection waiting."""
        return self.net.idle

    @idle.setter
    def idle(self, fn: Callable[[], ContextManager] | None) -> None:
        self.net.idle = fn

    def waiting(self) -> ContextManager:
        """Entered while this connection waits for another MD (its fetch of the directory,
        its registration of the account): the drive's place goes to another MD meanwhile."""
        return self.net.idle() if self.net.idle else contextlib.nullcontext()

    def sleep(self, seconds: float) -> None:
        self.net.wait(seconds)

    def poll(self, fetch: Callable[[], tuple[Any, requests.Response | None]],
             done: Callable[[Any], bool], deadline: float, step: str) -> Any:
        """Call `fetch` until `done(result)`, quickly at first, honouring Retry-After."""
        delay = POLL_FIRST
        while True:
            result, response = self.call(fetch, step=step)
            if done(result):
                return result
            if time.monotonic() >= deadline:
                raise CAProblem(70007, "Timeout", None, "The CA did not complete in time")
            wait = http.retry_after_seconds(response)
            wait = delay if wait is None else min(max(wait, delay), 30.0)
            if delay == POLL_FIRST and self.net.on_wait:
                self.net.on_wait()
            self.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            delay = min(POLL_MAX, delay * 2)

    # -- accounts -----------------------------------------------------------------
    def new_account(self, reg: messages.NewRegistration) -> messages.RegistrationResource:
        """Register the key. When it is registered already (a try whose answer was lost
        did it), the CA answers with the account's URL (RFC 8555 §7.3.1): that one."""
        def register() -> messages.RegistrationResource:
            try:
                return self.client.new_account(reg)
            except acme_errors.ConflictError as e:
                log.info("%s: the account key is registered already at %s: using it",
                         self.url, e.location)
                return self.client.query_registration(
                    messages.RegistrationResource(uri=e.location, body=messages.Registration()))
        return self.call(register, step="new-account")

    # -- orders -------------------------------------------------------------------
    def new_order(self, identifiers: list[messages.Identifier], profile: str | None = None,
                  replaces: str | None = None) -> messages.OrderResource:
        """newOrder with optional profile and ARI `replaces` (the library lacks the latter).
        A CA may refuse `replaces` (alreadyReplaced, another account's certificate): then
        the order is placed anew without it."""
        try:
            return self._new_order(identifiers, profile, replaces)
        except CAProblem as p:
            if not replaces:
                raise
            log.info("%s: order with 'replaces' refused (%s), retrying without",
                     identifiers[0].value if identifiers else self.url, p)
            return self._new_order(identifiers, profile, None)

    def _new_order(self, identifiers: list[messages.Identifier], profile: str | None,
                   replaces: str | None) -> messages.OrderResource:
        client = self.client
        body: dict[str, Any] = {"identifiers": [i.to_partial_json() for i in identifiers]}
        if profile:
            body["profile"] = profile
        if replaces:
            body["replaces"] = replaces

        def post():
            resp = client._post(self.directory["newOrder"], _RawJSON(body))  # noqa: SLF001
            order = messages.Order.from_json(resp.json())
            authzs = [client._authzr_from_response(client._post_as_get(u), uri=u)  # noqa: SLF001
                      for u in order.authorizations]
            return messages.OrderResource(body=order, uri=resp.headers.get("Location"),
                                          authorizations=authzs)
        return self.call(post, step="authorization")

    # -- authorizations -----------------------------------------------------------
    def key_authorization(self, challb: messages.ChallengeBody) -> str:
        return challb.chall.key_authorization(self.net.key)

    def answer(self, authzr: messages.AuthorizationResource,
               challb: messages.ChallengeBody) -> None:
        """Tell the CA that the challenge is in place."""
        def send() -> None:
            # not the library's answer_challenge: it wants a `Link: rel="up"` in the
            # answer, which RFC 8555 does not ask of a CA
            self.call(self.client._post, challb.uri, challb.response(self.net.key),  # noqa: SLF001
                      step="challenge")
        try:
            with self._abandonable():
                send()
            return
        except Unanswered:
            if not self.net.answered_meanwhile() and self._validating(authzr, challb):
                return
            try:  # not there yet: its own answer, waited for however long
                with self._adopting():
                    send()
                return
            except CAProblem as p:
                problem = p
        except CAProblem as p:
            problem = p
        # A try whose answer was lost may have got through, and the CA refuses the
        # same answer again (Pebble: malformed): then it is validating already.
        if not self._validating(authzr, challb):
            raise problem

    def _validating(self, authzr: messages.AuthorizationResource,
                    challb: messages.ChallengeBody) -> bool:
        """Whether the CA has had the answer to this challenge (it validates, or has)."""
        now, _ = self.call(self.client.poll, authzr, step="authorization")
        mine = [c for c in now.body.challenges if c.chall.typ == challb.chall.typ]
        return not (now.body.status == messages.STATUS_PENDING
                    and all(c.status == messages.STATUS_PENDING for c in mine))

    @contextlib.contextmanager
    def _abandonable(self):
        """The request sent within may raise Unanswered (_Network.abandonable)."""
        self.net.abandonable, self.net._pending = True, None  # noqa: SLF001
        try:
            yield
        finally:
            self.net.abandonable = False

    @contextlib.contextmanager
    def _adopting(self):
        """The request sent within is the one that raised Unanswered: the answer of its try
        still on its way is taken instead of sending it again (a non-idempotent request
        goes once; the first try's answer may only be late)."""
        self.net.adopting = True
        try:
            yield
        finally:
            self.net.adopting, self.net._pending = False, None  # noqa: SLF001

    def await_authorizations(self, authzrs: list[messages.AuthorizationResource],
                             timeout: float = ORDER_TIMEOUT) -> None:
        """Poll until every authorization is decided; CAProblem unless all are valid."""
        deadline = time.monotonic() + timeout
        for authzr in authzrs:
            done = self.poll(lambda a=authzr: self.client.poll(a),
                             lambda r: r.body.status not in (messages.STATUS_PENDING,
                                                             messages.STATUS_PROCESSING),
                             deadline, "authorization")
            if done.body.status != messages.STATUS_VALID:
                raise authz_problem(done)

    # -- finalization ---------------------------------------------------------------
    def finalize(self, order: messages.OrderResource, csr_pem: bytes,
                 timeout: float = ORDER_TIMEOUT) -> str:
        """Submit the CSR and wait until the certificate is issued; its URL."""
        order = order.update(csr_pem=csr_pem)
        deadline = time.monotonic() + timeout
        said: list[CAProblem] = []  # what the CA last answered to it with its own words

        def recheck(p: CAProblem) -> None:
            # the ACME server refused the finalize itself (a 5xx with a problem document:
            # acme2certifier's "enrollment failed"): another try of an invalid order is
            # refused too, and would only hide what the CA said
            said[:] = [p]
            state, _ = self._order_state(order.uri)
            if state.status == messages.STATUS_INVALID:
                raise self._dead(state, p)

        def submit() -> None:
            try:
                self.net.recheck = recheck
                try:
                    self.call(compat.begin_finalization, self.client, order, step="finalize")
                finally:
                    self.net.recheck = None
            except CAProblem as p:
                if isinstance(p, Unanswered) or not (p.problem or "").endswith("orderNotReady"):
                    raise
                # Not ready yet (authorizations still settling), or finalized already by a
                # try whose answer was lost: only a `ready` order is finalized (again).
                state = self.poll(lambda: self._order_state(order.uri),
                                  lambda b: b.status != messages.STATUS_PENDING, deadline,
                                  "order")
                if state.status == messages.STATUS_READY:
                    self.call(compat.begin_finalization, self.client, order, step="finalize")
        try:
            with self._abandonable():
                submit()
        except Unanswered:
            # the order says whether the CSR arrived (processing, valid); if not (yet), the
            # finalize's own answer is waited for (the finalize is not sent twice), as when
            # it came while the order was read
            arrived = False
            if not self.net.answered_meanwhile():
                state, _ = self.call(self._order_state, order.uri, step="order")
                arrived = state.status not in (messages.STATUS_PENDING, messages.STATUS_READY)
            if not arrived:
                with self._adopting():
                    submit()
        return self.issued(order.uri, deadline, said[0] if said else None)

    def issued(self, url: str, deadline: float | None = None,
               said: CAProblem | None = None) -> str:
        """Wait until the finalized order at `url` is valid; its certificate's URL.
        `said`: what the CA answered to the finalize, for the failure should it be invalid."""
        deadline = deadline or time.monotonic() + ORDER_TIMEOUT
        body = self.poll(lambda: self._order_state(url),
                         lambda b: b.status in (messages.STATUS_VALID, messages.STATUS_INVALID),
                         deadline, "order")
        if body.status != messages.STATUS_VALID or not body.certificate:
            raise self._dead(body, said)
        return body.certificate

    def _dead(self, body: messages.Order, said: CAProblem | None = None) -> OrderDead:
        """The order is invalid: in the CA's words, the order's error and what it answered
        to the finalize (CAs such as acme2certifier say why only in that answer)."""
        err = body.error
        own = getattr(err, "detail", None)
        if said is None:
            return OrderDead(20014, "Order invalid", getattr(err, "typ", None),
                             own or "the CA declared the order invalid")
        detail = f"{said.detail}, and declared the order invalid"
        if own and own not in said.detail:
            detail += f": {own}"
        return OrderDead(20014, "Order invalid", getattr(err, "typ", None) or said.problem,
                         f"{detail} (ACME server at {self.url})", ca_url=self.url)

    def order(self, url: str) -> messages.OrderResource | None:
        """The order at `url` as the CA has it now, with its authorizations while it is
        pending; None when the CA does not know it (404, or 403: another account's)."""
        client = self.client

        def get() -> messages.OrderResource | None:
            try:
                resp = client._post_as_get(url)  # noqa: SLF001
            except (messages.Error, acme_errors.ClientError) as e:
                r = _response_of(e) or self.net._response  # noqa: SLF001
                if r is not None and r.status_code in (403, 404):
                    log.info("%s: the CA answers %d for the order %s", self.url,
                             r.status_code, url)
                    return None
                raise
            body = messages.Order.from_json(resp.json())
            authzs = []
            if body.status == messages.STATUS_PENDING:
                authzs = [client._authzr_from_response(client._post_as_get(u), uri=u)  # noqa: SLF001
                          for u in body.authorizations]
            return messages.OrderResource(body=body, uri=url, authorizations=authzs)
        self.directory  # noqa: B018
        return self.call(get, step="order")

    def download(self, url: str) -> str:
        """The certificate chain (PEM) at `url`. A CA that answers with the leaf alone
        and `Link: rel="up"` to its issuer (that one to its own, ...) has the chain made
        from those, as mod_md does; a self-signed root is left out, as CAs leave it."""
        resp = self.call(self.client._post_as_get, url,  # noqa: SLF001
                         step="certificate download")
        pem = resp.text
        if pem.count("-----BEGIN CERTIFICATE-----") != 1:
            return pem
        for _ in range(UP_LINKS_MAX):
            up = resp.links.get("up", {}).get("url")
            if not up:
                break
            resp = self.call(self.client._post_as_get, up,  # noqa: SLF001
                             step="certificate download")
            cert = crypto.load_certificate(resp.content)
            if cert is None or crypto.is_root(cert):
                break
            pem = pem.rstrip("\n") + "\n" + crypto.chain_to_pem([cert]).decode()
        return pem

    def _order_state(self, url: str) -> tuple[messages.Order, requests.Response]:
        resp = self.client._post_as_get(url)  # noqa: SLF001
        return messages.Order.from_json(resp.json()), resp

    # -- ARI (RFC 9773) -----------------------------------------------------------
    @property
    def has_renewal_info(self) -> bool:
        return bool(self.raw_directory.get("renewalInfo"))

    def renewal_info(self, cert_id: str) -> tuple[dict[str, Any], float | None] | None:
        """The CA's renewalInfo for a certificate and its Retry-After (seconds);
        None when the CA does not offer ARI. An unauthenticated GET."""
        base = self.raw_directory.get("renewalInfo")
        if not isinstance(base, str) or not base:
            return None
        resp = self.call(self.net.get, f"{base.rstrip('/')}/{cert_id}",
                         content_type="application/json")
        try:
            body = resp.json()
        except ValueError:
            raise CAProblem(20014, "Bad response", None,
                            f"renewalInfo from {self.url} is not JSON") from None
        return (body if isinstance(body, dict) else {}), http.retry_after_seconds(resp)


class _RawJSON(jose.JSONDeSerializable):
    """A request body the library has no message class for (e.g. newOrder with `replaces`)."""

    def __init__(self, obj: dict[str, Any]):
        self.obj = obj

    def to_partial_json(self) -> dict[str, Any]:
        return self.obj

    @classmethod
    def from_json(cls, jobj: Any) -> "_RawJSON":
        return cls(jobj)


def identifiers(names: list[str]) -> list[messages.Identifier]:
    out = []
    for n in names:
        try:
            ipaddress.ip_address(n)
            out.append(messages.Identifier(typ=messages.IDENTIFIER_IP, value=n))
        except ValueError:
            out.append(messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n))
    return out


def authorized(authzr: messages.AuthorizationResource) -> bool:
    """Already valid (the CA reuses recent authorizations): nothing to set up."""
    return authzr.body.status == messages.STATUS_VALID


def authz_problem(authzr: messages.AuthorizationResource) -> CAProblem:
    for c in authzr.body.challenges:
        if c.error is not None:
            return OrderDead(20014, "Challenge failed", c.error.typ,
                             c.error.detail or c.error.title)
    return OrderDead(20014, "Authorization failed", "urn:ietf:params:acme:error:unauthorized",
                     f"authorization for {authzr.body.identifier.value} is "
                     f"{authzr.body.status.name}")


def _resource_names(directory: dict[str, Any]) -> dict[str, str]:
    """The directory's URLs by resource name, for messages: newOrder -> "new-order"."""
    names = {url: re.sub(r"(?<!^)([A-Z])", r"-\1", key).lower()
             for key, url in directory.items() if isinstance(url, str) and key != "renewalInfo"}
    if isinstance(directory.get("renewalInfo"), str):
        names["renewalInfo"] = directory["renewalInfo"]
    return names
