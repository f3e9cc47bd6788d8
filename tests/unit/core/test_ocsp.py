"""OCSP requests, response verification and the stored form (apache_md.ocsp)."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as xocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from apache_md.core import ocsp
from apache_md.core.compat import load_pem_x509_certificates
from apache_md.core.ocsp import OCSPError
from tests.harness import pki
from tests.harness.ocsp_responder import corrupt_signature

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return pki.make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def leaf(ca, tmp_path_factory):
    return pki.make_leaf(ca, tmp_path_factory.mktemp("leaf"), names=("a.test",), stem="a",
                         ocsp_url="http://ocsp.test/", with_chain=True)


def respond(ca, leaf_cert, status=xocsp.OCSPCertStatus.GOOD, this_update=NOW,
            next_update=NOW + HOUR, signer=None, responder=None, certs=None, nonce=None,
            issuer=None, serial_leaf=None) -> bytes:
    issuer = issuer or ca.certificate
    b = xocsp.OCSPResponseBuilder().add_response(
        cert=serial_leaf or leaf_cert, issuer=issuer, algorithm=hashes.SHA1(),
        cert_status=status, this_update=this_update, next_update=next_update,
        revocation_time=NOW - HOUR if status == xocsp.OCSPCertStatus.REVOKED else None,
        revocation_reason=None,
    ).responder_id(xocsp.OCSPResponderEncoding.HASH, responder or ca.certificate)
    if certs:
        b = b.certificates(certs)
    if nonce:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.sign(signer or ca.private_key, hashes.SHA256()).public_bytes(
        serialization.Encoding.DER)


def delegate(ca, eku=True, signed_by=None):
    key = pki.new_key("ec")
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OCSP responder")]))
         .issuer_name(ca.certificate.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - HOUR).not_valid_after(NOW + 24 * HOUR))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]),
                            critical=False)
    return b.sign(signed_by or ca.private_key, hashes.SHA256()), key


def test_good_and_revoked_answers(ca, leaf):
    a = ocsp.verify(respond(ca, leaf.certificate), leaf.certificate, ca.certificate, NOW)
    assert (a.status, a.this_update, a.valid_until) == ("good", NOW, NOW + HOUR)
    r = ocsp.verify(respond(ca, leaf.certificate, xocsp.OCSPCertStatus.REVOKED),
                    leaf.certificate, ca.certificate, NOW)
    assert r.status == "revoked" and r.revoked_at == NOW - HOUR


def test_unknown_is_not_an_answer(ca, leaf):
    with pytest.raises(OCSPError, match="unknown"):
        ocsp.verify(respond(ca, leaf.certificate, xocsp.OCSPCertStatus.UNKNOWN),
                    leaf.certificate, ca.certificate, NOW)


def test_bad_signature_is_rejected(ca, leaf):
    der = corrupt_signature(respond(ca, leaf.certificate))
    with pytest.raises(OCSPError, match="signature does not verify"):
        ocsp.verify(der, leaf.certificate, ca.certificate, NOW)


def test_response_about_another_certificate_is_rejected(ca, leaf, tmp_path):
    other = pki.make_leaf(ca, tmp_path, names=("b.test",), stem="b")
    with pytest.raises(OCSPError, match="does not cover"):
        ocsp.verify(respond(ca, other.certificate), leaf.certificate, ca.certificate, NOW)


def test_response_signed_by_another_ca_is_rejected(ca, leaf, tmp_path):
    evil = pki.make_ca(tmp_path, name="evil CA")
    # the CertID names our issuer, but the responder is someone else
    der = respond(ca, leaf.certificate, signer=evil.private_key, responder=evil.certificate)
    with pytest.raises(OCSPError, match="neither the issuer"):
        ocsp.verify(der, leaf.certificate, ca.certificate, NOW)


@pytest.mark.parametrize("this_update,next_update,msg", [
    (NOW - 2 * HOUR, NOW - HOUR, "expired"),
    (NOW + HOUR, NOW + 2 * HOUR, "future"),
    (NOW - 13 * HOUR, None, "too old"),
])
def test_times_are_checked(ca, leaf, this_update, next_update, msg):
    der = respond(ca, leaf.certificate, this_update=this_update, next_update=next_update)
    with pytest.raises(OCSPError, match=msg):
        ocsp.verify(der, leaf.certificate, ca.certificate, NOW)


def test_without_next_update_counts_twelve_hours(ca, leaf):
    a = ocsp.verify(respond(ca, leaf.certificate, next_update=None), leaf.certificate,
                    ca.certificate, NOW)
    assert a.next_update is None and a.valid_until == NOW + 12 * HOUR


def test_delegated_responder_needs_ocsp_signing_from_the_issuer(ca, leaf, tmp_path):
    cert, key = delegate(ca)
    der = respond(ca, leaf.certificate, signer=key, responder=cert, certs=[cert])
    assert ocsp.verify(der, leaf.certificate, ca.certificate, NOW).status == "good"
    cert, key = delegate(ca, eku=False)
    der = respond(ca, leaf.certificate, signer=key, responder=cert, certs=[cert])
    with pytest.raises(OCSPError, match="not authorized for OCSP signing"):
        ocsp.verify(der, leaf.certificate, ca.certificate, NOW)
    cert, key = delegate(ca, signed_by=pki.make_ca(tmp_path, name="x").private_key)
    der = respond(ca, leaf.certificate, signer=key, responder=cert, certs=[cert])
    with pytest.raises(OCSPError, match="not issued by"):
        ocsp.verify(der, leaf.certificate, ca.certificate, NOW)


def test_unsuccessful_and_garbage(ca, leaf):
    later = xocsp.OCSPResponseBuilder.build_unsuccessful(
        xocsp.OCSPResponseStatus.TRY_LATER).public_bytes(serialization.Encoding.DER)
    with pytest.raises(OCSPError, match="try_later"):
        ocsp.verify(later, leaf.certificate, ca.certificate, NOW)
    with pytest.raises(OCSPError, match="not an OCSP response"):
        ocsp.verify(b"<html>proxy error</html>", leaf.certificate, ca.certificate, NOW)


def test_nonce_must_match_when_echoed(ca, leaf):
    der = respond(ca, leaf.certificate, nonce=b"1" * 16)
    assert ocsp.verify(der, leaf.certificate, ca.certificate, NOW, nonce=b"1" * 16)
    with pytest.raises(OCSPError, match="nonce"):
        ocsp.verify(der, leaf.certificate, ca.certificate, NOW, nonce=b"2" * 16)
    # no nonce in the answer (pre-signed responses): fine
    assert ocsp.verify(respond(ca, leaf.certificate), leaf.certificate, ca.certificate, NOW,
                       nonce=b"2" * 16)


def test_stored_form_is_mod_md_s(ca, leaf):
    a = ocsp.verify(respond(ca, leaf.certificate), leaf.certificate, ca.certificate, NOW)
    obj = json.loads(json.dumps(ocsp.to_json(a)))
    assert set(obj) == {"response", "status", "valid"}
    assert "=" not in obj["response"] and "+" not in obj["response"]
    assert obj["status"] == "good" and set(obj["valid"]) == {"from", "until"}
    back = ocsp.from_json(obj)
    assert back.der == a.der and back.valid_until == NOW + HOUR and back.valid_from == NOW
    assert ocsp.from_json({}) is None and ocsp.from_json({"response": ""}) is None
    ocsp.from_json({"response": "!!!", "valid": "x"})  # never raises


def test_ids_urls_and_issuer(ca, leaf):
    chain = load_pem_x509_certificates(leaf.cert.read_bytes())
    assert ocsp.issuer_in(chain) == ca.certificate
    assert ocsp.issuer_in(chain[:1]) is None
    assert ocsp.responder_url(leaf.certificate) == "http://ocsp.test/"
    assert ocsp.responder_url(ca.certificate) is None
    assert len(ocsp.cert_id(leaf.certificate)) == 40
