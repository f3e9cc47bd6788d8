"""Which MDs to drive now, and when to look again: pure decisions over what the store says."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .facts import MDFacts
from .model import Config, ManagedDomain
from .schedule import (
    ari_next_poll,
    ari_reason,
    ari_renew_at,
    renew_at,
    renewal_due,
    WINDOW_DUE,
    should_warn,
    window_start,
)


@dataclass
class Decision:
    md: ManagedDomain
    drive: bool
    reason: str
    next_run: datetime | None = None  # an earlier wake-up the job asks for
    warn: bool = False  # watched and inside the warn window: `expiring` is due
    staged_waiting: bool = False  # finished, waiting for activation
    renew_at: datetime | None = None  # when the renew window opens
    ari_at: datetime | None = None  # when ARI says to renew (if before the window)
    ari_poll: datetime | None = None  # when to ask the CA's renewalInfo again

    @property
    def wake(self) -> datetime | None:
        """The earliest time this MD needs another look."""
        times = [t for t in (self.next_run, self.renew_at, self.ari_at, self.ari_poll) if t]
        return min(times) if times else None


def decide(md: ManagedDomain, facts: MDFacts, now: datetime, force: bool = False) -> Decision:
    """What to do about one MD now, from what the store says about it (pure)."""
    active = facts.active
    warn = md.is_watched and should_warn(md, active, now)
    if not md.will_renew:
        return Decision(md, False, "not renewed (renew mode or no vhost)", warn=warn)
    job = facts.job
    if facts.staged_finished:
        # A complete set waits for activation (or for its `renewed` message): never re-order it.
        # A past next-run is not a wake-up: activation may be up to another process.
        wait = job.next_run if job.next_run and job.next_run > now else None
        return Decision(md, False, "staged, waiting for activation", wait,
                        warn=warn, staged_waiting=True)
    if facts.staged_by_hand and not force:
        return Decision(md, False, "a complete set in staging/ waits for activation", warn=warn)
    issuer = facts.issuer
    reason = "forced" if force else renewal_due(md, active, now, issuer)
    if reason is None and facts.revoked:
        # mod_md renews a revoked certificate at its next check; we do it now
        reason = f"certificate revoked ({', '.join(facts.revoked)}, OCSP)"
    ari_at = ari_poll = None
    if reason is None and md.ari_renewals:
        entries = facts.ari_entries()
        ari_at, explanation = ari_renew_at(entries)
        ari_poll = ari_next_poll(entries)
        if ari_at is not None and ari_at <= now:
            reason = ari_reason(explanation)
    if reason is None:
        at = renew_at(md, active, now, issuer)
        return Decision(md, False, "certificate valid", warn=warn, renew_at=at,
                        ari_at=ari_at if ari_at and ari_at < at else None, ari_poll=ari_poll)
    if job and job.next_run and job.next_run > now and not force:
        return Decision(md, False, f"waiting to retry ({reason})", job.next_run, warn=warn)
    return Decision(md, True, reason, warn=warn)


def due_at_issuance(md: ManagedDomain, facts: MDFacts) -> bool:
    """Every live certificate of `md` was due by its window from the moment it was
    issued (MDRenewWindow at least its lifetime: 30d with 6-day certificates)."""
    certs = [c for c in facts.active.values() if c is not None]
    return bool(certs) and len(certs) == len(facts.active) and \
        all(window_start(md, c) <= c.not_before for c in certs)


def hold_instant_renewals(decisions: list[Decision], known: dict[str, MDFacts],
                          renewed: dict[str, datetime], interval: float, now: datetime
                          ) -> tuple[list[Decision], list[Decision]]:
    """A live worker's renewals go live by themselves, so a window that covers the
    certificates' whole lifetime would have it renew at once again, without end, until
    the CA rate-limits the account (mod_md renews again at each restart). An MD it
    `renewed` (name -> when) is, when due by such a window only, held until `interval`
    (MDCheckInterval) after that renewal. Returns (decisions, the ones held)."""
    out, held = [], []
    for d in decisions:
        f, last = known.get(d.md.name), renewed.get(d.md.name)
        if d.drive and f and last and d.reason.startswith(WINDOW_DUE) \
                and last + timedelta(seconds=interval) > now and due_at_issuance(d.md, f):
            until = last + timedelta(seconds=interval)
            d = replace(d, drive=False, renew_at=until, reason=(
                f"MDRenewWindow {d.md.renew_window} covers the whole lifetime of its "
                f"certificates: each new one is due when issued; renewed again at "
                f"{until:%Y-%m-%d %H:%M:%S} UTC (MDCheckInterval after the last renewal)"))
            held.append(d)
        out.append(d)
    return out, held


def next_wake(decisions: list[Decision], now: datetime, check_at: datetime,
              held_back: set[str] | frozenset = frozenset()) -> datetime:
    """When the worker looks again: the next regular check (MDCheckInterval,
    jittered) or earlier when an MD asks for it. An MD that is due again
    already (its backoff ran out during the cycle) means now, unless it was
    vetoed or busy this cycle: those wait for the next check, as in mod_md."""
    wake = check_at
    for d in decisions:
        t = now if d.drive and d.md.name not in held_back else d.wake
        if t and t < wake:
            wake = max(t, now)
    return wake


def plan(config: Config, facts: dict[str, MDFacts], now: datetime, force: bool = False,
         names: list[str] | None = None) -> list[Decision]:
    """Decisions for the MDs in `facts` (store/facts.read_all), in config order."""
    return [decide(md, facts[md.name], now, force) for md in config.mds
            if md.name in facts and (not names or md.name in names)]
