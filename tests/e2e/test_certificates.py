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

from tests.conftest import PROXY_PORTS
from tests.e2e.mdenv import MDEnv
from tests.harness import ForwardProxy, default_eab, pki
from tests.harness.client import curl, dns_names, key_type, s_client, s_client_cert, verify_chain

HOOK = Path(__file__).resolve().parent.parent / "harness" / "dns01_hook.py"


@pytest.fixture
def env(apache, pebble):
    e = MDEnv(apache, pebble)
    yield e
    e.stop_workers()


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
