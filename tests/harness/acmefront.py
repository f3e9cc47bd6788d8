"""An HTTPS front for Pebble 2.4 that adds what it lacks: ARI and profiles.

It forwards to Pebble (front.py) and on top of that it
- adds `renewalInfo` and (optionally) `meta.profiles` to the directory;
- answers GET <front>/renewal-info/<cert-id> with whatever the test set
  (`set_window`), with a Retry-After header, and records the ids asked for;
- records every newOrder payload the CA accepted or the front refused (the
  JWS payload is base64url JSON; `profile`, `replaces`), and can refuse
  orders that carry `replaces`, as a CA does with 409 alreadyReplaced.
Pebble ignores the JSON fields it does not know, so the orders still work.
"""
from __future__ import annotations

import base64
import json
import threading
from datetime import datetime, timedelta, timezone

from .front import Answer, PebbleFront, Request


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AcmeFront(PebbleFront):
    def __init__(self, pebble, port: int, profiles: dict[str, str] | None = None):
        super().__init__(pebble, port)
        self.profiles = profiles
        self.orders: list[dict] = []  # newOrder payloads, in order
        self.ari_requests: list[str] = []  # cert ids asked for
        self.refuse_replaces = False
        self.retry_after = 3600
        self._windows: dict[str, dict] = {}  # cert id -> renewalInfo body
        self._default_window: dict | None = None
        self._lock = threading.Lock()

    # -- what the test controls -----------------------------------------------------
    def set_window(self, start: datetime, end: datetime, cert_id: str | None = None,
                   explanation: str | None = None) -> None:
        body: dict = {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}
        if explanation:
            body["explanationURL"] = explanation
        with self._lock:
            if cert_id:
                self._windows[cert_id] = body
            else:
                self._default_window = body

    def window_in(self, days_from: float, days_to: float, **kw) -> None:
        now = datetime.now(timezone.utc)
        self.set_window(now + timedelta(days=days_from), now + timedelta(days=days_to), **kw)

    def _renewal_info(self, cert_id: str) -> dict:
        with self._lock:
            self.ari_requests.append(cert_id)
            body = self._windows.get(cert_id) or self._default_window
        if body is None:  # far away: nothing to do
            now = datetime.now(timezone.utc)
            body = {"suggestedWindow": {"start": rfc3339(now + timedelta(days=1000)),
                                        "end": rfc3339(now + timedelta(days=1001))}}
        return body

    # -- answering -------------------------------------------------------------------------
    def handle(self, req: Request) -> Answer:
        if req.method == "GET" and req.path.startswith("/renewal-info/"):
            info = self._renewal_info(req.path[len("/renewal-info/"):])
            return Answer(200, json.dumps(info).encode(),
                          [("Content-Type", "application/json"),
                           ("Retry-After", str(self.retry_after))])
        order = self._new_order(req.body) if req.method == "POST" and req.body else None
        if order is not None and self.refuse_replaces and order.get("replaces"):
            self._record(order)
            nonce = self.forward(Request("HEAD", "/nonce-plz", {}, None)).header("Replay-Nonce")
            problem = {"type": "urn:ietf:params:acme:error:alreadyReplaced",
                       "detail": "the certificate has already been replaced", "status": 409}
            return Answer(409, json.dumps(problem).encode(),
                          [("Content-Type", "application/problem+json"),
                           ("Replay-Nonce", nonce or "")])
        answer = self.forward(req)
        if order is not None and answer.status == 201:  # not the badNonce rejects
            self._record(order)
        if req.method == "GET" and req.path == "/dir" and answer.status == 200:
            answer.body = self._directory(answer.body)
        return answer

    # -- rewriting and recording ----------------------------------------------------------------
    def _directory(self, data: bytes) -> bytes:
        d = json.loads(data)
        d["renewalInfo"] = f"https://localhost:{self.port}/renewal-info"
        if self.profiles is not None:
            d.setdefault("meta", {})["profiles"] = dict(self.profiles)
        return json.dumps(d).encode()

    @staticmethod
    def _new_order(body: bytes) -> dict | None:
        """The payload of a newOrder JWS, None for any other request."""
        try:
            jws = json.loads(body)
            header = json.loads(_b64decode(jws["protected"]))
            payload = json.loads(_b64decode(jws["payload"])) if jws.get("payload") else None
        except (ValueError, KeyError, TypeError):
            return None
        if not header.get("url", "").endswith("/order-plz") or not isinstance(payload, dict):
            return None
        return payload

    def _record(self, order: dict) -> None:
        with self._lock:
            self.orders.append(order)
