"""When to renew and when to retry: pure decisions over certificates and jobs.

mod_md's rules (reference/mod_md-formats.md §6), plus the short-lifetime
rule users asked for (certificates under 10 days renew at half-life).
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta

from .crypto import CertInfo, covers
from .model import ManagedDomain

MAX_BACKOFF = 24 * 3600.0
SHORT_LIVED = timedelta(days=10)
# ACME problems that mean "your input is wrong": retrying soon only burns rate limits.
BAD_INPUT_PROBLEMS = {
    "agreementRequired", "badCSR", "badSignatureAlgorithm", "externalAccountRequired",
    "invalidContact", "unsupportedContact", "malformed", "rejectedIdentifier",
    "unsupportedIdentifier", "userActionRequired", "badRevocationReason",
}


def jitter(seconds: float, rnd: random.Random | None = None) -> float:
    """mod_md's ±50%: seconds * (1 + (r-128)/256) for a random byte r."""
    r = (rnd or random).randrange(256)
    return seconds + seconds * (r - 128) / 256


def backoff_delay(errors: int, retry_delay: float, problem: str | None = None,
                  rnd: random.Random | None = None) -> float:
    """Seconds to wait after `errors` consecutive failures."""
    if errors <= 0:
        return 0.0
    short = (problem or "").rsplit(":", 1)[-1]
    if problem and short in BAD_INPUT_PROBLEMS:
        delay = MAX_BACKOFF
    else:
        delay = min(MAX_BACKOFF, retry_delay * (2 ** min(errors - 1, 30)))
    return jitter(delay, rnd)


def window_start(md: ManagedDomain, cert: CertInfo) -> datetime:
    start = md.renew_window.start(cert.not_before, cert.not_after)
    lifetime = cert.not_after - cert.not_before
    if lifetime < SHORT_LIVED:
        start = min(start, cert.not_before + lifetime / 2)
    return start


def warn_start(md: ManagedDomain, cert: CertInfo) -> datetime:
    return md.warn_window.start(cert.not_before, cert.not_after)


def missing_reason(md: ManagedDomain, certs: dict[str, CertInfo | None]) -> str | None:
    """Why the active set cannot serve the MD as configured (None when it can).

    This is mod_md's "incomplete" state: a key type without certificate, names
    not covered, or a must-staple mismatch.
    """
    for spec in md.keyspecs:
        info = certs.get(spec.name)
        if info is None:
            return f"certificate({spec.name}) is missing"
        uncovered = [d for d in md.domains if not covers(list(info.names), d)]
        if uncovered:
            return f"certificate({spec.name}) does not cover all domains ({', '.join(uncovered)})"
        if info.must_staple != md.must_staple:
            return f"certificate({spec.name}) must-staple does not match the configuration"
    return None


def renew_at(md: ManagedDomain, certs: dict[str, CertInfo | None], now: datetime) -> datetime:
    """Earliest window start over the MD's certificates; now when incomplete."""
    if missing_reason(md, certs):
        return now
    return min(window_start(md, certs[s.name]) for s in md.keyspecs)  # type: ignore[arg-type]


def should_warn(md: ManagedDomain, certs: dict[str, CertInfo | None], now: datetime) -> bool:
    return any(info is not None and warn_start(md, info) <= now for info in certs.values())


def renewal_due(md: ManagedDomain, certs: dict[str, CertInfo | None], now: datetime) -> str | None:
    """The reason a renewal is due now, or None."""
    reason = missing_reason(md, certs)
    if reason:
        return reason
    at = renew_at(md, certs, now)
    if at <= now:
        return f"renewal window reached ({md.renew_window})"
    return None


def next_check(interval: float, rnd: random.Random | None = None) -> float:
    return max(1.0, jitter(interval, rnd))
