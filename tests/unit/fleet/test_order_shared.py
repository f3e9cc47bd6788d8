"""An order under way, from the renewer's store to the store of the node taking over."""
from __future__ import annotations

import os

import pytest

from apache_md.core import crypto, model
from apache_md.core.mdjson import md_to_json
from apache_md.fleet import orders
from apache_md.fleet.etcd import KV
from apache_md.fleet.keyspace import Keyspace
from apache_md.store.fs import ACCOUNTS, STAGING, Store
from tests.unit.sample import CA, make_md

KEY = os.urandom(32)
KS = Keyspace("/f")
ORDER = {"url": "https://ca.test/order/1", "status": "pending",
         "authorizations": ["https://ca.test/authz/1"], "challenge-setups": ["dns-01:a.test v"],
         "finalize": "https://ca.test/finalize/1"}


class FakeEtcd:
    """The few calls sets and orders make, in memory."""

    def __init__(self):
        self.kv: dict[str, bytes] = {}

    def get(self, key):
        v = self.kv.get(key)
        return KV(key, v, 1, 1, 0) if v is not None else None

    def get_prefix(self, prefix, keys_only=False):
        return [KV(k, v, 1, 1, 0) for k, v in sorted(self.kv.items()) if k.startswith(prefix)]

    def put(self, key, value, lease=0):
        self.kv[key] = value.encode() if isinstance(value, str) else value

    def replace(self, key, value, mod_revision, lease=0):
        if (key in self.kv) != bool(mod_revision):
            return False
        self.put(key, value)
        return True

    def delete(self, key):
        self.kv.pop(key, None)


@pytest.fixture
def other(tmp_path):
    s = Store(tmp_path / "other")
    s.init()
    return s


def renewer_store(store: Store, md, acct_id="ACME-ca.test-0000"):
    acct_key = crypto.generate_key_rsa(2048)
    store.write_json(ACCOUNTS, acct_id, "account.json",
                     {"status": "valid", "url": f"{CA}/acct/7", "ca-url": CA})
    store.write_bytes(ACCOUNTS, acct_id, "account.pem", crypto.key_to_pem(acct_key, store.key))
    store.write_json(STAGING, md.name, "md.json", md_to_json(md, ca_url=CA, account=acct_id))
    store.write_json(STAGING, md.name, "order.json", ORDER)
    key = crypto.generate_key(model.KeySpec("Default"))
    store.write_bytes(STAGING, md.name, "privkey.pem", crypto.key_to_pem(key, store.key),
                      mode=0o600)
    return key


def test_an_order_travels_sealed_and_lands_in_the_next_renewers_staging(store, other):
    md = make_md("a.test")
    key = renewer_store(store, md)
    etcd = FakeEtcd()
    assert orders.publish(etcd, KS, store, md, KEY, "node1")
    value = etcd.kv[KS.order(md.name)].decode()
    assert "PRIVATE KEY" not in value
    assert etcd.get_prefix(KS.accounts())  # its account goes along
    # the other node has an account of its own at this CA, with the id the renewer used
    other.write_json(ACCOUNTS, "ACME-ca.test-0000", "account.json",
                     {"status": "valid", "url": f"{CA}/acct/8", "ca-url": CA})
    what = orders.adopt(etcd, KS, other, md, KEY)
    assert what == "took over the order https://ca.test/order/1 of node node1"
    assert other.read_json(STAGING, md.name, "order.json") == ORDER
    acct = other.read_json(STAGING, md.name, "md.json")["ca"]["account"]
    assert acct != "ACME-ca.test-0000"  # the renewer's account, by this store's id
    assert other.read_json(ACCOUNTS, acct, "account.json")["url"] == f"{CA}/acct/7"
    staged = other.read_bytes(STAGING, md.name, "privkey.pem")
    assert b"ENCRYPTED" in staged
    assert crypto.key_to_pem(crypto.key_from_pem(staged, other.key)) == crypto.key_to_pem(key)
    assert orders.adopt(etcd, KS, other, md, KEY) == ""  # staged here already
    orders.forget(etcd, KS, md.name)
    assert etcd.get(KS.order(md.name)) is None


def test_no_order_in_staging_publishes_nothing(store):
    etcd = FakeEtcd()
    assert not orders.publish(etcd, KS, store, make_md("a.test"), KEY, "node1")
    assert etcd.kv == {} and orders.adopt(etcd, KS, store, make_md("a.test"), KEY) == ""
