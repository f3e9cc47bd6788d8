import json
import os
import stat

import pytest

from apache_md.core import crypto
from apache_md.core.job import Job
from apache_md.core.model import KeySpec
from apache_md.store.fs import DOMAINS, STAGING, Store, StoreError, StoreKeyError


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_init_layout_and_store_key(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    assert mode(s.base / "domains") == 0o700
    assert mode(s.base / "challenges") == 0o755
    doc = json.loads((s.base / "md_store.json").read_text())
    assert doc["store"]["version"] == 3.0 and len(doc["key"]) == 64
    assert mode(s.base / "md_store.json") == 0o600
    assert len(Store(s.base).key) == 48 and Store(s.base).key == s.key


def test_atomic_writes_with_modes(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    p = s.write_bytes(DOMAINS, "a.test", "privkey.pem", b"k", mode=0o600)
    assert mode(p) == 0o600 and mode(p.parent) == 0o700
    p = s.write_json(STAGING, "a.test", "job.json", {"x": 1})
    assert p.read_text() == '{\n  "x": 1\n}'  # mod_md: 2-space indent, no newline
    assert not [f for f in p.parent.iterdir() if f.name.endswith(".tmp")]


def test_corrupt_json_names_the_file(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    s.write_bytes(STAGING, "a.test", "job.json", b"{not json")
    with pytest.raises(StoreError, match="staging/a.test/job.json"):
        s.read_json(STAGING, "a.test", "job.json")


@pytest.mark.parametrize("content, problem", [
    ('{"store": {"version": 3.0}, "key": "shorty"}', "the key has 4 bytes, not 48"),
    ("", "corrupt: no valid 'key'"), ("[]", "corrupt: no valid 'key'"),
    ('{"store": {"version": 4.0}, "key": "' + "A" * 64 + '"}', "version 4.0 is newer"),
])
def test_an_unusable_store_file_is_refused_and_never_replaced(tmp_path, content, problem):
    p = tmp_path / "md_store.json"
    p.write_text(content)
    with pytest.raises(StoreKeyError, match=problem) as e:
        Store(tmp_path).init()
    assert str(e.value).startswith(f"{p}: ") and e.value.path == p
    assert p.read_text() == content


def test_a_store_file_changed_under_a_running_process_is_noticed(tmp_path):
    s = Store(tmp_path)
    s.init()
    s.check_key()
    doc = json.loads((tmp_path / "md_store.json").read_text())
    os.utime(tmp_path / "md_store.json", ns=(1, 1))  # touched: same key, fine
    s.check_key()
    doc["key"] = "A" * 64
    (tmp_path / "md_store.json").write_text(json.dumps(doc))
    with pytest.raises(StoreKeyError, match="replaced by a file with another key"):
        s.check_key()
    (tmp_path / "md_store.json").unlink()
    with pytest.raises(StoreKeyError, match="removed while apache-md was using it"):
        s.check_key()


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: Store(tmp_path).key, range(32)))
    assert len(keys) == 1 and not list(tmp_path.glob("*.new"))


def test_traversal_names_refused(tmp_path):
    with pytest.raises(StoreError):
        Store(tmp_path).path(DOMAINS, "..", "x")


def test_encrypted_keys_roundtrip_with_store_key(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    key = crypto.generate_key(KeySpec("EC", curve="P-256"))
    pem = crypto.key_to_pem(key, s.key)
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert crypto.key_matches_cert(crypto.key_from_pem(pem, s.key), crypto.load_chain(
        crypto.self_signed(key, ["a.test"]))[0])


def test_job_roundtrip_and_log_cap():
    j = Job("a.test")
    j.start_run()
    for i in range(200):
        j.add_log("progress", detail=str(i))
    j.fail(20014, "general", "urn:ietf:params:acme:error:malformed", "bad name")
    j2 = Job.from_json("a.test", json.loads(json.dumps(j.to_json())))
    assert j2.errors == 1 and j2.last["problem"].endswith("malformed")
    assert len(j2.log) == 128 and j2.log[0]["type"] == "renewal-error"
    assert Job.from_json("a.test", {"errors": 2.0, "finished": "yes"}).errors == 0


def test_keyspec_file_names():
    assert KeySpec("Default").file_name("privkey") == "privkey.pem"
    assert KeySpec("RSA", 4096).file_name("pubcert") == "pubcert.pem"
    assert KeySpec("EC", curve="P-256").file_name("pubcert") == "pubcert.p-256.pem"


def test_writes_and_new_directories_are_durable(tmp_path, monkeypatch):
    """A power loss after a write must not lose it: the file, its directory entry and
    each new directory's entry in its parent are synced (fsync of the directory)."""
    s = Store(tmp_path / "md")
    s.init()
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    p = s.write_bytes(STAGING, "a.test", "pubcert.pem", b"cert")
    staging = str(s.base / "staging")
    # the new directory's entry in staging/, the temp file's data, then the renamed entry
    data = next(i for i, f in enumerate(synced) if f.startswith(f"{p.parent}/pubcert.pem."))
    assert synced.index(staging) < data < synced.index(str(p.parent))
    synced.clear()
    from apache_md.store.fs import rename
    rename(p, s.base / "tmp" / "moved.pem")
    assert set(synced) == {str(s.base / "tmp"), str(p.parent)}


def test_a_batch_shows_its_files_only_once_they_are_committed(tmp_path, monkeypatch):
    """Many files, one sync (the status snapshot's pieces): none is in place before it
    is durable, each directory's files come with its commit, and after an error no
    temporary file is left."""
    from apache_md.store.fs import Batch
    syncs = []
    monkeypatch.setattr(os, "sync", lambda: syncs.append(1))
    monkeypatch.setattr(Batch, "SYNC_ALL", 2)
    batch = Batch()
    batch.add(tmp_path / "a" / "one.json", b"1", 0o644)
    batch.add(tmp_path / "b" / "two.json", b"2", 0o600)
    assert not (tmp_path / "a" / "one.json").exists()
    assert batch.commit(tmp_path / "a") and syncs == [1]
    assert (tmp_path / "a" / "one.json").read_bytes() == b"1"
    assert not (tmp_path / "b" / "two.json").exists()
    assert batch.commit(tmp_path / "b") and syncs == [1]  # synced with the first
    assert oct((tmp_path / "b" / "two.json").stat().st_mode & 0o777) == "0o600"
    assert not batch.commit(tmp_path / "b")
    batch.add(tmp_path / "a" / "three.json", b"3", 0o644)
    batch.discard()
    assert sorted(os.listdir(tmp_path / "a")) == ["one.json"]
    batch.add(tmp_path / "a" / "four.json", b"4", 0o644)  # one file: its own fsync
    assert batch.commit(tmp_path / "a") and syncs == [1]
    assert (tmp_path / "a" / "four.json").read_bytes() == b"4"


def test_a_batch_commits_all_its_files_durable_before_and_after_the_renames(tmp_path,
                                                                            monkeypatch):
    """commit_all (activation's md.json, fallback pairs, includes): every file's data is
    durable before any is renamed into place (a power cut leaves old or complete files),
    the renames and new directories' entries are durable when it returns, the new
    directories have their mode, and what looks at the files runs after."""
    from apache_md.store.fs import Batch
    events = []
    monkeypatch.setattr(os, "sync", lambda: events.append("sync"))
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(
        "fsync " + os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {b}"),
                                                     real_replace(a, b)))
    s = Store(tmp_path / "md")
    s.init()
    events.clear()
    batch = Batch()
    names = [f"d{i}.test" for i in range(20)]
    for n in names:
        s.write_json(DOMAINS, n, "md.json", {"name": n}, batch=batch)
        s.write_bytes(DOMAINS, n, "fallback-privkey.pem", b"key", mode=0o600, batch=batch)
    batch.then(lambda: events.append("then"))
    assert not (s.base / DOMAINS / "d0.test" / "md.json").exists()
    assert events == []  # nothing synced one by one while adding
    assert batch.commit_all()
    first = next(i for i, e in enumerate(events) if e.startswith("replace"))
    assert events[:first] == ["sync"]  # 40 files' data: one sync, before any rename
    assert all(e.startswith("replace") for e in events[first:first + 40])
    assert events[first + 40:] == ["sync", "then"]  # the renames, 21 directories: one sync
    for n in names:
        d = s.base / DOMAINS / n
        assert json.loads((d / "md.json").read_text()) == {"name": n}
        assert oct(d.stat().st_mode & 0o777) == "0o700"  # domains/' mode
        assert oct((d / "fallback-privkey.pem").stat().st_mode & 0o777) == "0o600"
        assert sorted(os.listdir(d)) == ["fallback-privkey.pem", "md.json"]
    assert not batch.commit_all()
    # a few files: each synced by itself, then each directory, the new one's parent too
    events.clear()
    s.write_bytes(DOMAINS, "new.test", "md.json", b"{}", batch=batch)
    batch.commit_all()
    md_dir = str(s.base / DOMAINS / "new.test")
    assert events[0].startswith(f"fsync {md_dir}/md.json.")
    assert events[1:] == [f"replace {md_dir}/md.json", f"fsync {s.base / DOMAINS}",
                          f"fsync {md_dir}"]


def test_an_md_json_whose_ca_has_other_types_reads_as_no_ca(store):
    """md.json edited by hand ("ca": 5, "account": 7): no CA, no account, no traceback in
    the sync that writes it again (activation.sync_md_json)."""
    from apache_md.apache.activation import sync_md_json
    from apache_md.store import credentials
    from tests.unit.sample import make_md
    md = make_md("typed.test")
    for ca in (5, [], {"url": 5, "account": 7}, {"url": [], "account": {}}):
        store.write_json("domains", md.name, "md.json", {"name": md.name, "ca": ca})
        assert credentials.stored_ca(store, md) == {}
        sync_md_json(store, md)
        assert credentials.stored_ca(store, md) == {}


def test_an_activation_record_with_values_of_other_types_reads_as_empty(store):
    """status/activation/activation.json edited by hand: check, status and the snapshot
    take its values as absent rather than stop at an AttributeError."""
    from apache_md.store.state import ACTIVATION_STATE, load_activation_state
    for doc in ([1], "x", {"waiting": "x", "served": [1], "repaired": {"a.test": "x"},
                          "error": 5, "last-reload": 7, "pid-file": {}},
                {"served": {"a.test": "live", "b.test": 3}}):
        store.write_json(*ACTIVATION_STATE, doc)
        got = load_activation_state(store)
        assert got["waiting"] == {} and got["repaired"] == {}
        assert got["error"] is None and got["last-reload"] is None and got["pid-file"] is None
        assert got["served"] == ({"a.test": "live"} if "b.test" in str(doc) else {})
