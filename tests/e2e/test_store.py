"""The store end to end: broken files, a corrupt md_store.json, files changed by others,
renamed MDs, and a store owned by an unprivileged user while root runs the CLI.

Real Apache (mod_ssl + mod_wsgi), real Pebble. Steps run `apache-md worker --once`
(one check cycle with activation and graceful reload) unless a test is about the
running worker.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from apache_md.core import crypto
from apache_md.core.model import KeySpec
from tests.e2e.mdenv import APACHE_MD, MDEnv
from tests.harness.client import curl, dns_names, s_client_cert


def worker_once(env: MDEnv, *extra: str) -> str:
    p = env.cli_ok("worker", "--once", "--reload-command", env.reload_command(), *extra)
    return p.stdout + p.stderr


def serial(env: MDEnv, name: str) -> str:
    return env.status(name)["cert"]["rsa"]["serial"]


def issued(env: MDEnv, name: str, vhosts: str | None = None, mds: str | None = None) -> str:
    """One MD with its certificate served; returns the serial."""
    env.write_config(mds or f"MDomain {name}\n", vhosts or env.ssl_vhost(name))
    env.start()
    worker_once(env)
    s = serial(env, name)
    env.await_served(name, s)
    return s


def broken_lines(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if ".broken." in ln or "left in place" in ln]


# -- broken files (issue 12.6) --------------------------------------------------------------
def test_broken_files_are_named_once_set_aside_and_a_new_account_replaces_a_broken_one(env):
    first = issued(env, "one.test")
    store = env.store
    [acct] = [p for p in (store / "accounts").iterdir()]
    (acct / "account.pem").write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\ngarbage\n")
    (store / "domains/one.test/job.json").write_bytes(b"\x00\x01 not json")
    (store / "staging/one.test").mkdir()
    (store / "staging/one.test/job.json").write_text('{"name": "one.test", "errors": ')

    # each broken file is named once, however often the worker looks
    log = worker_once(env)
    lines = broken_lines(log)
    assert len(lines) == 2, log
    assert any("staging/one.test/job.json: corrupt JSON" in ln
               and "moved aside to job.json.broken.1; the renewal job starts afresh" in ln
               for ln in lines), lines
    assert any("domains/one.test/job.json: corrupt JSON" in ln for ln in lines), lines
    assert broken_lines(worker_once(env)) == []
    assert (store / "staging/one.test/job.json.broken.1").read_text().endswith('"errors": ')
    shown = {b["file"]: b for b in env.status("one.test")["broken-files"]}
    assert set(shown) == {"staging/one.test/job.json", "domains/one.test/job.json"}
    page = env.cli_ok("status").stdout
    assert "broken store file staging/one.test/job.json: corrupt JSON" in page
    assert serial(env, "one.test") == first  # nothing served was touched

    # a forced renewal says that it registered a new account, and keeps the old one's files
    out = env.cli_ok("renew", "--force", "one.test").stdout
    assert "Creating new ACME account for one.test" in out \
        and f"{acct.name} were set aside" in out, out
    assert sorted(p.name for p in acct.iterdir()) == ["account.json.broken.1",
                                                     "account.pem.broken.1"]
    accounts = sorted(p.name for p in (store / "accounts").iterdir())
    assert len(accounts) == 2 and accounts[0] == acct.name
    new = store / "accounts" / accounts[1]
    assert json.loads((new / "account.json").read_text())["status"] == "valid"
    entry = {b["file"]: b for b in env.status("one.test")["broken-files"]}[
        f"accounts/{acct.name}/account.pem"]
    assert "does not decrypt" in entry["problem"] and "a new account is registered" in \
        entry["action"]
    env.cli_ok("activate", "--reload", env.reload_command())
    second = serial(env, "one.test")
    assert second != first
    env.await_served("one.test", second)
    worker_once(env)  # the new account is used from now on, nothing more is set aside
    assert sorted(p.name for p in (store / "accounts").iterdir()) == accounts


def await_log(proc, text: str, count: int = 1, timeout: float = 60) -> str:
    """The worker's log once `text` appears `count` times in it (the worker must be alive)."""
    deadline = time.monotonic() + timeout
    while True:
        log = Path(proc.log_path).read_text(errors="replace")
        if log.count(text) >= count:
            return log
        assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{log}"
        assert time.monotonic() < deadline, f"no {count}x {text!r} in the worker's log:\n{log}"
        time.sleep(0.2)


# -- a corrupt md_store.json (issue 11.5) ---------------------------------------------------
def test_a_corrupt_store_file_is_refused_never_replaced_and_the_worker_waits(env):
    first = issued(env, "one.test")
    store_file = env.store / "md_store.json"
    good = store_file.read_bytes()
    store_file.write_bytes(b'{"store": {"version": 3.0}, "key": "tr')

    p = env.cli("check")
    assert p.returncode == 1
    assert f"{store_file}: corrupt: no valid 'key'" in p.stderr and \
        "never replaces it" in p.stderr and "Restore it from a backup" in p.stderr, p.stderr
    p = env.cli("activate", "--reload", env.reload_command())
    assert p.returncode == 1 and f"{store_file}: corrupt" in p.stderr, p.stderr
    p = env.cli("renew", "--force")
    assert p.returncode == 1 and f"{store_file}: corrupt" in p.stderr, p.stderr
    assert store_file.read_bytes().endswith(b'"key": "tr')

    # the worker stays up (no restart loop under systemd), says why once, renews nothing
    worker = env.start_worker()
    refusal = f"{store_file}: corrupt: no valid 'key'"
    await_log(worker, refusal)
    for n in (1, 2):
        worker.send_signal(signal.SIGHUP)  # each one: another look at the file
        await_log(worker, "received SIGHUP", n)
    log = await_log(worker, "refusing", 0)
    assert log.count(refusal) == 1, log
    listed = env.status().get("broken-files") or []
    assert [b["file"] for b in listed] == ["md_store.json"], listed
    assert listed[0]["action"].startswith("refused")
    env.await_served("one.test", first)
    assert store_file.read_bytes().endswith(b'"key": "tr')

    # repaired: the worker goes back to work at its next look, e.g. for a new MD
    store_file.write_bytes(good)
    env.write_config("MDomain one.test\nMDomain two.test\n",
                     env.ssl_vhost("one.test") + env.ssl_vhost("two.test"))
    worker.send_signal(signal.SIGHUP)
    await_log(worker, "is usable again")
    env.await_state(["two.test"], timeout=90)
    env.await_served("two.test", serial(env, "two.test"))
    env.await_served("one.test", first)


# -- root runs the CLI on a store that belongs to the worker's user (issue 10.2) ----------
def not_owned_by(store: Path, uid: int) -> list[str]:
    return [f"{p} ({os.lstat(p).st_uid})" for p in [store, *store.rglob("*")]
            if os.lstat(p).st_uid != uid]


def test_root_leaves_a_store_owned_by_the_service_user_that_the_worker_can_use(
        env, service_user):
    uid, gid = service_user.pw_uid, service_user.pw_gid
    env.store.mkdir(mode=0o755)
    os.chown(env.store, uid, gid)  # as the package's postinst leaves it
    env.write_config("MDomain one.test\nMDomain two.test\n",  # runs apache-conf as root
                     env.ssl_vhost("one.test") + env.ssl_vhost("two.test"))
    # every command as root on the fresh store
    env.cli_ok("check")
    env.cli_ok("status")
    env.cli_ok("status", "--json", "one.test")
    env.cli_ok("activate")  # includes and fallback certificates
    env.apache.start()
    assert not_owned_by(env.store, uid) == []
    assert "running as uid" in env.cli_ok("renew", "two.test").stderr
    env.cli_ok("activate", "--reload", env.reload_command())
    env.await_served("two.test", serial(env, "two.test"))
    assert not_owned_by(env.store, uid) == []

    # the worker as the service user (User=apache-md in the unit): it may not reload Apache,
    # so it asks for activation, which root does as the path unit would
    log = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
    worker = subprocess.Popen(APACHE_MD + ["-f", str(env.apache.main_conf), "worker"],
                              stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                              user=uid, group=gid, extra_groups=[])
    worker.log_path = log
    env.workers.append(worker)
    request = env.store / "status/activation/activation-requested"
    await_log(worker, "renewing: one.test")
    deadline = time.monotonic() + 90
    while "one.test" not in (request.read_text() if request.exists() else ""):
        assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)
    env.cli_ok("activate", "--reload", env.reload_command())
    env.await_served("one.test", serial(env, "one.test"))
    text = log.read_text()
    assert "Permission denied" not in text and "unreadable" not in text, text
    env.stop_workers()
    worker_once(env)  # root again: nothing it writes is root's
    assert not_owned_by(env.store, uid) == []
    log.unlink()

    # an admin without sudo may not read the store: `status` shows what /md-status shows
    for args in (["status"], ["status", "--json", "one.test"]):
        p = subprocess.run(APACHE_MD + ["-f", str(env.apache.main_conf), *args], text=True,
                           capture_output=True, user=65534, group=65534, extra_groups=[],
                           timeout=60)
        assert p.returncode == 0 and "as /md-status shows it" in p.stderr, p
        assert "Permission denied" not in p.stdout + p.stderr and "one.test" in p.stdout, p
    assert json.loads(p.stdout)["cert"]["rsa"]["serial"] == serial(env, "one.test")


# -- changes made to the store by others (issue 11.6) --------------------------------------
def md_status_over_http(env: MDEnv, name: str) -> dict:
    r = curl(f"http://localhost:{env.apache.http_port}/md-status/{name}")
    assert r.status == 200, r.body
    return r.json()


def await_md_status(env: MDEnv, name: str, pred, what: str, timeout: float = 20) -> dict:
    """md-status as Apache serves it, once pred(obj) holds. The bound is well under the
    worker's regular wake-up (60 s): what is tested is that it notices by itself."""
    deadline = time.monotonic() + timeout
    while True:
        obj = md_status_over_http(env, name)
        if pred(obj):
            return obj
        assert time.monotonic() < deadline, f"md-status never showed {what}: {obj}"
        time.sleep(0.3)


def await_first_cycle(env: MDEnv, worker) -> None:
    """Until the worker's heartbeat says when it checks next (written after a cycle)."""
    beat = env.store / "status/worker/worker.json"
    deadline = time.monotonic() + 60
    while True:
        try:
            info = json.loads(beat.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("pid") == worker.pid and "next-cycle" in info:
            return
        assert worker.poll() is None and time.monotonic() < deadline, \
            Path(worker.log_path).read_text()
        time.sleep(0.2)


def test_a_certificate_copied_into_the_store_by_hand_shows_in_md_status_within_seconds(env):
    first = issued(env, "one.test")
    worker = env.start_worker()
    await_first_cycle(env, worker)
    live = env.store / "domains/one.test"
    old = os.stat(live / "pubcert.pem")

    # rewritten in place (same inode) with its old mtime, as `cp -p` does
    key = crypto.generate_key(KeySpec("RSA", 2048))
    (live / "privkey.pem").write_bytes(crypto.key_to_pem(key))
    with open(live / "pubcert.pem", "wb") as f:
        f.write(crypto.self_signed(key, ["one.test"], days=30))
    os.utime(live / "pubcert.pem", ns=(old.st_atime_ns, old.st_mtime_ns))
    copied = format(crypto.load_chain((live / "pubcert.pem").read_bytes())[0].serial_number,
                    "X")
    obj = await_md_status(env, "one.test", lambda o: o["cert"]["rsa"]["serial"] != first,
                          "the copied certificate")
    assert obj["cert"]["rsa"]["serial"].lstrip("0") == copied.lstrip("0")
    assert worker.poll() is None


# -- renamed MDs keep their certificate (issue 11.2) ---------------------------------------
def vhost(env: MDEnv, name: str, aliases=(), md: str | None = None) -> str:
    return env.ssl_vhost(name, aliases=list(aliases), md=md)


def served_serial(env: MDEnv, name: str) -> str:
    chain = s_client_cert("127.0.0.1", env.apache.https_port, name)
    assert "Fallback" not in chain[0].subject.rfc4514_string(), f"{name}: fallback served"
    return format(chain[0].serial_number, "X")


def same(a: str, b: str) -> bool:
    return a.lstrip("0") == b.lstrip("0")


def test_an_md_whose_first_name_is_dropped_keeps_its_certificate(env):
    """mod_md test_702_030; a vhost still including the old name's file keeps working."""
    first = issued(env, "x.test", mds="MDomain x.test a.test b.test\n",
                   vhosts=vhost(env, "a.test", md="x.test") + vhost(env, "b.test", md="x.test"))
    env.write_config("MDomain a.test b.test\n",
                     vhost(env, "a.test", md="a.test") + vhost(env, "b.test", md="x.test"))
    out = env.cli_ok("activate", "--reload", env.reload_command()).stderr
    assert "MD x.test renamed to a.test (a.test b.test): it keeps its certificate" in out, out
    assert not (env.store / "domains/x.test").exists()
    for name in ("a.test", "b.test"):
        assert same(served_serial(env, name), first)
    assert same(serial(env, "a.test"), first) and env.status("a.test")["state"] == 2
    log = worker_once(env)  # the certificate covers the new names: nothing to renew
    assert "renewing" not in log, log
    assert same(serial(env, "a.test"), first) and same(served_serial(env, "b.test"), first)


def test_an_md_whose_server_name_and_alias_are_swapped_keeps_its_certificate(env):
    """mod_md test_702_033: the MD is named for its vhost's ServerName."""
    first = issued(env, "x.test", vhosts=vhost(env, "x.test", aliases=["a.test"]))
    assert env.status("x.test")["domains"] == ["x.test", "a.test"]
    env.write_config("MDomain a.test\n", vhost(env, "a.test", aliases=["x.test"]))
    env.cli_ok("activate", "--reload", env.reload_command())
    assert env.status("a.test")["domains"] == ["a.test", "x.test"]
    for name in ("a.test", "x.test"):
        assert same(served_serial(env, name), first)
    assert "renewing" not in worker_once(env)
    assert same(serial(env, "a.test"), first)


def test_an_md_renamed_with_a_name_added_serves_its_old_certificate_until_renewed(env):
    """mod_md test_702_031: the old certificate stays live (no fallback) while the MD renews
    for the new set of names in the background."""
    first = issued(env, "x.test", mds="MDomain x.test a.test b.test\n",
                   vhosts=vhost(env, "a.test", md="x.test") + vhost(env, "b.test", md="x.test"))
    env.write_config("MDomain a.test b.test c.test\n",
                     "".join(vhost(env, n, md="a.test") for n in ("a.test", "b.test", "c.test")))
    env.cli_ok("activate", "--reload", env.reload_command())
    for name in ("a.test", "b.test", "c.test"):  # c.test is not in it yet, but no fallback
        assert same(served_serial(env, name), first)
    status = env.status("a.test")
    assert status["state"] == 1 and "does not cover" in status.get("state-descr", ""), status
    worker_once(env)
    second = serial(env, "a.test")
    assert not same(second, first)
    chain = env.await_served("c.test", second)
    assert sorted(dns_names(chain[0])) == ["a.test", "b.test", "c.test"]


def test_a_full_disk_keeps_what_is_served_and_says_so_without_a_traceback(env):
    """The store on a filesystem that fills up (a 2 MB tmpfs): renew, activate, check and
    the worker each say which file could not be written and that the filesystem is full,
    in one line; Apache keeps serving the certificates it has through a reload; no
    temporary file is left behind; once there is space, the next renewal goes live."""
    env.store.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(env.store)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        names = ["a.test", "b.test"]
        env.write_config("".join(f"MDomain {n}\n" for n in names),
                         "".join(env.ssl_vhost(n) for n in names))
        env.start()
        env.cli_ok("renew", *names)
        env.cli_ok("activate", "--reload", env.reload_command())
        first = env.status("a.test")["cert"]["rsa"]["serial"]
        filler = env.store / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        for args in (["renew", "--force", "a.test"], ["activate", "--reload", env.reload_command()],
                     ["check"]):
            p = env.cli(*args)
            assert p.returncode == 1, (args, p.stdout, p.stderr)
            assert "Traceback" not in p.stdout + p.stderr, p.stderr
            assert f"{env.store}/" in p.stderr and "is full" in p.stderr, p.stderr
        worker = env.start_worker("--once")
        worker.wait(120)
        log = worker.log_path.read_text()
        assert "Traceback" not in log and "is full" in log, log
        env.apache.graceful()
        assert serial_served(env, "a.test") == first.lstrip("0")
        assert not list(env.store.rglob("*.tmp"))
        filler.unlink()
        env.cli_ok("renew", "--force", "a.test")
        env.cli_ok("activate", "--reload", env.reload_command())
        deadline = time.monotonic() + 10
        while serial_served(env, "a.test") == first.lstrip("0"):
            assert time.monotonic() < deadline, "the new certificate is not served"
            time.sleep(0.2)
    finally:
        env.stop_workers()
        env.apache.stop()
        subprocess.run(["umount", "-l", str(env.store)])


def serial_served(env, name: str) -> str:
    chain = s_client_cert("127.0.0.1", env.apache.https_port, name)
    assert chain, f"no TLS handshake for {name}"
    return format(chain[0].serial_number, "X").lstrip("0")
