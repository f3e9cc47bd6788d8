"""Issue 6 in a private Apache: generated config, activation, rollback, privilege
split, and taking over a store written by Debian's real mod_md."""
from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time

import pytest

from tests.e2e.mdenv import MDEnv
from tests.harness.client import curl, s_client_cert


def http_vhost(env: MDEnv, name: str) -> str:
    return (f"<VirtualHost 127.0.0.1:{env.apache.http_port}>\n    ServerName {name}\n"
            "</VirtualHost>\n")


def serial_of(env: MDEnv, name: str) -> str:
    return format(s_client_cert("127.0.0.1", env.apache.https_port, name)[0].serial_number, "X")


@pytest.mark.parametrize("mode,get_code,post_code,hsts", [
    ("temporary", 302, 307, False), ("permanent", 301, 308, True)])
def test_require_https_redirects_and_hsts(env, mode, get_code, post_code, hsts):
    env.write_config(f"<MDomain one.test>\n    MDRequireHttps {mode}\n</MDomain>\n",
                     http_vhost(env, "one.test") + env.ssl_vhost("one.test"))
    env.start()
    env.cli_ok("renew", "one.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    port, sport = env.apache.http_port, env.apache.https_port
    r = curl(f"http://one.test:{port}/some/page?x=1")
    assert r.status == get_code
    assert r.headers["location"] == "https://one.test/some/page?x=1"
    assert curl(f"http://one.test:{port}/form", method="POST", data="a=b").status == post_code
    # ACME challenges are never redirected
    assert curl(f"http://one.test:{port}/.well-known/acme-challenge/x").status == 404
    # other hosts are left alone
    env.apache.write_doc("index.html", "hello")
    assert curl(f"http://other.test:{port}/").status == 200
    r = curl(f"https://one.test:{sport}/", cacert=env.pebble.root_pem_path)
    assert r.status == 200
    assert ("strict-transport-security" in r.headers) == hsts
    if hsts:
        assert r.headers["strict-transport-security"] == "max-age=15768000"
    rc, out = env.apache.configtest()
    assert rc == 0, out


def test_hsts_set_by_the_admin_wins(env):
    env.write_config("<MDomain one.test>\n    MDRequireHttps permanent\n</MDomain>\n",
                     env.ssl_vhost("one.test", extra='    Header always set '
                                   'Strict-Transport-Security "max-age=42"\n'))
    env.start()
    env.cli_ok("renew", "one.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    r = curl(f"https://one.test:{env.apache.https_port}/", cacert=env.pebble.root_pem_path)
    assert r.headers["strict-transport-security"] == "max-age=42"


def test_worker_activates_a_renewal_by_itself(env):
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    env.start()
    worker = env.start_worker()
    first = env.await_state(["one.test"])["one.test"]["cert"]["rsa"]["serial"]
    env.await_served("one.test", first)
    env.cli_ok("renew", "--force", "one.test")  # staged, e.g. by an admin or another node
    worker.send_signal(signal.SIGHUP)  # else within a minute
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        serial = env.status("one.test")["cert"]["rsa"]["serial"]
        if serial != first:
            break
        time.sleep(0.3)
    assert serial != first
    env.await_served("one.test", serial)
    assert not (env.store / "staging" / "one.test").exists()
    assert list((env.store / "archive").glob("one.test.*"))


def test_a_refused_reload_rolls_back(env):
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    env.start()
    env.cli_ok("renew", "one.test")
    env.cli_ok("activate", "--reload", env.reload_command())
    good = env.status("one.test")["cert"]["rsa"]["serial"]
    env.cli_ok("renew", "--force", "one.test")
    p = env.cli("activate", "--reload", "/bin/false")
    assert p.returncode == 1
    assert "previous certificates restored" in p.stderr
    md = env.status("one.test")
    assert md["cert"]["rsa"]["serial"] == good
    assert md["renewal"]["last"]["problem"] == "apache-md:activation-failed"
    env.apache.graceful()
    env.await_served("one.test", good)
    assert list((env.store / "archive").glob("one.test.rejected.*"))


def test_activation_waits_for_its_window(env):
    now = time.localtime()
    start = (now.tm_hour * 60 + now.tm_min + 120) % 1440
    window = f"{start // 60:02d}:{start % 60:02d}-{(start + 60) // 60 % 24:02d}:{start % 60:02d}"
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"),
                     extra_globals=f"MDActivationWindow {window}")
    env.start()
    env.cli_ok("renew", "one.test")
    p = env.cli_ok("activate", "--respect-window", "--reload", env.reload_command())
    assert "outside the activation window" in p.stdout
    assert (env.store / "staging" / "one.test" / "pubcert.pem").exists()
    p = env.cli_ok("activate", "--reload", env.reload_command())  # an admin's explicit command
    assert "one.test: activated" in p.stdout


def test_privilege_split(env, pebble):
    """The worker runs as the store's owner; the handlers (Apache's children) cannot read keys."""
    user = "apache-md-test"
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", user], check=True)
    pw = pwd.getpwnam(user)
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    env.cli_ok("activate")
    for root, dirs, files in os.walk(env.store):
        for n in dirs + files + [""]:
            os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
    env.apache.start()
    # run by root, but renews as the store owner
    env.cli_ok("renew", "one.test")
    job = env.store / "staging" / "one.test" / "job.json"
    assert os.stat(job).st_uid == pw.pw_uid
    env.cli_ok("activate", "--reload", env.reload_command())
    key = env.store / "domains" / "one.test" / "privkey.pem"
    assert os.stat(key).st_uid == pw.pw_uid and oct(os.stat(key).st_mode & 0o777) == "0o600"
    serial = env.status("one.test")["cert"]["rsa"]["serial"]
    env.await_served("one.test", serial)
    # www-data (Apache's children, where the handlers run) cannot read a private key
    p = subprocess.run(["runuser", "-u", "www-data", "--", "cat", str(key)], capture_output=True)
    assert p.returncode != 0
    p = subprocess.run(["runuser", "-u", "www-data", "--", "cat",
                        str(env.store / "status" / "snapshot" / "status.json")],
                       capture_output=True)
    assert p.returncode == 0


MOD_MD_SITE = """
LoadModule md_module /usr/lib/apache2/modules/mod_md.so
MDCertificateAuthority {dir}
MDCACertificateFile {bundle}
MDCertificateAgreement accepted
MDContactEmail admin@example.test
MDPortMap http:{http} https:{https}
MDStoreDir {store}
MDRetryDelay 1s
MDomain one.test
<VirtualHost 127.0.0.1:{https}>
    ServerName one.test
    SSLEngine on
</VirtualHost>
<Location /mod-md-status>
    SetHandler md-status
</Location>
"""


def test_takes_over_a_store_written_by_debian_mod_md(env, pebble):
    a = env.apache
    a.write_conf("10-md", MOD_MD_SITE.format(dir=pebble.directory_url, bundle=pebble.ca_bundle,
                                             http=a.http_port, https=a.https_port,
                                             store=env.store))
    a.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = curl(f"http://localhost:{a.http_port}/mod-md-status/one.test").json()
        if st.get("renewal", {}).get("finished"):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"mod_md did not obtain a certificate: {json.dumps(st)[:2000]}")
    a.restart()  # mod_md activates staged certificates at a restart
    mod_md_serial = serial_of(env, "one.test")
    a.stop()
    orders_before = pebble_orders(pebble)

    # Switch: no mod_md, the MD directives inside <IfModule md_module>, our include.
    a.remove_conf("10-md")
    env.write_config("MDomain one.test\n", env.ssl_vhost("one.test"))
    p = env.cli_ok("renew", "one.test")
    assert "renewed" not in p.stdout
    assert env.status("one.test")["state"] == 2
    env.start()
    assert serial_of(env, "one.test") == mod_md_serial
    assert pebble_orders(pebble) == orders_before


def pebble_orders(pebble) -> int:
    """Orders Pebble has received so far (its log names every new one)."""
    return pebble.pebble_log.read_text().count("Added order")
