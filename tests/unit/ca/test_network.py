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


# -- the direct way (ca/http.Direct): http.client on kept-alive connections ------------------

class _Server:
    """A real HTTP/1.1 server on 127.0.0.1 (TLS with `pki`), its handler's answers by
    path, the client ports it saw (one per connection)."""

    def __init__(self, pki=None):
        import http.server
        import threading
        self.ports, self.paths = [], []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                outer.ports.append(self.client_address[1])
                outer.paths.append(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                if self.path == "/reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if self.path == "/slow":
                    time.sleep(1.0)
                body = b"{}"
                self.send_response(200)
                if self.path == "/links":
                    self.send_header("Link", '<https://ca.test/cert/1/alt>;rel="alternate"')
                    self.send_header("Link", '<https://ca.test/dir>;rel="index"')
                if self.path == "/gzip":
                    body = gzip.compress(b'{"zipped": true}')
                    self.send_header("Content-Encoding", "gzip")
                if self.path == "/close":
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if pki is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(pki.cert, pki.key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


import gzip  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

from apache_md.ca import http as cahttp  # noqa: E402


def _no_adapter(monkeypatch):
    def send(*args, **kwargs):
        raise AssertionError("sent through requests' adapter")
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)


def test_direct_requests_keep_one_connection_and_read_answers_as_requests_does(tmp_path,
                                                                              monkeypatch):
    """Requests to a CA without a proxy go straight over http.client: one kept-alive TLS
    connection for many requests (a new one once the server closed it), repeated Link
    fields joined as urllib3 joins them (the `up` and `alternate` links), gzip undone,
    HEAD answered without a body; and the CA's trust is MDCACertificateFile's."""
    from tests.harness import pki
    ca, leaf = pki.localhost_pki(tmp_path)
    srv = _Server(leaf)
    s = cahttp.session(None, None)
    _no_adapter(monkeypatch)
    try:
        for _ in range(3):
            r = s.request("POST", f"{srv.url}/new-order", data="jws", timeout=5,
                          verify=str(ca.cert), headers={"User-Agent": "t"})
            assert (r.status_code, r.json()) == (200, {})
        assert len(set(srv.ports)) == 1  # one connection, one handshake
        r = s.request("GET", f"{srv.url}/links", timeout=5, verify=str(ca.cert))
        assert set(r.links) == {"alternate", "index"}
        r = s.request("GET", f"{srv.url}/gzip", timeout=5, verify=str(ca.cert))
        assert r.json() == {"zipped": True}
        r = s.request("HEAD", f"{srv.url}/nonce", timeout=5, verify=str(ca.cert))
        assert r.status_code == 200 and r.content == b""
        assert len(set(srv.ports)) == 1
        s.request("GET", f"{srv.url}/close", timeout=5, verify=str(ca.cert))
        r = s.request("GET", f"{srv.url}/after", timeout=5, verify=str(ca.cert))
        assert r.status_code == 200 and len(set(srv.ports)) == 2  # a new connection
        other, _ = pki.localhost_pki(tmp_path / "other")
        with pytest.raises(requests.exceptions.SSLError) as e:
            cahttp.session(None, None).request("GET", f"{srv.url}/x", timeout=5,
                                               verify=str(other.cert))
        assert cahttp.transient(e.value, None) is None  # trust: the same next time
    finally:
        s.close()
        srv.close()


def test_direct_failures_are_the_exceptions_requests_raises(monkeypatch):
    """What the retries read (transient(), unreachable()) is what requests gave: a port
    nobody listens on is unreachable, a reset after the request was sent is transient,
    an answer later than the read timeout is a ReadTimeout (the early copy's cue), and
    the connection it came late on is not used again."""
    srv = _Server()
    s = cahttp.session(None, None)
    _no_adapter(monkeypatch)
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        with pytest.raises(requests.exceptions.ConnectionError) as e:
            s.request("GET", f"http://127.0.0.1:{free}/dir", timeout=5)
        assert cahttp.unreachable(e.value)
        with pytest.raises(requests.exceptions.ConnectionError) as e:
            s.request("POST", f"{srv.url}/reset", data="jws", timeout=5)
        assert cahttp.transient(e.value, None).kind == "reset"
        assert not cahttp.unreachable(e.value)
        with pytest.raises(requests.exceptions.ReadTimeout) as e:
            s.request("GET", f"{srv.url}/slow", timeout=(5, 0.2))
        assert cahttp.transient(e.value, None).kind == "timeout"
        n = len(set(srv.ports))
        assert s.request("GET", f"{srv.url}/x", timeout=5).status_code == 200
        assert len(set(srv.ports)) == n + 1
    finally:
        s.close()
        srv.close()


def test_a_proxy_gets_every_request_as_before():
    """MDHttpProxy (and $https_proxy) still go through requests' adapter: the proxy is
    asked for the CA's URL."""
    proxy = _Server()
    try:
        s = cahttp.session(proxy.url, None)
        r = s.request("GET", "http://ca.test/dir", timeout=5)
        assert r.status_code == 200 and proxy.paths == ["http://ca.test/dir"]
    finally:
        proxy.close()
