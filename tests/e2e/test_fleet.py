"""A fleet of Apache nodes coordinated by a real etcd: one order per MD at the CA,
every node serves the certificates (docs/cluster.md)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import HTTP_PORT, HTTPS_PORT, PORTS, _failed
from tests.e2e.fleet import Fleet, log_text
from tests.harness import AcmeFront

NAMES = ["a.fleet.test", "b.fleet.test"]


@pytest.fixture
def front(pebble):
    f = AcmeFront(pebble, PORTS["acme_port"] + 30).start()
    yield f
    f.stop()


@pytest.fixture
def fleet(request, pebble, etcd, etcd_prefix, front):
    f = Fleet(pebble, etcd.endpoints, etcd_prefix, (HTTP_PORT, HTTPS_PORT),
              ca_url=front.directory_url)
    yield f
    f.stop(_failed(request))


def orders_for(front, name: str) -> int:
    return sum(1 for o in front.orders
               if name in [i.get("value") for i in o.get("identifiers", [])])


def serial(node, name: str) -> str:
    return node.status(name)["cert"]["rsa"]["serial"]


def test_one_order_per_md_and_every_node_serves_it(fleet, front):
    # node1 on 127.0.0.1, where Pebble validates http-01 (challenges across nodes: later)
    one = fleet.node("127.0.0.1")
    fleet.configure(one, NAMES)
    one.start()
    one.start_worker()
    # node2 starts while node1 drives (or has just published): it waits for the lock
    fleet.await_keys("", lambda k: any(x.startswith(("locks/", "md/")) for x in k),
                     what="node1 taking a lock")
    two = fleet.node("127.0.0.2")
    fleet.configure(two, NAMES)
    two.start()
    two.start_worker()
    for n in (one, two):
        n.await_state(NAMES, timeout=90)
    published = fleet.published()
    assert sorted(published) == NAMES and {p["by"] for p in published.values()} == {"node1"}
    for name in NAMES:
        s = serial(one, name)
        assert serial(two, name) == s == published[name]["certs"]["rsa"]["serial"]
        one.await_served(name, s)
        two.await_served(name, s)
        assert orders_for(front, name) == 1
    # private keys are in etcd only sealed; the set's key is the same on both nodes
    for p in published.values():
        assert not any("PRIVATE" in v for v in p["files"].values())
    key_one = (one.store / "domains" / NAMES[0] / "privkey.pem").read_bytes()
    assert (two.store / "domains" / NAMES[0] / "privkey.pem").read_bytes() == key_one
    assert "staged the certificates node node1 published" in log_text(two)
    # node2 used node1's account (mirrored), and registered none of its own
    assert [p.name for p in (two.store / "accounts").iterdir()] == \
        [p.name for p in (one.store / "accounts").iterdir()]

    # a node that joins with an empty store serves everything, no CA request at all
    before = len(front.orders)
    three = fleet.node("127.0.0.3")
    fleet.configure(three, NAMES)
    three.start()
    three.start_worker()
    three.await_state(NAMES, timeout=60)
    for name in NAMES:
        three.await_served(name, serial(one, name))
    assert len(front.orders) == before
    nodes = fleet.keys("nodes/")
    assert sorted(nodes) == ["node1", "node2", "node3"]
    # `cluster status`: the nodes, and what each serves
    view = json.loads(three.cli_ok("cluster", "status", "--json").stdout)
    assert sorted(view["nodes"]) == ["node1", "node2", "node3"] and view["locks"] == {}
    for name in NAMES:
        assert view["published"][name]["serials"] == {"rsa": serial(one, name)}
    fleet.await_keys("nodes/", lambda k: all(
        json.loads(k[n]).get("serves", {}).get(name, {}).get("rsa", {}).get("serial")
        == serial(one, name) for n in ("node1", "node2", "node3") for name in NAMES),
        what="every node's heartbeat naming the served serials")
    text = three.cli_ok("cluster", "status").stdout
    assert f"node3 serves rsa {serial(one, NAMES[0])}" in text
