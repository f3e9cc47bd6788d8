"""Fetch our own http-01 answer once before the CA is asked to.

A CA that cannot fetch the answer says little more than "unauthorized" and
counts a failed validation against its rate limits (Let's Encrypt: 5 per
account, hostname and hour). Asking our own Apache first, at the local port
that public port 80 is mapped to (MDPortMap), on the address Apache listens
there (127.0.0.1 for a wildcard Listen), turns the usual mistakes into
precise messages: Apache does not answer at all, the handler snippet is not
included, a vhost proxies or rewrites /.well-known/, access is denied, a
redirect leads nowhere. Each of these fails the renewal before the CA is
asked to validate.

Only when the check cannot be made (a redirect to another host, a port not
mapped, a TLS handshake that fails) it notes why and lets the CA decide, as
without the check.
"""
from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from ..core.model import listen_host
from .challenges import is_ip

CHALLENGE_PATH = "/.well-known/acme-challenge/"
LOCAL_ADDRESS = "127.0.0.1"
TIMEOUT = 5.0
MAX_REDIRECTS = 10  # as Let's Encrypt
MARK_HEADER = "X-Apache-MD"  # set by the WSGI handler on challenge answers


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Result:
    ok: bool | None  # True: verified; False: Apache answers wrongly; None: could not check
    detail: str
    unanswered: bool = False  # ok is False because Apache did not answer at all


# No connection, or one closed without an answer: our own server does not answer.
UNANSWERED = (ConnectionError, TimeoutError, socket.timeout, http.client.RemoteDisconnected)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def fetch(scheme: str, port: int, host: str, path: str,
          address: str = LOCAL_ADDRESS) -> Response:
    """GET `path` from the local Apache at `address` as a client asking for `host`
    would (Host, SNI)."""
    sock = socket.create_connection((address.strip("[]"), port), timeout=TIMEOUT)
    try:
        if scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the CA does not check it on a redirect either
            sock = ctx.wrap_socket(sock, server_hostname=None if is_ip(host) else host)
        conn = http.client.HTTPConnection(address, port, timeout=TIMEOUT)
        conn.sock = sock
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", _url_host(host))
        conn.putheader("User-Agent", "apache-md preflight")
        conn.putheader("Accept", "*/*")
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read(16384)
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        sock.close()


def check_http01(domain: str, token: str, key_authz: str, port_map: dict[int, int | None],
                 listens: list[str] | None = None, get=fetch) -> Result:
    """Ask the local Apache for http://<domain>/.well-known/acme-challenge/<token>;
    `listens`: Apache's Listen arguments (where to reach a local port)."""
    url = f"http://{_url_host(domain)}{CHALLENGE_PATH}{token}"
    hops: list[str] = []
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        scheme, host = parts.scheme, (parts.hostname or "")
        public = parts.port or (443 if scheme == "https" else 80)
        local = port_map.get(public) if public in (80, 443) else None
        via = f"{url} (local port {local})" if local else url
        if hops and public not in (80, 443):
            return Result(False, _chain(hops + [url]) + f": the redirect goes to port {public}; "
                          "CAs follow redirects only to ports 80 and 443")
        if hops and host != domain:
            return Result(None, _chain(hops + [url]) + ": redirected to another host, which "
                          "cannot be checked locally; the CA will follow it")
        if local is None:
            return Result(None, _chain(hops + [url]) + f": port {public} is not mapped to a "
                          "local port (MDPortMap), cannot check locally")
        address = listen_host(listens or [], local) or LOCAL_ADDRESS
        try:
            r = get(scheme, local, host, parts.path + (f"?{parts.query}" if parts.query else ""),
                    address)
        except UNANSWERED as e:
            return Result(False, f"Apache is not answering on port {public} for {domain} "
                          f"(local port {local} at {address}: {_why(e)}); the CA was not asked "
                          "to validate, as each failed validation counts against its limits",
                          unanswered=True)
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            return Result(None, f"cannot fetch {via} from {address} ({e}); "
                          "letting the CA try")
        hops.append(via)
        if r.status in (301, 302, 303, 307, 308) and r.headers.get("location"):
            url = urljoin(url, r.headers["location"])
            continue
        return _judge(r, hops, key_authz, domain)
    return Result(False, _chain(hops) + f": more than {MAX_REDIRECTS} redirects")


def check_configured(settings, domain: str, token: str, key_authz: str) -> Result:
    """check_http01 with the configuration's MDPortMap and Listen directives."""
    return check_http01(domain, token, key_authz, settings.port_map, settings.listens)


def _why(e: BaseException) -> str:
    if isinstance(e, (TimeoutError, socket.timeout)):
        return f"no answer within {TIMEOUT:.0f} s"
    if isinstance(e, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _chain(hops: list[str]) -> str:
    return " -> ".join(hops)


def _judge(r: Response, hops: list[str], key_authz: str, domain: str) -> Result:
    where = _chain(hops)
    ours = MARK_HEADER.lower() in r.headers
    proxied = f" (through a proxy: Via {r.headers['via']})" if "via" in r.headers else ""
    if r.status == 200 and r.body.rstrip() == key_authz.encode():
        return Result(True, f"{where} answers the challenge")
    if r.status == 200:
        if ours:
            return Result(False, f"{where}: apache-md's handler answered with another "
                          "challenge; is a second apache-md driving this domain?")
        return Result(False, f"{where} is not answered by apache-md{proxied}: something in "
                      f"the VirtualHost for {domain} (ProxyPass, RewriteRule, another "
                      "handler or a file) serves /.well-known/acme-challenge/ instead")
    if r.status == 404 and ours:
        return Result(False, f"{where}: apache-md's handler does not know the challenge; "
                      "does the handler snippet's store (APACHE_MD_STORE, see `apache-md "
                      "apache-conf`) differ from the worker's MDStoreDir?")
    if r.status in (401, 403):
        return Result(False, f"{where}: access denied ({r.status}){proxied}; an "
                      "authentication or Require directive in the VirtualHost for "
                      f"{domain} covers /.well-known/acme-challenge/ (the CA must reach it)")
    if r.status == 404:
        return Result(False, f"{where}: not found (404){proxied}; apache-md's handler is not "
                      f"reached: is the snippet from `apache-md apache-conf` included, and "
                      f"does the VirtualHost for {domain} leave /.well-known/acme-challenge/ "
                      "to it (no Alias, ProxyPass or RewriteRule for it)?")
    return Result(False, f"{where}: answered {r.status}{proxied} instead of the challenge")
