"""Renewals that fail as mod_md's own test suite makes them fail (test/modules/md:
test_702_auto, test_720_wildcard, test_740_acme_errors, test_900_notify,
test_901_message), under Debian's mod_md and under apache-md on fresh stores
(tests/e2e/test_side_by_side.py has the machinery). md-status must tell each the same:
state, error count, `renewal.last` (status, its description, problem, detail) and the
job log, but for the details apache-md words on purpose (README, "Renewal").
"""
from __future__ import annotations

from tests.e2e.mdenv import executable
from tests.e2e.switch import front, server  # noqa: F401 - fixtures
from tests.e2e.test_side_by_side import (
    apache_md_on_a_fresh_store,
    differences,
    md_jsons,
    renewal_stories,
)
from tests.harness._util import make_tmp_dir

# What a command does: log its arguments, exit with rc (a recorder that fails)
COMMAND = "#!/bin/sh\necho \"$@\" >> {log}\n{fail}\nexit 0\n"
# What apache-md says its own way (README): which command failed and how, where mod_md
# says "None of the offered challenge types ... could be setup successfully"
WORDED = ("detail", "log")


def ended(m: dict) -> bool:
    """The renewal failed (a problem) or finished."""
    r = m.get("renewal", {})
    return bool(r.get("last", {}).get("problem") or r.get("errors") or r.get("finished"))


def failed(m: dict) -> bool:
    """A problem, also after a finished renewal (MDNotifyCmd runs after it)."""
    return bool(m.get("renewal", {}).get("last", {}).get("problem"))


def stories(s, names, until=ended, timeout: float = 120) -> dict:
    """Each MD's renewal story once `until` holds for its md-status."""
    out = renewal_stories(s, names, timeout, until)
    for m in out.values():
        m.pop("account")  # which MD registers the shared account is a race
    return out


def compare(s, mds: str, vhosts, worded=(), until=ended) -> tuple[dict, dict]:
    """mod_md, then apache-md on a fresh store: (theirs, ours), asserting they read the
    same but for `worded` MDs' WORDED parts."""
    names = [md for _, _, md in vhosts]
    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    s.apache.start()
    theirs, stored = stories(s, names, until), md_jsons(s)
    apache_md_on_a_fresh_store(s, mds, vhosts)
    ours = stories(s, names, until)

    def cut(n, m):
        if n not in worded:
            return m
        return {**{k: v for k, v in m.items() if k not in WORDED},
                "last": {k: v for k, v in m["last"].items() if k not in WORDED}}

    found = [f"{n}{d}" for n in names for d in differences(cut(n, ours[n]), cut(n, theirs[n]))]
    found += [f"md.json {n}{d}" for n, m in stored.items()
              for d in differences(md_jsons(s).get(n), m)]
    assert not found, "\n".join(found)
    return theirs, ours


def test_refused_names_and_failing_dns01_commands_read_as_mod_mds(server):
    d = make_tmp_dir("side-fail-")
    fail = executable(d / "dns01-fail.sh", COMMAND.format(log="/dev/null", fail="exit 1"))
    mds = ("MDRetryDelay 1h\n"
           "MDomain bang.test bad!.bang.test\n"  # test_740_000
           "<MDomain nf.test *.nf.test>\n    MDCAChallenges dns-01\n"  # test_720_002
           f"    MDChallengeDns01 {d}/dns01-not-found.py\n</MDomain>\n"
           "<MDomain fail.test *.fail.test>\n    MDCAChallenges dns-01\n"  # test_720_003
           f"    MDChallengeDns01 {fail}\n</MDomain>\n"
           "<MDomain plain.test www.plain.test>\n"  # test_720_002b
           f"    MDChallengeDns01 {d}/dns01-not-found.py\n</MDomain>\n")
    vhosts = [("bang.test", ["bad!.bang.test"], "bang.test"),
              ("nf.test", ["*.nf.test"], "nf.test"),
              ("fail.test", ["*.fail.test"], "fail.test"),
              ("plain.test", ["www.plain.test"], "plain.test")]
    theirs, ours = compare(server, mds, vhosts, worded=("nf.test", "fail.test"))
    assert theirs["bang.test"]["last"]["problem"] == "urn:ietf:params:acme:error:malformed"
    assert theirs["bang.test"]["last"]["status"] == 22  # EINVAL, mod_md's for it
    assert [theirs[n]["last"]["status"] for n in ("nf.test", "fail.test")] == [20022, 20014]
    assert ours["plain.test"]["finished"]
    assert "dns01-not-found.py" in ours["nf.test"]["last"]["detail"]


def test_a_proxy_that_refuses_reads_as_mod_mds(server):
    """test_702_008: status and description as mod_md's; the detail names the proxy."""
    mds = "MDRetryDelay 1h\n<MDomain proxy.test>\n    MDHttpProxy http://localhost:1\n</MDomain>\n"
    theirs, ours = compare(server, mds, [("proxy.test", [], "proxy.test")],
                           worded=("proxy.test",))
    assert theirs["proxy.test"]["last"]["status-description"] == "Connection refused"
    detail = ours["proxy.test"]["last"]["detail"]
    assert detail.endswith("through the proxy http://localhost:1: Connection refused."), detail


def test_a_notify_command_that_cannot_run_reads_as_mod_mds(server):
    """test_900_001: after the renewal finished."""
    compare(server, "MDRetryDelay 1h\nMDNotifyCmd blablabla\nMDomain notify.test\n",
            [("notify.test", [], "notify.test")], until=failed)


def test_a_notify_command_failing_reads_as_mod_mds(server):
    """test_900_002: it exits 1."""
    d = make_tmp_dir("side-fail-")
    cmd = executable(d / "notifail.sh", COMMAND.format(log="/dev/null", fail="exit 1"))
    theirs, _ = compare(server, f"MDRetryDelay 1h\nMDNotifyCmd {cmd} x\nMDomain notify.test\n",
                        [("notify.test", [], "notify.test")], until=failed)
    assert theirs["notify.test"]["last"]["problem"] == "urn:org:apache:httpd:log:AH10108:"


def test_a_message_command_that_cannot_run_reads_as_mod_mds(server):
    """test_901_001: it vetoes the renewal at `renewing`."""
    theirs, _ = compare(server, "MDRetryDelay 1h\nMDMessageCmd blablabla\nMDomain msg.test\n",
                        [("msg.test", [], "msg.test")])
    assert theirs["msg.test"]["last"]["problem"] == "urn:org:apache:httpd:log:AH10109:"


def test_a_message_command_failing_a_challenge_setup_reads_as_mod_mds(server):
    """test_901_040: the challenge fails, and the failed message counts as an error of
    its own (mod_md's md_job_notify), which lengthens the backoff."""
    d = make_tmp_dir("side-fail-")
    log = d / "log"
    log.touch()
    log.chmod(0o666)  # mod_md's children (www-data) and apache-md's user
    cmd = executable(d / "failon.sh", COMMAND.format(
        log=log, fail='case "$2" in challenge-setup*) exit 1;; esac'))
    theirs, _ = compare(server, f"MDRetryDelay 1h\nMDMessageCmd {cmd} x\nMDomain msg.test\n",
                        [("msg.test", [], "msg.test")], worded=("msg.test",))
    assert theirs["msg.test"]["last"]["problem"] == "challenge-setup-failure"
    assert theirs["msg.test"]["errors"] == 2
