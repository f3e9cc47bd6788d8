"""The WSGI handlers, mounted in Apache by `apache-md apache-conf`.

Thin and read-only: they answer from the challenge files and the status
snapshot that the worker writes, never talk to a CA and never write the
store. The snapshot's index is re-read only when the file changes, the MDs'
pieces only when the index names other files, and each answer is kept until
then, so a request costs a dict lookup and a look at the writer's counter.

Loaded by mod_wsgi by file path, possibly in Apache's own children with the
system Python: standard library only, no import of the apache_md package.

/md-status answers mod_md's JSON, or by content negotiation (or
`?format=json|html|metrics`) the HTML page or Prometheus metrics;
/md-status/metrics is the metrics.

The OCSP relay (docs/ocsp.md) answers mod_ssl's stapling requests
(SSLStaplingForceURL) with the response the worker stored for that
certificate; it reads the few DER fields it needs itself.
"""
from __future__ import annotations

import base64
import json
import os
import re
import sys
import threading
import time
import traceback
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
CERT_STATUS_PATH = "/.httpd/certificate-status"
STATUS_PREFIX = "/md-status"
RELAY_PATH = "/.httpd/ocsp-relay"
JSON = "application/json"
MARK_HEADER = "X-Apache-MD"  # = preflight.MARK_HEADER (this file must not import the package)
GENERATED = "<!--apache-md:generated-->"  # = status.page.GENERATED
META = "<!--apache-md:meta-->"  # = status.page.META
TYPES = {"json": JSON, "html": "text/html; charset=utf-8",
         "metrics": "text/plain; version=0.0.4; charset=utf-8"}
# What a client may ask for, per body format; the first format wins a tie, so
# `*/*` (curl, requests, mod_md scrapers) keeps getting mod_md's JSON.
OFFERS = (("json", ("application/json",)),
          ("html", ("text/html", "application/xhtml+xml")),
          ("metrics", ("application/openmetrics-text", "text/plain")))
OCSP_RESPONSE = [("Content-Type", "application/ocsp-response")]
# OCSPResponse with only a responseStatus (RFC 6960 4.2.1): no body to staple.
OCSP_MALFORMED = bytes.fromhex("30030a0101")
OCSP_TRY_LATER = bytes.fromhex("30030a0103")
OCSP_UNAUTHORIZED = bytes.fromhex("30030a0106")
MAX_OCSP_REQUEST = 16384
# Every request answers what the last finished write says: the writer bumps a counter
# in `status/snapshot/generation` (in place, after each index), and a request reads it
# with one pread() on a descriptor kept open: no path lookup, unlike a stat() per request.
# (Not a shared mapping, which costs no system call at all: a counter file truncated by
# hand would kill every Apache child that touched the mapping with SIGBUS.) The index is
# still looked at this often
# (seconds) whatever the counter says: a counter file replaced (a store restored) or an
# index written by hand.
RECHECK = 1.0
MAX_ANSWERS = 4096  # md-status answers kept per snapshot (paths are the client's choice)
_RELAY_FILE = re.compile(r"^[^/\\]+/ocsp-[0-9a-f]{40}\.json$")


FORMAT = 2  # of the snapshot's index (status/snapshot.py)
_PIECE_FILE = re.compile(r"^[0-9a-f]{32}\.json$")
# What a body key takes from an MD's pieces (status/snapshot.py writes them).
_MD_BODIES = {"md:": "md", "html:": "html", "cs:": "cs"}


class StaleView(Exception):
    """A piece file the view's index names is gone: a newer index replaced it."""


class View:
    """One loaded snapshot index: what it serves never changes after creation.

    The index (status/snapshot/status.json) names one file of pieces per MD
    (status/snapshot/md/<digest>.json, written once, never changed); an MD's own bodies
    are pieces, and the list, the list page and the metrics are the index's templates
    filled with every MD's pieces. Pieces are read on first use and kept by file name,
    so a new index costs reading only the MDs whose files changed; `cache` False keeps
    none (a one-off reader going through every MD once: `apache-md status`)."""

    def __init__(self, store: str, data: dict[str, Any],
                 pieces: dict[str, dict[str, str]] | None = None, cache: bool = True):
        self.store = store
        self.cache = cache
        self.data = data
        self.dir = os.path.join(store, "status", "snapshot", "md")
        mds = data.get("pieces")
        self.files: dict[str, str] = {
            e[0]: e[1] for e in mds if isinstance(e, list) and len(e) == 2
            and isinstance(e[0], str) and isinstance(e[1], str) and _PIECE_FILE.match(e[1])
        } if isinstance(mds, list) else {}
        templates = data.get("templates")
        self.templates = templates if isinstance(templates, dict) else {}
        # piece files by name: those of the previous view that this one names too
        self.pieces = pieces if pieces is not None else {}
        self.when = str(data.get("generated-page", ""))
        self.meta = str(data.get("meta-page", ""))
        self.bodies: dict[str, bytes] = {}
        # md-status answers by (path, format), made on first request: the one thing
        # that changes after creation (a dict, so threads share it safely)
        self.answers: dict[tuple[str, str], tuple[str, list[tuple[str, str]], bytes]] = {}

    def md_pieces(self, name: str) -> dict[str, str]:
        file = self.files[name]
        got = self.pieces.get(file)
        if got is None:
            try:
                with open(os.path.join(self.dir, file), "rb") as f:
                    got = json.loads(f.read())
            except FileNotFoundError:
                raise StaleView(file) from None
            if not isinstance(got, dict):
                got = {}
            if self.cache:
                self.pieces[file] = got
        return got

    def text(self, key: str) -> str | None:
        """The body `key` ("list", "html", "metrics", "md:<name>", "html:<name>",
        "cs:<name>") as the writer made it; None when there is none."""
        kind, sep, name = key.partition(":")
        if sep:
            piece = _MD_BODIES.get(kind + ":")
            if piece is None or name not in self.files:
                return None
            text = self.md_pieces(name).get(piece)
            return text if isinstance(text, str) else None
        template = self.templates.get(key)
        if not isinstance(template, list):
            return None
        out = []
        for part in template:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, list) and len(part) == 2:
                slot, between = str(part[0]), str(part[1])
                texts = (self.md_pieces(n).get(slot) for n in self.files)
                out.append(between.join(t for t in texts if isinstance(t, str)))
        return "".join(out)

    def body(self, key: str) -> bytes | None:
        got = self.bodies.get(key)
        if got is None:
            text = self.text(key)
            if text is None:
                return None
            # The pages say when the snapshot was made: the one thing that changes each time.
            # An MD's page says who runs as the index does (page.META).
            got = (text.replace(META, self.meta).replace(GENERATED, self.when)
                   if key.startswith("html") else text).encode("utf-8")
            self.bodies[key] = got
        return got

    def has_md(self, name: str) -> bool:
        return name in self.files

    def md_for_host(self, host: str) -> str | None:
        host = host.lower().rstrip(".")
        domains = self.data.get("domains", {})
        name = domains.get(host)
        if name is None and "." in host:
            name = domains.get("*." + host.split(".", 1)[1])
        if name is None and self.has_md(host):
            name = host
        return name


class Snapshot:
    """The status snapshot of one store, reloaded when its index changes."""

    def __init__(self, store: str):
        self.store = store
        self.path = os.path.join(store, "status", "snapshot", "status.json")
        self.gen_path = os.path.join(store, "status", "snapshot", "generation")
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")  # time.monotonic() of the last look at the file
        self._lock = threading.Lock()
        self._gen: int | None = None  # a descriptor of the writer's counter file
        self._gen_file: tuple[int, int] | None = None  # its (device, inode)
        self._gen_seen = b""  # its value when the index was last looked at
        self.view = View(store, {})

    def current(self, fresh: bool = False) -> View:
        """The view of the index as the last finished write left it; `fresh`: read
        again even if it looks the same (a piece it named is gone)."""
        now = time.monotonic()
        gen = self._gen
        if not fresh and gen is not None and now - self._checked < RECHECK \
                and _pread8(gen) == self._gen_seen:
            return self.view
        with self._lock:
            seen = self._counter()  # before the index: a write after this is seen next time
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                stamp = None
            if stamp != self._stamp or fresh:
                view, old = View(self.store, self._read(stamp)), self.view.pieces
                view.pieces.update((f, old[f]) for f in view.files.values() if f in old)
                self.view = view
                self._stamp = stamp
            self._gen_seen = seen
            self._checked = now
        return self.view

    def _counter(self) -> bytes:
        """The counter's value, opening the file again when it was replaced; b"" and no
        descriptor while there is none (then every request looks at the index)."""
        try:
            st = os.stat(self.gen_path)
            file = (st.st_dev, st.st_ino)
        except OSError:
            file = None
        if file != self._gen_file:
            old, self._gen, self._gen_file = self._gen, None, None
            if old is not None:
                # a request may still pread() the old descriptor: it then reads the old
                # file's counter or EBADF (b""), both of which only send it to the index
                _close(old)
            if file is not None:
                try:
                    self._gen = os.open(self.gen_path, os.O_RDONLY | os.O_CLOEXEC)
                    self._gen_file = file
                except OSError:
                    pass
        return _pread8(self._gen) if self._gen is not None else b""

    def _read(self, stamp) -> dict[str, Any]:
        if stamp is None:
            return {}
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return {}
        # another format (a version before or after this file's): none until rewritten
        return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def _pread8(fd: int) -> bytes:
    """The counter's 8 bytes; b"" when they cannot be read (truncated, closed)."""
    try:
        return os.pread(fd, 8, 0)
    except OSError:
        return b""


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _quality(mtype: str, ranges: list[tuple[str, float]]) -> float:
    """q of the most specific Accept range matching `mtype` (0 when none does)."""
    major = mtype.split("/", 1)[0] + "/*"
    best, rank = 0.0, -1
    for rng, q in ranges:
        r = 2 if rng == mtype else 1 if rng == major else 0 if rng == "*/*" else -1
        if r > rank:
            best, rank = q, r
    return best if rank >= 0 else 0.0


def negotiate(accept: str) -> str:
    """"json", "html" or "metrics" for an Accept header (RFC 9110 q-values)."""
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):
        fields = part.split(";")
        rng = fields[0].strip().lower()
        if not rng:
            continue
        q = 1.0
        for param in fields[1:]:
            k, _, v = param.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        ranges.append((rng, q))
    if not ranges:
        return "json"
    best, best_q = "json", 0.0
    for fmt, mtypes in OFFERS:
        q = max(_quality(m, ranges) for m in mtypes)
        if q > best_q:
            best, best_q = fmt, q
    return best


def _host(environ: dict) -> str:
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or ""
    if host.startswith("["):  # [::1]:443
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _respond(start_response: Callable, status: str, body: bytes = b"",
             headers: list[tuple[str, str]] | None = None, exc_info=None) -> Iterable[bytes]:
    hdrs = list(headers or [("Content-Type", "text/plain; charset=utf-8")])
    hdrs.append(("Content-Length", str(len(body))))
    if exc_info:
        start_response(status, hdrs, exc_info)
    else:
        start_response(status, hdrs)
    return [body]


def _unavailable(start_response, headers=None, exc_info=None) -> Iterable[bytes]:
    # What the public sees when apache-md cannot answer: no detail (that goes to the log).
    return _respond(start_response, "503 Service Unavailable", b"Service Unavailable\n",
                    headers, exc_info)


def _shown(text: str, limit: int = 200) -> str:
    """A client's text as it may appear in one log line: printable ASCII, bounded."""
    return ascii(text[:limit])[1:-1] + ("..." if len(text) > limit else "")


def log(environ: dict, text: str) -> None:
    """One line in Apache's error log (mod_wsgi's wsgi.errors)."""
    errors = environ.get("wsgi.errors")
    if errors is not None:
        errors.write(f"apache-md: {text}\n")
        errors.flush()


def _not_found(start_response) -> Iterable[bytes]:
    return _respond(start_response, "404 Not Found", b"Not Found\n")


def challenge(environ: dict, start_response, path: str, snap: View) -> Iterable[bytes]:
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
        # Not ours to answer (mod_md declines here): serve what the vhost's own
        # document root has, e.g. another ACME client's webroot answer.
        return _from_document_root(environ, start_response, path) or not_found()
    if not host or "/" in host or host.startswith("."):
        return not_found()

    def none_of_ours():
        if md in snap.data.get("http01-shared", ()):
            return _from_document_root(environ, start_response, path) or not_found()
        return not_found()
    try:
        with open(os.path.join(snap.store, "challenges", host, "acme-http-01.txt"), "rb") as f:
            body = f.read(8192)
    except FileNotFoundError:
        return none_of_ours()
    except OSError as e:
        log(environ, f"cannot read the http-01 answer for {_shown(host)}: {e}")
        return _unavailable(start_response, mark)
    # The file holds "<token>.<thumbprint>": answer only for the token it was made for.
    if not body.startswith(token.encode() + b"."):
        return none_of_ours()
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        return _respond(start_response, "501 Not Implemented", b"", mark)
    return _respond(start_response, "200 OK", body, mark)


def _from_document_root(environ: dict, start_response, path: str) -> Iterable[bytes] | None:
    """The file at DOCUMENT_ROOT + path, if there is one inside the document root."""
    root = environ.get("DOCUMENT_ROOT")
    if not root or "\x00" in root + path:  # no file has a NUL in its name
        return None
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, path.lstrip("/")))
    if not target.startswith(base + os.sep) or not os.path.isfile(target):
        return None
    try:
        with open(target, "rb") as f:
            body = f.read(65536)
    except OSError:
        return None
    return _respond(start_response, "200 OK", body, [("Content-Type", "text/plain")])


def md_status(environ: dict, start_response, path: str, snap: View,
              fmt: str) -> Iterable[bytes]:
    answer = snap.answers.get((path, fmt))
    if answer is None:
        answer = status_answer(path, snap, fmt)
        if len(snap.answers) < MAX_ANSWERS:
            snap.answers[(path, fmt)] = answer
    start_response(answer[0], answer[1])
    return [answer[2]]


def status_answer(path: str, snap: View, fmt: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status, headers, body) of /md-status... in a format: the same for every request
    to that path and format until the snapshot changes."""
    if not snap.templates:
        body = (b"apache-md: no status snapshot yet; it is written by `apache-md worker`, "
                b"`apache-md activate` and `apache-md renew`\n")
        return "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8"),
                                           ("Content-Length", str(len(body)))], body
    rest = path[len(STATUS_PREFIX):].strip("/")
    name = rest.rsplit("/", 1)[-1] if rest else ""
    if name == "metrics" and not snap.has_md(name):
        fmt = "metrics"
    key = {"json": "list", "html": "html", "metrics": "metrics"}[fmt]
    if name and fmt != "metrics":
        md = name if snap.has_md(name) else snap.md_for_host(name)
        if md is not None:
            key = f"md:{md}" if fmt == "json" else f"html:{md}"
    # mod_md answers an unknown name with the full list, not a 404
    body = snap.body(key) or b""
    return "200 OK", [("Content-Type", TYPES[fmt]), ("Vary", "Accept"),
                      ("Content-Length", str(len(body)))], body


def certificate_status(environ: dict, start_response, snap: View) -> Iterable[bytes]:
    if not snap.data.get("certificate-status", True):
        return _not_found(start_response)
    md = snap.md_for_host(_host(environ))
    if md is None:
        return _not_found(start_response)
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        return _respond(start_response, "501 Not Implemented", b"")
    return _respond(start_response, "200 OK", snap.body(f"cs:{md}") or b"{}",
                    [("Content-Type", JSON)])


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `pos`."""
    tag, n = data[pos], data[pos + 1]
    pos += 2
    if n & 0x80:
        size = n & 0x7F
        if not 0 < size <= 4:
            raise ValueError("unsupported DER length")
        n = int.from_bytes(data[pos:pos + size], "big")
        pos += size
    if pos + n > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + n


def relay_key(request: bytes) -> str:
    """"<issuerKeyHash hex>:<serial hex>" of the first CertID in a DER OCSPRequest."""
    _, start, _ = _der(request, 0)  # OCSPRequest
    _, start, end = _der(request, start)  # TBSRequest
    tag, s, e = _der(request, start)
    while tag != 0x30:  # skip [0] version, [1] requestorName up to the requestList
        tag, s, e = _der(request, e)
    _, s, _ = _der(request, s)  # the first Request
    _, s, _ = _der(request, s)  # its CertID
    _, _, e = _der(request, s)  # hashAlgorithm
    _, _, e = _der(request, e)  # issuerNameHash
    tag, s, e = _der(request, e)  # issuerKeyHash
    if tag != 0x04:
        raise ValueError("no issuerKeyHash")
    key_hash = request[s:e]
    tag, s, e = _der(request, e)  # serialNumber
    if tag != 0x02:
        raise ValueError("no serialNumber")
    serial = int.from_bytes(request[s:e], "big", signed=True)
    return f"{key_hash.hex()}:{serial:x}"


def ocsp_relay(environ: dict, start_response, snap: View) -> Iterable[bytes]:
    """mod_ssl POSTs its OCSP request here; answer with the stored response."""
    if environ.get("REQUEST_METHOD") != "POST":
        return _respond(start_response, "405 Method Not Allowed", b"", [("Allow", "POST")])
    try:
        size = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        size = 0
    try:
        body = environ["wsgi.input"].read(min(max(size, 0), MAX_OCSP_REQUEST))
    except (OSError, ValueError) as e:  # mod_wsgi: the client sent less and went away
        log(environ, f"ocsp-relay: request body unreadable ({size} bytes announced): {e}")
        return _respond(start_response, "400 Bad Request", b"", OCSP_RESPONSE)
    try:
        key = relay_key(body)
    except (ValueError, IndexError):
        return _respond(start_response, "200 OK", OCSP_MALFORMED, OCSP_RESPONSE)
    name = snap.data.get("ocsp-relay", {}).get(key)
    if not name or not _RELAY_FILE.match(name):
        return _respond(start_response, "200 OK", OCSP_UNAUTHORIZED, OCSP_RESPONSE)
    try:
        with open(os.path.join(snap.store, "ocsp", name), "rb") as f:
            stored = json.loads(f.read())
        text = stored.get("response") or ""
        der = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if parsedate_to_datetime(stored["valid"]["until"]).timestamp() <= time.time():
            der = b""  # expired while the responder was away: staple nothing
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        der = b""
    # Nothing current stored: mod_ssl staples nothing and asks again later.
    return _respond(start_response, "200 OK", der or OCSP_TRY_LATER, OCSP_RESPONSE)


class Handlers:
    """The WSGI application: routes a request to its handler.

    Holds what it learns across requests: the snapshot of each store (reloaded when the
    file changes) and the format each distinct Accept header negotiates to."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._negotiated: dict[str, str] = {}

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        try:
            try:
                return self._route(environ, start_response)
            except StaleView:  # the index was replaced while this request read it
                return self._route(environ, start_response, fresh=True)
        except Exception as e:  # public endpoints never answer 500: one line, then 503
            frames = traceback.extract_tb(e.__traceback__)
            where = next((f for f in reversed(frames) if f.filename == __file__), frames[-1])
            log(environ, f"internal error answering {_shown(environ.get('REQUEST_METHOD', ''))} "
                f"{_shown(_path(environ))}: {type(e).__name__}: {_shown(str(e))} "
                f"({os.path.basename(where.filename)}:{where.lineno})")
            return _unavailable(start_response, exc_info=sys.exc_info())

    def _route(self, environ: dict, start_response, fresh: bool = False) -> Iterable[bytes]:
        path = _path(environ)
        status = path == STATUS_PREFIX or path.startswith(STATUS_PREFIX + "/")
        snap = self.snapshot(environ, fresh)
        if snap is None:
            log(environ, "APACHE_MD_STORE is not set for this request: mount the handlers "
                "with what `apache-md apache-conf` prints")
            return _unavailable(start_response)
        if status:
            if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
                return _respond(start_response, "501 Not Implemented", b"")
            return md_status(environ, start_response, path, snap, self.format(environ))
        if path.startswith(CHALLENGE_PREFIX) or path == CHALLENGE_PREFIX[:-1]:
            return challenge(environ, start_response, path, snap)
        if path == CERT_STATUS_PATH:
            return certificate_status(environ, start_response, snap)
        if path == RELAY_PATH:
            return ocsp_relay(environ, start_response, snap)
        return _not_found(start_response)

    def snapshot(self, environ: dict, fresh: bool = False) -> View | None:
        store = environ.get("APACHE_MD_STORE") or os.environ.get("APACHE_MD_STORE")
        if not store:
            return None
        snap = self._snapshots.get(store)
        if snap is None:
            snap = self._snapshots.setdefault(store, Snapshot(store))
        return snap.current(fresh)

    def format(self, environ: dict) -> str:
        """json, html or metrics: `?format=`, else negotiated from Accept."""
        query = environ.get("QUERY_STRING", "")
        if query:
            for pair in query.split("&"):
                k, _, v = pair.partition("=")
                if k == "format" and v in TYPES:
                    return v
        accept = environ.get("HTTP_ACCEPT", "")
        fmt = self._negotiated.get(accept)
        if fmt is None:
            fmt = negotiate(accept)
            if len(self._negotiated) < 256:  # a handful of distinct clients in practice
                self._negotiated[accept] = fmt
        return fmt


def _path(environ: dict) -> str:
    return (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"


application = Handlers()
