"""Activation: where a staged set becomes live, and Apache follows.

mod_md does this in post_config at a restart; apache-md does it on demand
(`apache-md activate`, or the worker after a renewal): verify the staged set,
move it into domains/ (the previous set into archive/), write the Apache
includes, test the configuration, reload Apache gracefully, and roll back
when Apache refuses. A set that fails verification is discarded and the
renewal starts over, while Apache keeps serving the previous certificate.
A worker that may not reload Apache only asks for an activation (`request`).
"""
from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from ..core import crypto
from ..core.facts import MDFacts
from ..core.job import now_utc
from ..core.mdjson import md_to_json
from ..core.schedule import md_state
from ..core.model import Config, GlobalSettings, ManagedDomain, RenewMode
from ..notify import Messenger
from ..store import broken, changes, credentials, jobs, state
from ..store.accounts import save_staged
from ..store.facts import read as read_facts
from ..store.fs import (
    ACCOUNTS,
    CHALLENGES,
    DOMAINS,
    STAGING,
    TMP,
    Batch,
    Store,
    StoreError,
    exchange,
    rename,
)
from ..store.locks import Busy, md_lock
from ..store.state import load_activation_state, save_activation_state
from . import ctl, serving

log = logging.getLogger(__name__)


@dataclass
class Report:
    activated: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # md -> why not yet (as configured)
    blocked: dict[str, str] = field(default_factory=dict)  # md -> the problem that held it
    failed: dict[str, str] = field(default_factory=dict)
    repaired: dict[str, str] = field(default_factory=dict)  # md -> broken live set, what was done
    includes_changed: bool = False
    # MDs whose sets went live earlier without a reload while Apache ran (it still
    # serves the previous ones): a reload is due for them too
    unloaded: list[str] = field(default_factory=list)
    archived: dict[str, str] = field(default_factory=dict)  # md -> previous set, for rollback
    error: str | None = None  # the reload failed, or was not done because it would fail

    @property
    def reload_needed(self) -> bool:
        return bool(self.activated) or self.includes_changed or bool(self.unloaded)


def verify_staged(store: Store, md: ManagedDomain) -> list[tuple[bytes, bytes]]:
    """(plain key PEM, chain PEM) per key spec; raises StoreError naming the problem."""
    out = []
    for spec, key, chain in credentials.load_set(store, STAGING, md):
        if len(chain) < 2:
            raise StoreError(f"staged {spec.name} chain of {md.name} has no intermediate")
        missing = [d for d in md.domains if not crypto.covers(crypto.cert_names(chain[0]), d)]
        if missing:
            raise StoreError(f"staged {spec.name} certificate of {md.name} does not cover "
                             f"{', '.join(missing)}")
        out.append((crypto.key_to_pem(key),
                    store.read_bytes(STAGING, md.name, spec.file_name("pubcert")) or b""))
    return out


def ready(facts: MDFacts, now: datetime) -> str | None:
    """None when a complete staged set may be activated now, else why not. A complete
    set without a finished job of ours (placed by hand, or by another tool) is ready
    too, as mod_md activates it at a restart; activate() verifies it like our own."""
    job = facts.job
    if facts.staged_by_hand:
        return None
    if job is None:
        return "nothing staged"
    if not facts.staged_finished:
        return "renewal not finished"
    if job.valid_from and job.valid_from > now:
        return f"activation delayed until {job.valid_from:%Y-%m-%d %H:%M:%S} UTC"
    return None


def gate(settings: GlobalSettings, last_reload: datetime | None, now: datetime) -> str | None:
    """MDActivationInterval / MDActivationWindow: why a reload must wait, or None."""
    if settings.activation_interval and last_reload:
        earliest = last_reload + timedelta(seconds=settings.activation_interval)
        if now < earliest:
            return f"next activation after {earliest:%Y-%m-%d %H:%M:%S} UTC (MDActivationInterval)"
    if settings.activation_window:
        start, end = settings.activation_window
        local = now.astimezone()
        minute = local.hour * 60 + local.minute
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if not inside:
            return (f"outside the activation window {start // 60:02d}:{start % 60:02d}-"
                    f"{end // 60:02d}:{end % 60:02d} (MDActivationWindow, local time)")
    return None


def activate_md(store: Store, md: ManagedDomain, messenger: Messenger,
                now: datetime | None = None) -> str | None:
    """Move a complete staged set into domains/; returns the archived previous set."""
    job = jobs.load(store, STAGING, md.name)
    sets = verify_staged(store, md)
    staged_md = store.read_json(STAGING, md.name, "md.json") or {}  # by hand: may be absent
    ca_url = (staged_md.get("ca") or {}).get("url")
    store.purge(TMP, md.name)
    for spec, (key_pem, cert_pem) in zip(md.keyspecs, sets):
        store.write_bytes(TMP, md.name, spec.file_name("privkey"), key_pem, mode=0o600)
        store.write_bytes(TMP, md.name, spec.file_name("pubcert"), cert_pem)
    account = save_staged(store, md.name) or (staged_md.get("ca") or {}).get("account") \
        or _account_for(store, ca_url)
    store.write_json(TMP, md.name, "md.json", md_to_json(md, ca_url=ca_url, account=account,
                                                          state=2))
    messenger.send(job, "installed", md.name)  # mod_md: exit code ignored
    store.write_json(TMP, md.name, "job.json", job.to_json())
    archived = replace_domain(store, md.name)
    store.purge(STAGING, md.name)
    store.purge(CHALLENGES, md.name)
    log.info("%s: activated new certificates", md.name)
    return archived


def replace_domain(store: Store, name: str) -> str | None:
    """Move tmp/<name> to domains/<name>, archiving the old set; returns the archive
    (mod_md's pfs_move, reference/mod_md-formats.md §3.10 step 5)."""
    src, dst = store.dir(TMP, name), store.dir(DOMAINS, name)
    archived = None
    if dst.exists():
        slot = store.archive_slot(name)
        if exchange(src, dst):  # readers (status, md-status) never see the MD without a set
            rename(src, slot)
            return str(slot)
        rename(dst, slot)
        archived = str(slot)
    try:
        rename(src, dst)
    except OSError as e:
        if archived:
            rename(archived, dst)
        if e.errno == errno.ENOENT:
            raise StoreError(f"{src}: staged set vanished during activation") from None
        raise
    return archived


def replace_domain_back(store: Store, name: str, archived: str) -> str:
    """Undo replace_domain: the archived set returns; the rejected one is archived."""
    slot = store.archive_slot(f"{name}.rejected")
    if exchange(archived, store.dir(DOMAINS, name)):
        rename(archived, slot)
        return str(slot)
    rename(store.dir(DOMAINS, name), slot)
    rename(archived, store.dir(DOMAINS, name))
    return str(slot)


def _account_for(store: Store, ca_url: str | None) -> str | None:
    """The account id used at `ca_url` (for md.json's ca.account)."""
    if not ca_url:
        return None
    for acct in store.names(ACCOUNTS):
        try:
            doc = store.read_json(ACCOUNTS, acct, "account.json") or {}
        except StoreError:
            continue
        if doc.get("ca-url") == ca_url and doc.get("status") == "valid":
            return acct
    return None


# md.json path: (the MD it was found in step with, the file's stamp then): a cycle over
# 10,000 MDs read and compared every md.json; unchanged, one stat() is enough.
_in_step: dict[str, tuple[ManagedDomain, int | None]] = {}


def _md_json_stamp(path: str) -> int | None:
    try:
        return hash(changes.stamp(os.stat(path)))
    except OSError:
        return None


def sync_md_json(store: Store, md: ManagedDomain, batch: Batch | None = None) -> None:
    """Keep domains/<md>/md.json in step with the config (mod_md's store sync); a broken
    one is set aside (broken-files) before it is written again. `batch`: written there,
    in place at its commit."""
    path = store.fspath(DOMAINS, md.name, "md.json")
    hit = _in_step.get(path)
    if hit is not None and hit[0] is md and hit[1] is not None \
            and hit[1] == _md_json_stamp(path):
        return
    before = _md_json_stamp(path)  # taken first: a change while it is read shows later
    current = broken.read_json(store, DOMAINS, md.name, "md.json",
                               credentials.MD_JSON_BROKEN) or {}
    credentials.remember_md_json(path, before, current)  # the facts below need not read it
    ca = current.get("ca") if isinstance(current, dict) else None
    ca = ca if isinstance(ca, dict) else {}  # md.json edited by hand: "ca": 5
    url, account = (v if isinstance(v, str) else None for v in (ca.get("url"), ca.get("account")))
    facts = read_facts(store, md)
    # as mod_md's store sync writes them (its state_init): why an MD is incomplete too
    st, descr = md_state(md, facts.managed, facts.active)
    wanted = md_to_json(md, ca_url=url, account=account, state=st,
                        state_descr=descr)
    if wanted != current:
        store.write_json(DOMAINS, md.name, "md.json", wanted, batch=batch)
        if batch is not None:  # its stamp once it is in place
            batch.then(lambda: _in_step.__setitem__(path, (md, _md_json_stamp(path))))
            return
    _in_step[path] = (md, _md_json_stamp(path))


def sync_and_include(store: Store, config: Config) -> tuple[bool, dict[str, str]]:
    """Every md.json in step, every include and global.conf written (write_includes'
    result), all in one Batch: for 50 new MDs, 2 sync() calls instead of some 380
    fsync()s (an md.json, a fallback pair and an include each, and their directories),
    most of `apache-md activate`'s time before Apache could start. Nothing is in place
    before it is durable, and all is once this returns."""
    batch = Batch()
    try:
        for md in config.mds:
            sync_md_json(store, md, batch)
        result = serving.write_includes(store, config, batch)
        batch.commit_all()
    finally:
        batch.discard()
    return result


def activate(store: Store, config: Config, messenger: Messenger, report: Report,
             now: datetime | None = None, force: bool = False, precheck=None,
             prepared: bool = False, known: Mapping[str, MDFacts] | None = None) -> None:
    """Activate every MD with a complete staged set, then write the Apache includes.

    `force` ignores MDActivationInterval/-Window (an administrator's explicit
    command); `precheck()` returns an error text when Apache's configuration is
    broken already, in which case nothing is activated (a reload would fail).
    A set is never taken while a drive of its MD holds the MD's lock (still writing it).
    `prepared`: prepare() ran just before, so with nothing activated the md.json files
    and includes are as it left them (a cycle over 10,000 MDs rewrote none of them, but
    read and rendered each one twice). `known`: the MDs' facts as the caller read them
    (the worker's cycle; others are read).
    """
    now = now or now_utc()
    act_state = load_activation_state(store)
    held = None if force else gate(config.settings, act_state.get("last-reload"), now)
    candidates = []
    for md in config.mds:
        if md.is_static and md.renew_mode != RenewMode.ALWAYS:
            continue  # static files only; with `always` the renewed set takes over
        why = ready(_facts(store, md, known), now)
        if why is None and held:
            why = held
        if why is None:
            candidates.append(md)
        elif why != "nothing staged":
            report.waiting[md.name] = why
    broken = precheck() if candidates and precheck else None
    for md in candidates:
        if broken:
            report.blocked[md.name] = f"Apache configuration test failed: {broken}"
            continue
        try:
            with md_lock(store, md.name, timeout=0):
                archived = activate_md(store, md, messenger, now)
        except Busy:
            report.waiting[md.name] = "a renewal of this MD is still writing its staged set"
            continue
        except StoreError as e:
            report.failed[md.name] = str(e)
            _discard_staged(store, md, str(e))
            continue
        except OSError as e:
            report.failed[md.name] = f"{e.filename or md.name}: {e.strerror}"
            continue
        report.activated.append(md.name)
        if archived:
            report.archived[md.name] = archived
    if prepared and not report.activated:
        save_activation_state(store, waiting={**report.waiting, **report.blocked})
        return
    changed, served = sync_and_include(store, config)
    report.includes_changed |= changed
    save_activation_state(store, waiting={**report.waiting, **report.blocked}, served=served,
                          resolved=report.activated)


def _facts(store: Store, md: ManagedDomain, known: Mapping[str, MDFacts] | None) -> MDFacts:
    got = known.get(md.name) if known else None
    return got if got is not None else read_facts(store, md)


def rollback(store: Store, config: Config, report: Report, why: str) -> None:
    """Apache refused the new set: put the previous one back, keep the new one archived."""
    for name in report.activated:
        archived = report.archived.get(name)
        if archived:
            rejected = replace_domain_back(store, name, archived)
            log.error("%s: activation rolled back (%s); rejected set kept in %s",
                      name, why, rejected)
        job = jobs.load(store, STAGING, name)
        job.fail(20014, "activation failed", "apache-md:activation-failed",
                 f"Apache refused the new certificates and the previous ones were restored: {why}")
        jobs.save(store, STAGING, job)
    serving.write_includes(store, config)
    save_activation_state(store, error=why)


def _discard_staged(store: Store, md: ManagedDomain, why: str) -> None:
    """A staged set that fails verification is useless, but it is not ours to delete
    (an admin may have copied it there): move staging/<md> into archive/ and make the
    job start over (mod_md logs AH10069 and purges it)."""
    job = jobs.load(store, STAGING, md.name)
    slot = store.archive_slot(f"{md.name}.staging")
    try:
        rename(store.dir(STAGING, md.name), slot)
    except OSError as e:
        log.error("%s: cannot move the staged set aside: %s", md.name, e)
    log.error("%s: staged certificates rejected (moved to %s): %s", md.name, slot, why)
    job.fail(20014, "activation failed", None,
             f"staged certificates rejected (moved to {slot}): {why}")
    jobs.save(store, STAGING, job)


def prepare(store: Store, config: Config) -> tuple[dict[str, str], bool]:
    """Before anything plans, tests or reloads: broken live sets repaired (serving.repair),
    then every md.json kept in step with the config, every include and global.conf
    written, so Apache finds every file a vhost includes and loads nothing broken. Returns (repaired, whether an include changed)."""
    repaired = serving.repair_all(store, config)
    changed, served = sync_and_include(store, config)
    if repaired or served != load_activation_state(store).get("served"):
        save_activation_state(store, served=served, repaired=repaired)
    return repaired, changed


def activate_and_reload(store: Store, config: Config, reload_command: list[str] | None,
                        force: bool = False, prepared: bool = False,
                        before_reload: Callable[[], None] | None = None,
                        known: Mapping[str, MDFacts] | None = None) -> Report:
    """Repair, activate what is ready, test Apache's config, reload, and make sure Apache
    still runs; roll back (and start Apache again) when it does not.

    The one entry point of the worker and of `apache-md activate`. `prepared`: the
    caller ran prepare() just before (the worker, at the start of its cycle).
    `before_reload`: called once sets were moved live and before Apache serves them (the
    status snapshot, so md-status never lags behind what Apache serves)."""
    state.take_activation_request(store)
    messenger = Messenger(config.settings.message_cmd, None, str(store.base))
    report = Report()
    if not prepared:
        report.repaired, report.includes_changed = prepare(store, config)
    # prepared either way: with nothing activated, activate() need not go over every
    # md.json and include a second time (a worker's start at 10,000 MDs: 0.4 s)
    activate(store, config, messenger, report, force=force,
             precheck=lambda: ctl.configtest(config), prepared=True, known=known)
    for name, why in report.failed.items():
        log.error("%s: activation failed: %s", name, why)
    for name, why in {**report.waiting, **report.blocked}.items():
        log.info("%s: staged certificates wait: %s", name, why)
    if report.activated:
        log.info("activated: %s", ", ".join(report.activated))
    report.unloaded = still_unloaded(store, config)
    if not reload_command:
        if report.activated and ctl.running(config) is not None:
            # live in the store, not in Apache: md-status must not say it is served,
            # and the next `activate --reload` (or the worker) must reload
            save_activation_state(store, unloaded=report.activated)
            report.unloaded = sorted(set(report.unloaded) | set(report.activated))
        return report
    if not report.reload_needed:
        return report
    broken = serving.served_problems(store, config)
    if broken:
        # Not ours to repair (a vhost's own certificate): a reload would stop Apache.
        report.error = f"not reloading Apache, it would exit: {'; '.join(broken)}"
        log.error("%s", report.error)
        if report.activated:
            rollback(store, config, report, report.error)
        else:
            save_activation_state(store, error=report.error)
        return report
    report.error = ctl.configtest(config) if report.activated else None
    if report.error is None:
        if report.activated and before_reload is not None:
            before_reload()
        report.error = _reload(store, config, reload_command)
    if report.error:
        log.error("Apache refused the new configuration: %s", report.error)
        if report.activated:
            rollback(store, config, report, report.error)
        else:
            save_activation_state(store, error=report.error)
        _start_again(config, reload_command, report)
    else:
        save_activation_state(store, reloaded=now_utc())
    return report


def still_unloaded(store: Store, config: Config) -> list[str]:
    """The MDs whose live set went live with no reload after it, less those whose live
    certificate Apache now serves (an admin's own `systemctl reload`): asking Apache is
    the one way to know, and these are rarely more than a few."""
    unloaded = load_activation_state(store)["unloaded"]
    loaded = []
    for name in unloaded:
        md = config.md_by_name(name)
        if md is None or not md.domains:
            loaded.append(name)  # gone from the configuration: nothing to reload for
            continue
        live = {i.sha256 for i in credentials.infos(store, DOMAINS, md).values() if i}
        if live & ctl.served_sha256(config, md.domains[0]):
            loaded.append(name)
    if loaded:
        log.info("Apache serves the live certificates of %s (reloaded since they went live)",
                 ", ".join(sorted(loaded)))
        save_activation_state(store, loaded=loaded)
    return sorted(set(unloaded) - set(loaded))


def _reload(store: Store, config: Config, reload_command: list[str]) -> str | None:
    """Reload, then wait for Apache's new generation: a graceful reload returns 0 before
    mod_ssl loads the keys, and Apache exits when one fails (AH02564, AH00020)."""
    running = ctl.running(config)
    if running is not None:
        save_activation_state(store, pid_file=running.pid_file)  # for `status`
    error = ctl.reload(reload_command)
    if error is None and running is not None:
        error = ctl.confirm_reload(config, running)
    return error


def _start_again(config: Config, reload_command: list[str], report: Report) -> None:
    """After a failed reload and the rollback: Apache must not stay down."""
    if ctl.running(config) is not None:
        return
    start = ctl.start_command(reload_command)
    why = ctl.run(start, "starting Apache again") if start else \
        f"no start command known for {reload_command!r}: start Apache by hand"
    if why is None and not ctl.confirm_start(config):
        why = "Apache did not come up"
    report.error += "; Apache was started again" if why is None else \
        f"; Apache is not running: {why}"
    log.error("%s", report.error)


def request(store: Store, config: Config, prepared: bool = False,
            known: Mapping[str, MDFacts] | None = None) -> None:
    """For a worker that may not reload Apache: repair and write the includes (the store
    is its own), and ask the root side (apache-md-activate.path) to activate the MDs whose
    staged sets are ready."""
    if not prepared:
        prepare(store, config)
    now = now_utc()
    staged = [m.name for m in config.mds if ready(_facts(store, m, known), now) is None]
    # sets put live by an `activate` without a reload: the root side's reload serves them
    staged += sorted(set(still_unloaded(store, config)) - set(staged))
    if staged:
        state.request_activation(store, staged)
