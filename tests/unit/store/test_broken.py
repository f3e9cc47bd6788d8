"""Broken store files: set aside, named once in the log, recorded for md-status."""
import json
import logging
import os

import pytest

from apache_md.core.job import Job
from apache_md.core.model import Config, GlobalSettings, Location, ManagedDomain, VHost
from apache_md.status import snapshot
from apache_md.store import broken, castats, jobs, staples, watch
from apache_md.store.fs import (
    DOMAINS,
    OCSP,
    STAGING,
    WATCH,
    CorruptFile,
    identity,
)


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("group", [STAGING, DOMAINS, WATCH, OCSP])
def test_a_corrupt_job_is_set_aside_once_and_the_job_starts_afresh(store, caplog, group):
    p = store.write_bytes(group, "a.test", "job.json", b"\x00garbage")
    assert jobs.find(store, group, "a.test") is None
    assert not p.exists() and (p.parent / "job.json.broken.1").read_bytes() == b"\x00garbage"
    assert jobs.load(store, group, "a.test") == Job("a.test")
    [line] = warnings(caplog)
    assert f"{group}/a.test/job.json: corrupt JSON" in line and "job.json.broken.1" in line
    [entry] = broken.recent(store)
    assert entry["file"] == f"{group}/a.test/job.json" and entry["md"] == "a.test"
    assert entry["action"].startswith("moved aside to job.json.broken.1; ")
    # a good job is read as always; a second corruption keeps the first copy
    jobs.save(store, group, Job("a.test", errors=2))
    assert jobs.find(store, group, "a.test").errors == 2
    store.write_bytes(group, "a.test", "job.json", b"[1]")
    assert jobs.find(store, group, "a.test") is None
    assert (p.parent / "job.json.broken.2").read_bytes() == b"[1]"
    assert [e["problem"] for e in broken.recent(store)] == ["not a JSON object",
                                                           "corrupt JSON (Expecting value: "
                                                           "line 1 column 1 (char 0))"]


def test_only_the_broken_version_is_set_aside(store):
    """A writer that replaced the file after it was read has written a good one."""
    store.write_bytes(STAGING, "a.test", "job.json", b"{")
    with pytest.raises(CorruptFile) as e:
        store.read_json(STAGING, "a.test", "job.json")
    jobs.save(store, STAGING, Job("a.test", errors=1))
    assert store.set_aside(e.value.path, e.value.seen) is None
    assert jobs.find(store, STAGING, "a.test").errors == 1
    assert not list(e.value.path.parent.glob("*.broken.*"))
    st = os.stat(e.value.path)
    assert store.set_aside(e.value.path, identity(st)).name == "job.json.broken.1"


def test_an_unreadable_file_stays_and_is_reported_once(store, caplog):
    store.dir(STAGING, "a.test").mkdir()
    os.mkdir(store.path(STAGING, "a.test", "job.json"))  # EISDIR: there, but not readable
    for _ in range(3):
        assert jobs.find(store, STAGING, "a.test") is None
    [line] = warnings(caplog)
    assert "staging/a.test/job.json: Is a directory; left in place" in line
    assert store.path(STAGING, "a.test", "job.json").is_dir()
    assert len(broken.recent(store)) == 1
    broken._reported.clear()  # another process: the record already has it
    jobs.find(store, STAGING, "a.test")
    assert len(broken.recent(store)) == 1


def test_other_store_files_are_set_aside_too(store):
    store.write_bytes(WATCH, "a.test", "ari.json", b"{")
    assert watch.load_ari(store, "a.test") == {}
    store.write_bytes(OCSP, "a.test", "ocsp-" + "0" * 40 + ".json", b"nope")
    assert staples.load(store, "a.test", "0" * 40) == (None, None)
    castats.record(store, "https://ca.test/dir", renewed=True)
    store.write_bytes(*castats_file(), b"[")
    assert castats.load(store) == {}
    files = sorted(e["file"] for e in broken.recent(store))
    assert files == ["ocsp/a.test/ocsp-" + "0" * 40 + ".json", "status/counters/ca-stats.json",
                     "watch/a.test/ari.json"]
    assert all(e["action"].startswith("moved aside to ") for e in broken.recent(store))


def test_md_status_shows_broken_files_of_each_md_and_of_the_store(store):
    md = ManagedDomain(name="a.test", domains=["a.test"], location=Location("x.conf", 1),
                       ca_urls=["https://ca.test/dir"])
    md.vhosts = [VHost(server_name="a.test", ssl=True, location=Location("x.conf", 2))]
    config = Config(main_file="x.conf", server_root="/",
                    settings=GlobalSettings(store_dir=str(store.base)), mds=[md])
    store.write_bytes(STAGING, "a.test", "job.json", b"{")
    store.write_bytes(*castats_file(), b"{")
    snapshot.write_snapshot(store, config)
    snap = snapshot.published(store)
    [mine] = snap["mds"]["a.test"]["broken-files"]
    assert mine["file"] == "staging/a.test/job.json" and "md" not in mine
    assert [b["file"] for b in snap["list"]["broken-files"]] == ["status/counters/ca-stats.json"]
    assert "broken-files" in json.loads(snap["bodies"]["md:a.test"])
    assert "staging/a.test/job.json" in snap["bodies"]["html:a.test"]


def castats_file():
    return castats.GROUP, castats.NAME, castats.FILE
