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

from ..core.model import Config, ManagedDomain
from ..core.problem import CAProblem
from ..core.schedule import ari_failed, ari_poll_due, ari_update, renewal_due
from ..store import credentials, watch
from ..store.fs import STAGING, Store
from ..store.jobs import load_job

if TYPE_CHECKING:  # the acme library is imported only when ARI is asked
    from .client import CAConnection

log = logging.getLogger(__name__)


def applies(store: Store, md: ManagedDomain, now: datetime) -> bool:
    """Would an ARI answer change anything for this MD now?"""
    if not md.ari_renewals or not md.will_renew or not credentials.uses_managed(store, md):
        return False
    active = credentials.active(store, md)
    if renewal_due(md, active, now, credentials.issuer_url(store, md)):
        return False  # renewing anyway
    # a renewed set waiting for activation makes the answer moot
    return not (store.exists(STAGING, md.name, "job.json") and load_job(store, md.name).finished)


def ca_for(store: Store, md: ManagedDomain) -> str | None:
    """ARI is asked at the CA that issued the certificate (mod_md: the first CA)."""
    return credentials.issuer_url(store, md) or (md.ca_urls[0] if md.ca_urls else None)


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

    def refresh(self, md: ManagedDomain, now: datetime) -> bool:
        """Poll the certificates whose next poll is due; True when the state changed."""
        if not applies(self.store, md, now):
            return False
        url = ca_for(self.store, md)
        if not url:
            return False
        old = watch.load_ari(self.store, md.name)
        new: dict = {}
        changed = False
        for spec in md.keyspecs:
            info = credentials.info(self.store, "domains", md.name, spec)
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


def refresh_all(store: Store, config: Config, now: datetime,
                stop: threading.Event | None = None, rnd: random.Random | None = None,
                names: list[str] | None = None, tick=None) -> None:
    """Poll what is due for every MD; `tick()` runs between MDs (systemd watchdog)."""
    poller = Poller(store, stop, rnd)
    for md in config.mds:
        if names and md.name not in names:
            continue
        if poller.stop.is_set():
            return
        if tick:
            tick()
        try:
            poller.refresh(md, now)
        except Exception:  # noqa: BLE001 - ARI is advisory; the window still renews
            log.exception("%s: ARI check failed", md.name)
