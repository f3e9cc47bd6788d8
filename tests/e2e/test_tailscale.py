"""Issue 11.12 end to end: an MD with `MDCertificateProtocol tailscale` gets its certificate
from tailscaled's LocalAPI, is activated and served by real Apache, renews when the daemon's
certificate is inside the renew window, and reports the daemon's errors.

tailscaled cannot run here; tests/harness/tailscaled.py stands in for it on a unix socket
(same paths, query, Host rule, peer-credential rule, errors), with certificates from its own
test CA. No Pebble: this MD never talks ACME. Each step is `apache-md worker --once` or
`apache-md renew`, so nothing depends on timing.
"""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest

from apache_md.apache.includes import include_path
from tests.e2e.mdenv import MDEnv
from tests.e2e.test_monitoring import _families, _sample
from tests.e2e.test_renewal import MSG_SCRIPT, worker_once
from tests.harness._util import make_tmp_dir
from tests.harness.client import curl, s_client_cert, verify_chain
from tests.harness.tailscaled import Tailscaled, go_duration

NODE = "web.tailnet-test.ts.net"


@pytest.fixture
def tsenv(apache, tmp_path):
    """(MDEnv, the stand-in daemon (not started), a reader of MDMessageCmd's lines)."""
    sock_dir = make_tmp_dir("ts-")  # a short path: AF_UNIX allows 108 bytes
    daemon = Tailscaled(sock_dir / "tailscaled.sock", [NODE], tmp_path / "ts-pki")
    env = MDEnv(apache, None)
    script, log = tmp_path / "msg.py", tmp_path / "messages.log"
    script.write_text(MSG_SCRIPT)
    script.chmod(0o755)
    a = apache
    env.apache.write_conf("10-md", f"""<IfModule md_module>
    MDStoreDir {env.store}
    MDPortMap http:{a.http_port} https:{a.https_port}
    MDRetryDelay 60s
    MDMessageCmd {script} {log}
    <MDomain {NODE}>
        MDCertificateProtocol tailscale
        MDCertificateAuthority file://localhost{daemon.socket_path}
    </MDomain>
</IfModule>
<VirtualHost 127.0.0.1:{a.https_port}>
    ServerName {NODE}
    SSLEngine on
    Include {include_path(str(env.store), NODE)}
</VirtualHost>
""")
    env.apache.write_conf("00-apache-md", env.cli_ok("apache-conf").stdout)

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []
    yield env, daemon, lines
    env.stop_workers()
    daemon.stop()
    shutil.rmtree(sock_dir, ignore_errors=True)


def served(env: MDEnv):
    return s_client_cert("127.0.0.1", env.apache.https_port, NODE)


def serial(cert) -> str:
    """As md-status writes it (BN_bn2hex: whole bytes)."""
    s = format(cert.serial_number, "X")
    return s.zfill(len(s) + len(s) % 2)


def test_certificate_from_the_daemon_is_served_and_renewed_in_the_window(tsenv):
    env, daemon, lines = tsenv
    daemon.start()
    # the daemon's cached certificate was issued 85 of its 90 days ago: inside MDRenewWindow
    # (33%) and MDWarnWindow (10%)
    daemon.backdate = timedelta(days=85)
    check = env.cli_ok("check")
    assert "warning" not in check.stderr and f"CA: file://localhost{daemon.socket_path}" in check.stdout
    env.start()
    out = worker_once(env)
    assert "Traceback" not in out
    first = daemon.issued[-1]
    st = env.status(NODE)
    assert st["state"] == 2 and st["cert"]["rsa"]["serial"] == serial(first)
    assert st["ca"] == {"proto": "tailscale", "url": f"file://localhost{daemon.socket_path}",
                        "urls": [f"file://localhost{daemon.socket_path}"]}
    env.await_served(NODE, serial(first))
    chain = served(env)
    assert verify_chain(chain, daemon.ca.cert, hostname=NODE)  # the daemon's CA, its chain
    r = curl(f"https://{NODE}:{env.apache.https_port}/", cacert=daemon.ca.cert)
    assert r.status in (200, 403, 404)  # TLS verified by curl against the stand-in's root
    # stored as an ACME result is: the key encrypted in staging, plain and 0600 once live
    live_key = env.store / "domains" / NODE / "privkey.pem"
    assert live_key.stat().st_mode & 0o777 == 0o600
    # `renewing` before every run, a first one too, as mod_md
    assert lines() == [f"renewing {NODE}", f"renewed {NODE}", f"installed {NODE}",
                       f"expiring {NODE}"]
    asked = daemon.requests[-1]
    assert (asked.path, asked.query["type"]) == (f"/localapi/v0/cert/{NODE}", "pair")
    # nothing was live yet: at least a third of Let's Encrypt's 90 days, and a day
    assert go_duration(asked.query["min_validity"]) == int(90 * 86400 * .33) + 86400

    # the live certificate (5 days left) is inside the window
    assert parsedate_to_datetime(st["renew-at"]) <= datetime.now(timezone.utc)
    daemon.backdate = timedelta(hours=1)  # what the daemon issues now is fresh
    worker_once(env)
    second = daemon.issued[-1]
    assert second != first
    # asked for longer than its cached one lives: the daemon renewed at once
    assert go_duration(daemon.requests[-1].query["min_validity"]) > 5 * 86400
    st = env.status(NODE)
    assert st["cert"]["rsa"]["serial"] == serial(second)
    env.await_served(NODE, serial(second))
    assert lines()[4:] == [f"renewing {NODE}", f"renewed {NODE}", f"installed {NODE}"]
    assert parsedate_to_datetime(st["renew-at"]) > datetime.now(timezone.utc) + timedelta(days=50)

    # nothing due: the daemon is not asked again
    asked = len(daemon.requests)
    worker_once(env)
    assert len(daemon.requests) == asked and env.status(NODE)["cert"]["rsa"]["serial"] == \
        serial(second)
    port = env.apache.http_port
    fams = _families(curl(f"http://localhost:{port}/md-status/metrics").body)
    ca = f"file://localhost{daemon.socket_path}"
    assert _sample(fams, "apache_md_ca_renewals", ca=ca, outcome="success") == 2
    assert _sample(fams, "apache_md_state", md=NODE, state="complete") == 1


def test_the_daemons_errors_end_up_in_md_status_with_backoff(tsenv):
    env, daemon, lines = tsenv
    env.start()
    # tailscaled not running: its socket does not exist
    out = worker_once(env)
    last = env.status(NODE)["renewal"]["last"]
    assert (last["status"], last["status-description"]) == (2, "No such file or directory")
    assert last["detail"] == f"tailscale socket not available, may not be up: {daemon.socket_path}"
    assert f"renewal failed: {last['detail']}" in out  # and in the worker's log
    job = env.status(NODE)["renewal"]
    assert job["errors"] == 1
    backoff = parsedate_to_datetime(job["next-run"]) - parsedate_to_datetime(job["last-run"])
    assert backoff >= timedelta(seconds=30)  # MDRetryDelay 60s, jittered by +-50%
    assert lines() == [f"renewing {NODE}", f"errored {NODE}"]

    def renew_fails() -> dict:
        p = env.cli("renew", "--force", NODE)
        assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
        return env.status(NODE)["renewal"]["last"]

    daemon.root_uids = set()  # the worker is not root, and tailscaled does not permit it
    daemon.start()
    last = renew_fails()
    assert last["status-description"] == "Permission denied"
    assert "cert access denied" in last["detail"] and "TS_PERMIT_CERT_UID=" in last["detail"]

    daemon.permit_cert_uid = os.getuid()
    daemon.cert_domains = []  # HTTPS certificates are off in the tailnet
    assert "HTTPS Certificates" in renew_fails()["detail"]

    daemon.cert_domains = ["other.tailnet-test.ts.net"]  # not this node's name
    last = renew_fails()
    assert 'must be one of ["other.tailnet-test.ts.net"]' in last["detail"]
    assert env.status(NODE)["renewal"]["errors"] == 4
    assert env.status(NODE)["state"] == 1  # still the fallback, nothing lost

    daemon.cert_domains = [NODE]
    env.cli_ok("renew", "--force", NODE)
    env.cli_ok("activate", "--reload", env.reload_command())
    env.await_served(NODE, serial(daemon.issued[-1]))
    assert env.status(NODE)["state"] == 2
