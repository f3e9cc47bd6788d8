"""What is known of certificate files outlives the worker (store/certcache.py): a start
over unchanged certificates parses none and proves no key, and a file changed by hand
in between is read and proved again."""
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from apache_md.apache import serving
from apache_md.core import crypto
from apache_md.store import certcache, credentials
from apache_md.store.fs import DOMAINS

from tests.unit.sample import make_md, put_cert

REPO = Path(__file__).resolve().parents[3]


def restart(store):
    """What a new process knows: the store's file, nothing in memory."""
    certcache.save(store)
    certcache.clear()
    credentials._cache.clear()
    serving._checked.clear()
    certcache.load(store)


@pytest.fixture
def md(store):
    certcache.clear()
    md = make_md("a.test")
    put_cert(store, DOMAINS, md)
    yield md
    certcache.clear()


def paths(store, md):
    spec = md.keyspecs[0]
    return (store.fspath(DOMAINS, md.name, spec.file_name("pubcert")),
            store.fspath(DOMAINS, md.name, spec.file_name("privkey")))


def test_unchanged_files_are_not_parsed_again(store, md, monkeypatch):
    cert, key = paths(store, md)
    info = credentials.file_info(cert)
    assert serving.problem(cert, key) is None
    restart(store)
    monkeypatch.setattr(crypto, "cert_info", lambda c: pytest.fail("parsed again"))
    monkeypatch.setattr(serving, "_verify", lambda c, k: pytest.fail("proved again"))
    assert credentials.file_info(cert) == info
    assert serving.problem(cert, key) is None
    copy = cert + ".new"  # the same content under a new inode: found by its hash
    shutil.copyfile(cert, copy)
    os.replace(copy, cert)
    assert credentials.file_info(cert) == info


def test_files_changed_by_hand_are_read_again(store, md):
    cert, key = paths(store, md)
    old = credentials.file_info(cert)
    assert serving.problem(cert, key) is None
    restart(store)
    put_cert(store, DOMAINS, md)  # another certificate
    assert credentials.file_info(cert).sha256 != old.sha256
    restart(store)
    st = os.stat(key)
    size = st.st_size
    with open(key, "r+b") as f:  # garbled in place, same size, old mtime
        f.write(b"-----BEGIN PRIVATE KEY-----\nAAAA")
    os.utime(key, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(key).st_size == size
    assert "not a usable private key" in serving.problem(cert, key)


def test_the_file_holds_no_key_and_is_0600(store, md):
    cert, key = paths(store, md)
    credentials.file_info(cert)
    serving.problem(cert, key)
    certcache.save(store)
    path = store.path(*certcache.FILE)
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert "PRIVATE" not in text and Path(key).read_text().splitlines()[1] not in text
    assert json.loads(text)["format"] == certcache.FORMAT


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "certs": {"x": 1}}',
                                     b'{"format": 99, "certs": {}, "pairs": []}'])
def test_a_broken_file_is_named_once_and_made_anew(store, md, caplog, content):
    cert, key = paths(store, md)
    path = store.path(*certcache.FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        certcache.load(store)
        certcache.load(store)
    named = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(named) == 1 and "not usable" in named[0] and "made anew" in named[0]
    assert credentials.file_info(cert) is not None  # parsed as without a cache
    assert serving.problem(cert, key) is None
    certcache.save(store)
    assert json.loads(path.read_bytes())["format"] == certcache.FORMAT


SCRIPT = textwrap.dedent("""
    import sys
    from apache_md.core import model
    from apache_md.worker import Worker
    from tests.unit.sample import make_md
    md = make_md("a.test")
    config = model.Config(main_file="x.conf", server_root="/", mds=[md],
                          settings=model.GlobalSettings(store_dir=sys.argv[1]))
    w = Worker(lambda: config, ["true"], once=True)
    assert w.refresh_config()
    w.activate_and_reload(snapshot=False)
    w.cycle()
    print("cryptography.x509" in sys.modules)
""")


def test_a_worker_over_unchanged_certificates_does_not_load_cryptography(store, md):
    def run() -> str:
        p = subprocess.run([sys.executable, "-c", SCRIPT, str(store.base)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()
    assert run() == "True"  # the first run parses and proves, and keeps what it found
    assert run() == "False"
    put_cert(store, DOMAINS, md)
    assert run() == "True"  # a new certificate


def test_the_file_of_the_version_before_is_taken_as_it_is(store, md, monkeypatch):
    """Format 1 kept each stamp as its four ints (now their hash: 6 MB less at 10,000
    MDs): a worker upgraded over it parses nothing again either."""
    cert, key = paths(store, md)
    info = credentials.file_info(cert)
    assert serving.problem(cert, key) is None
    certcache.save(store)
    path = store.path(*certcache.FILE)
    doc = json.loads(path.read_bytes())
    doc["format"] = 1
    for p, e in doc["certs"].items():
        e[0] = list(credentials.changes.stamp(os.stat(p)))
    doc["pairs"] = [[c, k, list(serving._stamp(c)), list(serving._stamp(k)), problem]
                    for c, k, _, problem in doc["pairs"]]
    path.write_text(json.dumps(doc))
    certcache.clear()
    credentials._cache.clear()
    serving._checked.clear()
    certcache.load(store)
    monkeypatch.setattr(crypto, "cert_info", lambda c: pytest.fail("parsed again"))
    monkeypatch.setattr(serving, "_verify", lambda c, k: pytest.fail("proved again"))
    assert credentials.file_info(cert) == info
    assert serving.problem(cert, key) is None
