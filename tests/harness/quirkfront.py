"""A front for Pebble that behaves as other CAs do where RFC 8555 lets them differ.

Each quirk is a switch (all off: Pebble as it is), set by the test:
- `bad_nonce_first`: every signed request is refused once with badNonce; only a
  nonce handed out with such a refusal is taken (as a CA whose nonces are bound to
  a backend the client just missed);
- `processing_polls`: after the finalize, the order stays `processing` (no
  certificate URL) for that many polls, each with a Retry-After;
- `poll_retry_after`: a Retry-After on every authorization and order answer
  (Pebble 2.4 has no `retryAfter` setting);
- `not_ready_finalizes`: that many first finalize requests are refused with
  orderNotReady, the order being ready all the same;
- `rate_limited_orders` (+ `rate_limit_retry_after`): that many first newOrders are
  refused with 429 rateLimited and a Retry-After;
- `bare_answers`: no `Location` where RFC 8555 does not require one (all but the new
  account and the new order) and no `Link: rel="up"` on challenge answers;
- `eab_in_meta`: the directory says `externalAccountRequired` (Pebble does not ask);
- `enrollment_fails`: the finalize is answered 500 serverInternal "enrollment failed"
  and its order is `invalid` from then on (without an `error`), another finalize of it
  refused with orderNotReady: what acme2certifier does when its CA handler fails;
- `chain_by_up`: the certificate URL answers with the leaf alone and `Link: rel="up"`
  to its issuer (DER, application/pkix-cert), and so on up the chain, as CAs did
  for ACMEv1 and mod_md still follows.
"""
from __future__ import annotations

import json
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .acmefront import _b64decode
from .front import Answer, PebbleFront, Request


class QuirkFront(PebbleFront):
    def __init__(self, pebble, port: int):
        super().__init__(pebble, port)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """All quirks off, nothing counted."""
        with self._lock:
            self.bad_nonce_first = False
            self.processing_polls = 0
            self.poll_retry_after: int | None = None
            self.not_ready_finalizes = 0
            self.rate_limited_orders = 0
            self.rate_limit_retry_after = 1
            self.bare_answers = False
            self.eab_in_meta = False
            self.chain_by_up = False
            self.enrollment_fails = False
            self.seen: dict[str, int] = {}  # what the quirks did, by name
            self._spare: set[str] = set()  # nonces handed out with a badNonce
            self._processing: dict[str, int] = {}  # order URL path -> polls left
            self._issuers: dict[str, bytes] = {}  # up-link path -> DER certificate
            self._invalid: set[str] = set()  # order URL paths the front declared invalid

    def _count(self, what: str) -> None:
        self.seen[what] = self.seen.get(what, 0) + 1

    # -- answers of its own ---------------------------------------------------------
    def _nonce(self) -> str:
        return self.forward(Request("HEAD", "/nonce-plz", {}, None)).header("Replay-Nonce") or ""

    def _problem(self, status: int, typ: str, detail: str, nonce: str | None = None,
                 headers=()) -> Answer:
        body = {"type": f"urn:ietf:params:acme:error:{typ}", "detail": detail, "status": status}
        return Answer(status, json.dumps(body).encode(),
                      [("Content-Type", "application/problem+json"),
                       ("Replay-Nonce", nonce or self._nonce()), *headers])

    # -- answering --------------------------------------------------------------------
    def handle(self, req: Request) -> Answer:
        if req.method in ("GET", "POST") and req.path in self._issuers:
            der, up = self._issuers[req.path]
            links = [("Link", f'<https://localhost:{self.port}{up}>;rel="up"')] if up else []
            return Answer(200, der, [("Content-Type", "application/pkix-cert"),
                                     ("Replay-Nonce", self._nonce()), *links])
        nonce = _jws_nonce(req.body) if req.method == "POST" else None
        with self._lock:
            refuse_nonce = nonce is not None and self.bad_nonce_first
            if refuse_nonce and nonce in self._spare:
                self._spare.discard(nonce)
                refuse_nonce = False
        if refuse_nonce:
            fresh = self._nonce()
            with self._lock:
                self._spare.add(fresh)
                self._count("badNonce")
            return self._problem(400, "badNonce", "a nonce from another backend", fresh)
        path = req.path
        with self._lock:
            if path == "/order-plz" and self.rate_limited_orders > 0:
                self.rate_limited_orders -= 1
                self._count("rateLimited")
                limited = True
            else:
                limited = False
            not_ready = path.startswith("/finalize-order/") and self.not_ready_finalizes > 0
            if not_ready:
                self.not_ready_finalizes -= 1
                self._count("orderNotReady")
        failed = self._enrollment(path)
        if failed is not None:
            return failed
        if limited:
            return self._problem(429, "rateLimited", "too many new orders recently",
                                 headers=[("Retry-After", str(self.rate_limit_retry_after))])
        if not_ready:
            return self._problem(403, "orderNotReady", "the order is not ready yet")
        answer = self.forward(req)
        if path.startswith("/chalZ/") and answer.status == 200:
            with self._lock:
                self._count("challengeAnswered")
        if req.method == "GET" and path == "/dir" and answer.status == 200:
            answer.body = self._directory(answer.body)
        elif path.startswith("/finalize-order/") and answer.status == 200:
            self._hold_processing("/my-order/" + path.rsplit("/", 1)[-1], answer)
        elif path.startswith("/my-order/") and answer.status == 200:
            self._still_processing(path, answer)
            with self._lock:
                invalid = path in self._invalid
            if invalid:
                order = json.loads(answer.body)
                order["status"] = "invalid"
                order.pop("certificate", None)
                answer.body = json.dumps(order).encode()
        elif path.startswith("/certZ/") and answer.status == 200 and self.chain_by_up:
            self._leaf_only(answer)
        if self.poll_retry_after is not None and answer.status == 200 and \
                path.startswith(("/my-order/", "/authZ/", "/finalize-order/")):
            answer.headers.append(("Retry-After", str(self.poll_retry_after)))
        if self.bare_answers and path not in ("/sign-me-up", "/order-plz"):
            answer.headers = [(k, v) for k, v in answer.headers
                              if k.lower() != "location"
                              and not (k.lower() == "link" and 'rel="up"' in v)]
        return answer

    def _enrollment(self, path: str) -> Answer | None:
        """A finalize under `enrollment_fails` (Pebble's finalize URL ends in its order's
        id): refused as acme2certifier does, the order invalid."""
        if not (path.startswith("/finalize-order/") and self.enrollment_fails):
            return None
        order = "/my-order/" + path.rsplit("/", 1)[-1]
        with self._lock:
            again = order in self._invalid
            self._invalid.add(order)
            self._count("finalize")
        if again:
            return self._problem(403, "orderNotReady", "Order is not ready")
        return self._problem(500, "serverInternal", "enrollment failed")

    # -- rewriting ----------------------------------------------------------------------
    def _directory(self, data: bytes) -> bytes:
        d = json.loads(data)
        if self.eab_in_meta:
            d.setdefault("meta", {})["externalAccountRequired"] = True
        return json.dumps(d).encode()

    def _hold_processing(self, order_path: str, answer: Answer) -> None:
        """(Pebble's finalize URL ends in its order's id.)"""
        if not self.processing_polls:
            return
        with self._lock:
            self._processing[order_path] = self.processing_polls
        answer.body = json.dumps(_processing(json.loads(answer.body))).encode()

    def _still_processing(self, path: str, answer: Answer) -> None:
        with self._lock:
            left = self._processing.get(path, 0)
            if left <= 0:
                return
            self._processing[path] = left - 1
            self._count("processing")
        answer.body = json.dumps(_processing(json.loads(answer.body))).encode()
        answer.headers.append(("Retry-After", "1"))

    def _leaf_only(self, answer: Answer) -> None:
        certs = x509.load_pem_x509_certificates(answer.body)
        paths = [f"/up-cert/{c.serial_number:x}" for c in certs[1:]]
        with self._lock:
            for i, cert in enumerate(certs[1:]):
                self._issuers[paths[i]] = (cert.public_bytes(serialization.Encoding.DER),
                                           paths[i + 1] if i + 1 < len(paths) else None)
            self._count("leafOnly")
        answer.body = certs[0].public_bytes(serialization.Encoding.PEM)
        answer.headers = [(k, v) for k, v in answer.headers
                          if not (k.lower() == "link" and 'rel="alternate"' in v)]
        if paths:
            answer.headers.append(("Link", f'<https://localhost:{self.port}{paths[0]}>;rel="up"'))


def _processing(order: dict) -> dict:
    order = dict(order)
    order["status"] = "processing"
    order.pop("certificate", None)
    return order


def _jws_nonce(body: bytes | None) -> str | None:
    try:
        jws = json.loads(body or b"")
        return json.loads(_b64decode(jws["protected"])).get("nonce")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None

