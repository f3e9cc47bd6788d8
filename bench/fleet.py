#!/usr/bin/env python3
"""A fleet of 3 Apache nodes (etcd, haproxy in front) against one node alone: N new MDs.

Both runs use the same Pebble behind an order-counting front. Times are wall clock
from the workers' start until every node has every MD's certificate live (activated,
Apache reloaded: for the fleet, each node's heartbeat in etcd says so; alone, its
md-status). Orders are counted at the CA side; the fleet must place one per MD.

Usage: E2E_PORT_OFFSET=N python bench/fleet.py [-n 50]
"""
from __future__ import annotations

import argparse
import json
import time

from benchenv import HTTP, HTTPS, PORTS, loadavg, names, ratio, say, start_pebble

from tests.conftest import ETCD_PORT
from tests.e2e.fleet import Fleet
from tests.e2e.mdenv import MDEnv
from tests.harness import AcmeFront, Apache, EtcdCluster, HAProxy
from tests.harness.client import s_client_cert

TIMEOUT = 600


def orders(front, domains) -> dict[str, int]:
    out = {d: 0 for d in domains}
    for o in front.orders:
        for i in o.get("identifiers", []):
            if i.get("value") in out:
                out[i["value"]] += 1
    return out


def wait(pred, what: str) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > TIMEOUT:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.5)
    return time.monotonic() - start


def alone(pebble, front, domains) -> tuple[float, dict[str, int]]:
    env = MDEnv(Apache(http_port=HTTP, https_port=HTTPS), pebble)
    env.ca_url = front.directory_url
    try:
        env.write_config("\n".join(f"MDomain {d}" for d in domains),
                         "".join(env.ssl_vhost(d) for d in domains))
        env.start()
        before = len(front.orders)
        start = time.monotonic()
        env.start_worker()

        def done():
            mds = {m["name"]: m for m in env.status().get("managed-domains", [])}
            return all((mds.get(d) or {}).get("state") == 2 for d in domains)
        wait(done, "one node")
        took = time.monotonic() - start
        assert s_client_cert("127.0.0.1", HTTPS, domains[-1])
        return took, orders(type("F", (), {"orders": front.orders[before:]}), domains)
    finally:
        env.stop_workers()
        env.apache.stop()


def fleet_run(pebble, front, domains, etcd) -> tuple[float, dict[str, int]]:
    lb = HAProxy([HTTP, HTTPS], ["127.0.0.2", "127.0.0.3", "127.0.0.4"]).start()
    f = Fleet(pebble, etcd.endpoints, "/bench", (HTTP, HTTPS),
              ca_url=front.directory_url, ttl=10)
    try:
        nodes = [f.node(f"127.0.0.{i}") for i in (2, 3, 4)]
        for n in nodes:
            f.configure(n, domains)
            n.start()
        before = len(front.orders)
        start = time.monotonic()
        for n in nodes:
            n.start_worker()

        def done():
            beats = [json.loads(v) for v in f.keys("nodes/").values()]
            return len(beats) == 3 and all(
                all((b.get("serves") or {}).get(d) for d in domains) for b in beats)
        wait(done, "every node serving every MD")
        took = time.monotonic() - start
        for n in nodes:
            assert s_client_cert(n.apache.address, HTTPS, domains[-1])
        return took, orders(type("F", (), {"orders": front.orders[before:]}), domains)
    finally:
        f.stop(failed=False)
        lb.remove()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    args = ap.parse_args()
    pebble = start_pebble()
    front = AcmeFront(pebble, PORTS["acme_port"] + 40).start()
    etcd = EtcdCluster(ETCD_PORT + 30, 1).start()
    try:
        one_t, one_o = alone(pebble, front, names(args.n, "solo"))
        say(f"one node alone:  {args.n} MDs live in {one_t:.1f}s, "
            f"orders per MD {sorted(set(one_o.values()))}   (load {loadavg()})")
        fl_t, fl_o = fleet_run(pebble, front, names(args.n, "fleet"), etcd)
        say(f"3-node fleet:    {args.n} MDs live on every node in {fl_t:.1f}s, "
            f"orders per MD {sorted(set(fl_o.values()))}, total {sum(fl_o.values())}   "
            f"(load {loadavg()})")
        say(f"fleet / alone: {ratio(fl_t, one_t)}")
    finally:
        etcd.remove()
        front.stop()
        pebble.stop()


if __name__ == "__main__":
    main()
