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

from ..core.model import Config, ManagedDomain
from ..core.problem import CAProblem
from ..store.fs import CHALLENGES, HTTP01_FILE, Store, StoreError
from .etcd import EtcdError
from .session import Session

log = logging.getLogger(__name__)
ACK_TIMEOUT = 30.0  # seconds the renewing node waits for every node to serve an answer
POLL = 0.25  # how often the mirror and the waiting driver look


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

    def __init__(self, session: Session, store: Store, config: Config):
        super().__init__(name="fleet-challenges", daemon=True)
        self.session, self.store, self.config = session, store, config
        self.stop = threading.Event()
        self.served: dict[tuple[str, str], bytes] = {}  # (domain, token) -> answer written

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
                session.etcd.put(ks.ack(token, session.node), "served", session.lease)
                self.served[(domain, token)] = answer
        for domain, token in set(self.served) - seen:
            answer = self.served.pop((domain, token))
            if self.store.read_bytes(CHALLENGES, domain, HTTP01_FILE) == answer:
                self.store.purge(CHALLENGES, domain)
