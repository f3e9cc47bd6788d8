"""Proves the harness itself: Pebble over verified TLS, Apache with an SSL
vhost seen by openssl, challtestsrv DNS, and a real http-01 issuance that
Pebble validates against Apache's http port."""

from __future__ import annotations

import datetime
import subprocess

import josepy as jose
import pytest
import requests
from acme import challenges, messages
from acme import client as acme_client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import client, default_eab, pki
from tests.harness._util import HarnessError, wait_for


def ssl_vhost(apache, name, cert_files) -> str:
    return f"""<VirtualHost *:{apache.https_port}>
    ServerName {name}
    SSLEngine on
    SSLCertificateFile {cert_files.cert}
    SSLCertificateKeyFile {cert_files.key}
</VirtualHost>
"""


def test_pebble_directory_over_verified_tls(pebble):
    r = requests.get(pebble.directory_url, verify=str(pebble.ca_bundle), timeout=10)
    assert r.status_code == 200
    assert "newOrder" in r.json()
    status, _, body = client.curl(pebble.directory_url, cacert=pebble.ca_bundle)
    assert status == 200 and "newAccount" in body
    # The bundle holds the harness CA and pebble's issuing root.
    assert len(client.parse_pem_chain(pebble.ca_bundle.read_text())) == 2
    assert pebble.root_pem and pebble.intermediate_pem and pebble.intermediate_key_pem


def test_pebble_eab_config_and_restore(pebble):
    old_root = pebble.root_pem
    with pebble.configured(eab=default_eab()):
        assert pebble.directory()["meta"]["externalAccountRequired"] is True
        assert pebble.root_pem != old_root  # new root per start, bundle redone
        assert pebble.root_pem in pebble.ca_bundle.read_text()
    assert pebble.directory()["meta"]["externalAccountRequired"] is False
    assert pebble.eab is None and pebble.eab_required is False


def test_challtestsrv_txt(pebble):
    pebble.set_acme_txt("txt.test", "token-1")
    try:
        assert pebble.query("_acme-challenge.txt.test", "TXT") == ["token-1"]
        assert pebble.query("txt.test", "A") == ["127.0.0.1"]
        assert pebble.query("txt.test", "AAAA") == []  # IPv6 answers switched off
    finally:
        pebble.clear_acme_txt("txt.test")
    assert pebble.query("_acme-challenge.txt.test", "TXT") == []


def test_apache_ssl_vhost(apache):
    certs = apache.root / "certs"
    rsa = pki.self_signed(certs, ["a.test", "www.a.test"], key_kind="rsa")
    apache.write_conf("a", ssl_vhost(apache, "a.test", rsa))
    assert apache.configtest()[0] == 0
    apache.start()

    # Children serve as www-data when we are root; the master stays root. A child
    # just forked is root until it switches (seen under load): look until none is.
    def children():
        return subprocess.run(["ps", "-o", "user=", "--ppid", str(apache.pid)],
                              capture_output=True, text=True).stdout.split()
    if apache.user is not None:
        wait_for(lambda: set(children()) == {"www-data"}, 10, "children running as www-data")
    assert children()

    chain = client.s_client_cert("127.0.0.1", apache.https_port, "a.test")
    assert chain and chain[0].serial_number == rsa.certificate.serial_number
    assert client.dns_names(chain[0]) == ["a.test", "www.a.test"]
    assert client.verify_chain(chain, rsa.cert, hostname="a.test")
    assert not client.verify_chain(chain, apache.root / "certs" / "nothing.pem")

    # A graceful restart picks up a new certificate; the old one is gone.
    ecc = pki.self_signed(certs, ["a.test"], key_kind="ec")
    apache.write_conf("a", ssl_vhost(apache, "a.test", ecc))
    apache.graceful()
    chain = client.s_client_cert("127.0.0.1", apache.https_port, "a.test")
    assert chain[0].serial_number == ecc.certificate.serial_number
    assert client.key_type(chain[0]) == "secp256r1"

    status, headers, body = client.curl(f"https://a.test:{apache.https_port}/",
                                        cacert=ecc.cert)
    assert status == 200 and "apache-md test server" in body
    assert headers["content-type"].startswith("text/html")

    # A broken config is reported and the old generation keeps serving.
    apache.write_conf("broken", "NoSuchDirective on\n")
    assert apache.configtest()[0] != 0
    with pytest.raises(HarnessError, match="NoSuchDirective"):
        apache.graceful()
    assert apache.running
    apache.remove_conf("broken")


class _PatientNetwork(acme_client.ClientNetwork):
    """Pebble rejects 5% of nonces; the acme library retries only once."""

    def post(self, *args, **kwargs):
        for attempt in range(6):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as e:
                if e.code != "badNonce" or attempt == 5:
                    raise


def test_acme_http01_issuance(pebble, apache):
    apache.start()

    account_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = _PatientNetwork(account_key, alg=jose.ES256, user_agent="apache-md-harness",
                          verify_ssl=str(pebble.ca_bundle))
    directory = acme_client.ClientV2.get_directory(pebble.directory_url, net)
    acme = acme_client.ClientV2(directory, net)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))

    cert_key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.test")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.test")]), critical=False)
           .sign(cert_key, hashes.SHA256()))
    order = acme.new_order(csr.public_bytes(serialization.Encoding.PEM))

    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue  # pebble may reuse an earlier authorization
        chall = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = chall.response_and_validation(account_key)
        apache.write_doc(chall.chall.path, validation)
        acme.answer_challenge(chall, response)

    deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
    order = acme.poll_and_finalize(order, deadline)

    chain = client.parse_pem_chain(order.fullchain_pem)
    assert client.dns_names(chain[0]) == ["a.test"]
    # The issued chain verifies against pebble's root alone.
    assert client.verify_chain(chain, pebble.root_pem, hostname="a.test")
    status = pebble.cert_status(chain[0].serial_number)
    assert status and status["Status"] == "Valid"
    # Pebble fetched the token from our Apache on the http port.
    assert "/.well-known/acme-challenge/" in apache.access_log()


PING_WSGI = """import json, os, sys
def application(environ, start_response):
    import acme  # importable only if python-home points at our venv
    body = json.dumps({"uid": os.getuid(), "prefix": sys.prefix,
                       "version": list(sys.version_info[:2])}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""


def test_mod_wsgi_daemon_uses_test_venv(apache):
    """mod_wsgi embeds Debian's python3; a daemon with python-home=<our venv>
    runs as www-data in the private root and imports the venv's packages."""
    import sys

    wsgi_dir = apache.write_file("wsgi/ping.wsgi", PING_WSGI).parent
    apache.write_conf("wsgi", f"""
WSGIDaemonProcess harness processes=1 threads=2 python-home={sys.prefix}
WSGIScriptAlias /wsgi-ping {wsgi_dir}/ping.wsgi process-group=harness application-group=%{{GLOBAL}}
<Directory {wsgi_dir}>
    Require all granted
</Directory>
""")
    apache.start()
    r = client.curl(f"http://localhost:{apache.http_port}/wsgi-ping")
    assert r.status == 200, apache.error_log()[-3000:]
    info = r.json()
    assert info["prefix"] == sys.prefix
    assert info["version"] == list(sys.version_info[:2])
    if apache.user:
        import pwd
        assert info["uid"] == pwd.getpwnam(apache.user).pw_uid
