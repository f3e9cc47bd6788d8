"""core/retryafter: a Retry-After holds back its endpoint; the whole CA only when it is out."""
from __future__ import annotations

from apache_md.core.retryafter import SERVICE_STREAK, Holds, endpoint

CA = "https://ca.test"


def test_an_endpoint_is_its_url_without_the_query():
    assert endpoint("https://CA.test:14000/order/7?x=1") == "https://ca.test:14000/order/7"
    assert endpoint("https://ca.test") == "https://ca.test/"


def test_a_429_holds_its_endpoint_and_nothing_else():
    h = Holds()
    assert h.answered(f"{CA}/new-order", 429, 2, now=100) == f"{CA}/new-order"
    assert h.held_for(f"{CA}/new-order", 101) == 1
    assert h.held_for(f"{CA}/new-order?again", 101) == 1
    assert h.held_for(f"{CA}/authz/1", 101) == 0
    assert h.held_for(f"{CA}/new-order", 102) == 0


def test_a_rate_limit_on_an_entry_stays_with_it():
    h = Holds()
    assert h.answered(f"{CA}/new-nonce", 429, 5, now=0, entry=True) == f"{CA}/new-nonce"
    assert h.held_for(f"{CA}/new-order", 1) == 0


def test_a_503_to_the_directory_or_new_nonce_holds_the_whole_ca():
    for url in (f"{CA}/directory", f"{CA}/new-nonce"):
        h = Holds()
        assert h.answered(url, 503, 30, now=0, entry=True) == "*"
        assert h.held_for(f"{CA}/order/1", 10) == 20


def test_503s_from_different_endpoints_in_a_row_hold_the_whole_ca():
    h = Holds()
    urls = [f"{CA}/order/{i}" for i in range(SERVICE_STREAK)]
    for i, url in enumerate(urls[:-1]):
        assert h.answered(url, 503, 10 + i, now=0) == url
    assert h.held_for(f"{CA}/new-order", 0) == 0
    assert h.answered(urls[-1], 503, 5, now=0) == "*"
    assert h.held_for(f"{CA}/new-order", 0) == 10 + SERVICE_STREAK - 2  # the longest


def test_any_other_answer_between_the_503s_breaks_the_run():
    h = Holds()
    for i in range(SERVICE_STREAK - 1):
        h.answered(f"{CA}/order/{i}", 503, 10, now=0)
    h.answered(f"{CA}/authz/1", 200, None, now=0)  # the service answers
    h.answered(f"{CA}/order/9", 503, 10, now=0)
    assert h.held_for(f"{CA}/new-order", 0) == 0
    # the same endpoint again and again is that endpoint's trouble, not the CA's
    h = Holds()
    for _ in range(SERVICE_STREAK + 1):
        h.answered(f"{CA}/order/1", 503, 10, now=0)
    assert h.held_for(f"{CA}/new-order", 0) == 0


def test_no_retry_after_no_hold_and_a_shorter_one_does_not_shorten():
    h = Holds()
    assert h.answered(f"{CA}/new-order", 503, None, now=0) is None
    assert h.answered(f"{CA}/new-order", 500, 10, now=0) is None  # only with 429 and 503
    h.answered(f"{CA}/new-order", 429, 10, now=0)
    h.answered(f"{CA}/new-order", 429, 1, now=0)
    assert h.held_for(f"{CA}/new-order", 0) == 10


def test_passed_holds_are_forgotten():
    h = Holds()
    for i in range(100):
        h.answered(f"{CA}/order/{i}", 429, 1, now=0)
    h.answered(f"{CA}/order/last", 429, 100, now=0)
    assert h.held_for(f"{CA}/x", 50) == 0
    assert list(h.until) == [f"{CA}/order/last"]
