"""/.well-known/acme-challenge/ and the store's challenges/ under Debian's mod_md and
under apache-md (tests/e2e/test_side_by_side.py has the machinery), as mod_md's own
tests have them: test_720_008 (an MD validated by dns-01 only leaves the path to the
site), mod_md's PR62189 (an MD it does not renew itself, `MDRenewMode manual` or
static files, leaves the path to the site when it has no answer: another ACME client's
webroot answers there) and test_910_01 (answers of names no MD has are removed).
"""
from __future__ import annotations

import shutil
import time

from tests.e2e.switch import front, server  # noqa: F401 - fixtures
from tests.harness import pki
from tests.harness.client import curl

HOSTS = ("auto.test", "manual.test", "static.test", "dns.test", "other.test")
LEFT_OVER = ("aaa", "auto.test", "manual.test", "zzz")  # challenges/ before the start


def test_challenge_answers_and_left_over_ones_as_mod_md(server, tmp_path):
    s, a = server, server.apache
    ca = pki.make_ca(tmp_path, name="static test CA")
    static = pki.make_leaf(ca, a.root, names=("static.test",), stem="static.test",
                           with_chain=True)
    a.write_doc(".well-known/acme-challenge/theirs", "their-answer")
    # nothing is renewed while the test runs: the CA of auto.test cannot be reached
    mds = ("MDRetryDelay 1h\nMDCertificateAuthority https://localhost:9/dir\n"
           "MDomain auto.test\n"
           "<MDomain manual.test>\n    MDRenewMode manual\n</MDomain>\n"
           f"<MDomain static.test>\n    MDCertificateFile {static.cert}\n"
           f"    MDCertificateKeyFile {static.key}\n</MDomain>\n"
           "<MDomain dns.test>\n    MDCAChallenges dns-01\n    MDChallengeDns01 /bin/true\n"
           "</MDomain>\n")
    vhosts = [(n, [], n) for n in HOSTS if n != "other.test"]

    def left_over():
        d = s.store / "challenges"
        d.mkdir(parents=True, exist_ok=True)
        for name in LEFT_OVER:
            (d / name).mkdir(exist_ok=True)

    def look() -> dict:
        out = {}
        for host in HOSTS:
            for token in ("theirs", "none"):
                r = curl(f"http://{host}:{a.http_port}/.well-known/acme-challenge/{token}")
                out[f"{host} {token}"] = [r.status, r.body if r.status == 200 else None]
        out["challenges/"] = sorted(p.name for p in (s.store / "challenges").iterdir())
        return out

    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    left_over()
    a.start()
    theirs = look()
    assert theirs["manual.test theirs"] == [200, "their-answer"], theirs
    assert theirs["challenges/"] == ["auto.test", "manual.test"], theirs

    a.stop()
    shutil.rmtree(s.store)
    s.store.mkdir()
    left_over()
    s.install_package()
    s.a2dismod_md()
    s.apache_md_site(mds, vhosts)
    s.a2enconf_apache_md()
    a.start()
    s.hup_worker()
    s.worker_status("next check")
    deadline = time.monotonic() + 30
    while (ours := look()) != theirs and time.monotonic() < deadline:
        time.sleep(0.5)  # the first snapshot
    assert ours == theirs
