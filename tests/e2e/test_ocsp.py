"""Issue 7 end to end: OCSP stapling that survives responder outages and restarts.

Real Apache (mod_ssl stapling through apache-md's relay), real Pebble with an
OCSP URL in its certificates, a real OCSP responder signing with Pebble's
intermediate key (tests/harness/ocsp_responder.py), `openssl s_client -status`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.e2e.mdenv import MDEnv
from tests.harness import Apache, OCSPResponder, pki
from tests.harness.client import curl, s_client

MD = "a.test"


@pytest.fixture(scope="module")
def responder():
    r = OCSPResponder().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def ocsp_pebble(pebble, responder):
    """The session's Pebble, writing the responder's URL into its certificates."""
    with pebble.configured(ocsp_responder_url=responder.url):
        responder.set_issuers([(pebble.intermediate_pem, pebble.intermediate_key_pem)])
        yield pebble


@pytest.fixture
def env(apache, ocsp_pebble, responder, tmp_path):
    responder.start()
    responder.mode = "good"
    responder.status_by_serial.clear()
    responder.validity = dt.timedelta(hours=1)
    e = MDEnv(apache, ocsp_pebble)
    e.messages = tmp_path / "messages.log"
    script = tmp_path / "message.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {e.messages}\n')
    os.chmod(script, 0o755)
    e.message_cmd = str(script)
    yield e
    e.stop_workers()


def configure(env: MDEnv, extra: str = "", vhosts: str = "") -> None:
    env.write_config(f"MDMessageCmd {env.message_cmd}\nMDStapling on\nMDomain {MD}\n{extra}",
                     env.ssl_vhost(MD) + vhosts)


def until(what: str, pred, timeout: float = 60, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def cert_ocsp(env: MDEnv, key: str = "rsa") -> dict:
    return env.status(MD)["cert"].get(key, {}).get("ocsp", {})


def messages(env: MDEnv) -> list[str]:
    return env.messages.read_text().splitlines() if env.messages.exists() else []


def stapled(env: MDEnv, name: str = MD):
    return s_client("127.0.0.1", env.apache.https_port, name, status=True)


def ocsp_files(env: MDEnv, md: str = MD) -> dict[str, bytes]:
    d = env.store / "ocsp" / md
    return {f.name: f.read_bytes() for f in sorted(d.glob("ocsp-*.json"))} if d.exists() else {}


def test_stapled_response_survives_responder_outage_and_restart(env, responder):
    configure(env)
    env.start()
    env.start_worker()
    serial = env.await_state([MD], timeout=90)[MD]["cert"]["rsa"]["serial"]
    env.await_served(MD, serial)
    o = until("a good OCSP response in md-status", lambda: cert_ocsp(env).get("status") == "good"
              and cert_ocsp(env))
    assert set(o["valid"]) == {"from", "until"} and o["responder"] == responder.url
    assert o["renewal"]["errors"] == 0 and o["renewal"]["log"]["entries"]
    # stored as mod_md does: ocsp/<md>/ocsp-<sha1 of the certificate DER>.json
    (name, raw), = ocsp_files(env).items()
    assert set(json.loads(raw)) == {"response", "status", "valid"}
    assert "ocsp-renewed a.test" in messages(env)
    relay = f"http://127.0.0.1:{env.apache.http_port}/.httpd/ocsp-relay"
    assert f"mod_ssl fetches responses from {relay}" in env.cli_ok("check").stdout
    assert re.search(r"OCSP rsa +good, valid until", env.cli_ok("status", MD).stdout)
    base = f"http://127.0.0.1:{env.apache.http_port}/md-status"
    until("OCSP in the metrics", lambda: 'apache_md_ocsp_status{md="a.test",certificate="rsa",'
          'status="good"} 1' in curl(f"{base}/metrics").body)
    page = curl(f"{base}/{MD}", headers={"Accept": "text/html"}).body
    assert "<h2>OCSP stapling</h2>" in page and '<td data-label="Status">good</td>' in page

    r = stapled(env)
    assert r.ocsp_stapled and r.ocsp_cert_status == "good", r.output
    assert f"Serial Number: {serial}" in r.output, r.output
    asked = len(responder.requests)
    assert "POST /.httpd/ocsp-relay" in env.apache.access_log()

    # The CA's responder goes away, the worker too, and Apache restarts (its
    # stapling cache is gone): the handshake still carries the stored response.
    responder.stop()
    env.stop_workers()
    relayed = env.apache.access_log().count("/.httpd/ocsp-relay")
    env.apache.restart()
    r = stapled(env)
    assert r.ocsp_stapled and r.ocsp_cert_status == "good", r.output
    assert env.apache.access_log().count("/.httpd/ocsp-relay") > relayed  # from the store
    assert len(responder.requests) == asked
    assert ocsp_files(env) == {name: raw}


def test_revoked_certificate_is_replaced_without_a_manual_step(env, responder):
    responder.validity = dt.timedelta(seconds=8)  # the worker asks again within seconds
    configure(env)
    env.start()
    worker = env.start_worker()
    serial = env.await_state([MD], timeout=90)[MD]["cert"]["rsa"]["serial"]
    until("a good OCSP response", lambda: cert_ocsp(env).get("status") == "good")
    responder.revoke(int(serial, 16))
    until("the revocation seen", lambda: any(json.loads(v)["status"] == "revoked"
                                             for v in ocsp_files(env).values()), timeout=30)
    seen = time.monotonic()
    new = until("a new certificate after the revocation",
                lambda: (s := env.status(MD)["cert"].get("rsa", {}).get("serial")) != serial
                and s, timeout=90)
    env.await_served(MD, new)
    replaced_after = time.monotonic() - seen
    print(f"revoked certificate replaced and served {replaced_after:.1f}s after the OCSP answer")
    assert "certificate revoked (rsa, OCSP)" in Path(worker.log_path).read_text()
    until("the new certificate stapled good", lambda: stapled(env).ocsp_cert_status == "good")
    msgs = messages(env)  # issued, stapled, revoked (ocsp-renewed: at most daily), renewed
    second = msgs[msgs.index("ocsp-renewed a.test"):]
    assert ["renewing a.test", "renewed a.test", "installed a.test"] == [
        m for m in second if m.split()[0] in ("renewing", "renewed", "installed")], msgs


def test_response_with_bad_signature_is_never_stapled(env, responder):
    responder.mode = "bad-signature"
    responder.validity = dt.timedelta(seconds=60)
    configure(env, "MDStaplingRenewWindow 90%\n")  # ask again 6 s after a good answer
    env.start()
    env.start_worker()
    serial = env.await_state([MD], timeout=90)[MD]["cert"]["rsa"]["serial"]
    env.await_served(MD, serial)
    job = until("an OCSP error", lambda: cert_ocsp(env).get("renewal", {}).get("errors")
                and cert_ocsp(env)["renewal"])
    assert "signature does not verify" in job["last"]["detail"]
    assert job["log"]["entries"][0]["type"] in ("ocsp-error", "message-ocsp-errored")
    assert cert_ocsp(env)["status"] == "unknown" and "valid" not in cert_ocsp(env)
    assert ocsp_files(env) == {}
    r = stapled(env)
    assert not r.ocsp_stapled and r.ocsp_cert_status is None, r.output
    until("ocsp-errored message", lambda: "ocsp-errored a.test" in messages(env))

    # A good answer is taken (after the backoff), then a forged one again: the
    # good one stays stored and stapled.
    responder.mode = "good"
    until("a good OCSP response", lambda: cert_ocsp(env).get("status") == "good")
    good = ocsp_files(env)
    responder.mode = "bad-signature"
    errors = cert_ocsp(env)["renewal"]["errors"]
    until("the next OCSP error", lambda: cert_ocsp(env)["renewal"]["errors"] > errors)
    assert ocsp_files(env) == good
    r = until("a good staple", lambda: (x := stapled(env)).ocsp_cert_status == "good" and x)
    assert r.ocsp_stapled


def test_staple_others_and_skip_certificates_without_responder(env, responder, tmp_path):
    ca = pki.make_ca(tmp_path / "ca", name="other test CA")
    responder.add_issuer(ca.certificate, ca.private_key)
    other = pki.make_leaf(ca, tmp_path / "o", names=("other.test",), stem="other",
                          ocsp_url=responder.url, with_chain=True)
    plain = pki.make_leaf(ca, tmp_path / "p", names=("plain.test",), stem="plain",
                          with_chain=True)
    for f in (other.cert, plain.cert):
        os.chmod(f.parent, 0o755)
    port = env.apache.https_port
    vhosts = "".join(
        f"<VirtualHost 127.0.0.1:{port}>\n    ServerName {n}\n    SSLEngine on\n"
        f"    SSLCertificateFile {c.cert}\n    SSLCertificateKeyFile {c.key}\n</VirtualHost>\n"
        for n, c in (("other.test", other), ("plain.test", plain)))
    configure(env, vhosts=vhosts)
    env.start()
    worker = env.start_worker()
    until("the other certificate's response", lambda: ocsp_files(env, "other"), timeout=60)
    r = until("other.test stapled", lambda: (x := stapled(env, "other.test")).ocsp_cert_status
              == "good" and x)
    assert r.ocsp_stapled
    assert not stapled(env, "plain.test").ocsp_stapled
    log = Path(worker.log_path).read_text()
    assert log.count("has no OCSP responder URL") == 1, log


def test_relay_has_a_vhost_of_its_own_on_a_wildcard_listen(apache, ocsp_pebble, responder,
                                                            tmp_path):
    """Debian listens on every address (`Listen 80`), and the first site on port 80 often
    redirects everything but /.well-known/ to https: mod_ssl's relay requests must not
    be caught by that."""
    apache = Apache(http_port=apache.http_port, https_port=apache.https_port, listen_host="*")
    env = MDEnv(apache, ocsp_pebble)
    try:
        redirect = (f"<VirtualHost *:{apache.http_port}>\n    ServerName www.example\n"
                    "    RewriteEngine on\n    RewriteCond %{REQUEST_URI} !^/\\.well-known/\n"
                    "    RewriteRule ^ https://www.example/ [R=301,L]\n</VirtualHost>\n")
        env.write_config(f"MDStapling on\nMDomain {MD}\n", redirect + env.ssl_vhost(MD))
        env.start()
        assert f"<VirtualHost 127.0.0.2:{apache.http_port}>" in (
            env.store / "apache" / "global.conf").read_text()
        env.start_worker()
        env.await_state([MD], timeout=90)
        until("a good OCSP response", lambda: cert_ocsp(env).get("status") == "good")
        r = until("a good staple", lambda: (x := stapled(env)).ocsp_cert_status == "good" and x)
        assert r.ocsp_stapled
        assert "ocsp-relay.apache-md.invalid" not in apache.access_log()  # Host is the address
    finally:
        env.stop_workers()
        apache.cleanup()
