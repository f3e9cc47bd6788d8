"""The one HTTP adapter for the CA and the OCSP responders: session, proxy, TLS, Retry-After.

MDHttpProxy replaces the environment's proxies (http(s)_proxy, no_proxy);
MDHttpProxyCACertificateFile is the trust for an https:// proxy only, never
for the server behind it; MDCACertificateFile (the `verify` of each request)
is the trust for the CA.

Transient trouble (5xx, 429, a connection reset, an answer that does not
come, a rejected nonce) is retried in place by the caller under a
RetryPolicy: a few tries within a time budget. A Retry-After that comes
with a 429 or 503 holds back every request to that endpoint, from every
thread, until it has passed; to the whole server only when that says it is
out (core/retryafter, Gate).
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import random
import re
import select
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar, extract_cookies_to_jar
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_encoding_from_headers, select_proxy

from ..core import retryafter
from ..core.problem import CAProblem

log = logging.getLogger(__name__)


class ProxyTLSAdapter(HTTPAdapter):
    """Trust for the TLS connection to an https:// proxy, apart from the server's.

    requests verifies the proxy with the CA bundle (`verify`) unless urllib3's
    ProxyManager gets its own `proxy_ssl_context`; MDHttpProxyCACertificateFile
    goes there, so trusting the proxy never widens trust in the CA connection.
    """

    def __init__(self, context: ssl.SSLContext, **kwargs):
        self._proxy_context = context
        super().__init__(**kwargs)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        proxy_kwargs.setdefault("proxy_ssl_context", self._proxy_context)
        return super().proxy_manager_for(proxy, **proxy_kwargs)


def proxy_context(cafile: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile or None)
    except (OSError, ssl.SSLError) as e:
        raise CAProblem(22, "Invalid argument", None,
                        f"MDHttpProxyCACertificateFile {cafile}: cannot load it "
                        f"({getattr(e, 'strerror', None) or e})") from None


class Session(requests.Session):
    """requests' Session with what it redoes on every request done once per origin.

    For each request requests looks through the environment (proxies, no_proxy, a
    CA bundle: twice), merges cookies, hooks and netrc auth, and reads the netrc
    files: a third of a request's CPU, which with many MDs driven at once is time
    every thread waits for the interpreter lock. Here the environment's settings
    are merged once per scheme, host and trust (the environment does not change
    under a running process) and the request goes straight to the adapter. What
    this does not cover goes the whole way: other arguments, cookies in the jar,
    auth or hooks on the session, a netrc file. Answers, errors and redirects are
    requests' own."""

    def __init__(self) -> None:
        super().__init__()
        self._settings: dict[tuple[str, str, Any], dict[str, Any]] = {}
        self._netrc = os.environ.get("NETRC") is not None or any(
            os.path.exists(os.path.expanduser(f)) for f in ("~/.netrc", "~/_netrc"))

    def request(self, method, url, *args, data=None, headers=None, timeout=None,
                verify=None, **kwargs):
        if args or kwargs or len(self.cookies) or self.auth or any(self.hooks.values()) \
                or (self.trust_env and self._netrc):
            return super().request(method, url, *args, data=data, headers=headers,
                                   timeout=timeout, verify=verify, **kwargs)
        p = requests.PreparedRequest()
        p.prepare_method(method)
        p.prepare_url(url, None)
        p.prepare_headers(merge_setting(headers, self.headers, dict_class=CaseInsensitiveDict))
        p.prepare_body(data, None)
        p.prepare_auth(None, url)  # user:password in the URL, as requests does
        settings = self._merged(p.url, verify)
        start = time.perf_counter()
        if settings["direct"]:
            r = self._direct.send(p, timeout, settings["verify"])
        else:
            r = self.get_adapter(p.url).send(p, timeout=timeout, **settings["adapter"])
        r.elapsed = timedelta(seconds=time.perf_counter() - start)
        if "set-cookie" in r.headers:
            extract_cookies_to_jar(self.cookies, p, r.raw)
        if r.is_redirect:  # as Session.send does, with the (empty) jar requests gives it
            p._cookies = RequestsCookieJar()  # noqa: SLF001
            history = [r, *self.resolve_redirects(r, p, timeout=timeout,
                                                  **settings["adapter"])]
            r = history.pop()
            r.history = history
        r.content  # noqa: B018 - read now, as with stream=False
        return r

    def _merged(self, url: str, verify) -> dict[str, Any]:
        """{"adapter": the adapter's settings, "verify": the trust, "direct": whether the
        request may go the direct way (no proxy, no client certificate, a plain adapter)}."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, verify)
        settings = self._settings.get(key)
        if settings is None:
            merged = self.merge_environment_settings(url, {}, False, verify, None)
            direct = (parts.scheme in ("http", "https") and merged.get("cert") is None
                      and not merged.get("stream")
                      and select_proxy(url, merged.get("proxies")) is None
                      and type(self.get_adapter(url)) is HTTPAdapter)
            settings = self._settings[key] = {"adapter": merged, "direct": direct,
                                              "verify": merged.get("verify", True)}
        return settings

    @property
    def _direct(self) -> "Direct":
        d = self.__dict__.get("_direct_conns")
        if d is None:
            d = self.__dict__["_direct_conns"] = Direct()
        return d

    def close(self) -> None:
        d = self.__dict__.get("_direct_conns")
        if d is not None:
            d.close()
        super().close()


class _Raw:
    """What requests looks at in a Response's `raw` (the cookies of an answer)."""

    def __init__(self, response: http.client.HTTPResponse):
        self._original_response = response
        self.reason = response.reason

    def close(self) -> None:
        pass


class Direct:
    """A request straight over http.client on one kept-alive connection per origin and
    trust: requests and urllib3 spent ~0.6 ms of CPU per request on this machine, this
    ~0.1 ms (the rest is TLS and the socket), and a drive of 50 new MDs sends some 400,
    every one of them CPU the other MDs wait for. Used only where requests would go
    straight to the server too (no proxy, no client certificate: Session._merged), with
    the TLS context urllib3 makes and requests' trust (`verify`: a CA file or directory,
    True: requests' bundle, False: none). What goes on the wire is what requests sends
    (its prepared request: headers, body); the answer is a requests.Response and every
    failure the requests exception that urllib3's would have become, so the callers'
    retries (transient(), unreachable()) read it alike. A connection that failed, or
    that the server closed, is not used again (urllib3's check before reuse too)."""

    def __init__(self) -> None:
        self._conns: dict[tuple, http.client.HTTPConnection] = {}
        self._contexts: dict[Any, ssl.SSLContext] = {}

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()

    def send(self, p: requests.PreparedRequest, timeout, verify) -> requests.Response:
        parts = urlsplit(p.url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        host = parts.hostname or ""
        connect_t, read_t = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        key = (https, host, port, verify)
        conn = self._conns.get(key)
        if conn is not None and (conn.sock is None or _dropped(conn.sock)):
            conn.close()
            conn = None
        if conn is None:
            conn = self._connect(p, https, host, port, verify, connect_t, read_t)
            self._conns[key] = conn
        body = p.body.encode() if isinstance(p.body, str) else p.body
        try:
            conn.sock.settimeout(read_t)
            conn.putrequest(p.method, p.path_url, skip_host="Host" in p.headers,
                            skip_accept_encoding="Accept-Encoding" in p.headers)
            for name, value in p.headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            answer = conn.getresponse()
        except BaseException as e:
            self._drop(key, conn)
            raise _request_error(e, p) from e
        try:
            content = answer.read()
        except BaseException as e:
            self._drop(key, conn)
            raise _body_error(e, p) from e
        if answer.will_close or conn.sock is None:
            self._drop(key, conn)
        r = requests.Response()
        r.status_code = answer.status
        r.headers = _headers(answer.msg)
        r.encoding = get_encoding_from_headers(r.headers)
        r.reason = answer.reason
        r.url = p.url
        r.request = p
        r.raw = _Raw(answer)
        r._content = _decoded(content, r.headers.get("Content-Encoding"), p)  # noqa: SLF001
        r._content_consumed = True  # noqa: SLF001
        return r

    def _drop(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        conn.close()
        if self._conns.get(key) is conn:
            del self._conns[key]

    def _connect(self, p, https: bool, host: str, port: int, verify, connect_t,
                 read_t) -> http.client.HTTPConnection:
        """A new connection (TCP, then TLS), failures as urllib3's become in requests: no
        connection (refused, no route, a name not found) ConnectionError, the connect's
        timeout ConnectTimeout, a TLS handshake that does not finish ReadTimeout, trust
        SSLError."""
        if https:
            context = self._context(verify, p)
            conn = http.client.HTTPSConnection(host, port, timeout=connect_t, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect_t)
        try:
            sock = socket.create_connection((host, port), connect_t)
        except socket.timeout:
            raise requests.exceptions.ConnectTimeout(
                f"Connection to {host} timed out. (connect timeout={connect_t})",
                request=p) from None
        except OSError as e:
            raise requests.exceptions.ConnectionError(
                f"HTTPConnectionPool(host={host!r}, port={port}): Failed to establish a new "
                f"connection: {e}", request=p) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if https:
            try:
                sock.settimeout(read_t)
                sock = conn._context.wrap_socket(sock, server_hostname=host)  # noqa: SLF001
            except BaseException as e:
                sock.close()
                raise _request_error(e, p) from e
        conn.sock = sock
        return conn

    def _context(self, verify, p) -> ssl.SSLContext:
        ctx = self._contexts.get(verify)
        if ctx is not None:
            return ctx
        from urllib3.util.ssl_ import create_urllib3_context
        if verify:
            where = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
            if not where or not os.path.exists(where):
                raise OSError(f"Could not find a suitable TLS CA certificate bundle, "
                              f"invalid path: {where}")
            ctx = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            try:
                if os.path.isdir(where):
                    ctx.load_verify_locations(capath=where)
                else:
                    ctx.load_verify_locations(cafile=where)
            except (OSError, ssl.SSLError) as e:
                raise requests.exceptions.SSLError(e, request=p) from None
            ctx.check_hostname = True
        else:
            ctx = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
            ctx.check_hostname = False
        ctx.set_alpn_protocols(["http/1.1"])
        self._contexts[verify] = ctx
        return ctx


def _dropped(sock: socket.socket) -> bool:
    """The server closed the kept-alive connection (or sent what nobody asked for)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _headers(msg: http.client.HTTPMessage) -> CaseInsensitiveDict:
    """Repeated fields joined with ", " (several Link headers), as urllib3 joins them."""
    out: CaseInsensitiveDict = CaseInsensitiveDict()
    for name, value in msg.items():
        if name in out:
            out[name] = f"{out[name]}, {value}"
        else:
            out[name] = value
    return out


def _decoded(content: bytes, encoding: str | None, p) -> bytes:
    """gzip and deflate undone, as urllib3 does for what requests accepts."""
    if not encoding or not content:
        return content
    enc = encoding.strip().lower()
    try:
        if enc in ("gzip", "x-gzip"):
            return zlib.decompress(content, 16 + zlib.MAX_WBITS)
        if enc == "deflate":
            try:
                return zlib.decompress(content)
            except zlib.error:
                return zlib.decompress(content, -zlib.MAX_WBITS)
    except zlib.error as e:
        raise requests.exceptions.ContentDecodingError(
            f"Received response with content-encoding: {enc}, but failed to decode it.",
            e, request=p) from None
    return content


def _request_error(e: BaseException, p) -> BaseException:
    """A failure before the answer's head was read, as requests raises it."""
    if isinstance(e, socket.timeout):
        return requests.exceptions.ReadTimeout(f"Read timed out. ({e})", request=p)
    if isinstance(e, (ssl.SSLError, ssl.CertificateError)):
        return requests.exceptions.SSLError(e, request=p)
    if isinstance(e, (OSError, http.client.HTTPException)):
        return requests.exceptions.ConnectionError(("Connection aborted.", e), request=p)
    return e


def _body_error(e: BaseException, p) -> BaseException:
    """A failure while the answer's body was read, as requests raises it."""
    if isinstance(e, socket.timeout):
        return requests.exceptions.ConnectionError(f"Read timed out. ({e})", request=p)
    if isinstance(e, ssl.SSLError):
        return requests.exceptions.SSLError(e, request=p)
    if isinstance(e, (OSError, http.client.HTTPException)):
        return requests.exceptions.ChunkedEncodingError(
            ("Connection broken: " + repr(e), e), request=p)
    return e


def session(proxy: str | None, proxy_ca_certs: str | None) -> requests.Session:
    """A session that goes through `proxy` (MDHttpProxy) when one is set.
    Raises CAProblem when the proxy's trust anchors cannot be loaded."""
    s = Session()
    if proxy and proxy.lower().startswith("https:"):
        adapter = ProxyTLSAdapter(proxy_context(proxy_ca_certs))
    else:
        adapter = HTTPAdapter()
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    if proxy:
        s.proxies = {"http": proxy, "https": proxy}
        s.trust_env = False  # MDHttpProxy wins over http(s)_proxy/no_proxy
    return s


def retry_after_seconds(response: requests.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


# -- transient trouble -------------------------------------------------------------------------

@dataclass
class Transient:
    """Trouble worth another try: what happened, in words for a failure message."""

    kind: str  # "http" (5xx, 429), "reset", "timeout", "badNonce"
    status: int | None = None  # the HTTP status, for "http"
    retry_after: float | None = None

    @property
    def what(self) -> str:
        if self.kind == "http":
            try:
                phrase = HTTPStatus(self.status).phrase
            except ValueError:
                phrase = ""
            return f"answered {self.status} {phrase}".rstrip()
        return {"reset": "broke the connection", "timeout": "did not answer in time",
                "badNonce": "rejected the nonce (badNonce)"}.get(self.kind, self.kind)


# getaddrinfo's failures as urllib3 1.26 (Debian 12) and 2.x word them
UNRESOLVED = re.compile(r"Failed to resolve|Name or service not known|Temporary failure in "
                        r"name resolution|No address associated with hostname|nodename nor "
                        r"servname|\[Errno -[235]\]")


def unresolved(e: BaseException) -> bool:
    """The CA's name does not resolve (mod_md: curl's COULDNT_RESOLVE_HOST, refused)."""
    return isinstance(e, requests.exceptions.ConnectionError) \
        and not isinstance(e, requests.exceptions.ProxyError) and bool(UNRESOLVED.search(str(e)))


def unreachable(e: BaseException) -> bool:
    """No connection at all (refused, a name that does not resolve, no route, connect
    timeout): the server is down. Not retried in place; the worker asks again when it
    answers (ca/outages)."""
    return (isinstance(e, requests.exceptions.ConnectTimeout) or unresolved(e)
            or (isinstance(e, requests.exceptions.ConnectionError)
                and not isinstance(e, (requests.exceptions.SSLError,
                                       requests.exceptions.ProxyError))
                and "refused" in str(e).lower()))


def transient(e: BaseException, response: requests.Response | None) -> Transient | None:
    """The trouble behind `e` if another try may succeed; `response` is the last one
    received in this try (None when none came)."""
    if response is not None and (response.status_code >= 500 or response.status_code == 429):
        return Transient("http", response.status_code, retry_after_seconds(response))
    if response is not None or unreachable(e):
        return None
    if isinstance(e, (requests.exceptions.SSLError, requests.exceptions.ProxyError)):
        return None  # trust or proxy configuration: the same next time
    if isinstance(e, requests.exceptions.Timeout):
        return Transient("timeout")
    if isinstance(e, (requests.exceptions.ConnectionError,
                      requests.exceptions.ChunkedEncodingError)):
        return Transient("reset")
    return None


def repeatable(method: str, resource: str | None, body: str | bytes | None) -> bool:
    """Whether sending this request twice does what sending it once does, so a copy may
    go out while the first is unanswered (ca/hedge): GET and HEAD (the directory, new-nonce,
    renewalInfo), a POST-as-GET (RFC 8555 §6.3: the JWS payload is empty: it reads an
    order, an authorization, a certificate), and new-account, which for a key
    registered already answers with that account (§7.3.1). Never new-order, finalize, a
    challenge answer, key-change, revocation or any other POST with a payload: a copy
    of those makes a second order or changes what the first did. `resource`: the
    directory's name for the URL ("new-account"), None for other URLs."""
    if method in ("GET", "HEAD"):
        return True
    if method != "POST" or body is None:
        return False
    if resource == "new-account":
        return True
    try:
        jws = json.loads(body)
    except ValueError:
        return False
    return isinstance(jws, dict) and jws.get("payload") == ""


def hedgeable(method: str, resource: str | None, body: str | bytes | None) -> bool:
    """Whether a late answer to this request may get a copy beside it (ca/hedge): one safe
    to repeat, or new-order. A copy of new-order makes a second order, of which only the
    first answered is used; the other stays pending until the CA expires it (RFC 8555
    §7.1.6; Let's Encrypt hands back the same pending order instead). No client has that
    order's URL before its answer, so there is no state to read in its stead, as there is
    for finalize and a challenge answer, which are sent once. Not with ARI's `replaces`:
    a second order replacing the same certificate may be refused (alreadyReplaced)."""
    if repeatable(method, resource, body):
        return True
    if method != "POST" or resource != "new-order" or body is None:
        return False
    try:
        payload = json.loads(base64.urlsafe_b64decode(
            json.loads(body)["payload"] + "=="))
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(payload, dict) and "replaces" not in payload


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how long, one request is tried before its failure counts."""

    # A 5xx or reset without Retry-After is most often one replica's or one connection's
    # (a load balancer's): the first pause is short; doubling, ten tries still ride out a CA
    # that fails for half a minute (0.1 + 0.2 + ... + 8 + 8: 28.7 s, jittered 0.5-1.5x)
    tries: int = 10
    budget: float = 60.0  # seconds from the first try
    first: float = 0.1  # pause after the first failure, doubling
    longest: float = 8.0  # longest pause without a Retry-After

    def pause(self, tries: int, left: float, retry_after: float | None = None,
              rnd: random.Random | None = None, backoffs: int | None = None) -> float | None:
        """Seconds to wait after `tries` failed tries, `left` seconds before the budget
        runs out; None: give up. A Retry-After is waited out exactly; other pauses double
        with each of the `backoffs` failures that came without one (default: every try)
        and are jittered (0.5-1.5x)."""
        if tries >= self.tries:
            return None
        if retry_after is not None:
            wait = retry_after
        else:
            n = tries if backoffs is None else max(1, backoffs)
            wait = min(self.longest, self.first * 2 ** (n - 1))
            wait *= 0.5 + (rnd or random).random()
        return wait if wait <= left else None


DEFAULT_POLICY = RetryPolicy()


class Held(Exception):
    """The server's Retry-After runs longer than the caller may wait."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds


class Gate:
    """When each endpoint of one server may be asked again (core/retryafter: a Retry-After
    holds back its endpoint, or the whole server when that is out), for every thread."""

    def __init__(self) -> None:
        self._holds = retryafter.Holds()
        self._lock = threading.Lock()

    def answered(self, url: str, response: requests.Response, entry: bool = False) -> None:
        """Note the answer to a request to `url` (its Retry-After with 429/503; any other
        answer ends a run of 503s); `entry`: `url` is the directory or new-nonce."""
        seconds = retry_after_seconds(response)
        with self._lock:
            held = self._holds.answered(url, response.status_code, seconds, time.monotonic(),
                                        entry)
        if held:
            log.debug("%s: Retry-After %.1f s with %d: %s waits", url, seconds,
                      response.status_code, "every endpoint" if held == retryafter.WHOLE
                      else "this endpoint")

    def held_for(self, url: str) -> float:
        with self._lock:
            return self._holds.held_for(url, time.monotonic())

    def wait(self, url: str, stop: threading.Event, deadline: float | None = None) -> None:
        """Return once `url` may be asked. Held when that is after `deadline`
        (time.monotonic()); CAProblem "Stopped" when `stop` is set meanwhile."""
        while (left := self.held_for(url)) > 0:
            if deadline is not None and time.monotonic() + left > deadline:
                raise Held(left)
            if stop.wait(left):
                raise CAProblem(20014, "Stopped", None, "apache-md is shutting down")


_gates: dict[str, Gate] = {}
_gates_lock = threading.Lock()


def gate_for(url: str) -> Gate:
    """The gate of the server at `url` (scheme, host and port), one per process."""
    parts = urlsplit(url)
    key = f"{parts.scheme}://{parts.netloc}".lower()
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = Gate()
        return gate


def holds_back(response: requests.Response) -> float | None:
    """The Retry-After that holds back the endpoint: with 429 and 503 only (with 200
    it paces the polling of one resource, RFC 8555 §7.5.1)."""
    if response.status_code in (429, 503):
        return retry_after_seconds(response)
    return None
