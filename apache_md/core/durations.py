"""Durations and time slices as mod_md writes them (`14d`, `12h`, `30mi`, `33%`).

Pure functions only: parsing for the config reader, formatting for md.json and
md-status, and the window arithmetic the scheduler needs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_UNITS = {"d": 86400.0, "h": 3600.0, "mi": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"^\s*(-?\d+)\s*(d|h|mi|s|ms)?\s*$", re.IGNORECASE)


class DurationError(ValueError):
    """Not a duration or time slice; the text is mod_md's words for what is wrong."""


def parse_duration(text: str, default_unit: str = "s") -> float:
    """Seconds for `text`; DurationError when it is not a duration.

    mod_md accepts an integer and an optional unit; the default unit differs
    per directive (days for windows and MDActivationDelay, seconds otherwise).
    """
    m = _DURATION.match(text)
    if not m:
        raise DurationError("unrecognized duration format")
    unit = (m.group(2) or default_unit).lower()
    return int(m.group(1)) * _UNITS[unit]


def format_duration(seconds: float) -> str:
    """mod_md's canonical form: the largest unit that divides the value."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86400000), ("h", 3600000), ("mi", 60000), ("s", 1000)):
        if ms % size == 0 and ms != 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class Timeslice:
    """A window before a certificate's end: absolute seconds or a percentage."""

    seconds: float | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str, default_unit: str = "d") -> "Timeslice":
        """A Timeslice; DurationError (a message fragment in mod_md's words) if it is none."""
        try:
            secs = parse_duration(text, default_unit)
        except DurationError:
            pass
        else:
            if secs < 0:
                raise DurationError("has unrecognized format")
            return cls(seconds=secs)
        m = re.match(r"^\s*(-?\d+(?:\.\d+)?)\s*%\s*$", text)
        if not m:
            raise DurationError("has unrecognized format")
        pct = float(m.group(1))
        if pct < 0:
            raise DurationError("percent must be less than 100")
        if pct >= 100:
            raise DurationError("with a length of 100% or more is not allowed.")
        return cls(percent=pct)

    def length(self, not_before: datetime, not_after: datetime) -> timedelta:
        if self.percent is not None:
            lifetime = (not_after - not_before).total_seconds()
            return timedelta(seconds=int(lifetime * self.percent / 100.0))
        return timedelta(seconds=self.seconds or 0)

    def start(self, not_before: datetime, not_after: datetime) -> datetime:
        """When the window opens for a certificate valid [not_before, not_after]."""
        return not_after - self.length(not_before, not_after)

    def format(self) -> str:
        if self.percent is not None:
            return f"{int(self.percent) if self.percent == int(self.percent) else self.percent}%"
        return format_duration(self.seconds or 0)

    def __str__(self) -> str:
        return self.format()
