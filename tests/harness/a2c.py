"""acme2certifier (PyPI), a second real ACME server, with its openssl CA handler.

It runs in a venv of its own (`make a2c-venv`: its pinned dependencies are
not ours) as a plain WSGI server (a2c_serve.py) on loopback over TLS, with
Pebble's TLS certificate, so MDCACertificateFile is `pebble.ca_bundle` for
both. Its local CA is a root and an intermediate made here; it issues from the
intermediate and sends the root along as its chain. It resolves names through
the session's challtestsrv (every name is 127.0.0.1, TXT records as set there)
and validates http-01/tls-alpn-01 against Apache's ports (a2c_serve.py).
"""
from __future__ import annotations

import os
import shutil
import ssl
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from . import pki
from ._util import check_ports_free, forget_at_exit, make_tmp_dir, spawn, stop_at_exit, \
    terminate, wait_for

REPO = Path(__file__).resolve().parent.parent.parent
VENV = REPO / ".venv-a2c"
PYTHON = VENV / "bin" / "python"
SERVE = Path(__file__).resolve().parent / "a2c_serve.py"


def _empty_crl(ca: pki.CertFiles) -> bytes:
    now = datetime.now(timezone.utc)
    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(ca.certificate.subject)
           .last_update(now - timedelta(hours=1)).next_update(now + timedelta(days=30))
           .sign(ca.private_key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.PEM)


def installed() -> bool:
    return PYTHON.exists() and any(VENV.glob(".installed-*"))  # made by `make a2c-venv`


class Acme2Certifier:
    def __init__(self, pebble, port: int, http_port: int, https_port: int,
                 work_dir: str | os.PathLike | None = None, validity_days: int = 30,
                 extra_config: str = ""):
        self.pebble = pebble  # its TLS certificate and challtestsrv's DNS
        self.port = port
        self.http_port, self.https_port = http_port, https_port
        self.work_dir = Path(work_dir) if work_dir else make_tmp_dir("a2c-")
        self.validity_days = validity_days
        self.extra_config = extra_config  # more sections of acme_srv.cfg
        self.config_path = self.work_dir / "acme_srv.cfg"
        self.log = self.work_dir / "a2c.log"
        self.certs = self.work_dir / "certs"
        ca_dir = self.work_dir / "ca"
        self.root = pki.make_ca(ca_dir, "acme2certifier test root", stem="root")
        self.issuer = pki.make_ca(ca_dir, "acme2certifier test issuer", issuer=self.root,
                                  stem="issuer")
        self.crl = ca_dir / "issuer.crl.pem"  # the openssl handler wants one
        self.crl.write_bytes(_empty_crl(self.issuer))
        self._proc = None

    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.port}/directory"

    def config(self) -> str:
        # The options of acme_srv.cfg as its docs (and handlers) name them.
        return f"""[DEFAULT]
debug: True

[Nonce]
nonce_check_disable: False

[CAhandler]
handler_module: acme2certifier.cahandlers.openssl_ca_handler
issuing_ca_key: {self.issuer.key}
issuing_ca_cert: {self.issuer.cert}
issuing_ca_crl: {self.crl}
ca_cert_chain_list: ["{self.root.cert}"]
cert_save_path: {self.certs}
cert_validity_days: {self.validity_days}

[DBhandler]
handler_module: acme2certifier.dbhandlers.wsgi_handler
dbfile: {self.work_dir / "acme_srv.db"}

[Challenge]
dns_server_list: ["127.0.0.1"]

[Order]
tnauthlist_support: False
""" + self.extra_config

    def start(self, timeout: float = 30.0) -> "Acme2Certifier":
        check_ports_free("acme2certifier", [("acme2certifier", self.port, False)])
        self.certs.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        env = dict(os.environ, ACME_SRV_CONFIGFILE=str(self.config_path))
        leaf = self.pebble.tls_leaf
        self._proc = spawn([str(PYTHON), str(SERVE), str(self.port), str(leaf.cert),
                            str(leaf.key), str(self.pebble.dns_port), str(self.http_port),
                            str(self.https_port)], self.log, env=env, cwd=self.work_dir)
        stop_at_exit(self)
        proc = self._proc
        ctx = ssl.create_default_context(cafile=str(self.pebble.tls_ca.cert))

        def directory():
            with urllib.request.urlopen(self.directory_url, timeout=2, context=ctx) as r:
                return r.read()
        wait_for(directory, timeout, f"acme2certifier {self.directory_url}", logs=[self.log],
                 alive=lambda: proc.poll() is None)
        return self

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None
        forget_at_exit(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, *exc):
        self.stop()
        if exc_type is None:  # its CA keys and database (kept when the block inside failed)
            shutil.rmtree(self.work_dir, ignore_errors=True)
