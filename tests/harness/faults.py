"""A flaky CA: Pebble behind a reverse proxy that injects faults at seeded random.

Per request it draws one of: a 5xx answer from "the load balancer" (500, 502,
503, 504, HTML body, Pebble never sees the request), 429 with
`urn:ietf:params:acme:error:rateLimited` and `Retry-After`, a connection
reset (before the request reaches Pebble, or after, so the answer is lost),
a slow answer (forwarded, then held back), or a clean forward. Pebble adds
its own bad nonces (5% by default).

It counts requests and faults, logs every request (method, path) in order,
and records each request to an endpoint (its path) that arrived while a
Retry-After it had sent for that endpoint was still running: on the
connection that carried the 429 from the moment it was sent (the client had
read it before it sent anything else there), on any other connection after
`grace` seconds (a request another thread had sent before the 429 reached
the client is no violation). Its 429s are rate limits of one endpoint, so
requests to other endpoints are not held (core/retryafter).
Paths starting with one of `rate_limited` get a 429 every time, `hold_request` and
`hold_answer` hold one request or its answer back; `down = True`
resets every connection, as a CA that is gone; stop() and start() again refuse
connections meanwhile.
"""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

from .front import Answer, PebbleFront, Request, Reset

_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


class FaultProxy(PebbleFront):
    def __init__(self, pebble, port: int, *, seed: int = 0, error_rate: float = 0.10,
                 rate_limit_rate: float = 0.05, retry_after: int = 2, reset_rate: float = 0.03,
                 slow_rate: float = 0.05, slow_seconds: float = 2.5, grace: float = 0.5):
        super().__init__(pebble, port)
        self.rnd = random.Random(seed)
        self.rates = [("5xx", error_rate), ("429", rate_limit_rate), ("reset", reset_rate),
                      ("slow", slow_rate)]
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.grace = grace
        self.down = False
        # path prefixes whose next request is forwarded and its answer lost (reset), once
        self.lose_answer: set[str] = set()
        # path prefixes answered 429 (with Retry-After) every time
        self.rate_limited: set[str] = set()
        # path prefix -> seconds: its next request is held that long before it is
        # forwarded (on its way to the CA), or forwarded and its answer held (on its way
        # back), once; `holding`: answers held back now
        self.hold_request: dict[str, float] = {}
        self.hold_answer: dict[str, float] = {}
        self.holding = 0
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []  # (method, path) of every request
        self.violations: list[str] = []  # requests sent before a Retry-After had passed
        self.others_while_held = 0  # requests to other endpoints while one was held
        # path -> (429 sent, its Retry-After over, the connection it went to); monotonic
        self._held: dict[str, tuple[float, float, tuple]] = {}
        self._lock = threading.Lock()

    def set_rates(self, **rates: float) -> None:
        """Change rates while running, e.g. set_rates(**{"5xx": 0, "429": 0})."""
        with self._lock:
            self.rates = [(k, rates.get(k, r)) for k, r in self.rates]

    def _draw(self, req: Request) -> str:
        now = time.monotonic()
        path = req.path.split("?")[0]
        with self._lock:
            self.requests += 1
            self.log.append((req.method, req.path))
            self._check(req, path)
            lost = next((p for p in self.lose_answer if req.path.startswith(p)), None)
            if self.down:
                kind = "down"
            elif lost:
                self.lose_answer.discard(lost)
                kind = "lost"
            elif any(req.path.startswith(p) for p in self.rate_limited):
                kind = "429"
            else:
                x, kind = self.rnd.random(), "forward"
                for name, rate in self.rates:
                    if x < rate:
                        kind = name
                        break
                    x -= rate
            self.faults[kind] += 1
            if kind == "429":
                self._held[path] = (now, now + self.retry_after, req.client)
            return kind

    def _check(self, req: Request, path: str) -> None:
        at = req.arrived or time.monotonic()
        self.others_while_held += any(p != path and s + self.grace <= at < u
                                      for p, (s, u, _) in self._held.items())
        sent, until, client = self._held.get(path, (0.0, 0.0, ()))
        if at < until and (at >= sent + self.grace or (client and client == req.client)):
            where = "on the same connection" if client == req.client else "on another connection"
            self.violations.append(f"{req.method} {req.path} {where}: {until - at:.2f} s before "
                                   f"its Retry-After had passed ({at - sent:.2f} s after it)")

    def handle(self, req: Request) -> Answer:
        kind = self._draw(req)
        if kind == "down":
            raise Reset
        if kind == "5xx":
            with self._lock:
                status = self.rnd.choice(sorted(_REASONS))
            body = f"<html><body><h1>{status} {_REASONS[status]}</h1></body></html>".encode()
            return Answer(status, body, [("Content-Type", "text/html")])
        if kind == "429":
            problem = {"type": "urn:ietf:params:acme:error:rateLimited", "status": 429,
                       "detail": "too many requests, slow down"}
            return Answer(429, json.dumps(problem).encode(),
                          [("Content-Type", "application/problem+json"),
                           ("Retry-After", str(self.retry_after))])
        if kind in ("reset", "lost"):
            with self._lock:
                lost_answer = kind == "lost" or self.rnd.random() < 0.5
            if lost_answer:
                self.forward(req)
            raise Reset
        time.sleep(self._once(self.hold_request, req.path))
        answer = self.forward(req)
        held = self._once(self.hold_answer, req.path) or \
            (self.slow_seconds if kind == "slow" else 0)
        with self._lock:
            self.holding += 1
        try:
            time.sleep(held)
        finally:
            with self._lock:
                self.holding -= 1
        return answer

    def _once(self, holds: dict[str, float], path: str) -> float:
        with self._lock:
            prefix = next((p for p in holds if path.startswith(p)), None)
            return holds.pop(prefix) if prefix is not None else 0.0
