"""plan.decide / next_wake over a real store with real certificates, clock controlled."""
from datetime import datetime, timedelta, timezone

import pytest

from apache_md.core.crypto import cert_info, load_chain
from apache_md.core.job import Job
from apache_md.core.jsonfmt import http_date
from apache_md.core.model import (
    KeySpec,
    Location,
    ManagedDomain,
    RenewMode,
    VHost,
)
from apache_md.core.plan import decide, next_wake
from apache_md.store import facts, watch
from apache_md.store.fs import DOMAINS, STAGING, Store
from tests.harness import pki


def judge(store, md, now, force=False):
    """plan.decide on what the store says about the MD now."""
    return decide(md, facts.read(store, md), now, force)


NOW = datetime.now(timezone.utc).replace(microsecond=0)
CA = "https://ca.test/dir"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    return s


def make_md(**kw) -> ManagedDomain:
    kw.setdefault("vhosts", [VHost(Location("x.conf", 1), server_name="a.test", ssl=True)])
    kw.setdefault("ca_urls", [CA])
    kw.setdefault("domains", ["a.test"])
    return ManagedDomain(name="a.test", location=Location("x.conf", 1), **kw)


def install(store, tmp_path, days_left=60, lifetime=90, group=DOMAINS, ca=CA, key="rsa"):
    """A CA-issued certificate for a.test in the store; returns its CertInfo."""
    d = tmp_path / f"c{days_left}{group}"
    files = pki.make_leaf(pki.make_ca(d, key_kind="ec"), d, ["a.test"], "a.test", key_kind=key,
                          not_before=NOW - timedelta(days=lifetime - days_left),
                          not_after=NOW + timedelta(days=days_left))
    name = "pubcert.pem" if key.startswith("rsa") else f"pubcert.{key}.pem"
    store.write_bytes(group, "a.test", name, files.cert.read_bytes())
    store.write_bytes(group, "a.test", name.replace("pubcert", "privkey"),
                      files.key.read_bytes(), mode=0o600)
    if group == DOMAINS:
        store.write_json(DOMAINS, "a.test", "md.json", {"name": "a.test", "ca": {"url": ca}})
    return cert_info(load_chain(files.cert.read_bytes())[0])


def save_job(store, job):
    store.write_json(STAGING, job.name, "job.json", job.to_json())


def test_valid_certificate_waits_for_its_window(store, tmp_path):
    install(store, tmp_path, days_left=60)
    d = judge(store, make_md(), NOW)
    assert not d.drive and d.reason == "certificate valid"
    assert d.renew_at == NOW + timedelta(days=60) - timedelta(seconds=int(90 * 86400 * 0.33))
    assert d.wake == d.renew_at


def test_inside_the_window_or_missing_it_drives(store, tmp_path):
    assert judge(store, make_md(), NOW).reason == "certificate(rsa) is missing"
    install(store, tmp_path, days_left=20)
    d = judge(store, make_md(), NOW)
    assert d.drive and "window" in d.reason
    assert judge(store, make_md(domains=["a.test", "b.test"]), NOW).drive  # name added


def test_backoff_in_the_job_holds_the_run_back(store, tmp_path):
    install(store, tmp_path, days_left=20)
    job = Job("a.test", errors=2, next_run=NOW + timedelta(minutes=5))
    save_job(store, job)
    d = judge(store, make_md(), NOW)
    assert not d.drive and d.reason.startswith("waiting to retry") and d.wake == job.next_run
    assert judge(store, make_md(), NOW + timedelta(minutes=5)).drive
    assert judge(store, make_md(), NOW, force=True).drive


def test_staged_set_waits_for_activation(store, tmp_path):
    install(store, tmp_path, days_left=20)
    install(store, tmp_path, days_left=90, group=STAGING)
    save_job(store, Job("a.test", finished=True, next_run=NOW + timedelta(hours=1)))
    d = judge(store, make_md(), NOW)
    assert d.staged_waiting and not d.drive and d.wake == NOW + timedelta(hours=1)
    # a past valid-from is no wake-up (activation may be another process's job)
    assert judge(store, make_md(), NOW + timedelta(hours=2)).wake is None


def test_ca_change_drives(store, tmp_path):
    install(store, tmp_path, days_left=60, ca="https://old.test/dir")
    d = judge(store, make_md(), NOW)
    assert d.drive and "no longer configured" in d.reason


def test_key_size_change_drives(store, tmp_path):
    install(store, tmp_path, days_left=60)
    assert not judge(store, make_md(pkey_specs=[KeySpec("RSA", 2048)]), NOW).drive
    assert "rsa4096" in judge(store, make_md(pkey_specs=[KeySpec("RSA", 4096)]), NOW).reason


def test_ari_moves_renewal_earlier_and_asks_for_wake_ups(store, tmp_path):
    info = install(store, tmp_path, days_left=60)
    entry = {"selected": http_date(NOW + timedelta(days=3)),
             "next-poll": http_date(NOW + timedelta(hours=6)),
             "explanation-url": "https://ca.test/why"}
    watch.save_ari(store, "a.test", {info.ari_id: entry, "stale.id": {"selected": http_date(NOW)}})
    d = judge(store, make_md(), NOW)
    assert not d.drive and d.ari_at == NOW + timedelta(days=3)
    assert d.wake == NOW + timedelta(hours=6)  # the next poll comes first
    d = judge(store, make_md(), NOW + timedelta(days=3))
    assert d.drive and d.reason == ("Renewal triggered by CA via ARI, explanation at "
                                    "https://ca.test/why")
    # MDRenewViaARI off: the CA's answer is ignored
    assert not judge(store, make_md(ari_renewals=False), NOW + timedelta(days=3)).drive


def test_ari_later_than_the_window_changes_nothing(store, tmp_path):
    info = install(store, tmp_path, days_left=20)  # inside the window already
    watch.save_ari(store, "a.test", {info.ari_id: {"selected": http_date(NOW + timedelta(days=9))}})
    d = judge(store, make_md(), NOW)
    assert d.drive and "window" in d.reason  # the safety net


def test_who_is_driven_and_who_is_warned(store, tmp_path):
    install(store, tmp_path, days_left=5)  # inside warn (9d) and renew windows
    assert judge(store, make_md(), NOW).drive
    unused = judge(store, make_md(vhosts=[]), NOW)
    assert not unused.drive and not unused.warn  # auto + no vhost: not watched
    always = judge(store, make_md(vhosts=[], renew_mode=RenewMode.ALWAYS), NOW)
    assert always.drive
    manual = judge(store, make_md(renew_mode=RenewMode.MANUAL), NOW)
    assert not manual.drive and manual.warn


def test_static_files_are_watched_and_only_renewed_with_always(store, tmp_path):
    files = pki.self_signed(tmp_path / "static", ["a.test"], not_before=NOW - timedelta(days=85),
                            not_after=NOW + timedelta(days=5))
    static = dict(cert_files=[str(files.cert)], key_files=[str(files.key)])
    d = judge(store, make_md(**static), NOW)
    assert not d.drive and d.warn
    d = judge(store, make_md(renew_mode=RenewMode.ALWAYS, **static), NOW)
    assert d.drive
    # once a managed set is active it takes over and is judged instead
    install(store, tmp_path, days_left=80)
    d = judge(store, make_md(renew_mode=RenewMode.ALWAYS, **static), NOW)
    assert not d.drive and not d.warn


def test_next_wake():
    md = make_md()
    from apache_md.core.plan import Decision
    check = NOW + timedelta(hours=12)
    assert next_wake([], NOW, check) == check
    waiting = Decision(md, False, "waiting", next_run=NOW + timedelta(minutes=1))
    assert next_wake([waiting], NOW, check) == NOW + timedelta(minutes=1)
    later = Decision(md, False, "valid", renew_at=NOW + timedelta(days=30))
    assert next_wake([later], NOW, check) == check
    due = Decision(md, True, "window")
    assert next_wake([due, later], NOW, check) == NOW  # backoff ran out during the cycle
    assert next_wake([due], NOW, check, held_back={"a.test"}) == check  # vetoed: next check


def test_a_window_covering_the_whole_lifetime_is_held_in_a_live_worker(store, tmp_path):
    """MDRenewWindow 30d on 6-day certificates: each one is due when issued. A live worker
    (its renewals go live by themselves) holds an MD it renewed until MDCheckInterval after
    that, rather than renewing again at once; a window shorter than the lifetime, or an MD
    it did not renew, is never held."""
    from apache_md.core.durations import Timeslice
    from apache_md.core.plan import hold_instant_renewals
    install(store, tmp_path, days_left=6, lifetime=6.01)  # began 15 minutes ago
    md = make_md(renew_window=Timeslice(seconds=30 * 86400))
    known = {"a.test": facts.read(store, md)}
    d = judge(store, md, NOW)
    assert d.drive and d.reason.startswith("renewal window reached")
    renewed = {"a.test": NOW - timedelta(minutes=10)}
    out, held = hold_instant_renewals([d], known, renewed, 12 * 3600, NOW)
    assert held == out and not out[0].drive and "whole lifetime" in out[0].reason
    assert out[0].renew_at == renewed["a.test"] + timedelta(hours=12)
    assert next_wake(out, NOW, NOW + timedelta(days=1)) == out[0].renew_at
    # past the interval, or not renewed by this worker: renewed (as mod_md would)
    assert hold_instant_renewals([d], known, renewed, 300, NOW)[0][0].drive
    assert hold_instant_renewals([d], known, {}, 12 * 3600, NOW)[0][0].drive
    # a window inside the lifetime that is reached: renewed at once
    short = make_md(renew_window=Timeslice(seconds=6.005 * 86400))
    d = judge(store, short, NOW)
    assert d.drive and hold_instant_renewals([d], {"a.test": facts.read(store, short)},
                                             renewed, 12 * 3600, NOW)[0][0].drive
