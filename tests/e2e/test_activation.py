"""Activation never takes Apache down (issues 10.1, 10.3, 12.1, 12.2, 11.1, 11.3, 11.4).

Real Apache with mod_ssl and the handlers, real Pebble: every order an admin may
take adding an MD, broken live and staged sets, static certificates, sets placed
in staging/ by hand, and a reload after which Apache is gone.
"""
from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
from filelock import FileLock

from apache_md.apache.includes import include_path
from apache_md.apache.serving import problem
from apache_md.core.crypto import FALLBACK_CN
from tests.e2e.mdenv import MDEnv
from tests.harness import Apache, pki
from tests.harness.client import curl, s_client_cert


def md_block(env: MDEnv, names: list[str]) -> str:
    return "".join(f"MDomain {n}\n" for n in names)


def served(env: MDEnv, name: str):
    chain = s_client_cert("127.0.0.1", env.apache.https_port, name)
    assert chain, f"no TLS handshake for {name}"
    return chain[0]


def serial(cert) -> str:
    return format(cert.serial_number, "X")


def served_cn(env: MDEnv, name: str) -> str:
    return served(env, name).issuer.rfc4514_string()


def await_fallback(env: MDEnv, name: str, timeout: float = 10) -> None:
    """Until Apache serves the self-signed fallback for `name`: just after a reload, a
    child of the old generation may still take the connection and show what the old
    configuration served for that name (another vhost's certificate)."""
    deadline = time.monotonic() + timeout
    while FALLBACK_CN not in (got := served_cn(env, name)):
        assert time.monotonic() < deadline, f"{name}: served {got}, not the fallback"
        time.sleep(0.2)


def https_status(env: MDEnv, name: str, path: str = "/") -> int:
    return curl(f"https://{name}:{env.apache.https_port}{path}", insecure=True).status


def config(env: MDEnv, mds: list[str], vhosts: list[str], extra_mds: str = "") -> None:
    env.write_config(md_block(env, mds) + extra_mds, "".join(env.ssl_vhost(v) for v in vhosts))


def reload_ok(env: MDEnv, how: str = "graceful") -> None:
    """The admin's reload: configtest and graceful (the harness raises when Apache refuses)."""
    rc, out = env.apache.configtest()
    assert rc == 0, out
    env.apache.graceful() if how == "graceful" else env.apache.restart()
    assert env.apache.running


def await_serving(env: MDEnv, name: str, timeout: float = 90) -> str:
    """Until Apache serves `name` the certificate md-status reports (the CA's, not a fallback)."""
    deadline = time.monotonic() + timeout
    while True:
        st = {m["name"]: m for m in env.status().get("managed-domains", [])}.get(name, {})
        want = (st.get("cert") or {}).get("rsa", {}).get("serial")
        chain = s_client_cert("127.0.0.1", env.apache.https_port, name)
        if want and chain and serial(chain[0]).lstrip("0") == want.lstrip("0"):
            return want
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: md-status {want}, served "
                                 f"{serial(chain[0]) if chain else None}: {st}")
        time.sleep(0.5)


def await_serial(env: MDEnv, name: str, want: str, timeout: float = 10) -> None:
    """Until Apache serves `want` for `name`: for a moment after a graceful reload, a child
    of the old generation may still take a new connection and show the old certificate."""
    deadline = time.monotonic() + timeout
    while (got := serial(served(env, name)).lstrip("0")) != want.lstrip("0"):
        assert time.monotonic() < deadline, f"{name}: served {got}, not {want}"
        time.sleep(0.2)


def activate(env: MDEnv, *extra: str):
    return env.cli("activate", "--reload", env.reload_command(), *extra)


# -- 10.1: every order of the admin's steps; Apache never refuses ---------------------------

def test_new_md_in_any_order_apache_accepts_every_reload(env):
    """One MD live and a worker running (no systemd: it notices the edits by itself, or by
    SIGHUP). Then the admin adds two MDs, one vhost first and one MDomain first, with
    nothing but configtest, graceful and a restart: every step is accepted, and both MDs
    reach their certificates."""
    config(env, ["one.test"], ["one.test"])
    env.start()
    worker = env.start_worker()
    await_serving(env, "one.test")
    pid = env.apache.pid

    # include first: the vhost's include does not exist, the server-wide fallback serves
    config(env, ["one.test"], ["one.test", "two.test"])
    assert not Path(include_path(str(env.store), "two.test")).exists()
    reload_ok(env)
    await_fallback(env, "two.test")
    assert https_status(env, "two.test") == 503
    assert https_status(env, "two.test", "/.well-known/acme-challenge/x") == 404
    config(env, ["one.test", "two.test"], ["one.test", "two.test"])
    reload_ok(env)  # the worker sees the change in the files' mtimes
    await_serving(env, "two.test")

    # MDomain first (not renewed without a vhost), then the vhost; SIGHUP this time
    config(env, ["one.test", "two.test", "three.test"], ["one.test", "two.test"])
    reload_ok(env)
    worker.send_signal(signal.SIGHUP)
    config(env, ["one.test", "two.test", "three.test"],
           ["one.test", "two.test", "three.test"])
    reload_ok(env)
    worker.send_signal(signal.SIGHUP)
    await_serving(env, "three.test")
    assert env.apache.pid == pid  # graceful all along: never down

    # a cold start with an include that is not there yet, and a hard restart
    config(env, ["one.test", "two.test", "three.test"],
           ["one.test", "two.test", "three.test", "four.test"])
    env.stop_workers()
    env.apache.stop()
    env.apache.start()
    reload_ok(env, "restart")
    await_fallback(env, "four.test")
    for name in ("one.test", "two.test", "three.test"):
        await_serving(env, name, timeout=10)
    log = Path(worker.log_path).read_text()
    assert "Traceback" not in log and "Could not open" not in log


def test_check_writes_the_includes_and_the_fallback_first(env):
    """`apache-md check` right after the MD directives: Apache then starts (the fallback
    of global.conf for a vhost without certificate lines), before any activation."""
    config(env, ["one.test"], ["one.test"])
    p = env.cli("check")
    assert p.returncode == 0, p.stdout + p.stderr
    assert (env.store / "apache" / "global.conf").exists()
    assert (env.store / "apache" / "fallback.pem").stat().st_mode & 0o777 == 0o600
    assert Path(include_path(str(env.store), "one.test")).exists()
    assert "Apache is not running" in env.cli_ok("status").stdout
    env.apache.start()
    assert "Apache is not running" not in env.cli_ok("status").stdout
    await_fallback(env, "one.test")
    assert https_status(env, "one.test") == 503
    st = env.status("one.test")
    assert "self-signed fallback" in st["activation"]["detail"]


# -- 10.3: activating a newly added MD -------------------------------------------------------

def test_activate_a_newly_added_md_and_exit_codes(env):
    config(env, ["one.test"], ["one.test"])
    env.start()
    env.cli_ok("renew", "one.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    # a second MD added while Apache runs; no include written for it yet
    config(env, ["one.test", "two.test"], ["one.test", "two.test"])
    reload_ok(env)
    env.cli_ok("renew", "two.test")
    p = activate(env, "--respect-window")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "two.test: activated" in p.stdout
    assert "Could not open" not in p.stdout + p.stderr
    await_serving(env, "two.test", timeout=10)

    # Apache's configuration broken elsewhere: nothing goes live, and activate says so (1)
    env.cli_ok("renew", "--force", "two.test")
    env.apache.write_conf("50-broken", "SSLCipherSuite\n")
    p = activate(env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Apache configuration test failed" in p.stderr
    env.apache.remove_conf("50-broken")
    p = activate(env)
    assert p.returncode == 0 and "two.test: activated" in p.stdout, p.stdout + p.stderr


def test_a_set_activated_without_a_reload_is_not_said_served_and_the_next_reload_comes(env):
    """`apache-md activate` without --reload while Apache runs: the new set is live in
    the store, Apache still serves the previous one. md-status says so (not `active`),
    activate says to reload, and the next `activate --reload` reloads although nothing is
    staged any more; then md-status says active again."""
    config(env, ["a.test"], ["a.test"])
    env.start()
    env.cli_ok("renew", "a.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    old = serial(served(env, "a.test"))
    env.cli_ok("renew", "--force", "a.test")
    p = env.cli_ok("activate")
    assert "a.test: activated" in p.stdout and "still serves the previous" in p.stdout, p.stdout
    st = env.status("a.test")
    assert st["activation"]["state"] == "staged", st["activation"]
    assert "Apache has not reloaded" in st["activation"]["detail"]
    assert serial(served(env, "a.test")) == old
    env.cli_ok("activate", "--reload", env.reload_command())
    await_serial(env, "a.test", st["cert"]["rsa"]["serial"])
    assert env.status("a.test")["activation"]["state"] == "active"
    p = env.cli_ok("activate")  # nothing new: no note
    assert "still serves" not in p.stdout
    # the admin reloads Apache by hand: apache-md sees Apache serve the live set, and
    # neither says staged nor reloads again for it
    env.cli_ok("renew", "--force", "a.test")
    assert "still serves the previous" in env.cli_ok("activate").stdout
    new = env.status("a.test")["cert"]["rsa"]["serial"]
    env.apache.graceful()
    await_serial(env, "a.test", new)
    p = env.cli_ok("activate")
    assert "still serves" not in p.stdout, p.stdout
    assert "Apache serves the live certificates of a.test" in p.stdout + p.stderr, p
    assert env.status("a.test")["activation"]["state"] == "active"


# -- 12.1 / 12.2: broken live sets never reach a reload ----------------------------------------

def test_a_garbled_live_key_never_takes_apache_down(env):
    config(env, ["a.test", "b.test", "c.test"], ["a.test", "b.test", "c.test"])
    env.start()
    env.cli_ok("renew", "a.test", "b.test", "c.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    first_a = env.status("a.test")["cert"]["rsa"]["serial"]
    env.cli_ok("renew", "--force", "a.test")  # a.test then has a good set in archive/
    env.cli_ok("activate", "--reload", env.reload_command())
    pid = env.apache.pid

    # b.test: garbled key and no earlier set. Activating another MD must not reload Apache
    # onto it: b's set is moved aside, b gets the fallback, Apache keeps running.
    b_key = env.store / "domains" / "b.test" / "privkey.pem"
    b_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    env.cli_ok("renew", "--force", "c.test")
    p = activate(env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "c.test: activated" in p.stdout
    assert str(b_key) in p.stderr
    assert env.apache.pid == pid and env.apache.running
    await_serving(env, "c.test", timeout=10)
    await_fallback(env, "b.test")
    assert https_status(env, "b.test") == 503
    assert list((env.store / "archive").glob("b.test.broken.*/privkey.pem"))
    p = env.cli("check")
    assert p.returncode == 1 and str(b_key) in p.stderr, p.stdout + p.stderr
    assert "privkey.pem" in env.status("b.test")["activation"]["detail"]
    # ... and renewed: then all is well again
    env.cli_ok("renew", "b.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    await_serving(env, "b.test", timeout=10)
    assert env.cli("check").returncode == 0

    # a.test: garbled key, a good set in archive/: restored (found by `check` this time)
    a_key = env.store / "domains" / "a.test" / "privkey.pem"
    a_key.write_bytes(a_key.read_bytes()[:200])
    p = env.cli("check")
    assert p.returncode == 1 and str(a_key) in p.stderr, p.stdout + p.stderr
    assert "restored the set of" in p.stderr
    assert env.status("a.test")["cert"]["rsa"]["serial"] == first_a
    reload_ok(env)  # e.g. logrotate's: Apache loads the restored set
    await_serial(env, "a.test", first_a)
    assert env.apache.pid == pid
    assert "AH00020" not in env.apache.error_log()


def test_a_garbled_fallback_key_is_made_anew_before_any_reload(env):
    """b.test has no certificate yet, so Apache loads its fallback pair: garbled, `check`
    makes it anew (and says so in the log), and the reloads after it keep Apache up."""
    config(env, ["a.test", "b.test"], ["a.test", "b.test"])
    env.start()
    env.cli_ok("renew", "a.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    pid = env.apache.pid
    key = env.store / "domains" / "b.test" / "fallback-privkey.pem"
    key.write_bytes(key.read_bytes()[:150])
    p = env.cli_ok("check")
    assert f"{key}: not a usable private key" in p.stderr, p.stdout + p.stderr
    assert problem(str(key.with_name("fallback-pubcert.pem")), str(key)) is None
    reload_ok(env)  # the admin's (logrotate's): Apache loads the new pair
    env.cli_ok("activate", "--reload", env.reload_command())
    assert env.apache.pid == pid and env.apache.running
    await_fallback(env, "b.test")
    assert "AH00020" not in env.apache.error_log()


def test_an_internationalized_md_name_fails_its_renewal_alone_without_a_traceback(env):
    """`MDomain bücher.test` (mod_md starts with it too, and the CA refuses the order):
    check and renew name it and its A-label in one line, the fallback is made with the
    A-label, the other MD is certified, and Apache keeps running."""
    config(env, ["a.test", "bücher.test"], ["a.test", "bücher.test"])
    env.start()
    p = env.cli("renew")
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "Traceback" not in out, out
    assert "bücher.test (write xn--bcher-kva.test)" in out, out
    p = env.cli("check")
    assert "Traceback" not in p.stdout + p.stderr and "xn--bcher-kva.test" in p.stderr
    env.cli_ok("activate", "--reload", env.reload_command())
    assert env.apache.running
    await_serving(env, "a.test", timeout=10)
    st = env.status("bücher.test")
    assert "xn--bcher-kva.test" in st["renewal"]["last"]["detail"], st


def test_an_empty_live_certificate_does_not_block_its_own_repair(env):
    config(env, ["a.test"], ["a.test"])
    env.start()
    env.cli_ok("renew", "a.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    pid = env.apache.pid
    (env.store / "domains" / "a.test" / "pubcert.pem").write_bytes(b"")
    env.cli_ok("renew", "a.test")  # due: the live certificate is unreadable
    p = activate(env)
    assert p.returncode == 0, p.stdout + p.stderr  # the broken set was replaced
    assert "a.test: activated" in p.stdout
    await_serving(env, "a.test", timeout=10)
    assert env.apache.pid == pid


def test_a_broken_generated_include_is_written_again_not_a_blocked_worker(env):
    """apache-md's own includes (an MD's and global.conf) cut short or given an unclosed
    section: Apache would not start with them, and they are read with the config. `check`,
    the worker and `activate` say so, write them again and go on; Apache reloads."""
    names = ["a.test", "b.test"]
    config(env, names, names)
    env.start()
    env.cli_ok("renew", *names)
    env.cli_ok("activate", "--reload", env.reload_command())
    worker = ["worker", "--once", "--reload-command", env.reload_command()]
    for path in (Path(include_path(str(env.store), "a.test")),
                 Path(include_path(str(env.store), "b.test")).parent / "global.conf"):
        good = path.read_text()
        for bad, run in ((good[:len(good) // 2] + "\n<IfModule ssl_module>\n", ["check"]),
                         ("<VirtualHost *:1>\n", worker), ("</IfModule>\n", ["activate"])):
            path.write_text(bad)
            p = env.cli(*run)
            assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
            assert f"{path}:" in p.stderr and "apache-md's own generated file" in p.stderr, \
                p.stderr
            assert path.read_text() == good, (run, path.read_text())
        reload_ok(env)
        for name in names:
            await_serving(env, name, timeout=10)


@pytest.mark.parametrize("gone", ["stopped", "stopping after a new generation"])
def test_apache_gone_after_a_reload_is_rolled_back_and_started_again(env, tmp_path, gone):
    """A reload that returns 0 and leaves no Apache behind (as when mod_ssl cannot load
    a key that only the real start sees): the previous set is restored, Apache started.
    The start command returns before Apache is up, as `apache2 -k start` does (it
    detaches before the daemon loads its keys and writes its PidFile; on a busy machine
    that comes long after): here a second later. Its second form: the parent on its way
    out while children it spawned after the first look still answer (a child the old
    generation spawned while the reload ran is new too; it failed a clean CI so)."""
    a = Apache(http_port=env.apache.http_port, https_port=env.apache.https_port,
               foreground=False)
    env.apache, old = a, env.apache
    old.cleanup()
    env.store = a.root / "md"
    try:
        config(env, ["a.test"], ["a.test"])
        env.start()
        env.cli_ok("renew", "a.test")
        env.cli_ok("activate", "--reload", env.reload_command())
        good = env.status("a.test")["cert"]["rsa"]["serial"]
        env.cli_ok("renew", "--force", "a.test")
        ctl = tmp_path / "ctl"
        stop = " ".join(a.apache_cmd("-k", "stop"))
        start = " ".join(a.apache_cmd("-k", "start"))
        if gone != "stopped":
            stop = " ".join(a.apache_cmd("-k", "graceful")) + f"; sleep 0.5; {stop}"
        ctl.write_text(f'#!/bin/sh\ncase "$1" in\n  graceful) {stop} ;;\n'
                       f'  start) (sleep 1; {start}) >/dev/null 2>&1 & ;;\nesac\n')
        ctl.chmod(0o755)
        p = env.cli("activate", "--reload", f"{ctl} graceful")
        assert p.returncode == 1, p.stdout + p.stderr
        assert "exited after the reload" in p.stderr and "started again" in p.stderr
        assert a.running
        assert env.status("a.test")["cert"]["rsa"]["serial"] == good
        await_serving(env, "a.test", timeout=10)
        assert list((env.store / "archive").glob("a.test.rejected.*"))
    finally:
        a.cleanup()


# -- 11.1: static certificates ---------------------------------------------------------------

def test_static_md_is_served_from_its_files_and_own_vhost_certs_stay(env, tmp_path):
    static = pki.self_signed(tmp_path, ["static.test"], stem="static")
    own = pki.self_signed(tmp_path, ["own.test"], stem="own")
    mds = (f"<MDomain static.test>\n    MDCertificateFile {static.cert}\n"
           f"    MDCertificateKeyFile {static.key}\n</MDomain>\n")
    own_vhost = (f"<VirtualHost 127.0.0.1:{env.apache.https_port}>\n    ServerName own.test\n"
                 f"    SSLEngine on\n    SSLCertificateFile {own.cert}\n"
                 f"    SSLCertificateKeyFile {own.key}\n</VirtualHost>\n")
    bare = (f"<VirtualHost 127.0.0.1:{env.apache.https_port}>\n    ServerName static.test\n"
            "    SSLEngine on\n</VirtualHost>\n")
    env.write_config(mds, bare + own_vhost)
    p = env.cli("check")
    assert p.returncode == 1
    assert f"IncludeOptional {include_path(str(env.store), 'static.test')}" in p.stdout
    env.write_config(mds, env.ssl_vhost("static.test") + own_vhost)
    assert env.cli("check").returncode == 0
    inc = Path(include_path(str(env.store), "static.test")).read_text()
    assert str(static.cert) in inc and str(static.key) in inc
    env.apache.start()
    assert serial(served(env, "static.test")) == serial(static.certificate)
    assert serial(served(env, "own.test")) == serial(own.certificate)
    assert https_status(env, "static.test") != 503
    st = env.status("static.test")
    assert st["cert"]["0"]["serial"].lstrip("0") == serial(static.certificate).lstrip("0")
    cs = curl(f"http://static.test:{env.apache.http_port}/.httpd/certificate-status").json()
    assert cs["0"]["serial"] == st["cert"]["0"]["serial"]
    metrics = curl(f"http://localhost:{env.apache.http_port}/md-status/metrics").body
    assert 'md="static.test"' in metrics


# -- 11.3 / 11.4: staging written by others, broken staging ----------------------------------

def hand_placed_set(env: MDEnv, name: str, tmp_path: Path) -> tuple[bytes, bytes, str]:
    """A complete set for `name` obtained from the CA, left in staging/ with nothing of
    ours (no job.json, no md.json), as an admin would copy it there."""
    env.cli_ok("renew", "--force", name)
    staged = env.store / "staging" / name
    key, cert = (staged / "privkey.pem").read_bytes(), (staged / "pubcert.pem").read_bytes()
    want = env.status(name)["renewal"]["cert"]["rsa"]["serial"]
    shutil.rmtree(staged)
    return key, cert, want


def place(env: MDEnv, name: str, key: bytes, cert: bytes) -> None:
    staged = env.store / "staging" / name
    staged.mkdir(parents=True, exist_ok=True)
    (staged / "privkey.pem").write_bytes(key)
    (staged / "pubcert.pem").write_bytes(cert)


def test_a_set_placed_in_staging_by_hand_is_verified_and_activated(env, tmp_path):
    config(env, ["a.test", "b.test"], ["a.test", "b.test"])
    env.start()
    env.cli_ok("renew", "a.test", "b.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    key, cert, want = hand_placed_set(env, "a.test", tmp_path)
    b_key, b_cert, _ = hand_placed_set(env, "b.test", tmp_path)

    # our own drive of the MD holds its lock: not while it may still be writing
    place(env, "a.test", key, cert)
    with FileLock(str(env.store / "locks" / "md-a.test.lock")):
        p = activate(env)
        assert "a.test: not activated: a renewal of this MD is still writing" in p.stdout
    p = activate(env)
    assert p.returncode == 0 and "a.test: activated" in p.stdout, p.stdout + p.stderr
    assert env.status("a.test")["cert"]["rsa"]["serial"] == want
    await_serving(env, "a.test", timeout=10)

    # a set whose certificate is for another MD: refused, kept in archive/, renewed
    good = env.status("a.test")["cert"]["rsa"]["serial"]
    place(env, "a.test", b_key, b_cert)
    p = activate(env)
    assert p.returncode == 1 and "does not cover a.test" in p.stderr, p.stdout + p.stderr
    assert list((env.store / "archive").glob("a.test.staging.*/pubcert.pem"))
    assert env.status("a.test")["cert"]["rsa"]["serial"] == good
    assert serial(served(env, "a.test")).lstrip("0") == good.lstrip("0")
    env.cli_ok("renew", "--force", "a.test")  # not stalled (--force: past the retry delay)
    env.cli_ok("activate", "--reload", env.reload_command())
    assert env.status("a.test")["cert"]["rsa"]["serial"] != good


def test_broken_staging_is_moved_aside_and_the_md_renewed(env):
    """New MDs whose first staged sets are broken: mod_md would wait for ever; the sets
    go into archive/ (nothing lost), the worker renews, the certificates go live."""
    config(env, ["a.test", "b.test"], ["a.test", "b.test"])
    env.start()
    env.cli_ok("renew", "a.test", "b.test")
    # garbage md.json in a finished staging, and a staged certificate that is no file
    md_json = env.store / "staging" / "a.test" / "md.json"
    md_json.write_text("{garbage")
    cert = env.store / "staging" / "b.test" / "pubcert.pem"
    cert.unlink()
    cert.mkdir()
    p = activate(env)
    assert p.returncode == 1
    assert str(md_json) in p.stderr and str(cert) in p.stderr, p.stderr
    for name in ("a.test", "b.test"):
        assert list((env.store / "archive").glob(f"{name}.staging.*"))
    assert (env.store / "archive").glob("a.test.staging.*/md.json")
    worker = env.start_worker()
    for name in ("a.test", "b.test"):
        await_serving(env, name, timeout=60)
    assert "Traceback" not in Path(worker.log_path).read_text()
