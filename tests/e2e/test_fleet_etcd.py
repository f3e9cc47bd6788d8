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


def test_what_a_node_serves_goes_in_shards_and_only_when_it_changed(etcd, etcd_prefix):
    """10,000 MDs in one value would be near etcd's 1.5 MB request limit and be sent at
    every cycle: each shard is a value of its own, put again only when it changed."""
    from apache_md.fleet import serving
    from apache_md.fleet.keyspace import Keyspace
    c = Etcd(etcd.endpoints)
    ks = Keyspace(etcd_prefix)
    serves = {f"md{i}.test": {"rsa": {"serial": f"{i:032x}", "not-after": "2027-03-01T00:00:00"
                                                                           "+00:00"}}
              for i in range(10000)}
    lease = c.grant(30)
    pub = serving.Publisher(c, ks, "n1")
    assert pub.publish(serves, lease) == serving.SHARDS
    values = c.get_prefix(ks.serving())
    assert len(values) == serving.SHARDS
    assert max(len(kv.value) for kv in values) < 64 * 1024
    assert {kv.lease for kv in values} == {lease}
    assert serving.read_all(c, ks) == {"n1": serves}
    assert pub.publish(serves, lease) == 0  # nothing changed: nothing sent
    serves["md7.test"]["rsa"]["serial"] = "ff"
    del serves["md8.test"]
    assert pub.publish(serves, lease) == len({serving.shard_of("md7.test"),
                                             serving.shard_of("md8.test")})
    assert serving.read_all(c, ks)["n1"] == serves
    # a shard whose MDs are all gone is deleted, not left behind
    only = {"md7.test": serves["md7.test"]}
    pub.publish(only, lease)
    assert len(c.get_prefix(ks.serving())) == 1 and serving.read_all(c, ks) == {"n1": only}
    # a new lease (the old one expired with its keys): everything goes again
    c.revoke(lease)
    assert c.get_prefix(ks.serving()) == []
    lease = c.grant(30)
    assert pub.publish(only, lease) == 1 and serving.read_all(c, ks) == {"n1": only}
    c.revoke(lease)


def node_with_one_md(etcd, prefix, tmp_path):
    """A fleet node n1 (no worker) whose configuration has the MD a.test."""
    from apache_md.apache.config import load_text
    from apache_md.fleet import seal
    from apache_md.fleet.node import Fleet
    from apache_md.store.fs import Store
    key = tmp_path / "fleet.key"
    seal.write_new_key(str(key))
    config = load_text(f"MDClusterEtcd {' '.join(etcd.endpoints)}\nMDClusterNode n1\n"
                       f"MDClusterPrefix {prefix}\nMDClusterKeyFile {key}\n"
                       "MDomain a.test\n<VirtualHost *:443>\nServerName a.test\n"
                       "</VirtualHost>\n")
    store = Store(tmp_path / "md")
    store.init()
    return config, store, Fleet(config.settings)


def test_a_heartbeat_while_etcd_is_away_reads_nothing(etcd, etcd_prefix, tmp_path,
                                                       monkeypatch):
    from apache_md.fleet import node as fleet_node
    config, store, fleet = node_with_one_md(etcd, etcd_prefix, tmp_path)
    try:
        fleet.heartbeat(store, config)
        c = Etcd(etcd.endpoints)
        doc = json.loads(c.get(fleet.ks.node("n1")).value)
        assert doc["mds"] == 1 and "serves" not in doc
        assert fleet.view()["nodes"]["n1"]["serves"] == {"a.test": {}}
        fleet.outage = "etcd unavailable: (test)"
        monkeypatch.setattr(fleet_node.credentials, "infos",
                            lambda *a: pytest.fail("read the certificates with etcd away"))
        fleet.heartbeat(store, config)
        assert fleet.view()["error"] == "etcd unavailable: (test)"
        assert fleet.view()["nodes"]["n1"]["heartbeat"] == doc["heartbeat"]  # the last view
    finally:
        fleet.close()


def test_the_due_mds_are_spread_over_the_live_nodes(etcd, etcd_prefix, tmp_path):
    """Each node takes its share of what is due, its own preferred MDs first; what it
    leaves goes to the others; an MD inside its warn window is always taken."""
    from types import SimpleNamespace
    from apache_md.apache.config import load_text
    from apache_md.fleet import seal, spread
    from apache_md.fleet.node import Fleet
    from apache_md.store.fs import Store
    key = tmp_path / "fleet.key"
    seal.write_new_key(str(key))
    names = [f"m{i}.test" for i in range(7)]
    fleets = []
    for node in ("n1", "n2", "n3"):
        config = load_text(f"MDClusterEtcd {' '.join(etcd.endpoints)}\nMDClusterNode {node}\n"
                           f"MDClusterPrefix {etcd_prefix}\nMDClusterKeyFile {key}\n")
        fleets.append(Fleet(config.settings))
    try:
        alone, _ = fleets[0].claim(None, [])
        for f in fleets:
            f.session.ensure()  # all three live
        store = Store(tmp_path / "md")
        store.init()

        def due(warn=()):
            return [SimpleNamespace(md=SimpleNamespace(name=n, domains=[n]), warn=n in warn)
                    for n in names]
        taken = {}
        for f in fleets:
            mine, waiting = f.claim(store, due())
            taken[f.node] = [d.md.name for d in mine]
            assert len(mine) <= 3  # 7 over 3 nodes
            held = {n for n, h in waiting.items() if h in ("n1", "n2", "n3")}
            assert held <= {n for t in taken.values() for n in t} - set(taken[f.node])
            assert set(waiting) | set(taken[f.node]) == set(names)
            assert {h for n, h in waiting.items() if n not in held} <= {
                "left to the other 2 node(s)"}
        assert sorted(n for t in taken.values() for n in t) == names  # each once, all taken
        assert all(taken.values()), taken
        # n1's own preferred MDs came first
        own = [n for n in names if spread.preferred(n, ["n1", "n2", "n3"]) == "n1"]
        assert taken["n1"][:min(3, len(own))] == own[:3]
        for f in fleets:
            f.finish(store, SimpleNamespace(md_by_name=lambda n: None),
                     [SimpleNamespace(md=n, outcome="failed") for n in taken[f.node]])
        # over its share, an MD in its warn window is taken all the same
        mine, waiting = fleets[0].claim(store, due(warn=names))
        assert len(mine) == 7 and not waiting
        fleets[0].finish(store, SimpleNamespace(md_by_name=lambda n: None),
                         [SimpleNamespace(md=d.md.name, outcome="failed") for d in mine])
        # and so is everything `apache-md renew` was asked for
        mine, waiting = fleets[1].claim(store, due(), spread_out=False)
        assert len(mine) == 7 and not waiting
    finally:
        for f in fleets:
            f.close()


def test_a_lock_that_could_not_be_given_back_is_given_back_later(etcd, etcd_prefix, tmp_path,
                                                                monkeypatch):
    """A release that meets an etcd outage would leave the lock to the node's lease, which
    never ends while the node lives: the others would wait for it for ever."""
    from types import SimpleNamespace
    from apache_md.fleet import coord
    from apache_md.fleet.etcd import Unavailable
    config, store, fleet = node_with_one_md(etcd, etcd_prefix, tmp_path)
    try:
        mine, _ = fleet.claim(store, [SimpleNamespace(md=config.mds[0], warn=False)])
        assert mine and coord.holders(fleet.session) == {"a.test": "n1"}
        real = coord.release

        def away(session, md):
            raise Unavailable("etcd unavailable: (test)")
        monkeypatch.setattr(coord, "release", away)
        fleet.finish(store, config, [SimpleNamespace(md="a.test", outcome="failed")])
        assert coord.holders(fleet.session) == {"a.test": "n1"}
        monkeypatch.setattr(coord, "release", real)
        fleet.heartbeat(store, config)  # etcd still counted away: nothing yet
        assert coord.holders(fleet.session) == {"a.test": "n1"}
        fleet.sync(store, config)  # etcd answers again
        fleet.heartbeat(store, config)
        assert coord.holders(fleet.session) == {} and fleet.unreleased == {}
    finally:
        fleet.close()


def test_an_answer_is_acknowledged_only_once_this_nodes_apache_serves_it(env, etcd,
                                                                        etcd_prefix):
    """An ack tells the renewer the CA may validate here: it is given when the node's own
    Apache answers the token as the CA will ask for it, not when the file is written."""
    from apache_md.apache.config import load_config
    from apache_md.ca import preflight
    from apache_md.core.problem import CAProblem
    from apache_md.fleet import challenges
    from apache_md.fleet.keyspace import Keyspace
    from apache_md.fleet.session import Session
    from apache_md.store.fs import CHALLENGES, HTTP01_FILE, Store
    env.write_config("MDomain a.test", env.ssl_vhost("a.test"))
    config = load_config(str(env.apache.main_conf))
    c = Etcd(etcd.endpoints)
    ks = Keyspace(etcd_prefix)
    driver, here = Session(c, ks, "n1", 5), Session(c, ks, "n2", 5)
    here.ensure()
    store = Store(env.store)
    mirror = challenges.Mirror(here, store, config, preflight.check_configured)
    answer = "tok1.thumb"
    try:
        # Apache is not running yet: the answer is written, not acknowledged
        with pytest.raises(CAProblem, match=r"fleet node\(s\) n2 did not confirm"):
            challenges.share(driver, config.mds[0], "a.test", "tok1", answer, timeout=0.5)
        mirror.step()
        assert store.read_bytes(CHALLENGES, "a.test", HTTP01_FILE) == answer.encode()
        assert c.get(ks.ack("tok1", "n2")) is None
        env.start()
        mirror.step()
        assert c.get(ks.ack("tok1", "n2")) is not None
        challenges.share(driver, config.mds[0], "a.test", "tok1", answer, timeout=1)
        challenges.unshare(driver, ["a.test"])
        mirror.step()
        assert store.names(CHALLENGES) == []
    finally:
        driver.close()
        here.close()
