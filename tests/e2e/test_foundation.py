"""Issue 2 end to end: Apache config -> worker -> certificates served by Apache.

Real Apache (mod_ssl + mod_wsgi), real Pebble, real openssl/curl.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time

from filelock import FileLock

from tests.e2e.mdenv import MDEnv
from tests.harness.client import curl, dns_names, key_type, s_client_cert, verify_chain

MDS = """
MDomain one.test
<MDomain two.test>
    MDPrivateKeys secp256r1 rsa2048
</MDomain>
"""


def two_mds(env: MDEnv) -> None:
    env.write_config(MDS, env.ssl_vhost("one.test", aliases=["www.one.test"])
                     + env.ssl_vhost("two.test"))


def notify_socket(tmpdir) -> tuple[socket.socket, str]:
    path = os.path.join(tmpdir, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    return s, path


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except (socket.timeout, BlockingIOError):
            return out


def test_worker_obtains_and_apache_serves_every_key_type(env, tmp_path):
    two_mds(env)
    env.start()
    # Before the first certificate: the fallback, and a 503 for content.
    chain = s_client_cert("127.0.0.1", env.apache.https_port, "one.test")
    assert "Fallback" in chain[0].subject.rfc4514_string()
    r = curl(f"https://one.test:{env.apache.https_port}/", insecure=True)
    assert r.status == 503

    sock, path = notify_socket(str(tmp_path))
    # WATCHDOG_USEC as systemd sets it for WatchdogSec=1: the worker must ping twice a second
    worker = env.start_worker(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    mds = env.await_state(["one.test", "two.test"], timeout=90)
    assert set(mds["two.test"]["cert"]) == {"secp256r1", "rsa", "valid"}

    root = env.pebble.root_pem_path.read_text()
    for name, md, sig, kt in [("one.test", "one.test", None, "rsa2048"),
                              ("www.one.test", "one.test", None, "rsa2048"),
                              ("two.test", "two.test", "ec", "secp256r1"),
                              ("two.test", "two.test", "rsa", "rsa2048")]:
        key = "rsa" if kt.startswith("rsa") else kt
        chain = env.await_served(name, mds[md]["cert"][key]["serial"], sigalgs=sig)
        assert key_type(chain[0]) == kt
        assert name in dns_names(chain[0])
        assert verify_chain(chain, root, hostname=name), f"{name}: chain does not verify"
    assert sorted(dns_names(s_client_cert("127.0.0.1", env.apache.https_port, "one.test")[0])) \
        == ["one.test", "www.one.test"]
    r = curl(f"https://www.one.test:{env.apache.https_port}/", cacert=env.pebble.root_pem_path)
    assert r.status == 200

    msgs = "".join(drain(sock))
    assert "READY=1" in msgs and "STATUS=" in msgs and "WATCHDOG=1" in msgs
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert "STOPPING=1" in "".join(drain(sock))

    # mod_md's store layout and permissions
    st = env.store
    assert stat.S_IMODE(os.stat(st / "domains").st_mode) == 0o700
    for f in ["privkey.pem", "privkey.secp256r1.pem"]:
        assert stat.S_IMODE(os.stat(st / "domains" / "two.test" / f).st_mode) == 0o600
    assert (st / "domains" / "two.test" / "pubcert.secp256r1.pem").exists()
    md_json = json.loads((st / "domains" / "one.test" / "md.json").read_text())
    assert md_json["domains"] == ["one.test", "www.one.test"]
    assert md_json["ca"]["account"].startswith("ACME-localhost-")
    # one account shared by both MDs
    assert len(os.listdir(st / "accounts")) == 1
    assert not os.listdir(st / "challenges")
    assert not (st / "staging" / "one.test").exists()


def test_challenge_handler_answers_only_what_it_should(env):
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    env.start()
    chal = env.store / "challenges" / "one.test"
    chal.mkdir(parents=True)
    (chal / "acme-http-01.txt").write_text("tok123.thumbprint")
    os.chmod(chal / "acme-http-01.txt", 0o644)
    port = env.apache.http_port
    base = f"http://one.test:{port}/.well-known/acme-challenge"
    ok = curl(f"{base}/tok123")
    assert (ok.status, ok.body) == (200, "tok123.thumbprint")
    assert curl(f"{base}/othertoken").status == 404
    assert curl(f"http://other.test:{port}/.well-known/acme-challenge/tok123").status == 404
    # Hosts apache-md does not manage keep their own answers (e.g. certbot --webroot)
    env.apache.write_doc(".well-known/acme-challenge/theirs", "their-answer")
    r = curl(f"http://other.test:{port}/.well-known/acme-challenge/theirs")
    assert (r.status, r.body) == (200, "their-answer")
    assert curl(f"{base}/theirs").status == 404  # a managed host answers only its own
    assert curl(f"{base}/..%2f..%2fmd_store.json").status == 404
    r = curl(f"{base}/../../md_store.json", extra=["--path-as-is"])
    assert r.status in (400, 403, 404) and "key" not in r.body
    # /md-status is local-only by default and answers mod_md's JSON
    status = curl(f"http://one.test:{port}/md-status").json()
    assert status["managed-domains"][0]["name"] == "one.test"


def test_check_reports_errors_with_file_and_line(env):
    conf = env.apache.write_conf("10-md", env.md_globals("MDomain a.test\nMDRenewWindow 1y\n"
                                 "MDPrivateKeys RSA 1024\nMDFoo bar\n"))
    p = env.cli("check")
    assert p.returncode == 1
    err = p.stderr
    assert f"{conf}:" in err
    assert "MDRenewWindow has unrecognized format" in err
    assert "must be 2048 or higher" in err
    assert "Invalid command 'MDFoo'" in err
    assert "Traceback" not in err + p.stdout


def test_check_prints_the_missing_include_line(env):
    env.apache.write_conf("10-md", env.md_globals("MDomain a.test\n") +
                          f"<VirtualHost 127.0.0.1:{env.apache.https_port}>\n"
                          "    ServerName a.test\n    SSLEngine on\n</VirtualHost>\n")
    p = env.cli("check")
    assert p.returncode == 1
    assert f"IncludeOptional {env.store}/apache/a.test.conf" in p.stdout


def test_a_second_driver_does_not_touch_a_locked_md(env):
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    env.start()
    (env.store / "locks").mkdir(exist_ok=True)
    lock = FileLock(str(env.store / "locks" / "md-one.test.lock"))
    with lock:
        p = env.cli("renew", "one.test")
        assert p.returncode == 1
        assert "busy" in p.stdout
        assert not (env.store / "staging" / "one.test").exists()
    p = env.cli_ok("renew", "one.test")
    assert "renewed" in p.stdout


def test_ca_down_is_recorded_and_last_good_certificate_kept(env, pebble):
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    env.start()
    env.cli_ok("renew", "one.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    serial = env.status("one.test")["cert"]["rsa"]["serial"]
    env.await_served("one.test", serial)
    # A CA that refuses connections: the error lands in job.json, not a traceback.
    env.apache.write_conf("10-md", env.md_globals().replace(
        pebble.directory_url, "https://localhost:1/dir").replace("</IfModule>", "MDomain one.test\n</IfModule>")
        + env.ssl_vhost("one.test"))
    p = env.cli("renew", "--force", "one.test")
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    job = json.loads((env.store / "staging" / "one.test" / "job.json").read_text())
    assert job["errors"] == 1
    assert "Connection refused" in job["last"]["status-description"]
    assert "localhost:1" in job["last"]["detail"]
    assert "next-run" in job
    env.await_served("one.test", serial)  # still the last good certificate


def test_corrupt_job_json_is_replaced_not_fatal(env):
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    env.start()
    staging = env.store / "staging" / "one.test"
    staging.mkdir(parents=True)
    (staging / "job.json").write_text("{garbage")
    p = env.cli("status", "one.test")
    assert p.returncode == 0 and "Traceback" not in p.stderr
    p = env.cli_ok("renew", "one.test")
    assert "renewed" in p.stdout


def test_worker_survives_a_broken_config_on_sighup(env):
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    env.start()
    worker = env.start_worker()
    mds = env.await_state(["one.test"], timeout=60)
    serial = mds["one.test"]["cert"]["rsa"]["serial"]
    env.apache.write_conf("20-broken", "<IfModule md_module>\nMDRenewWindow soon\n</IfModule>\n")
    worker.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "keeping the previous configuration" not in worker.log_path.read_text():
        assert worker.poll() is None, "worker died on a broken config"
        assert time.monotonic() < deadline, worker.log_path.read_text()
        time.sleep(0.1)
    assert worker.poll() is None, "worker died on a broken config"
    assert "20-broken.conf:2" in worker.log_path.read_text()
    env.await_served("one.test", serial)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
