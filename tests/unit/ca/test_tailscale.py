"""The tailscaled LocalAPI client and a renewal through it, against the stand-in daemon
(tests/harness/tailscaled.py) on a real unix socket."""
from __future__ import annotations

import os
import pwd
import socket
import threading
from datetime import datetime, timedelta, timezone

import pytest

from apache_md.ca import tailscale
from apache_md.ca.drive import Driver
from apache_md.core import crypto
from apache_md.core.durations import Timeslice
from apache_md.core.model import GlobalSettings, Location, ManagedDomain, VHost
from apache_md.core.problem import CAProblem
from apache_md.notify import Messenger
from apache_md.store import jobs
from apache_md.store.fs import DOMAINS, STAGING, Store
from tests.harness.tailscaled import Tailscaled, go_duration

NODE = "node.tailnet-test.ts.net"
DAY = timedelta(days=1)
NOW = datetime.now(timezone.utc)


@pytest.fixture
def daemon(tmp_path):
    d = Tailscaled(tmp_path / "tailscaled.sock", [NODE], tmp_path / "pki").start()
    yield d
    d.stop()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    return s


def ts_md(daemon_or_path, names=(NODE,), **kw) -> ManagedDomain:
    path = getattr(daemon_or_path, "socket_path", daemon_or_path)
    kw.setdefault("vhosts", [VHost(Location("x.conf", 1), server_name=names[0], ssl=True)])
    return ManagedDomain(name=names[0], domains=list(names), location=Location("x.conf", 1),
                         ca_proto="tailscale", ca_urls=[f"file://localhost{path}"], **kw)


def drive(store, md):
    return Driver(store, GlobalSettings(store_dir=str(store.base)),
                  Messenger(None, None, str(store.base))).run(md)


def fetch(daemon, domain=NODE, validity=DAY):
    return tailscale.LocalAPI(daemon.socket_path).cert_pair(domain, validity)


def problem(daemon, domain=NODE) -> CAProblem:
    with pytest.raises(CAProblem) as e:
        fetch(daemon, domain)
    return e.value


# -- the request and the answer -----------------------------------------------------------
def test_pair_request_as_tailscale_client_sends_it(daemon):
    key_pem, chain_pem = fetch(daemon, validity=timedelta(days=31))
    asked = daemon.requests[-1]
    assert asked.path == f"/localapi/v0/cert/{NODE}"
    assert asked.host == "local-tailscaled.sock"  # the only Host tailscaled accepts
    assert asked.query["type"] == "pair"
    assert go_duration(asked.query["min_validity"]) == 31 * 86400  # Go's ParseDuration reads it
    assert asked.uid == os.getuid()
    # the body came chunked (Go's net/http does that above 2 KB): key first, then the chain
    key = crypto.key_from_pem(key_pem)
    chain = crypto.load_chain(chain_pem)
    assert len(chain) == 2 and crypto.key_matches_cert(key, chain[0])
    assert crypto.cert_names(chain[0]) == [NODE]


def test_the_daemon_refuses_other_hosts_which_is_what_broke_mod_md(daemon):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon.socket_path)
        s.sendall(f"GET /localapi/v0/cert/{NODE}?type=crt HTTP/1.1\r\nHost: localhost\r\n"
                  "Connection: close\r\n\r\n".encode())
        answer = s.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 403") and b"invalid localapi request" in answer


def test_split_pair_as_tailscale_client_does():
    key = b"-----BEGIN EC PRIVATE KEY-----\nAA\n-----END EC PRIVATE KEY-----\n"
    cert = b"-----BEGIN CERTIFICATE-----\nBB\n-----END CERTIFICATE-----\n"
    assert tailscale.split_pair(key + cert + cert) == (key, cert + cert)
    with pytest.raises(CAProblem, match="no key and certificate"):
        tailscale.split_pair(cert)
    with pytest.raises(CAProblem, match="a key among the certificates"):
        tailscale.split_pair(cert + key)


# -- who may ask --------------------------------------------------------------------------
def test_a_user_the_daemon_does_not_permit_is_told_the_setting(daemon):
    daemon.root_uids = set()  # play: the caller is not root
    p = problem(daemon)
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert (p.status, p.description) == (13, "Permission denied")
    assert "cert access denied" in p.detail and f"TS_PERMIT_CERT_UID={user}" in p.detail
    assert p.ca_url == f"file://localhost{daemon.socket_path}"  # counted for the metrics
    daemon.permit_cert_uid = os.getuid()
    assert fetch(daemon)
    daemon.permit_cert_uid, daemon.operator_uid = None, os.getuid()
    assert fetch(daemon)


# -- the daemon's errors ------------------------------------------------------------------
def test_a_name_not_of_this_node_gets_the_daemons_list(daemon):
    p = problem(daemon, "other.tailnet-test.ts.net")
    assert p.status == 20014
    assert f'must be one of ["{NODE}"]' in p.detail
    assert "must be this node's name" in p.detail


def test_https_disabled_in_the_tailnet_says_where_to_enable_it(daemon):
    daemon.cert_domains = []
    p = problem(daemon)
    assert "does not support getting TLS certs" in p.detail
    assert "HTTPS Certificates" in p.detail and "admin console" in p.detail


def test_wildcards_only_where_the_tailnet_allows_them(daemon):
    assert "wildcard certificates are not enabled" in problem(daemon, f"*.{NODE}").detail
    daemon.wildcards = True
    _, chain_pem = fetch(daemon, f"*.{NODE}")
    assert crypto.cert_names(crypto.load_chain(chain_pem)[0]) == [f"*.{NODE}", NODE]


def test_rate_limit_keeps_retry_after(daemon):
    daemon.fail = (429, "acme: rate limited", {"Retry-After": "3600"})
    p = problem(daemon)
    assert p.retry_after == 3600 and "rate-limits" in p.detail and "acme: rate limited" in p.detail


def test_statuses_without_a_certificate_service():
    p = tailscale.problem_from_status(404, "Not Found", b"404 page not found\n", NODE)
    assert (p.status, p.description) == (2, "No such file or directory")
    assert "no certificate service" in p.detail
    p = tailscale.problem_from_status(503, "Service Unavailable", b"no backend\n", NODE)
    assert "tailscale status" in p.detail


def test_missing_socket_is_mod_mds_message(tmp_path):
    path = str(tmp_path / "nothing.sock")
    with pytest.raises(CAProblem) as e:
        tailscale.LocalAPI(path).cert_pair(NODE, DAY)
    assert (e.value.status, e.value.description) == (2, "No such file or directory")
    assert e.value.detail == f"tailscale socket not available, may not be up: {path}"


def test_a_socket_nobody_listens_on_means_the_daemon_is_down(tmp_path):
    path = str(tmp_path / "dead.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)  # the file exists, nothing accepts
        with pytest.raises(CAProblem) as e:
            tailscale.LocalAPI(path).cert_pair(NODE, DAY)
    assert e.value.status == 111 and "is it running?" in e.value.detail
    (tmp_path / "plain").write_text("")
    with pytest.raises(CAProblem, match="is not a socket"):
        tailscale.LocalAPI(str(tmp_path / "plain")).cert_pair(NODE, DAY)


def test_a_daemon_that_does_not_answer_times_out_or_stops(tmp_path):
    path = str(tmp_path / "silent.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        s.listen(1)
        with pytest.raises(CAProblem) as e:
            tailscale.LocalAPI(path, timeout=0.2).cert_pair(NODE, DAY)
        assert e.value.status == 70007
        stop = threading.Event()
        stop.set()
        with pytest.raises(CAProblem) as e:
            tailscale.LocalAPI(path, stop=stop).cert_pair(NODE, DAY)
        assert e.value.description == "Stopped"


# -- what to ask for ----------------------------------------------------------------------
def _info(days_left: float, lifetime: float = 90):
    return crypto.CertInfo(not_before=NOW - timedelta(days=lifetime - days_left),
                           not_after=NOW + timedelta(days=days_left), serial="01", sha256="",
                           issuer_name="", issuer_uri=None, ocsp_url=None, ari_cert_id=None,
                           names=(NODE,), must_staple=False)


def test_min_validity_outlasts_the_window_and_the_live_certificate():
    md = ts_md("/x", renew_window=Timeslice(percent=33))
    # inside the window (10 days left of 90): a third of the lifetime, and a day
    assert tailscale.min_validity(md, _info(10), NOW) == timedelta(seconds=int(90 * 86400 * .33)) + DAY
    # forced while 80 days are left: longer than the live certificate
    assert tailscale.min_validity(md, _info(80), NOW) == timedelta(days=80) + DAY
    # nothing live yet: Let's Encrypt's 90 days
    assert tailscale.min_validity(md, None, NOW) == timedelta(seconds=int(90 * 86400 * .33)) + DAY
    md.renew_window = Timeslice(seconds=14 * 86400)
    assert tailscale.min_validity(md, _info(5), NOW) == timedelta(days=15)
    assert tailscale.go_duration(timedelta(days=15)) == "1296000s"


# -- one renewal through the drive ----------------------------------------------------------
def test_a_renewal_stages_the_daemons_pair_like_an_acme_result(daemon, store):
    md = ts_md(daemon)
    result = drive(store, md)
    assert result.outcome == "renewed", result.detail
    key_file = store.path(STAGING, md.name, "privkey.pem")
    assert b"ENCRYPTED" in key_file.read_bytes()  # as every key the store keeps in staging
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = crypto.key_from_pem(key_file.read_bytes(), store.key)
    chain = crypto.load_chain(store.read_bytes(STAGING, md.name, "pubcert.pem"))
    assert crypto.key_matches_cert(key, chain[0]) and len(chain) == 2
    staged = store.read_json(STAGING, md.name, "md.json")
    assert staged["ca"] == {"proto": "tailscale", "url": md.ca_urls[0], "urls": md.ca_urls}
    job = jobs.load(store, STAGING, md.name)
    assert job.finished and job.errors == 0
    details = [e.get("detail", "") for e in job.log]
    assert any(f"Asking tailscaled at {daemon.socket_path} for the certificate of {NODE}" in d
               for d in details)
    assert not any("ACME" in d for d in details)


def test_an_md_the_daemon_cannot_cover_fails_before_asking(daemon, store):
    md = ts_md(daemon, names=(NODE, "www.example.org"))
    result = drive(store, md)
    assert result.outcome == "failed" and "one name" in result.detail
    assert not daemon.requests
    last = jobs.load(store, STAGING, md.name).last
    assert (last["status"], last["status-description"]) == (22, "Invalid argument")


def test_the_same_certificate_again_is_not_a_renewal(daemon, store, tmp_path):
    daemon.honour_min_validity = False  # a tailscaled before 1.72
    key_pem, chain_pem = fetch(daemon)
    store.write_bytes(DOMAINS, NODE, "pubcert.pem", chain_pem)
    store.write_bytes(DOMAINS, NODE, "privkey.pem", key_pem, mode=0o600)
    result = drive(store, ts_md(daemon))
    assert result.outcome == "failed"
    job = jobs.load(store, STAGING, NODE)
    assert "tailscale has not renewed the certificate yet" in job.last["detail"]
    assert (job.next_run - datetime.now(timezone.utc)) > timedelta(hours=23)  # daily, as mod_md
    assert not store.exists(STAGING, NODE, "pubcert.pem")


def test_the_key_type_the_daemon_chose_is_no_reason_to_renew(daemon, store):
    from apache_md.core.schedule import missing_reason
    key_pem, chain_pem = fetch(daemon)
    info = crypto.cert_info(crypto.load_chain(chain_pem)[0])
    assert info.key_type == "secp256r1"
    assert missing_reason(ts_md(daemon), {"rsa": info}) is None
    acme = ManagedDomain(name=NODE, domains=[NODE], location=Location("x.conf", 1))
    assert "configured is rsa2048" in missing_reason(acme, {"rsa": info})

