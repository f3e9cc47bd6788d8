"""Renewal windows and backoff with a controlled clock and random source."""
import random
from datetime import datetime, timedelta, timezone

import pytest

from apache_md.core.crypto import CertInfo
from apache_md.core.durations import Timeslice
from apache_md.core.jsonfmt import parse_http_date
from apache_md.core.model import KeySpec, Location, ManagedDomain
from apache_md.core.schedule import (
    MAX_BACKOFF,
    ari_failed,
    ari_next_poll,
    ari_poll_due,
    ari_reason,
    ari_renew_at,
    ari_update,
    backoff_delay,
    jitter,
    missing_reason,
    next_check,
    ready_at,
    renew_at,
    renewal_due,
    should_warn,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def md(**kw):
    return ManagedDomain(name="a.test", domains=["a.test", "www.a.test"],
                         location=Location("x.conf", 1), **kw)


def cert(days=90, names=("a.test", "www.a.test"), start=T0, must_staple=False, key=""):
    return CertInfo(not_before=start, not_after=start + timedelta(days=days), serial="01",
                    sha256="00", issuer_name="/CN=x", issuer_uri=None, ocsp_url=None,
                    ari_cert_id=None, names=tuple(names), must_staple=must_staple,
                    key_type=key)


def test_default_window_is_a_third_of_the_lifetime():
    m = md()
    at = renew_at(m, {"rsa": cert()}, T0)
    assert at == T0 + timedelta(days=90) - timedelta(seconds=int(90 * 86400 * 0.33))
    assert renewal_due(m, {"rsa": cert()}, at - timedelta(seconds=1)) is None
    assert "window" in renewal_due(m, {"rsa": cert()}, at)


def test_absolute_window():
    m = md(renew_window=Timeslice(seconds=14 * 86400))
    assert renew_at(m, {"rsa": cert()}, T0) == T0 + timedelta(days=76)


def test_short_lived_certificates_renew_at_half_life():
    m = md()
    assert renew_at(m, {"rsa": cert(days=6)}, T0) == T0 + timedelta(days=3)


def test_missing_key_type_names_and_must_staple_make_it_incomplete():
    m = md(pkey_specs=[KeySpec("EC", curve="secp256r1"), KeySpec("RSA", 2048)])
    assert missing_reason(m, {"secp256r1": cert(), "rsa": None}) == "certificate(rsa) is missing"
    assert renew_at(m, {"secp256r1": cert(), "rsa": None}, T0) == T0
    m2 = md()
    assert "does not cover" in missing_reason(m2, {"rsa": cert(names=("a.test",))})
    assert missing_reason(md(), {"rsa": cert(names=("*.a.test", "a.test"))}) is None
    assert "must-staple" in missing_reason(md(), {"rsa": cert(must_staple=True)})
    # a CA may drop the extension (Let's Encrypt since 2025): no renew-forever loop
    assert missing_reason(md(must_staple=True), {"rsa": cert()}) is None


def test_warn_window():
    m = md()
    c = cert()
    assert not should_warn(m, {"rsa": c}, T0 + timedelta(days=80))
    assert should_warn(m, {"rsa": c}, T0 + timedelta(days=82))


def test_backoff_doubles_with_jitter_and_caps():
    rnd = random.Random(1)
    for errors, base in [(1, 30), (2, 60), (3, 120), (10, 30 * 512)]:
        d = backoff_delay(errors, 30, rnd=rnd)
        assert base * 0.5 <= d < base * 1.5
    assert backoff_delay(40, 30, rnd=rnd) < MAX_BACKOFF * 1.5
    assert backoff_delay(40, 30, rnd=rnd) >= MAX_BACKOFF * 0.5
    assert backoff_delay(0, 30) == 0


@pytest.mark.parametrize("problem", ["urn:ietf:params:acme:error:malformed",
                                     "urn:ietf:params:acme:error:externalAccountRequired"])
def test_bad_input_problems_wait_a_day(problem):
    assert backoff_delay(1, 30, problem, random.Random(2)) >= MAX_BACKOFF * 0.5


# -- more window rules ------------------------------------------------------------------
@pytest.mark.parametrize("window,days_before_end", [
    ("33%", 90 * 0.33), ("10%", 9), ("14d", 14), ("12h", 0.5), ("30mi", 30 / 1440),
    ("30s", 30 / 86400), ("500ms", 0.5 / 86400)])
def test_windows_as_percent_or_duration(window, days_before_end):
    m = md(renew_window=Timeslice.parse(window), warn_window=Timeslice.parse(window))
    c = cert(days=90)
    expected = c.not_after - timedelta(seconds=int(days_before_end * 86400))
    assert abs((renew_at(m, {"rsa": c}, T0) - expected).total_seconds()) <= 1
    assert not should_warn(m, {"rsa": c}, expected - timedelta(seconds=2))
    assert should_warn(m, {"rsa": c}, expected + timedelta(seconds=1))


def test_bare_number_window_is_days():
    assert Timeslice.parse("20") == Timeslice(seconds=20 * 86400)


def test_earliest_window_over_all_certificates_and_warn_for_any():
    m = md(pkey_specs=[KeySpec("EC", curve="secp256r1"), KeySpec("RSA", 2048)])
    early = cert(days=30, start=T0)  # window opens at day 20.1
    late = cert(days=90, start=T0, key="secp256r1")
    at = renew_at(m, {"rsa": early, "secp256r1": late}, T0)
    assert at == early.not_after - timedelta(seconds=int(30 * 86400 * 0.33))
    assert should_warn(m, {"rsa": early, "secp256r1": late}, T0 + timedelta(days=28))


def test_short_lived_rule_only_below_ten_days():
    m = md()
    # 10 days: the normal 33% rule; 9 days: half-life
    assert renew_at(m, {"rsa": cert(days=10)}, T0) \
        == T0 + timedelta(days=10) - timedelta(seconds=int(10 * 86400 * 0.33))
    assert renew_at(m, {"rsa": cert(days=9)}, T0) == T0 + timedelta(days=4.5)
    # a window configured earlier than half-life stays
    m2 = md(renew_window=Timeslice(percent=80))
    assert renew_at(m2, {"rsa": cert(days=6)}, T0) \
        == T0 + timedelta(days=6) - timedelta(seconds=int(6 * 86400 * 0.8))


def test_expired_certificate_is_due():
    assert "window" in renewal_due(md(), {"rsa": cert(days=90)}, T0 + timedelta(days=91))


def test_key_type_change_including_rsa_size_is_incomplete():
    assert missing_reason(md(), {"rsa": cert(key="rsa2048")}) is None
    m = md(pkey_specs=[KeySpec("RSA", 4096)])
    assert "rsa2048 key, configured is rsa4096" in missing_reason(m, {"rsa": cert(key="rsa2048")})
    assert missing_reason(m, {"rsa": cert(key="rsa4096")}) is None
    ec = md(pkey_specs=[KeySpec("EC", curve="P-256")])
    assert missing_reason(ec, {"P-256": cert(key="secp256r1")}) is None
    assert "secp384r1" in missing_reason(ec, {"P-256": cert(key="secp384r1")})
    assert missing_reason(m, {"rsa": cert(key="")}) is None  # unknown: not judged
    # no MDPrivateKeys (or "Default"): any RSA size, but not EC
    assert missing_reason(md(), {"rsa": cert(key="rsa4096")}) is None
    assert "secp256r1" in missing_reason(md(), {"rsa": cert(key="secp256r1")})


def test_ca_no_longer_configured_makes_it_due():
    m = md(ca_urls=["https://b.test/dir", "https://c.test/dir"])
    c = {"rsa": cert()}
    assert renewal_due(m, c, T0, "https://b.test/dir") is None
    assert renewal_due(m, c, T0, "https://c.test/dir/") is None  # trailing slash
    assert "https://a.test/dir" in renewal_due(m, c, T0, "https://a.test/dir")
    assert renew_at(m, c, T0, "https://a.test/dir") == T0
    assert renewal_due(m, c, T0, None) is None  # unknown issuer: not judged


def test_ready_at_with_activation_delay():
    new_nb = T0 + timedelta(days=60)
    active = {"rsa": cert(days=90)}
    now = T0 + timedelta(days=60)
    assert ready_at(new_nb, active, True, 0, now) == new_nb
    assert ready_at(new_nb, active, True, 86400, now) == new_nb + timedelta(days=1)
    # never past the end of the current certificate
    assert ready_at(new_nb, active, True, 100 * 86400, now) == new_nb + timedelta(days=30)
    assert ready_at(new_nb, active, True, -7 * 86400, now) == new_nb - timedelta(days=7)
    # an incomplete or expired MD takes the new set at once
    assert ready_at(new_nb, active, False, 86400, now) == new_nb
    assert ready_at(new_nb, active, True, 86400, T0 + timedelta(days=91)) == new_nb
    assert ready_at(new_nb, {"rsa": None}, True, 86400, now) == new_nb


# -- backoff ------------------------------------------------------------------------------
def test_backoff_sequence_and_cap_exactly():
    class Mid(random.Random):
        def randrange(self, *a):  # r = 128: no jitter
            return 128
    r = Mid()
    assert [backoff_delay(e, 30, rnd=r) for e in range(1, 6)] == [30, 60, 120, 240, 480]
    assert backoff_delay(13, 30, rnd=r) == MAX_BACKOFF  # 30 * 4096 > 24h
    assert backoff_delay(3, 3600, rnd=r) == 4 * 3600


def test_jitter_bounds_are_mod_mds():
    class Fixed(random.Random):
        def __init__(self, r):
            super().__init__()
            self.r = r

        def randrange(self, *a):
            return self.r
    assert jitter(256, Fixed(0)) == 128
    assert jitter(256, Fixed(255)) == 256 + 127
    assert next_check(0.5, Fixed(0)) == 1.0  # never below a second
    assert next_check(12 * 3600, Fixed(0)) == 6 * 3600


def test_non_bad_input_problem_backs_off_normally():
    class Mid(random.Random):
        def randrange(self, *a):
            return 128
    assert backoff_delay(1, 30, "urn:ietf:params:acme:error:rateLimited", Mid()) == 30
    assert backoff_delay(1, 30, "urn:ietf:params:acme:error:badCSR", Mid()) == MAX_BACKOFF


# -- ARI -----------------------------------------------------------------------------------
def window(start, end, **kw):
    body = {"suggestedWindow": {"start": start.isoformat().replace("+00:00", "Z"),
                                "end": end.isoformat().replace("+00:00", "Z")}}
    body.update(kw)
    return body


def test_ari_time_is_drawn_inside_the_window_and_kept():
    rnd = random.Random(7)
    start, end = T0 + timedelta(days=10), T0 + timedelta(days=12)
    e = ari_update(None, window(start, end), 7200, T0, rnd)
    sel = parse_http_date(e["selected"])
    assert start <= sel <= end
    assert parse_http_date(e["next-poll"]) == T0 + timedelta(hours=2)
    # the same window again: the same time, whatever the random source says
    e2 = ari_update(e, window(start, end), None, T0 + timedelta(hours=2), random.Random(99))
    assert e2["selected"] == e["selected"]
    assert parse_http_date(e2["next-poll"]) == T0 + timedelta(hours=8)  # 6h default
    # a moved window: a new draw inside it
    e3 = ari_update(e2, window(T0 - timedelta(days=2), T0 - timedelta(days=1),
                               explanationURL="https://ca/x"), 60, T0, rnd)
    assert parse_http_date(e3["selected"]) < T0 and e3["explanation-url"] == "https://ca/x"
    assert ari_renew_at([e, e3]) == (parse_http_date(e3["selected"]), "https://ca/x")
    assert ari_reason("https://ca/x") == \
        "Renewal triggered by CA via ARI, explanation at https://ca/x"


def test_ari_draws_spread_over_the_whole_window():
    rnd = random.Random(3)
    start, end = T0, T0 + timedelta(days=1)
    draws = [parse_http_date(ari_update(None, window(start, end), None, T0, rnd)["selected"])
             for _ in range(200)]
    assert min(draws) < T0 + timedelta(hours=3) and max(draws) > T0 + timedelta(hours=21)
    assert all(start <= d <= end for d in draws)  # not mod_md's [start-50%, start+50%]


@pytest.mark.parametrize("retry_after,expected", [
    (None, 6 * 3600), (1, 60), (600, 600), (7 * 86400, 86400)])
def test_ari_retry_after_is_honoured_within_sane_bounds(retry_after, expected):
    e = ari_update(None, window(T0, T0 + timedelta(days=1)), retry_after, T0)
    assert parse_http_date(e["next-poll"]) == T0 + timedelta(seconds=expected)
    assert not ari_poll_due(e, T0 + timedelta(seconds=expected - 1))
    assert ari_poll_due(e, T0 + timedelta(seconds=expected))
    assert ari_poll_due(None, T0)


def test_ari_bad_answers_and_failures_keep_what_was_known():
    good = ari_update(None, window(T0 + timedelta(days=5), T0 + timedelta(days=6)), None, T0)
    bad = ari_update(good, {"suggestedWindow": {"start": "yesterday"}}, None, T0)
    assert bad["selected"] == good["selected"] and "error" in bad
    assert parse_http_date(bad["next-poll"]) == T0 + timedelta(hours=1)
    inverted = ari_update(None, window(T0 + timedelta(days=6), T0 + timedelta(days=5)), None, T0)
    assert "selected" not in inverted
    failed = ari_failed(good, "connection refused", T0)
    assert failed["selected"] == good["selected"] and failed["error"] == "connection refused"
    unsupported = ari_failed(good, "", T0, unsupported=True)
    assert unsupported["unsupported"] and "selected" not in unsupported
    assert parse_http_date(unsupported["next-poll"]) == T0 + timedelta(days=1)
    assert ari_next_poll([good, failed]) == T0 + timedelta(hours=1)
    assert ari_renew_at([unsupported, None]) == (None, None)
