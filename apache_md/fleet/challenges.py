"""http-01 answers served by every node, whichever the load balancer hands the CA.

The renewing node publishes each token's key authorization under
<prefix>/challenges/<domain>/<token> (with its lease) and waits until every live node
(a key under <prefix>/nodes/) has written <prefix>/acks/<token>/<node>; only then is the
CA told to validate. Every node runs a Mirror thread that copies published answers into
its own challenges/<domain>/, as the handlers there read them: no request ever waits for
the network.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from ..core.model import Config, GlobalSettings, ManagedDomain
from ..core.problem import CAProblem
from ..store.fs import CHALLENGES, HTTP01_FILE, Store, StoreError
from .etcd import EtcdError
from .session import Session

log = logging.getLogger(__name__)
ACK_TIMEOUT = 30.0  # seconds the renewing node waits for every node to serve an answer
POLL = 0.25  # how often the mirror and the waiting driver look
UNSERVED_LOG = 5.0  # seconds a node fails to serve an answer before it says so
# (settings, domain, token, key authorization) -> a pre-flight result (ca.preflight's:
# .ok False when this node's Apache answers wrongly or not at all, .detail)
Verify = Callable[[GlobalSettings, str, str, str], Any]


def share(session: Session, md: ManagedDomain, domain: str, token: str, key_authz: str,
          timeout: float = ACK_TIMEOUT) -> None:
    """Publish an answer and wait for every other live node's ack; CAProblem naming the
    nodes that did not confirm in time (or etcd's trouble)."""
    ks, etcd = session.ks, session.etcd
    try:
        session.ensure()
        etcd.put(ks.challenge(domain, token),
                 json.dumps({"md": md.name, "key-authz": key_authz, "by": session.node}),
                 session.lease)
        deadline = time.monotonic() + timeout
        while True:
            live = {ks.leaf(kv.key, ks.nodes()) for kv in etcd.get_prefix(ks.nodes(), True)}
            acked = {ks.leaf(kv.key, ks.acks(token))
                     for kv in etcd.get_prefix(ks.acks(token), True)}
            missing = sorted(live - acked - {session.node})
            if not missing:
                return
            if time.monotonic() > deadline:
                raise CAProblem(20014, "fleet node lagging", "challenge-setup-failure",
                                f"fleet node(s) {', '.join(missing)} did not confirm serving "
                                f"the http-01 answer for {domain} within {timeout:.0f}s; "
                                "the CA was not asked to validate")
            time.sleep(POLL)
    except EtcdError as e:
        raise CAProblem(20014, "etcd unavailable", "challenge-setup-failure",
                        f"cannot share the http-01 answer for {domain} with the fleet: "
                        f"{e}") from None


def unshare(session: Session, domains: list[str]) -> None:
    """Take a renewal's answers back (its lease would, later)."""
    ks = session.ks
    for domain in domains:
        for kv in session.etcd.get_prefix(ks.challenge(domain, ""), True):
            token = ks.leaf(kv.key, ks.challenge(domain, ""))
            session.etcd.delete_prefix(ks.acks(token))
            session.etcd.delete(kv.key)


class Mirror(threading.Thread):
    """Copies the other nodes' published answers into this store and acknowledges them;
    removes them here again when they are gone from etcd."""

    def __init__(self, session: Session, store: Store, config: Config,
                 verify: Verify | None = None):
        super().__init__(name="fleet-challenges", daemon=True)
        self.session, self.store, self.config = session, store, config
        self.verify = verify
        self.stop = threading.Event()
        self.served: dict[tuple[str, str], bytes] = {}  # (domain, token) -> answer written
        self.acked: set[tuple[str, str]] = set()
        self.failing: dict[tuple[str, str], float] = {}  # not answered since (monotonic)

    def run(self) -> None:
        while not self.stop.wait(POLL):
            try:
                self.step()
            except EtcdError:
                pass  # the worker logs outages; answers come again when etcd does
            except (StoreError, OSError) as e:
                log.error("fleet: cannot write an http-01 answer: %s", e)

    def step(self) -> None:
        ks, session = self.session.ks, self.session
        if not session.alive:
            return
        seen = set()
        for kv in session.etcd.get_prefix(ks.challenges()):
            domain, _, token = ks.leaf(kv.key, ks.challenges()).partition("/")
            try:
                doc = json.loads(kv.value)
                answer = str(doc["key-authz"]).encode()
            except (ValueError, KeyError, TypeError):
                continue
            if doc.get("by") == session.node or self.config.md_for_domain(domain) is None \
                    or not answer.startswith(token.encode() + b"."):
                continue
            seen.add((domain, token))
            if self.served.get((domain, token)) != answer:
                self.store.write_bytes(CHALLENGES, domain, HTTP01_FILE, answer)
                self.served[(domain, token)] = answer
                self.acked.discard((domain, token))
            if (domain, token) not in self.acked and self._answers(domain, token, answer):
                session.etcd.put(ks.ack(token, session.node), "served", session.lease)
                self.acked.add((domain, token))
        for domain, token in set(self.served) - seen:
            answer = self.served.pop((domain, token))
            self.acked.discard((domain, token))
            self.failing.pop((domain, token), None)
            if self.store.read_bytes(CHALLENGES, domain, HTTP01_FILE) == answer:
                self.store.purge(CHALLENGES, domain)

    def _answers(self, domain: str, token: str, answer: bytes) -> bool:
        """Whether this node's Apache serves the answer, fetched as the CA will (an ack
        tells the renewer the CA may validate here). A check that cannot be made (a port
        not mapped) acknowledges, as the renewer's own pre-flight lets the CA decide."""
        if self.verify is None:
            return True
        r = self.verify(self.config.settings, domain, token, answer.decode())
        if r.ok is not False:
            self.failing.pop((domain, token), None)
            return True
        since = self.failing.setdefault((domain, token), time.monotonic())
        if 0 <= since and time.monotonic() - since > UNSERVED_LOG:  # not a passing moment
            self.failing[(domain, token)] = -1.0  # said once
            log.error("fleet: this node does not serve the http-01 answer for %s, so it "
                      "does not acknowledge it: %s", domain, r.detail)
        return False

