"""apache-md against an ACME server that is not Pebble: acme2certifier (PyPI) with
its openssl CA handler, end to end with real Apache: from the config to the served
certificate by http-01 and dns-01, its chain, renewal, md-status. One server for
the module (it starts in a second or two)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import PORTS
from tests.e2e.mdenv import MDEnv
from tests.harness import a2c
from tests.harness.client import curl, dns_names, verify_chain

HOOK = Path(__file__).resolve().parent.parent / "harness" / "dns01_hook.py"


@pytest.fixture(scope="module")
def acme2certifier(pebble):
    if not a2c.installed():
        if os.environ.get("CI"):
            pytest.fail(f"{a2c.VENV} is missing: CI makes it with `make a2c-venv`")
        pytest.skip(f"{a2c.VENV} is missing (run `make a2c-venv`)")
    server = a2c.Acme2Certifier(pebble, PORTS["acme_port"] + 50,
                                http_port=PORTS["http_port"], https_port=PORTS["https_port"])
    with server:
        yield server


@pytest.fixture
def env(apache, pebble, acme2certifier):
    e = MDEnv(apache, pebble)
    e.ca_url = acme2certifier.directory_url
    yield e
    e.stop_workers()


def serial(env: MDEnv, name: str) -> str:
    return env.status(name)["cert"]["rsa"]["serial"]


def test_http01_and_dns01_certificates_renewal_and_status(env, acme2certifier, tmp_path):
    hook = f"{sys.executable} {HOOK} --url {env.pebble.challtestsrv_url} --log {tmp_path / 'dns.log'}"
    env.write_config(f"""
MDomain a2c.test www.a2c.test
<MDomain wild.a2c.test *.wild.a2c.test>
    MDChallengeDns01 {hook}
</MDomain>
""", env.ssl_vhost("a2c.test", aliases=["www.a2c.test"])
        + env.ssl_vhost("wild.a2c.test", aliases=["*.wild.a2c.test"]))
    env.start()
    p = env.cli("renew")
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "Traceback" not in out, out
    env.cli_ok("activate", "--reload", env.reload_command())

    root = acme2certifier.root.cert.read_text()
    for host, md in [("a2c.test", "a2c.test"), ("www.a2c.test", "a2c.test"),
                     ("wild.a2c.test", "wild.a2c.test"), ("x.wild.a2c.test", "wild.a2c.test")]:
        chain = env.await_served(host, serial(env, md))
        assert verify_chain(chain, root, hostname=host), host
    assert sorted(dns_names(chain[0])) == ["*.wild.a2c.test", "wild.a2c.test"]
    assert (tmp_path / "dns.log").read_text().count("setup ") >= 1  # dns-01 was used

    # md-status shows the CA in use, over HTTP too
    st = env.status("a2c.test")
    assert st["ca"]["url"] == acme2certifier.directory_url
    page = json.loads(curl(f"http://a2c.test:{env.apache.http_port}/md-status/a2c.test").body)
    assert page["cert"]["rsa"]["serial"] == st["cert"]["rsa"]["serial"]

    # its renewalInfo (ARI), asked by the worker while no window is reached
    p = env.cli_ok("worker", "--once", "--reload-command", env.reload_command())
    ari = json.loads((env.store / "watch" / "a2c.test" / "ari.json").read_text())
    assert "Traceback" not in p.stdout + p.stderr
    (cert,) = ari["certs"].values()  # its window, and when it was drawn in it
    assert cert["window"]["from"] and cert["selected"], ari

    # renewal by the worker: its certificates last 30 days, a 31-day window is reached
    # (the worker asks its renewalInfo too); a new certificate, served after the reload
    first = serial(env, "a2c.test")
    env.write_config("MDRenewWindow 31d\nMDomain a2c.test www.a2c.test\n",
                     env.ssl_vhost("a2c.test", aliases=["www.a2c.test"]))
    p = env.cli_ok("worker", "--once", "--reload-command", env.reload_command())
    out = p.stdout + p.stderr
    assert "renewal window reached (31d)" in out and "Traceback" not in out, out
    again = serial(env, "a2c.test")
    assert again != first, out
    env.await_served("a2c.test", again)


# acme2certifier's example HMAC (share/skeletons/eab_handler/key_file.json): it wants
# keys longer than 256 bits
HMAC = ("V2VfbmVlZF9hbm90aGVyX3ZlcnkfX2xvbmdfaG1hY190b19jaGVja19lYWJfZm9yX2tleWlkXzAwX2Fz"
        "X2xlZ29fZW5mb3JjZXNfYW5faG1hY19sb25nZXJfdGhhbl8yNTZfYml0cw")


def test_external_account_binding(apache, pebble, acme2certifier, tmp_path):
    """acme2certifier with its JSON EAB handler (a second instance of it): the MD with
    the binding is issued, one without and one with an unknown kid say why."""
    keys = tmp_path / "eab-keys.json"
    keys.write_text(json.dumps({"keyid_00": HMAC}))
    extra = ("\n[EABhandler]\neab_handler_module: acme2certifier.eabhandlers.json_handler\n"
             f"key_file: {keys}\n")
    with a2c.Acme2Certifier(pebble, PORTS["acme_port"] + 51, http_port=PORTS["http_port"],
                            https_port=PORTS["https_port"], extra_config=extra) as server:
        env = MDEnv(apache, pebble)
        env.ca_url = server.directory_url
        env.write_config(f"""
<MDomain eab.a2c.test>
    MDExternalAccountBinding keyid_00 {HMAC}
</MDomain>
MDomain noeab.a2c.test
<MDomain badkid.a2c.test>
    MDExternalAccountBinding keyid_09 {HMAC}
</MDomain>
""", "".join(env.ssl_vhost(n) for n in ("eab.a2c.test", "noeab.a2c.test", "badkid.a2c.test")))
        env.start()
        p = env.cli("renew")
        assert "Traceback" not in p.stdout + p.stderr
        env.cli_ok("activate", "--reload", env.reload_command())
        env.await_served("eab.a2c.test", serial(env, "eab.a2c.test"))

        def last(name):
            return json.loads((env.store / "staging" / name / "job.json").read_text())["last"]
        assert last("noeab.a2c.test")["problem"] == \
            "urn:ietf:params:acme:error:externalAccountRequired"
        assert last("badkid.a2c.test")["problem"] == "urn:ietf:params:acme:error:unauthorized"
