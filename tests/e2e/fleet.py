"""Fleet nodes for the e2e tests: Apache + worker per node on its own loopback address
(127.0.0.2, .3, ...; the same ports), one Pebble behind an order-counting front, one
etcd. Node `n` of a fleet is MDEnv with the MDCluster* directives."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from apache_md.fleet import seal
from apache_md.fleet.etcd import Etcd
from tests.harness import Apache, Pebble
from tests.harness._util import make_tmp_dir
from tests.e2e.mdenv import MDEnv


class FleetNode(MDEnv):
    def __init__(self, apache: Apache, pebble: Pebble, fleet: "Fleet", name: str):
        super().__init__(apache, pebble)
        self.fleet = fleet
        self.name = name
        self.ca_url = fleet.ca_url

    def cluster_directives(self) -> str:
        f = self.fleet
        return (f"MDClusterEtcd {' '.join(f.endpoints)}\nMDClusterNode {self.name}\n"
                f"MDClusterPrefix {f.prefix}\nMDClusterKeyFile {f.key_file}\n"
                f"MDClusterLeaseTTL {f.ttl}s\n")

    def write_config(self, mds: str, vhosts: str, extra_globals: str = "") -> None:
        super().write_config(mds, vhosts, self.cluster_directives() + extra_globals)


class Fleet:
    """The nodes of one test; every node gets the same MDs and vhosts."""

    def __init__(self, pebble: Pebble, endpoints: list[str], prefix: str, ports: tuple[int, int],
                 ca_url: str | None = None, ttl: int = 4):
        self.pebble = pebble
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self.http_port, self.https_port = ports
        self.ca_url = ca_url
        self.ttl = ttl
        self.dir = make_tmp_dir("fleet-")
        self.key_file = self.dir / "fleet.key"
        seal.write_new_key(str(self.key_file))
        self.nodes: list[FleetNode] = []
        self.etcd = Etcd(self.endpoints)

    def node(self, address: str, name: str | None = None) -> FleetNode:
        a = Apache(http_port=self.http_port, https_port=self.https_port, listen_host=address)
        n = FleetNode(a, self.pebble, self, name or f"node{len(self.nodes) + 1}")
        self.nodes.append(n)
        return n

    def configure(self, node: FleetNode, names: list[str], extra: str = "") -> None:
        mds = "\n".join(f"MDomain {n}" for n in names)
        node.write_config(mds, "".join(node.ssl_vhost(n) for n in names), extra)

    # -- etcd's view ---------------------------------------------------------------------
    def keys(self, under: str) -> dict[str, bytes]:
        base = f"{self.prefix}/{under}"
        return {kv.key[len(base):]: kv.value for kv in self.etcd.get_prefix(base)}

    def published(self) -> dict[str, dict]:
        return {k.split("/")[0]: json.loads(v) for k, v in self.keys("md/").items()
                if k.endswith("/set")}

    def await_keys(self, under: str, pred, timeout: float = 60, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            got = self.keys(under)
            if pred(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"etcd {self.prefix}/{under}: {what or 'condition'} not "
                                     f"met: {sorted(got)}")
            time.sleep(0.2)

    def stop(self, failed: bool) -> None:
        for n in self.nodes:
            n.stop_workers()
            n.apache.stop()
            if failed:
                sys.stderr.write(f"\n[fleet] {n.name}: {n.apache.root} (worker logs in logs/)\n")
            else:
                shutil.rmtree(n.apache.root, ignore_errors=True)
        if not failed:
            shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.etcd.delete_prefix(self.prefix + "/")
        except Exception:  # noqa: BLE001 - etcd may be down in the test that stops it
            pass


def log_text(node: MDEnv) -> str:
    return "".join(Path(w.log_path).read_text(errors="replace") for w in node.workers
                   if os.path.exists(w.log_path))
