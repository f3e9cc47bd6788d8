"""MDMessageCmd / MDNotifyCmd: arguments, log entries, problem URNs, rate limits."""
from datetime import datetime, timedelta, timezone

import pytest

from apache_md.core.job import Job
from apache_md.notify import PROBLEM_MESSAGE, PROBLEM_NOTIFY, Messenger

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SCRIPT = """#!/bin/sh
echo "$@" >> {log}
[ ! -e {log}.fail-"$2" ]
"""


@pytest.fixture
def cmd(tmp_path):
    log = tmp_path / "log"
    script = tmp_path / "msg.sh"
    script.write_text(SCRIPT.format(log=log))
    script.chmod(0o755)

    def lines():
        return log.read_text().splitlines() if log.exists() else []
    return str(script), lines, log


def test_arguments_order_and_log_entries(cmd):
    script, lines, _ = cmd
    m = Messenger(f"{script} msg", f"{script} notify")
    job = Job("a.test")
    assert m.send(job, "challenge-setup:http-01:www.a.test", "a.test", T0)
    assert m.send(job, "renewed", "a.test", T0)
    # MDNotifyCmd gets only the MD name, and runs before MDMessageCmd
    assert lines() == ["msg challenge-setup:http-01:www.a.test a.test",
                       "notify a.test", "msg renewed a.test"]
    assert [e["type"] for e in job.log] == ["message-renewed",
                                            "message-challenge-setup:http-01:www.a.test"]
    assert job.notified and job.notified_renewed


def test_entries_are_written_without_a_command():
    job = Job("a.test")
    assert Messenger(None).send(job, "expiring", "a.test", T0)
    assert job.last_log_time("message-expiring") == T0


@pytest.mark.parametrize("reason,limit", [
    ("expiring", timedelta(days=1)), ("errored", timedelta(hours=1)),
    ("renewing", timedelta(hours=1)), ("renewed", timedelta(days=1)),
    ("installed", timedelta(days=1)), ("ocsp-errored", timedelta(hours=1)),
    ("ocsp-renewed", timedelta(days=1))])
def test_rate_limits(cmd, reason, limit):
    script, lines, _ = cmd
    m = Messenger(f"{script} msg")
    job = Job("a.test")
    assert m.send(job, reason, "a.test", T0)
    assert m.send(job, reason, "a.test", T0 + limit - timedelta(seconds=1))  # skipped = ok
    assert len(lines()) == 1
    assert m.rate_limited(job, reason, T0 + limit - timedelta(seconds=1))
    assert not m.rate_limited(job, reason, T0 + limit)
    assert m.send(job, reason, "a.test", T0 + limit)
    assert len(lines()) == 2


def test_rate_limit_survives_the_job_file():
    job = Job("a.test")
    Messenger(None).send(job, "expiring", "a.test", T0)
    again = Job.from_json("a.test", job.to_json())
    assert Messenger(None).rate_limited(again, "expiring", T0 + timedelta(hours=23))


def test_challenge_setup_is_never_rate_limited(cmd):
    script, lines, _ = cmd
    m = Messenger(f"{script} msg")
    job = Job("a.test")
    for _ in range(3):
        assert m.send(job, "challenge-setup:http-01:a.test", "a.test", T0)
    assert len(lines()) == 3


def test_failing_message_command_is_recorded_and_not_rate_limited(cmd):
    script, lines, log = cmd
    (log.parent / "log.fail-errored").touch()
    m = Messenger(f"{script} msg")
    job = Job("a.test")
    assert not m.send(job, "errored", "a.test", T0)
    assert job.last["problem"] == PROBLEM_MESSAGE
    assert job.log[0]["type"] == "message-error" and job.log[0]["status"] == "errored"
    assert not m.send(job, "errored", "a.test", T0 + timedelta(seconds=1))  # tried again
    assert len(lines()) == 2


def test_failing_notify_command_blocks_the_message(cmd, tmp_path):
    script, lines, _ = cmd
    m = Messenger(f"{script} msg", "/bin/false")
    job = Job("a.test")
    assert not m.send(job, "renewed", "a.test", T0)
    assert job.last["problem"] == PROBLEM_NOTIFY and job.log[0]["type"] == "notify-error"
    assert lines() == [] and not job.notified_renewed


def test_missing_command_fails_without_traceback():
    job = Job("a.test")
    assert not Messenger("/nonexistent/cmd").send(job, "renewed", "a.test", T0)
    assert job.last["problem"] == PROBLEM_MESSAGE


def test_failures_read_as_mod_mds_and_keep_the_activity(cmd):
    script, lines, log = cmd
    (log.parent / "log.fail-challenge-setup:http-01:a.test").touch()
    job = Job("a.test")
    job.start_run(T0)
    job.progress("Setting up challenge 'http-01' for domain a.test")
    assert not Messenger(f"{script} msg").send(job, "challenge-setup:http-01:a.test", "a.test",
                                               T0)
    assert job.last == {"status": 20014, "status-description":
                        "Internal error (specific information not available)",
                        "problem": PROBLEM_MESSAGE,
                        "detail": f"MDMessageCmd {script} msg failed with exit code 1.",
                        "activity": "Setting up challenge 'http-01' for domain a.test"}
    job = Job("a.test")
    assert not Messenger(None, "/bin/false").send(job, "renewed", "a.test", T0)
    assert job.log[0] == {**job.log[0], "type": "notify-error", "status": PROBLEM_NOTIFY,
                          "detail": "MDNotifyCmd /bin/false failed with exit code 1."}


@pytest.mark.parametrize("reason,notified", [
    ("renewing", False), ("errored", False), ("installed", False), ("ocsp-renewed", False),
    ("expiring", True), ("challenge-setup:dns-01:a.test", True), ("renewed", True)])
def test_notified_only_for_what_a_job_waits_on(reason, notified):
    job = Job("a.test")
    assert Messenger(None).send(job, reason, "a.test", T0)
    assert job.notified is notified and job.notified_renewed is (reason == "renewed")
