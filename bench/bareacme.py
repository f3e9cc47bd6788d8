#!/usr/bin/env python3
"""A bare parallel ACME client: the reference a "perfect" client could reach on a CA.

Issue 15's aim for issuance is "at the speed of a bare parallel client on the same
CA": this is that client, for bench/issuance.py (not part of apache-md). It makes
one account and issues a certificate for each name at once, one thread per name:
RSA 2048 keys (mod_md's default), made ahead from the start by as many threads as
CPUs; http-01 answered by its own tiny HTTP server on the port the CA validates
on; authorizations and orders polled after POLL_FIRST seconds, then doubling up to
POLL_MAX (or the CA's Retry-After); a badNonce retried at once with the nonce the
answer brought. No store, no Apache, nothing written: the chains stay in memory.

The account key is RSA 3072 as apache-md's and mod_md's (`--account-key ec256` for
a P-256 one: the cheapest signatures there are).

    python bench/bareacme.py --directory URL --ca-bundle PEM --http-port P NAME...

prints one JSON line: the times (seconds from the process's start, its imports
included), the requests sent, the badNonces, the polls, the CPU.
"""
from __future__ import annotations

import time

T0 = time.monotonic()  # before the imports: they are part of a client's time

import argparse  # noqa: E402
import base64
import http.client
import json
import os
import resource
import ssl
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

POLL_FIRST, POLL_MAX = 0.02, 0.5
NONCE_RETRIES = 10


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Key:
    """An account key and its JWS: RS256 for RSA, ES256 for P-256."""

    def __init__(self, kind: str):
        if kind == "ec256":
            self.key = ec.generate_private_key(ec.SECP256R1())
            pub = self.key.public_key().public_numbers()
            self.jwk = {"crv": "P-256", "kty": "EC", "x": b64(pub.x.to_bytes(32, "big")),
                        "y": b64(pub.y.to_bytes(32, "big"))}
            self.alg = "ES256"
        else:
            self.key = rsa.generate_private_key(65537, 3072)
            pub = self.key.public_key().public_numbers()
            self.jwk = {"e": _int(pub.e), "kty": "RSA", "n": _int(pub.n)}
            self.alg = "RS256"
        canon = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()
        digest = hashes.Hash(hashes.SHA256())
        digest.update(canon)
        self.thumbprint = b64(digest.finalize())

    def sign(self, data: bytes) -> bytes:
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


class ACME:
    """One CA: the directory, a nonce pool shared by the threads, one kept-alive
    connection per thread."""

    def __init__(self, directory: str, ca_bundle: str | None):
        self.ctx = ssl.create_default_context(cafile=ca_bundle)
        u = urlsplit(directory)
        self.host, self.port = u.hostname, u.port or 443
        self.local = threading.local()
        self.nonces: list[str] = []
        self.lock = threading.Lock()
        self.requests = self.bad_nonces = self.polls = 0
        self.key: Key | None = None
        self.kid: str | None = None
        self.poll_first = POLL_FIRST
        self.dir = json.loads(self._send("GET", u.path or "/")[2])

    def _conn(self) -> http.client.HTTPSConnection:
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = http.client.HTTPSConnection(self.host, self.port,
                                                              context=self.ctx, timeout=30)
        return c

    def _send(self, method: str, url: str, body: bytes | None = None):
        path = urlsplit(url).path if url.startswith("http") else url
        headers = {"Content-Type": "application/jose+json"} if body is not None else {}
        for attempt in (1, 2):
            c = self._conn()
            try:
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        with self.lock:
            self.requests += 1
            nonce = r.getheader("Replay-Nonce")
            if nonce:
                self.nonces.append(nonce)
        return r.status, r, data

    def _nonce(self) -> str:
        with self.lock:
            if self.nonces:
                return self.nonces.pop()
        self._send("HEAD", self.dir["newNonce"])
        with self.lock:
            return self.nonces.pop()

    def post(self, url: str, payload: dict | None, jwk: bool = False):
        """A signed POST (payload None: POST-as-GET); badNonce retried at once."""
        body_b64 = "" if payload is None else b64(json.dumps(payload).encode())
        for _ in range(NONCE_RETRIES):
            protected = {"alg": self.key.alg, "nonce": self._nonce(), "url": url}
            if jwk:
                protected["jwk"] = self.key.jwk
            else:
                protected["kid"] = self.kid
            p64 = b64(json.dumps(protected).encode())
            sig = self.key.sign(f"{p64}.{body_b64}".encode())
            jws = json.dumps({"protected": p64, "payload": body_b64, "signature": b64(sig)})
            status, r, data = self._send("POST", url, jws.encode())
            if status == 400 and b"badNonce" in data:
                with self.lock:
                    self.bad_nonces += 1
                continue
            if status >= 400:
                raise RuntimeError(f"{url}: {status} {data[:300]!r}")
            return r, data
        raise RuntimeError(f"{url}: badNonce {NONCE_RETRIES} times")

    def poll(self, url: str, done) -> dict:
        delay = self.poll_first
        while True:
            r, data = self.post(url, None)
            obj = json.loads(data)
            if done(obj):
                return obj
            if obj.get("status") == "invalid":
                raise RuntimeError(f"{url}: invalid: {data[:500]!r}")
            with self.lock:
                self.polls += 1
            wait = delay
            ra = r.getheader("Retry-After")
            if ra and ra.isdigit():
                wait = min(max(int(ra), delay), 30.0)
            time.sleep(wait)
            delay = min(POLL_MAX, delay * 2)


class Answers(BaseHTTPRequestHandler):
    """http-01: every token's key authorization is the token and the account key's
    thumbprint, so the server needs the thumbprint alone (no token list)."""
    thumbprint = ""
    fetched: dict[str, float] = {}  # token: when the CA first asked for it
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        prefix = "/.well-known/acme-challenge/"
        token = self.path[len(prefix):] if self.path.startswith(prefix) else ""
        self.fetched.setdefault(token, time.monotonic() - T0)
        body = f"{token}.{self.thumbprint}".encode() if token and self.thumbprint else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # all the CA's validations may come at once: with socketserver's backlog of 5 the
    # kernel drops the connections beyond, and the CA's retry comes a second later
    request_queue_size = 256


class AnswerServer:
    """The http-01 server: in a child process forked before any thread starts (its
    own interpreter lock: the issuing threads do not slow its answers), or a thread of
    this one (`in_process`). `start(thumbprint)` once the account key is there;
    `stop()` gives back when the CA fetched each token."""

    def __init__(self, port: int, in_process: bool):
        self.server = _Server(("127.0.0.1", port), Answers)
        self.pid = 0
        if in_process:
            return
        to_child, self._to_child = os.pipe()
        self._from_child, from_child = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: serve until the parent closes its pipe
            os.close(self._to_child)
            os.close(self._from_child)
            with os.fdopen(to_child) as r:
                Answers.thumbprint = r.readline().strip()
                threading.Thread(target=self.server.serve_forever, daemon=True).start()
                r.read()
            os.write(from_child, json.dumps(Answers.fetched).encode())
            os._exit(0)
        os.close(to_child)
        os.close(from_child)
        self.server.server_close()

    def start(self, thumbprint: str) -> None:
        if self.pid:
            os.write(self._to_child, thumbprint.encode() + b"\n")
        else:
            Answers.thumbprint = thumbprint
            threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> dict[str, float]:
        if not self.pid:
            return Answers.fetched
        os.close(self._to_child)
        with os.fdopen(self._from_child, "rb") as r:
            data = r.read()
        os.waitpid(self.pid, 0)
        return json.loads(data or b"{}")


def csr_for(key, name: str) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


STEPS = ("ordered", "answered", "fetched", "validated", "key", "finalized", "issued", "downloaded")


def issue(acme: ACME, name: str, key_future, times: dict) -> int:
    """One name from new-order to its chain; `times[name]` the moment of each of STEPS
    (seconds from the start)."""
    mark = times.setdefault(name, {})

    def at(step):
        mark[step] = time.monotonic() - T0

    r, data = acme.post(acme.dir["newOrder"],
                        {"identifiers": [{"type": "dns", "value": name}]})
    order_url = r.getheader("Location")
    order = json.loads(data)
    at("ordered")
    for authz_url in order["authorizations"]:
        _, data = acme.post(authz_url, None)
        authz = json.loads(data)
        if authz["status"] == "valid":  # reused
            continue
        ch = next(c for c in authz["challenges"] if c["type"] == "http-01")
        at("answered")  # as it goes: the CA may fetch before its answer is back
        acme.post(ch["url"], {})
        acme.poll(authz_url, lambda a: a["status"] == "valid")
        mark["token"] = ch["token"]
    at("validated")
    key = key_future.result()
    at("key")
    _, data = acme.post(order["finalize"], {"csr": b64(csr_for(key, name))})
    order = json.loads(data)
    at("finalized")
    if order["status"] != "valid":
        order = acme.poll(order_url, lambda o: o["status"] == "valid")
    at("issued")
    _, chain = acme.post(order["certificate"], None)
    if not chain.startswith(b"-----BEGIN CERTIFICATE-----"):
        raise RuntimeError(f"{name}: no certificate: {chain[:200]!r}")
    at("downloaded")
    return len(chain)


def spans(times: dict) -> dict:
    """Per step, the seconds from the step before summed over the names."""
    out = dict.fromkeys(STEPS, 0.0)
    for mark in times.values():
        prev = None
        for step in STEPS:
            if step in mark:
                if prev is not None:
                    out[step] += mark[step] - prev
                prev = mark[step]
    return {k: round(v, 2) for k, v in out.items() if k != "ordered"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--directory", required=True)
    ap.add_argument("--ca-bundle")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--account-key", choices=("rsa3072", "ec256"), default="rsa3072")
    ap.add_argument("--key-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=0,
                    help="names under way at once (default: all)")
    ap.add_argument("--poll-first", type=float, default=POLL_FIRST,
                    help=f"seconds before the first poll, doubling up to {POLL_MAX}")
    ap.add_argument("--answer-in", choices=("process", "thread"), default="process",
                    help="http-01 answered by a child process (default) or a thread")
    ap.add_argument("names", nargs="+")
    args = ap.parse_args()
    t_imported = time.monotonic() - T0

    answers = AnswerServer(args.http_port, args.answer_in == "thread")

    # The account key first, then every certificate key, as fast as the CPUs go.
    keys = ThreadPoolExecutor(max_workers=max(1, args.key_threads))
    account_key = keys.submit(Key, args.account_key)
    key_futures = [keys.submit(rsa.generate_private_key, 65537, 2048) for _ in args.names]
    acme = ACME(args.directory, args.ca_bundle)  # the directory meanwhile
    acme.poll_first = args.poll_first
    acme.key = account_key.result()
    answers.start(acme.key.thumbprint)
    t_key = time.monotonic() - T0
    r, _ = acme.post(acme.dir["newAccount"], {"termsOfServiceAgreed": True,
                                              "contact": ["mailto:admin@example.test"]},
                     jwk=True)
    acme.kid = r.getheader("Location")
    t_account = time.monotonic() - T0

    times: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=args.threads or len(args.names)) as pool:
        sizes = list(pool.map(lambda nk: issue(acme, nk[0], nk[1], times),
                              zip(args.names, key_futures)))
    t_done = time.monotonic() - T0
    keys.shutdown()
    fetched = answers.stop()
    for mark in times.values():
        if mark.get("token") in fetched:
            mark["fetched"] = fetched[mark["token"]]
    ru, rc = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "imported": round(t_imported, 3), "account_key": round(t_key, 3),
        "account": round(t_account, 3), "done": round(t_done, 3),
        "first": round(min(m["downloaded"] for m in times.values()), 3),
        "last_ordered": round(max(m["ordered"] for m in times.values()), 3),
        "certificates": len(sizes), "step_sums": spans(times),
        "requests": acme.requests, "bad_nonces": acme.bad_nonces, "polls": acme.polls,
        "cpu": round(ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
