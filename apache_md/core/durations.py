"""Durations and time slices as mod_md writes them (`14d`, `12h`, `30mi`, `33%`).

Pure functions only: parsing for the config reader, formatting for md.json and
md-status, and the window arithmetic the scheduler needs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_UNITS = {"d": 86400.0, "h": 3600.0, "mi": 60.0, "s": 1.0, "ms": 0.001}
_LEADING_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?)0*([0-9]+)")
INT64_MAX = 2**63 - 1
# Longer durations are refused (mod_md's apr_time_t would wrap far beyond them, and
# Python's datetime ends in year 9999): every date computed from a configured
# duration stays representable, whatever the certificate's dates.
MAX_DURATION = 36500 * 86400.0
MAX_DURATION_TEXT = "36500d (100 years)"


class DurationError(ValueError):
    """Not a duration or time slice; the text is mod_md's words for what is wrong."""


class OutOfRange(DurationError):
    """A well-formed duration too long to be used; the text is the end of a sentence."""


def leading_int(text: str) -> tuple[int, str] | None:
    """C's strtoi64 (base 10): the number `text` starts with and the rest, or
    None without digits or beyond 64 bits (where strtoi64 sets ERANGE)."""
    m = _LEADING_INT.match(text)
    if not m or len(m.group(2)) > 19:  # int() of thousands of digits is refused, and slow
        return None
    n = int(m.group(1) + m.group(2))
    return (n, text[m.end():]) if -INT64_MAX - 1 <= n <= INT64_MAX else None


def parse_duration(text: str, default_unit: str = "s") -> float:
    """Seconds for `text`, as mod_md's md_duration_parse reads it.

    An integer and a unit (`d`, `h`, `mi`, `s`, `ms`; the default differs per
    directive: days for windows and MDActivationDelay, seconds otherwise). mod_md
    reads the unit by its first letters and ignores the rest, so `30days` is 30d;
    a space between number and unit is an error. DurationError when it is not a
    duration, OutOfRange when longer than MAX_DURATION either way.
    """
    lead = leading_int(text)
    if lead is None:
        raise DurationError("unrecognized duration format")
    n, unit = lead[0], (lead[1] or default_unit).lower()
    key = unit[:2] if unit.startswith("m") else unit[:1]
    if key not in _UNITS:
        raise DurationError("unrecognized duration format")
    seconds = n * _UNITS[key]
    if abs(seconds) > MAX_DURATION:
        raise OutOfRange(f"is out of range: at most {MAX_DURATION_TEXT}")
    return seconds


def format_duration(seconds: float) -> str:
    """mod_md's duration_format (md_time.c), to the letter: the largest of d, h, mi, s
    that divides the whole seconds, so anything below a second is `0d`; otherwise the
    millisecond part alone (1500ms reads `500ms`: it uses apr_time_msec, which is the
    milliseconds within the second). C's division truncates towards zero."""
    micros = round(seconds * 1_000_000)
    whole = _cdiv(micros, 1_000_000)
    for unit, size in (("d", 86400), ("h", 3600), ("mi", 60)):
        if whole - _cdiv(whole, size) * size == 0:
            return f"{_cdiv(whole, size)}{unit}"
    millis = _cdiv(micros, 1000)
    millis -= _cdiv(millis, 1000) * 1000
    return f"{whole}s" if millis == 0 else f"{millis}ms"


def _cdiv(a: int, b: int) -> int:
    """C's integer division (towards zero)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


@dataclass(frozen=True)
class Timeslice:
    """A window before a certificate's end: absolute seconds or a percentage."""

    seconds: float | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str, default_unit: str = "d", whole: bool = False) -> "Timeslice":
        """A Timeslice as mod_md's md_timeslice_parse reads it: a duration, or an
        integer percentage (below 100 unless `whole`). DurationError otherwise, with
        a fragment of mod_md's message; OutOfRange for a duration too long."""
        try:
            secs = parse_duration(text, default_unit)
        except OutOfRange:
            raise
        except DurationError:
            pass
        else:
            if secs < 0:
                raise DurationError("has unrecognized format")
            return cls(seconds=secs)
        lead = leading_int(text)
        if lead is None or not lead[1].startswith("%"):
            raise DurationError("has unrecognized format")
        pct = lead[0]
        if pct < 0:
            raise DurationError("percent must be less than 100")
        if pct >= 100 and not whole:
            raise DurationError("with a length of 100% or more is not allowed.")
        return cls(percent=pct)

    def length(self, not_before: datetime, not_after: datetime) -> timedelta:
        if self.percent is not None:
            lifetime = (not_after - not_before).total_seconds()
            return timedelta(seconds=int(lifetime * self.percent / 100.0))
        return timedelta(seconds=self.seconds or 0)

    def start(self, not_before: datetime, not_after: datetime) -> datetime:
        """When the window opens for a certificate valid [not_before, not_after]
        (the earliest date there is, should the window reach back beyond it)."""
        length, floor = self.length(not_before, not_after), datetime.min.replace(tzinfo=not_after.tzinfo)
        return not_after - length if not_after - floor > length else floor

    def format(self) -> str:
        if self.percent is not None:
            return f"{int(self.percent) if self.percent == int(self.percent) else self.percent}%"
        return format_duration(self.seconds or 0)

    def __str__(self) -> str:
        return self.format()
