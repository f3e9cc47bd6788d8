"""The dns-01 hooks: the test helper for pebble-challtestsrv and the nsupdate example."""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "tests" / "harness" / "dns01_hook.py"
NSUPDATE_HOOK = REPO / "examples" / "dns01-nsupdate.sh"


@pytest.fixture
def challtestsrv():
    """Records the management API calls challtestsrv would get."""
    calls = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            calls.append((self.path, json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
    srv.calls = calls
    yield srv
    srv.shutdown()


def test_challtestsrv_hook(challtestsrv, tmp_path):
    url = f"http://127.0.0.1:{challtestsrv.server_address[1]}"
    log = tmp_path / "calls.log"

    def run(*args, env=None):
        return subprocess.run([sys.executable, str(HOOK), *args], capture_output=True, text=True,
                              env=dict(os.environ, **(env or {})), timeout=30)
    assert run("--url", url, "--log", str(log), "setup", "a.test", "v1").returncode == 0
    assert run("setup", "a.test", "v2", env={"CHALLTESTSRV_URL": url}).returncode == 0
    assert run("--url", url, "--log", str(log), "teardown", "a.test", "v1").returncode == 0
    assert challtestsrv.calls == [
        ("/set-txt", {"host": "_acme-challenge.a.test.", "value": "v1"}),
        ("/set-txt", {"host": "_acme-challenge.a.test.", "value": "v2"}),
        ("/clear-txt", {"host": "_acme-challenge.a.test."})]
    assert log.read_text() == "setup a.test v1\nteardown a.test v1\n"
    p = run("--url", "http://127.0.0.1:9", "setup", "a.test", "v")
    assert p.returncode == 1 and "challtestsrv at http://127.0.0.1:9" in p.stderr


@pytest.fixture
def fake_nsupdate(tmp_path):
    """An `nsupdate` that records its arguments and the commands it was given."""
    rec = tmp_path / "nsupdate.rec"
    fake = tmp_path / "nsupdate"
    fake.write_text(f'#!/bin/sh\necho "args: $*" >> {rec}\ncat >> {rec}\nexit "${{FAIL:-0}}"\n')
    fake.chmod(0o755)
    conf = tmp_path / "nsupdate.conf"
    conf.write_text(f"NSUPDATE={fake}\nNSUPDATE_SERVER=ns1.example.test\n"
                    f"NSUPDATE_KEY=/etc/apache-md/tsig.key\nNSUPDATE_ZONE=example.test\n")
    return conf, rec


def nsupdate(conf, *args, env=None):
    return subprocess.run(["/bin/sh", str(NSUPDATE_HOOK), "-c", str(conf), *args],
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, **(env or {})))


def test_nsupdate_example_syntax():
    assert subprocess.run(["/bin/sh", "-n", str(NSUPDATE_HOOK)]).returncode == 0
    assert os.access(NSUPDATE_HOOK, os.X_OK)


def test_nsupdate_example_updates(fake_nsupdate):
    conf, rec = fake_nsupdate
    assert nsupdate(conf, "setup", "*.www.example.test", "VALUE1").returncode == 0
    assert nsupdate(conf, "teardown", "www.example.test", "VALUE1").returncode == 0
    assert nsupdate(conf, "teardown", "www.example.test").returncode == 0
    assert rec.read_text().split("\n") == [
        "args: -k /etc/apache-md/tsig.key",
        "server ns1.example.test 53", "zone example.test",
        '''update add _acme-challenge.www.example.test. 60 IN TXT "VALUE1"''', "send",
        "args: -k /etc/apache-md/tsig.key",
        "server ns1.example.test 53", "zone example.test",
        '''update delete _acme-challenge.www.example.test. IN TXT "VALUE1"''', "send",
        "args: -k /etc/apache-md/tsig.key",
        "server ns1.example.test 53", "zone example.test",
        "update delete _acme-challenge.www.example.test. IN TXT", "send", ""]


def test_nsupdate_example_failures(fake_nsupdate, tmp_path):
    conf, _ = fake_nsupdate
    assert nsupdate(conf, "setup", "a.example.test", "V", env={"FAIL": "2"}).returncode == 2
    assert nsupdate(conf, "setup", "a.example.test").returncode == 2  # no value: usage
    assert nsupdate(conf, "renew", "a.example.test").returncode == 2
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    p = nsupdate(empty, "setup", "a.example.test", "V")
    assert p.returncode != 0 and "NSUPDATE_SERVER" in p.stderr
