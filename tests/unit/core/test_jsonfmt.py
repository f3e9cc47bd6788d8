import random
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from apache_md.core.jsonfmt import http_date, parse_http_date


def test_parse_http_date_reads_back_what_http_date_writes():
    rnd = random.Random(1)
    for _ in range(2000):
        d = datetime(1990, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rnd.randrange(2**31))
        assert parse_http_date(http_date(d)) == d == parsedate_to_datetime(http_date(d))


def test_parse_http_date_other_forms_and_garbage():
    assert parse_http_date("Sat, 11 Apr 2026 15:59:33 +0200") == \
        datetime(2026, 4, 11, 13, 59, 33, tzinfo=timezone.utc)
    assert parse_http_date("11 Apr 2026 15:59:33 GMT") == \
        datetime(2026, 4, 11, 15, 59, 33, tzinfo=timezone.utc)
    for bad in (None, "", "x", 42, "Sat, 31 Feb 2026 10:00:00 GMT",
                "Sat, 11 Apr 2026 25:00:00 GMT"):
        assert parse_http_date(bad) is None
