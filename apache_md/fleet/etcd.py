"""A thin etcd v3 client over its JSON gateway, with failover between endpoints.

etcd3gw (Debian's python3-etcd3gw) because it is pure Python over HTTP on `requests`,
which apache-md uses already: no grpc build, and TLS client certificates as requests
does them. Only its session, URLs and errors are used; the requests themselves are
written here, because the gateway's JSON (base64 keys, int64 as strings, fields left
out when zero) is the same for every version of the library while its helpers are not.

Every call tries the endpoint that answered last, then the others, and raises
Unavailable (naming each endpoint and what it said) when none answers: the caller
keeps serving what it has.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)
TIMEOUT = 3.0  # seconds per request: a member that takes longer is skipped
# gRPC codes the gateway returns from a member that cannot serve now (no leader,
# no quorum, stopping): the next endpoint may
_RETRY_CODES = {1, 4, 10, 14}  # CANCELLED, DEADLINE_EXCEEDED, ABORTED, UNAVAILABLE


class EtcdError(Exception):
    """etcd refused a request (a bug or a misconfiguration, not an outage)."""


class Unavailable(EtcdError):
    """No endpoint answered."""


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def _range_end(prefix: str) -> str:
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def _kv(d: dict) -> KV:
    return KV(_unb64(d.get("key")).decode(), _unb64(d.get("value")),
              int(d.get("mod_revision", 0)), int(d.get("create_revision", 0)),
              int(d.get("lease", 0)))


class Etcd:
    def __init__(self, endpoints: list[str], ca: str | None = None, cert: str | None = None,
                 key: str | None = None, timeout: float = TIMEOUT):
        try:
            from etcd3gw.client import Etcd3Client
        except ImportError:
            raise EtcdError("MDClusterEtcd needs the Python package etcd3gw (Debian: "
                            "python3-etcd3gw)") from None
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._clients = []
        for url in endpoints:
            u = urlsplit(url)
            self._clients.append(Etcd3Client(
                host=(u.hostname or "127.0.0.1"), port=u.port or 2379, protocol=u.scheme,
                ca_cert=ca, cert_cert=cert, cert_key=key, api_path="/v3/", timeout=timeout))
        # etcd3gw 2.0 (Debian 12) keeps the timeout only on its session, where requests
        # ignores it: then it goes with every request
        self._per_call = {} if hasattr(self._clients[0], "timeout") else {"timeout": timeout}
        self._current = 0
        self._lock = threading.Lock()

    # -- transport ---------------------------------------------------------------------
    def call(self, path: str, body: dict) -> dict:
        """POST `body` to the gateway's /v3/<path>, failing over between endpoints."""
        from etcd3gw import exceptions as gw
        with self._lock:
            start = self._current
        failures = []
        for i in range(len(self._clients)):
            n = (start + i) % len(self._clients)
            client = self._clients[n]
            try:
                answer = client.post(client.get_url(path), json=body, **self._per_call)
            except (gw.ConnectionFailedError, gw.ConnectionTimeoutError) as e:
                failures.append(f"{self.endpoints[n]}: {_short(e)}")
                continue
            except gw.Etcd3Exception as e:
                code, message = _grpc_error(e)
                if code in _RETRY_CODES or isinstance(e, gw.InternalServerError):
                    failures.append(f"{self.endpoints[n]}: {message}")
                    continue
                raise EtcdError(f"etcd {self.endpoints[n]} refused {path}: {message}") from None
            except OSError as e:  # a TLS file that cannot be read, and the like
                failures.append(f"{self.endpoints[n]}: {e}")
                continue
            if n != start:
                with self._lock:
                    self._current = n
                log.info("etcd: using %s (%s)", self.endpoints[n], "; ".join(failures))
            return answer if isinstance(answer, dict) else {}
        raise Unavailable("etcd unavailable: " + "; ".join(failures))

    # -- keys --------------------------------------------------------------------------
    def get(self, key: str) -> KV | None:
        kvs = self.call("kv/range", {"key": _b64(key)}).get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str, keys_only: bool = False) -> list[KV]:
        body = {"key": _b64(prefix), "range_end": _range_end(prefix)}
        if keys_only:
            body["keys_only"] = True
        return [_kv(d) for d in self.call("kv/range", body).get("kvs") or []]

    def revision(self, prefix: str) -> int:
        """The newest mod_revision under `prefix` (0: nothing there): one cheap look
        that says whether anything below it changed."""
        body = {"key": _b64(prefix), "range_end": _range_end(prefix), "limit": 1,
                "sort_order": "DESCEND", "sort_target": "MOD", "keys_only": True}
        kvs = self.call("kv/range", body).get("kvs") or []
        return _kv(kvs[0]).mod_revision if kvs else 0

    def put(self, key: str, value: str | bytes, lease: int = 0) -> None:
        body = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self.call("kv/put", body)

    def delete(self, key: str) -> None:
        self.call("kv/deleterange", {"key": _b64(key)})

    def delete_prefix(self, prefix: str) -> None:
        self.call("kv/deleterange", {"key": _b64(prefix), "range_end": _range_end(prefix)})

    def create(self, key: str, value: str | bytes, lease: int = 0) -> KV | None:
        """Put `key` only if it does not exist; None when it was created, else what is
        there (who holds a lock)."""
        put = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        answer = self.call("kv/txn", {
            "compare": [{"key": _b64(key), "result": "EQUAL", "target": "CREATE",
                         "create_revision": "0"}],
            "success": [{"request_put": put}],
            "failure": [{"request_range": {"key": _b64(key)}}]})
        if answer.get("succeeded"):
            return None
        kvs = ((answer.get("responses") or [{}])[0].get("response_range") or {}).get("kvs") or []
        return _kv(kvs[0]) if kvs else KV(key, b"", 0, 0, 0)

    def replace(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> bool:
        """Put `key` only if it still has `mod_revision` (0: does not exist)."""
        put = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        cmp = {"key": _b64(key), "result": "EQUAL"}
        if mod_revision:
            cmp.update(target="MOD", mod_revision=str(mod_revision))
        else:
            cmp.update(target="CREATE", create_revision="0")
        answer = self.call("kv/txn", {"compare": [cmp], "success": [{"request_put": put}]})
        return bool(answer.get("succeeded"))

    def delete_if(self, key: str, value: str | bytes) -> bool:
        """Delete `key` only while it holds `value` (a lock that is still ours)."""
        answer = self.call("kv/txn", {
            "compare": [{"key": _b64(key), "result": "EQUAL", "target": "VALUE",
                         "value": _b64(value)}],
            "success": [{"request_delete_range": {"key": _b64(key)}}]})
        return bool(answer.get("succeeded"))

    # -- leases --------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        answer = self.call("lease/grant", {"TTL": str(int(ttl)), "ID": "0"})
        if answer.get("error"):
            raise EtcdError(f"etcd refused a lease: {answer['error']}")
        return int(answer["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh the lease; its TTL, 0 when it has expired."""
        answer = self.call("lease/keepalive", {"ID": str(lease)})
        result = answer.get("result", answer)
        return int(result.get("TTL", 0) or 0)

    def revoke(self, lease: int) -> None:
        self.call("lease/revoke", {"ID": str(lease)})

    # -- the cluster ---------------------------------------------------------------------
    def members(self) -> list[dict]:
        return self.call("cluster/member/list", {}).get("members") or []

    def status(self) -> dict:
        return self.call("maintenance/status", {})


def _grpc_error(e: Exception) -> tuple[int | None, str]:
    """(gRPC code, message) from the gateway's error body in an etcd3gw exception."""
    text = e.args[0] if e.args else str(e)
    try:
        doc = json.loads(text)
        return int(doc.get("code", 0)) or None, str(doc.get("message") or doc.get("error") or text)
    except (ValueError, TypeError, AttributeError):
        return None, _short(e)


def _short(e: Exception) -> str:
    text = str(e) or str(e.__cause__ or e.__context__ or "") or type(e).__name__
    if "Connection refused" in text:
        text = "connection refused"
    return text if len(text) < 160 else text[:157] + "..."
