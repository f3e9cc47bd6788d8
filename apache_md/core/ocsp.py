"""OCSP (RFC 6960) for stapling: requests, verified answers, the stored form.

Pure functions over certificates and bytes; `stapling` decides when to ask,
fetches and keeps the answers. A response is accepted only when it speaks
about our certificate (cert id), is signed by its issuer or by a responder
the issuer delegated to (id-kp-OCSPSigning), and is current. mod_md checks
none of the signature part; a bad response must never reach a TLS client.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .compat import not_valid_after, not_valid_before
from .lazy import Lazy

# Imported when first used (core/lazy.py): only stapled MDs need them.
x509 = Lazy("cryptography.x509")
ocsp = Lazy("cryptography.x509.ocsp")
x509_oid = Lazy("cryptography.x509.oid")
exceptions = Lazy("cryptography.exceptions")
hashes = Lazy("cryptography.hazmat.primitives.hashes")
serialization = Lazy("cryptography.hazmat.primitives.serialization")
ec = Lazy("cryptography.hazmat.primitives.asymmetric.ec")
ed448 = Lazy("cryptography.hazmat.primitives.asymmetric.ed448")
ed25519 = Lazy("cryptography.hazmat.primitives.asymmetric.ed25519")
padding = Lazy("cryptography.hazmat.primitives.asymmetric.padding")
rsa = Lazy("cryptography.hazmat.primitives.asymmetric.rsa")
from .jsonfmt import http_date, parse_http_date, period

SKEW = timedelta(minutes=5)  # clock difference tolerated on thisUpdate (mod_ssl's default)
NO_NEXT_UPDATE = timedelta(hours=12)  # mod_md: a response without nextUpdate counts 12 h
GOOD, REVOKED, UNKNOWN = "good", "revoked", "unknown"
CONTENT_TYPE_REQUEST = "application/ocsp-request"
CONTENT_TYPE_RESPONSE = "application/ocsp-response"


class OCSPError(Exception):
    """A response we must not use; the message says why."""


def cert_id(cert: x509.Certificate) -> str:
    """mod_md's id of a certificate: lowercase hex SHA-1 of its DER (md_ocsp_init_id)."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def responder_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for d in aia:
        if d.access_method == x509.AuthorityInformationAccessOID.OCSP:
            return d.access_location.value
    return None


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """`issuer` named and signed `cert` (verify_directly_issued_by in cryptography >= 40)."""
    native = getattr(cert, "verify_directly_issued_by", None)
    if native is not None:
        try:
            native(issuer)
            return True
        except (ValueError, TypeError, exceptions.InvalidSignature):
            return False
    if cert.issuer != issuer.subject:
        return False
    try:
        _check_signature(issuer.public_key(), cert.signature, cert.tbs_certificate_bytes,
                         cert.signature_hash_algorithm, cert.signature_algorithm_oid)
        return True
    except OCSPError:
        return False


def issuer_in(chain: list[x509.Certificate]) -> x509.Certificate | None:
    """The certificate in `chain` that issued (and signed) its leaf."""
    return next((c for c in chain[1:] if issued_by(chain[0], c)), None)


def _utc(obj: Any, name: str) -> datetime | None:
    """A time field of an OCSP object as aware UTC (`<name>_utc` in cryptography >= 43)."""
    try:
        return getattr(obj, f"{name}_utc")
    except AttributeError:
        value = getattr(obj, name)
        return value.replace(tzinfo=timezone.utc) if value is not None else None


def key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey bits: CertID.issuerKeyHash and ResponderID byKey."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def relay_key(issuer_key_hash: bytes, serial: int) -> str:
    """How the local relay finds a stored response for mod_ssl's request (SHA-1 cert id)."""
    return f"{issuer_key_hash.hex()}:{serial:x}"


def new_nonce() -> bytes:
    return os.urandom(16)


def build_request(cert: x509.Certificate, issuer: x509.Certificate,
                  nonce: bytes | None = None) -> bytes:
    """DER OCSPRequest for one certificate, SHA-1 cert id as mod_ssl and mod_md use."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Answer:
    """A verified response about one certificate."""

    der: bytes
    status: str  # good | revoked
    this_update: datetime
    next_update: datetime | None
    revoked_at: datetime | None = None

    @property
    def valid_until(self) -> datetime:
        return self.next_update or self.this_update + NO_NEXT_UPDATE


def _expected_hashes(cert: x509.Certificate, issuer: x509.Certificate,
                     algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return req.issuer_name_hash, req.issuer_key_hash


def _single_for(resp: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate):
    """The SingleResponse whose CertID names our certificate, or None."""
    for single in resp.responses:
        if single.serial_number != cert.serial_number:
            continue
        try:
            name_hash, key_hash_ = _expected_hashes(cert, issuer, single.hash_algorithm)
        except (ValueError, TypeError, AttributeError):
            continue  # a hash algorithm cryptography cannot build a cert id with
        if single.issuer_name_hash == name_hash and single.issuer_key_hash == key_hash_:
            return single
    return None


def _names_responder(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if resp.responder_key_hash is not None:
        return resp.responder_key_hash == key_hash(cert)
    return resp.responder_name == cert.subject


def _check_signature(public_key: Any, sig: bytes, data: bytes, algo: Any, oid: Any) -> None:
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            pad = (padding.PSS(padding.MGF1(algo), padding.PSS.AUTO)
                   if oid == x509_oid.SignatureAlgorithmOID.RSASSA_PSS else padding.PKCS1v15())
            public_key.verify(sig, data, pad, algo)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(sig, data, ec.ECDSA(algo))
        elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public_key.verify(sig, data)
        else:
            raise OCSPError(f"unsupported responder key type {type(public_key).__name__}")
    except exceptions.InvalidSignature:
        raise OCSPError("the response signature does not verify") from None
    except (ValueError, TypeError) as e:
        raise OCSPError(f"the response signature cannot be checked: {e}") from None


def _verify_signature(public_key: Any, resp: ocsp.OCSPResponse) -> None:
    _check_signature(public_key, resp.signature, resp.tbs_response_bytes,
                     resp.signature_hash_algorithm, resp.signature_algorithm_oid)


def _signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> x509.Certificate:
    """The issuer itself, or a delegated responder certificate the issuer signed."""
    if _names_responder(resp, issuer):
        return issuer
    for cand in resp.certificates:
        if not _names_responder(resp, cand):
            continue
        if not issued_by(cand, issuer):
            raise OCSPError("the responder certificate was not issued by the certificate's "
                            "issuer")
        try:
            eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = []
        if x509_oid.ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise OCSPError("the responder certificate is not authorized for OCSP signing")
        if not not_valid_before(cand) - SKEW <= now <= not_valid_after(cand) + SKEW:
            raise OCSPError("the responder certificate is not valid now")
        return cand
    raise OCSPError("the response is signed by neither the issuer nor a responder it delegated to")


def verify(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: datetime,
           nonce: bytes | None = None) -> Answer:
    """The answer about `cert` in `der`; OCSPError when it must not be used."""
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        raise OCSPError(f"not an OCSP response ({e})") from None
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OCSPError(f"the responder answered '{resp.response_status.name.lower()}'")
    single = _single_for(resp, cert, issuer)
    if single is None:
        raise OCSPError(f"the response does not cover the certificate with serial "
                        f"{cert.serial_number:X}")
    _verify_signature(_signer(resp, issuer, now).public_key(), resp)
    if nonce is not None:
        try:
            got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            got = None  # responders serve pre-signed answers: a missing nonce is normal
        if got is not None and got != nonce:
            raise OCSPError("the response nonce does not match the request")
    this_update, next_update = _utc(single, "this_update"), _utc(single, "next_update")
    if this_update > now + SKEW:
        raise OCSPError(f"the response is from the future (thisUpdate {http_date(this_update)})")
    if next_update is not None and next_update <= now:
        raise OCSPError(f"the response expired at {http_date(next_update)}")
    if next_update is None and this_update + NO_NEXT_UPDATE <= now:
        raise OCSPError(f"the response without nextUpdate is too old ({http_date(this_update)})")
    status = single.certificate_status
    if status == ocsp.OCSPCertStatus.UNKNOWN:
        raise OCSPError("the responder does not know the certificate (status unknown)")
    if status == ocsp.OCSPCertStatus.REVOKED:
        return Answer(der, REVOKED, this_update, next_update, _utc(single, "revocation_time"))
    return Answer(der, GOOD, this_update, next_update)


# -- the stored form: ocsp/<md>/ocsp-<id>.json (reference/mod_md-formats.md §3.9) ------------

@dataclass(frozen=True)
class Stored:
    der: bytes
    status: str
    valid_from: datetime | None
    valid_until: datetime | None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def to_json(answer: Answer) -> dict[str, Any]:
    return {"response": _b64url(answer.der), "status": answer.status,
            "valid": period(answer.this_update, answer.valid_until)}


def from_json(obj: dict[str, Any] | None) -> Stored | None:
    """The stored response, None when the file holds none (mod_md: "response" missing)."""
    if not obj or not isinstance(obj.get("response"), str) or not obj["response"]:
        return None
    text = obj["response"]
    try:
        der = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    valid = obj.get("valid") if isinstance(obj.get("valid"), dict) else {}
    status = obj.get("status") if obj.get("status") in (GOOD, REVOKED) else UNKNOWN
    return Stored(der, status, parse_http_date(valid.get("from")),
                  parse_http_date(valid.get("until")))
