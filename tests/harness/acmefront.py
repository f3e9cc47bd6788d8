"""An HTTPS front for Pebble 2.4 that adds what it lacks: ARI and profiles.

Pebble builds every URL from the request's Host header, so the front forwards
requests unchanged (Host included) and Pebble's answers already point back
at the front. On top of that it
- adds `renewalInfo` and (optionally) `meta.profiles` to the directory;
- answers GET <front>/renewal-info/<cert-id> with whatever the test set
  (`set_window`), with a Retry-After header, and records the ids asked for;
- records every newOrder payload the CA accepted or the front refused (the
  JWS payload is base64url JSON; `profile`, `replaces`), and can refuse
  orders that carry `replaces`, as a CA does with 409 alreadyReplaced.
Pebble ignores the JSON fields it does not know, so the orders still work.
"""
from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "proxy-connection", "te", "trailer", "upgrade"}


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AcmeFront:
    def __init__(self, pebble, port: int, profiles: dict[str, str] | None = None):
        self.pebble = pebble
        self.port = port
        self.profiles = profiles
        self.orders: list[dict] = []  # newOrder payloads, in order
        self.ari_requests: list[str] = []  # cert ids asked for
        self.refuse_replaces = False
        self.retry_after = 3600
        self._windows: dict[str, dict] = {}  # cert id -> renewalInfo body
        self._default_window: dict | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- what the test controls -----------------------------------------------------
    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def set_window(self, start: datetime, end: datetime, cert_id: str | None = None,
                   explanation: str | None = None) -> None:
        body: dict = {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}}
        if explanation:
            body["explanationURL"] = explanation
        with self._lock:
            if cert_id:
                self._windows[cert_id] = body
            else:
                self._default_window = body

    def window_in(self, days_from: float, days_to: float, **kw) -> None:
        now = datetime.now(timezone.utc)
        self.set_window(now + timedelta(days=days_from), now + timedelta(days=days_to), **kw)

    def _renewal_info(self, cert_id: str) -> dict:
        with self._lock:
            self.ari_requests.append(cert_id)
            body = self._windows.get(cert_id) or self._default_window
        if body is None:  # far away: nothing to do
            now = datetime.now(timezone.utc)
            body = {"suggestedWindow": {"start": rfc3339(now + timedelta(days=1000)),
                                        "end": rfc3339(now + timedelta(days=1001))}}
        return body

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "AcmeFront":
        front = self
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.pebble.tls_leaf.cert), str(self.pebble.tls_leaf.key))
        upstream_ctx = ssl.create_default_context(cafile=str(self.pebble.tls_ca.cert))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _upstream(self, method: str, path: str, body: bytes | None):
                conn = http.client.HTTPSConnection("localhost", front.pebble.acme_port,
                                                   context=upstream_ctx, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_HEADERS}
                headers["Host"] = f"localhost:{front.port}"  # Pebble's URLs point at us
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_HEADERS]
                conn.close()
                return resp.status, data, out

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = self.path
                if self.command == "GET" and path.startswith("/renewal-info/"):
                    info = front._renewal_info(path[len("/renewal-info/"):])
                    return self._send(200, json.dumps(info).encode(),
                                      [("Content-Type", "application/json"),
                                       ("Retry-After", str(front.retry_after))])
                order = front._new_order(body) if self.command == "POST" and body else None
                if order is not None and front.refuse_replaces and order.get("replaces"):
                    front._record(order)
                    _, _, hdrs = self._upstream("HEAD", "/nonce-plz", None)
                    nonce = [(k, v) for k, v in hdrs if k.lower() == "replay-nonce"]
                    problem = {"type": "urn:ietf:params:acme:error:alreadyReplaced",
                               "detail": "the certificate has already been replaced",
                               "status": 409}
                    return self._send(409, json.dumps(problem).encode(),
                                      [("Content-Type", "application/problem+json")] + nonce)
                status, data, headers = self._upstream(self.command, path, body)
                if order is not None and status == 201:  # not the badNonce rejects
                    front._record(order)
                if self.command == "GET" and path == "/dir" and status == 200:
                    data = front._directory(data)
                self._send(status, data, headers)

            do_GET = do_POST = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name="acmefront").start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- rewriting and recording ----------------------------------------------------------------
    def _directory(self, data: bytes) -> bytes:
        d = json.loads(data)
        d["renewalInfo"] = f"https://localhost:{self.port}/renewal-info"
        if self.profiles is not None:
            d.setdefault("meta", {})["profiles"] = dict(self.profiles)
        return json.dumps(d).encode()

    @staticmethod
    def _new_order(body: bytes) -> dict | None:
        """The payload of a newOrder JWS, None for any other request."""
        try:
            jws = json.loads(body)
            header = json.loads(_b64decode(jws["protected"]))
            payload = json.loads(_b64decode(jws["payload"])) if jws.get("payload") else None
        except (ValueError, KeyError, TypeError):
            return None
        if not header.get("url", "").endswith("/order-plz") or not isinstance(payload, dict):
            return None
        return payload

    def _record(self, order: dict) -> None:
        with self._lock:
            self.orders.append(order)
