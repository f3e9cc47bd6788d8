"""An HTTPS reverse proxy in front of Pebble's ACME port, the base of the fronts.

Pebble builds every URL from the request's Host header, so the front forwards
requests unchanged except for Host (its own address): Pebble's answers then
point back at the front, and a client that starts at `directory_url` never
talks to Pebble directly. Subclasses decide per request in `handle` (answer
themselves, forward, or drop the connection). Connections to Pebble are kept
alive, one per client connection.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "proxy-connection", "te", "trailer", "upgrade"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    client: tuple = ()  # the client's address and port: one per connection
    arrived: float = 0.0  # time.monotonic() when its request line was read


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver listens with a backlog of 5: 20 drive threads connecting at once
    # overflowed it, and the SYNs dropped cost their requests the 1 s of a TCP
    # retransmission, a fault of the harness's own, in clean runs too
    request_queue_size = 128

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.open: set = set()  # client connections, closed at stop()
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._open_lock:
            self.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        with self._open_lock:
            for sock in list(self.open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request, client_address):
        pass  # a client that went away mid-handshake or mid-request: nothing to report


class Reset(Exception):
    """Raised by `handle` to drop the client connection (TCP RST) without an answer."""


class PebbleFront:
    def __init__(self, pebble, port: int):
        self.pebble = pebble
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def handle(self, req: Request) -> Answer:
        """What to answer; the default forwards to Pebble."""
        return self.forward(req)

    # -- forwarding -------------------------------------------------------------------
    def forward(self, req: Request) -> Answer:
        headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP_HEADERS}
        headers["Host"] = f"localhost:{self.port}"  # Pebble's URLs point at us
        local = self._upstream
        for attempt in (1, 2):  # a kept-alive connection Pebble closed: once more, fresh
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPSConnection(
                    "localhost", self.pebble.acme_port, context=self._upstream_ctx, timeout=30)
            try:
                conn.request(req.method, req.path, body=req.body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                local.conn = None
                if attempt == 2:
                    raise
                continue
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_HEADERS]
            return Answer(resp.status, data, out)
        raise AssertionError("unreachable")

    # -- lifecycle -------------------------------------------------------------------------
    def start(self):
        front = self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.pebble.tls_leaf.cert), str(self.pebble.tls_leaf.key))
        self._upstream_ctx = ssl.create_default_context(cafile=str(self.pebble.tls_ca.cert))
        self._upstream = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                # The TLS handshake here, in the connection's own thread: done in
                # accept(), it would queue every new connection behind the others.
                self.request.do_handshake()
                super().setup()

            def parse_request(self):
                self.arrived = time.monotonic()  # before headers and body are read
                return super().parse_request()

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                req = Request(self.command, self.path, dict(self.headers.items()), body,
                              self.client_address, self.arrived)
                try:
                    answer = front.handle(req)
                except Reset:
                    # SO_LINGER 0: close() sends RST, as a crashed peer or middlebox does
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(answer.status)
                for k, v in answer.headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_POST = do_HEAD = _handle

            def finish(self):
                try:
                    super().finish()
                except OSError:
                    pass  # the connection was reset on purpose
                conn = getattr(front._upstream, "conn", None)
                if conn is not None:
                    conn.close()
                    front._upstream.conn = None

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True,
                                              do_handshake_on_connect=False)
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name=type(self).__name__).start()
        return self

    def stop(self) -> None:
        """Stop listening and close every client connection: the CA is gone (refused)."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_all()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
