"""The WSGI handlers against what the internet sends: a seeded fuzz over a real
snapshot (issue 12), and the failure paths it must survive, without Apache."""
from __future__ import annotations

import base64
import io
import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from apache_md.core.jsonfmt import http_date
from apache_md.status import snapshot
from apache_md.store.fs import DOMAINS, Store
from apache_md.wsgi import app
from tests.unit.sample import env, sample_config

SEED = 1201
REQUESTS = 4000
MOUNTS = ("/.well-known/acme-challenge", "/md-status", "/.httpd/certificate-status",
          "/.httpd/ocsp-relay")
NAMES = ("active.test", "www.active.test", "staged.test", "new.test", "failing.test",
         "metrics", "unknown.test", "*.active.test", "ACTIVE.TEST.")
ACCEPTS = ("", "*/*", "text/html", "application/json", "text/plain;version=0.0.4",
           "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
           "application/openmetrics-text;version=1.0.0;q=0.75,*/*;q=0.1",
           "text/*;q=nan", "*/*;q=1e400", "text/html;q=-1", ";;;,,,", "q=1;text/html")
METHODS = ("GET", "GET", "GET", "HEAD", "POST", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
           "TRACE", "get", "", "X" * 300)


class BrokenInput:
    """wsgi.input of a client that announced more than it sent and went away."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, size: int = -1) -> bytes:
        raise OSError("Apache/mod_wsgi request data read error: Partial results are valid "
                      "but processing is incomplete.")


class Response:
    def __init__(self, handlers, environ: dict):
        self.calls: list[tuple[str, list]] = []
        errors = io.StringIO()
        environ.setdefault("wsgi.errors", errors)
        environ.setdefault("wsgi.input", io.BytesIO(b""))
        self.body = b"".join(handlers(environ, self.start_response))
        self.log = errors.getvalue()
        self.status, self.headers = self.calls[-1]
        self.code = int(self.status.split()[0])

    def start_response(self, status, headers, exc_info=None):
        assert not self.calls or exc_info, "start_response called twice without exc_info"
        self.calls.append((status, headers))


@pytest.fixture
def world(store, tmp_path):
    """A real snapshot of the sample store, an OCSP response for the relay to find, an
    http-01 answer, and a document root."""
    snapshot.write_snapshot(store, sample_config(store))
    cert = x509.load_pem_x509_certificate(store.read_bytes(DOMAINS, "active.test",
                                                           "pubcert.pem"))
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, cert, hashes.SHA1()).build() \
        .public_bytes(serialization.Encoding.DER)
    path = store.base / "status" / "snapshot" / "status.json"
    data = json.loads(path.read_text())
    data["ocsp-relay"] = {app.relay_key(request): "active.test/ocsp-" + "a" * 40 + ".json"}
    path.write_text(json.dumps(data))
    (store.base / "ocsp" / "active.test").mkdir(parents=True)
    (store.base / "ocsp" / "active.test" / ("ocsp-" + "a" * 40 + ".json")).write_text(json.dumps(
        {"response": base64.urlsafe_b64encode(b"\x30\x03\x0a\x01\x00").decode(),
         "valid": {"until": http_date(datetime.now(timezone.utc) + timedelta(days=1))}}))
    (store.base / "challenges" / "active.test").mkdir(parents=True)
    (store.base / "challenges" / "active.test" / "acme-http-01.txt").write_text("tok.thumb")
    docroot = tmp_path / "htdocs"
    (docroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    (docroot / ".well-known" / "acme-challenge" / "web").write_text("webroot")
    return store, request, docroot


def odd_text(rnd: random.Random, n: int) -> str:
    """What mod_wsgi can hand over: latin-1 decoded bytes, control characters included."""
    return "".join(chr(rnd.choice((rnd.randrange(256), rnd.randrange(32, 127))))
                   for _ in range(n))


def segment(rnd: random.Random) -> str:
    return rnd.choice(NAMES + ("tok", "web", "..", ".", "", "%2e%2e", "a/b", "\\", "tok.",
                               ".hidden", "\x00", "\xe9t\xe9", "x" * 5000)
                      + (odd_text(rnd, rnd.randrange(1, 40)),))


def body(rnd: random.Random, request: bytes) -> bytes:
    kind = rnd.randrange(5)
    if kind == 0:
        return request
    if kind == 1:
        return request[:rnd.randrange(len(request))]
    if kind == 2:
        mutated = bytearray(request)
        for _ in range(rnd.randrange(1, 6)):
            mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
        return bytes(mutated)
    if kind == 3:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(300)))
    return rnd.choice((b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x80" * 50,
                       b"\x30\x03\x30\x01\x30"))


def generate(rnd: random.Random, store: Store, request: bytes, docroot) -> dict:
    mount = rnd.choice(MOUNTS)
    rest = "".join("/" + segment(rnd) for _ in range(rnd.choice((0, 0, 1, 1, 2, 3))))
    if rnd.random() < 0.1:
        rest = rnd.choice(("/", "//", "")) + rest + rnd.choice(("", "/", "//"))
    split = rnd.random()
    script, info = (mount, rest) if split < 0.7 else ("", mount + rest) if split < 0.9 \
        else (mount + rest, "")
    environ = env(store, script, method=rnd.choice(METHODS), accept=rnd.choice(ACCEPTS),
                  host=rnd.choice(NAMES + ("", "[::1]:443", "[::1", "a:b:c", "active.test:x",
                                           odd_text(rnd, 20), "www.active.test:443")),
                  query=rnd.choice(("", "format=json", "format=html", "format=metrics",
                                    "format=xml", "format", "&&==&", odd_text(rnd, 30))))
    environ["PATH_INFO"] = info
    data = body(rnd, request)
    environ["CONTENT_LENGTH"] = rnd.choice((str(len(data)), "", "-1", "abc", "1e3",
                                            str(len(data) + 50), "9" * 30, " 12 "))
    environ["wsgi.input"] = BrokenInput(data) if rnd.random() < 0.05 else io.BytesIO(data)
    if rnd.random() < 0.5:
        environ["DOCUMENT_ROOT"] = rnd.choice((str(docroot), str(docroot) + "/\x00",
                                               "relative", ""))
    for key in rnd.sample(("HTTP_ACCEPT", "HTTP_HOST", "QUERY_STRING", "REQUEST_METHOD",
                           "CONTENT_LENGTH"), rnd.choice((0, 0, 0, 1, 2))):
        del environ[key]
    return environ


def test_generated_requests_never_fail_nor_tell_internals(world):
    store, request, docroot = world
    rnd = random.Random(SEED)
    handlers = app.Handlers()
    codes: dict[int, int] = {}
    for i in range(REQUESTS):
        environ = generate(rnd, store, request, docroot)
        shown = {k: (v[:80] if isinstance(v, str) else v) for k, v in environ.items()}
        r = Response(handlers, environ)
        codes[r.code] = codes.get(r.code, 0) + 1
        assert r.code in (200, 400, 404, 405, 501), (i, r.status, r.log)
        assert len(r.calls) == 1, (i, r.calls)
        head = dict(r.headers)
        assert int(head["Content-Length"]) == len(r.body), (i, shown)
        for name, value in r.headers:
            assert value.isprintable() and value.encode("latin-1"), (i, name, value)
        assert str(store.base).encode() not in r.body and b"APACHE_MD_STORE" not in r.body
        if isinstance(environ["wsgi.input"], BrokenInput) and r.code == 400:
            assert r.log.count("\n") == 1 and "request body unreadable" in r.log, r.log
        else:
            assert r.log == "", (i, r.log, shown)
    # the fuzz reached every kind of answer, the stored OCSP response included
    assert {200, 400, 404, 405, 501} <= set(codes), codes
    relayed = Response(handlers, dict(env(store, "/.httpd/ocsp-relay", method="POST"),
                                      CONTENT_LENGTH=str(len(request)),
                                      **{"wsgi.input": io.BytesIO(request)}))
    assert relayed.body == b"\x30\x03\x0a\x01\x00"


def test_a_client_gone_mid_body_is_one_line_and_a_400(world):
    store, request, _ = world
    r = Response(app.Handlers(), dict(env(store, "/.httpd/ocsp-relay", method="POST"),
                                      CONTENT_LENGTH="100",
                                      **{"wsgi.input": BrokenInput(request[:2])}))
    assert r.code == 400
    assert r.log == ("apache-md: ocsp-relay: request body unreadable (100 bytes announced): "
                     "Apache/mod_wsgi request data read error: Partial results are valid but "
                     "processing is incomplete.\n")


def test_no_store_is_a_503_that_names_nothing(world):
    store, _, _ = world
    environ = env(store, "/.well-known/acme-challenge")
    del environ["APACHE_MD_STORE"]
    r = Response(app.Handlers(), environ)
    assert (r.code, r.body) == (503, b"Service Unavailable\n")
    assert r.log.count("\n") == 1 and "APACHE_MD_STORE is not set" in r.log


def test_an_unexpected_error_is_one_line_and_a_503(world, monkeypatch):
    store, _, _ = world

    def broken(*args):
        raise KeyError("boom\nsecond line")
    monkeypatch.setattr(app, "certificate_status", broken)
    r = Response(app.Handlers(), env(store, "/.httpd/certificate-status", host="active.test"))
    assert (r.code, r.body) == (503, b"Service Unavailable\n")
    assert r.log.count("\n") == 1 and r.log.startswith(
        "apache-md: internal error answering GET /.httpd/certificate-status: KeyError: ")
    assert "app.py:" in r.log


def test_an_unreadable_challenge_is_a_503_and_a_line(world):
    store, _, _ = world
    answer = store.base / "challenges" / "active.test" / "acme-http-01.txt"
    answer.unlink()
    answer.mkdir()  # reading it fails with IsADirectoryError, whoever runs the test
    r = Response(app.Handlers(), env(store, "/.well-known/acme-challenge/tok",
                                     host="active.test"))
    assert r.code == 503 and r.headers[-2] == ("X-Apache-MD", "challenge")
    assert r.log.startswith("apache-md: cannot read the http-01 answer for active.test: ")


def test_requests_during_the_first_load_wait_for_it(world, monkeypatch):
    """Apache's threads arrive together at a fresh child: none may see the empty view."""
    store, _, _ = world
    slow = app.Snapshot._read

    def read(self, stamp):
        time.sleep(0.3)
        return slow(self, stamp)
    monkeypatch.setattr(app.Snapshot, "_read", read)
    handlers, codes = app.Handlers(), []
    threads = [threading.Thread(target=lambda: codes.append(
        Response(handlers, env(store, "/md-status/active.test")).code)) for _ in range(8)]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert codes == [200] * 8
