"""The snapshot on disk (issue 15): an index and one piece file per MD, written only
when what the MD says changed; the handlers serve a change at the first request
after the write, and survive an index replaced while they read it."""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone

from apache_md.core.jsonfmt import http_date
from apache_md.store import jobs, state
from apache_md.store.fs import DOMAINS, STAGING, STATUS_ONE
from apache_md.wsgi import app
from apache_md.status import snapshot
from tests.unit.sample import env, put_cert, sample_config


def pieces_dir(store):
    return store.path("status", "snapshot", snapshot.PIECES)


def files(store) -> dict[str, tuple]:
    """Piece file -> (inode, mtime): which were written again."""
    return {e.name: (e.inode(), e.stat().st_mtime_ns) for e in os.scandir(pieces_dir(store))}


def index(store) -> dict:
    return json.loads(store.path(*snapshot.SNAPSHOT).read_bytes())


def fail_again(store, name: str, detail: str) -> None:
    job = jobs.load(store, STAGING, name)
    job.fail(20014, "General error", None, detail)
    jobs.save(store, STAGING, job)


def at_the_start_of_a_second() -> None:
    """An MD without a certificate is due now, and its piece shows that time to the
    second (renew-at): writes that must find nothing changed run within one second."""
    time.sleep(1 - time.time() % 1 + 0.01)


def test_a_cycle_writes_only_the_pieces_of_mds_that_changed(store):
    config = sample_config(store)
    renderer = snapshot.Renderer()
    at_the_start_of_a_second()
    snapshot.write_snapshot(store, config, renderer)
    first = files(store)
    named = dict(index(store)["pieces"])
    assert sorted(named) == sorted(m.name for m in config.mds)
    assert set(first) == set(named.values())  # one file per MD, nothing else

    snapshot.write_snapshot(store, config, renderer)
    assert files(store) == first  # nothing changed: no piece written again

    fail_again(store, "failing.test", "the CA said no again")
    snapshot.write_snapshot(store, config, renderer)
    now = dict(index(store)["pieces"])
    assert now["failing.test"] != named["failing.test"]
    after = files(store)
    # the others' files are the very same; the changed MD's old file is gone
    assert {f: after[f] for f in after if f != now["failing.test"]} == \
        {f: first[f] for f in first if f != named["failing.test"]}
    assert named["failing.test"] not in after
    # a writer without a render cache (`apache-md activate`) finds the same files there
    snapshot.write_snapshot(store, config)
    assert files(store) == after


def test_the_handler_serves_a_change_at_the_first_request_after_the_write(store,
                                                                           monkeypatch):
    """The writer's counter tells: the handler looks at the index for no other reason."""
    monkeypatch.setattr(app, "RECHECK", 3600.0)
    config = sample_config(store)
    snapshot.write_snapshot(store, config, snapshot.Renderer())
    handlers = app.Handlers()

    def get(path: str, accept: str = "*/*") -> str:
        out = {}
        body = b"".join(handlers(env(store, path, accept=accept),
                                 lambda st, h: out.update(status=st)))
        assert out["status"].startswith("200"), out
        return body.decode()
    assert "the CA said no again" not in get("/md-status/failing.test")
    before = get("/md-status")
    fail_again(store, "failing.test", "the CA said no again")
    snapshot.write_snapshot(store, config)
    assert json.loads(get("/md-status/failing.test"))["renewal"]["last"]["detail"] == \
        "the CA said no again"
    listed = {m["name"]: m for m in json.loads(get("/md-status"))["managed-domains"]}
    assert listed["failing.test"]["renewal"]["errors"] == 2
    assert get("/md-status") != before
    assert "the CA said no again" in get("/md-status", accept="text/html")
    assert 'apache_md_renewal_errors{md="failing.test"} 2' in get("/md-status/metrics")


def test_a_handler_reading_a_replaced_index_reads_it_again(store, monkeypatch):
    """A request that took the index just before a writer replaced it and removed the
    piece files it no longer names: the handler reads the new index, no error."""
    config = sample_config(store)
    snapshot.write_snapshot(store, config)
    handlers = app.Handlers()
    monkeypatch.setattr(app, "RECHECK", 3600.0)

    def get(path: str) -> tuple[str, bytes]:
        out = {}
        body = b"".join(handlers(env(store, path), lambda st, h: out.update(status=st)))
        return out["status"], body
    assert get("/md-status/active.test")[0].startswith("200")  # the index is loaded
    fail_again(store, "failing.test", "the CA said no again")
    # the handler looks at the new index only once the writer's counter moved: a request
    # that started in between holds the old one, whose piece of failing.test is gone now
    gen = store.path("status", "snapshot", snapshot.GENERATION)
    before = gen.read_bytes()
    snapshot.write_snapshot(store, config)
    after = gen.read_bytes()
    with open(gen, "r+b") as f:
        f.write(before)
    status, body = get("/md-status/failing.test")
    assert status.startswith("200")
    assert json.loads(body)["renewal"]["last"]["detail"] == "the CA said no again"
    with open(gen, "r+b") as f:
        f.write(after)


def test_an_index_of_another_format_is_no_snapshot(store):
    """What a version before the split left (one file with every body): a clear 503
    until the new worker writes its own, never a traceback."""
    store.write_bytes(*snapshot.SNAPSHOT, json.dumps({"bodies": {"list": "{}"}}).encode())
    out = {}
    body = b"".join(app.Handlers()(env(store, "/md-status"), lambda st, h: out.update(s=st)))
    assert out["s"].startswith("503") and b"no status snapshot yet" in body


def test_the_list_says_how_many_renewals_are_done(store):
    """A batch under way: the page and the metrics count the finished ones (the list
    JSON stays mod_md's)."""
    config = sample_config(store)  # staged.test finished, failing.test failing
    snapshot.write_snapshot(store, config)
    snap = snapshot.published(store)
    assert list(snap["list"]) == ["version", "managed-domains"]
    assert "renewals: 1 of 2 done, 1 failing" in snap["bodies"]["html"]
    for line in ('apache_md_renewals{state="finished"} 1', 'apache_md_renewals{state="failed"} 1',
                 'apache_md_renewals{state="running"} 0'):
        assert line + "\n" in snap["bodies"]["metrics"]
    # activated, or given up: no renewal left, no count
    store.remove(STAGING, "failing.test", "job.json")
    store.remove(STAGING, "staged.test", "job.json")
    snapshot.write_snapshot(store, config)
    snap = snapshot.published(store)
    assert "renewals:" not in snap["bodies"]["html"]
    assert 'apache_md_renewals{state="finished"} 0\n' in snap["bodies"]["metrics"]


def test_a_counter_file_truncated_by_hand_costs_nothing_but_a_look_at_the_index(store,
                                                                                 monkeypatch):
    """The handler never maps the counter (a mapped file that shrinks kills its reader
    with SIGBUS): truncated, it only sends requests to the index."""
    monkeypatch.setattr(app, "RECHECK", 3600.0)
    config = sample_config(store)
    snapshot.write_snapshot(store, config, snapshot.Renderer())
    handlers = app.Handlers()

    def get(path: str) -> str:
        out = {}
        body = b"".join(handlers(env(store, path), lambda st, h: out.update(status=st)))
        assert out["status"].startswith("200"), out
        return body.decode()
    get("/md-status/failing.test")
    counter = store.path("status", "snapshot", snapshot.GENERATION)
    with open(counter, "r+b") as f:
        f.truncate(0)
    assert "the CA said no again" not in get("/md-status/failing.test")
    fail_again(store, "failing.test", "the CA said no again")
    snapshot.write_snapshot(store, config)  # bumps the counter in place again
    assert "the CA said no again" in get("/md-status/failing.test")


def one_file(store, name: str):
    return store.path(*STATUS_ONE) / f"{name}.json"


def ones(store) -> dict[str, tuple]:
    d = store.path(*STATUS_ONE)
    return {e.name: (e.inode(), e.stat().st_mtime_ns) for e in os.scandir(d)}


def test_each_md_has_its_md_status_json_alone_written_only_when_it_changes(store):
    """status/snapshot/one/<name>.json is what /md-status/<name> answers, byte for byte:
    Apache serves it itself (apache/includes.py)."""
    config = sample_config(store)
    renderer = snapshot.Renderer()
    # one clock for every write: the real one, read at each, sometimes crossed the moment
    # another MD's page changes by the clock alone (a validity mark), and failed the test
    now = datetime.now(timezone.utc)
    snapshot.write_snapshot(store, config, renderer, now=now)
    first = ones(store)
    assert sorted(first) == sorted(f"{m.name}.json" for m in config.mds)
    view = app.Snapshot(str(store.base)).current()
    for m in config.mds:
        body = one_file(store, m.name).read_bytes()
        assert body == view.body(f"md:{m.name}") and json.loads(body)["name"] == m.name
    fail_again(store, "failing.test", "the CA said no again")
    snapshot.write_snapshot(store, config, renderer, now=now)
    after = ones(store)
    assert after["failing.test.json"] != first["failing.test.json"]
    assert {k: v for k, v in after.items() if k != "failing.test.json"} == \
        {k: v for k, v in first.items() if k != "failing.test.json"}
    changed = json.loads(one_file(store, "failing.test").read_bytes())
    assert changed["renewal"]["last"]["detail"] == "the CA said no again"
    snapshot.write_snapshot(store, config, now=now)  # a fresh writer rewrites nothing unchanged
    assert ones(store) == after
    gone = config.mds.pop()  # an MD leaves the configuration: its file goes
    snapshot.write_snapshot(store, config, renderer, now=now)
    assert f"{gone.name}.json" not in ones(store) and len(ones(store)) == len(config.mds)


def rendered(monkeypatch) -> list[str]:
    """The MDs whose md-status object is made (snapshot.build's render of an MD)."""
    names: list[str] = []
    real = snapshot.md_status
    monkeypatch.setattr(snapshot, "md_status",
                        lambda store, md, *a, **kw: names.append(md.name) or
                        real(store, md, *a, **kw))
    return names


def test_a_new_writer_takes_the_pieces_of_unchanged_mds_from_the_last_one(store, monkeypatch):
    """Issue 15: a restarted worker (or `apache-md activate`) finds in made.json what the
    last writer made, and makes again only MDs whose inputs changed (at 10,000 MDs every
    MD made again was 18-20 s of a restart's first cycle)."""
    config = sample_config(store)
    now = datetime.now(timezone.utc)
    snapshot.write_snapshot(store, config, snapshot.Renderer(), now=now)
    # every body now: a published snapshot reads an MD's piece file when asked for it
    before, one_before = files(store), ones(store)
    published = dict(snapshot.published(store)["bodies"])
    made = rendered(monkeypatch)
    snapshot.write_snapshot(store, config, snapshot.Renderer(), now=now)
    # new.test and failing.test have no certificate: their renew-at is "now" (mod_md)
    assert sorted(made) == ["failing.test", "new.test"]
    assert files(store) == before and ones(store) == one_before
    assert snapshot.published(store)["bodies"] == published
    # a changed file: that MD is made again, and says what a writer from nothing says
    put_cert(store, DOMAINS, config.md_by_name("active.test"))
    made.clear()
    snapshot.write_snapshot(store, config, snapshot.Renderer(), now=now)
    assert sorted(made) == ["active.test", "failing.test", "new.test"]
    after = snapshot.published(store)["bodies"]
    assert after["md:active.test"] != published["md:active.test"]
    store.remove(*snapshot.MADE)
    assert snapshot.snapshot(store, config, now)["bodies"] == after
    # another apache-md's made.json (another version, an edited module) is not believed
    snapshot.write_snapshot(store, config, snapshot.Renderer(), now=now)
    monkeypatch.setattr(snapshot, "_code", lambda: "another")
    made.clear()
    snapshot.write_snapshot(store, config, snapshot.Renderer(), now=now)
    assert len(made) == len(config.mds)
    # nor one that does not parse, and the writer says nothing of it
    store.path(*snapshot.MADE).write_text("{not json")
    snapshot.write_snapshot(store, config, snapshot.Renderer(), now=now)
    assert snapshot.published(store)["bodies"] == after


def test_a_stopping_worker_leaves_the_pieces_and_says_so_in_the_index(store, monkeypatch):
    """Whether a worker runs is the index's (the list page, the metrics): the MDs keep the
    next-check it had planned, so a stop and the next start rewrite no piece, except a
    staged MD's, whose activation detail says who activates it."""
    config = sample_config(store)
    now = datetime.now(timezone.utc)
    cycle = http_date(now + timedelta(minutes=1))
    state.write_worker_info(store, now + timedelta(minutes=1))
    renderer = snapshot.Renderer()
    snapshot.write_snapshot(store, config, renderer, now=now)
    running, pieces = snapshot.published(store), dict(index(store)["pieces"])
    assert running["mds"]["new.test"]["next-check"] == cycle
    assert 'apache_md_worker_up 1' in running["bodies"]["metrics"]
    state.clear_worker_info(store)
    snapshot.write_snapshot(store, config, renderer, now=now, persist=True)
    stopped = snapshot.published(store)
    assert {n: f for n, f in index(store)["pieces"] if f != pieces[n]} == \
        {"staged.test": dict(index(store)["pieces"])["staged.test"]}
    assert "no worker is running" in stopped["mds"]["staged.test"]["activation"]["detail"]
    assert stopped["mds"]["new.test"]["next-check"] == cycle
    assert 'apache_md_worker_up 0' in stopped["bodies"]["metrics"]
    assert "no apache-md worker is running" in stopped["bodies"]["html"]
    # `apache-md activate` while none runs: the same, from made.json
    made = rendered(monkeypatch)
    snapshot.write_snapshot(store, config, snapshot.Renderer(), now=now)
    assert sorted(made) == ["failing.test", "new.test"]
    assert snapshot.published(store)["bodies"] == stopped["bodies"]
