"""Certificate sets from one node's store to another's, through the published value."""
from __future__ import annotations

import json
import os

import pytest

from apache_md.core import crypto, model
from apache_md.fleet import seal, sets
from apache_md.store.fs import DOMAINS, STAGING, Store, StoreError
from tests.unit.sample import make_md

KEY = os.urandom(32)
WHERE = "/f/md/a.test/set"


def put(store: Store, group: str, md, days: int):
    key = crypto.generate_key(model.KeySpec("Default"))
    store.write_bytes(group, md.name, "pubcert.pem", crypto.self_signed(key, md.domains, days=days))
    store.write_bytes(group, md.name, "privkey.pem", crypto.key_to_pem(key, store.key), mode=0o600)
    return crypto.cert_info(crypto.load_chain(store.read_bytes(group, md.name, "pubcert.pem"))[0])


@pytest.fixture
def other(tmp_path):
    s = Store(tmp_path / "other")
    s.init()
    return s


def test_a_set_travels_sealed_and_lands_in_staging(store, other):
    md = make_md("a.test")
    info = put(store, DOMAINS, md, 60)
    doc = sets.set_doc(store, DOMAINS, md, KEY, WHERE, "node1")
    text = json.dumps(doc)
    assert "PRIVATE KEY" not in text and doc["certs"]["rsa"]["serial"] == info.serial
    pub = sets.Published(json.loads(text), 7)
    assert pub.by == "node1" and pub.not_after == info.not_after.replace(microsecond=0)
    assert sets.wanted(other, md, pub)
    assert sets.stage(other, md, pub, KEY, WHERE)
    staged_key = other.read_bytes(STAGING, md.name, "privkey.pem")
    assert b"ENCRYPTED" in staged_key  # under the other store's own key, as mod_md keeps it
    assert oct(os.stat(other.path(STAGING, md.name, "privkey.pem")).st_mode & 0o777) == "0o600"
    assert crypto.key_to_pem(crypto.key_from_pem(staged_key, other.key)) == \
        crypto.key_to_pem(crypto.key_from_pem(store.read_bytes(DOMAINS, md.name, "privkey.pem"),
                                           store.key))
    assert not sets.wanted(other, md, pub)  # staged already


def test_the_newest_not_after_wins(store, other):
    md = make_md("a.test")
    put(store, DOMAINS, md, 60)
    pub = sets.Published(sets.set_doc(store, DOMAINS, md, KEY, WHERE, "node1"), 1)
    put(other, DOMAINS, md, 30)
    assert sets.wanted(other, md, pub)  # ours expires first: take the fleet's
    put(other, DOMAINS, md, 90)
    assert not sets.wanted(other, md, pub)  # ours expires last: keep it
    ec = make_md("a.test", pkey_specs=[model.KeySpec("EC", curve="secp256r1")])
    assert not sets.wanted(other, ec, pub)  # other key types than this node's config


def test_a_set_that_does_not_open_is_refused(store, other):
    md = make_md("a.test")
    put(store, DOMAINS, md, 60)
    doc = sets.set_doc(store, DOMAINS, md, KEY, WHERE, "node1")
    with pytest.raises(seal.SealError, match="another fleet key"):
        sets.stage(other, md, sets.Published(doc, 1), os.urandom(32), WHERE)
    with pytest.raises(seal.SealError, match="moved from another key"):
        sets.stage(other, md, sets.Published(doc, 1), KEY, "/f/md/b.test/set")
    doc["files"].pop("pubcert.pem")
    with pytest.raises(StoreError, match="rsa key or certificate is missing"):
        sets.stage(other, md, sets.Published(doc, 1), KEY, WHERE)
    assert other.names(STAGING) == []
    with pytest.raises(StoreError, match="lacks the rsa key"):
        sets.set_doc(other, DOMAINS, md, KEY, WHERE, "node2")
