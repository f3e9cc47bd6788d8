"""The WSGI handlers, mounted in Apache by `apache-md apache-conf`.

Thin and read-only: they answer from the challenge files and the status
snapshot that the worker writes, never talk to a CA and never write the
store. The snapshot is re-read only when its mtime changes, so a request
costs a stat() and a dict lookup.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable, Iterable

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
CERT_STATUS_PATH = "/.httpd/certificate-status"
STATUS_PREFIX = "/md-status"
JSON = [("Content-Type", "application/json")]
MARK_HEADER = "X-Apache-MD"  # = preflight.MARK_HEADER (this file must not import the package)


class Snapshot:
    """The status snapshot of one store, reloaded when the file changes."""

    def __init__(self, store: str):
        self.store = store
        self.path = os.path.join(store, "status", "snapshot", "status.json")
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {}
        self.rendered: dict[str, bytes] = {}

    def current(self) -> "Snapshot":
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._load(stamp)
        return self

    def _load(self, stamp) -> None:
        data: dict[str, Any] = {}
        if stamp is not None:
            try:
                with open(self.path, "rb") as f:
                    data = json.loads(f.read())
            except (OSError, ValueError):
                data = {}
        self.data = data
        self.rendered = {}
        self._stamp = stamp

    def render(self, key: str, obj: Any) -> bytes:
        body = self.rendered.get(key)
        if body is None:
            body = json.dumps(obj, indent=2).encode()
            self.rendered[key] = body
        return body

    def md_for_host(self, host: str) -> str | None:
        host = host.lower().rstrip(".")
        domains = self.data.get("domains", {})
        name = domains.get(host)
        if name is None and "." in host:
            name = domains.get("*." + host.split(".", 1)[1])
        if name is None and host in self.data.get("mds", {}):
            name = host
        return name


_snapshots: dict[str, Snapshot] = {}


def _snapshot(environ: dict) -> Snapshot | None:
    store = environ.get("APACHE_MD_STORE") or os.environ.get("APACHE_MD_STORE")
    if not store:
        return None
    snap = _snapshots.get(store)
    if snap is None:
        snap = _snapshots.setdefault(store, Snapshot(store))
    return snap.current()


def _host(environ: dict) -> str:
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or ""
    if host.startswith("["):  # [::1]:443
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _respond(start_response: Callable, status: str, body: bytes = b"",
             headers: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
    hdrs = list(headers or [("Content-Type", "text/plain; charset=utf-8")])
    hdrs.append(("Content-Length", str(len(body))))
    start_response(status, hdrs)
    return [body]


def _not_found(start_response) -> Iterable[bytes]:
    return _respond(start_response, "404 Not Found", b"Not Found\n")


def challenge(environ: dict, start_response, path: str, snap: Snapshot) -> Iterable[bytes]:
    # The mark lets apache-md's preflight tell its own answers from a proxy's or another handler's.
    mark = [("Content-Type", "text/plain"), (MARK_HEADER, "challenge")]

    def not_found():
        return _respond(start_response, "404 Not Found", b"Not Found\n", mark)
    token = path[len(CHALLENGE_PREFIX):]
    if not token or "/" in token or token.startswith(".") or "\\" in token:
        return not_found()
    host = _host(environ).lower().rstrip(".")
    md = snap.md_for_host(host)
    if md is None or not snap.data.get("http01", {}).get(md, True):
        return not_found()
    if not host or "/" in host or host.startswith("."):
        return not_found()
    try:
        with open(os.path.join(snap.store, "challenges", host, "acme-http-01.txt"), "rb") as f:
            body = f.read(8192)
    except FileNotFoundError:
        return not_found()
    except OSError:
        return _respond(start_response, "500 Internal Server Error", b"challenge unreadable\n", mark)
    # The file holds "<token>.<thumbprint>": answer only for the token it was made for.
    if not body.startswith(token.encode() + b"."):
        return not_found()
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        return _respond(start_response, "501 Not Implemented", b"", mark)
    return _respond(start_response, "200 OK", body, mark)


def md_status(environ: dict, start_response, path: str, snap: Snapshot) -> Iterable[bytes]:
    rest = path[len(STATUS_PREFIX):].strip("/")
    name = rest.rsplit("/", 1)[-1] if rest else ""
    if name:
        md = name if name in snap.data.get("mds", {}) else snap.md_for_host(name)
        if md is not None:
            return _respond(start_response, "200 OK",
                            snap.render(f"md:{md}", snap.data["mds"][md]), JSON)
    # mod_md answers an unknown name with the full list, not a 404
    return _respond(start_response, "200 OK",
                    snap.render("list", snap.data.get("list", {"version": ""})), JSON)


def certificate_status(environ: dict, start_response, snap: Snapshot) -> Iterable[bytes]:
    if not snap.data.get("certificate-status", True):
        return _not_found(start_response)
    md = snap.md_for_host(_host(environ))
    if md is None:
        return _not_found(start_response)
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        return _respond(start_response, "501 Not Implemented", b"")
    return _respond(start_response, "200 OK",
                    snap.render(f"cs:{md}", snap.data["cert-status"].get(md, {})), JSON)


def application(environ: dict, start_response) -> Iterable[bytes]:
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
    snap = _snapshot(environ)
    if snap is None:
        return _respond(start_response, "500 Internal Server Error",
                        b"apache-md: APACHE_MD_STORE is not set (see apache-md apache-conf)\n")
    if path.startswith(CHALLENGE_PREFIX):
        return challenge(environ, start_response, path, snap)
    if path == CERT_STATUS_PATH:
        return certificate_status(environ, start_response, snap)
    if path == STATUS_PREFIX or path.startswith(STATUS_PREFIX + "/"):
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _respond(start_response, "501 Not Implemented", b"")
        return md_status(environ, start_response, path, snap)
    return _not_found(start_response)
