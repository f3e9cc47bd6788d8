"""Switching a server from Debian's mod_md to apache-md and back (issue 11's proof).

Real Apache, real Pebble (behind tests/harness/acmefront.py, which counts every
newOrder), Debian's real mod_md (/usr/lib/apache2/modules/mod_md.so). The private
ServerRoot stands in for /etc/apache2: conf.d/00-md.conf is mods-enabled/md.load
(a2enmod md), conf.d/50-apache-md.conf is conf-enabled/apache-md.conf (a2enconf
apache-md: what `apache-md apache-conf` prints), conf.d/60-site.conf the site.
Both use their default store, `md` under the ServerRoot. The switch follows
docs/debian.md "Migration from mod_md" step by step, with the store handed to an
unprivileged user as the package's postinst does and the worker running as that
user, while a probe makes TLS handshakes all the time and records what is served.
The Server and its steps are in switch.py.
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e.switch import (  # noqa: F401 - front, server, responder: fixtures
    HOSTS,
    alike,
    await_mod_md,
    await_served,
    certificate_status,
    front,
    handshake,
    hexserial,
    install,
    responder,
    same,
    served,
    server,
    static_files,
    switch_to_apache_md,
    validity,
)
from tests.harness import pki
from tests.harness.client import dns_names, s_client


# -- 1: mod_md -> apache-md ------------------------------------------------------------------
def test_mod_md_store_is_taken_over_with_no_new_order_and_no_fallback(server, responder,
                                                                       tmp_path):
    s, a = server, server.apache
    # a static certificate from a CA of the admin's own, stapled by mod_md
    ca = pki.make_ca(tmp_path, name="static test CA")
    responder.add_issuer(ca.cert.read_bytes(), ca.key.read_bytes())
    static = static_files(a.root, ca, "static.test", responder.url)
    mds = ("MDomain plain.test www.plain.test\n"
           "<MDomain keys.test>\n    MDPrivateKeys secp256r1 rsa2048\n</MDomain>\n"
           f"<MDomain static.test>\n    MDCertificateFile {static.cert}\n"
           f"    MDCertificateKeyFile {static.key}\n    MDStapling on\n</MDomain>\n")
    vhosts = [("plain.test", ["www.plain.test"], "plain.test"), ("keys.test", [], "keys.test"),
              ("static.test", [], "static.test")]
    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    a.start()
    await_mod_md(s, ["plain.test", "keys.test"])
    a.restart()  # mod_md activates staged certificates at a restart
    by_mod_md = {m["name"]: m for m in s.http_status()["managed-domains"]}
    assert all(by_mod_md[n]["state"] == 2 for n in ("plain.test", "keys.test", "static.test"))
    assert by_mod_md["static.test"]["cert"]["0"]["ocsp"]["status"] == "good"
    targets = [("plain.test", None), ("www.plain.test", None), ("keys.test", "rsa"),
               ("keys.test", "ec"), ("static.test", None)]
    want = {t: served(a.https_port, *t) for t in targets}
    assert same(want[("static.test", None)], hexserial(static.certificate))
    assert want[("keys.test", "rsa")] != want[("keys.test", "ec")]
    stapled = s_client("127.0.0.1", a.https_port, "static.test", status=True)
    assert stapled.ocsp_cert_status == "good", stapled.output
    cs_mod_md = {n: certificate_status(s, n) for n in HOSTS}
    ocsp_asked = len(responder.requests)
    orders = s.orders()
    assert sorted(orders) == [["keys.test"], ["keys.test"], ["plain.test", "www.plain.test"]]

    s.probe_start(targets)
    install(s)
    switch_to_apache_md(s, mds, vhosts)
    s.worker_status("next check")  # its first cycle over the MDs
    # 6. apache-md status
    status = s.env.cli_ok("status").stdout
    seen = s.probe_stop()

    assert s.orders() == orders, "apache-md ordered a certificate"
    for t in targets:
        assert seen[t] == {want[t]}, (t, seen[t], want[t])
    assert s.probe.count > 10
    for t in targets:
        assert served(a.https_port, *t) == want[t]
    ours = {m["name"]: m for m in s.env.status()["managed-domains"]}
    for name in ("plain.test", "keys.test", "static.test"):
        assert ours[name]["state"] == 2, ours[name]
        assert alike(validity(ours[name]), validity(by_mod_md[name])), name
        assert name in status
    # the response mod_md fetched, stapled through apache-md's relay, not fetched again
    stapled = s_client("127.0.0.1", a.https_port, "static.test", status=True)
    assert stapled.ocsp_cert_status == "good", stapled.output
    assert "POST /.httpd/ocsp-relay" in a.access_log()
    assert len(responder.requests) == ocsp_asked
    # mod_md's certificate-status, key for key (apache-md adds a static MD's files as "0")
    for name in HOSTS:
        ours = certificate_status(s, name)
        assert alike({k: ours.get(k) for k in cs_mod_md[name]}, cs_mod_md[name]), name
    # /md-status is apache-md's now (mod_md's <Location> went into the <IfModule>)
    assert {m["name"]: m["state"] for m in s.http_status()["managed-domains"]} == \
        {"plain.test": 2, "keys.test": 2, "static.test": 2}
    log = s.worker_log()
    assert "Traceback" not in log and "ERROR" not in log.split("SIGHUP", 1)[1], log


# -- 2: MDs renamed during the switch --------------------------------------------------------
def test_mds_renamed_during_the_switch_keep_their_certificates(server):
    """mod_md's "MD renamed" rules across the switch: x.test loses its first name and
    gains c.test, sw.test has ServerName and ServerAlias swapped. Neither is served a
    fallback; the one with a new name is renewed in the background, as the worker's user,
    and activated by root, as on Debian."""
    s, a = server, server.apache
    s.a2enmod_md()
    s.mod_md_site("MDomain x.test a.test b.test\nMDomain sw.test\n",
                  [("a.test", [], "x.test"), ("b.test", [], "x.test"),
                   ("sw.test", ["alias.test"], "sw.test")])
    a.start()
    await_mod_md(s, ["x.test", "sw.test"])
    a.restart()
    by_mod_md = {m["name"]: m for m in s.http_status()["managed-domains"]}
    assert by_mod_md["sw.test"]["domains"] == ["sw.test", "alias.test"]
    targets = [(n, None) for n in ("a.test", "b.test", "sw.test", "alias.test")]
    old = {t: served(a.https_port, *t) for t in targets}
    orders = s.orders()

    s.probe_start(targets + [("c.test", None)])
    install(s)
    renamed = [("a.test", [], "a.test"), ("b.test", [], "a.test"), ("c.test", [], "a.test"),
               ("alias.test", ["sw.test"], "alias.test")]
    check = switch_to_apache_md(s, "MDomain a.test b.test c.test\nMDomain alias.test\n",
                                renamed)
    assert "MD x.test renamed to a.test (a.test b.test c.test)" in check.stderr, check
    assert "MD sw.test renamed to alias.test" in check.stderr, check
    s.worker_status("next check")  # the cycle that renewed a.test for its new names
    assert "a.test" in (s.store / "status/activation/activation-requested").read_text()
    s.activate()  # apache-md-activate.path
    new = s.env.status("a.test")["cert"]["rsa"]["serial"].lstrip("0")
    assert not same(new, old[("a.test", None)])
    s.probe.await_seen(new, [(n, None) for n in ("a.test", "b.test", "c.test")])
    seen = s.probe_stop()

    assert s.orders()[len(orders):] == [["a.test", "b.test", "c.test"]], s.orders()
    for name in ("a.test", "b.test"):
        assert seen[(name, None)] == {old[(name, None)], new}, seen
    assert seen[("c.test", None)] <= {old[("a.test", None)], new}, seen  # never a fallback
    assert sorted(dns_names(handshake(a.https_port, "c.test"))) == ["a.test", "b.test", "c.test"]
    for name in ("sw.test", "alias.test"):
        assert seen[(name, None)] == {old[(name, None)]}, seen
        assert served(a.https_port, name) == old[(name, None)]
    ours = {m["name"]: m for m in s.env.status()["managed-domains"]}
    assert sorted(ours) == ["a.test", "alias.test"]
    assert ours["alias.test"]["domains"] == ["alias.test", "sw.test"]
    assert ours["alias.test"]["state"] == ours["a.test"]["state"] == 2
    assert alike(validity(ours["alias.test"]), validity(by_mod_md["sw.test"]))
    assert not (s.store / "domains/x.test").exists() and not (s.store / "domains/sw.test").exists()
    assert "Traceback" not in s.worker_log()


# -- 3: apache-md -> mod_md ------------------------------------------------------------------
def test_a_store_apache_md_wrote_is_taken_back_by_mod_md(server):
    s, a, store = server, server.apache, server.store
    # apache-md from the start, as the package sets it up
    store.mkdir(mode=0o755)
    os.chown(store, s.user.pw_uid, s.user.pw_gid)
    mds = ("MDomain back.test www.back.test\n"
           "<MDomain duo.test>\n    MDPrivateKeys secp256r1 rsa2048\n</MDomain>\n")
    vhosts = [("back.test", ["www.back.test"], "back.test"), ("duo.test", [], "duo.test")]
    s.apache_md_site(mds, vhosts)
    s.a2enconf_apache_md()
    s.env.cli_ok("check")
    a.start()
    s.start_worker()
    s.worker_status("next check")  # both obtained and staged
    s.activate()
    # a renewal (the first set goes into archive/), broken files set aside
    s.env.cli_ok("renew", "--force", "back.test")
    s.activate()
    (store / "domains/back.test/job.json").write_text("{not json")
    (store / "domains/back.test/md.json").write_text("[]")
    s.drain_status()
    s.hup_worker()
    # a cycle that the CLI's changes woke may have said "next check" meanwhile: the
    # files themselves tell when the worker has been through them
    deadline = time.monotonic() + 60
    while not all((store / f"domains/back.test/{f}.broken.1").exists()
                  for f in ("job.json", "md.json")):
        assert time.monotonic() < deadline, s.worker_log()[-3000:]
        time.sleep(0.2)
    # a renewal of duo.test staged, not yet activated: mod_md activates it at its start
    s.env.cli_ok("renew", "--force", "duo.test")
    ours = {m["name"]: m for m in s.env.status()["managed-domains"]}
    live = validity(ours["back.test"])
    staged = validity(ours["duo.test"]["renewal"])
    assert set(staged) == {"rsa", "secp256r1"} and staged != validity(ours["duo.test"])
    orders = s.orders()
    targets = [("back.test", None), ("www.back.test", None)]
    await_served(a.https_port, "back.test", live["rsa"][0])
    s.probe_start(targets)

    # what mod_md does not know is there: apache-md's own groups, files set aside
    assert all(any((store / g).iterdir()) for g in ("apache", "locks", "status", "watch"))
    # docs/debian.md: "Going back"
    s.stop_worker()  # systemctl disable --now apache-md apache-md-activate.path
    s.a2disconf_apache_md()
    s.a2enmod_md()
    s.apache_md_site(mds, vhosts, includes=False)  # the vhosts as mod_md had them
    rc, out = a.configtest()
    assert rc == 0, out
    a.stop()  # systemctl restart apache2: a new master (mod_md sets itself up only then)
    a.start()
    seen = s.probe_stop()

    # no fallback (only refused connections while Apache restarted), no order
    for target in targets:
        assert {g for g in seen[target] if not g.startswith("error")} == {live["rsa"][0]}, seen
    assert s.orders() == orders
    # mod_md activated the set apache-md staged: it decrypted apache-md's keys
    by_mod_md = {m["name"]: m for m in s.http_status()["managed-domains"]}
    assert by_mod_md["back.test"]["state"] == by_mod_md["duo.test"]["state"] == 2, by_mod_md
    assert alike(validity(by_mod_md["back.test"]), live)
    assert alike(validity(by_mod_md["duo.test"]), staged)
    assert same(served(a.https_port, "duo.test", "ec"), staged["secp256r1"][0])
    assert same(served(a.https_port, "duo.test", "rsa"), staged["rsa"][0])
    assert not by_mod_md["back.test"].get("renew") and not by_mod_md["duo.test"].get("renew")
    assert not re.search(r"\[md:(error|warn)\]", a.error_log()), a.error_log()
    # and renews in this store, with apache-md's account
    accounts = sorted(p.name for p in (store / "accounts").iterdir())
    due = "<MDomain back.test www.back.test>\n    MDRenewWindow 1900d\n</MDomain>\n"
    s.apache_md_site(mds.replace("MDomain back.test www.back.test\n", due), vhosts,
                     includes=False)
    a.graceful()
    await_mod_md(s, ["back.test"])
    s.apache_md_site(mds, vhosts, includes=False)  # as before: nothing due
    a.stop()
    a.start()
    assert s.orders()[len(orders):] == [["back.test", "www.back.test"]]
    by_mod_md = {m["name"]: m for m in s.http_status()["managed-domains"]}
    renewed = validity(by_mod_md["back.test"])
    assert renewed != live and same(served(a.https_port, "back.test"), renewed["rsa"][0])
    assert sorted(p.name for p in (store / "accounts").iterdir()) == accounts

    # and forward again ("Coming from mod_md" with the package installed): the files
    # mod_md made as root (and www-data) meanwhile go back to the package's user
    targets = [("back.test", None), ("duo.test", "rsa"), ("duo.test", "ec")]
    want = {t: served(a.https_port, *t) for t in targets}
    orders = s.orders()
    s.probe_start(targets)
    s.start_worker()  # 1. systemctl enable --now apache-md apache-md-activate.path
    s.worker_status("waiting for a valid configuration")
    s.a2dismod_md()
    s.apache_md_site(mds, vhosts)
    check = s.env.cli("check")  # an admin who forgot the chown is told
    assert check.returncode == 1, check
    assert f"belongs to root:root, mode 0700, the store to {s.user.pw_name}; chown -R " \
           f"{s.user.pw_name}: {store})" in check.stderr, check.stderr
    s.chown_store()
    switch_to_apache_md(s, mds, vhosts)
    s.worker_status("next check")
    seen = s.probe_stop()
    assert s.orders() == orders
    for t in targets:
        assert seen[t] == {want[t]}, (t, seen[t])
    ours = {m["name"]: m for m in s.env.status()["managed-domains"]}
    for name in ("back.test", "duo.test"):
        assert ours[name]["state"] == 2
        assert alike(validity(ours[name]), validity(by_mod_md[name])), name
    assert "Traceback" not in s.worker_log() and "ERROR" not in s.worker_log().split("SIGHUP")[-1]


# -- 4: what is in between: a set mod_md staged, the store's key -------------------------------
def store_key(store: Path) -> bytes:
    """The 48 bytes of md_store.json's key, which encrypt staged and account keys."""
    text = json.loads((store / "md_store.json").read_text())["key"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_set_mod_md_staged_goes_live_under_apache_md_and_the_store_key_is_shared(server):
    """mod_md obtained a certificate but Apache was not restarted since: the set waits in
    staging/ (encrypted key). apache-md activates it, renews with mod_md's account and
    key, and mod_md activates apache-md's staged set in turn, while the worker, left
    running, stands down."""
    s, a, store = server, server.apache, server.store
    mds, vhosts = "MDomain wait.test\n", [("wait.test", [], "wait.test")]
    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    a.start()
    await_mod_md(s, ["wait.test"])  # staged, not restarted: mod_md serves its fallback
    staged = store / "staging/wait.test"
    assert b"ENCRYPTED PRIVATE KEY" in (staged / "privkey.pem").read_bytes()
    by_mod_md = hexserial(x509.load_pem_x509_certificate((staged / "pubcert.pem").read_bytes()))
    # the account mod_md registered waits there too, for the activation to save it
    assert (staged / "account.json").exists() and not list((store / "accounts").iterdir())
    key, orders = store_key(store), s.orders()

    install(s)
    switch_to_apache_md(s, mds, vhosts)
    s.worker_status("next check")
    s.activate()  # the worker asked for it
    await_served(a.https_port, "wait.test", by_mod_md)
    assert s.orders() == orders
    assert not staged.exists()
    accounts = [p.name for p in (store / "accounts").iterdir()]
    assert len(accounts) == 1 and (store / "accounts" / accounts[0] / "account.pem").exists()
    live = json.loads((store / "domains/wait.test/md.json").read_text())
    assert live["ca"]["account"] == accounts[0]

    # a renewal by apache-md: mod_md's account (its key decrypted), the set staged with
    # mod_md's store key
    s.env.cli_ok("renew", "--force", "wait.test")
    assert s.orders()[len(orders):] == [["wait.test"]]
    assert [p.name for p in (store / "accounts").iterdir()] == accounts
    assert store_key(store) == key
    serialization.load_pem_private_key((staged / "privkey.pem").read_bytes(), password=key)
    renewed = hexserial(x509.load_pem_x509_certificate((staged / "pubcert.pem").read_bytes()))

    # back to mod_md, which activates it at its start; the admin forgot to stop the
    # worker, which stands down once it sees mod_md loaded
    s.a2disconf_apache_md()
    s.a2enmod_md()
    s.apache_md_site(mds, vhosts, includes=False)
    a.stop()
    a.start()
    assert served(a.https_port, "wait.test") == renewed
    st = s.http_status("wait.test")
    assert st["state"] == 2 and same(st["cert"]["rsa"]["serial"], renewed), st
    s.worker_status("waiting for a valid configuration")
    log = s.worker_log()
    assert "mod_md manages the certificates now" in log and "Traceback" not in log, log
    assert not (store / "status/worker/worker.json").exists()
    assert s.orders()[len(orders):] == [["wait.test"]]
