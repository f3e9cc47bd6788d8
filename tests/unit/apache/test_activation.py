"""apache/activation and apache/serving: the move of a staged set into domains/ and back,
what Apache will load (verified), repairs of broken live sets, the generated includes."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from apache_md.apache import ctl, includes, serving
from apache_md.apache.activation import ready, replace_domain, replace_domain_back
from apache_md.core import crypto
from apache_md.core.facts import MDFacts
from apache_md.core.job import Job
from apache_md.core.model import KeySpec, Location, ManagedDomain, VHost
from apache_md.core.plan import decide
from apache_md.store.fs import ARCHIVE, DOMAINS, Store
from tests.harness import pki

NOW = datetime.now(timezone.utc)


def test_replace_domain_archives(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    s.write_bytes(DOMAINS, "a.test", "pubcert.pem", b"old")
    s.write_bytes("tmp", "a.test", "pubcert.pem", b"new")
    archived = replace_domain(s, "a.test")
    assert archived.endswith("archive/a.test.1")
    assert s.read_bytes(DOMAINS, "a.test", "pubcert.pem") == b"new"
    s.write_bytes("tmp", "a.test", "pubcert.pem", b"newer")
    assert replace_domain(s, "a.test").endswith("a.test.2")
    rejected = replace_domain_back(s, "a.test", archived.replace(".1", ".2"))
    assert rejected.endswith("archive/a.test.rejected.1")
    assert s.read_bytes(DOMAINS, "a.test", "pubcert.pem") == b"new"


def test_replace_domain_never_leaves_the_md_without_a_set(tmp_path, monkeypatch):
    """status and md-status read domains/<md> while the worker activates: at every rename
    the live directory is there (the swap is one renameat2 exchange)."""
    from apache_md.apache import activation
    s = Store(tmp_path / "md")
    s.init()
    s.write_bytes(DOMAINS, "a.test", "pubcert.pem", b"old")
    live = s.dir(DOMAINS, "a.test")
    real = activation.rename

    def watched(src, dst):
        assert (live / "pubcert.pem").exists(), f"no live set while renaming {src} to {dst}"
        real(src, dst)
    monkeypatch.setattr(activation, "rename", watched)
    for n, new in enumerate((b"new", b"newer")):
        s.write_bytes("tmp", "a.test", "pubcert.pem", new)
        archived = replace_domain(s, "a.test")
        assert s.read_bytes(DOMAINS, "a.test", "pubcert.pem") == new
    replace_domain_back(s, "a.test", archived)
    assert s.read_bytes(DOMAINS, "a.test", "pubcert.pem") == b"new"
    assert not s.dir("tmp", "a.test").exists()


# -- what Apache will load -------------------------------------------------------------------



RSA = KeySpec("RSA", 2048)


def pair(names=("a.test",)):
    key = crypto.generate_key(RSA)
    return crypto.key_to_pem(key), crypto.self_signed(key, list(names))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    expired = pki.self_signed(tmp_path_factory.mktemp("old"), ["a.test"],
                              not_before=NOW - timedelta(days=30),
                              not_after=NOW - timedelta(days=1))
    return [pair(), pair(), (expired.key.read_bytes(), expired.cert.read_bytes())]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    return s


def md(name="a.test") -> ManagedDomain:
    return ManagedDomain(name=name, domains=[name], location=Location("x.conf", 1),
                         vhosts=[VHost(Location("x.conf", 2), server_name=name, ssl=True)])


def put_live(store, key, cert, group=DOMAINS, name="a.test"):
    store.write_bytes(group, name, "privkey.pem", key, mode=0o600)
    store.write_bytes(group, name, "pubcert.pem", cert)


def test_problem_names_the_file_and_follows_changes(tmp_path, pairs):
    (key, cert), (other_key, _), _ = pairs
    c, k = tmp_path / "c.pem", tmp_path / "k.pem"
    c.write_bytes(cert)
    k.write_bytes(key)
    assert serving.problem(str(c), str(k)) is None
    k.write_bytes(key[:200])
    assert serving.problem(str(c), str(k)).startswith(f"{k}: not a usable private key")
    k.write_bytes(other_key)
    assert "does not match the certificate" in serving.problem(str(c), str(k))
    c.write_bytes(b"")
    assert serving.problem(str(c), str(k)) == f"{c}: no certificate in it"
    c.write_bytes(cert + key)  # one file, as a vhost's SSLCertificateFile may be
    assert serving.problem(str(c)) is None
    assert serving.problem(str(tmp_path / "none.pem")) == f"{tmp_path / 'none.pem'}: missing"


def test_a_broken_live_set_is_restored_from_the_archive(store, pairs):
    (key, cert), (new_key, new_cert), (old_key, old_cert) = pairs
    m = md()
    put_live(store, old_key, old_cert, ARCHIVE, "a.test.2")  # expired: not taken
    put_live(store, key, cert, ARCHIVE, "a.test.1")
    put_live(store, new_key[:100], new_cert)
    done = serving.repair(store, m)
    assert "privkey.pem: not a usable private key" in done
    assert "restored the set of" in done and done.endswith("a.test.1")
    assert store.read_bytes(DOMAINS, "a.test", "pubcert.pem") == cert
    assert store.read_bytes(ARCHIVE, "a.test.broken.1", "privkey.pem") == new_key[:100]
    assert serving.repair(store, m) is None
    assert serving.cert_pairs(store, m)[1] is False


def test_a_broken_live_set_without_archive_gives_the_fallback(store, pairs):
    (key, cert), _, _ = pairs
    m = md()
    put_live(store, key, b"")
    assert "pubcert.pem: no certificate in it" in serving.repair(store, m)
    assert not store.exists(DOMAINS, "a.test", "pubcert.pem")
    files, fallback = serving.cert_pairs(store, m)
    assert fallback and files[0][0].endswith("fallback-pubcert.pem")


def test_an_rsa_fallback_is_rsa_2048_whatever_the_md_s_size(store, monkeypatch):
    """An RSA 16384 key takes a minute or more (`apache-md check` hung under load)."""
    asked = []
    real = crypto.generate_key
    monkeypatch.setattr(serving, "_fallback_keys", {})
    # what is asked for is noted, an RSA 2048 key made (so that without the cap this fails
    # in a second rather than after a minute)
    monkeypatch.setattr(crypto, "generate_key",
                        lambda spec: asked.append(spec) or real(KeySpec("RSA", 2048)
                                                                if spec.kind != "EC" else spec))
    m = md()
    m.pkey_specs = [KeySpec("RSA", 16384), KeySpec("EC", curve="secp384r1")]
    for spec in m.keyspecs:
        serving.ensure_fallback(store, m, spec)
    assert [(s.kind, s.rsa_bits if s.kind != "EC" else s.curve) for s in asked] == \
        [("RSA", 2048), ("EC", "secp384r1")]


def test_static_files_that_do_not_load_give_the_fallback(store, tmp_path, pairs):
    (key, cert), (other_key, _), _ = pairs
    c, k = tmp_path / "static.pem", tmp_path / "static.key"
    c.write_bytes(cert)
    k.write_bytes(key)
    m = md()
    m.cert_files, m.key_files = [str(c)], [str(k)]
    assert serving.cert_pairs(store, m) == ([(str(c), str(k))], False)
    k.write_bytes(other_key)
    files, fallback = serving.cert_pairs(store, m)
    assert fallback and files[0][0].endswith("fallback-pubcert.pem")
    assert "does not match" in serving.static_problem(m)


def test_includes_are_optional_and_global_conf_carries_the_fallback(store):
    assert includes.include_line("/s", "a.test") == "IncludeOptional /s/apache/a.test.conf"
    changed, served = serving.write_includes(store, None)
    glob = (store.base / "apache" / "global.conf").read_text()
    assert f'SSLCertificateFile "{store.base}/apache/fallback.pem"' in glob
    assert f"%{{SSL_SERVER_I_DN_CN}} == '{crypto.FALLBACK_CN}'" in glob
    assert "RedirectMatch 503" in glob
    assert os.stat(store.base / "apache" / "fallback.pem").st_mode & 0o777 == 0o600
    assert serving.problem(str(store.base / "apache" / "fallback.pem")) is None
    inc = includes.md_include(md(), [("c", "k")], True)
    assert "RedirectMatch" not in inc  # global.conf answers 503 for every fallback


def test_start_command_follows_the_reload_command():
    assert ctl.start_command(["systemctl", "reload", "apache2"]) == \
        ["systemctl", "start", "apache2"]
    assert ctl.start_command(["apache2ctl", "graceful"]) == ["apache2ctl", "start"]
    assert ctl.start_command(["apache2", "-d", "/r", "-k", "graceful"]) == \
        ["apache2", "-d", "/r", "-k", "start"]
    assert ctl.start_command(["/bin/false"]) is None



def test_a_set_placed_by_hand_is_ready_and_not_driven_over():
    m = md()
    by_hand = MDFacts(managed=True, active={"rsa": None}, staged_complete=True)
    assert by_hand.staged_by_hand and ready(by_hand, NOW) is None
    assert decide(m, by_hand, NOW).drive is False
    assert decide(m, by_hand, NOW, force=True).drive is True
    ours = Job("a.test")
    ours.finished = True
    ours.valid_from = NOW + timedelta(hours=1)
    waits = MDFacts(managed=True, active={"rsa": None}, staged_complete=True, job=ours)
    assert not waits.staged_by_hand and ready(waits, NOW).startswith("activation delayed")
    assert ready(MDFacts(managed=True, active={"rsa": None}), NOW) == "nothing staged"


def test_new_mds_are_prepared_in_one_batch_durable_before_they_are_in_place(store,
                                                                            monkeypatch):
    """`apache-md activate` before Apache's first start with 20 new MDs: every md.json,
    fallback pair and include (and global.conf, the server fallback) is durable before it
    is renamed into place, two sync()s instead of an fsync() per file and directory; all
    there afterwards, and a second prepare finds them in step and writes nothing."""
    from apache_md.apache.activation import prepare
    from apache_md.core.model import Config, GlobalSettings
    from apache_md.store.fs import APACHE
    config = Config(main_file="x.conf", server_root="/",
                    settings=GlobalSettings(store_dir=str(store.base)),
                    mds=[md(f"d{i}.test") for i in range(20)])
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "sync", lambda: events.append("sync"))
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(os.path.basename(b)),
                                                     real_replace(a, b)))
    prepare(store, config)
    placed = [i for i, e in enumerate(events) if e.endswith((".pem", ".json", ".conf"))
              and e != "activation.json"]
    assert len(placed) == 20 * 4 + 2  # md.json, fallback pair, include; global.conf, fallback
    assert events[:placed[0]] == ["sync"]
    assert events[placed[-1] + 1:placed[-1] + 2] == ["sync"]
    assert events.count("fsync") <= 3  # the activation state's own write
    for i in range(20):
        name = f"d{i}.test"
        assert store.read_json(DOMAINS, name, "md.json")["name"] == name
        pairs, fallback = serving.cert_pairs(store, config.mds[i])
        assert fallback and all(serving.problem(c, k) is None for c, k in pairs)
        assert (store.dir(APACHE) / includes.include_file(name)).exists()
    events.clear()
    prepare(store, config)
    assert events == []


def test_the_ca_of_an_md_json_edited_after_the_sync_read_it_is_read_anew(store):
    """activation.sync_md_json hands the "ca" it read to the facts (credentials.stored_ca)
    rather than their reading md.json once more: kept by the file's stamp taken before
    its read, so md.json edited by hand afterwards (mod_md's tools, an admin) is read
    again."""
    from apache_md.apache import activation
    from apache_md.store import credentials, facts
    md = ManagedDomain(name="a.test", domains=["a.test"], location=Location("x.conf", 1),
                       ca_urls=["https://ca.test/dir"])
    store.init()
    store.write_json(DOMAINS, md.name, "md.json",
                     {"name": md.name, "ca": {"url": "https://one.test/dir"}})
    activation.sync_md_json(store, md)
    assert credentials.stored_ca(store, md)["url"] == "https://one.test/dir"
    assert facts.read(store, md).ca["url"] == "https://one.test/dir"
    path = store.fspath(DOMAINS, md.name, "md.json")
    doc = store.read_json(DOMAINS, md.name, "md.json")
    st = os.stat(path)
    with open(path, "r+") as f:  # in place, the same size, its old mtime
        text = f.read()
        f.seek(0)
        f.write(text.replace("one.test", "two.test"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.read_json(DOMAINS, md.name, "md.json") != doc
    assert credentials.stored_ca(store, md)["url"] == "https://two.test/dir"
    assert facts.read(store, md).ca["url"] == "https://two.test/dir"
