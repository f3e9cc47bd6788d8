"""order.json as mod_md keeps it, and when what a run left in staging/ may go on."""
from __future__ import annotations

import json

import pytest

from apache_md.ca import orders
from apache_md.ca.challenges import Setup
from apache_md.core.mdjson import md_to_json
from apache_md.core.model import Location, ManagedDomain
from apache_md.store.fs import STAGING

CA = "https://ca.test/dir"

# as mod_md's md_acme_order_to_json writes it (md_acme_order.c)
MOD_MD = {"url": "https://ca.test/order/1", "status": "pending",
          "authorizations": ["https://ca.test/authz/1", "https://ca.test/authz/2"],
          "challenge-setups": ["http-01:a.test", "dns-01:b.test 3q2-7w"],
          "finalize": "https://ca.test/finalize/1"}


def md(*names, profile=None) -> ManagedDomain:
    return ManagedDomain(name=names[0], domains=list(names), location=Location("t.conf", 1),
                         profile=profile)


def test_mod_mds_order_json_reads_and_writes_back_the_same(store):
    store.write_json(STAGING, "a.test", orders.FILE, MOD_MD)
    saved = orders.load(store, "a.test")
    assert saved.setups == [Setup("http-01", "a.test"), Setup("dns-01", "b.test", "3q2-7w")]
    orders.save(store, "a.test", saved)
    assert store.read_json(STAGING, "a.test", orders.FILE) == MOD_MD
    saved.certificate = "https://ca.test/cert/1"
    assert saved.to_json() == {**MOD_MD, "certificate": "https://ca.test/cert/1"}


def test_an_order_json_without_url_or_not_json_is_no_order(store):
    store.write_json(STAGING, "a.test", orders.FILE, {"status": "pending"})
    assert orders.load(store, "a.test") is None
    store.write_bytes(STAGING, "a.test", orders.FILE, b"{not json")
    assert orders.load(store, "a.test") is None  # set aside, reported
    assert not store.exists(STAGING, "a.test", orders.FILE)


def staged(m: ManagedDomain, ca_url: str = CA, account: str | None = "ACME-x-0000") -> dict:
    return json.loads(json.dumps(md_to_json(m, ca_url=ca_url, account=account)))


@pytest.mark.parametrize("doc,now,why", [
    (staged(md("a.test", "www.a.test")), md("www.a.test", "a.test"), None),
    (staged(md("a.test")), md("a.test", "www.a.test"), "the MD's domains changed"),
    (staged(md("a.test"), ca_url="https://other.test/dir"), md("a.test"),
     "it was for the CA https://other.test/dir, this run uses " + CA),
    (staged(md("a.test", profile="short")), md("a.test"), "the MD's MDProfile changed"),
    (None, md("a.test"), "no staged md.json says what it was for"),
])
def test_what_an_earlier_run_left_goes_on_only_for_the_same_names_ca_and_profile(doc, now, why):
    assert orders.stale(doc, now, CA) == why


def test_the_account_an_order_was_placed_with():
    assert orders.staged_account(staged(md("a.test"))) == "ACME-x-0000"
    assert orders.staged_account(staged(md("a.test"), account=None)) is None
    assert orders.staged_account(None) is None
