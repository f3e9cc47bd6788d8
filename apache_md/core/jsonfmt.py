"""mod_md's JSON conventions: 2-space indent, no trailing newline, RFC 1123 times."""
from __future__ import annotations

import functools
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


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                         "Sep", "Oct", "Nov", "Dec"), 1)}


def parse_http_date(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    return _parse_http_date(text)


@functools.lru_cache(maxsize=4096)
def _parse_http_date(text: str) -> datetime | None:
    # kept: the status snapshot renders an MD's job log (20-30 dates) again at each
    # refresh while the MD is driven, and datetimes are immutable
    # The form http_date() and mod_md write, parsed directly: a check cycle over a
    # thousand MDs reads some 20000 dates, and the email module's parser is slow.
    p = text.split()
    if len(p) == 6 and p[5] == "GMT" and p[2] in _MONTHS:
        try:
            hh, mm, ss = p[4].split(":")
            return datetime(int(p[3]), _MONTHS[p[2]], int(p[1]), int(hh), int(mm), int(ss),
                            tzinfo=timezone.utc)
        except ValueError:
            pass  # not quite that form: the general parser decides
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
