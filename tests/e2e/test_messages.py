"""Issue 11.7 and 11.8 end to end: MDMessageCmd as mod_md calls it, and md-status
while a renewal runs and after it ended.

What mod_md 2.6 does, read from its C code (mod_md.c `notify`, mod_md_drive.c,
md_acme_authz.c) and run against the same Pebble: for a first issuance of an MD
with two names, `renewing` (mod_md's own tests log everything but that one),
`challenge-setup:http-01:<name>` once per name before the CA is told, `renewed`,
and `installed` at activation. A command that cannot run vetoes at `renewing`; one
that fails at `challenge-setup` fails the renewal (problem challenge-setup-failure),
and when it fails `errored` too, `last.problem` is AH10109 (test_901_001/002/040).
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from tests.e2e.mdenv import APACHE_MD, executable

AH10109 = "urn:org:apache:httpd:log:AH10109:"
SCRIPT = """#!/usr/bin/python3
import os, sys, time
log, reason = sys.argv[1], sys.argv[2]
with open(log, "a") as f:
    f.write(" ".join(sys.argv[2:]) + "\\n")
if reason.startswith("challenge-setup") and os.path.exists(log + ".slow"):
    time.sleep(3)  # md-status is looked at meanwhile
fail = [p[len("fail-"):] for p in os.listdir(os.path.dirname(log)) if p.startswith("fail-")]
sys.exit(1 if any(reason.startswith(f) or f == "all" for f in fail) else 0)
"""


@pytest.fixture
def recorder(tmp_path):
    """(MDMessageCmd line, the calls it recorded, a switch: fail(reason) / slow())."""
    script = executable(tmp_path / "msg.py", SCRIPT)
    log = tmp_path / "messages.log"

    class Recorder:
        conf = f"MDMessageCmd {script} {log}\n"

        @staticmethod
        def calls() -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

        @staticmethod
        def fail(prefix: str) -> None:
            (tmp_path / f"fail-{prefix}").touch()

        @staticmethod
        def slow() -> None:
            (tmp_path / "messages.log.slow").touch()
    return Recorder


def md_status(env, name: str) -> dict:
    url = f"http://127.0.0.1:{env.apache.http_port}/md-status/{name}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def renewal(env, name: str) -> dict:
    return env.status(name).get("renewal") or {}


def test_first_issuance_sends_exactly_mod_mds_messages(env, recorder):
    vhost = env.ssl_vhost("one.test", aliases=["www.one.test"])
    env.write_config("MDomain one.test\n", vhost, recorder.conf)
    env.start()
    env.cli_ok("renew")
    calls = recorder.calls()
    assert calls[0] == "renewing one.test"
    assert sorted(calls[1:3]) == ["challenge-setup:http-01:one.test one.test",
                                  "challenge-setup:http-01:www.one.test one.test"]
    assert calls[3:] == ["renewed one.test"]
    job = renewal(env, "one.test")
    assert job["last"]["status"] == 0 and job["notified-renewed"] is True
    entries = job["log"]["entries"]
    assert entries[0]["type"] == "message-renewed"  # newest first, as test_901_003
    types = [e["type"] for e in reversed(entries)]
    assert types[:2] == ["message-renewing", "starting"]
    env.cli_ok("activate", "--reload", env.reload_command())
    assert recorder.calls()[4:] == ["installed one.test"]
    env.cli_ok("worker", "--once", "--reload-command", env.reload_command())
    assert len(recorder.calls()) == 5  # nothing more until something happens


def test_a_command_that_cannot_run_vetoes_the_renewal(env):
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"),
                     "MDMessageCmd /nonexistent/blablabla\n")
    env.start()
    assert env.cli("renew").returncode == 1
    job = renewal(env, "one.test")
    assert job["last"]["problem"] == AH10109  # as test_901_001
    assert "MDMessageCmd /nonexistent/blablabla failed with exit code 255." \
        in job["last"]["detail"]
    assert job["log"]["entries"][0] == {**job["log"]["entries"][0], "type": "message-error",
                                        "status": "renewing"}
    assert not (env.store / "staging" / "one.test" / "order.json").exists()


def test_a_failing_challenge_setup_fails_the_renewal(env, recorder):
    env.write_config("MDomain one.test\nMDomain two.test\n",
                     env.ssl_vhost("one.test", aliases=["www.one.test"])
                     + env.ssl_vhost("two.test"), recorder.conf)
    env.start()
    recorder.fail("challenge-setup")
    assert env.cli("renew", "one.test").returncode == 1
    calls = recorder.calls()
    # the first name fails: no second setup, the CA is not told; `errored` goes out
    assert calls[0] == "renewing one.test" and calls[2:] == ["errored one.test"]
    assert calls[1].startswith("challenge-setup:http-01:")
    job = renewal(env, "one.test")
    assert job["last"]["problem"] == "challenge-setup-failure"  # as test_901_040
    assert job["errors"] == 2  # the failed message counts too, as in mod_md (md_job_notify)
    # a command failing `errored` as well leaves AH10109 as the last word (test_901_002)
    recorder.fail("errored")
    assert env.cli("renew", "two.test").returncode == 1
    assert recorder.calls()[3:] == ["renewing two.test", "challenge-setup:http-01:two.test two.test",
                                    "errored two.test"]
    last = renewal(env, "two.test")["last"]
    assert last["problem"] == AH10109 and "failed with exit code 1" in last["detail"]
    assert last["activity"] == "Setting up challenge 'http-01' for domain two.test"


def test_md_status_shows_the_running_renewal_and_keeps_it_after(env, recorder):
    env.write_config("MDomain one.test\nMDomain two.test\n",
                     env.ssl_vhost("one.test") + env.ssl_vhost("two.test"), recorder.conf)
    env.start()
    recorder.slow()
    proc = subprocess.Popen(APACHE_MD + ["-f", str(env.apache.main_conf), "renew", "one.test"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            job = md_status(env, "one.test").get("renewal") or {}
            if (job.get("last") or {}).get("activity", "").startswith("Setting up challenge"):
                break
            assert proc.poll() is None and time.monotonic() < deadline, (job, proc.stdout)
            time.sleep(0.1)
    finally:
        out = proc.communicate(timeout=120)[0]
    # while it runs, as mod_md: status 0 and what it does now
    assert job["last"] == {"status": 0,
                           "activity": "Setting up challenge 'http-01' for domain one.test"}
    assert job["finished"] is False and job["errors"] == 0
    entries = job["log"]["entries"]
    assert entries[0] == {**entries[0], "type": "progress",
                          "detail": "Setting up challenge 'http-01' for domain one.test"}
    details = [e.get("detail") for e in entries]
    assert details.index(job["last"]["activity"]) < details.index(
        "Creating new order, key-spec=default, profile=none, replacing-cert=none")
    assert entries[-1]["type"] == "message-renewing"
    assert proc.returncode == 0, out
    after = md_status(env, "one.test")["renewal"]  # renew wrote it before it exited
    assert after["finished"] is True and after["last"]["status"] == 0
    assert after["log"]["entries"][0]["type"] == "message-renewed"
    # a failed one stays too, with what it was doing when it failed
    recorder.fail("challenge-setup")
    assert env.cli("renew", "two.test").returncode == 1
    failed = md_status(env, "two.test")["renewal"]
    assert failed["errors"] == 2 and failed["last"]["status"] > 0
    assert failed["last"]["problem"] == "challenge-setup-failure"
    assert failed["last"]["activity"] == "Setting up challenge 'http-01' for domain two.test"
    assert [e["type"] for e in failed["log"]["entries"][:2]] == ["message-errored",
                                                                 "renewal-error"]
