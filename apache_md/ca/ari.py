"""ACME Renewal Information (RFC 9773): ask the issuing CA when to renew.

Polled from the check loop for MDs that ARI may move earlier: renewal on,
`MDRenewViaARI on`, a complete certificate set not yet inside its renew
window. Each certificate's answer is kept in `watch/<md>/ari.json` with the
time drawn inside the suggested window and the next poll (Retry-After), so a
restart neither re-polls early nor draws a new time. The renew window stays
the safety net: core/plan.py renews by window whatever ARI says.
"""
from __future__ import annotations

import logging
import random
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from ..core import tailscale
from ..core.facts import MDFacts
from ..core.model import Config, ManagedDomain
from ..core.problem import CAProblem
from ..core.schedule import ari_failed, ari_poll_due, ari_update, renewal_due
from ..store import watch
from ..store.fs import Store, StoreError

if TYPE_CHECKING:  # the acme library is imported only when ARI is asked
    from .client import CAConnection

log = logging.getLogger(__name__)


def applies(md: ManagedDomain, facts: MDFacts, now: datetime) -> bool:
    """Would an ARI answer change anything for this MD now?"""
    if not md.ari_renewals or not md.will_renew or not facts.managed or tailscale.applies(md):
        return False  # (tailscaled asks its CA's ARI itself)
    if renewal_due(md, facts.active, now, facts.issuer):
        return False  # renewing anyway
    # a renewed set waiting for activation makes the answer moot
    return not (facts.job is not None and facts.job.finished)


class Poller:
    """One pass over the MDs; directories are fetched once per CA and pass."""

    def __init__(self, store: Store, stop: threading.Event | None = None,
                 rnd: random.Random | None = None):
        self.store = store
        self.stop = stop or threading.Event()
        self.rnd = rnd or random.Random()
        self._conns: dict[tuple, CAConnection] = {}
        self._down: dict[tuple, CAProblem] = {}  # directories that failed in this pass

    def _renewal_info(self, md: ManagedDomain, url: str, cert_id: str):
        key = (url, md.ca_certs, md.proxy_url, md.proxy_ca_certs)
        if key in self._down:  # one unreachable CA costs one timeout per pass, not per MD
            raise self._down[key]
        if key not in self._conns:
            from .client import CAConnection  # the acme library, only when ARI is asked
            self._conns[key] = CAConnection(url, ca_certs=md.ca_certs, proxy=md.proxy_url,
                                            proxy_ca_certs=md.proxy_ca_certs, timeout=15,
                                            stop=self.stop)
        conn = self._conns[key]
        try:
            conn.directory  # noqa: B018
        except CAProblem as p:
            self._down[key] = p
            raise
        return conn.renewal_info(cert_id)

    def refresh(self, md: ManagedDomain, facts: MDFacts, now: datetime) -> bool:
        """Poll the certificates whose next poll is due; True when the state changed."""
        if not applies(md, facts, now):
            return False
        url = facts.issuer or (md.ca_urls[0] if md.ca_urls else None)
        if not url:
            return False
        # ARI is asked at the CA that issued the certificate (mod_md: the first CA)
        old = facts.ari
        new: dict = {}
        changed = False
        for info in facts.active.values():
            if info is None or not info.ari_id:
                continue
            entry = old.get(info.ari_id)
            if info.not_after <= now or not ari_poll_due(entry, now):
                # RFC 9773 §4.3: never ask about an expired certificate
                if entry is not None:
                    new[info.ari_id] = entry
                continue
            new[info.ari_id] = self._poll(md, url, info.ari_id, entry, now)
            changed = True
        if changed or set(new) != set(old):
            watch.save_ari(self.store, md.name, new)
            return True
        return False

    def _poll(self, md: ManagedDomain, url: str, cert_id: str, entry, now: datetime) -> dict:
        try:
            got = self._renewal_info(md, url, cert_id)
        except CAProblem as p:
            log.warning("%s: ARI request to %s failed: %s", md.name, url, p)
            return ari_failed(entry, str(p), now)
        if got is None:
            return ari_failed(entry, "", now, unsupported=True)
        info, retry_after = got
        new = ari_update(entry, info, retry_after, now, self.rnd)
        if new.get("selected") != (entry or {}).get("selected"):
            log.info("%s: CA suggests renewal between %s and %s; chose %s", md.name,
                     new.get("window", {}).get("from"), new.get("window", {}).get("until"),
                     new.get("selected"))
        return new


def refresh_all(store: Store, config: Config, facts: dict[str, MDFacts], now: datetime,
                stop: threading.Event | None = None, rnd: random.Random | None = None,
                tick=None) -> set[str]:
    """Poll what is due for the MDs in `facts`; `tick()` runs between MDs (systemd
    watchdog). Returns the names whose ARI state changed (their facts are stale)."""
    poller = Poller(store, stop, rnd)
    changed = set()
    for md in config.mds:
        if md.name not in facts:
            continue
        if poller.stop.is_set():
            break
        if tick:
            tick()
        try:
            if poller.refresh(md, facts[md.name], now):
                changed.add(md.name)
        except (OSError, StoreError) as e:  # a full disk: one line, not a traceback
            log.error("%s: ARI check failed: %s", md.name,
                      e if isinstance(e, StoreError) else store.describe(e))
        except Exception:  # noqa: BLE001 - ARI is advisory; the window still renews
            log.exception("%s: ARI check failed", md.name)
    return changed
