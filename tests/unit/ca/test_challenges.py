"""Challenge selection (as mod_md, minus tls-alpn-01), name checks and the http-01 preflight."""
from __future__ import annotations

import http.client
import ssl

import pytest

from apache_md.ca import preflight
from apache_md.ca.challenges import (
    authz_types,
    check_names,
    explain_no_types,
    preferred_types,
)
from apache_md.ca.client import identifiers
from apache_md.ca.preflight import Response, check_http01
from apache_md.core.model import GlobalSettings, Location, ManagedDomain
from apache_md.core.problem import CAProblem


def md(*names, challenges=None, dns=None) -> ManagedDomain:
    return ManagedDomain(name=names[0], domains=list(names), location=Location("t.conf", 1),
                         challenges=challenges, dns01_cmd=dns)


def settings(local80: int | None = 80, listen=(80, 443), can_http=None) -> GlobalSettings:
    s = GlobalSettings(port_map={80: local80, 443: 443}, listen_ports=list(listen))
    s.can_http = (local80 is not None and local80 in listen) if can_http is None else can_http
    return s


@pytest.mark.parametrize("m,s,types", [
    (md("a.test"), settings(), ["http-01"]),
    (md("a.test", dns="hook"), settings(), ["http-01", "dns-01"]),
    (md("a.test", dns="hook"), settings(None), ["dns-01"]),
    (md("a.test"), settings(None), []),
    (md("a.test", challenges=["dns-01", "http-01"]), settings(), ["dns-01", "http-01"]),
    (md("a.test", challenges=["tls-alpn-01", "http-01"]), settings(), ["http-01"]),
    # the configured list is filtered by reachability too (mod_md test_702_010)
    (md("a.test", challenges=["http-01"]), settings(8080), []),
    (md("a.test", challenges=["tls-alpn-01"]), settings(), []),
])
def test_preferred_types(m, s, types):
    assert preferred_types(m, s) == types


def test_authz_types_per_identifier():
    both = ["http-01", "dns-01"]
    assert authz_types(both, "a.test", wildcard=False) == both
    assert authz_types(both, "a.test", wildcard=True) == ["dns-01"]
    assert authz_types(both, "192.0.2.1", wildcard=False) == ["http-01"]
    assert authz_types(both, "2001:db8::1", wildcard=False) == ["http-01"]


def test_explanations_name_each_reason():
    text = explain_no_types(md("a.test", challenges=["tls-alpn-01", "http-01", "x-01"]),
                            settings(None))
    assert text.startswith("None of the ACME challenge methods configured for this domain "
                           "are suitable: tls-alpn-01 is not available with apache-md")
    assert "'MDPortMap http:-' says port 80 is not reachable" in text
    assert "'x-01' is not a known challenge type" in text
    assert "MDCAChallenges is 'tls-alpn-01 http-01 x-01'" in text
    text = explain_no_types(md("a.test"), settings(8080, listen=[80, 443]))
    assert ("public port 80 arrives at local port 8080 (MDPortMap), but Apache does not "
            "listen there (Listen ports: 80, 443)") in text
    assert "dns-01 needs a command that sets DNS TXT records (MDChallengeDns01)" in text


def test_check_names_before_contacting_the_ca():
    with pytest.raises(CAProblem) as e:
        check_names(md("a.test", "*.a.test"), ["http-01"], settings())
    assert e.value.problem == "challenge-mismatch"
    assert "*.a.test can only be validated with the dns-01 challenge; configure " \
           "MDChallengeDns01" in e.value.detail
    with pytest.raises(CAProblem) as e:
        check_names(md("a.test", "192.0.2.1", dns="hook"), ["dns-01"], settings(None))
    assert "192.0.2.1 can only be validated with the http-01 challenge (RFC 8738)" \
        in e.value.detail
    with pytest.raises(CAProblem) as e:
        check_names(md("a.test"), [], settings(None))
    assert e.value.problem == "challenge-mismatch"
    check_names(md("a.test", "*.a.test", "192.0.2.1", dns="hook"), ["http-01", "dns-01"],
                settings())


def test_identifiers_dns_and_ip():
    ids = [(i.typ.name, i.value) for i in identifiers(["a.test", "192.0.2.1", "2001:db8::1"])]
    assert ids == [("dns", "a.test"), ("ip", "192.0.2.1"), ("ip", "2001:db8::1")]


# -- preflight -----------------------------------------------------------------------------

KA = "tok.thumb"
PORTS = {80: 8080, 443: 8443}
OURS = {"x-apache-md": "challenge", "content-type": "text/plain"}


def server(answers: dict):
    """A fake local Apache: (scheme, port, host, path) -> Response or exception;
    `get.addresses`: where each request was sent."""
    seen, addresses = [], []

    def get(scheme, port, host, path, address):
        seen.append((scheme, port, host, path))
        addresses.append(address)
        r = answers.get((scheme, port, host))
        if isinstance(r, Exception):
            raise r
        return r or Response(404, {}, b"<html>Not Found</html>")
    get.seen, get.addresses = seen, addresses
    return get


def test_preflight_ok_with_our_answer():
    get = server({("http", 8080, "a.test"): Response(200, OURS, b"tok.thumb\n")})
    r = check_http01("a.test", "tok", KA, PORTS, get=get)
    assert r.ok is True
    assert get.seen == [("http", 8080, "a.test", "/.well-known/acme-challenge/tok")]


def test_preflight_follows_redirects_on_the_same_host_like_the_ca():
    get = server({
        ("http", 8080, "a.test"): Response(301, {"location": "https://a.test/.well-known/"
                                                             "acme-challenge/tok"}, b""),
        ("https", 8443, "a.test"): Response(200, OURS, b"tok.thumb")})
    assert check_http01("a.test", "tok", KA, PORTS, get=get).ok is True
    get = server({("http", 8080, "a.test"): Response(302, {"location": "https://a.test:8443/x"},
                                                     b"")})
    r = check_http01("a.test", "tok", KA, PORTS, get=get)
    assert r.ok is False and "CAs follow redirects only to ports 80 and 443" in r.detail


@pytest.mark.parametrize("error,why", [
    (ConnectionRefusedError(111, "Connection refused"), "Connection refused"),
    (TimeoutError("timed out"), "no answer within 5 s"),
    (http.client.RemoteDisconnected("closed"), "connection closed without an answer"),
])
def test_preflight_apache_not_answering_fails_before_the_ca_is_asked(error, why):
    get = server({("http", 8080, "a.test"): error})
    r = check_http01("a.test", "tok", KA, PORTS, get=get)
    assert r.ok is False and r.unanswered
    assert r.detail.startswith("Apache is not answering on port 80 for a.test "
                               f"(local port 8080 at 127.0.0.1: {why})")
    # after a redirect to https on the same host: port 443, still ours
    get = server({("http", 8080, "a.test"): Response(301, {"location": "https://a.test/x"}, b""),
                  ("https", 8443, "a.test"): error})
    r = check_http01("a.test", "tok", KA, PORTS, get=get)
    assert r.unanswered and "not answering on port 443 for a.test" in r.detail


def test_preflight_asks_apache_where_it_listens():
    get = server({("http", 8080, "a.test"): Response(200, OURS, b"tok.thumb")})
    assert check_http01("a.test", "tok", KA, PORTS, ["192.0.2.7:8080", "8443"], get).ok
    assert check_http01("a.test", "tok", KA, PORTS, ["[2001:db8::7]:8080"], get).ok
    assert check_http01("a.test", "tok", KA, PORTS, ["8080"], get).ok
    assert get.addresses == ["192.0.2.7", "[2001:db8::7]", "127.0.0.1"]


def test_preflight_cannot_check_is_not_an_error():
    get = server({("http", 8080, "a.test"): ssl.SSLError("handshake failure")})
    r = check_http01("a.test", "tok", KA, PORTS, get=get)
    assert r.ok is None and "letting the CA try" in r.detail
    get = server({("http", 8080, "a.test"): Response(302, {"location": "http://acme.other/t"},
                                                     b"")})
    r = check_http01("a.test", "tok", KA, PORTS, get=get)
    assert r.ok is None and "redirected to another host" in r.detail
    get = server({("http", 8080, "a.test"): Response(302, {"location": "https://a.test/t"},
                                                     b"")})
    r = check_http01("a.test", "tok", KA, {80: 8080, 443: None}, get=get)
    assert r.ok is None and "port 443 is not mapped" in r.detail


@pytest.mark.parametrize("resp,words", [
    (Response(404, {}, b"<html>"), "not found (404); apache-md's handler is not reached"),
    (Response(404, OURS, b"Not Found\n"), "apache-md's handler does not know the challenge"),
    (Response(403, {}, b""), "access denied (403)"),
    (Response(200, {"via": "1.1 backend"}, b"hello"),
     "is not answered by apache-md (through a proxy: Via 1.1 backend)"),
    (Response(200, OURS, b"other.thumb"), "answered with another challenge"),
    (Response(502, {}, b""), "answered 502 instead of the challenge"),
])
def test_preflight_precise_errors(resp, words):
    r = check_http01("a.test", "tok", KA, PORTS, get=server({("http", 8080, "a.test"): resp}))
    assert r.ok is False
    assert r.detail.startswith("http://a.test/.well-known/acme-challenge/tok (local port 8080)")
    assert words in r.detail


def test_preflight_redirect_loop_and_ipv6_host():
    loop = Response(302, {"location": "/.well-known/acme-challenge/tok"}, b"")
    r = check_http01("a.test", "tok", KA, PORTS, get=server({("http", 8080, "a.test"): loop}))
    assert r.ok is False and "more than 10 redirects" in r.detail
    get = server({("http", 8080, "2001:db8::1"): Response(200, OURS, b"tok.thumb")})
    assert check_http01("2001:db8::1", "tok", KA, PORTS, get=get).ok is True


def test_preflight_fetch_against_a_real_socket():
    """`fetch` sends Host like a client would, to 127.0.0.1."""
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{self.headers['Host']} {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    t.start()
    try:
        port = srv.server_address[1]
        r = preflight.fetch("http", port, "a.test", "/p")
        assert (r.status, r.body) == (200, b"a.test /p")
        r = preflight.fetch("http", port, "::1", "/p")
        assert r.body == b"[::1] /p"
    finally:
        srv.shutdown()
