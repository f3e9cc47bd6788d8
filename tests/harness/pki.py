"""Throw-away certificates made with `cryptography`.

`make_ca` + `make_leaf` give pebble's TLS listener a `localhost` certificate
that clients can verify; `self_signed` is for Apache vhosts in tests.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class CertFiles:
    cert: Path  # PEM certificate
    key: Path  # PEM private key (unencrypted, PKCS#8)
    certificate: x509.Certificate
    private_key: object = None  # the key object, to sign with (CA) or inspect


def new_key(kind: str = "rsa"):
    """kind: 'rsa' (2048), 'rsaNNNN', 'ec' (P-256) or 'secp384r1'."""
    if kind.startswith("rsa"):
        bits = int(kind[3:] or 2048)
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    curve = {"ec": ec.SECP256R1(), "secp256r1": ec.SECP256R1(),
             "P-256": ec.SECP256R1(), "secp384r1": ec.SECP384R1(),
             "P-384": ec.SECP384R1()}[kind]
    return ec.generate_private_key(curve)


def _san(names):
    """DNS names and IP literals, in order."""
    out = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _write(path: Path, cert: x509.Certificate, key) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    # Apache reads keys as root before dropping privileges; 0600 is enough.
    os.chmod(path, 0o600)


def _now():
    return _dt.datetime.now(_dt.timezone.utc)


def make_ca(directory: str | os.PathLike, name: str = "apache-md test CA",
            key_kind: str = "rsa", issuer: CertFiles | None = None,
            stem: str = "ca") -> CertFiles:
    """A root CA, or with `issuer` an intermediate signed by it (as a CA's chain has)."""
    d = Path(directory)
    key = new_key(key_kind)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(issuer.private_key if issuer else key, hashes.SHA256()))
    files = CertFiles(d / f"{stem}.cert.pem", d / f"{stem}.key.pem", cert, key)
    _write(files.cert, cert, key)
    _write_key(files.key, key)
    return files


def make_leaf(ca: CertFiles, directory: str | os.PathLike, names=("localhost", "127.0.0.1", "::1"),
              stem: str = "localhost", key_kind: str = "rsa", days: int = 365,
              not_before: _dt.datetime | None = None,
              not_after: _dt.datetime | None = None,
              ocsp_url: str | None = None, with_chain: bool = False) -> CertFiles:
    """A server certificate for `names` (first one is the CN) signed by `ca`,
    valid `days` from an hour ago, or [not_before, not_after] when given; with
    `ocsp_url` an AIA OCSP entry, with `with_chain` the CA certificate after it in
    the file (as SSLCertificateFile holds a chain)."""
    d = Path(directory)
    key = new_key(key_kind)
    nb = not_before or _now() - _dt.timedelta(hours=1)
    na = not_after or nb + _dt.timedelta(days=days, hours=1)
    ca_key = ca.private_key
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(nb)
            .not_valid_after(na)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False))
    if ocsp_url:
        cert = cert.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]),
            critical=False)
    cert = cert.sign(ca_key, hashes.SHA256())
    files = CertFiles(d / f"{stem}.cert.pem", d / f"{stem}.key.pem", cert, key)
    _write(files.cert, cert, key)
    if with_chain:
        with open(files.cert, "ab") as f:
            f.write(ca.certificate.public_bytes(serialization.Encoding.PEM))
    _write_key(files.key, key)
    return files


def self_signed(directory: str | os.PathLike, names, stem: str | None = None,
                key_kind: str = "rsa", days: int = 30,
                not_before: _dt.datetime | None = None,
                not_after: _dt.datetime | None = None) -> CertFiles:
    """A self-signed server certificate (e.g. a vhost cert before ACME, or a
    certificate with a chosen validity to test renewal windows)."""
    d = Path(directory)
    stem = stem or f"{names[0]}.{key_kind}"
    key = new_key(key_kind)
    now = _now()
    nb = not_before or now - _dt.timedelta(hours=1)
    na = not_after or nb + _dt.timedelta(days=days)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(na)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    files = CertFiles(d / f"{stem}.cert.pem", d / f"{stem}.key.pem", cert, key)
    _write(files.cert, cert, key)
    _write_key(files.key, key)
    return files


def localhost_pki(directory: str | os.PathLike, extra_names=()) -> tuple[CertFiles, CertFiles]:
    """(ca, leaf) for a TLS listener on localhost / 127.0.0.1 / ::1 (+ extra_names)."""
    ca = make_ca(directory)
    leaf = make_leaf(ca, directory, names=("localhost", "127.0.0.1", "::1", *extra_names))
    return ca, leaf
