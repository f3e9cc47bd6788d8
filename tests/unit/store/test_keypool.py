"""The key pool: keys made while the worker is idle, each taken once, bounded."""
import os
import stat
import threading

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from apache_md.core.model import KeySpec
from apache_md.store import keypool

RSA = KeySpec("Default")
P256 = KeySpec("EC", curve="P-256")


def fill(store, want) -> int:
    n = 0
    while keypool.fill_one(store, want):
        n += 1
    return n


def test_filled_to_the_size_per_kind_plus_one_account_key_then_nothing_more(store):
    want = keypool.wanted({RSA, KeySpec("RSA", 2048), P256}, 2)  # Default is RSA 2048
    assert sorted(want) == ["rsa2048", "rsa3072", "secp256r1"]
    assert fill(store, want) == 2 + 2 + 1
    assert keypool.count(store, RSA) == 2 and keypool.count(store, P256) == 2
    assert keypool.count(store, keypool.ACCOUNT_SPEC) == 1
    assert not keypool.fill_one(store, want)


def test_keys_are_private_encrypted_and_of_their_kind(store):
    fill(store, keypool.wanted({P256}, 1))
    d = store.base / keypool.POOL / "secp256r1"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    (f,) = list(d.iterdir())
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in f.read_bytes()
    key = keypool.take(store, P256)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert isinstance(keypool.take(store, keypool.ACCOUNT_SPEC), rsa.RSAPrivateKey)


def test_a_key_is_taken_once_even_by_threads_racing_for_it(store):
    fill(store, keypool.wanted({RSA}, 3))
    got, lock = [], threading.Lock()

    def taker():
        k = keypool.take(store, RSA)
        if k is not None:
            with lock:
                got.append(k.private_numbers().p)
    threads = [threading.Thread(target=taker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 3 and len(set(got)) == 3  # every key once, the others found none
    assert keypool.take(store, RSA) is None and keypool.count(store, RSA) == 0


def test_kinds_no_longer_used_and_keys_beyond_the_size_go(store):
    fill(store, keypool.wanted({RSA, P256}, 3))
    keypool.fill_one(store, keypool.wanted({RSA}, 1))  # MDKeyPool 1, no EC MD left
    assert keypool.count(store, RSA) == 1 and keypool.count(store, P256) == 0
    assert not (store.base / keypool.POOL / "secp256r1").exists() or \
        not list((store.base / keypool.POOL / "secp256r1").iterdir())
    keypool.fill_one(store, keypool.wanted({RSA}, 0))  # MDKeyPool 0: none kept
    assert keypool.count(store, RSA) == 0 and keypool.count(store, keypool.ACCOUNT_SPEC) == 0


def test_a_bad_or_wrong_file_is_skipped_and_removed_never_used(store, caplog):
    fill(store, keypool.wanted({P256}, 1))
    d = store.base / keypool.POOL / "rsa2048"
    d.mkdir(mode=0o700)
    (d / "0bad.pem").write_bytes(b"not a key")
    # an EC key filed under RSA (by hand): not an RSA key, so not used for one
    ec_file = next((store.base / keypool.POOL / "secp256r1").iterdir())
    os.rename(ec_file, d / "1ec.pem")
    assert keypool.take(store, RSA) is None
    assert not list(d.iterdir())
    assert "not used" in caplog.text
