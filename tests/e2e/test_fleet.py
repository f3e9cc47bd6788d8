"""A fleet of Apache nodes coordinated by a real etcd: one order per MD at the CA,
every node serves the certificates (docs/cluster.md)."""
from __future__ import annotations

import json
import signal
import time

import pytest

from tests.conftest import ETCD_PORT, HTTP_PORT, HTTPS_PORT, PORTS, _failed
from tests.e2e.fleet import Fleet, log_text
from tests.e2e.mdenv import MDEnv, executable
from tests.harness import AcmeFront, EtcdCluster, HAProxy
from tests.harness.client import curl as curl_at
from tests.harness.client import s_client_cert

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
    def serves(keys: dict[str, bytes]) -> dict[str, dict]:  # serves/<node>/<shard>
        out: dict[str, dict] = {}
        for k, v in keys.items():
            out.setdefault(k.split("/")[0], {}).update(json.loads(v))
        return out
    fleet.await_keys("serves/", lambda k: all(
        serves(k).get(n, {}).get(name, {}).get("rsa", {}).get("serial")
        == serial(one, name) for n in ("node1", "node2", "node3") for name in NAMES),
        what="every node naming the served serials")
    text = three.cli_ok("cluster", "status").stdout
    assert f"node3 serves rsa {serial(one, NAMES[0])}" in text
    # monitoring on any node: md-status JSON and page, the metrics, `apache-md status`
    base = f"http://127.0.0.3:{HTTP_PORT}/md-status"

    def curl(url, **kw):  # at node3's own address (curl() maps the URL's host to 127.0.0.1)
        return curl_at(url, resolve_host="unused.invalid", **kw)
    deadline = time.monotonic() + 60
    while len(json.loads(curl(base).body).get("fleet", {}).get("nodes", {})) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    shown = json.loads(curl(base).body)["fleet"]
    assert shown["node"] == "node3" and sorted(shown["nodes"]) == ["node1", "node2", "node3"]
    assert shown["nodes"]["node1"]["serves"][NAMES[0]]["rsa"]["serial"] == serial(one, NAMES[0])
    page = curl(base, headers={"Accept": "text/html"}).body
    assert "<h2>Fleet " in page and "node2" in page
    metrics = curl(f"{base}/metrics").body
    assert f'apache_md_fleet_serves{{md="{NAMES[1]}",node="node1",key="rsa",serial="' \
        f'{serial(one, NAMES[1])}"}} 1' in metrics
    assert 'apache_md_fleet_node_heartbeat_timestamp_seconds{node="node3"}' in metrics
    assert "apache_md_fleet_etcd_up 1" in metrics
    text = three.cli_ok("status").stdout
    assert "fleet " in text and f"node2 serves rsa {serial(one, NAMES[0])}" in text


@pytest.fixture
def balancer():
    """haproxy on 127.0.0.1's HTTP and HTTPS ports (where Pebble validates), round robin
    over nodes on 127.0.0.2-4: the CA's validation lands on any of them."""
    lb = HAProxy([HTTP_PORT, HTTPS_PORT], ["127.0.0.2", "127.0.0.3", "127.0.0.4"]).start()
    yield lb
    lb.remove()


MANY = ["c.fleet.test", "d.fleet.test", "e.fleet.test"]


def test_nodes_started_at_once_behind_a_balancer(fleet, front, balancer):
    nodes = [fleet.node(f"127.0.0.{i}") for i in (2, 3, 4)]
    for n in nodes:
        fleet.configure(n, MANY)
        n.start()
    for n in nodes:  # as close to the same instant as three processes get
        n.start_worker()
    for n in nodes:
        n.await_state(MANY, timeout=120)
    published = fleet.published()
    for name in MANY:
        assert orders_for(front, name) == 1, front.orders
        s = published[name]["certs"]["rsa"]["serial"]
        for n in nodes:
            assert serial(n, name) == s
            n.await_served(name, s)
        # and through the balancer, whichever node answers
        chain = s_client_cert("127.0.0.1", HTTPS_PORT, name)
        assert format(chain[0].serial_number, "X") == s.lstrip("0")
    # the answers were on every node: Pebble's validations (Host with the port, unlike
    # a driver's own pre-flight) went round robin, so some reached a node that had not
    # set the challenge up
    elsewhere = [(n.name, line) for n in nodes for line in n.apache.access_log().splitlines()
                 for name in MANY if "/.well-known/acme-challenge/" in line
                 and '" 200 ' in line and f'"{name}:{HTTP_PORT}"' in line
                 and n.name != published[name]["by"]]
    assert elsewhere, [p["by"] for p in published.values()]
    assert fleet.keys("challenges/") == {} and fleet.keys("locks/") == {}


CHALLENGE_STALL = """#!/bin/sh
# MDMessageCmd of the node to be killed: it stops at the challenge set-up
case "$2" in challenge-setup*) touch "$1.stalled"; sleep 120;; esac
exit 0
"""


def test_killed_renewer_is_taken_over(fleet, front, balancer, tmp_path):
    name = "k.fleet.test"
    script = executable(tmp_path / "stall.sh", CHALLENGE_STALL)
    mark = tmp_path / "msg"
    one, two = fleet.node("127.0.0.2"), fleet.node("127.0.0.3")
    fleet.configure(one, [name], f"MDMessageCmd {script} {mark}\n")
    fleet.configure(two, [name])
    for n in (one, two):
        n.start()
    worker_one = one.start_worker()
    fleet.await_keys("locks/", lambda k: k.get(name) == b"node1", what="node1 renewing")
    two.start_worker()  # waits: node1 holds the lock
    deadline = time.monotonic() + 60
    while not (tmp_path / "msg.stalled").exists():
        assert time.monotonic() < deadline, log_text(one)
        time.sleep(0.2)
    assert fleet.keys("locks/") == {name: b"node1"}
    # node1 dies mid-renewal (its order is open at the CA): worker and Apache gone
    worker_one.send_signal(signal.SIGKILL)
    worker_one.wait(10)
    one.apache.stop()
    killed = time.monotonic()
    fleet.await_keys("locks/", lambda k: k.get(name) == b"node2", timeout=60,
                     what="node2 taking the MD over")
    took_over = time.monotonic() - killed
    two.await_state([name], timeout=90)
    s = serial(two, name)
    two.await_served(name, s)
    assert fleet.published()[name]["by"] == "node2"
    # node2 went on with node1's order (shared in etcd with node1's account): one order
    assert orders_for(front, name) == 1, front.orders
    assert "took over the order" in log_text(two)
    job = json.loads((two.store / "domains" / name / "job.json").read_text())
    assert any("Continuing the order " in e.get("detail", "")
               for e in job["log"]["entries"]), job
    assert fleet.keys("orders/") == {}  # done with: forgotten
    print(f"takeover after {took_over:.1f}s (lease TTL {fleet.ttl}s)")


def two_nodes(request, pebble, front, endpoints, prefix, name):
    """A fleet on `endpoints`: node1 (127.0.0.1) certifies `name`, then node2 (127.0.0.2)
    joins and serves it."""
    fleet = Fleet(pebble, endpoints, prefix, (HTTP_PORT, HTTPS_PORT), ca_url=front.directory_url)
    request.addfinalizer(lambda: fleet.stop(_failed(request)))
    one, two = fleet.node("127.0.0.1"), fleet.node("127.0.0.2")
    fleet.configure(one, [name])
    one.start()
    one.start_worker()
    fleet.await_keys("md/", lambda k: f"{name}/set" in k, what="node1 publishing")
    fleet.configure(two, [name])
    two.start()
    two.start_worker()
    two.await_served(name, serial(one, name))
    return fleet, one, two


@pytest.fixture
def own_etcd():
    """An etcd of the test's own, to be stopped and started again."""
    cluster = EtcdCluster(ETCD_PORT + 20, 1).start()
    yield cluster
    cluster.remove()


def test_etcd_away_sites_keep_serving_and_the_warn_window_renews_alone(
        request, pebble, front, own_etcd):
    name = "w.fleet.test"
    fleet, one, two = two_nodes(request, pebble, front, own_etcd.endpoints, "/away", name)
    old = serial(one, name)

    own_etcd.stop()  # all of etcd down
    for n in (one, two):
        n.await_served(name, old)  # sites keep serving
    # a renewal waits while the lock cannot be held: no order
    p = one.cli_ok("renew", "--force", name)
    assert f"{name}: not renewed here: etcd unavailable" in p.stdout
    assert orders_for(front, name) == 1
    # past the warn window (here: longer than the lifetime) a node renews alone, loudly
    fleet.configure(one, [name], "MDWarnWindow 10000\n")
    p = one.cli_ok("renew", "--force", name)
    assert "renewing ALONE" in p.stderr and f"{name}: renewed" in p.stdout
    assert orders_for(front, name) == 2
    one.cli_ok("activate")
    one.apache.graceful()
    new = serial(one, name)
    assert new != old
    one.await_served(name, new)
    two.await_served(name, old)  # no etcd, no news
    assert all(w.poll() is None for w in one.workers + two.workers)

    own_etcd.start()  # back: node1's set expires later, so it becomes the fleet's
    fleet.await_keys("md/", lambda k: json.loads(k[f"{name}/set"])["certs"]["rsa"]["serial"]
                     == new, timeout=60, what="the set renewed alone published")
    two.await_served(name, new, timeout=60)
    assert orders_for(front, name) == 2


def test_one_etcd_member_down_changes_nothing(request, pebble, front):
    etcd3 = EtcdCluster(ETCD_PORT + 10, 3).start()
    request.addfinalizer(etcd3.remove)
    first, later = "m.fleet.test", "n.fleet.test"
    fleet, one, two = two_nodes(request, pebble, front, etcd3.endpoints, "/three", first)
    # the member both nodes talk to first dies; the other two keep the quorum
    etcd3.members[0].kill()
    fleet.etcd = type(fleet.etcd)(etcd3.endpoints[1:])
    for n in (one, two):  # an MD added everywhere: renewed once, by whoever locks it
        fleet.configure(n, [first, later])
    for n in (one, two):
        n.await_state([first, later], timeout=90)
    s = serial(one, later)
    assert serial(two, later) == s
    two.await_served(later, s)
    one.await_served(later, s)
    assert orders_for(front, later) == 1 and orders_for(front, first) == 1
    assert "unavailable" not in log_text(one) + log_text(two)


def test_a_single_servers_store_seeds_the_fleet(fleet, front):
    name = "s.fleet.test"
    one = fleet.node("127.0.0.1")
    # a single server first: no MDCluster* directives
    MDEnv.write_config(one, f"MDomain {name}", one.ssl_vhost(name))
    one.start()
    one.cli_ok("renew")
    one.cli_ok("activate", "--reload", one.reload_command())
    s = serial(one, name)
    assert fleet.keys("") == {}
    # it joins the fleet: `cluster seed` publishes its live sets and accounts
    fleet.configure(one, [name])
    p = one.cli_ok("cluster", "seed")
    assert f"{name}: published" in p.stdout
    assert fleet.published()[name]["certs"]["rsa"]["serial"] == s
    assert len(fleet.keys("accounts/")) == 1
    assert f"{name}: already published" in one.cli_ok("cluster", "seed").stdout
    before = len(front.orders)
    two = fleet.node("127.0.0.2")
    fleet.configure(two, [name])
    two.start()
    two.start_worker()
    two.await_served(name, s, timeout=60)
    assert len(front.orders) == before == 1
