"""Certificates from tailscaled's LocalAPI: the client, and one renewal staged like ACME's.

The contract, as tailscale's own client (client/local CertPairWithValidity)
and the daemon (ipn/localapi/cert.go, ipn/ipnserver) have it:

- `GET /localapi/v0/cert/<name>?type=pair&min_validity=<Go duration>`, HTTP/1.1
  over the daemon's unix socket with `Host: local-tailscaled.sock`. Any other
  Host (mod_md sent `localhost`), a Referer or an Origin gets 403 "invalid
  localapi request".
- The daemon knows the caller by SO_PEERCRED: root, the operator (`tailscale
  set --operator=<user>`) and the user in tailscaled's TS_PERMIT_CERT_UID may
  fetch certificates; others get 403 "cert access denied".
- It answers from its cache unless that certificate lives shorter than
  min_validity (tailscale >= 1.72), and then renews synchronously.
- 200: the key PEM, then the chain PEM. Errors are text/plain messages: 500
  for a name not among the node's, or a tailnet without HTTPS certificates;
  429 with Retry-After when Let's Encrypt rate-limits the daemon.
"""
from __future__ import annotations

import http.client
import io
import os
import pwd
import select
import socket
import stat
import threading
import time
from datetime import datetime, timedelta
from typing import Callable

from .. import __version__
from ..core import crypto
from ..core.durations import format_duration
from ..core.job import now_utc
from ..core.model import ManagedDomain
from ..core.problem import CAProblem
from ..core.schedule import window_start
from ..core.tailscale import applies  # noqa: F401 - the drive's dispatch
from ..core.tailscale import (
    cert_domain,
    name_problem,
    socket_path,
)
from ..store import credentials
from ..store.fs import DOMAINS, STAGING, Store
from .http import retry_after_seconds

HOST = "local-tailscaled.sock"  # tailscale's apitype.LocalAPIHost
PATH = "/localapi/v0/cert/"
CONNECT_TIMEOUT = 10.0
# A renewal the daemon does while we wait is a whole ACME order with dns-01 through
# the control plane; tailscale's own GetCertificate allows a minute.
TIMEOUT = 120.0
TICK = 0.5  # how often a waiting request looks at the stop flag
# A cached certificate the daemon hands back stays outside the renew window for at
# least this long, instead of coming due again at the next check.
MARGIN = timedelta(days=1)
ASSUMED_LIFETIME = timedelta(days=90)  # Let's Encrypt's: a percent window before any cert
NOT_RENEWED_RETRY = 86400.0  # mod_md looks again daily when the daemon has nothing new


def min_validity(md: ManagedDomain, active: crypto.CertInfo | None,
                 now: datetime) -> timedelta:
    """How long the certificate must live: longer than the renew window, and than the live one.

    Outlasting the renew window keeps the MD out of it; outlasting the live
    certificate means a renewal that is due (or forced, or replacing another
    CA's certificate) never gets the same certificate back.
    """
    if active is not None:
        window = active.not_after - window_start(md, active)
        left = max(active.not_after - now, timedelta(0))
    else:
        window = md.renew_window.length(now, now + ASSUMED_LIFETIME)
        left = timedelta(0)
    return max(window, left) + MARGIN


def go_duration(d: timedelta) -> str:
    """A duration as Go's time.ParseDuration reads it (whole seconds)."""
    return f"{max(0, int(d.total_seconds()))}s"


def split_pair(body: bytes) -> tuple[bytes, bytes]:
    """(key PEM, chain PEM) of a `type=pair` answer, split as tailscale's client does."""
    i = body.find(b"--\n--")
    if i < 0:
        raise CAProblem(20014, "Bad response", None,
                        "unexpected answer from tailscaled: no key and certificate PEM")
    i += len(b"--\n")
    key, chain = body[:i], body[i:]
    if b" PRIVATE KEY-----" in chain:
        raise CAProblem(20014, "Bad response", None,
                        "unexpected answer from tailscaled: a key among the certificates")
    return key, chain


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def problem_from_status(status: int, reason: str, body: bytes, domain: str,
                        retry_after: float | None = None) -> CAProblem:
    """A non-200 answer as a CAProblem whose detail says what to do about it."""
    msg = body.decode("utf-8", "replace").strip() or reason  # Go's http.Error: text and "\n"
    if status == 403 and msg == "cert access denied":
        user = _user()
        return CAProblem(13, "Permission denied", None,
                         f"tailscaled does not give certificates to user {user} (uid "
                         f"{os.geteuid()}): {msg}. Allow it in tailscaled's environment with "
                         f"TS_PERMIT_CERT_UID={user} (e.g. in /etc/default/tailscaled) and "
                         "restart tailscaled")
    if status in (401, 403):
        return CAProblem(13, "Permission denied", None, f"tailscaled refused the request: {msg}")
    if status == 404:
        return CAProblem(2, "No such file or directory", None,
                         f"tailscaled has no certificate service ({status} {msg}): it is "
                         "too old, or built without certificate support")
    if status == 400:
        return CAProblem(22, "Invalid argument", None,
                         f"tailscaled rejected the request for {domain}: {msg}")
    if status == 429:
        return CAProblem(20014, "Too many requests", None,
                         f"tailscaled cannot get the certificate of {domain} now, the CA "
                         f"rate-limits it: {msg}", retry_after=retry_after)
    hint = ""
    if "does not support getting TLS certs" in msg:
        hint = (" (enable MagicDNS and HTTPS Certificates on the DNS page of the tailnet's "
                "admin console)")
    elif msg.startswith("invalid domain"):
        hint = " (the MD's name must be this node's name in the tailnet)"
    elif "no netmap" in msg or status == 503:
        hint = " (is this node logged in and connected? see `tailscale status`)"
    return CAProblem(20014, "tailscale error", None,
                     f"tailscaled could not give the certificate of {domain} ({status}): "
                     f"{msg}{hint}")


class _Reader(io.RawIOBase):
    """The socket for http.client, read in short waits so a shutdown need not wait for it."""

    def __init__(self, sock: socket.socket, stop: threading.Event, deadline: float):
        self.sock, self.stop, self.deadline = sock, stop, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while True:
            if self.stop.is_set():
                raise CAProblem(20014, "Stopped", None, "apache-md is shutting down")
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            if select.select([self.sock], [], [], min(TICK, left))[0]:
                return self.sock.recv_into(b)

    def makefile(self, mode: str = "rb"):
        return io.BufferedReader(self)


class LocalAPI:
    """tailscaled's LocalAPI on a unix socket; every failure is a CAProblem naming the socket."""

    def __init__(self, path: str, url: str | None = None, stop: threading.Event | None = None,
                 timeout: float = TIMEOUT):
        self.path = path
        self.url = url or f"file://localhost{path}"  # ca_url of the problems (per-CA metrics)
        self.stop = stop or threading.Event()
        self.timeout = timeout

    def cert_pair(self, domain: str, validity: timedelta) -> tuple[bytes, bytes]:
        """(key PEM, chain PEM) for `domain`, living at least `validity` if the CA allows."""
        target = f"{PATH}{domain}?type=pair&min_validity={go_duration(validity)}"
        status, reason, resp, body = self.get(target)
        if status != 200:
            p = problem_from_status(status, reason, body, domain, retry_after_seconds(resp))
            p.ca_url = self.url
            raise p
        return split_pair(body)

    def get(self, target: str):
        """(status, reason, response, body) of one GET."""
        try:
            sock = self._connect()
        except CAProblem as p:
            p.ca_url = self.url
            raise
        try:
            sock.sendall((f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\n"
                          f"User-Agent: apache-md/{__version__}\r\nAccept: */*\r\n"
                          "Connection: close\r\n\r\n").encode())
            resp = http.client.HTTPResponse(_Reader(sock, self.stop,
                                                    time.monotonic() + self.timeout))
            resp.begin()
            return resp.status, resp.reason, resp, resp.read()
        except socket.timeout:
            raise CAProblem(70007, "Timeout", None,
                            f"tailscaled at {self.path} did not answer within "
                            f"{self.timeout:.0f}s", ca_url=self.url) from None
        except (http.client.HTTPException, OSError) as e:
            raise CAProblem(20014, "Bad response", None,
                            f"talking to tailscaled at {self.path} failed: {e!r}",
                            ca_url=self.url) from None
        finally:
            sock.close()

    def _connect(self) -> socket.socket:
        path = self.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise CAProblem(2, "No such file or directory", None,
                            f"tailscale socket not available, may not be up: {path}") from None
        except OSError as e:
            raise CAProblem(e.errno or 20014, e.strerror or "Error", None,
                            f"tailscale socket {path}: {e.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise CAProblem(88, "Socket operation on non-socket", None,
                            f"{path} is not a socket: not tailscaled's LocalAPI socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except ConnectionRefusedError:
            sock.close()
            raise CAProblem(111, "Connection refused", None,
                            f"tailscaled does not answer on {path} (connection refused): "
                            "is it running?") from None
        except PermissionError:
            sock.close()
            raise CAProblem(13, "Permission denied", None,
                            f"user {_user()} may not connect to {path}") from None
        except OSError as e:
            sock.close()
            raise CAProblem(70007 if isinstance(e, socket.timeout) else e.errno or 20014,
                            e.strerror or "Timeout", None,
                            f"cannot connect to tailscaled at {path}: {e.strerror or e}") from None
        sock.setblocking(True)
        return sock


def obtain(store: Store, md: ManagedDomain, url: str,
           progress: Callable[[str | None, str], None],
           stop: threading.Event | None = None) -> None:
    """Ask tailscaled for the MD's certificate and stage it in staging/<md>/ as a
    renewal by ACME would (the key encrypted with the store key). Raises CAProblem."""
    try:
        path = socket_path(url)
    except ValueError as e:
        raise CAProblem(22, "Invalid argument", None, str(e)) from None
    problem = name_problem(md)
    if problem:
        raise CAProblem(22, "Invalid argument", None, problem)
    domain = cert_domain(md)
    spec = md.keyspecs[0]  # one: the daemon chooses the key (directives drop MDPrivateKeys)
    live = credentials.chain(store, DOMAINS, md.name, spec)
    now = now_utc()
    want = min_validity(md, crypto.cert_info(live[0]) if live else None, now)
    progress("Requesting", f"Asking tailscaled at {path} for the certificate of {domain}, "
                           f"valid for at least {format_duration(want.total_seconds())}")
    key_pem, chain_pem = LocalAPI(path, url, stop).cert_pair(domain, want)
    try:
        key = crypto.key_from_pem(key_pem)
        chain = crypto.load_chain(chain_pem)
    except (ValueError, TypeError, crypto.CryptoError) as e:
        raise CAProblem(20014, "Bad response", None,
                        f"unexpected answer from tailscaled: {e}") from None
    if not chain or not crypto.key_signs_for(key, chain[0]):
        raise CAProblem(20014, "Bad certificate", None,
                        "tailscaled returned a certificate that does not match its key")
    info = crypto.cert_info(chain[0])
    if live and chain[0] == live[0]:
        raise CAProblem(20014, "Not renewed", None,
                        f"tailscale has not renewed the certificate yet (tailscaled handed out "
                        f"the live one again, valid until {info.not_after:%Y-%m-%d %H:%M} UTC; "
                        "tailscaled before 1.72 ignores the minimum validity asked for)",
                        retry_after=NOT_RENEWED_RETRY)
    missing = [d for d in md.domains if not crypto.covers(list(info.names), d)]
    if missing:
        raise CAProblem(20014, "Bad certificate", None,
                        f"tailscaled's certificate for {domain} does not cover "
                        f"{', '.join(missing)}")
    if window_start(md, info) <= now:
        progress(None, f"The certificate from tailscaled (valid until {info.not_after:%Y-%m-%d} "
                       f"UTC) is already inside MDRenewWindow {md.renew_window}: the daemon "
                       "could not renew it for longer")
    store.write_bytes(STAGING, md.name, spec.file_name("privkey"),
                      crypto.key_to_pem(key, store.key), mode=0o600)
    store.write_bytes(STAGING, md.name, spec.file_name("pubcert"), crypto.chain_to_pem(chain))
