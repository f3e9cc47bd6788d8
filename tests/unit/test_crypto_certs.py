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


def test_a_name_that_is_not_ascii_goes_into_a_certificate_as_its_a_label():
    from apache_md.core.crypto import a_label, self_signed, cert_info, load_chain
    from cryptography.hazmat.primitives.asymmetric import ec
    assert a_label("bücher.example") == "xn--bcher-kva.example"
    assert a_label("plain.example") == "plain.example"
    assert a_label("a" * 70 + "ü.example") is None  # a label too long for IDNA
    key = ec.generate_private_key(ec.SECP256R1())
    info = cert_info(load_chain(self_signed(key, ["bücher.example", "a" * 70 + "ü.example"]))[0])
    assert list(info.names) == ["xn--bcher-kva.example"]
    info = cert_info(load_chain(self_signed(key, ["a" * 70 + "ü.example"]))[0])
    assert list(info.names)  # a name of its own rather than no SAN at all
