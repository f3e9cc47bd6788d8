"""mod_md and apache-md answering the same configuration and store, compared key by key.

Debian's real mod_md obtains the certificates (real Pebble), Apache restarts to use
them, and everything a monitoring system reads is recorded: /md-status, each MD's
/md-status/<name>, /.httpd/certificate-status of every host, MDRequireHttps'
answers. Then the server switches to apache-md as docs/debian.md says, and the same
requests must get the same answers: the same keys in the same order, the same values
(dates a second apart, "now" as now), but for what apache-md documents as its own
additions (README, Monitoring).
"""
from __future__ import annotations

import json
import re
import shutil
import time
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from tests.e2e.mdenv import executable
from tests.e2e.switch import (  # noqa: F401 - front, server, responder: fixtures
    alike,
    await_mod_md,
    front,
    hexserial,
    install,
    responder,
    same,
    served,
    server,
    static_files,
    switch_to_apache_md,
)
from tests.harness import pki
from tests.harness._util import make_tmp_dir
from tests.harness.canned import canned
from tests.harness.client import curl

# apache-md's additions to mod_md's md-status (README, Monitoring)
OURS_MD = ("activation", "next-check", "last-renewal", "ari", "broken-files")
OURS_OCSP = ("fetched", "refresh-at", "responder")
NOW = "<now>"


def ours_only(obj: dict) -> dict:
    """An md-status object without apache-md's additions."""
    obj = {k: v for k, v in obj.items() if k not in OURS_MD}
    if "renewal" in obj:
        obj["renewal"] = {k: v for k, v in obj["renewal"].items() if k != "ca-url"}
    cert = {}
    for key, c in obj.get("cert", {}).items():
        if isinstance(c, dict) and "ocsp" in c:
            c = {**c, "ocsp": {k: v for k, v in c["ocsp"].items() if k not in OURS_OCSP}}
        cert[key] = c
    obj["cert"] = cert
    return obj


def at_now(obj, when: float):
    """renew-at within a few seconds of the request (mod_md's for an incomplete MD is the
    time of the request) reads as NOW, so that answers made minutes apart compare."""
    if isinstance(obj, dict):
        return {k: (NOW if k == "renew-at" and _near(v, when) else at_now(v, when))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [at_now(v, when) for v in obj]
    return obj


def _near(text, when: float) -> bool:
    try:
        return abs(parsedate_to_datetime(text).timestamp() - when) < 5
    except (TypeError, ValueError):
        return False


def differences(ours, theirs, path="") -> list[str]:
    """Where two JSON values differ: missing or extra keys, key order, values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = [f"{path}/{k}: only mod_md has it" for k in theirs if k not in ours]
        out += [f"{path}/{k}: only apache-md has it" for k in ours if k not in theirs]
        common = [k for k in theirs if k in ours]
        if common != [k for k in ours if k in theirs]:
            out.append(f"{path}: keys in another order")
        for k in common:
            out += differences(ours[k], theirs[k], f"{path}/{k}")
        return out
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs))
                for d in differences(a, b, f"{path}[{i}]")]
    if not alike(ours, theirs):
        return [f"{path}: apache-md {ours!r}, mod_md {theirs!r}"]
    return []


def answers(s, names, hosts) -> dict:
    """What a monitoring system reads, as of now."""
    when = time.time()
    port = s.apache.http_port
    out = {"list": s.http_status()}
    out["list"].pop("version")  # the installed mod_md's own, apache-md's the one it follows
    for name in names:
        got = s.http_status(name)
        got.pop("version", None)
        out[name] = got
    for host in hosts:
        r = curl(f"http://{host}:{port}/.httpd/certificate-status")
        out[f"certificate-status {host}"] = [r.status, r.json() if r.status == 200 else None]
    for path in ("/", "/page?q=1", "/.httpd/other", "/.well-known/x"):
        r = curl(f"http://https.test:{port}{path}")
        out[f"http {path}"] = [r.status, r.headers.get("location")]
    r = curl(f"https://https.test:{s.apache.https_port}/.httpd/certificate-status",
             insecure=True)
    out["https certificate-status"] = [r.status, r.headers.get("strict-transport-security")]
    r = curl(f"https://https.test:{s.apache.https_port}/", insecure=True)
    out["https /"] = [r.status, r.headers.get("strict-transport-security")]
    for key, value in out.items():
        if isinstance(value, dict) and "managed-domains" in value:  # the list
            value["managed-domains"] = [ours_only(m) for m in value["managed-domains"]]
        elif isinstance(value, dict) and "name" in value:
            out[key] = ours_only(value)
        elif key.startswith("certificate-status") and value[1]:
            value[1].pop("0", None)  # apache-md adds static files' certificates (README)
    return at_now(out, when)


def md_jsons(s) -> dict:
    """domains/*/md.json as stored: what a switch back to mod_md reads again."""
    out = {}
    for path in sorted((s.store / "domains").glob("*/md.json")):
        out[path.parent.name] = json.loads(path.read_text())
    return out


def test_monitoring_reads_what_mod_md_answered(server, responder, tmp_path):
    s, a = server, server.apache
    ca = pki.make_ca(tmp_path, name="static test CA")
    responder.add_issuer(ca.cert.read_bytes(), ca.key.read_bytes())
    static = static_files(a.root, ca, "static.test", responder.url)
    mds = ("MDomain plain.test www.plain.test\n"
           "<MDomain keys.test>\n    MDPrivateKeys secp256r1 rsa2048\n"
           "    MDRenewWindow 10d\n    MDWarnWindow 5%\n"
           f"    MDCACertificateFile {s.env.pebble.ca_bundle}\n</MDomain>\n"
           "<MDomain https.test>\n    MDRequireHttps permanent\n"
           "    MDContactEmail other@example.test\n</MDomain>\n"
           "<MDomain manual.test>\n    MDRenewMode manual\n</MDomain>\n"
           f"<MDomain static.test>\n    MDCertificateFile {static.cert}\n"
           f"    MDCertificateKeyFile {static.key}\n    MDStapling on\n</MDomain>\n")
    vhosts = [("plain.test", ["www.plain.test"], "plain.test"), ("keys.test", [], "keys.test"),
              ("https.test", [], "https.test"), ("manual.test", [], "manual.test"),
              ("static.test", [], "static.test")]
    names = ["plain.test", "www.plain.test", "keys.test", "https.test", "manual.test",
             "static.test", "unknown.test"]
    hosts = [h for h, _, _ in vhosts]
    s.http_names = ["https.test"]
    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    a.start()
    await_mod_md(s, ["plain.test", "keys.test", "https.test"])
    a.restart()  # mod_md activates staged certificates at a restart
    time.sleep(1)  # its first OCSP fetch for static.test
    theirs = answers(s, names, hosts)
    assert {m["name"]: m["state"] for m in theirs["list"]["managed-domains"]} == {
        "plain.test": 2, "keys.test": 2, "https.test": 2, "manual.test": 1, "static.test": 2}
    stored = md_jsons(s)

    install(s)
    switch_to_apache_md(s, mds, vhosts)
    s.worker_status("next check")
    ours = answers(s, names, hosts)

    found = [f"{key}{d}" for key in theirs for d in differences(ours[key], theirs[key])]
    found += [f"md.json {n}{d}" for n, m in stored.items()
              for d in differences(md_jsons(s).get(n), m)]
    assert not found, "\n".join(found)
    assert theirs["http /"][0] == 301 and theirs["certificate-status https.test"][0] == 200


def test_the_comparison_finds_a_difference():
    """differences() is what the test above relies on: it must see each kind."""
    theirs = {"a": 1, "b": {"c": "Wed, 02 Dec 2026 08:00:00 GMT", "d": [1, 2]}, "e": 0}
    assert differences(theirs, theirs) == []
    near = {"a": 1, "b": {"c": "Wed, 02 Dec 2026 08:00:01 GMT", "d": [1, 2]}, "e": 0}
    assert differences(near, theirs) == []
    ours = {"b": {"d": [1, 3], "c": "Wed, 02 Dec 2026 08:00:02 GMT"}, "a": 1, "x": 0}
    assert differences(ours, theirs) == [
        "/e: only mod_md has it", "/x: only apache-md has it", ": keys in another order",
        "/b: keys in another order",
        "/b/c: apache-md 'Wed, 02 Dec 2026 08:00:02 GMT', mod_md 'Wed, 02 Dec 2026 08:00:00 GMT'",
        "/b/d[1]: apache-md 3, mod_md 2"]
    t = parsedate_to_datetime("Wed, 02 Dec 2026 08:00:00 GMT").timestamp()
    soon, later = "Wed, 02 Dec 2026 08:00:03 GMT", "Wed, 02 Dec 2026 08:00:09 GMT"
    assert at_now({"x": [{"renew-at": soon}], "y": soon}, t) == {"x": [{"renew-at": NOW}],
                                                                   "y": soon}
    assert at_now({"renew-at": later}, t) == {"renew-at": later}


def test_mds_without_certificates_read_as_mod_mds(server):
    """Not used by any vhost, no usable challenge, a wildcard without dns-01, renewed
    without a vhost (MDRenewMode always): states, renew-at, the renewal's errors and
    log as mod_md left them, after the switch too."""
    s, a = server, server.apache
    # no second try while the test runs, by either: the errors and logs stay as they are
    mds = ("MDRetryDelay 1h\nMDomain unused.test\n"
           "<MDomain alpn.test>\n    MDCAChallenges tls-alpn-01\n</MDomain>\n"
           "MDomain *.wild.test\n"
           "<MDomain always.test>\n    MDRenewMode always\n</MDomain>\n")
    vhosts = [("alpn.test", [], "alpn.test"), ("x.wild.test", [], "*.wild.test")]
    names = ["unused.test", "alpn.test", "*.wild.test", "always.test"]

    def read() -> dict:
        when = time.time()
        return at_now({n: ours_only(s.http_status(n)) for n in names}, when)

    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    a.start()
    await_mod_md(s, ["always.test"])
    theirs = read()
    assert theirs["alpn.test"]["renewal"]["errors"] > 0, theirs["alpn.test"]
    assert theirs["*.wild.test"]["renewal"]["errors"] > 0, theirs["*.wild.test"]
    assert {n: m["state"] for n, m in theirs.items()} == dict.fromkeys(names, 1)
    stored = md_jsons(s)
    assert "state-descr" in stored["alpn.test"], stored["alpn.test"]  # what is compared

    s.install_package()
    s.a2dismod_md()
    s.apache_md_site(mds, vhosts)
    check = s.env.cli("check")
    assert check.returncode == 1 and "can only be validated with the dns-01" in check.stderr
    s.a2enconf_apache_md()
    s.reload()
    s.worker_status("next check")
    ours = read()
    found = [f"{n}{d}" for n in names for d in differences(ours[n], theirs[n])]
    found += [f"md.json {n}{d}" for n, m in stored.items()
              for d in differences(md_jsons(s).get(n), m)]
    assert not found, "\n".join(found)


def test_a_renewal_waiting_for_its_activation_reads_as_mod_mds(server, tmp_path):
    """A certificate near its end renewed under MDActivationDelay: the new set waits in
    staging until a day after its notBefore. md-status's renewal (its message, ready
    time, staged certificate), /.httpd/certificate-status's `renewal` and md.json read
    as mod_md left them, after the switch too, and nothing is activated early."""
    s, a = server, server.apache
    mds = "MDActivationDelay 1d\nMDomain renew.test\n"
    vhosts = [("renew.test", [], "renew.test")]
    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    a.start()
    await_mod_md(s, ["renew.test"])  # a first certificate: no delay (none is live)
    a.restart()
    # the live set replaced by one two days from its end: within the renew window
    ca = pki.make_ca(tmp_path, name="old CA")
    now = datetime.now(timezone.utc)
    old = pki.make_leaf(ca, tmp_path, names=("renew.test",), stem="old",
                        not_before=now - timedelta(days=20), not_after=now + timedelta(days=2),
                        with_chain=True)
    live = s.store / "domains/renew.test"
    shutil.copyfile(old.cert, live / "pubcert.pem")
    shutil.copyfile(old.key, live / "privkey.pem")
    a.restart()
    deadline = time.monotonic() + 120
    while not s.http_status("renew.test").get("renewal", {}).get("cert"):
        assert time.monotonic() < deadline, s.http_status("renew.test")
        time.sleep(0.5)
    theirs = answers(s, ["renew.test"], ["renew.test"])
    stored = md_jsons(s)
    assert "can be used from" in theirs["renew.test"]["renewal"]["last"]["detail"], theirs

    install(s)
    switch_to_apache_md(s, mds, vhosts)
    s.worker_status("next check")
    ours = answers(s, ["renew.test"], ["renew.test"])
    assert same(served(a.https_port, "renew.test"), hexserial(old.certificate))
    found = [f"{key}{d}" for key in theirs for d in differences(ours[key], theirs[key])]
    found += [f"md.json {n}{d}" for n, m in stored.items()
              for d in differences(md_jsons(s).get(n), m)]
    assert not found, "\n".join(found)


DATE = re.compile(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT")


BAD_NONCE = "problem: urn:ietf:params:acme:error:badNonce"
NEW_ACCOUNT = re.compile(r"Creating new ACME account for \S+$")


def renewal_story(st: dict) -> dict:
    """What one renewal did, as md-status tells it, without its times, serials and the
    backoff's jitter (mod_md's is +-50%). Which MD registers the account that all share
    is a race: `account` says whether this one did. The CA lists an order's
    authorizations in any order: `www.` names are read as the names they precede. Pebble
    refuses a twentieth of the nonces at random: mod_md notes each, apache-md retries."""
    r = st.get("renewal", {})
    last = {k: v for k, v in r.get("last", {}).items() if k != "valid-from"}
    log = [[e["type"].replace("www.", ""),
            DATE.sub("<date>", e.get("detail", "")).replace("www.", "")]
           for e in r.get("log", {}).get("entries", []) if BAD_NONCE not in e.get("detail", "")]
    return {"state": st["state"], "state-descr": st.get("state-descr"), "renew": st.get("renew"),
            "finished": r.get("finished"), "errors": r.get("errors"), "last": last,
            "log": [e for e in log if not NEW_ACCOUNT.match(e[1])],
            "account": any(NEW_ACCOUNT.match(e[1]) for e in log)}


def test_renewals_on_fresh_stores_read_as_mod_mds(server):
    """The same configuration on a fresh store under each, one after the other: every
    step of each renewal in the job log as mod_md writes it, the same errors for a CA
    that cannot be reached or answers 404 for its directory, the same md.json files."""
    s, a = server, server.apache
    mds = ("MDRetryDelay 1h\n"
           "<MDomain down.test>\n    MDCertificateAuthority https://localhost:9/dir\n"
           "</MDomain>\n"
           f"<MDomain nodir.test>\n    MDCertificateAuthority {s.front.directory_url}x\n"
           "</MDomain>\n"
           "MDomain ok.test www.ok.test\n"
           "<MDomain ec.test>\n    MDPrivateKeys secp384r1\n</MDomain>\n")
    vhosts = [("down.test", [], "down.test"), ("nodir.test", [], "nodir.test"),
              ("ok.test", ["www.ok.test"], "ok.test"), ("ec.test", [], "ec.test")]
    names = [md for _, _, md in vhosts]

    def stories() -> dict:
        return renewal_stories(s, names)

    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    a.start()
    theirs, stored = stories(), md_jsons(s)
    assert theirs["down.test"]["last"]["status"] == 111, theirs["down.test"]
    assert theirs["nodir.test"]["last"]["status"] == 11, theirs["nodir.test"]
    assert theirs["ok.test"]["finished"] and theirs["ec.test"]["finished"], theirs

    apache_md_on_a_fresh_store(s, mds, vhosts)
    ours = stories()
    for side in (theirs, ours):
        assert sum(m.pop("account") for m in side.values()) == 1, side
    found = [f"{n}{d}" for n in names for d in differences(ours[n], theirs[n])]
    found += [f"md.json {n}{d}" for n, m in stored.items()
              for d in differences(md_jsons(s).get(n), m)]
    assert not found, "\n".join(found)


def finished_or_failed(m: dict) -> bool:
    """md-status says the renewal finished or failed."""
    return bool(m.get("renewal", {}).get("errors") or m.get("renewal", {}).get("finished"))


def renewal_stories(s, names: list[str], timeout: float = 120,
                    until=finished_or_failed) -> dict:
    """Each MD's renewal_story once `until` holds for every one's md-status."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = {n: s.http_status(n) for n in names}
        except ValueError:  # apache-md's 503 before its first snapshot
            got = {}
        if got and all(until(got[n]) for n in names):
            return {n: renewal_story(m) for n, m in got.items()}
        assert time.monotonic() < deadline, got
        time.sleep(0.5)


def apache_md_on_a_fresh_store(s, mds: str, vhosts) -> None:
    """The same site under apache-md, on an empty store (not a switch: each side renews
    from nothing): mod_md's Apache stopped, the package in, the site and apache-md's
    conf enabled, Apache started and the worker told (systemctl start apache2)."""
    s.apache.stop()
    shutil.rmtree(s.store)
    s.store.mkdir()
    s.install_package()
    s.a2dismod_md()
    s.apache_md_site(mds, vhosts)
    s.a2enconf_apache_md()
    s.apache.start()
    s.hup_worker()


# What a URL that is no ACME CA's directory answers: (status, content type, body)
NOT_A_DIRECTORY = {
    "html": (200, "text/html", b"<html>a web site</html>"),
    "garbled": (200, "application/json", b"{not json"),
    "empty": (200, "application/json", b"{}"),
    "list": (200, "application/json", b"[1, 2]"),
    "v1": (200, "application/json", b'{"new-reg": "http://127.0.0.1:1/reg"}'),
    "e500": (500, "application/problem+json",
             b'{"type": "urn:ietf:params:acme:error:serverInternal", "detail": "db down"}'),
    "e404": (404, "application/problem+json",
             b'{"type": "urn:ietf:params:acme:error:malformed", "detail": "no such"}'),
    "e503": (503, "text/plain", b"down for maintenance"),
}


def test_directories_that_cannot_be_read_read_as_mod_mds(server):
    """CA URLs whose directory is no ACME v2 directory (a web page, garbled or foreign
    JSON, an error status with a problem document or without, 503 maintenance) or whose
    name does not resolve: the renewal's status, its description, mod_md's words and the
    job log as mod_md writes them, on fresh stores under each. The CA's own words, which
    mod_md does not show, go to apache-md's worker log."""
    s, a = server, server.apache
    with canned(NOT_A_DIRECTORY) as base:  # the CA URLs' server
        cas = {f"{n}.test": f"{base}/{n}" for n in NOT_A_DIRECTORY}
        cas["unresolved.test"] = "https://ca.nosuchname.invalid/dir"
        mds = "MDRetryDelay 1h\n" + "".join(
            f"<MDomain {n}>\n    MDCertificateAuthority {url}\n</MDomain>\n" for n, url in cas.items())
        vhosts = [(n, [], n) for n in cas]

        def stories() -> dict:
            return renewal_stories(s, list(cas))

        s.a2enmod_md()
        s.mod_md_site(mds, vhosts)
        a.start()
        theirs, stored = stories(), md_jsons(s)
        apache_md_on_a_fresh_store(s, mds, vhosts)
        ours = stories()
    assert {n: m["last"]["status"] for n, m in theirs.items()} == {
        "html.test": 2, "garbled.test": 22, "empty.test": 22, "list.test": 22, "v1.test": 22,
        "e500.test": 11, "e404.test": 11, "e503.test": 11, "unresolved.test": 111}, theirs
    found = [f"{n}{d}" for n in cas for d in differences(ours[n], theirs[n])]
    found += [f"md.json {n}{d}" for n, m in stored.items()
              for d in differences(md_jsons(s).get(n), m)]
    assert not found, "\n".join(found)
    log = s.worker_log()
    assert "db down" in log and "does not resolve" in log, log[-3000:]


RECORDER = """#!/usr/bin/python3
import sys
with open(sys.argv[1], "a") as f:
    f.write(" ".join(sys.argv[2:]) + "\\n")
"""


def test_messages_redirects_and_warnings_read_as_mod_mds(server, tmp_path):
    """MDMessageCmd's calls (renewing, challenge-setup, renewed, installed at the
    restart, errored for a CA that cannot be reached, expiring for a static and a
    manual MD in their warn window), MDRequireHttps temporary and permanent (status,
    Location, HSTS, the ACME challenge path left alone) and md-status as mod_md left
    them; after the switch apache-md sends none of them again and answers the same."""
    s, a = server, server.apache
    d = make_tmp_dir("side-msg-")
    log = d / "messages.log"
    log.touch()
    log.chmod(0o666)  # mod_md's children (www-data), its parent (root), apache-md's user
    script = executable(d / "msg.py", RECORDER)
    ca = pki.make_ca(tmp_path, name="static test CA")
    now = datetime.now(timezone.utc)
    ending = {n: pki.make_leaf(ca, a.root, names=(n,), stem=n, with_chain=True,
                               not_before=now - timedelta(days=20),
                               not_after=now + timedelta(days=5))
              for n in ("static.test", "manual.test")}
    live = s.store / "domains/manual.test"
    live.mkdir(parents=True)
    shutil.copyfile(ending["manual.test"].cert, live / "pubcert.pem")
    shutil.copyfile(ending["manual.test"].key, live / "privkey.pem")
    mds = (f"MDRetryDelay 1h\nMDMessageCmd {script} {log}\nMDomain ok.test\n"
           "<MDomain temp.test>\n    MDRequireHttps temporary\n</MDomain>\n"
           "<MDomain perm.test>\n    MDRequireHttps permanent\n</MDomain>\n"
           "<MDomain down.test>\n    MDCertificateAuthority https://localhost:9/dir\n</MDomain>\n"
           f"<MDomain static.test>\n    MDCertificateFile {ending['static.test'].cert}\n"
           f"    MDCertificateKeyFile {ending['static.test'].key}\n    MDWarnWindow 10d\n"
           "</MDomain>\n"
           "<MDomain manual.test>\n    MDRenewMode manual\n    MDWarnWindow 10d\n</MDomain>\n")
    names = ["ok.test", "temp.test", "perm.test", "down.test", "static.test", "manual.test"]
    vhosts = [(n, [], n) for n in names]
    s.http_names = ["temp.test", "perm.test"]

    def look() -> dict:
        when = time.time()
        # mod_md purges down.test's failed run at its restart (AH10064), apache-md tries
        # again at once: its renewal is compared in test_renewals_on_fresh_stores
        out = {n: ours_only(s.http_status(n)) for n in names if n != "down.test"}
        for host in s.http_names:
            for path in ("/", "/x?y=1", "/.well-known/acme-challenge/none"):
                r = curl(f"http://{host}:{a.http_port}{path}")
                out[f"http {host}{path}"] = [r.status, r.headers.get("location"),
                                             r.headers.get("strict-transport-security")]
            for path in ("/", "/.httpd/certificate-status"):
                r = curl(f"https://{host}:{a.https_port}{path}", insecure=True)
                out[f"https {host}{path}"] = [r.status, r.headers.get("location"),
                                              r.headers.get("strict-transport-security")]
        return at_now(out, when)

    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    a.start()
    await_mod_md(s, ["ok.test", "temp.test", "perm.test"])
    a.restart()  # mod_md activates the staged sets: `installed`
    deadline = time.monotonic() + 30
    while log.read_text().count("installed") < 3 or log.read_text().count("expiring") < 2:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    theirs, stored, sent = look(), md_jsons(s), log.read_text().splitlines()
    per_md = {n: [m for m in sent if m.endswith(" " + n)] for n in names}
    # mod_md tries down.test again after its restart when its first try had failed
    # before it (AH10064 purges the failed job): once or twice, by timing
    down = per_md["down.test"]
    assert down and down == ["renewing down.test", "errored down.test"] * (len(down) // 2), sent
    per_md["down.test"] = down[:2]
    # and its watchdog, before and after the restart, may warn twice (its job not yet saved)
    for n in ("static.test", "manual.test"):
        assert per_md[n] and set(per_md[n]) == {"expiring " + n}, sent
        per_md[n] = per_md[n][:1]
    assert per_md == {
        **{n: ["renewing " + n, f"challenge-setup:http-01:{n} {n}", "renewed " + n,
               "installed " + n] for n in ("ok.test", "temp.test", "perm.test")},
        "down.test": ["renewing down.test", "errored down.test"],
        "static.test": ["expiring static.test"], "manual.test": ["expiring manual.test"]}, sent
    # MDPortMap https:<port> is public 443: the Location carries no port
    assert theirs["http temp.test/x?y=1"][:2] == [302, "https://temp.test/x?y=1"]
    assert theirs["https perm.test/"][2], theirs  # HSTS

    install(s)
    switch_to_apache_md(s, mds, vhosts)
    s.worker_status("next check")
    ours = look()
    found = [f"{key}{x}" for key in theirs for x in differences(ours[key], theirs[key])]
    found += [f"md.json {n}{x}" for n, m in stored.items()
              for x in differences(md_jsons(s).get(n), m)]
    assert not found, "\n".join(found)
    again = [m for m in log.read_text().splitlines()[len(sent):] if "down.test" not in m]
    assert again == [], again
