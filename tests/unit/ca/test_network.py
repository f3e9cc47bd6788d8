"""Account records and CA connections: EAB secrecy, proxies, their trust anchors."""
from __future__ import annotations

import ssl

import josepy as jose
import pytest
import requests
from acme import messages
from cryptography.hazmat.primitives.asymmetric import rsa

from apache_md.ca import accounts
from apache_md.ca.client import CAConnection, problem_from_exception
from apache_md.core.model import Location, ManagedDomain
from apache_md.core.problem import CAProblem
from apache_md.store.fs import Store


def md(kid=None, hmac=None) -> ManagedDomain:
    return ManagedDomain(name="a.test", domains=["a.test"], location=Location("t", 1),
                         eab_kid=kid, eab_hmac=hmac)


def test_eab_pair_selects_the_account():
    stored = {"kid": "kid-1", "hmac": "aG1hYw"}
    assert accounts._eab_matches(stored, md("kid-1", "aG1hYw"))
    assert not accounts._eab_matches(stored, md("kid-1", "b3RoZXI"))  # changed hmac: new account
    assert not accounts._eab_matches(stored, md("kid-2", "aG1hYw"))
    assert not accounts._eab_matches(stored, md())
    assert accounts._eab_matches(None, md()) and accounts._eab_matches({}, md())
    assert not accounts._eab_matches(None, md("kid-1", "aG1hYw"))


def test_registration_json_is_plain_and_without_the_eab_jws():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    eab = messages.ExternalAccountBinding.from_data(
        account_public_key=jose.JWKRSA(key=key).public_key(), kid="kid-1", hmac_key="aG1hYw",
        directory=messages.Directory({"newAccount": "https://ca/new-acct"}))
    body = messages.Registration(contact=("mailto:a@b.test",), status="valid",
                                 external_account_binding=eab)
    doc = accounts._registration_json(body)
    assert doc == {"contact": ["mailto:a@b.test"], "status": "valid"}


def test_account_json_with_eab_is_private(tmp_path):
    store = Store(tmp_path / "md")
    store.init()
    store.write_json("accounts", "ACME-x-0000", "account.json", {"eab": {}},
                     mode=accounts.SECRET_MODE)
    assert (store.path("accounts", "ACME-x-0000", "account.json").stat().st_mode & 0o777) == 0o600


def test_https_proxy_gets_its_own_trust(tmp_path):
    conn = CAConnection("https://ca.test/dir", ca_certs="/etc/ssl/certs/ca-certificates.crt",
                        proxy="https://proxy.test:3128")
    session = conn.net.session
    assert session.proxies == {"http": "https://proxy.test:3128",
                               "https": "https://proxy.test:3128"}
    assert conn.net.verify_ssl == "/etc/ssl/certs/ca-certificates.crt"  # the CA's bundle only
    manager = session.get_adapter("https://ca.test/").proxy_manager_for("https://proxy.test:3128")
    assert isinstance(manager.proxy_ssl_context, ssl.SSLContext)
    with pytest.raises(CAProblem) as e:
        CAConnection("https://ca.test/dir", proxy="https://p:1",
                     proxy_ca_certs=str(tmp_path / "missing.pem"))
    assert e.value.detail.startswith(f"MDHttpProxyCACertificateFile {tmp_path}/missing.pem: "
                                     "cannot load it")
    plain = CAConnection("https://ca.test/dir", proxy="http://proxy.test:3128")
    assert plain.net.session.trust_env is False  # MDHttpProxy beats $https_proxy


def test_proxy_errors_name_the_proxy():
    p = problem_from_exception(requests.exceptions.ProxyError("Connection refused"),
                               "https://ca.test/dir", "http://127.0.0.1:9")
    assert p.description == "Connection refused"
    assert "through the proxy http://127.0.0.1:9" in p.detail


def test_jws_is_the_librarys_own(monkeypatch):
    """The direct JWS has the bytes josepy builds (RS256 signatures are deterministic),
    for new-account (the jwk) and with the account's kid, a payload and none."""
    from acme import client as acme_client
    conn = CAConnection("https://ca.test/dir")
    key = jose.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    conn.net.key, conn.net.alg = key, jose.RS256
    reg = messages.NewRegistration(contact=("mailto:a@b.test",))
    for account in (None, messages.RegistrationResource(uri="https://ca.test/acct/7",
                                                        body=messages.Registration())):
        conn.net.account = account
        for obj in (reg, None):
            mine = conn.net._wrap_in_jws(obj, b"nonce-1", "https://ca.test/new-order")
            theirs = acme_client.ClientNetwork._wrap_in_jws(conn.net, obj, b"nonce-1",
                                                           "https://ca.test/new-order")
            assert mine == theirs


def test_lean_session_sends_what_requests_sends(tmp_path):
    """Straight to the adapter: the same request on the wire (headers, body), the same
    answer, a redirect followed, a cookie kept (and then requests' whole way)."""
    import http.server
    import threading
    from apache_md.ca import http as cahttp
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.command, self.path, dict(self.headers), body))
            if self.path == "/moved":
                self.send_response(307)
                self.send_header("Location", "/there")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(201)
            if self.path == "/cookie":
                self.send_header("Set-Cookie", "lb=1; Path=/")
            self.send_header("Replay-Nonce", "abc")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        lean, plain = cahttp.session(None, None), requests.Session()
        for s in (lean, plain):
            r = s.request("POST", f"{base}/new-order", data=b"jws", timeout=5,
                          headers={"Content-Type": "application/jose+json", "User-Agent": "t"})
            assert (r.status_code, r.headers["Replay-Nonce"], r.json()) == (201, "abc", {})
        assert seen[0][1:] == seen[1][1:] and seen[0][3] == b"jws"
        r = lean.request("POST", f"{base}/moved", data=b"x", timeout=5)
        assert r.status_code == 201 and [h.status_code for h in r.history] == [307]
        assert seen[-1][1] == "/there"
        lean.request("POST", f"{base}/cookie", data=b"x", timeout=5)
        lean.request("POST", f"{base}/after", data=b"x", timeout=5)
        assert seen[-1][2].get("Cookie") == "lb=1"
    finally:
        server.shutdown()
