"""What is known of the store's certificate files between processes (store/certcache.py,
`status/cache/certificates.json`): the worker, `status`, `check` and `activate` take a
certificate's summary from it while the file is as it was, and read a file that
changed (replaced, rewritten with its old mtime) anew; a garbled cache costs one
warning line, never a traceback (issue 15: at 10,000 MDs `status` and `check` parsed
every certificate and proved every key again)."""
from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from apache_md.store import certcache
from tests.e2e.mdenv import MDEnv

FAR = datetime(2099, 1, 1, tzinfo=timezone.utc)  # what no real certificate here says


def openssl_cert(d: Path, name: str, days: int) -> None:
    """A self-signed RSA set in mod_md's file names, made by openssl."""
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                    str(days), "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                    "-keyout", str(d / "privkey.pem"), "-out", str(d / "pubcert.pem")],
                   check=True, capture_output=True)


def until(env: MDEnv, name: str, afresh: bool = False) -> str:
    """`afresh`: the MD's md-status made again from its facts, not taken from what the
    last snapshot writer made of the same files (status/snapshot.py MADE)."""
    if afresh:
        env.store.joinpath("status", "snapshot", "made.json").unlink()
    return env.status(name)["cert"]["rsa"]["valid"]["until"]


def plant(env: MDEnv, cert: Path) -> None:
    """The cache says the certificate at `cert` runs until FAR: what a reader shows
    only when it believes the cache."""
    path = env.store.joinpath(*certcache.FILE)
    doc = json.loads(path.read_text())
    doc["certs"][str(cert)][2][1] = FAR.timestamp()
    path.write_text(json.dumps(doc))


def test_status_and_check_take_the_cache_while_a_file_is_unchanged_and_read_a_changed_one(env):
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    live = env.store / "domains" / "one.test"
    openssl_cert(live, "one.test", 30)
    env.cli_ok("check")  # proves the pair and keeps what it found
    cert = live / "pubcert.pem"
    real = until(env, "one.test")
    assert "2099" not in real
    plant(env, cert)
    assert "2099" in until(env, "one.test", afresh=True)  # the cache, not the file
    assert "valid until 2099-01-01" in env.cli_ok("check").stdout

    # replaced by another certificate with the old file's mtime: read anew
    st = os.stat(cert)
    old = cert.read_bytes()
    openssl_cert(live, "one.test", 60)
    os.utime(cert, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cert.read_bytes() != old
    now = until(env, "one.test")
    assert "2099" not in now and now != real
    assert "valid until 2099" not in env.cli_ok("check").stdout

    # garbled: named once, everything read as without a cache
    path = env.store.joinpath(*certcache.FILE)
    path.write_bytes(b'{"format": 2, "certs": {"x": [1, "y", [')
    p = env.cli_ok("status", "--json", "one.test")
    assert json.loads(p.stdout)["cert"]["rsa"]["valid"]["until"] == now
    named = [ln for ln in p.stderr.splitlines() if str(path) in ln]
    assert len(named) == 1 and "not usable" in named[0], p.stderr
    assert "Traceback" not in p.stderr


def worker_once(env: MDEnv) -> str:
    p = env.cli_ok("worker", "--once", "--reload-command", env.reload_command())
    return p.stdout + p.stderr


def test_a_restarted_worker_sees_what_changed_while_it_was_down(env):
    """A worker's first cycle takes its start's look at the includes and md.json files
    (worker.py `prepared`) and the certificates' summaries from the cache: a certificate
    replaced and a key garbled while no worker ran (old mtimes) are still seen by it."""
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    live = env.store / "domains" / "one.test"
    openssl_cert(live, "one.test", 30)
    env.start()
    worker_once(env)
    cert, key = live / "pubcert.pem", live / "privkey.pem"
    first = until(env, "one.test")
    assert env.store.joinpath(*certcache.FILE).exists()

    st = os.stat(cert)
    openssl_cert(live, "one.test", 60)
    os.utime(cert, ns=(st.st_atime_ns, st.st_mtime_ns))
    worker_once(env)
    second = until(env, "one.test")
    assert second != first
    include = Path(env.store, "apache", "one.test.conf").read_text()
    assert str(cert) in include and "fallback" not in include

    st = os.stat(key)
    with open(key, "r+b") as f:  # garbled in place: same size, old mtime
        f.write(b"-----BEGIN PRIVATE KEY-----\nAAAA")
    os.utime(key, ns=(st.st_atime_ns, st.st_mtime_ns))
    out = worker_once(env)
    # set aside, and renewed at once from the CA (the session's Pebble)
    assert "broken live set" in out and "renewing: one.test" in out, out
    assert not key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\nAAAA")
    assert until(env, "one.test") not in (first, second)
    assert list(env.store.glob("archive/one.test.broken.*"))
    assert "Traceback" not in out
