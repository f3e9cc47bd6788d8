"""Clients that are real tools: `openssl s_client`, `openssl verify`, `curl`.

Everything connects to 127.0.0.1 and picks the virtual host by SNI / Host,
so no DNS or /etc/hosts entries are needed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)

# Signature algorithms that make a server with RSA+ECDSA certificates pick one.
SIGALGS = {
    "ec": "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512",
    "rsa": "RSA-PSS+SHA256:RSA-PSS+SHA384:RSA+SHA256:RSA+SHA384:RSA+SHA512",
}


def parse_pem_chain(data: bytes | str) -> list[x509.Certificate]:
    if isinstance(data, str):
        data = data.encode()
    return [x509.load_pem_x509_certificate(m) for m in _PEM_RE.findall(data)]


def to_pem(certs) -> str:
    if isinstance(certs, x509.Certificate):
        certs = [certs]
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


@dataclass
class SClientResult:
    chain: list  # list[x509.Certificate], leaf first
    output: str  # stdout+stderr of s_client
    returncode: int

    @property
    def ocsp_stapled(self) -> bool:
        return "OCSP Response Status: successful" in self.output

    @property
    def ocsp_cert_status(self) -> str | None:
        """'good' / 'revoked' / 'unknown' from a stapled response (-status)."""
        m = re.search(r"Cert Status: (\w+)", self.output)
        return m.group(1) if m else None


def s_client(host: str = "127.0.0.1", port: int = 5001, servername: str | None = None, *,
             sigalgs: str | None = None, cipher: str | None = None,
             tls1_2: bool = False, status: bool = False, alpn: str | None = None,
             extra=(), timeout: float = 20) -> SClientResult:
    """Run `openssl s_client -showcerts`. sigalgs may be 'ec'/'rsa' (see SIGALGS)
    or an openssl list; cipher applies to TLS<=1.2 (use tls1_2=True with it)."""
    argv = ["openssl", "s_client", "-connect", f"{host}:{port}", "-showcerts"]
    if servername:
        argv += ["-servername", servername]
    if sigalgs:
        argv += ["-sigalgs", SIGALGS.get(sigalgs, sigalgs)]
    if cipher:
        argv += ["-cipher", cipher]
    if tls1_2:
        argv += ["-tls1_2"]
    if status:
        argv += ["-status"]
    if alpn:
        argv += ["-alpn", alpn]
    argv += list(extra)
    # Empty stdin makes s_client close right after the handshake.
    p = subprocess.run(argv, input=b"", capture_output=True, timeout=timeout)
    out = p.stdout + p.stderr
    return SClientResult(parse_pem_chain(p.stdout), out.decode(errors="replace"), p.returncode)


def s_client_cert(host: str = "127.0.0.1", port: int = 5001, servername: str | None = None,
                  sigalgs: str | None = None, **kw) -> list[x509.Certificate]:
    """The certificate chain the server sends (leaf first); [] if the handshake
    failed."""
    return s_client(host, port, servername, sigalgs=sigalgs, **kw).chain


def key_type(cert: x509.Certificate) -> str:
    """'rsa2048', 'secp256r1', ... for assertions on which key was served."""
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        return f"rsa{pub.key_size}"
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return pub.curve.name
    return type(pub).__name__


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


@dataclass
class Verified:
    ok: bool
    output: str

    def __bool__(self) -> bool:
        return self.ok


def _pem_file(tmpdir: str, name: str, data) -> str:
    """A path for `data`: a path as is, PEM text or certificates written out."""
    if isinstance(data, os.PathLike):
        return os.fspath(data)
    if isinstance(data, bytes):
        data = data.decode()
    if isinstance(data, str):
        if "-----BEGIN" not in data:
            return data
        text = data
    else:
        text = to_pem(data)
    path = os.path.join(tmpdir, name)
    Path(path).write_text(text)
    return path


def verify_chain(chain, root_pem, hostname: str | None = None,
                 purpose: str = "sslserver") -> Verified:
    """`openssl verify` the leaf against root_pem (PEM text or a path) using the
    rest of `chain` (x509 list, leaf first, or PEM text) as intermediates."""
    certs = parse_pem_chain(chain) if isinstance(chain, (str, bytes)) else list(chain)
    if not certs:
        return Verified(False, "empty chain")
    with tempfile.TemporaryDirectory() as tmp:
        root = _pem_file(tmp, "root.pem", root_pem)
        leaf = _pem_file(tmp, "leaf.pem", [certs[0]])
        argv = ["openssl", "verify", "-CAfile", root, "-purpose", purpose]
        if len(certs) > 1:
            argv += ["-untrusted", _pem_file(tmp, "untrusted.pem", certs[1:])]
        if hostname:
            argv += ["-verify_hostname", hostname]
        p = subprocess.run(argv + [leaf], capture_output=True, text=True, timeout=30)
        return Verified(p.returncode == 0, p.stdout + p.stderr)


class CurlResult(NamedTuple):
    status: int
    headers: dict  # lower-case name -> value (repeated headers joined by ", ")
    body: str

    def json(self):
        return json.loads(self.body)


def _parse_headers(raw: str) -> dict:
    # With redirects followed, curl dumps every response; keep the last one.
    blocks = [b for b in re.split(r"\r?\n\r?\n", raw.strip()) if b.strip()]
    headers: dict = {}
    if not blocks:
        return headers
    for line in blocks[-1].splitlines()[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def curl(url: str, resolve_host: str | None = None, port: int | None = None,
         cacert: str | os.PathLike | None = None, *, method: str | None = None,
         data: str | bytes | None = None, headers: dict | None = None,
         insecure: bool = False, follow: bool = False, timeout: float = 20,
         extra=()) -> CurlResult:
    """curl with `--resolve host:port:127.0.0.1`; host and port default to the
    URL's. Returns (status, headers, body); raises CurlError when there is
    no HTTP response at all (connection refused, TLS verification failed)."""
    parts = urlsplit(url)
    resolve_host = resolve_host or parts.hostname
    port = port or parts.port or (443 if parts.scheme == "https" else 80)
    with tempfile.TemporaryDirectory() as tmp:
        hfile, bfile = os.path.join(tmp, "h"), os.path.join(tmp, "b")
        argv = ["curl", "-sS", "--max-time", str(timeout),
                "--resolve", f"{resolve_host}:{port}:127.0.0.1",
                "-D", hfile, "-o", bfile, "-w", "%{http_code}"]
        if cacert:
            argv += ["--cacert", os.fspath(cacert)]
        if insecure:
            argv += ["-k"]
        if follow:
            argv += ["-L"]
        if method:
            argv += ["-X", method]
        if data is not None:
            argv += ["--data-binary", "@-"]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv += list(extra) + [url]
        p = subprocess.run(argv, input=data.encode() if isinstance(data, str) else data,
                           capture_output=True, timeout=timeout + 10)
        code = p.stdout.decode().strip()[-3:]
        status = int(code) if code.isdigit() else 0
        if status == 0:
            raise CurlError(f"curl {url} (resolve {resolve_host}:{port}) failed, "
                            f"rc={p.returncode}: {p.stderr.decode(errors='replace').strip()}",
                            p.returncode)
        raw_headers = Path(hfile).read_text(errors="replace") if os.path.exists(hfile) else ""
        body = Path(bfile).read_bytes().decode(errors="replace") if os.path.exists(bfile) else ""
        return CurlResult(status, _parse_headers(raw_headers), body)


def raw_http(port: int, request: bytes, host: str = "127.0.0.1", timeout: float = 10,
             body_sent: bool = True) -> CurlResult | None:
    """Send `request` exactly as given (any method, path bytes as they are: curl would
    normalise them) and read the answer until the server closes. With `body_sent=False`
    the client hangs up right after sending, as one that sent less than it announced;
    then there is no answer (None)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        if not body_sent:
            return None
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if len(lines[0].split()) > 1 else 0
    return CurlResult(status, _parse_headers(head.decode("latin-1")),
                      body.decode(errors="replace"))


class CurlError(RuntimeError):
    def __init__(self, message: str, returncode: int):
        super().__init__(message)
        self.returncode = returncode
