"""core/crypto: one certificate read as a CA may send it (PEM or DER), roots told apart."""
from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from apache_md.core import crypto
from tests.harness import pki


def test_load_certificate_pem_der_and_garbage(tmp_path):
    root = pki.make_ca(tmp_path, "root")
    issuer = pki.make_ca(tmp_path, "issuer", issuer=root, stem="issuer")
    pem = issuer.certificate.public_bytes(serialization.Encoding.PEM)
    der = issuer.certificate.public_bytes(serialization.Encoding.DER)
    assert crypto.load_certificate(pem) == issuer.certificate
    assert crypto.load_certificate(b"\n" + pem) == issuer.certificate
    assert crypto.load_certificate(der) == issuer.certificate
    assert crypto.load_certificate(b"<html>nope</html>") is None
    assert crypto.load_certificate(b"") is None
    assert crypto.is_root(root.certificate) and not crypto.is_root(issuer.certificate)
