"""Renewal windows and backoff with a controlled clock and random source."""
import random
from datetime import datetime, timedelta, timezone

import pytest

from apache_md.crypto import CertInfo
from apache_md.durations import Timeslice
from apache_md.model import KeySpec, Location, ManagedDomain
from apache_md.schedule import (MAX_BACKOFF, backoff_delay, missing_reason, renew_at,
                                renewal_due, should_warn)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def md(**kw):
    return ManagedDomain(name="a.test", domains=["a.test", "www.a.test"],
                         location=Location("x.conf", 1), **kw)


def cert(days=90, names=("a.test", "www.a.test"), start=T0, must_staple=False):
    return CertInfo(not_before=start, not_after=start + timedelta(days=days), serial="01",
                    sha256="00", issuer_name="/CN=x", issuer_uri=None, ocsp_url=None,
                    ari_cert_id=None, names=tuple(names), must_staple=must_staple)


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
    assert "must-staple" in missing_reason(md(must_staple=True), {"rsa": cert()})


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
