"""Keys, CSRs and certificates: everything apache-md does with `cryptography`.

Pure functions over bytes and objects; the store decides where the bytes go.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import compat
from .lazy import Lazy
from .model import KeySpec

# Imported when first used (core/lazy.py)
x509 = Lazy("cryptography.x509")
x509_oid = Lazy("cryptography.x509.oid")
exceptions = Lazy("cryptography.exceptions")
hashes = Lazy("cryptography.hazmat.primitives.hashes")
serialization = Lazy("cryptography.hazmat.primitives.serialization")
ec = Lazy("cryptography.hazmat.primitives.asymmetric.ec")
padding = Lazy("cryptography.hazmat.primitives.asymmetric.padding")
rsa = Lazy("cryptography.hazmat.primitives.asymmetric.rsa")

# mod_md's curve aliases (the curve's OpenSSL name); anything else is tried as an
# OpenSSL/NIST name.
CURVE_NAMES = {
    "p-256": "secp256r1", "secp256r1": "secp256r1", "prime256v1": "secp256r1",
    "p-384": "secp384r1", "secp384r1": "secp384r1",
    "p-521": "secp521r1", "secp521r1": "secp521r1",
    "p-192": "secp192r1", "secp192r1": "secp192r1", "prime192v1": "secp192r1",
    "p-224": "secp224r1", "secp224r1": "secp224r1",
}
FALLBACK_CN = "Apache Managed Domain Fallback"


class CryptoError(Exception):
    pass


def curve(name: str):
    """The curve class for a MDPrivateKeys name (mod_md's aliases, then OpenSSL names)."""
    known = CURVE_NAMES.get(name.lower())
    c = getattr(ec, known.upper()) if known else None
    if c is None:
        by_lower = {k.lower(): v for k, v in getattr(ec, "_CURVE_TYPES", {}).items()}
        c = by_lower.get(name.lower())
        if isinstance(c, ec.EllipticCurve):  # older cryptography keeps instances there
            c = type(c)
    return c


def generate_key(spec: KeySpec):
    if spec.kind == "EC":
        c = curve(spec.curve)
        if c is None:
            raise CryptoError(f"ec curve unknown: {spec.curve}")
        return ec.generate_private_key(c())
    return generate_key_rsa(spec.rsa_bits)


def generate_key_rsa(bits: int):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_to_pem(key, passphrase: bytes | None = None) -> bytes:
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def key_from_pem(data: bytes, passphrase: bytes | None = None):
    # Encrypted and plain keys both occur in a mod_md store (staging vs domains).
    pw = passphrase if b"ENCRYPTED" in data else None
    return serialization.load_pem_private_key(data, password=pw)


def store_key_from_pem(data: bytes, passphrase: bytes | None = None):
    """A key from our own store, without cryptography's RSA consistency check
    (primality tests of p and q, ~0.1 s per key: seconds when activating many
    MDs). Callers prove the key against its certificate with key_signs_for()."""
    pw = passphrase if b"ENCRYPTED" in data else None
    try:
        return serialization.load_pem_private_key(data, password=pw,
                                                  unsafe_skip_rsa_key_validation=True)
    except TypeError:  # cryptography < 39 has no such switch (and no such check)
        return serialization.load_pem_private_key(data, password=pw)


# Keys loaded over and over in one process (the account key, once per MD driven),
# by their PEM: cryptography checks an RSA key when loading it, ~0.1 s for the
# 3072-bit account key, which would dominate issuing for many MDs at once.
_loaded: dict[tuple[bytes, bytes | None], object] = {}
_loaded_lock = threading.Lock()
_LOADED_MAX = 16


def key_from_pem_cached(data: bytes, passphrase: bytes | None = None):
    """key_from_pem, parsed once per process; the lock makes parallel callers wait
    for the first parse instead of repeating it."""
    with _loaded_lock:
        key = _loaded.get((data, passphrase))
        if key is None:
            key = key_from_pem(data, passphrase)
            if len(_loaded) >= _LOADED_MAX:
                _loaded.clear()
            _loaded[(data, passphrase)] = key
        return key


def remember_key(data: bytes, passphrase: bytes | None, key) -> None:
    """Note `key` as what key_from_pem_cached gives for `data`: a key this process
    made (or took) and stored, e.g. a new account's, which every other MD then finds
    without a parse and check while they wait."""
    with _loaded_lock:
        if len(_loaded) >= _LOADED_MAX:
            _loaded.clear()
        _loaded[(data, passphrase)] = key


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def a_label(name: str) -> str | None:
    """`name` as a certificate carries it: ASCII (an internationalized name as its
    A-label, xn--...), or None when it has none."""
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def san_entries(names: list[str]) -> list[x509.GeneralName]:
    """The names as SAN entries; a name that cannot be one (not ASCII, no A-label) is
    left out: a fallback for `MDomain bücher.example` must not stop the worker."""
    out: list[x509.GeneralName] = []
    for n in names:
        if _is_ip(n):
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        elif (label := a_label(n)) is not None:
            out.append(x509.DNSName(label))
    return out


def make_csr(key, names: list[str], must_staple: bool = False) -> bytes:
    # CN only when it fits (64 chars) and is a DNS name; the SANs are what counts.
    first = names[0]
    subject = [x509.NameAttribute(x509_oid.NameOID.COMMON_NAME, first)] \
        if len(first) <= 64 and not _is_ip(first) else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    builder = builder.add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
    if must_staple:  # TLS Feature 5 = status_request (OCSP Must-Staple, RFC 7633)
        builder = builder.add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]),
                                        critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def self_signed(key, names: list[str], days: int = 14, cn: str = FALLBACK_CN) -> bytes:
    """A fallback certificate (mod_md: CN 'Apache Managed Domain Fallback', 14 days)."""
    now = datetime.now(timezone.utc)
    subject = x509.Name([x509.NameAttribute(x509_oid.NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(san_entries(names) or
                                                       [x509.DNSName("fallback.apache-md.invalid")]),
                           critical=False)
            .add_extension(x509.KeyUsage(True, False, isinstance(key, rsa.RSAPrivateKey), False,
                                         False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509_oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def load_chain(data: bytes) -> list[x509.Certificate]:
    try:
        return compat.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CryptoError(f"not a PEM certificate chain: {e}") from None


def load_certificate(data: bytes) -> x509.Certificate | None:
    """One certificate, PEM or DER (application/pkix-cert); None if it is neither."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        return None


def is_root(cert: x509.Certificate) -> bool:
    """Self-issued: a root, which chains leave out (the client has it)."""
    return cert.issuer == cert.subject


def chain_to_pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def key_matches_cert(key, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def key_matches_spec(key, spec: KeySpec) -> bool:
    """The key is of the kind `spec` makes (RSA of its size, EC on its curve)."""
    if spec.kind == "EC":
        c = curve(spec.curve)
        return isinstance(key, ec.EllipticCurvePrivateKey) and c is not None \
            and key.curve.name == c.name
    return isinstance(key, rsa.RSAPrivateKey) and key.key_size == spec.rsa_bits


def key_signs_for(key, cert: x509.Certificate) -> bool:
    """The key matches the certificate and works: a signature made with it
    verifies with the certificate's public key (a damaged private part fails)."""
    if not key_matches_cert(key, cert):
        return False
    data = b"apache-md key check"
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            cert.public_key().verify(key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
                                     data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            cert.public_key().verify(key.sign(data, ec.ECDSA(hashes.SHA256())),
                                     data, ec.ECDSA(hashes.SHA256()))
    except exceptions.InvalidSignature:
        return False
    return True


def cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def covers(cert_sans: list[str], name: str) -> bool:
    """Does a certificate with these SANs cover `name` (wildcards per RFC 6125)?"""
    name = name.lower()
    if name in cert_sans:
        return True
    if "." in name and not name.startswith("*."):
        return f"*.{name.split('.', 1)[1]}" in cert_sans
    return False


def has_must_staple(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_class(x509.TLSFeature)
        return True
    except x509.ExtensionNotFound:
        return False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ari_cert_id(cert: x509.Certificate, mod_md_quirk: bool = False) -> str | None:
    """RFC 9773 certificate identifier: base64url(AKI).base64url(serial DER content).

    mod_md drops the 0x00 sign byte of serials with the top bit set (its
    md-status `ari-cert-id` keeps that quirk); requests to a CA must not.
    """
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if not aki.key_identifier:
        return None
    n = cert.serial_number
    size = (n.bit_length() + 7) // 8 if mod_md_quirk else n.bit_length() // 8 + 1
    return f"{_b64url(aki.key_identifier)}.{_b64url(n.to_bytes(max(size, 1), 'big'))}"


def issuer_oneline(name: x509.Name) -> str:
    """OpenSSL's one-line form, as mod_md shows it: /C=US/O=Let's Encrypt/CN=R11."""
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            parts.append(f"{attr.rfc4514_attribute_name}={attr.value}")
    return "".join(f"/{p}" for p in parts)


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What status, scheduling and OCSP need from one certificate, parsed once."""

    not_before: datetime
    not_after: datetime
    serial: str  # uppercase hex, no leading zero bytes (BN_bn2hex)
    sha256: str  # lowercase hex of DER
    issuer_name: str
    issuer_uri: str | None
    ocsp_url: str | None
    ari_cert_id: str | None
    names: tuple[str, ...]
    must_staple: bool
    key_type: str = ""  # "rsa2048", "secp256r1", ...: what the key really is ("" unknown)
    ari_id: str | None = None  # RFC 9773 identifier, for requests to the CA
    sha1: str = ""  # lowercase hex SHA-1 of DER: mod_md's OCSP id (ocsp-<sha1>.json)


def key_type(public_key) -> str:
    """"rsa<bits>" or the curve's OpenSSL name; "" for anything else."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.curve.name
    return ""


def spec_key_type(spec: KeySpec) -> str:
    """What a certificate's key must be to serve `spec` (same form as key_type)."""
    if spec.kind == "EC":
        return CURVE_NAMES.get(spec.curve.lower(), spec.curve.lower())
    return f"rsa{spec.rsa_bits}"


def cert_info(cert: x509.Certificate) -> CertInfo:
    der = cert.public_bytes(serialization.Encoding.DER)
    n = cert.serial_number
    serial = format(n, "X")
    if len(serial) % 2:
        serial = "0" + serial
    issuer_uri = ocsp_url = None
    try:
        aia = cert.extensions.get_extension_for_oid(x509_oid.ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
        for d in aia:
            uri = d.access_location.value
            if d.access_method == x509.AuthorityInformationAccessOID.CA_ISSUERS and not issuer_uri:
                issuer_uri = uri
            elif d.access_method == x509.AuthorityInformationAccessOID.OCSP and not ocsp_url:
                ocsp_url = uri
    except x509.ExtensionNotFound:
        pass
    return CertInfo(
        not_before=compat.not_valid_before(cert), not_after=compat.not_valid_after(cert),
        serial=serial, sha256=hashlib.sha256(der).hexdigest(),
        issuer_name=issuer_oneline(cert.issuer), issuer_uri=issuer_uri, ocsp_url=ocsp_url,
        ari_cert_id=ari_cert_id(cert, mod_md_quirk=True), names=tuple(cert_names(cert)),
        must_staple=has_must_staple(cert), key_type=key_type(cert.public_key()),
        ari_id=ari_cert_id(cert), sha1=hashlib.sha1(der).hexdigest())
