"""One word for an MD's condition: the status page's badge, the `apache-md status`
table and the metrics' `apache_md_state` all say it from here, so they agree.

"error" means the MD needs someone: its renewals keep failing (md-status
`renewal.errors` > 0) or mod_md calls its state error (broken files).
"expired" wins over it: the certificate Apache serves has run out. Pure:
md-status objects in, words out.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ..core.jsonfmt import parse_http_date
from ..core.model import MDState


def condition(md: dict[str, Any], now: datetime) -> str:
    """expired, error, staged, incomplete, renewing, good or unknown."""
    renewal = md.get("renewal") or {}
    until = parse_http_date(((md.get("cert") or {}).get("valid") or {}).get("until"))
    if until and until <= now:
        return "expired"
    if renewal.get("errors") or md.get("state") == MDState.ERROR:
        return "error"
    if (md.get("activation") or {}).get("state") == "staged":
        return "staged"
    if md.get("state") == MDState.INCOMPLETE:
        return "incomplete"
    if renewal:
        return "renewing"
    if md.get("state") == MDState.COMPLETE:
        return "good"
    return "unknown"


def state(md: dict[str, Any], now: datetime) -> MDState:
    """The condition as one of mod_md's states: expired and error as above, otherwise
    md-status `state` (staged and renewing MDs are complete or incomplete)."""
    word = condition(md, now)
    if word in ("expired", "error"):
        return MDState[word.upper()]
    try:
        return MDState(md.get("state"))
    except (ValueError, TypeError):
        return MDState.UNKNOWN


def ca_url(md: dict[str, Any]) -> str:
    """The CA of an MD for people and metrics: the one that issued the live certificate
    (md-status `ca.url`, which mod_md shows only once there is one), else the one a
    renewal uses, else the first configured ("" for a static MD without any)."""
    ca = md.get("ca") or {}
    urls = ca.get("urls") or [""]
    return ca.get("url") or (md.get("renewal") or {}).get("ca-url") or \
        ("" if md.get("cert-files") else urls[0])
