"""Which key types Debian's mod_ssl serves a certificate with: the facts behind
MDPrivateKeys' checks (apache/directives.servable_keys, issue 12.7). Each case
starts a real Apache with a self-signed certificate made the way apache-md makes
its fallback, and shakes hands with OpenSSL's default client settings."""
from __future__ import annotations

import socket
import ssl

import pytest

from apache_md.apache.directives import parse_pkeys, servable_keys
from apache_md.core import crypto
from tests.harness._util import HarnessError

CASES = [("rsa2048", "serves"), ("P-256", "serves"), ("P-384", "serves"), ("P-521", "serves"),
         ("P-192", "does not start"), ("P-224", "no handshake"), ("secp256k1", "no handshake"),
         ("brainpoolP256r1", "no handshake")]


def handshake(port: int) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            with ctx.wrap_socket(sock, server_hostname="localhost"):
                return True
    except ssl.SSLError:
        return False


@pytest.mark.parametrize("spec,outcome", CASES)
def test_key_type_as_mod_ssl_serves_it(apache, spec, outcome):
    (ks,) = parse_pkeys([spec])
    kept, notes = servable_keys([ks])
    key = crypto.generate_key(ks)
    cert = apache.write_file("tls/cert.pem", crypto.self_signed(key, ["localhost"]))
    keyf = apache.write_file("tls/key.pem", crypto.key_to_pem(key), mode=0o600)
    apache.write_conf("tls", f"<VirtualHost *:{apache.https_port}>\n  ServerName localhost\n"
                             f"  SSLEngine on\n  SSLCertificateFile {cert}\n"
                             f"  SSLCertificateKeyFile {keyf}\n</VirtualHost>\n")
    if outcome == "does not start":
        with pytest.raises(HarnessError):
            apache.start()
        assert "ee key too small" in apache.error_log()
        assert kept == [] and "Apache would not start" in notes[0]
        return
    apache.start()
    assert handshake(apache.https_port) is (outcome == "serves")
    assert kept == [ks]
    assert bool(notes) is (outcome == "no handshake")
