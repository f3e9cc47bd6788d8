"""Keys and CSRs: curves by mod_md's names, IP SANs, the must-staple extension."""
from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from apache_md.core import crypto
from apache_md.core.model import KeySpec


@pytest.mark.parametrize("name,curve", [
    ("P-256", ec.SECP256R1), ("secp256r1", ec.SECP256R1), ("prime256v1", ec.SECP256R1),
    ("p-384", ec.SECP384R1), ("secp384r1", ec.SECP384R1), ("P-521", ec.SECP521R1),
    ("brainpoolP256r1", ec.BrainpoolP256R1),
])
def test_curves_by_mod_md_names(name, curve):
    key = crypto.generate_key(KeySpec("EC", curve=name))
    assert isinstance(key.curve, curve)


def test_unknown_curve_and_rsa_sizes():
    with pytest.raises(crypto.CryptoError, match="ec curve unknown: X25519"):
        crypto.generate_key(KeySpec("EC", curve="X25519"))
    key = crypto.generate_key(KeySpec("Default"))  # larger sizes: tests/e2e/test_certificates
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


def test_key_file_names_as_mod_md():
    assert KeySpec("RSA", bits=4096).file_name("pubcert") == "pubcert.pem"
    assert KeySpec("EC", curve="P-384").file_name("pubcert") == "pubcert.p-384.pem"
    assert KeySpec("EC", curve="P-384").name == "P-384"  # status key: as configured


def test_csr_with_ip_addresses_and_must_staple():
    key = crypto.generate_key(KeySpec("EC", curve="P-256"))
    csr = x509.load_pem_x509_csr(crypto.make_csr(key, ["192.0.2.1", "a.test", "2001:db8::1"],
                                                 must_staple=True))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.1"),
                                                       ipaddress.ip_address("2001:db8::1")]
    assert san.get_values_for_type(x509.DNSName) == ["a.test"]
    assert csr.subject == x509.Name([])  # no IP in the CN
    feature = csr.extensions.get_extension_for_class(x509.TLSFeature)
    assert list(feature.value) == [x509.TLSFeatureType.status_request]
    # DER exactly as CAs (Pebble, Boulder) compare it: SEQUENCE { INTEGER 5 }
    assert feature.value.public_bytes() == bytes.fromhex("3003020105")
    plain = x509.load_pem_x509_csr(crypto.make_csr(key, ["a.test"]))
    assert not [e for e in plain.extensions if isinstance(e.value, x509.TLSFeature)]


def _cert(key, names=("a.test",)):
    return crypto.load_chain(crypto.self_signed(key, list(names)))[0]


def test_key_signs_for_rsa_and_ec():
    for spec in (KeySpec("RSA", bits=2048), KeySpec("EC", curve="P-256"),
                 KeySpec("EC", curve="secp384r1")):
        key = crypto.generate_key(spec)
        other = crypto.generate_key(spec)
        assert crypto.key_signs_for(key, _cert(key))
        assert not crypto.key_signs_for(other, _cert(key))


def test_key_signs_for_rejects_a_damaged_rsa_key():
    key = crypto.generate_key_rsa(2048)
    n = key.private_numbers()
    # A wrong private exponent and CRT part: the public half still matches the cert.
    bad = rsa.RSAPrivateNumbers(n.p, n.q, n.d + 2, n.dmp1 + 2, n.dmq1, n.iqmp,
                                n.public_numbers)
    try:
        damaged_key = bad.private_key(unsafe_skip_rsa_key_validation=True)
    except TypeError:
        pytest.skip("cryptography < 39 cannot build an inconsistent RSA key")
    pem = damaged_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    damaged = crypto.store_key_from_pem(pem)
    assert crypto.key_matches_cert(damaged, _cert(key))
    assert not crypto.key_signs_for(damaged, _cert(key))


def test_store_key_from_pem_reads_encrypted_and_plain():
    key = crypto.generate_key_rsa(2048)
    for pw in (b"x" * 48, None):
        pem = crypto.key_to_pem(key, pw)
        assert crypto.key_matches_cert(crypto.store_key_from_pem(pem, b"x" * 48), _cert(key))


def test_key_from_pem_cached_parses_once():
    pem = crypto.key_to_pem(crypto.generate_key(KeySpec("EC", curve="P-256")))
    assert crypto.key_from_pem_cached(pem) is crypto.key_from_pem_cached(pem)
