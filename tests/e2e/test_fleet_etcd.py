"""The fleet's etcd client against a real etcd (Debian's etcd-server): keys, the
put-if-absent lock, leases that expire, failover between endpoints."""
from __future__ import annotations

import json
import time

import pytest

from apache_md.fleet.etcd import Etcd, EtcdError, Unavailable
from tests.harness._util import wait_for
from tests.e2e.mdenv import free_port


def test_keys_and_prefixes(etcd, etcd_prefix):
    c = Etcd(etcd.endpoints)
    assert c.get(f"{etcd_prefix}/a") is None
    c.put(f"{etcd_prefix}/a", b"\x00one")
    c.put(f"{etcd_prefix}/b/x", "two")
    c.put(f"{etcd_prefix}/bb", "not under b/")
    assert c.get(f"{etcd_prefix}/a").value == b"\x00one"
    assert [kv.key for kv in c.get_prefix(f"{etcd_prefix}/b/")] == [f"{etcd_prefix}/b/x"]
    newest = c.revision(f"{etcd_prefix}/")
    assert newest == c.get(f"{etcd_prefix}/bb").mod_revision
    c.delete_prefix(f"{etcd_prefix}/b")
    assert [kv.key for kv in c.get_prefix(f"{etcd_prefix}/")] == [f"{etcd_prefix}/a"]


def test_create_is_put_if_absent_and_replace_compares(etcd, etcd_prefix):
    c = Etcd(etcd.endpoints)
    key = f"{etcd_prefix}/lock"
    assert c.create(key, "node1") is None
    holder = c.create(key, "node2")
    assert holder is not None and holder.value == b"node1"
    assert not c.delete_if(key, "node2") and c.get(key).value == b"node1"
    assert c.delete_if(key, "node1") and c.get(key) is None
    rev = c.create(key, "v1") or c.get(key)
    kv = c.get(key)
    assert c.replace(key, "v2", kv.mod_revision)
    assert not c.replace(key, "v3", kv.mod_revision)  # changed since it was read
    assert c.get(key).value == b"v2" and rev is not None
    assert not c.replace(f"{etcd_prefix}/other", "x", 0) is False  # absent: created
    assert c.get(f"{etcd_prefix}/other").value == b"x"


def test_a_lease_that_is_not_kept_alive_takes_its_keys_along(etcd, etcd_prefix):
    c = Etcd(etcd.endpoints)
    lease = c.grant(2)
    assert c.create(f"{etcd_prefix}/lock", "node1", lease) is None
    assert c.get(f"{etcd_prefix}/lock").lease == lease
    assert c.keepalive(lease) > 0
    wait_for(lambda: c.get(f"{etcd_prefix}/lock") is None, 10, "the lease to expire")
    assert c.keepalive(lease) == 0
    assert c.create(f"{etcd_prefix}/lock", "node2") is None  # free for the next one
    lease = c.grant(30)
    c.put(f"{etcd_prefix}/n", "x", lease)
    c.revoke(lease)
    assert c.get(f"{etcd_prefix}/n") is None


def test_failover_to_the_endpoint_that_answers(etcd, etcd_prefix):
    dead = f"http://127.0.0.1:{free_port()}"
    c = Etcd([dead] + etcd.endpoints, timeout=1)
    c.put(f"{etcd_prefix}/k", "v")
    assert c.get(f"{etcd_prefix}/k").value == b"v"
    only_dead = Etcd([dead, f"http://127.0.0.1:{free_port()}"], timeout=1)
    with pytest.raises(Unavailable, match=rf"etcd unavailable: {dead}: .*; http://127.0.0.1:"):
        only_dead.get(f"{etcd_prefix}/k")
    assert issubclass(Unavailable, EtcdError)
    assert time.monotonic()  # no sleeps: every step above waits for a real answer


def test_http01_answers_are_mirrored_acked_and_a_lagging_node_is_named(etcd, etcd_prefix,
                                                                     tmp_path):
    from apache_md.apache.config import load_text
    from apache_md.core.problem import CAProblem
    from apache_md.fleet import challenges
    from apache_md.fleet.keyspace import Keyspace
    from apache_md.fleet.session import Session
    from apache_md.store.fs import CHALLENGES, HTTP01_FILE, Store
    c = Etcd(etcd.endpoints)
    ks = Keyspace(etcd_prefix)
    config = load_text("MDomain a.test\n<VirtualHost *:443>\nServerName a.test\n</VirtualHost>\n")
    md = config.mds[0]
    driver, other = Session(c, ks, "n1", 5), Session(c, ks, "n2", 5)
    store = Store(tmp_path / "md")
    store.init()
    other.ensure()
    mirror = challenges.Mirror(other, store, config)
    answer = "tok.thumb"
    # n2 does not mirror yet: the driver waits, then names it
    with pytest.raises(CAProblem, match=r"fleet node\(s\) n2 did not confirm serving the "
                                        r"http-01 answer for a.test within 1s"):
        challenges.share(driver, md, "a.test", "tok", answer, timeout=1)
    mirror.step()  # the answer is there now: written here and acknowledged
    assert store.read_bytes(CHALLENGES, "a.test", HTTP01_FILE) == answer.encode()
    challenges.share(driver, md, "a.test", "tok", answer, timeout=1)
    # an answer for a name of no MD here, or whose token does not match, is not taken
    c.put(ks.challenge("evil.test", "t2"), json.dumps({"key-authz": "t2.x", "by": "n1"}))
    c.put(ks.challenge("a.test", "t3"), json.dumps({"key-authz": "other.x", "by": "n1"}))
    mirror.step()
    assert store.names(CHALLENGES) == ["a.test"]
    assert store.read_bytes(CHALLENGES, "a.test", HTTP01_FILE) == answer.encode()
    challenges.unshare(driver, ["a.test", "evil.test"])
    mirror.step()  # gone from etcd: gone here
    assert store.names(CHALLENGES) == []
    driver.close()
    other.close()
