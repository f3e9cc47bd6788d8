"""Retry-After: which requests a CA's "come back later" holds back, and until when.

A Retry-After that comes with a 429 or 503 answers one request, so it is
about that resource (RFC 9110 §10.2.3, RFC 8555 §6.6): the endpoint URL
(new-order, one order, authorization, challenge, finalize or certificate
URL, new-nonce ...), not the whole CA. Holding the whole CA for one MD's
429 would make every other MD wait for nothing: 20 MDs through a CA that
answers 5% of requests that way took 11 times as long as through a clean one.

The whole CA is held only when it says its whole service is out:
- a 503 with Retry-After to the directory or new-nonce, which every flow
  (every account, order and nonce) starts from; or
- 503s with Retry-After from SERVICE_STREAK different endpoints in a row,
  with no other answer between: the CA is out everywhere, and holding each
  endpoint alone would still send one request to every other.
A 429 is a rate limit and stays with its endpoint, whatever it is.

Pure: times are the caller's clock (time.monotonic()); ca/http.Gate keeps
one Holds per CA server for every thread of the process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

SERVICE_STREAK = 3
WHOLE = "*"  # the key of a hold on every endpoint of the server


def endpoint(url: str) -> str:
    """The resource a Retry-After is about: scheme, host, port and path (no query)."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path or '/'}"


@dataclass
class Holds:
    """The holds of one server: until when each endpoint (or all, WHOLE) waits."""

    until: dict[str, float] = field(default_factory=dict)
    # endpoints that answered 503 with Retry-After since any other answer: their until
    streak: dict[str, float] = field(default_factory=dict)

    def answered(self, url: str, status: int, retry_after: float | None, now: float,
                 entry: bool = False) -> str | None:
        """Take note of an answer to `url`; `entry`: the directory or new-nonce.
        What it now holds: the endpoint, WHOLE, or None."""
        key = endpoint(url)
        if status not in (429, 503) or retry_after is None:
            if status < 500 and status != 429:
                self.streak.clear()  # the service answers
            return None
        until = now + retry_after
        self._hold(key, until)
        if status != 503:
            return key
        self.streak[key] = until
        if entry or len(self.streak) >= SERVICE_STREAK:
            self._hold(WHOLE, max(self.streak.values()))
            self.streak.clear()
            return WHOLE
        return key

    def _hold(self, key: str, until: float) -> None:
        if until > self.until.get(key, 0.0):
            self.until[key] = until

    def held_for(self, url: str, now: float) -> float:
        """Seconds until a request to `url` may be sent (0: now)."""
        until = max(self.until.get(endpoint(url), 0.0), self.until.get(WHOLE, 0.0))
        if len(self.until) > 64:  # forget what has passed (one key per order URL)
            self.until = {k: t for k, t in self.until.items() if t > now}
        return max(0.0, until - now)
