"""Monitoring switches and liveness, without a CA: MDCertificateStatus off, the
worker's heartbeat in md-status and metrics, the daemon-mode snippet."""
from __future__ import annotations

import signal
import time

from tests.e2e.mdenv import MDEnv
from tests.harness.client import curl

MANUAL = "<MDomain one.test>\n    MDRenewMode manual\n</MDomain>\n"


def get(env: MDEnv, path: str, host: str = "localhost", **kw):
    return curl(f"http://{host}:{env.apache.http_port}{path}", **kw)


def await_status(env: MDEnv, check, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        md = get(env, "/md-status/one.test").json()
        if check(md):
            return md
        if time.monotonic() > deadline:
            raise AssertionError(f"md-status never satisfied the check: {md}")
        time.sleep(0.2)


def test_certificate_status_off(env):
    env.write_config(MANUAL, env.ssl_vhost("one.test"), extra_globals="MDCertificateStatus off")
    env.start()
    assert get(env, "/.httpd/certificate-status", host="one.test").status == 404
    assert get(env, "/md-status").json()["managed-domains"][0]["name"] == "one.test"
    # switched back on: the next snapshot says so, no Apache reload needed
    env.write_config(MANUAL, env.ssl_vhost("one.test"))
    env.cli_ok("activate")
    assert get(env, "/.httpd/certificate-status", host="one.test").json() == {"rsa": {}}


def test_worker_heartbeat_shows_in_status_and_metrics(env):
    env.write_config(MANUAL, env.ssl_vhost("one.test"))
    env.start()
    md = get(env, "/md-status/one.test").json()
    assert "next-check" not in md
    worker = env.start_worker()
    md = await_status(env, lambda m: "next-check" in m)
    assert md["activation"]["state"] == "pending"
    metrics = get(env, "/md-status/metrics").body
    assert "\napache_md_worker_up 1\n" in metrics
    assert "apache_md_next_check_timestamp_seconds{md=\"one.test\"}" in metrics
    page = get(env, "/md-status", headers={"Accept": "text/html"}).body
    assert "worker running (pid" in page
    status = env.cli_ok("status").stdout
    assert "No apache-md worker is running" not in status
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    # the stopping worker says so in the index: the MD keeps what it had planned (every
    # MD's pieces rewritten at a stop and again at the next start was most of both)
    md = get(env, "/md-status/one.test").json()
    assert "next-check" in md
    assert "\napache_md_worker_up 0\n" in get(env, "/md-status/metrics").body
    assert "no apache-md worker is running" in \
        get(env, "/md-status", headers={"Accept": "text/html"}).body


def test_daemon_mode_snippet_serves_the_same(env):
    env.write_config(MANUAL, env.ssl_vhost("one.test"))
    env.apache.write_conf("00-apache-md", env.cli_ok("apache-conf", "--daemon").stdout)
    env.start()
    assert "WSGIDaemonProcess apache-md" in (env.apache.conf_dir / "00-apache-md.conf").read_text()
    r = get(env, "/md-status/one.test")
    assert r.status == 200 and r.json()["name"] == "one.test"
    assert get(env, "/.httpd/certificate-status", host="one.test").json() == {"rsa": {}}


def test_missing_snapshot_is_a_clear_503(env):
    env.write_config(MANUAL, env.ssl_vhost("one.test"))
    env.start()
    (env.store / "status" / "snapshot" / "status.json").unlink()
    # Removed by hand (no writer's counter moved): the handlers look at the index at
    # least every wsgi/app.py RECHECK seconds even so.
    deadline = time.monotonic() + 30
    while (r := get(env, "/md-status")).status == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.status == 503 and "no status snapshot yet" in r.body
