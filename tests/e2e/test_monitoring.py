"""Issue 3 end to end: md-status, certificate-status, the HTML page and metrics.

One Apache with MDs in every state, made once for the module with real Pebble:
  new.test              no certificate yet (MDRenewMode manual: nobody drives it)
  active.test           certificate active
  staged.test           certificate active and a renewed set staged (two key types)
  blocked-domain.example  renewal failed (Pebble refuses the name)
  *.wild.test           wildcard MD, manual, for DNS-name lookups
and a vhost plain.test that no MD covers.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.e2e import mdstatus_ref as ref
from tests.e2e.mdenv import MDEnv
from tests.harness import Apache
from tests.harness.browser import chromium_path, decode_png, screenshot
from tests.harness.client import curl, parse_pem_chain

MDS = """
<MDomain new.test>
    MDRenewMode manual
</MDomain>
MDomain active.test www.active.test
<MDomain staged.test>
    MDPrivateKeys secp256r1 rsa2048
</MDomain>
MDomain blocked-domain.example
<MDomain *.wild.test>
    MDRenewMode manual
</MDomain>
"""
NAMES = ["*.wild.test", "active.test", "blocked-domain.example", "new.test", "staged.test"]
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
BROWSER_ACCEPT = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                  "image/webp,*/*;q=0.8")


class Scenario:
    def __init__(self, env: MDEnv):
        self.env = env
        self.http = f"http://127.0.0.1:{env.apache.http_port}"

    def get(self, path: str, host: str = "localhost", **kw):
        port = self.env.apache.http_port
        return curl(f"http://{host}:{port}{path}", **kw)

    def https_get(self, path: str, host: str, **kw):
        port = self.env.apache.https_port
        return curl(f"https://{host}:{port}{path}", insecure=True, **kw)

    def status(self, name: str = "") -> dict:
        r = self.get(f"/md-status/{name}" if name else "/md-status")
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        ref.assert_mod_md_json_text(r.body)
        return r.json()

    def chain(self, group: str, md: str, key_type: str):
        fname = "pubcert.pem" if key_type == "rsa" else f"pubcert.{key_type}.pem"
        return parse_pem_chain((self.env.store / group / md / fname).read_bytes())


@pytest.fixture(scope="module")
def scenario(pebble):
    apache = Apache(http_port=pebble.http_port, https_port=pebble.https_port)
    env = MDEnv(apache, pebble)
    vhosts = "".join(env.ssl_vhost(n, aliases=a, md=m) for n, a, m in [
        ("new.test", (), None), ("active.test", ["www.active.test"], None),
        ("staged.test", (), None), ("blocked-domain.example", (), None)])
    # (no vhost for *.wild.test: Apache would read "Include .../*.wild.test.conf" as a glob)
    vhosts += (f"<VirtualHost 127.0.0.1:{apache.https_port}>\n    ServerName plain.test\n"
               f"    SSLEngine on\n    SSLCertificateFile {pebble.tls_leaf.cert}\n"
               f"    SSLCertificateKeyFile {pebble.tls_leaf.key}\n</VirtualHost>\n")
    try:
        env.write_config(MDS, vhosts)
        env.start()
        env.cli_ok("renew", "active.test", "staged.test")
        env.cli_ok("activate", "--reload", env.reload_command())
        env.cli_ok("renew", "--force", "staged.test")  # a second set, staged
        failed = env.cli("renew", "blocked-domain.example")
        assert failed.returncode == 1 and "Traceback" not in failed.stdout + failed.stderr
        yield Scenario(env)
    finally:
        env.stop_workers()
        apache.stop()
        import shutil
        shutil.rmtree(apache.root, ignore_errors=True)


# -- md-status JSON ------------------------------------------------------------------------
def test_list_is_mod_md_json_for_every_state(scenario):
    top = scenario.status()
    assert list(top) == ["version", "managed-domains"]
    assert isinstance(top["version"], str) and top["version"]
    mds = top["managed-domains"]
    assert [m["name"] for m in mds] == NAMES  # sorted by strcmp
    for md in mds:
        ref.check_md(md, with_log=False)
    by = {m["name"]: m for m in mds}

    new = by["new.test"]
    assert (new["state"], new["cert"], new["renew-mode"]) == (1, {}, 0)
    assert new["state-descr"] == "certificate(rsa) is missing"
    assert new["renew"] is True and "renewal" not in new
    assert new["activation"]["state"] == "pending"

    active = by["active.test"]
    assert active["state"] == 2 and "state-descr" not in active
    assert active["domains"] == ["active.test", "www.active.test"]
    assert set(active["cert"]) == {"rsa", "valid"}
    ref.check_cert_values(active["cert"]["rsa"], scenario.chain("domains", "active.test", "rsa")[0])
    assert active["cert"]["valid"] == active["cert"]["rsa"]["valid"]
    assert "renew" not in active and "renewal" not in active
    assert active["ca"]["url"] == scenario.env.pebble.directory_url
    assert active["ca"]["account"].startswith("ACME-localhost-")
    assert active["activation"] == {"state": "active",
                                    "detail": "Apache serves the certificate from the CA"}
    assert "last-renewal" in active and "next-check" not in active  # no worker runs

    staged = by["staged.test"]
    assert staged["state"] == 2 and set(staged["cert"]) == {"secp256r1", "rsa", "valid"}
    assert staged["privkey"] == [{"type": "EC", "curve": "secp256r1"},
                                 {"type": "RSA", "bits": 2048}]
    renewal = staged["renewal"]
    assert renewal["finished"] is True and renewal["errors"] == 0
    assert set(renewal["cert"]) == {"secp256r1", "rsa", "valid"}
    for kt in ("secp256r1", "rsa"):
        ref.check_cert_values(staged["cert"][kt], scenario.chain("domains", "staged.test", kt)[0])
        ref.check_cert_values(renewal["cert"][kt], scenario.chain("staging", "staged.test", kt)[0])
        assert renewal["cert"][kt]["serial"] != staged["cert"][kt]["serial"]
    assert staged["renew"] is True
    assert staged["activation"]["state"] == "staged"
    assert staged["activation"]["detail"].startswith("staged, waiting for activation: ")
    assert renewal["ca-url"] == scenario.env.pebble.directory_url

    blocked = by["blocked-domain.example"]
    assert blocked["state"] == 1 and blocked["cert"] == {}
    assert blocked["renewal"]["errors"] == 1 and blocked["renewal"]["finished"] is False
    assert blocked["renewal"]["cert"] == {}
    last = blocked["renewal"]["last"]
    assert last["problem"] == "urn:ietf:params:acme:error:rejectedIdentifier"
    assert last["status"] > 0 and last["detail"]
    ref.check_ts(blocked["renewal"]["next-run"], "next-run")

    wild = by["*.wild.test"]
    assert wild["domains"] == ["*.wild.test"] and wild["state"] == 1


def test_one_md_carries_its_log_newest_first(scenario):
    for name in NAMES:
        md = scenario.status(name)
        assert md["name"] == name
        ref.check_md(md, with_log="renewal" in md)
    staged = scenario.status("staged.test")["renewal"]["log"]["entries"]
    types = [e["type"] for e in staged]
    assert types[0] in ("finished", "message-renewed")
    assert types[-1] in ("message-renewing", "starting")
    assert "finished" in types and "starting" in types
    blocked = scenario.status("blocked-domain.example")["renewal"]["log"]["entries"]
    err = next(e for e in blocked if e["type"] == "renewal-error")
    assert err["status"] == "urn:ietf:params:acme:error:rejectedIdentifier"


def test_names_paths_and_methods(scenario):
    full = scenario.status()
    by_dns = scenario.status("www.active.test")
    assert by_dns["name"] == "active.test" and "cert" in by_dns
    assert scenario.status("a/b/active.test")["name"] == "active.test"  # the last segment
    assert scenario.status("host.wild.test")["name"] == "*.wild.test"  # wildcard-aware
    assert scenario.status("unknown.test") == full  # unknown: the list, not a 404
    assert scenario.status("deep/unknown.test") == full
    assert scenario.get("/md-status/").json() == full
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/md-status", "/md-status/active.test", "/md-status/metrics"):
            r = scenario.get(path, method=method, data="x")
            assert r.status == 501, f"{method} {path}: {r.status}"
    head = scenario.get("/md-status", extra=["--head"])
    assert head.status == 200 and "{" not in head.body  # curl --head: headers only
    assert head.headers["content-type"] == "application/json"


def test_one_md_is_served_by_apache_itself_with_the_handlers_bytes(scenario):
    """A plain GET of /md-status/<MD name> is the snapshot's one/ file, served by Apache
    (mod_rewrite + mod_headers, which the test Apache loads); anything else is the
    handler's. Both answer the same bytes and the headers that matter."""
    wsgi_accept = {"Accept": "application/json, text/plain;q=0.1"}  # negotiated: the handler
    for name in NAMES:
        static = scenario.get(f"/md-status/{name}")
        for handler in (scenario.get(f"/md-status/{name}", headers=wsgi_accept),
                        scenario.get(f"/md-status/{name}?format=json")):
            assert handler.status == static.status == 200
            assert handler.body == static.body, name
            for h in ("content-type", "vary", "content-length"):
                assert handler.headers[h] == static.headers[h], (name, h)
            assert "accept-ranges" not in handler.headers  # mod_wsgi's answer
        assert static.headers.get("accept-ranges") == "bytes", name  # Apache's file
        assert "last-modified" not in static.headers and "etag" not in static.headers
        head = scenario.get(f"/md-status/{name}", extra=["--head"])
        assert head.status == 200 and "{" not in head.body  # curl --head: headers only
        assert head.headers["content-length"] == static.headers["content-length"]
    html = scenario.get("/md-status/active.test", headers={"Accept": BROWSER_ACCEPT})
    assert html.headers["content-type"].startswith("text/html")  # negotiation: the handler
    # no file for a name that is not an MD's: the handler's list, as mod_md answers
    assert scenario.get("/md-status/www.active.test").json()["name"] == "active.test"
    assert scenario.get("/md-status/unknown.test").json() == scenario.status()


def test_cli_json_is_the_md_status_json(scenario):
    env = scenario.env
    # A complete MD does not depend on the clock: byte for byte the same.
    assert env.cli_ok("status", "--json", "active.test").stdout.rstrip("\n") == \
        scenario.get("/md-status/active.test").body
    assert env.cli_ok("status", "--json", "www.active.test").stdout.rstrip("\n") == \
        scenario.get("/md-status/active.test").body
    cli = json.loads(env.cli_ok("status", "--json").stdout)
    http = scenario.status()
    for md in cli["managed-domains"] + http["managed-domains"]:
        if md["state"] == 1:
            md.pop("renew-at")  # "now" for an incomplete MD, so it moves with the clock
    assert cli == http
    table = env.cli_ok("status").stdout
    for name in NAMES:
        assert name in table
    assert "staged, waiting for activation" in table
    assert "rejectedIdentifier" in table
    assert "No apache-md worker is running" in table
    detail = env.cli_ok("status", "staged.test").stdout
    assert "staged secp256r1" in detail and "renewal log (newest first)" in detail


# -- certificate-status -------------------------------------------------------------------
def test_certificate_status_on_every_md_host(scenario):
    for get in (scenario.get, scenario.https_get):
        r = get("/.httpd/certificate-status", host="www.active.test")
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        ref.assert_mod_md_json_text(r.body)
        cs = r.json()
        md = scenario.status("active.test")
        assert list(cs) == ["valid", "rsa"]
        assert cs["valid"] == md["cert"]["valid"]
        assert cs["rsa"] == {k: md["cert"]["rsa"][k]
                             for k in ("valid", "serial", "sha256-fingerprint")}

    cs = scenario.get("/.httpd/certificate-status", host="staged.test").json()
    md = scenario.status("staged.test")
    assert list(cs) == ["valid", "secp256r1", "rsa", "renewal"]
    assert list(cs["secp256r1"]) == ["valid", "serial", "sha256-fingerprint"]
    assert cs["renewal"] == {"cert": md["renewal"]["cert"]}  # unfiltered, as mod_md
    assert set(cs["renewal"]["cert"]["rsa"]) >= {"issuer-name", "valid", "serial",
                                                 "sha256-fingerprint", "ari-cert-id"}

    assert scenario.get("/.httpd/certificate-status", host="new.test").json() == {"rsa": {}}
    # a fresh MD while its renewal runs (here: keeps failing), as the reference shows
    assert scenario.get("/.httpd/certificate-status", host="blocked-domain.example").json() \
        == {"rsa": {}, "renewal": {"cert": {}}}
    assert scenario.get("/.httpd/certificate-status", host="x.wild.test").json() == {"rsa": {}}
    # query strings are ignored; a trailing slash is another path
    assert scenario.get("/.httpd/certificate-status?x=1", host="active.test").status == 200
    assert scenario.get("/.httpd/certificate-status/", host="active.test").status == 404


def test_certificate_status_only_for_md_hosts_and_get(scenario):
    for host in ("plain.test", "localhost", "other.example"):
        assert scenario.get("/.httpd/certificate-status", host=host).status == 404
        assert scenario.get("/.httpd/certificate-status", host=host, method="POST",
                            data="x").status == 404  # declined before the method check
    assert scenario.https_get("/.httpd/certificate-status", host="plain.test").status == 404
    for method in ("POST", "PUT", "DELETE"):
        r = scenario.get("/.httpd/certificate-status", host="active.test", method=method, data="x")
        assert r.status == 501
    head = scenario.get("/.httpd/certificate-status", host="active.test", extra=["--head"])
    assert head.status == 200


# -- metrics ---------------------------------------------------------------------------------
def _families(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(fams: dict, family: str, name: str | None = None, **labels) -> float:
    for s in fams[family].samples:
        if (name is None or s.name == name) and all(s.labels.get(k) == v
                                                     for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {family}{labels}")


def test_metrics_parse_and_say_what_md_status_says(scenario):
    r = scenario.get("/md-status/metrics")
    assert r.status == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = _families(r.body)
    for name, fam in fams.items():
        assert name.startswith("apache_md_"), name
    md = scenario.status("staged.test")
    from email.utils import parsedate_to_datetime
    for kt in ("secp256r1", "rsa"):
        valid = md["cert"][kt]["valid"]
        assert _sample(fams, "apache_md_cert_not_after_timestamp_seconds", md="staged.test",
                       key_type=kt) == parsedate_to_datetime(valid["until"]).timestamp()
        assert _sample(fams, "apache_md_cert_not_before_timestamp_seconds", md="staged.test",
                       key_type=kt) == parsedate_to_datetime(valid["from"]).timestamp()
    assert _sample(fams, "apache_md_renew_at_timestamp_seconds", md="active.test") == \
        parsedate_to_datetime(scenario.status("active.test")["renew-at"]).timestamp()
    assert _sample(fams, "apache_md_state", md="active.test", state="complete") == 1
    assert _sample(fams, "apache_md_state", md="new.test", state="incomplete") == 1
    assert _sample(fams, "apache_md_state", md="new.test", state="complete") == 0
    assert _sample(fams, "apache_md_activation_state", md="staged.test", state="staged") == 1
    assert _sample(fams, "apache_md_renewal_errors", md="blocked-domain.example") == 1
    # failing renewals: what the page's red badge says, and what an alert looks for
    assert _sample(fams, "apache_md_state", md="blocked-domain.example", state="error") == 1
    assert _sample(fams, "apache_md_renewal_errors", md="staged.test") == 0
    assert _sample(fams, "apache_md_last_renewal_timestamp_seconds", md="staged.test") > 0
    ca = scenario.env.pebble.directory_url
    assert _sample(fams, "apache_md_ca_request_failures", ca=ca) >= 1
    assert _sample(fams, "apache_md_ca_renewals", ca=ca, outcome="success") >= 3
    assert _sample(fams, "apache_md_ca_renewals", ca=ca, outcome="failure") >= 1
    assert fams["apache_md_ca_request_failures"].type == "counter"
    assert _sample(fams, "apache_md_worker_up") == 0
    # Prometheus' own Accept header on /md-status gets the same text
    r2 = scenario.get("/md-status", headers={"Accept": PROMETHEUS_ACCEPT})
    assert r2.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert _families(r2.body).keys() == fams.keys()


# -- the page for people -----------------------------------------------------------------------
def test_html_page_negotiated_and_self_contained(scenario):
    r = scenario.get("/md-status", headers={"Accept": BROWSER_ACCEPT})
    assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "accept" in r.headers.get("vary", "").lower()
    page = r.body
    assert page.startswith("<!DOCTYPE html>")
    for name in NAMES:
        assert name in page
    assert "<script" not in page.lower()
    assert "src=" not in page and "<link" not in page and "@import" not in page  # no assets
    assert "rejectedIdentifier" in page and "staged, waiting for activation" in page
    one = scenario.get("/md-status/staged.test", headers={"Accept": "text/html"}).body
    assert "Renewal log" in one and "Staged certificates" in one
    # explicit formats for links and scripts
    assert scenario.get("/md-status?format=json").json() == scenario.status()
    assert scenario.get("/md-status?format=html").body == page


def test_html_page_renders_in_chromium(scenario, tmp_path):
    if chromium_path() is None:
        if os.environ.get("CI"):  # `make deps` installs it; CI must not skip
            pytest.fail("chromium is not installed (make deps)")
        pytest.skip("chromium is not installed (apt-get install chromium, or make deps)")
    shot = screenshot(f"{scenario.http}/md-status", tmp_path / "md-status.png")
    img = decode_png(shot)
    assert (img.width, img.height) == (1280, 900)
    colors = img.colors()
    background = max(colors.values()) / len(img.pixels)
    assert background < 0.97, "the page is (nearly) empty"
    assert img.variance() > 100, "the screenshot is blank"
    # the styled parts really render: the validity bars' green, the table header
    assert img.count_near((0x2E, 0x9E, 0x4F)) > 500, "no validity bar in the screenshot"
    assert img.count_near((0x2F, 0x3B, 0x48)) > 5000, "no table header in the screenshot"
    assert img.count_near((0xC9, 0x30, 0x2C)) > 50, "the error badge is missing"
    one = decode_png(screenshot(f"{scenario.http}/md-status/blocked-domain.example",
                                tmp_path / "one.png"))
    assert one.variance() > 100 and one.count_near((0x2F, 0x3B, 0x48)) > 2000
    # On a phone (390 px) the tables turn into cards: nothing runs off the right edge,
    # where only the page's background shows.
    for path in ("/md-status", "/md-status/staged.test"):
        img = decode_png(screenshot(f"{scenario.http}{path}", tmp_path / "phone.png",
                                    width=390, height=1600))
        edge = [img.pixels[y * img.width + x] for y in range(img.height)
                for x in range(img.width - 8, img.width)]
        assert all(abs(r - 0xF6) + abs(g - 0xF7) + abs(b - 0xF9) < 12 for r, g, b in edge), path
        assert img.count_near((0x2E, 0x9E, 0x4F)) > 500, path  # a validity bar, full width


# -- fresh -------------------------------------------------------------------------------------
def test_store_changes_show_without_apache_reload(scenario):
    env = scenario.env
    before = scenario.status("active.test")
    env.cli_ok("renew", "--force", "active.test")
    after = scenario.status("active.test")  # no reload, no wait: the snapshot was rewritten
    assert after["renewal"]["finished"] is True
    assert after["cert"] == before["cert"]
    assert after["activation"]["state"] == "staged"
    cs = scenario.get("/.httpd/certificate-status", host="active.test").json()
    assert cs["renewal"]["cert"]["rsa"]["serial"] == after["renewal"]["cert"]["rsa"]["serial"]
