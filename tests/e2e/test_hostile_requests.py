"""Issue 12.4 and 12.5 through real Apache: whatever reaches the handlers, in whatever
spelling, they find their store, never answer 500, never name internals, and a client
that goes away in the middle of its body costs one line in the error log."""
from __future__ import annotations

import time

from tests.e2e.mdenv import MDEnv
from tests.harness.client import raw_http

MANUAL = "<MDomain one.test>\n    MDRenewMode manual\n</MDomain>\n"
# A site that opens everything, as many do: access rules then hide nothing.
OPEN_SITE = ("<VirtualHost 127.0.0.1:{port}>\n    ServerName open.test\n"
             "    <Location />\n        Require all granted\n    </Location>\n</VirtualHost>\n")
MOUNTS = ("/.well-known/acme-challenge", "/md-status", "/.httpd/certificate-status",
          "/.httpd/ocsp-relay")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PROPFIND", "FOO")


def spellings(mount: str) -> list[str]:
    """The mount point as a client may write it."""
    head, _, last = mount.rpartition("/")
    encoded = "".join(f"%{ord(c):02X}" if c in ".-" else c for c in mount)
    return [mount, mount + "/", mount + "/x", mount + "//x", "/" + mount, mount.replace("/", "//"),
            encoded, encoded + "/", f"{head}/./{last}", f"{head}/x/../{last}",
            mount + "?format=html", mount + "/%2e%2e", mount + "%2Fx", mount + "/one.test"]


def request(method: str, target: str, host: str | None = "one.test", body: bytes = b"",
            version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines.append("Connection: close")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_every_spelling_of_every_mount_finds_the_store(env: MDEnv):
    env.write_config(MANUAL, env.ssl_vhost("one.test")
                     + OPEN_SITE.format(port=env.apache.http_port))
    env.start()
    (env.store / "challenges" / "one.test").mkdir(parents=True)
    (env.store / "challenges" / "one.test" / "acme-http-01.txt").write_text("tok.thumb")
    port = env.apache.http_port
    mark = env.apache.log_mark()
    seen = {}
    for host in ("one.test", "open.test"):
        for mount in MOUNTS:
            for target in spellings(mount):
                for method in METHODS:
                    r = raw_http(port, request(method, target, host,
                                               body=b"x" if method == "POST" else b""))
                    seen[host, method, target] = r.status
                    assert r.status not in (500, 503), (host, method, target, r.status, r.body)
                    for secret in ("APACHE_MD_STORE", str(env.store), "Traceback", "wsgi"):
                        assert secret not in r.body, (host, method, target, r.body)
    for target in ("/md-status", "/md-status/", "//md-status", "/md%2Dstatus"):
        r = raw_http(port, request("GET", target))
        assert r.status == 200 and r.json()["managed-domains"][0]["name"] == "one.test", target
    # The challenge handler itself answers (its mark), with and without the slash.
    for host in ("one.test", "open.test"):
        for target in ("/.well-known/acme-challenge", "/.well-known/acme-challenge/",
                       "//.well-known/acme-challenge/nope"):
            r = raw_http(port, request("GET", target, host))
            assert r.status == 404 and r.headers.get("x-apache-md") == "challenge", target
    for target in ("/.well-known/acme-challenge/tok", "/.well-known/%61cme-challenge/tok",
                   "//.well-known/acme-challenge/tok"):
        assert raw_http(port, request("GET", target)).body == "tok.thumb", target
    assert seen["one.test", "HEAD", "/.httpd/certificate-status"] == 200
    assert seen["one.test", "POST", "/.httpd/ocsp-relay"] == 200  # OCSP "malformedRequest"
    # No Host (HTTP/1.0) and an odd one
    assert raw_http(port, request("GET", "/md-status", host=None, version="HTTP/1.0")).status == 200
    assert raw_http(port, request("GET", "/.httpd/certificate-status",
                                  host="[::1]:80")).status == 404
    log = env.apache.error_log(mark)
    assert "apache-md:" not in log and "Traceback" not in log, log


def test_a_client_gone_in_the_middle_of_its_body_is_one_line(env: MDEnv):
    env.write_config(MANUAL, env.ssl_vhost("one.test"))
    env.start()
    mark = env.apache.log_mark()
    head = ("POST /.httpd/ocsp-relay HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/ocsp-request\r\nContent-Length: 100\r\n\r\n")
    raw_http(env.apache.http_port, head.encode() + b"\x30\x03", body_sent=False)
    deadline = time.monotonic() + 15
    while "apache-md:" not in env.apache.error_log(mark):
        assert time.monotonic() < deadline, env.apache.error_log(mark)
        time.sleep(0.1)
    time.sleep(0.5)  # whatever else would be logged about this request
    log = env.apache.error_log(mark)
    ours = [line for line in log.splitlines() if "apache-md:" in line]
    assert len(ours) == 1 and "request body unreadable (100 bytes announced)" in ours[0], log
    assert "Traceback" not in log and "Exception occurred" not in log, log
    # and the relay still answers the next one
    r = raw_http(env.apache.http_port, request("POST", "/.httpd/ocsp-relay", host="127.0.0.1",
                                               body=b"\x30\x03\x02\x01\x00"))
    assert r.status == 200
