"""When to renew and when to retry: pure decisions over certificates, jobs and ARI.

mod_md's rules (reference/mod_md-formats.md §6), plus what its users asked
for: certificates under 10 days renew at half-life, a changed RSA key size or
a CA that is no longer configured trigger a renewal, and ARI (RFC 9773) picks
a time uniformly inside the CA's window. Every function takes `now` (and a
random source where it draws), so the tests control the clock.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any, Iterable

from . import tailscale
from .aprstatus import input_related
from .crypto import CertInfo, covers, spec_key_type
from .jsonfmt import http_date, parse_http_date
from .model import ManagedDomain, MDState

MAX_BACKOFF = 24 * 3600.0
SHORT_LIVED = timedelta(days=10)
WINDOW_DUE = "renewal window reached"  # renewal_due's reason when only the window says so
# ARI polling (RFC 9773 §4.3.3): 6 hours without Retry-After; a CA's value is
# clamped to [1 minute, 1 day]; a failed poll is tried again after an hour.
ARI_DEFAULT_POLL = 6 * 3600.0
ARI_MIN_POLL, ARI_MAX_POLL = 60.0, 24 * 3600.0
ARI_ERROR_POLL = 3600.0


def jitter(seconds: float, rnd: random.Random | None = None) -> float:
    """mod_md's ±50%: seconds * (1 + (r-128)/256) for a random byte r."""
    r = (rnd or random).randrange(256)
    return seconds + seconds * (r - 128) / 256


def backoff_delay(errors: int, retry_delay: float, problem: str | None = None,
                  rnd: random.Random | None = None) -> float:
    """Seconds to wait after `errors` consecutive failures."""
    if errors <= 0:
        return 0.0
    if input_related(problem):  # retrying soon only burns rate limits
        delay = MAX_BACKOFF
    else:
        delay = min(MAX_BACKOFF, retry_delay * (2 ** min(errors - 1, 30)))
    return jitter(delay, rnd)


def next_check(interval: float, rnd: random.Random | None = None) -> float:
    """Seconds to the next check cycle: MDCheckInterval ±50%, at least a second."""
    return max(1.0, jitter(interval, rnd))


# -- windows ----------------------------------------------------------------------
def window_start(md: ManagedDomain, cert: CertInfo) -> datetime:
    start = md.renew_window.start(cert.not_before, cert.not_after)
    lifetime = cert.not_after - cert.not_before
    if lifetime < SHORT_LIVED:
        start = min(start, cert.not_before + lifetime / 2)
    return start


def warn_start(md: ManagedDomain, cert: CertInfo) -> datetime:
    return md.warn_window.start(cert.not_before, cert.not_after)


# missing_reason() by (MD, its certificates): a cycle asks it several times per MD (plan,
# renew-at, md-status) of the same values. The MD is kept in the value, so its id() is not
# reused while the entry lives; the cache starts over when it outgrows the MDs.
_missing: dict[tuple, tuple[ManagedDomain, str | None]] = {}
MISSING_CACHE_MAX = 50_000


def missing_reason(md: ManagedDomain, certs: dict[str, CertInfo | None]) -> str | None:
    key = (id(md), tuple(certs.items()))
    hit = _missing.get(key)
    if hit is not None and hit[0] is md:
        return hit[1]
    if len(_missing) >= MISSING_CACHE_MAX:
        _missing.clear()
    why = _missing_reason(md, certs)
    _missing[key] = (md, why)
    return why


def md_state(md: ManagedDomain, managed: bool,
             certs: dict[str, CertInfo | None]) -> tuple[MDState, str | None]:
    """mod_md's `state` and `state-descr` of an MD (md.json and md-status)."""
    reason = missing_reason(md, certs) if managed else (
        None if all(certs.values()) else "certificate files are missing")
    return (MDState.INCOMPLETE if reason else MDState.COMPLETE), reason


def _missing_reason(md: ManagedDomain, certs: dict[str, CertInfo | None]) -> str | None:
    """Why the active set cannot serve the MD as configured (None when it can).

    This is mod_md's "incomplete" state: a key type without certificate, names
    not covered, or a must-staple mismatch. Unlike mod_md, a key that is not
    what its spec asks for (RSA 2048 where 4096 is configured) counts too,
    unless tailscaled chose it.
    """
    for spec in md.keyspecs:
        info = certs.get(spec.name)
        if info is None:
            return f"certificate({spec.name}) is missing"
        uncovered = [d for d in md.domains if not covers(list(info.names), d)]
        if uncovered:
            return f"certificate({spec.name}) does not cover all domains ({', '.join(uncovered)})"
        # Only a certificate that demands stapling when the config no longer wants it is
        # wrong. The other way round, the CA may leave the extension out on purpose (Let's
        # Encrypt since 2025, Pebble): renewing would loop forever, so the run logs it instead.
        if info.must_staple and not md.must_staple:
            return f"certificate({spec.name}) must-staple does not match the configuration"
        if info.key_type and not tailscale.applies(md) and not _key_fits(info.key_type, spec):
            return (f"certificate({spec.name}) has a {info.key_type} key, "
                    f"configured is {spec_key_type(spec)}")
    return None


def _key_fits(key_type: str, spec) -> bool:
    # "Default" (or no MDPrivateKeys) asks for no size: any RSA key will do, so
    # a store taken over from mod_md is not re-issued for a size nobody chose.
    if spec.kind == "Default":
        return key_type.startswith("rsa")
    return key_type == spec_key_type(spec)


def _norm_url(url: str) -> str:
    return url.rstrip("/")


def ca_change_reason(md: ManagedDomain, issuer_url: str | None) -> str | None:
    """The certificate came from a CA that is no longer in MDCertificateAuthority."""
    if not issuer_url or not md.ca_urls:
        return None
    if _norm_url(issuer_url) in {_norm_url(u) for u in md.ca_urls}:
        return None
    return f"certificate is from CA {issuer_url}, which is no longer configured"


def incomplete_reason(md: ManagedDomain, certs: dict[str, CertInfo | None],
                      issuer_url: str | None = None) -> str | None:
    return missing_reason(md, certs) or ca_change_reason(md, issuer_url)


def renew_at(md: ManagedDomain, certs: dict[str, CertInfo | None], now: datetime,
             issuer_url: str | None = None) -> datetime:
    """Earliest window start over the MD's certificates; now when incomplete."""
    if incomplete_reason(md, certs, issuer_url):
        return now
    return min(window_start(md, certs[s.name]) for s in md.keyspecs)  # type: ignore[arg-type]


def should_warn(md: ManagedDomain, certs: dict[str, CertInfo | None], now: datetime) -> bool:
    """Inside the warn window for any certificate (mod_md md_reg_should_warn)."""
    return any(info is not None and warn_start(md, info) <= now for info in certs.values())


def renewal_due(md: ManagedDomain, certs: dict[str, CertInfo | None], now: datetime,
                issuer_url: str | None = None) -> str | None:
    """The reason a renewal is due now by configuration and window, or None."""
    reason = incomplete_reason(md, certs, issuer_url)
    if reason:
        return reason
    if renew_at(md, certs, now) <= now:
        return f"{WINDOW_DUE} ({md.renew_window})"
    return None


def ready_at(new_not_before: datetime, active: dict[str, CertInfo | None], complete: bool,
             activation_delay: float, now: datetime) -> datetime:
    """When a freshly staged set may be used (mod_md's result ready_at).

    The latest notBefore of the new certificates, moved by MDActivationDelay
    (which may be negative) but never past the end of the current
    certificates, and only while the MD has a complete, valid set.
    """
    present = [i for i in active.values() if i]
    if not activation_delay or not complete or not present:
        return new_not_before
    left = min(i.not_after for i in present) - now
    if left <= timedelta(0):
        return new_not_before
    return new_not_before + min(timedelta(seconds=activation_delay), left)


# -- ARI (RFC 9773) --------------------------------------------------------------------
# An MD's ARI state is {ari-id: entry}, one entry per active certificate:
#   {"window": {"from", "until"}, "selected": ts, "explanation-url": str,
#    "next-poll": ts, "error": str, "unsupported": true}
# `selected` is drawn once per window, so a restart or a re-poll that returns
# the same window does not move the renewal time around.

def ari_poll_due(entry: dict[str, Any] | None, now: datetime) -> bool:
    if not entry:
        return True
    nxt = parse_http_date(entry.get("next-poll"))
    return nxt is None or nxt <= now


def ari_poll_delay(retry_after: float | None) -> float:
    if retry_after is None:
        return ARI_DEFAULT_POLL
    return min(ARI_MAX_POLL, max(ARI_MIN_POLL, retry_after))


def ari_update(prev: dict[str, Any] | None, info: dict[str, Any], retry_after: float | None,
               now: datetime, rnd: random.Random | None = None) -> dict[str, Any]:
    """The entry after a successful renewalInfo response `info`."""
    window = info.get("suggestedWindow") if isinstance(info, dict) else None
    start = _rfc3339((window or {}).get("start"))
    end = _rfc3339((window or {}).get("end"))
    entry: dict[str, Any] = {}
    if start is None or end is None or end < start:
        entry["error"] = "renewalInfo without a valid suggestedWindow"
        entry["next-poll"] = http_date(now + timedelta(seconds=ARI_ERROR_POLL))
        if prev and prev.get("selected"):  # keep what we knew
            for k in ("window", "selected", "explanation-url"):
                if k in prev:
                    entry[k] = prev[k]
        return entry
    win = {"from": http_date(start), "until": http_date(end)}
    if prev and prev.get("window") == win and prev.get("selected"):
        entry["selected"] = prev["selected"]
    else:
        span = (end - start).total_seconds()
        entry["selected"] = http_date(start + timedelta(seconds=(rnd or random).uniform(0, span)))
    entry["window"] = win
    url = info.get("explanationURL")
    if isinstance(url, str) and url:
        entry["explanation-url"] = url
    entry["next-poll"] = http_date(now + timedelta(seconds=ari_poll_delay(retry_after)))
    return entry


def ari_failed(prev: dict[str, Any] | None, error: str, now: datetime,
               unsupported: bool = False) -> dict[str, Any]:
    """The entry after a failed poll (or a CA without renewalInfo)."""
    entry = {k: v for k, v in (prev or {}).items()
             if k in ("window", "selected", "explanation-url") and not unsupported}
    if unsupported:
        entry["unsupported"] = True
        delay = ARI_MAX_POLL
    else:
        entry["error"] = error
        delay = ARI_ERROR_POLL
    entry["next-poll"] = http_date(now + timedelta(seconds=delay))
    return entry


def ari_renew_at(entries: Iterable[dict[str, Any] | None]) -> tuple[datetime | None, str | None]:
    """The earliest selected time over the certificates, with its explanation URL."""
    best: tuple[datetime | None, str | None] = (None, None)
    for e in entries:
        at = parse_http_date((e or {}).get("selected"))
        if at is not None and (best[0] is None or at < best[0]):
            best = (at, (e or {}).get("explanation-url"))
    return best


def ari_next_poll(entries: Iterable[dict[str, Any] | None]) -> datetime | None:
    times = [parse_http_date((e or {}).get("next-poll")) for e in entries]
    times = [t for t in times if t]
    return min(times) if times else None


ARI_EXPLAINED = "Renewal triggered by CA via ARI, explanation at "  # mod_md's job log has it


def ari_reason(explanation_url: str | None) -> str:
    return f"{ARI_EXPLAINED}{explanation_url}" if explanation_url \
        else "Renewal triggered by CA via ARI"


def _rfc3339(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt
