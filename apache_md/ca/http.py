"""The one HTTP adapter for the CA and the OCSP responders: session, proxy, TLS, Retry-After.

MDHttpProxy replaces the environment's proxies (http(s)_proxy, no_proxy);
MDHttpProxyCACertificateFile is the trust for an https:// proxy only, never
for the server behind it; MDCACertificateFile (the `verify` of each request)
is the trust for the CA.
"""
from __future__ import annotations

import ssl
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import requests
from requests.adapters import HTTPAdapter

from ..core.problem import CAProblem


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


def session(proxy: str | None, proxy_ca_certs: str | None,
            pool_size: int | None = None) -> requests.Session:
    """A session that goes through `proxy` (MDHttpProxy) when one is set.
    Raises CAProblem when the proxy's trust anchors cannot be loaded."""
    s = requests.Session()
    pool = {"pool_maxsize": pool_size} if pool_size else {}
    if proxy and proxy.lower().startswith("https:"):
        adapter = ProxyTLSAdapter(proxy_context(proxy_ca_certs), **pool)
    else:
        adapter = HTTPAdapter(**pool)
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
