"""Where things live in etcd, under the fleet's prefix (MDClusterPrefix). Pure.

  <prefix>/nodes/<node>               the node's heartbeat (its lease)
  <prefix>/serves/<node>/<shard>      what the node serves, for the MDs of one shard
                                      (its lease; put only when it changed)
  <prefix>/locks/<md>                 the node renewing the MD (its lease)
  <prefix>/md/<md>/set                the MD's certificate set, keys sealed (one value:
                                      a set is published and read whole)
  <prefix>/md/<md>/job                the renewal's job.json (progress, for takeover)
  <prefix>/orders/<md>                the order under way: order.json, md.json, staged
                                      keys sealed (outlives its renewer, for the next one)
  <prefix>/accounts/<id>              an ACME account, its key sealed
  <prefix>/challenges/<md>/<token>    an http-01 key authorization (driver's lease)
  <prefix>/acks/<token>/<node>        a node serves that token (its lease)
  <prefix>/ocsp/<md>/<file>           OCSP responses, as in the store's ocsp/<md>/
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keyspace:
    prefix: str  # "/apache-md", no trailing slash

    def _k(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def nodes(self) -> str:
        return self._k("nodes", "")

    def node(self, node: str) -> str:
        return self._k("nodes", node)

    def serving(self) -> str:
        return self._k("serves", "")

    def serves(self, node: str, shard: int) -> str:
        return self._k("serves", node, f"{shard:02x}")

    def locks(self) -> str:
        return self._k("locks", "")

    def lock(self, md: str) -> str:
        return self._k("locks", md)

    def mds(self) -> str:
        return self._k("md", "")

    def md_set(self, md: str) -> str:
        return self._k("md", md, "set")

    def md_job(self, md: str) -> str:
        return self._k("md", md, "job")

    def order(self, md: str) -> str:
        return self._k("orders", md)

    def accounts(self) -> str:
        return self._k("accounts", "")

    def account(self, acct_id: str) -> str:
        return self._k("accounts", acct_id)

    def challenges(self) -> str:
        return self._k("challenges", "")

    def challenge(self, md: str, token: str) -> str:
        return self._k("challenges", md, token)

    def acks(self, token: str) -> str:
        return self._k("acks", token, "")

    def ack(self, token: str, node: str) -> str:
        return self._k("acks", token, node)

    def ocsp(self, md: str) -> str:
        return self._k("ocsp", md, "")

    def ocsp_file(self, md: str, file: str) -> str:
        return self._k("ocsp", md, file)

    def leaf(self, key: str, under: str) -> str:
        """The last part of `key` below the directory key `under` ("<prefix>/nodes/")."""
        return key[len(under):] if key.startswith(under) else key
