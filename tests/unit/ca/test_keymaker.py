"""ca/keymaker: keys made ahead for a drive's MDs, each taken once, none before go()."""
from __future__ import annotations

import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from apache_md.ca import keymaker
from apache_md.ca.keymaker import KeyMaker
from apache_md.core import crypto
from apache_md.core.model import KeySpec
from apache_md.store import keypool

RSA = KeySpec("Default")
P256 = KeySpec("EC", curve="P-256")


@pytest.fixture
def made(monkeypatch):
    """Keys are cheap objects here; `made` lists every one generated, by kind."""
    out: list[tuple[str, object]] = []
    lock = threading.Lock()

    def generate(spec):
        key = object()
        with lock:
            out.append((keypool.kind(spec), key))
        return key
    monkeypatch.setattr(keymaker.crypto, "generate_key", generate)
    return out


def until(cond, what: str) -> None:
    deadline = time.monotonic() + 30  # a bound on the wait, not a timing asserted
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_nothing_is_made_before_go(store, made):
    km = KeyMaker(store)
    km.want([RSA] * 5)
    assert not km._workers and made == []
    km.close()
    assert made == []


def test_every_md_gets_a_key_of_its_own_and_no_more_are_made_than_taken(store, made):
    km = KeyMaker(store, threads=3, ahead=4)
    specs = [RSA] * 12 + [P256] * 5
    km.want(specs)
    km.go()
    got: list[tuple[KeySpec, object]] = []
    lock = threading.Lock()

    def md(spec):
        k = km.take(spec)
        with lock:
            got.append((spec, k))
    threads = [threading.Thread(target=md, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    km.close()
    keys = [k for _, k in got]
    assert len(keys) == len(specs) and len({id(k) for k in keys}) == len(specs)  # once each
    assert len(made) == len(specs)  # made ahead or by the taker: one per MD, never two
    kinds = {id(k): kind for kind, k in made}
    assert all(kinds[id(k)] == keypool.kind(s) for s, k in got)  # of the kind asked for


def test_at_most_ahead_keys_wait_for_takers(store, made):
    km = KeyMaker(store, threads=2, ahead=3)
    km.want([RSA] * 10)
    km.go()
    until(lambda: len(km._ready.get("rsa2048", ())) == 3, "three keys ahead")
    assert len(made) == 3
    km.take(RSA)
    until(lambda: len(made) == 4, "one more once one is taken")
    km.close()
    assert len(made) == 4


def test_settled_mds_get_no_key_made(store, made):
    km = KeyMaker(store, threads=2)
    km.want([RSA] * 3)
    km.settle([RSA] * 3)  # e.g. their runs ended before finalize, or use staged keys
    km.go()
    km.close()
    assert made == []


def test_the_pools_keys_come_first_each_taken_once(store):
    want = keypool.wanted({P256}, 2)
    while keypool.fill_one(store, want):
        pass
    pooled = {crypto.key_to_pem(keypool.take(store, P256))}  # one taken by another
    assert keypool.count(store, P256) == 1
    km = KeyMaker(store)
    km.want([P256, P256])
    km.go()
    a, b = km.take(P256), km.take(P256)
    km.close()
    assert isinstance(a, ec.EllipticCurvePrivateKey) and isinstance(b, ec.EllipticCurvePrivateKey)
    pems = {crypto.key_to_pem(a), crypto.key_to_pem(b)}
    assert len(pems) == 2 and not pems & pooled and keypool.count(store, P256) == 0


def test_a_key_that_cannot_be_made_ahead_is_reported_by_its_taker(store, monkeypatch):
    def fail(spec):
        raise crypto.CryptoError("no such curve")
    monkeypatch.setattr(keymaker.crypto, "generate_key", fail)
    km = KeyMaker(store, threads=1)
    km.want([RSA])
    km.go()
    with pytest.raises(crypto.CryptoError):
        km.take(RSA)
    km.close()


def test_a_take_after_close_makes_its_own(store, made):
    km = KeyMaker(store)
    km.want([RSA])
    km.close()
    assert km.take(RSA) is made[0][1]


def test_only_what_the_pool_lacks_is_made_ahead_and_its_keys_are_not_taken_ahead(store, request):
    """An idle worker's pool and more new MDs than it holds: the rest are made from the
    start (not once the pool is empty), and the pool's keys go to takers only."""
    want = keypool.wanted({P256}, 1)
    while keypool.fill_one(store, want):
        pass
    made = request.getfixturevalue("made")  # real keys in the pool, cheap ones made here
    km = KeyMaker(store, threads=2)
    km.want([P256] * 3)
    km.go()
    until(lambda: len(km._ready.get("secp256r1", ())) == 2, "what the pool lacks, made ahead")
    assert keypool.count(store, P256) == 1  # not taken by the key threads
    got = [km.take(P256) for _ in range(3)]
    km.close()
    assert len(made) == 2  # none beyond what the pool lacked
    assert keypool.count(store, P256) == 0  # the pool's went to a taker
    ahead = {id(k) for _, k in made}
    pooled = [k for k in got if id(k) not in ahead]
    assert len(pooled) == 1 and isinstance(pooled[0], ec.EllipticCurvePrivateKey)


def test_a_taker_uses_the_pool_rather_than_wait_for_a_key_being_made(store, monkeypatch):
    want = keypool.wanted({P256}, 1)
    while keypool.fill_one(store, want):
        pass
    started, release = threading.Event(), threading.Event()

    def slow(spec):  # a key thread busy with a key that takes long
        started.set()
        release.wait(30)
        return object()
    monkeypatch.setattr(keymaker.crypto, "generate_key", slow)
    km = KeyMaker(store, threads=1)
    km.want([P256] * 2)
    km.go()
    assert started.wait(30)
    key = km.take(P256)  # the pool's, at once: not the one being made
    assert isinstance(key, ec.EllipticCurvePrivateKey) and keypool.count(store, P256) == 0
    release.set()
    km.close()


def test_warm_lets_one_thread_work_and_go_the_others(store, made):
    """While the account key is made (warm), one thread makes MD keys on a CPU that would
    idle, not all of them (which slowed the account key everyone waits for)."""
    km = KeyMaker(store, threads=3, ahead=4)
    km.want([RSA] * 10)
    km.warm()
    until(lambda: len(made) >= 4, "keys made after warm()")
    assert len(km._workers) == 1
    km.warm()
    assert len(km._workers) == 1  # idempotent
    km.go()
    assert len(km._workers) == 3
    for _ in range(10):
        km.take(RSA)
    km.close()
    assert len(made) == 10


def test_keys_made_ahead_and_not_taken_go_to_the_pool(store):
    """MDs that failed leave keys made for them: kept in the pool (never used, written
    nowhere else) up to its size, each taken from there once."""
    km = KeyMaker(store, threads=1, ahead=3, pool_size=2)
    km.want([P256] * 5)
    km.go()
    until(lambda: len(km._ready.get("secp256r1", ())) == 3, "three keys ready")
    made = list(km._ready["secp256r1"])
    km.close()
    assert keypool.count(store, P256) == 2  # the pool's size, the third dropped
    pooled = {keypool.take(store, P256).private_numbers().private_value for _ in range(2)}
    assert pooled <= {k.private_numbers().private_value for k in made} and len(pooled) == 2
    assert keypool.take(store, P256) is None
    off = KeyMaker(store, threads=1, ahead=2)  # MDKeyPool 0: none kept
    off.want([P256] * 3)
    off.go()
    until(lambda: len(off._ready.get("secp256r1", ())) == 2, "two keys ready")
    off.close()
    assert keypool.count(store, P256) == 0
