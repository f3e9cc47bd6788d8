"""The stapling upkeep against a real (local) OCSP responder, and what status, the
relay and the generated Apache config make of it."""
from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
import logging
import os
import socket
import textwrap
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from apache_md.apache import includes
from apache_md.apache.config import load_config
from apache_md.ca import stapler
from apache_md.core import ocsp
from apache_md.core.compat import load_pem_x509_certificates
from apache_md.core.plan import decide
from apache_md.notify import Messenger
from apache_md.status import mdstatus, snapshot
from apache_md.store import facts, staples
from apache_md.store.fs import Store
from tests.harness import ForwardProxy, OCSPResponder, pki


def judge(store, md, now, force=False):
    """plan.decide on what the store says about the MD now."""
    return decide(md, facts.read(store, md), now, force)


HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return pki.make_ca(tmp_path_factory.mktemp("ca"), key_kind="ec")


@pytest.fixture
def responder(ca):
    r = OCSPResponder()
    r.add_issuer(ca.certificate, ca.private_key)
    r.start()
    yield r
    r.stop()


def wsgi_module():
    """wsgi/app.py as mod_wsgi loads it: by file path, not as part of the package."""
    path = Path(ocsp.__file__).parent.parent / "wsgi" / "app.py"
    spec = importlib.util.spec_from_file_location("apache_md_wsgi_by_path", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Env:
    """A store with an active certificate for MD a.test and a config that staples it."""

    def __init__(self, tmp: Path, ca, responder: OCSPResponder):
        self.tmp, self.ca, self.responder = tmp, ca, responder
        self.store = Store(tmp / "md")
        self.store.init()
        self.messages = tmp / "messages.log"
        script = tmp / "msg.sh"
        script.write_text(f'#!/bin/sh\necho "$@" >> {self.messages}\n')
        os.chmod(script, 0o755)
        self.msg_cmd = str(script)
        self.stapler = stapler.Stapler()
        self.issue("a.test", responder.url)

    def issue(self, md: str, url: str | None, key_kind: str | None = None,
              file="pubcert.pem"):
        # pubcert.pem is the RSA spec's: another key type would make the MD due
        key_kind = key_kind or ("rsa" if file == "pubcert.pem" else "ec")
        d = self.store.dir("domains", md)
        d.mkdir(parents=True, exist_ok=True)
        leaf = pki.make_leaf(self.ca, self.tmp / md, names=(md,), stem=md, key_kind=key_kind,
                             ocsp_url=url, with_chain=True)
        (d / file).write_bytes(leaf.cert.read_bytes())
        return leaf

    def config(self, extra: str = "", vhosts: str = "", mds: str = "MDomain a.test\n"):
        main = self.tmp / "main.conf"
        main.write_text(textwrap.dedent(f"""\
            LoadModule ssl_module mod_ssl.so
            LoadModule socache_shmcb_module mod_socache_shmcb.so
            Listen 127.0.0.1:8080
            Listen 127.0.0.1:8443
            MDStoreDir {self.store.base}
            MDPortMap http:8080 https:8443
            MDRetryDelay 1s
            MDMessageCmd {self.msg_cmd}
            MDStapling on
            """) + extra + mds + textwrap.dedent("""\
            <VirtualHost 127.0.0.1:8443>
                ServerName a.test
                SSLEngine on
            </VirtualHost>
            """) + vhosts)
        cfg = load_config(str(main), server_root=str(self.tmp), env={})
        assert not cfg.errors, cfg.errors
        return cfg

    def run(self, cfg, now=None):
        messenger = Messenger(cfg.settings.message_cmd, None, str(self.store.base))
        return self.stapler.run(self.store, cfg, messenger, now)

    def stored(self, md: str, cert_file: Path | None = None):
        files = sorted(self.store.dir("ocsp", md).glob("ocsp-*.json"))
        return [json.loads(f.read_text()) for f in files]

    def job(self, md: str = "a.test") -> dict:
        return json.loads(self.store.path("ocsp", md, "job.json").read_text())

    def message_lines(self) -> list[str]:
        return self.messages.read_text().splitlines() if self.messages.exists() else []


@pytest.fixture
def env(tmp_path, ca, responder):
    return Env(tmp_path, ca, responder)


def now():
    return dt.datetime.now(dt.timezone.utc)


def test_fetches_stores_and_waits_for_the_renew_window(env):
    cfg = env.config()
    report = env.run(cfg)
    assert report.renewed == ["a.test: rsa"] and not report.failed
    (obj,) = env.stored("a.test")
    assert obj["status"] == "good" and set(obj) == {"response", "status", "valid"}
    cert_pem = env.store.path("domains", "a.test", "pubcert.pem").read_bytes()
    leaf = load_pem_x509_certificates(cert_pem)[0]
    assert env.store.exists("ocsp", "a.test", f"ocsp-{ocsp.cert_id(leaf)}.json")
    job = env.job()
    assert job["finished"] and job["errors"] == 0
    assert [e["type"] for e in job["log"]["entries"]][:2] == ["message-ocsp-renewed", "finished"]
    assert env.message_lines() == ["ocsp-renewed a.test"]
    # Next look: when 33% of the hour is left, i.e. ~40 minutes from now.
    left = (report.wake - now()).total_seconds()
    assert 39 * 60 < left < 41 * 60
    asked = len(env.responder.requests)
    env.run(cfg)
    assert len(env.responder.requests) == asked  # not due: nobody is asked
    env.run(cfg, now=now() + dt.timedelta(minutes=45))
    assert len(env.responder.requests) == asked + 1
    assert env.message_lines() == ["ocsp-renewed a.test"]  # at most daily


def test_bad_answers_back_off_and_keep_the_stored_response(env):
    cfg = env.config()
    env.run(cfg)
    before = env.stored("a.test")
    later = now() + dt.timedelta(minutes=45)
    for mode, problem in [("bad-signature", "signature does not verify"),
                          ("garbage", "not an OCSP response"),
                          ("http-500", "HTTP 500"), ("try-later", "try_later")]:
        env.responder.mode = mode
        env.store.remove("ocsp", "a.test", "job.json")  # no backoff between the cases
        report = env.run(cfg, now=later)
        assert report.failed == ["a.test: rsa"]
        assert env.stored("a.test") == before, mode  # never replaced by a bad one
        job = env.job()
        assert job["errors"] == 1 and problem in job["last"]["detail"], job["last"]
        assert job["log"]["entries"][1]["type"] == "ocsp-error"
        assert report.wake.replace(microsecond=0) == parsedate_to_datetime(job["next-run"])
    assert "ocsp-errored a.test" in env.message_lines()
    # backoff: asked again only after next-run
    asked = len(env.responder.requests)
    env.run(cfg, now=later)
    assert len(env.responder.requests) == asked
    env.responder.mode = "good"
    env.run(cfg, now=later + dt.timedelta(seconds=5))
    assert len(env.responder.requests) == asked + 1 and env.job()["errors"] == 0


def test_responder_down_is_an_error_with_backoff(env):
    cfg = env.config()
    env.responder.stop()
    report = env.run(cfg)
    assert report.failed and env.stored("a.test") == []
    job = env.job()
    assert job["last"]["problem"] == stapler.PROBLEM_UNREACHABLE
    assert job["next-run"]
    env.responder.start()  # same port
    report = env.run(cfg, now=now() + dt.timedelta(seconds=5))
    assert report.renewed and env.job()["errors"] == 0


def test_revoked_renews_the_md(env):
    cfg = env.config()
    md = cfg.md_by_name("a.test")
    env.run(cfg)
    assert not judge(env.store, md, now()).drive
    env.responder.mode = "revoked"
    later = now() + dt.timedelta(minutes=45)
    report = env.run(cfg, now=later)
    assert report.revoked == ["a.test"] and report.wake <= later
    d = judge(env.store, md, now())
    assert d.drive and d.reason == "certificate revoked (rsa, OCSP)"
    # Known already: the next pass does not wake the worker at once again.
    assert env.run(cfg, now=now() + dt.timedelta(minutes=90)).revoked == []
    # MDStapling off: OCSP is not consulted (mod_md md_reg_has_revoked_certs)
    md.stapling = False
    assert not judge(env.store, md, now()).drive


def test_certificates_without_responder_url_are_skipped_and_logged_once(env, caplog):
    env.issue("a.test", None)
    cfg = env.config()
    with caplog.at_level(logging.INFO, logger="apache_md.ca.stapler"):
        env.run(cfg)
        env.run(cfg)
    told = [r for r in caplog.records if "no OCSP responder URL" in r.getMessage()]
    assert len(told) == 1 and "a.test" in told[0].getMessage()
    assert env.responder.requests == [] and not env.store.exists("ocsp", "a.test", "job.json")
    st = mdstatus.md_status(env.store, cfg.md_by_name("a.test"), settings=cfg.settings)
    assert "ocsp" not in st["cert"]["rsa"]


def test_through_md_http_proxy(env):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the responder's name is known to the proxy only
    proxy = ForwardProxy(port, resolve={"ocsp.invalid": "127.0.0.1"}).start()
    try:
        env.issue("a.test", f"http://ocsp.invalid:{env.responder.port}/")
        cfg = env.config(extra=f"MDHttpProxy {proxy.url}\n")
        report = env.run(cfg)
        assert report.renewed, env.job()
        assert proxy.requests == [f"POST http://ocsp.invalid:{env.responder.port}/"]
    finally:
        proxy.stop()


def test_other_certificates_with_md_staple_others(env):
    other = pki.make_leaf(env.ca, env.tmp / "o", names=("other.test",), stem="o", key_kind="ec",
                          ocsp_url=env.responder.url, with_chain=True)
    quiet = pki.make_leaf(env.ca, env.tmp / "q", names=("quiet.test",), stem="q", key_kind="ec",
                          ocsp_url=env.responder.url, with_chain=True)
    vhosts = (f"<VirtualHost 127.0.0.1:8443>\n ServerName other.test\n SSLEngine on\n"
              f" SSLCertificateFile {other.cert}\n SSLCertificateKeyFile {other.key}\n"
              "</VirtualHost>\n"
              f"<VirtualHost 127.0.0.1:8443>\n ServerName quiet.test\n SSLEngine on\n"
              f" MDStapling off\n SSLCertificateFile {quiet.cert}\n"
              f" SSLCertificateKeyFile {quiet.key}\n</VirtualHost>\n")
    cfg = env.config(vhosts=vhosts)
    report = env.run(cfg)
    assert sorted(report.renewed) == ["a.test: rsa", f"other: {other.cert}"]
    assert env.store.exists("ocsp", "other", f"ocsp-{ocsp.cert_id(other.certificate)}.json")
    assert not env.store.exists("ocsp", "other", f"ocsp-{ocsp.cert_id(quiet.certificate)}.json")
    assert "ocsp-renewed other" in env.message_lines()
    # the generated config staples them at server level; the MD's include says so itself
    g = includes.global_conf(cfg)
    assert "SSLStaplingCache shmcb" in g and "SSLUseStapling on" in g
    assert f"SSLStaplingForceURL http://127.0.0.1:8080{includes.RELAY_PATH}" in g
    assert "SSLUseStapling on" in includes.md_stapling(cfg, cfg.md_by_name("a.test"), False)
    cfg = env.config(extra="MDStapleOthers off\n", vhosts=vhosts)
    assert [t.md for t in staples.targets(env.store, cfg)] == ["a.test"]
    assert "SSLUseStapling" not in includes.global_conf(cfg)


def test_old_unused_responses_are_removed_after_keep_response(env):
    cfg = env.config(extra="MDStaplingKeepResponse 1d\n")
    env.run(cfg)
    d = env.store.dir("ocsp", "a.test")
    in_use = next(d.glob("ocsp-*.json"))
    old = d / ("ocsp-" + "0" * 40 + ".json")
    young = d / ("ocsp-" + "1" * 40 + ".json")
    for f in (old, young):
        f.write_text("{}")
    past = time.time() - 2 * 86400
    os.utime(old, (past, past))
    os.utime(in_use, (past, past))
    staples.cleanup(env.store, cfg.settings.stapling_keep_response,
                     {("a.test", in_use.name)}, now())
    assert not old.exists() and young.exists() and in_use.exists()


def test_status_snapshot_and_relay(env):
    cfg = env.config()
    env.run(cfg)
    md = cfg.md_by_name("a.test")
    full = mdstatus.md_status(env.store, md, settings=cfg.settings)
    o = full["cert"]["rsa"]["ocsp"]
    assert o["status"] == "good" and set(o["valid"]) == {"from", "until"}
    assert o["responder"] == env.responder.url and o["fetched"] and o["refresh-at"]
    assert o["renewal"]["errors"] == 0 and o["renewal"]["log"]["entries"]
    snap = snapshot.snapshot(env.store, cfg)
    listed = snap["list"]["managed-domains"][0]["cert"]["rsa"]["ocsp"]
    assert "log" not in listed["renewal"]
    assert "log" in snap["mds"]["a.test"]["cert"]["rsa"]["ocsp"]["renewal"]
    (row,) = snap["staplings"]
    assert row["md"] == "a.test" and row["status"] == "good" and row["errors"] == 0
    # metrics and the page show the response's age and the next refresh
    text = snap["bodies"]["metrics"]
    assert 'apache_md_ocsp_status{md="a.test",certificate="rsa",status="good"} 1' in text
    for name in ("this_update", "valid_until", "refresh_at"):
        assert f'apache_md_ocsp_{name}_timestamp_seconds{{md="a.test",certificate="rsa"}}' in text
    assert 'apache_md_ocsp_errors{md="a.test"} 0' in text
    page = snap["bodies"]["html:a.test"]
    assert "<h2>OCSP stapling</h2>" in page and '<td data-label="Status">good</td>' in page
    snapshot.write_snapshot(env.store, cfg)

    app = wsgi_module().application
    leaf_chain = env.store.path("domains", "a.test", "pubcert.pem").read_bytes()
    leaf, issuer = load_pem_x509_certificates(leaf_chain)[:2]

    def post(body: bytes, method="POST"):
        out = {}
        def start_response(status_line, headers):
            out["status"], out["headers"] = status_line, dict(headers)
        environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": includes.RELAY_PATH,
                   "PATH_INFO": "", "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "APACHE_MD_STORE": str(env.store.base)}
        return out, b"".join(app(environ, start_response))

    out, body = post(ocsp.build_request(leaf, issuer))
    assert out["status"] == "200 OK"
    assert out["headers"]["Content-Type"] == "application/ocsp-response"
    stored = ocsp.from_json(env.stored("a.test")[0])
    assert body == stored.der
    other = pki.make_leaf(env.ca, env.tmp / "x", names=("x.test",), stem="x", key_kind="ec")
    _, body = post(ocsp.build_request(other.certificate, issuer))
    assert body == bytes.fromhex("30030a0106")  # unauthorized: not ours
    _, body = post(b"junk")
    assert body == bytes.fromhex("30030a0101")  # malformedRequest
    out, _ = post(b"", method="GET")
    assert out["status"].startswith("405")


@pytest.mark.parametrize("listen,url,own_vhost", [
    ("Listen 8080", "http://127.0.0.2:8080", True),
    ("Listen *:8080", "http://127.0.0.2:8080", True),
    ("Listen 0.0.0.0:8080", "http://127.0.0.2:8080", True),
    ("Listen [::]:8080", "http://[::1]:8080", False),
    ("Listen 192.0.2.7:8080", "http://192.0.2.7:8080", False),
])
def test_relay_url_is_on_an_own_http_port(tmp_path, listen, url, own_vhost):
    main = tmp_path / "main.conf"
    main.write_text(f"LoadModule ssl_module x.so\nLoadModule socache_shmcb_module y.so\n"
                    f"{listen}\nListen 8443\nMDPortMap http:8080 https:8443\nMDStapling on\n"
                    "MDomain a.test\n"
                    "<VirtualHost *:8443>\nServerName a.test\nSSLEngine on\n</VirtualHost>\n")
    cfg = load_config(str(main), server_root=str(tmp_path), env={})
    assert includes.relay_url(cfg) == url + includes.RELAY_PATH
    g = includes.global_conf(cfg)
    assert ("<VirtualHost 127.0.0.2:8080>" in g) == own_vhost


def test_no_handshake_stapling_without_cache_module_or_http_port(env):
    cfg = env.config()
    md = cfg.md_by_name("a.test")
    assert includes.stapling_problem(cfg) is None
    # the fallback is not stapled (explicitly off: the server level staples others)
    assert includes.md_stapling(cfg, md, fallback=True) == "SSLUseStapling off\n"
    # nothing to fetch for certificates without an OCSP URL: mod_ssl is not sent to the relay
    assert includes.md_stapling(cfg, md, False, has_responder=False) == "SSLUseStapling off\n"
    assert "SSLStaplingForceURL" in includes.md_stapling(cfg, md, False)
    cfg.modules.discard("socache_shmcb_module")
    assert "socache_shmcb" in includes.stapling_problem(cfg)
    assert includes.md_stapling(cfg, md, False) == "" and includes.global_stapling(cfg) == ""
    cfg.modules.add("socache_shmcb_module")
    cfg.listen_ports = [8443]
    assert "no plain-http Listen port" in includes.stapling_problem(cfg)


def test_keys_of_other_types_and_serial_format(env):
    leaf = env.issue("a.test", env.responder.url, key_kind="ec", file="pubcert.secp256r1.pem")
    cfg = env.config(mds="<MDomain a.test>\nMDPrivateKeys rsa secp256r1\n</MDomain>\n")
    report = env.run(cfg)
    assert sorted(report.renewed) == ["a.test: rsa", "a.test: secp256r1"]
    idx = staples.relay_index(staples.targets(env.store, cfg))
    assert f"{leaf.certificate.serial_number:x}" in " ".join(idx)
    assert all(v.startswith("a.test/ocsp-") for v in idx.values())


def test_relay_reads_mod_ssl_s_request(ca, tmp_path):
    """The relay (wsgi/app.py, no package imports) finds the same key the worker indexes."""
    relay_key = wsgi_module().relay_key
    leaf = pki.make_leaf(ca, tmp_path, names=("a.test",), stem="a", key_kind="ec")
    want = ocsp.relay_key(ocsp.key_hash(ca.certificate), leaf.certificate.serial_number)
    assert relay_key(ocsp.build_request(leaf.certificate, ca.certificate)) == want
    assert relay_key(ocsp.build_request(leaf.certificate, ca.certificate, b"n" * 16)) == want
    with pytest.raises((ValueError, IndexError)):
        relay_key(b"\x30\x03\x02\x01")
