"""mod_md's JSON conventions: 2-space indent, no trailing newline, RFC 1123 times."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def http_date(dt: datetime | None) -> str | None:
    """'Sat, 11 Apr 2026 15:59:33 GMT' (apr_rfc822_date), None stays None."""
    if dt is None:
        return None
    return format_datetime(dt.astimezone(timezone.utc).replace(microsecond=0), usegmt=True)


def parse_http_date(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        dt = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def period(start: datetime | None, end: datetime | None) -> dict[str, str] | None:
    """{"from", "until"}, or None when either end is unknown (mod_md drops the key)."""
    if not start or not end:
        return None
    return {"from": http_date(start), "until": http_date(end)}


def put(obj: dict, key: str, value: Any) -> None:
    """Set a key unless the value is None: mod_md leaves unset strings out."""
    if value is not None:
        obj[key] = value
