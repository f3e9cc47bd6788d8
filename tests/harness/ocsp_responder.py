"""A real OCSP responder (RFC 6960, HTTP POST and GET) for tests.

It signs with the issuer's own key: Pebble hands out its intermediate key on
the management API (`Pebble.intermediate_key_pem`), and `pki.make_ca` gives
one for other certificates. Clients therefore check real signatures. What it
answers is set per test:

    r = OCSPResponder().start()
    r.add_issuer(pebble.intermediate_pem, pebble.intermediate_key_pem)
    r.mode = "revoked"            # good | revoked | unknown | bad-signature |
                                  # try-later | http-500 | garbage
    r.status_by_serial[serial] = "revoked"   # one certificate only
    r.validity = timedelta(seconds=6)        # nextUpdate - thisUpdate (None: no nextUpdate)
    r.stop(); r.start()           # "responder down", then back on the same port

`requests` records what was asked (serials, whether it came through a proxy).
"""

from __future__ import annotations

import base64
import datetime as _dt
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509 import ocsp

MODES = ("good", "revoked", "unknown", "bad-signature", "try-later", "http-500", "garbage")
_STATUS = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
           "unknown": ocsp.OCSPCertStatus.UNKNOWN}


@dataclass
class Asked:
    path: str  # request target as received (absolute URL when sent through a proxy)
    method: str
    serials: list  # serial numbers asked about
    via_proxy: bool


def _load_cert(c) -> x509.Certificate:
    if isinstance(c, x509.Certificate):
        return c
    return x509.load_pem_x509_certificate(c.encode() if isinstance(c, str) else c)


def _load_key(k):
    if isinstance(k, (str, bytes)):
        return serialization.load_pem_private_key(k.encode() if isinstance(k, str) else k, None)
    return k


def _hash_alg(key):
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) \
        else hashes.SHA256()


_STAND_IN_KEY = None


def _stand_in(serial: int, issuer: x509.Certificate) -> x509.Certificate:
    """A throw-away certificate with `serial` from `issuer` (for cryptography < 43)."""
    global _STAND_IN_KEY
    if _STAND_IN_KEY is None:
        _STAND_IN_KEY = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(issuer.subject).issuer_name(issuer.subject)
            .public_key(_STAND_IN_KEY.public_key()).serial_number(serial)
            .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
            .sign(_STAND_IN_KEY, hashes.SHA256()))


def corrupt_signature(der: bytes) -> bytes:
    """The same response with one bit of its signature flipped: well-formed, but forged."""
    sig = ocsp.load_der_ocsp_response(der).signature
    at = der.rfind(sig) + len(sig) // 2
    return der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1:]


class OCSPResponder:
    def __init__(self, port: int = 0, host: str = "127.0.0.1",
                 validity: _dt.timedelta | None = _dt.timedelta(hours=1)):
        self.host = host
        self.port = port  # 0: pick a free port at the first start, keep it afterwards
        self.validity = validity
        self.mode = "good"
        self.status_by_serial: dict[int, str] = {}
        self.issuers: list[tuple[x509.Certificate, object]] = []
        self.requests: list[Asked] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- configuration ---------------------------------------------------

    def add_issuer(self, cert, key) -> None:
        """Answer for certificates issued by `cert` (PEM or object), signing with `key`."""
        with self._lock:
            self.issuers.append((_load_cert(cert), _load_key(key)))

    def set_issuers(self, pairs) -> None:
        with self._lock:
            self.issuers = [(_load_cert(c), _load_key(k)) for c, k in pairs]

    def revoke(self, serial: int) -> None:
        self.status_by_serial[serial] = "revoked"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._server is not None

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> "OCSPResponder":
        if self._server:
            return self
        responder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                responder._answer(self, self.rfile.read(n))

            def do_GET(self):
                last = urllib.parse.unquote(self.path.rstrip("/").rsplit("/", 1)[-1])
                try:
                    der = base64.b64decode(last + "=" * (-len(last) % 4))
                except ValueError:
                    der = b""
                responder._answer(self, der)

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True,
                                        name=f"ocsp-responder-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- answering ---------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler, der: bytes) -> None:
        try:
            req = ocsp.load_der_ocsp_request(der)
            serials = [req.serial_number]
        except ValueError:
            req, serials = None, []
        self.requests.append(Asked(handler.path, handler.command, serials,
                                   handler.path.startswith("http://")))
        mode = self.status_by_serial.get(req.serial_number, self.mode) if req else self.mode
        if mode == "http-500":
            return self._send(handler, 500, b"responder broken\n", "text/plain")
        if mode == "garbage":
            return self._send(handler, 200, b"this is not DER", "application/ocsp-response")
        if req is None:
            body = ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        elif mode == "try-later":
            body = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        else:
            body = self._sign(req, mode)
        der = body.public_bytes(serialization.Encoding.DER)
        if mode == "bad-signature" and body.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL:
            der = corrupt_signature(der)
        self._send(handler, 200, der, "application/ocsp-response")

    @staticmethod
    def _send(handler, code: int, body: bytes, ctype: str) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _issuer_for(self, req):
        with self._lock:
            issuers = list(self.issuers)
        for cert, key in issuers:
            if isinstance(req.hash_algorithm, hashes.SHA1):
                kh = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
                nh = hashes.Hash(hashes.SHA1())
                nh.update(cert.subject.public_bytes())
                if req.issuer_key_hash == kh and req.issuer_name_hash == nh.finalize():
                    return cert, key
        return None

    def _sign(self, req, mode: str):
        found = self._issuer_for(req)
        if found is None:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.UNAUTHORIZED)
        cert, key = found
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        status = _STATUS.get(mode, ocsp.OCSPCertStatus.GOOD)
        revoked = status == ocsp.OCSPCertStatus.REVOKED
        fields = dict(
            algorithm=req.hash_algorithm, cert_status=status, this_update=now,
            next_update=now + self.validity if self.validity else None,
            revocation_time=now - _dt.timedelta(minutes=1) if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None)
        builder = ocsp.OCSPResponseBuilder()
        if hasattr(builder, "add_response_by_hash"):  # cryptography >= 43
            builder = builder.add_response_by_hash(
                issuer_name_hash=req.issuer_name_hash, issuer_key_hash=req.issuer_key_hash,
                serial_number=req.serial_number, **fields)
        else:  # older: the cert id comes from a certificate, any one with that serial will do
            builder = builder.add_response(cert=_stand_in(req.serial_number, cert), issuer=cert,
                                           **fields)
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
        try:
            nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value
            builder = builder.add_extension(nonce, critical=False)
        except x509.ExtensionNotFound:
            pass
        return builder.sign(key, _hash_alg(key))
