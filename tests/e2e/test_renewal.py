"""Issue 4 end to end: renewal by window, config change, ARI, profiles, failover,
backoff across restarts, and the messages that tell people about it.

Real Apache, real Pebble; Pebble 2.4 lacks ARI and profiles, so those tests
talk to Pebble through tests/harness/acmefront.py. Each step runs
`apache-md worker --once` (one check cycle, activation and graceful reload
included), so nothing depends on timing.
"""
from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import pytest
from cryptography import x509

from apache_md.core.crypto import ari_cert_id
from tests.conftest import PORTS
from tests.e2e.mdenv import MDEnv, executable
from tests.harness import AcmeFront, pki
from tests.harness.client import dns_names, key_type, s_client_cert

MSG_SCRIPT = """#!/usr/bin/python3
import os, sys
log, args = sys.argv[1], sys.argv[2:]
with open(log, "a") as f:
    f.write(" ".join(args) + "\\n")
# a file <log>.fail-<reason> makes the command fail for that reason (a veto)
sys.exit(1 if os.path.exists(f"{log}.fail-{args[-2] if len(args) > 2 else ''}") else 0)
"""


@pytest.fixture
def front(pebble):
    f = AcmeFront(pebble, PORTS["acme_port"] + 10,
                  profiles={"default": "90 days", "shortlived": "6 days"}).start()
    yield f
    f.stop()


@pytest.fixture
def messages(tmp_path):
    """(directives for MDMessageCmd + MDNotifyCmd, a reader of the lines they wrote)."""
    script = executable(tmp_path / "msg.py", MSG_SCRIPT)
    log = tmp_path / "messages.log"
    conf = f"MDMessageCmd {script} {log} msg\nMDNotifyCmd {script} {log} notify\n"

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []
    lines.log = log  # type: ignore[attr-defined]
    return conf, lines


def worker_once(env: MDEnv) -> str:
    p = env.cli_ok("worker", "--once", "--reload-command", env.reload_command())
    return p.stdout + p.stderr


def serial_of(env: MDEnv, md: str, key: str = "rsa") -> str | None:
    return env.status(md)["cert"].get(key, {}).get("serial")


def served_leaf(env: MDEnv, name: str) -> x509.Certificate:
    return s_client_cert("127.0.0.1", env.apache.https_port, name)[0]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def log_types(job: dict) -> list[str]:
    """The job log's entry types, oldest first."""
    return [e["type"] for e in reversed(job.get("log", {}).get("entries", []))]


def first_issuance(env: MDEnv, name: str = "one.test") -> str:
    worker_once(env)
    serial = serial_of(env, name)
    assert serial, env.status(name)
    env.await_served(name, serial)
    return serial


# -- renew window, messages, veto --------------------------------------------------------
def test_certificate_in_renew_window_is_replaced_with_messages_in_order(env, messages):
    conf, lines = messages
    vhost = env.ssl_vhost("one.test", aliases=["www.one.test"])
    env.write_config("MDomain one.test\n", vhost, conf)
    env.start()
    serial1 = first_issuance(env)
    first = lines()
    # `renewing` before a first issuance too, as mod_md (its test_901_003 script hides it)
    assert first[0] == "msg renewing one.test"
    assert sorted(first[1:3]) == ["msg challenge-setup:http-01:one.test one.test",
                                  "msg challenge-setup:http-01:www.one.test one.test"]
    assert first[3:] == ["notify one.test", "msg renewed one.test", "msg installed one.test"]

    # Pebble's certificates last 5 years: a 1900-day window puts this one inside it.
    env.write_config("MDomain one.test\nMDRenewWindow 1900d\n", vhost, conf)
    assert env.status("one.test")["renew"] is True

    # `renewing` can veto: nothing is ordered, and it is asked again next time
    veto = Path(f"{lines.log}.fail-renewing")
    veto.touch()
    worker_once(env)
    assert lines()[len(first):] == ["msg renewing one.test"]
    assert serial_of(env, "one.test") == serial1
    job_file = env.store / "staging" / "one.test" / "job.json"
    job = read_json(job_file)
    assert job["last"]["problem"] == "urn:org:apache:httpd:log:AH10109:"
    assert "starting" not in log_types(job) and job["errors"] == 0
    # asked again at the next check (MDCheckInterval 12h +-50%), not before
    wait = (parsedate_to_datetime(job["next-run"]) - datetime.now(timezone.utc)).total_seconds()
    assert 6 * 3600 - 60 < wait <= 18 * 3600
    worker_once(env)
    assert lines()[len(first):] == ["msg renewing one.test"]
    veto.unlink()
    job["next-run"] = format_datetime(datetime.now(timezone.utc), usegmt=True)  # time passes
    job_file.write_text(json.dumps(job))

    out = worker_once(env)
    assert "one.test (renewal window reached (1900d))" in out, out  # why, in the worker's log
    serial2 = serial_of(env, "one.test")
    assert serial2 and serial2 != serial1
    env.await_served("one.test", serial2)
    again = lines()[len(first) + 1:]
    assert again[0] == "msg renewing one.test"
    # Pebble may reuse valid authorizations: challenge-setup only for the others
    setups = [m for m in again[1:] if "challenge-setup" in m]
    assert again[1 + len(setups):] == ["notify one.test", "msg renewed one.test",
                                       "msg installed one.test"]
    # the activated job keeps mod_md's message-<reason> entries, and its steps as mod_md's
    job = read_json(env.store / "domains" / "one.test" / "job.json")
    types = log_types(job)
    assert types.index("message-renewing") < types.index("starting") \
        < types.index("message-renewed") < types.index("message-installed")
    details = [e.get("detail", "") for e in job["log"]["entries"]]
    i = details.index("Monitoring challenge status for one.test")  # newest first
    assert sorted(details[i - 2:i]) == [
        f"Monitoring challenge status for one.test: domain authorization for {d} is valid"
        for d in ("one.test", "www.one.test")], details


# -- configuration changes ------------------------------------------------------------------
def test_added_name_key_size_and_ca_change_each_trigger_a_new_order(env, front):
    mds = "MDomain one.test\n"
    env.write_config(mds, env.ssl_vhost("one.test"))
    env.start()
    serial1 = first_issuance(env)
    # nothing changed: no new order
    worker_once(env)
    assert serial_of(env, "one.test") == serial1

    env.write_config(mds, env.ssl_vhost("one.test", aliases=["new.one.test"]))
    worker_once(env)
    serial2 = serial_of(env, "one.test")
    assert serial2 != serial1
    env.await_served("new.one.test", serial2)
    assert sorted(dns_names(served_leaf(env, "new.one.test"))) == ["new.one.test", "one.test"]

    # RSA 2048 -> 3072: mod_md misses this (same file name); we compare the key
    mds = "<MDomain one.test>\n  MDPrivateKeys RSA 3072\n</MDomain>\n"
    env.write_config(mds, env.ssl_vhost("one.test", aliases=["new.one.test"]))
    worker_once(env)
    serial3 = serial_of(env, "one.test")
    assert serial3 != serial2
    env.await_served("one.test", serial3)
    assert key_type(served_leaf(env, "one.test")) == "rsa3072"

    # the CA list no longer holds the CA that issued the certificate
    md_json = read_json(env.store / "domains" / "one.test" / "md.json")
    assert md_json["ca"]["url"] == env.pebble.directory_url
    mds = ("<MDomain one.test>\n  MDPrivateKeys RSA 3072\n"
           f"  MDCertificateAuthority {front.directory_url}\n</MDomain>\n")
    env.write_config(mds, env.ssl_vhost("one.test", aliases=["new.one.test"]))
    st = env.status("one.test")
    assert st["renew"] is True
    worker_once(env)
    serial4 = serial_of(env, "one.test")
    assert serial4 != serial3
    env.await_served("one.test", serial4)
    assert read_json(env.store / "domains" / "one.test" / "md.json")["ca"]["url"] \
        == front.directory_url
    assert len(front.orders) == 1 and "replaces" not in front.orders[0]  # other CA's cert


# -- failover and backoff ---------------------------------------------------------------------
def test_failover_from_an_unreachable_ca_to_pebble(env):
    dead = "https://localhost:1/dir"
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"),
                     f"MDCertificateAuthority {dead} {env.pebble.directory_url}\n"
                     "MDRetryFailover 1\n")
    env.start()
    env.start_worker()
    mds = env.await_state(["one.test"], timeout=60)
    st = mds["one.test"]
    assert st["ca"]["url"] == env.pebble.directory_url  # md-status: the CA in use
    assert st["ca"]["urls"] == [dead, env.pebble.directory_url]
    env.await_served("one.test", st["cert"]["rsa"]["serial"])
    job = read_json(env.store / "domains" / "one.test" / "job.json")
    errors = [e for e in job["log"]["entries"] if e["type"] == "renewal-error"]
    assert errors and "localhost:1" in errors[-1]["detail"]
    details = " ".join(e.get("detail", "") for e in job["log"]["entries"])
    assert f"at {env.pebble.directory_url}" in details
    assert job["errors"] == 0 and job["finished"] is True


def test_restart_during_backoff_keeps_the_schedule(env, messages):
    conf, lines = messages
    # a CA that refuses connections, set per MD (the global one is Pebble)
    env.write_config("<MDomain one.test>\n  MDCertificateAuthority https://localhost:1/dir\n"
                     "</MDomain>\n", env.ssl_vhost("one.test"), conf + "MDRetryDelay 1h\n")
    env.start()
    worker_once(env)
    job_file = env.store / "staging" / "one.test" / "job.json"
    job1 = read_json(job_file)
    assert job1["errors"] == 1
    next_run = parsedate_to_datetime(job1["next-run"])
    delay = (next_run - parsedate_to_datetime(job1["last-run"])).total_seconds()
    assert 1800 <= delay <= 5400  # 1h +-50%
    assert lines() == ["msg renewing one.test", "msg errored one.test"]

    # a new worker (a restart) in the middle of the backoff: no early retry
    worker_once(env)
    job2 = read_json(job_file)
    assert job2["errors"] == 1 and job2["next-run"] == job1["next-run"]
    assert log_types(job2).count("starting") == 1
    assert lines() == ["msg renewing one.test", "msg errored one.test"]
    assert env.status("one.test")["renewal"]["next-run"] == job1["next-run"]

    # once the time has come (we move it), the retry runs and the delay doubles;
    # `renewing` and `errored` are rate limited to once an hour
    job2["next-run"] = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=1),
                                       usegmt=True)
    job_file.write_text(json.dumps(job2))
    worker_once(env)
    job3 = read_json(job_file)
    assert job3["errors"] == 2 and log_types(job3).count("starting") == 2
    delay = (parsedate_to_datetime(job3["next-run"])
             - parsedate_to_datetime(job3["last-run"])).total_seconds()
    assert 3600 <= delay <= 10800  # 2h +-50%
    assert lines() == ["msg renewing one.test", "msg errored one.test"]


# -- ARI ---------------------------------------------------------------------------------------
def test_ari_window_triggers_renewal_with_replaces(env, front, messages):
    conf, lines = messages
    vhost = env.ssl_vhost("one.test")

    def config(ari: str) -> None:
        env.write_config(f"<MDomain one.test>\n  MDCertificateAuthority {front.directory_url}\n"
                         f"  MDRenewViaARI {ari}\n</MDomain>\n", vhost, conf)
    config("off")
    env.start()
    serial1 = first_issuance(env)
    leaf1 = served_leaf(env, "one.test")
    cert_id = ari_cert_id(leaf1)

    # the CA says "renew now", but MDRenewViaARI off: not even asked
    front.set_window(datetime.now(timezone.utc) - timedelta(days=2),
                     datetime.now(timezone.utc) - timedelta(days=1), cert_id=cert_id,
                     explanation="https://ca.test/incident")
    worker_once(env)
    assert front.ari_requests == [] and serial_of(env, "one.test") == serial1

    config("on")
    worker_once(env)
    assert front.ari_requests == [cert_id]  # RFC 9773 encoding of the id
    serial2 = serial_of(env, "one.test")
    assert serial2 != serial1
    env.await_served("one.test", serial2)
    assert front.orders[-1].get("replaces") == cert_id
    assert "replaces" not in front.orders[0]
    job = read_json(env.store / "domains" / "one.test" / "job.json")
    assert any(e.get("detail") == "Renewal triggered by CA via ARI, explanation at "
               "https://ca.test/incident" for e in job["log"]["entries"])
    assert "msg renewing one.test" in lines()

    # the new certificate: window far ahead, Retry-After 3600 -> next poll in an hour
    worker_once(env)
    cert_id2 = ari_cert_id(served_leaf(env, "one.test"))
    assert front.ari_requests[-1] == cert_id2
    st = env.status("one.test")
    entry = st["ari"]["rsa"]
    poll_in = (parsedate_to_datetime(entry["next-poll"])
               - datetime.now(timezone.utc)).total_seconds()
    assert 3300 < poll_in <= 3600
    chosen = parsedate_to_datetime(entry["selected"])
    assert parsedate_to_datetime(entry["window"]["from"]) <= chosen \
        <= parsedate_to_datetime(entry["window"]["until"])

    # Retry-After is honoured: a window moved into the past is not seen before then
    front.window_in(-2, -1, cert_id=cert_id2)
    asked = len(front.ari_requests)
    worker_once(env)
    assert len(front.ari_requests) == asked and serial_of(env, "one.test") == serial2
    assert env.status("one.test")["ari"]["rsa"]["selected"] == entry["selected"]


# -- profiles ------------------------------------------------------------------------------------
def test_profile_on_every_order_and_mandatory_unknown_profile_fails(env, front):
    vhost = env.ssl_vhost("one.test")

    def config(extra: str) -> None:
        env.write_config(f"<MDomain one.test>\n  MDCertificateAuthority {front.directory_url}\n"
                         f"{extra}</MDomain>\n", vhost)
    config("  MDProfile shortlived\n")
    env.start()
    serial1 = first_issuance(env)
    assert [o.get("profile") for o in front.orders] == ["shortlived"]

    # a renewal by window keeps the profile; the CA refuses `replaces`: ordered again without
    front.refuse_replaces = True
    config("  MDProfile shortlived\n  MDRenewWindow 1900d\n")
    worker_once(env)
    serial2 = serial_of(env, "one.test")
    assert serial2 != serial1
    env.await_served("one.test", serial2)
    renewal = front.orders[1:]
    assert [o.get("profile") for o in renewal] == ["shortlived", "shortlived"]
    assert renewal[0].get("replaces") and "replaces" not in renewal[1]

    # a profile the CA does not offer is left out, unless it is mandatory
    config("  MDProfile XXX\n  MDRenewWindow 1900d\n")
    worker_once(env)
    assert "profile" not in front.orders[-1]
    orders = len(front.orders)
    config("  MDProfile XXX\n  MDProfileMandatory on\n  MDRenewWindow 1900d\n")
    worker_once(env)
    assert len(front.orders) == orders  # nothing ordered
    job = read_json(env.store / "staging" / "one.test" / "job.json")
    assert job["errors"] == 1 and "'XXX'" in job["last"]["detail"]
    assert env.status("one.test")["renewal"]["last"]["detail"] == job["last"]["detail"]


# -- static certificates --------------------------------------------------------------------------
def static_in_warn_window(env: MDEnv, tmp_path: Path, conf: str):
    """one.test served from MDCertificateFile, 5 days left of 90: inside its warn window."""
    now = datetime.now(timezone.utc)
    files = pki.self_signed(tmp_path, ["one.test"], not_before=now - timedelta(days=85),
                            not_after=now + timedelta(days=5))
    env.write_config(f"<MDomain one.test>\n  MDCertificateFile {files.cert}\n"
                     f"  MDCertificateKeyFile {files.key}\n</MDomain>\n",
                     env.ssl_vhost("one.test"), conf)
    return files


def test_static_certificate_in_warn_window_warns_once_and_is_not_renewed(env, messages, tmp_path):
    conf, lines = messages
    files = static_in_warn_window(env, tmp_path, conf)
    env.start()
    worker_once(env)
    assert lines() == ["msg expiring one.test"]
    worker_once(env)  # a restart does not resend it: at most once a day
    assert lines() == ["msg expiring one.test"]
    st = env.status("one.test")
    assert st["watched"] is True and "renewal" not in st
    assert not (env.store / "staging" / "one.test").exists()
    assert format(files.certificate.serial_number, "X") in \
        format(served_leaf(env, "one.test").serial_number, "X")


def test_expiring_after_a_switch_from_mod_md_keeps_mod_mds_day(env, messages, tmp_path):
    """mod_md keeps `expiring`'s rate limit in its staging job, finished, also for an MD it
    does not renew: within its day apache-md sends nothing, after it the warning comes."""
    conf, lines = messages
    static_in_warn_window(env, tmp_path, conf)
    now = datetime.now(timezone.utc)
    staging = env.store / "staging" / "one.test"

    def mod_mds_job(sent: datetime) -> None:
        when = format_datetime(sent, usegmt=True)
        staging.mkdir(parents=True, exist_ok=True)
        (staging / "job.json").write_text(json.dumps({
            "name": "one.test", "finished": True, "notified": True, "notified-renewed": False,
            "last-run": when, "errors": 0, "last": {"status": 0},
            "log": {"entries": [{"when": when, "type": "finished"},
                                {"when": when, "type": "message-expiring"},
                                {"when": when, "type": "starting"}]}}))
    mod_mds_job(now - timedelta(hours=2))
    env.start()
    worker_once(env)
    assert lines() == []
    shutil.rmtree(env.store / "watch", ignore_errors=True)
    mod_mds_job(now - timedelta(hours=25))
    worker_once(env)
    assert lines() == ["msg expiring one.test"]


def test_activation_delay_holds_back_the_renewed_set_and_its_message(env, messages):
    conf, lines = messages
    vhost = env.ssl_vhost("one.test")
    env.write_config("MDomain one.test\n", vhost, conf)
    env.start()
    serial1 = first_issuance(env)  # no current certificate: no delay
    before = len(lines())
    env.write_config("MDomain one.test\nMDRenewWindow 1900d\n", vhost,
                     conf + "MDActivationDelay 1d\n")
    worker_once(env)
    job = read_json(env.store / "staging" / "one.test" / "job.json")
    assert job["finished"] is True and job["notified-renewed"] is False
    staged = env.status("one.test")["renewal"]["cert"]["rsa"]
    wait = parsedate_to_datetime(job["valid-from"]) \
        - parsedate_to_datetime(staged["valid"]["from"])
    assert wait == timedelta(days=1)
    assert parsedate_to_datetime(job["next-run"]) == parsedate_to_datetime(job["valid-from"])
    new = lines()[before:]
    assert new[0] == "msg renewing one.test" and "msg renewed one.test" not in new
    # the next check neither orders again nor activates nor sends `renewed`
    worker_once(env)
    assert lines()[before:] == new
    assert serial_of(env, "one.test") == serial1
    env.await_served("one.test", serial1)


def test_a_window_longer_than_the_lifetime_renews_once_not_without_end(env):
    """MDRenewWindow 1900d on Pebble's 5-year certificates: each new certificate is due
    when issued. A live worker activates what it renews, so it would renew again at once,
    over and over: it gets the certificate, says why it stops, and waits MDCheckInterval
    after its renewal (`renew --force` or `worker --once` still renew)."""
    vhost = env.ssl_vhost("one.test")
    env.write_config("MDomain one.test\nMDRenewWindow 1900d\n", vhost)
    env.start()
    worker = env.start_worker()
    deadline = time.monotonic() + 60
    while "covers the whole lifetime" not in worker.log_path.read_text():
        assert time.monotonic() < deadline, worker.log_path.read_text()
        time.sleep(0.2)
    serial1 = serial_of(env, "one.test")
    assert serial1
    env.await_served("one.test", serial1)
    time.sleep(3)  # without the hold: renewed again within a second or two, and again
    said = worker.log_path.read_text()
    assert said.count("renewing: one.test") == 1, said
    assert serial_of(env, "one.test") == serial1
    assert "MDRenewWindow 1900d covers the whole lifetime" in said, said
    out = worker_once(env)
    assert "one.test (renewal window reached (1900d))" in out, out
    assert serial_of(env, "one.test") != serial1
