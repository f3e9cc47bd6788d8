from datetime import datetime, timedelta, timezone

import pytest

from apache_md.core.durations import (
    MAX_DURATION,
    DurationError,
    OutOfRange,
    Timeslice,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize("text,unit,seconds", [
    ("10", "d", 864000), ("10d", "s", 864000), ("12h", "s", 43200), ("30mi", "s", 1800),
    ("45s", "d", 45), ("500ms", "s", 0.5), ("7", "s", 7), ("1D", "s", 86400)])
def test_parse_duration(text, unit, seconds):
    assert parse_duration(text, unit) == seconds


@pytest.mark.parametrize("text", ["1y", "5m", "dec-31", "", "d"])
def test_parse_duration_rejects(text):
    with pytest.raises(DurationError, match="unrecognized duration format"):
        parse_duration(text)


@pytest.mark.parametrize("seconds,text", [(864000, "10d"), (43200, "12h"), (90, "90s"),
                                          (1800, "30mi"), (0.5, "0d"), (0, "0d"),
                                          (1.5, "500ms"), (86400.5, "1d"), (-5 * 86400, "-5d"),
                                          (-90, "-90s"), (61.25, "250ms")])
def test_format_duration(seconds, text):
    """What Debian's mod_md 2.6.10 shows in md-status for these (the sweep checks it)."""
    assert format_duration(seconds) == text


def test_timeslice_percent_and_absolute():
    nb = datetime(2026, 1, 1, tzinfo=timezone.utc)
    na = nb + timedelta(days=90)
    assert Timeslice.parse("33%").start(nb, na) == na - timedelta(seconds=int(90 * 86400 * 0.33))
    assert Timeslice.parse("14d").start(nb, na) == na - timedelta(days=14)
    assert Timeslice.parse("10").format() == "10d"
    assert Timeslice.parse("0%").format() == "0%"


@pytest.mark.parametrize("text,msg", [("100%", "100% or more"), ("-5%", "less than 100"),
                                      ("1y", "unrecognized format")])
def test_timeslice_errors(text, msg):
    with pytest.raises(DurationError, match=msg):
        Timeslice.parse(text)


@pytest.mark.parametrize("text,seconds", [
    ("30days", 30 * 86400), ("10sec", 10), ("5min", 300), ("+5s", 5), (" 7", 7 * 86400), ("007h", 7 * 3600)])
def test_parse_duration_reads_units_as_mod_md(text, seconds):
    # md_duration_parse: strtoi64, then the unit by its first letters, the rest ignored
    assert parse_duration(text, "d") == seconds


@pytest.mark.parametrize("text", ["10 d", "5m", "9223372036854775808", "9" * 5000, "1.5d"])
def test_parse_duration_refuses_what_mod_md_refuses(text):
    with pytest.raises(DurationError, match="unrecognized duration format"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["36501d", "-36501d", "2000000000d", "100000000000000"])
def test_parse_duration_refuses_more_than_a_century(text):
    with pytest.raises(OutOfRange, match="at most 36500d"):
        parse_duration(text)
    assert parse_duration("36500d") == MAX_DURATION


def test_timeslice_percent_is_an_integer_as_in_mod_md():
    assert Timeslice.parse("33%abc") == Timeslice(percent=33)
    assert Timeslice.parse("150%", whole=True) == Timeslice(percent=150)
    with pytest.raises(DurationError, match="has unrecognized format"):
        Timeslice.parse("33.5%")
