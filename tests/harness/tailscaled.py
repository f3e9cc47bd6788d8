"""A stand-in for tailscaled's LocalAPI certificate service, on a unix socket.

tailscaled cannot run here (it needs a tailnet and its control plane), so this
answers as its handler does (tailscale's ipn/localapi/cert.go, ipn/ipnserver
and feature/acme/cert.go): the path `/localapi/v0/cert/<name>`, `type` and
`min_validity` (a Go duration), the Host check, who may fetch certificates
(SO_PEERCRED: root, the operator, TS_PERMIT_CERT_UID), the node's names
(`CertDomains`, wildcards only where enabled), the cache that is renewed
synchronously when it lives shorter than min_validity, the error messages and
statuses, and a `type=pair` body (key PEM, then leaf and intermediate PEM,
chunked like Go's net/http). Certificates come from a test CA whose root is
`ca.cert` and have the validity a test sets:

    d = Tailscaled(path, ["node.tailnet-test.ts.net"]).start()
    d.backdate = timedelta(days=80)   # the next certificate was issued 80 days ago
    d.root_uids = set()               # the caller is not root ...
    d.permit_cert_uid = os.getuid()   # ... but TS_PERMIT_CERT_UID names it
    d.cert_domains = []               # HTTPS certificates disabled in the tailnet
    d.fail = (429, "rate limited", {"Retry-After": "3600"})
    d.stop()
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import socket
import socketserver
import struct
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import pki

HOST = "local-tailscaled.sock"
PREFIX = "/localapi/v0/cert/"
CHUNKING = 2048  # Go's net/http sends bodies longer than this chunked


@dataclass
class Asked:
    path: str
    query: dict  # name -> first value
    host: str
    uid: int


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# -- Go's time.ParseDuration --------------------------------------------------------------
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
          "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    """Seconds, or ValueError with Go's message."""
    s = text
    sign = -1.0 if s[:1] == "-" else 1.0
    s = s[1:] if s[:1] in "+-" else s
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    while s:
        m = re.match(r"(\d*)(\.\d*)?", s)
        if not m or m.group(0) in ("", "."):
            raise ValueError(f'time: invalid duration "{text}"')
        number = float(m.group(0) if m.group(1) else "0" + m.group(0))
        s = s[m.end():]
        u = re.match(r"[^\d.]*", s).group(0)
        if not u:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if u not in _UNITS:
            raise ValueError(f'time: unknown unit "{u}" in duration "{text}"')
        total += number * _UNITS[u]
        s = s[len(u):]
    return sign * total


def _valid_looking(name: str) -> bool:
    """feature/acme validLookingCertDomain."""
    if not name or ".." in name or any(c in name for c in ":/\\\0") or "." not in name:
        return False
    if name.startswith("*."):
        rest = name[2:]
        return "*" not in rest and "." in rest
    return "*" not in name


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class Tailscaled:
    def __init__(self, socket_path: str | os.PathLike, cert_domains=("node.tailnet-test.ts.net",),
                 directory: str | os.PathLike | None = None):
        self.socket_path = str(socket_path)
        self.dir = Path(directory or tempfile.mkdtemp(prefix="tailscaled-"))
        self.cert_domains = list(cert_domains)  # the netmap's DNS.CertDomains ([]: HTTPS off)
        self.wildcards = False  # the node has the DNS subdomain capability
        self.lifetime = _dt.timedelta(days=90)
        self.backdate = _dt.timedelta(hours=1)  # notBefore of the next certificate, before now
        self.honour_min_validity = True  # False: a tailscaled before 1.72
        self.root_uids = {0}  # callers with write access (root)
        self.operator_uid: int | None = None  # tailscale set --operator
        self.permit_cert_uid: int | None = None  # TS_PERMIT_CERT_UID
        self.fail: tuple | None = None  # (status, message, headers) instead of a certificate
        self.requests: list[Asked] = []
        self.issued: list[x509.Certificate] = []
        self.ca = pki.make_ca(self.dir, name="tailscale stand-in root", key_kind="ec")
        self.intermediate = pki.make_ca(self.dir, name="tailscale stand-in E9", key_kind="ec",
                                        issuer=self.ca, stem="intermediate")
        self._cache: dict[str, tuple[bytes, bytes, _dt.datetime]] = {}  # key, chain, notAfter
        self._lock = threading.Lock()
        self._server: _Server | None = None

    # -- running ------------------------------------------------------------------------
    def start(self) -> "Tailscaled":
        Path(self.socket_path).unlink(missing_ok=True)
        daemon = self

        class Handler(_Handler):
            ts = daemon
        self._server = _Server(self.socket_path, Handler)
        os.chmod(self.socket_path, 0o666)  # as tailscaled's socket: anyone may connect
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop answering and remove the socket, as a stopped tailscaled leaves none."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        Path(self.socket_path).unlink(missing_ok=True)

    # -- what the daemon decides ------------------------------------------------------------
    def may_fetch_certs(self, uid: int) -> bool:
        """ipnserver: write access (root, operator) or TS_PERMIT_CERT_UID."""
        return uid in self.root_uids or uid in (self.operator_uid, self.permit_cert_uid)

    def resolve(self, domain: str) -> str:
        """feature/acme resolveCertDomain, with its messages (500 in the handler)."""
        if not _valid_looking(domain):
            raise Refused(500, "invalid domain")
        if not self.cert_domains:
            raise Refused(500, "your Tailscale account does not support getting TLS certs")
        if domain.startswith("*."):
            if not self.wildcards:
                raise Refused(500, "wildcard certificates are not enabled for this node")
            if domain[2:] not in self.cert_domains:
                raise Refused(500, f'invalid domain "{domain}"; wildcard certificates are not '
                                   "enabled for this domain")
            return domain
        if domain in self.cert_domains:
            return domain
        listed = " ".join(f'"{d}"' for d in self.cert_domains)
        raise Refused(500, f'invalid domain "{domain}"; must be one of [{listed}]')

    def pair(self, domain: str, min_validity: float) -> tuple[bytes, bytes]:
        """(key PEM, chain PEM): the cached pair, or a new one when it lives too short."""
        with self._lock:
            now = _dt.datetime.now(_dt.timezone.utc)
            hit = self._cache.get(domain)
            if hit:
                left = (hit[2] - now).total_seconds()
                if left > 0 and not (self.honour_min_validity and min_validity
                                     and left < min_validity):
                    return hit[0], hit[1]
            self._cache[domain] = self._issue(domain, now)
            return self._cache[domain][:2]

    def _issue(self, domain: str, now: _dt.datetime):
        names = (domain, domain[2:]) if domain.startswith("*.") else (domain,)
        nb = now - self.backdate
        files = pki.make_leaf(self.intermediate, self.dir, names=names, key_kind="ec",
                              stem=f"{domain.replace('*', '_')}.{len(self.issued)}",
                              not_before=nb, not_after=nb + self.lifetime)
        self.issued.append(files.certificate)
        key = files.private_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.TraditionalOpenSSL,
                                              serialization.NoEncryption())
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM)
                         for c in (files.certificate, self.intermediate.certificate))
        return key, chain, nb + self.lifetime


class _Handler(BaseHTTPRequestHandler):
    ts: Tailscaled
    protocol_version = "HTTP/1.1"
    server_version = "tailscaled-stand-in"

    def address_string(self) -> str:  # a unix socket has no address
        return "unix"

    def log_message(self, format, *args) -> None:
        pass

    def _uid(self) -> int:
        creds = self.connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                           struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        ts = self.ts
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        host = self.headers.get("Host", "")
        ts.requests.append(Asked(url.path, query, host, self._uid()))
        try:
            if self.headers.get("Referer") or self.headers.get("Origin") \
                    or host not in ("", HOST):
                raise Refused(403, "invalid localapi request")
            if not url.path.startswith(PREFIX):
                raise Refused(404, "404 page not found")
            if not ts.may_fetch_certs(self._uid()):
                raise Refused(403, "cert access denied")
            try:
                min_validity = go_duration(query["min_validity"]) \
                    if query.get("min_validity") else 0.0
            except ValueError as e:
                raise Refused(400, f"invalid validity parameter: {e}") from None
            if ts.fail:
                raise Refused(*ts.fail)
            domain = ts.resolve(url.path[len(PREFIX):].removesuffix("."))
            key, chain = ts.pair(domain, min_validity)
            kind = query.get("type", "")
            if kind not in ("", "crt", "cert", "key", "pair"):
                raise Refused(400, 'invalid type; want "cert" (default), "key", or "pair"')
        except Refused as r:
            self._error(r)
            return
        parts = {"key": [key], "pair": [key, chain]}.get(kind, [chain])
        self._send(200, parts, {"Content-Type": "text/plain"})

    def _error(self, r: Refused) -> None:
        """Go's http.Error."""
        headers = {"Content-Type": "text/plain; charset=utf-8",
                   "X-Content-Type-Options": "nosniff", **r.headers}
        self._send(r.status, [r.message.encode() + b"\n"], headers)

    def _send(self, status: int, parts: list[bytes], headers: dict) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        chunked = sum(map(len, parts)) > CHUNKING
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(sum(map(len, parts))))
        self.end_headers()
        for p in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(p), p) if chunked else p)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
