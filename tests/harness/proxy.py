"""A small forward proxy (HTTP CONNECT tunnels and absolute-URI requests).

It counts what passes through it, can resolve names nobody else knows
(`resolve={"pebble.invalid": "127.0.0.1"}`), so a test can prove that a
client reached a server only through the proxy, and can speak TLS itself
(an `https://` proxy) with a certificate from `pki`.
"""

from __future__ import annotations

import select
import socket
import socketserver
import ssl
import threading
from urllib.parse import urlsplit

from ._util import check_ports_free

_BUF = 65536


class ForwardProxy:
    def __init__(self, port: int, *, resolve: dict[str, str] | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 host: str = "127.0.0.1"):
        self.host = host
        self.port = port
        self.resolve = dict(resolve or {})
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.connects: list[str] = []  # "host:port" of every CONNECT
        self.requests: list[str] = []  # "METHOD url" of every plain proxied request
        self.refused: list[str] = []  # targets it could not reach
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.connects) + len(self.requests)

    def _note(self, lst: list[str], item: str) -> None:
        with self._lock:
            lst.append(item)

    def start(self) -> "ForwardProxy":
        check_ports_free("forward proxy", [("proxy", self.port, False)])
        proxy = self
        context = None
        if self.tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls_cert, self.tls_key)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                sock = self.request
                try:
                    if context is not None:
                        sock = context.wrap_socket(sock, server_side=True)
                    proxy._serve(sock)
                except (OSError, ssl.SSLError):
                    pass
                finally:
                    try:
                        sock.close()
                    except OSError:
                        pass

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((self.host, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"proxy-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- one client connection --------------------------------------------------
    def _connect(self, host: str, port: int) -> socket.socket | None:
        try:
            return socket.create_connection((self.resolve.get(host, host), port), timeout=10)
        except OSError:
            self._note(self.refused, f"{host}:{port}")
            return None

    def _serve(self, sock) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(_BUF)
            if not chunk:
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            self._note(self.connects, target)
            upstream = self._connect(host, int(port))
            if upstream is None:
                sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            self._pipe(sock, upstream)
            return
        # A plain request with an absolute URI: forward it once, then close.
        self._note(self.requests, f"{method} {target}")
        parts = urlsplit(target)
        upstream = self._connect(parts.hostname or "", parts.port or 80)
        if upstream is None:
            sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = [h for h in lines[1:] if not h.lower().startswith(
            ("proxy-connection:", "connection:", "keep-alive:"))]
        request = "\r\n".join([f"{method} {path} HTTP/1.1", *headers, "Connection: close",
                               "", ""]).encode("latin-1")
        upstream.sendall(request + rest)
        self._pipe(sock, upstream)

    @staticmethod
    def _pipe(a, b) -> None:
        socks = [a, b]
        try:
            while True:
                # Data already decrypted inside an SSL object is invisible to select().
                ready = [s for s in socks if isinstance(s, ssl.SSLSocket) and s.pending()]
                if not ready:
                    ready, _, _ = select.select(socks, [], [], 30)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(_BUF)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            b.close()
