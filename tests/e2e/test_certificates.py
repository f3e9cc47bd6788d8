"""Issue 5 end to end: every CA and every kind of certificate.

EAB (Pebble with EAB required), key types side by side, wildcards through
dns-01 and pebble-challtestsrv, challenge selection and the http-01 preflight,
IP address certificates, and a forward proxy carrying all ACME traffic.
Real Apache, real Pebble, real openssl/curl.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import PORTS, PROXY_PORTS
from tests.e2e.mdenv import MDEnv
from tests.harness import FaultProxy, ForwardProxy, default_eab, pki
from tests.harness.client import curl, dns_names, key_type, s_client, verify_chain

HOOK = Path(__file__).resolve().parent.parent / "harness" / "dns01_hook.py"


def job(env: MDEnv, name: str) -> dict:
    return json.loads((env.store / "staging" / name / "job.json").read_text())


def last(env: MDEnv, name: str) -> dict:
    return job(env, name)["last"]


def accounts(env: MDEnv) -> dict[str, dict]:
    d = env.store / "accounts"
    return {a: json.loads((d / a / "account.json").read_text()) for a in sorted(os.listdir(d))}


def serial(env: MDEnv, name: str, key: str = "rsa") -> str:
    return env.status(name)["cert"][key]["serial"]


def renew_and_activate(env: MDEnv, *names: str, force: bool = False) -> str:
    args = ["renew"] + (["--force"] if force else []) + list(names)
    out = env.cli(*args)
    env.cli_ok("activate", "--reload", env.reload_command())
    return out.stdout + out.stderr


# -- 1. External Account Binding --------------------------------------------------------

def test_eab_accounts_errors_and_secrecy(env, pebble):
    eab = default_eab()
    hmac1, hmac2 = eab["kid-1"], eab["kid-2"]
    eab_file = env.apache.write_file("eab/kid-2.json", json.dumps({"kid": "kid-2", "hmac": hmac2}),
                                     mode=0o600)

    def config(global_eab: str) -> None:
        mds = f"""
MDExternalAccountBinding {global_eab}
MDomain e1.test
MDomain e2.test
<MDomain noeab.test>
    MDExternalAccountBinding none
</MDomain>
<MDomain badhmac.test>
    MDExternalAccountBinding kid-1 {hmac2}
</MDomain>
<MDomain badkid.test>
    MDExternalAccountBinding kid-9 {hmac1}
</MDomain>
<MDomain notb64.test>
    MDExternalAccountBinding kid-1 not*base64
</MDomain>
"""
        names = ["e1.test", "e2.test", "noeab.test", "badhmac.test", "badkid.test", "notb64.test"]
        env.write_config(mds, "".join(env.ssl_vhost(n) for n in names))

    with pebble.configured(eab=eab):
        config(f"kid-1 {hmac1}")
        env.start()
        out = renew_and_activate(env)
        assert "Traceback" not in out and "internal error" not in out, out
        # Errors land in job.json with the CA's (or mod_md's) problem types.
        assert last(env, "noeab.test")["problem"] == \
            "urn:ietf:params:acme:error:externalAccountRequired"
        assert "MDExternalAccountBinding" in last(env, "noeab.test")["detail"]
        assert last(env, "badhmac.test")["problem"] == "urn:ietf:params:acme:error:unauthorized"
        assert last(env, "badkid.test")["problem"] == "urn:ietf:params:acme:error:unauthorized"
        assert "'kid' references a key that is not known" in last(env, "badkid.test")["detail"]
        assert last(env, "notb64.test")["problem"] == "apache:eab-hmac-invalid"
        # The two MDs with the same CA + EAB share one account.
        st = env.status()
        mds = {m["name"]: m for m in st["managed-domains"]}
        assert mds["e1.test"]["state"] == mds["e2.test"]["state"] == 2
        accts = accounts(env)
        assert len(accts) == 1
        (acct_id, acct), = accts.items()
        assert acct["eab"] == {"kid": "kid-1", "hmac": hmac1}
        assert stat.S_IMODE(os.stat(env.store / "accounts" / acct_id / "account.json").st_mode) \
            == 0o600
        assert mds["e1.test"]["ca"]["account"] == mds["e2.test"]["ca"]["account"] == acct_id
        assert mds["e1.test"]["eab"] == {"kid": "kid-1", "hmac": "***"}

        # A changed EAB (now a JSON file relative to ServerRoot) registers a new account
        # at the next renewal; the second MD then shares it. Each `renew` is a new process.
        config(os.path.relpath(eab_file, env.apache.root))
        env.cli_ok("renew", "--force", "e1.test")
        accts = accounts(env)
        assert len(accts) == 2
        new_id = next(a for a, d in accts.items() if d["eab"]["kid"] == "kid-2")
        env.cli_ok("renew", "--force", "e2.test")
        assert len(accounts(env)) == 2
        env.cli_ok("activate", "--reload", env.reload_command())
        mds = {m["name"]: m for m in env.status()["managed-domains"]}
        assert mds["e1.test"]["ca"]["account"] == mds["e2.test"]["ca"]["account"] == new_id

        # The hmac is never shown: not by the CLI, not over HTTP.
        shown = env.cli_ok("status", "--json").stdout + env.cli_ok("status").stdout \
            + env.cli("check").stdout \
            + curl(f"http://e1.test:{env.apache.http_port}/md-status").body \
            + curl(f"http://e1.test:{env.apache.http_port}/md-status/e1.test").body
        assert hmac1 not in shown and hmac2 not in shown and '"***"' in shown

    # A JSON file others may read is refused, with file:line.
    os.chmod(eab_file, 0o644)
    p = env.cli("check")
    assert p.returncode == 1
    assert "10-md.conf:" in p.stderr and "accessible by others" in p.stderr \
        and str(eab_file) in p.stderr


# -- 2. Key types -----------------------------------------------------------------------------

def test_several_key_types_served_side_by_side(env):
    env.write_config("""
<MDomain k1.test>
    MDPrivateKeys P-384 RSA 4096
</MDomain>
<MDomain k2.test>
    MDPrivateKeys rsa3072 secp256r1
</MDomain>
""", env.ssl_vhost("k1.test") + env.ssl_vhost("k2.test"))
    env.start()
    renew_and_activate(env)
    mds = {m["name"]: m for m in env.status()["managed-domains"]}
    assert set(mds["k1.test"]["cert"]) == {"P-384", "rsa", "valid"}
    assert set(mds["k2.test"]["cert"]) == {"secp256r1", "rsa", "valid"}
    # mod_md's file names: RSA plain, EC by curve, lowercased
    files = sorted(os.listdir(env.store / "domains" / "k1.test"))
    assert {"privkey.pem", "pubcert.pem", "privkey.p-384.pem", "pubcert.p-384.pem"} <= set(files)
    for f in ("privkey.pem", "privkey.p-384.pem"):
        assert stat.S_IMODE(os.stat(env.store / "domains" / "k1.test" / f).st_mode) == 0o600
    include = (env.store / "apache" / "k1.test.conf").read_text()
    assert include.count("SSLCertificateFile") == 2 and "pubcert.p-384.pem" in include

    root = env.pebble.root_pem_path.read_text()
    for name, key, sig, kt in [("k1.test", "P-384", "ec", "secp384r1"),
                               ("k1.test", "rsa", "rsa", "rsa4096"),
                               ("k2.test", "secp256r1", "ec", "secp256r1"),
                               ("k2.test", "rsa", "rsa", "rsa3072")]:
        chain = env.await_served(name, mds[name]["cert"][key]["serial"], sigalgs=sig)
        assert key_type(chain[0]) == kt, (name, sig)
        assert verify_chain(chain, root, hostname=name)


# -- 3. dns-01 and wildcards ---------------------------------------------------------------------

def hook_cmd(env: MDEnv, log: Path) -> str:
    return f"{sys.executable} {HOOK} --url {env.pebble.challtestsrv_url} --log {log}"


def test_wildcards_through_dns01(env, tmp_path):
    glog, mdlog = tmp_path / "global.log", tmp_path / "md.log"
    env.write_config(f"""
MDChallengeDns01 {hook_cmd(env, glog)}
MDChallengeDns01Version 2
MDomain wild.test *.wild.test
<MDomain *.star.test>
    MDChallengeDns01 {hook_cmd(env, mdlog)}
</MDomain>
<MDomain fail.test *.fail.test>
    MDChallengeDns01 /bin/false
</MDomain>
<MDomain nodns.test *.nodns.test>
    MDCAChallenges http-01
</MDomain>
""", env.ssl_vhost("wild.test", aliases=["*.wild.test"])
        + env.ssl_vhost("x.star.test", aliases=["*.star.test"], md="*.star.test")
        + env.ssl_vhost("fail.test", aliases=["*.fail.test"])
        + env.ssl_vhost("nodns.test", aliases=["*.nodns.test"]))
    env.start()
    out = env.cli("renew").stdout
    assert "Traceback" not in out
    # Mixed MD: the plain name by http-01 (listed first, port 80 reachable), the wildcard
    # by dns-01 with the global command; version 2 teardown gets the value too.
    log = [e for e in job(env, "wild.test")["log"]["entries"] if e["type"].startswith("message-challenge")]
    assert {e["type"] for e in log} == {"message-challenge-setup:http-01:wild.test",
                                        "message-challenge-setup:dns-01:wild.test"}
    calls = glog.read_text().split("\n")
    setup = [c for c in calls if c.startswith("setup wild.test ")]
    assert len(setup) == 1
    value = setup[0].split()[2]
    assert f"teardown wild.test {value}" in calls
    assert not [c for c in calls if "star.test" in c]
    # Wildcard-only MD: its own command.
    assert mdlog.read_text().startswith("setup star.test ")
    assert env.pebble.query("_acme-challenge.wild.test") == []  # torn down
    assert env.pebble.query("_acme-challenge.star.test") == []
    # A failing command: challenge-setup-failure. No dns-01 at all: said clearly.
    assert last(env, "fail.test")["problem"] == "challenge-setup-failure"
    assert "MDChallengeDns01 setup fail.test exited with 1" in last(env, "fail.test")["detail"]
    assert last(env, "nodns.test")["problem"] == "challenge-mismatch"
    assert "*.nodns.test can only be validated with the dns-01 challenge" \
        in last(env, "nodns.test")["detail"]

    env.cli_ok("activate", "--reload", env.reload_command())
    mds = {m["name"]: m for m in env.status()["managed-domains"]}
    root = env.pebble.root_pem_path.read_text()
    for host, md in [("wild.test", "wild.test"), ("a.wild.test", "wild.test"),
                     ("b.star.test", "*.star.test"), ("x.star.test", "*.star.test")]:
        chain = env.await_served(host, mds[md]["cert"]["rsa"]["serial"])
        assert verify_chain(chain, root, hostname=host), host
    assert sorted(dns_names(chain[0])) == ["*.star.test"]


# -- 4. Challenge selection and the http-01 preflight ------------------------------------------

def test_challenge_selection_and_preflight(env):
    http = env.apache.http_port
    mds = """
<MDomain alpn.test>
    MDCAChallenges tls-alpn-01
</MDomain>
MDomain denied.test
MDomain rewritten.test
"""
    vhosts = (env.ssl_vhost("alpn.test") + env.ssl_vhost("denied.test")
              + env.ssl_vhost("rewritten.test") + f"""
<VirtualHost 127.0.0.1:{http}>
    ServerName denied.test
    <Location /.well-known/acme-challenge/>
        Require all denied
    </Location>
</VirtualHost>
<VirtualHost 127.0.0.1:{http}>
    ServerName rewritten.test
    RewriteEngine on
    RewriteRule ^/\\.well-known/acme-challenge/ /index.html [L]
</VirtualHost>
""")
    env.write_config(mds, vhosts)
    p = env.cli("check")
    assert "10-md.conf:" in p.stderr and "tls-alpn-01 is never used by apache-md" in p.stderr
    assert "alpn.test: alpn.test\n" in p.stdout and "  challenges: none usable\n" in p.stdout
    assert "MD alpn.test: None of the ACME challenge methods" in p.stderr
    env.start()
    env.cli("renew")
    alpn = last(env, "alpn.test")
    assert alpn["problem"] == "challenge-mismatch"
    assert "tls-alpn-01 is not available with apache-md" in alpn["detail"]
    # Our own answer is fetched before the CA is asked: local, precise errors.
    denied = last(env, "denied.test")
    assert denied["problem"] == "challenge-setup-failure"
    assert "checked locally before asking the CA" in denied["detail"]
    assert "http://denied.test/.well-known/acme-challenge/" in denied["detail"]
    assert f"(local port {http}): access denied (403)" in denied["detail"]
    rewritten = last(env, "rewritten.test")["detail"]
    assert "is not answered by apache-md" in rewritten and "RewriteRule" in rewritten
    assert not os.listdir(env.store / "challenges")  # torn down

    # Public port 80 mapped to a port Apache does not listen on: no http-01, and why.
    env.write_config("MDomain other.test\n", env.ssl_vhost("other.test"),
                     extra_globals=f"MDPortMap http:{http + 90}")
    env.cli_ok("activate")  # its include exists, so `apache2 -k stop` can parse the config
    env.cli("renew", "other.test")
    detail = last(env, "other.test")["detail"]
    assert last(env, "other.test")["problem"] == "challenge-mismatch"
    assert f"public port 80 arrives at local port {http + 90} (MDPortMap), but Apache does " \
           f"not listen there (Listen ports: {http}, {env.apache.https_port})" in detail


def test_apache_not_answering_fails_before_the_ca_validates(env, pebble):
    """Issue 10.4: each failed validation counts against the CA's limits (Let's Encrypt:
    5 per account, hostname and hour), so when Apache does not answer at all no
    challenge is answered: the run fails, backs off and says why."""
    counting = FaultProxy(pebble, PORTS["acme_port"] + 30, error_rate=0, rate_limit_rate=0,
                          reset_rate=0, slow_rate=0).start()
    try:
        env.write_config(f"<MDomain down.test>\n  MDCertificateAuthority "
                         f"{counting.directory_url}\n</MDomain>\n", env.ssl_vhost("down.test"))
        env.cli_ok("activate")  # Apache is not started
        p = env.cli("renew", "down.test")
    finally:
        counting.stop()
    assert p.returncode == 1
    why = f"Apache is not answering on port 80 for down.test (local port {env.apache.http_port}"
    assert why in p.stderr
    renewal = env.status("down.test")["renewal"]
    assert why in renewal["last"]["detail"] and renewal["errors"] == 1 and renewal["next-run"]
    paths = [path for _, path in counting.log]
    assert "/order-plz" in paths  # the CA was asked for an order ...
    assert not [x for x in paths if x.startswith("/chalZ/")]  # ... but not to validate


# -- 5. IP address certificates (RFC 8738), 6. must-staple -------------------------------------

def test_ip_address_certificate_and_must_staple(env):
    https = env.apache.https_port
    env.write_config("""
MDomain 127.0.0.1
<MDomain staple.test>
    MDMustStaple on
</MDomain>
""",  # The IP's vhost comes first: without SNI, Apache uses the first one for the address.
                     env.ssl_vhost("127.0.0.1") + env.ssl_vhost("staple.test"))
    env.start()
    out = env.cli("renew").stdout
    assert "Traceback" not in out
    staple_log = [e.get("detail", "") for e in job(env, "staple.test")["log"]["entries"]]
    env.cli_ok("activate", "--reload", env.reload_command())
    mds = {m["name"]: m for m in env.status()["managed-domains"]}
    assert mds["127.0.0.1"]["state"] == 2, out
    chain = env.await_served("127.0.0.1", mds["127.0.0.1"]["cert"]["rsa"]["serial"])
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == []
    # A client that sends no SNI (an IP literal) and verifies the IP SAN.
    r = s_client("127.0.0.1", https, extra=["-noservername"])
    assert r.chain and r.chain[0].serial_number == leaf.serial_number
    assert curl(f"https://127.0.0.1:{https}/", cacert=env.pebble.root_pem_path).status == 200

    # The CSR carries the TLS Feature extension (tests/unit/test_crypto.py); Pebble 2.4
    # accepts it but does not copy it into the certificate, newer Pebbles and real CAs do.
    assert mds["staple.test"]["must-staple"] is True
    staple = env.await_served("staple.test", mds["staple.test"]["cert"]["rsa"]["serial"])[0]
    features = [e.value for e in staple.extensions if isinstance(e.value, x509.TLSFeature)]
    if features:
        assert list(features[0]) == [x509.TLSFeatureType.status_request]
    else:  # and the job says so
        assert any("issued the rsa certificate without the extension" in d for d in staple_log)
    assert not [e for e in leaf.extensions if isinstance(e.value, x509.TLSFeature)]


# -- 6. Network options: proxies ----------------------------------------------------------------

def test_forward_proxies_carry_all_acme_traffic(env, pebble, tmp_path):
    from tests.e2e.mdenv import free_port
    ca = pki.make_ca(tmp_path / "proxy-pki", name="proxy CA")
    leaf = pki.make_leaf(ca, tmp_path / "proxy-pki", names=("127.0.0.1", "localhost"), stem="proxy")
    only_via_proxy = {pebble.PROXY_ONLY_NAME: "127.0.0.1"}
    plain = ForwardProxy(PROXY_PORTS[0], resolve=only_via_proxy)
    tls = ForwardProxy(PROXY_PORTS[1], resolve=only_via_proxy,
                       tls_cert=str(leaf.cert), tls_key=str(leaf.key))
    dead = f"http://127.0.0.1:{free_port()}"
    # The CA's host name resolves nowhere but in the proxies: every byte of ACME goes
    # through one of them, or the renewal fails.
    env.write_config(f"""
MDCertificateAuthority {pebble.proxy_only_directory_url}
MDHttpProxy {plain.url}
MDomain proxied.test
<MDomain tls-proxied.test>
    MDHttpProxy {tls.url}
    MDHttpProxyCACertificateFile {ca.cert}
</MDomain>
<MDomain untrusted.test>
    MDHttpProxy {tls.url}
</MDomain>
<MDomain dead.test>
    MDHttpProxy {dead}
</MDomain>
""", "".join(env.ssl_vhost(n) for n in ["proxied.test", "tls-proxied.test", "untrusted.test",
                                           "dead.test"]))
    env.start()
    with plain, tls:
        out = renew_and_activate(env)
    assert "Traceback" not in out and "internal error" not in out, out
    mds = {m["name"]: m for m in env.status()["managed-domains"]}
    assert mds["proxied.test"]["state"] == mds["tls-proxied.test"]["state"] == 2, out
    target = f"{pebble.PROXY_ONLY_NAME}:{pebble.acme_port}"
    assert plain.connects and set(plain.connects) == {target}
    assert tls.connects and set(tls.connects) == {target}
    assert not plain.refused and not tls.refused
    # An https proxy whose CA is not configured: a TLS error that names the directive.
    untrusted = last(env, "untrusted.test")
    assert "through the proxy https://127.0.0.1" in untrusted["detail"]
    assert "MDHttpProxyCACertificateFile" in untrusted["detail"]
    # A dead proxy: refused, as mod_md says it.
    dead_last = last(env, "dead.test")
    assert dead_last["status-description"] == "Connection refused"
    assert f"through the proxy {dead}" in dead_last["detail"]
    for name in ("proxied.test", "tls-proxied.test"):
        chain = env.await_served(name, mds[name]["cert"]["rsa"]["serial"])
        assert verify_chain(chain, pebble.root_pem_path.read_text(), hostname=name)


def _ipv6_loopback() -> bool:
    import socket
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_address_certificate(env):
    http, https = env.apache.http_port, env.apache.https_port
    env.apache.write_conf("05-ipv6", f"Listen [::1]:{http}\nListen [::1]:{https}\n")
    env.write_config("MDomain [::1]\n", f"""
<VirtualHost [::1]:{https}>
    # httpd refuses `ServerName [::1]` (brackets are a wildcard pattern to it)
    ServerAlias ::1
    SSLEngine on
    Include {env.store}/apache/::1.conf
</VirtualHost>
""")
    env.start()
    out = renew_and_activate(env)
    mds = {m["name"]: m for m in env.status()["managed-domains"]}
    assert mds["::1"]["domains"] == ["::1"] and mds["::1"]["state"] == 2, out
    r = s_client("[::1]", https, extra=["-noservername"])
    san = r.chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["::1"]
    assert format(r.chain[0].serial_number, "X") == mds["::1"]["cert"]["rsa"]["serial"].lstrip("0")


# -- other CA behaviours -------------------------------------------------------------------

def test_a_stricter_ca_with_longer_chains_and_reused_authorizations(env, pebble):
    """Pebble as other CAs behave: -strict (its checks of upcoming RFC 8555 breaking
    changes), a chain of 4 with 2 alternate roots, every authorization reused (the order
    arrives with valid authorizations: nothing to answer), then the same MD renewed."""
    with pebble.configured(strict=True, extra_env={
            "PEBBLE_CHAIN_LENGTH": "4", "PEBBLE_ALTERNATE_ROOTS": "2",
            "PEBBLE_AUTHZREUSE": "100", "PEBBLE_VA_NOSLEEP": "1"}):
        env.write_config("MDomain strict.test", env.ssl_vhost("strict.test"))
        env.start()
        out = renew_and_activate(env)
        first = serial(env, "strict.test")
        chain = env.await_served("strict.test", first)
        assert len(chain) >= 3, out  # leaf and the intermediates of the 4-long chain
        assert dns_names(chain[0]) == ["strict.test"]
        out = renew_and_activate(env, "strict.test", force=True)
        again = serial(env, "strict.test")
        assert again != first, out
        env.await_served("strict.test", again)


def test_a_ca_rejecting_most_nonces(env, pebble):
    """A quarter of all nonces refused (badNonce; Pebble's default is 5%): each is
    retried with the nonce the error carries, and the certificate comes as without. (At
    50% a request failed 8 tries in a row about once in 12 runs: the bounded tries.)"""
    with pebble.configured(extra_env={"PEBBLE_WFE_NONCEREJECT": "25",
                                      "PEBBLE_VA_NOSLEEP": "1"}):
        env.write_config("MDomain nonce.test", env.ssl_vhost("nonce.test"))
        env.start()
        out = renew_and_activate(env)
        env.await_served("nonce.test", serial(env, "nonce.test"))
        assert "badNonce" not in out, out
