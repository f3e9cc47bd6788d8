"""md-status objects, the snapshot, the WSGI routes, metrics and the page, without Apache."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apache_md.core.jsonfmt import http_date
from apache_md.core.model import Config, GlobalSettings
from apache_md.status import mdstatus, metrics, page, snapshot
from apache_md.store import castats
from apache_md.wsgi import app
from tests.e2e import mdstatus_ref as ref
from tests.unit.sample import CA, call, env, make_md, sample_config

NOW = datetime(2026, 4, 11, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def config(store):
    return sample_config(store)


def test_md_objects_follow_the_reference(store, config):
    snap = snapshot.snapshot(store, config)
    assert [m["name"] for m in snap["list"]["managed-domains"]] == \
        ["active.test", "failing.test", "new.test", "staged.test"]
    for obj in snap["list"]["managed-domains"]:
        ref.check_md(obj, with_log=False)
    for name, obj in snap["mds"].items():
        ref.check_md(obj, with_log="renewal" in obj)
        assert snap["bodies"][f"md:{name}"] == json.dumps(obj, indent=2)
        ref.assert_mod_md_json_text(snap["bodies"][f"md:{name}"])
    mds = snap["mds"]
    assert mds["staged.test"]["activation"]["state"] == "staged"
    assert "no worker is running" in mds["staged.test"]["activation"]["detail"]
    assert mds["staged.test"]["renewal"]["ca-url"] == CA
    assert mds["new.test"]["activation"]["state"] == "pending"
    assert mds["active.test"]["activation"]["state"] == "active"
    assert mds["failing.test"]["renewal"]["errors"] == 1
    cs = json.loads(snap["bodies"]["cs:staged.test"])
    assert list(cs) == ["valid", "rsa", "renewal"]
    assert json.loads(snap["bodies"]["cs:new.test"]) == {"rsa": {}}
    assert json.loads(snap["bodies"]["cs:failing.test"]) == {"rsa": {}, "renewal": {"cert": {}}}


def test_one_mds_snapshot_is_what_the_whole_one_says_of_it(store, config):
    """`apache-md status <name>` builds that MD alone: the same md-status object and
    bodies as the whole snapshot has for it, and no other MD made."""
    whole = snapshot.snapshot(store, config, NOW)
    for name in ("staged.test", "failing.test"):
        one = snapshot.snapshot(store, config, NOW, only=name)
        assert list(one["mds"]) == [name]
        assert one["mds"][name] == whole["mds"][name]
        for kind in ("md", "html", "cs"):
            assert one["bodies"][f"{kind}:{name}"] == whole["bodies"][f"{kind}:{name}"]
        assert [m["name"] for m in one["list"]["managed-domains"]] == [name]


def test_the_full_list_holds_no_md_object_and_says_what_the_whole_snapshot_says(store, config):
    """`apache-md status` (the full list) builds with keep=False: no MD's md-status object
    is kept while the snapshot is made (at 10,000 MDs they were most of its memory), and
    the list, each MD's object and every body are still those of a kept snapshot."""
    snapshot.write_snapshot(store, config, now=NOW)  # what a new reader finds made
    whole = snapshot.snapshot(store, config, NOW)
    lean = snapshot.snapshot(store, config, NOW, keep=False)
    assert "mds" not in lean and "list" not in lean  # nothing parsed yet
    assert lean["bodies"]["list"] == whole["bodies"]["list"]
    assert lean.md("failing.test") == whole["mds"]["failing.test"]
    assert lean.md("nothing.test") is None
    assert "mds" not in lean
    assert lean["list"] == whole["list"]
    assert lean["mds"] == whole["mds"]
    assert dict(lean["bodies"]) == dict(whole["bodies"])
    # the MDs taken from made.json were read from their files and let go again
    view = lean["bodies"].view
    assert set(view.pieces) < set(view.files.values())


def test_the_published_snapshot_gives_back_what_status_prints(store, config):
    """`apache-md status` for a user who may not read the store reads the published file."""
    assert snapshot.published(store) is None
    now = datetime.now(timezone.utc)
    snapshot.write_snapshot(store, config, now=now)
    snap = snapshot.snapshot(store, config, now)
    back = snapshot.published(store)
    assert back["list"] == json.loads(json.dumps(snap["list"]))
    assert back["mds"] == json.loads(json.dumps(snap["mds"]))
    assert dict(back["bodies"]) == dict(snap["bodies"])
    store.write_bytes(*snapshot.SNAPSHOT, b'{"bodies": []}')
    with pytest.raises(ValueError, match=r"status\.json: not a status snapshot"):
        snapshot.published(store)


def test_next_check_follows_the_worker_and_the_job(store, config):
    md = config.md_by_name("failing.test")
    now = datetime.now(timezone.utc)
    worker = {"pid": 1, "next-cycle": http_date(now + timedelta(minutes=1))}
    obj = mdstatus.md_status(store, md, now, worker=worker)
    job_next = obj["renewal"]["next-run"]
    assert obj["next-check"] == job_next  # the backoff is later than the next cycle
    obj = mdstatus.md_status(store, config.md_by_name("new.test"), now, worker=worker)
    assert obj["next-check"] == worker["next-cycle"]
    assert "next-check" not in mdstatus.md_status(store, md, now)


def test_wsgi_routes_answer_from_the_snapshot(store, config):
    snapshot.write_snapshot(store, config)
    snap = snapshot.published(store)
    st, hdrs, body = call(env(store, "/md-status"))
    assert st.startswith("200") and hdrs["Content-Type"] == "application/json"
    assert body.decode() == snap["bodies"]["list"]
    assert call(env(store, "/md-status/www.new.test"))[2].decode() == snap["bodies"]["md:new.test"]
    assert call(env(store, "/md-status/nope.test"))[2] == body
    assert call(env(store, "/md-status", method="POST"))[0].startswith("501")
    st, hdrs, body = call(env(store, "/md-status", accept="text/html"))
    assert hdrs["Content-Type"].startswith("text/html") and body.startswith(b"<!DOCTYPE html>")
    st, hdrs, body = call(env(store, "/md-status/metrics"))
    assert hdrs["Content-Type"].startswith("text/plain; version=0.0.4")
    assert call(env(store, "/md-status", query="format=metrics"))[2] == body
    cs = call(env(store, "/.httpd/certificate-status", host="www.active.test:443"))
    assert cs[0].startswith("200") and json.loads(cs[2])["rsa"]["serial"]
    assert call(env(store, "/.httpd/certificate-status", host="else.test"))[0].startswith("404")
    assert call(env(store, "/.httpd/certificate-status", method="PUT",
                    host="active.test"))[0].startswith("501")


@pytest.mark.parametrize("accept,fmt", [
    ("", "json"), ("*/*", "json"), ("application/json", "json"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "html"),
    ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "metrics"),
    ("text/plain;version=0.0.4", "metrics"), ("text/*", "html"),
    ("application/json;q=0.5, text/html;q=0.4", "json"), ("text/html;q=0", "json"),
    ("image/png", "json"), ("garbage;;;q=x", "json"),
])
def test_content_negotiation(accept, fmt):
    assert app.negotiate(accept) == fmt


def test_metrics_parse_with_prometheus_client(store, config):
    castats.record(store, CA, request_failed=True, renewed=False, problem="x")
    castats.record(store, CA, renewed=True)
    snap = snapshot.snapshot(store, config)
    fams = {f.name: f for f in text_string_to_metric_families(snap["bodies"]["metrics"])}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in fams.values() for s in f.samples}
    assert samples[("apache_md_ca_request_failures_total", (("ca", CA),))] == 1
    assert samples[("apache_md_ca_renewals_total", (("ca", CA), ("outcome", "success")))] == 1
    assert samples[("apache_md_renewal_errors", (("md", "failing.test"),))] == 1
    assert samples[("apache_md_state", (("md", "new.test"), ("state", "incomplete")))] == 1
    assert ("apache_md_cert_not_after_timestamp_seconds",
            (("key_type", "rsa"), ("md", "active.test"))) in samples
    assert samples[("apache_md_worker_up", ())] == 0


def _states(text: str) -> dict[str, str]:
    fam = next(f for f in text_string_to_metric_families(text) if f.name == "apache_md_state")
    on = [(s.labels["md"], s.labels["state"]) for s in fam.samples if s.value == 1]
    assert len(on) == len({md for md, _ in on})  # one state per MD
    return dict(on)


def test_page_and_metrics_agree_on_what_error_means(store, config):
    """Failing renewals make the page's badge red and apache_md_state{state="error"} 1;
    an expired certificate is "expired" in both, failing renewals or not."""
    now = datetime.now(timezone.utc)
    snap = snapshot.snapshot(store, config, now)
    states = _states(snap["bodies"]["metrics"])
    words = {name: page.status_label(obj, now)[1] for name, obj in snap["mds"].items()}
    assert words["failing.test"] == states["failing.test"] == "error"
    assert '<span class="badge">error</span>' in snap["bodies"]["html:failing.test"]
    assert states == {"active.test": "complete", "staged.test": "complete",
                      "new.test": "incomplete", "failing.test": "error"}
    assert (words["staged.test"], words["new.test"]) == ("staged", "incomplete")
    gone = dict(snap["mds"]["failing.test"], state=2,
                cert={"valid": {"from": http_date(now - timedelta(days=90)),
                                "until": http_date(now - timedelta(minutes=1))}})
    assert page.status_label(gone, now) == ("bad", "expired")
    assert _states(metrics.render([gone], {}, None, now)) == {"failing.test": "expired"}


def test_metric_labels_are_escaped():
    text = metrics.render([{"name": 'a"b\\c\nd', "domains": [], "state": 2, "cert": {}}],
                          {}, None, NOW)
    fam = next(f for f in text_string_to_metric_families(text) if f.name == "apache_md_info")
    assert fam.samples[0].labels["md"] == 'a"b\\c\nd'


def test_page_escapes_what_it_shows(store, config):
    snap = snapshot.snapshot(store, config)
    html = snap["bodies"]["html"]
    assert "<b>no</b>" not in html and "&lt;b&gt;no&lt;/b&gt; &amp; &quot;never&quot;" in html
    one = snap["bodies"]["html:failing.test"]
    assert "renewal-error" in one and "<b>no</b>" not in one
    empty = page.render_list([], [], page.PageContext())
    assert "No managed domains are configured" in empty


def test_validity_bar_marks_the_windows():
    start = NOW - timedelta(days=60)
    md = {"cert": {"valid": {"from": http_date(start), "until": http_date(start + timedelta(
        days=90))}}, "renew-at": http_date(start + timedelta(days=60)), "warn-window": "9d"}
    marks = page.window_marks(md)
    assert marks["renew"] == start + timedelta(days=60)
    assert marks["warn"] == start + timedelta(days=81)
    bar = page.validity_bar(md, page.moment(md, NOW).mark)
    assert 'left:66.67%' in bar and 'left:90.0%' in bar
    assert '<i class="now" style="left:66%">' in bar  # whole percent: see Moment


def test_pages_are_rendered_again_only_when_what_they_say_changes(store, config, monkeypatch):
    """Issue 15: absolute times, so a minute later (or an hour) nothing is rendered again;
    the time of the snapshot is the handler's to fill in."""
    rendered = []
    for name in ("render_md", "list_row"):
        real = getattr(page, name)
        monkeypatch.setattr(page, name, lambda *a, real=real: rendered.append(a) or real(*a))
    renderer = snapshot.Renderer()
    now = datetime.now(timezone.utc)
    first = snapshot.snapshot(store, config, now, renderer)
    assert len(rendered) == 2 * len(config.mds)
    rendered.clear()
    for later in (timedelta(minutes=1), timedelta(hours=1)):
        again = snapshot.snapshot(store, config, now + later, renderer)
        assert rendered == []
        assert again["bodies"]["html"] == first["bodies"]["html"]
        for md in config.mds:
            assert again["bodies"][f"html:{md.name}"] is first["bodies"][f"html:{md.name}"]
    assert first["bodies"]["html"].count(page.GENERATED) == 1
    # MDs that left the configuration leave the cache
    config.mds = [m for m in config.mds if m.name != "new.test"]
    snapshot.snapshot(store, config, now, renderer)
    assert set(renderer._last) == {m.name for m in config.mds}


def test_metrics_of_an_unchanged_md_are_not_formatted_again(store, config, monkeypatch):
    formatted = []
    real = metrics.md_samples
    monkeypatch.setattr(metrics, "md_samples",
                        lambda md, now: formatted.append(md["name"]) or real(md, now))
    renderer, now = snapshot.Renderer(), datetime.now(timezone.utc)
    snapshot.snapshot(store, config, now, renderer)
    formatted.clear()
    later = now + timedelta(minutes=1)
    again = snapshot.snapshot(store, config, later, renderer)
    # only the MDs without a certificate: mod_md's renew-at for them is "now"
    assert sorted(formatted) == ["failing.test", "new.test"]
    # and the text is what formatting everything afresh gives
    assert again["bodies"]["metrics"] == metrics.render(
        list(again["mds"].values()), castats.load(store), None, later, again["staplings"])


def test_a_view_stands_still_while_mod_md_moves_renew_at_with_now():
    """An MD with a certificate but a key type missing: mod_md's renew-at is "now"."""
    start = NOW - timedelta(days=30)

    def obj(now):
        return {"name": "x.test", "state": 1, "renew-at": http_date(now),
                "next-check": http_date(now + timedelta(seconds=30)),
                "cert": {"valid": {"from": http_date(start),
                                   "until": http_date(start + timedelta(days=90))}}}
    later = NOW + timedelta(minutes=10)
    assert page.view(obj(NOW), NOW) == page.view(obj(later), later)
    assert page.view(obj(NOW), NOW)[1].mark == 33
    # the next whole percent of the lifetime moves the mark, and the page with it
    assert page.view(obj(NOW + timedelta(days=1)), NOW + timedelta(days=1))[1].mark == 34


def test_the_handler_says_when_the_snapshot_was_made(store, config):
    snapshot.write_snapshot(store, config)
    snap = snapshot.published(store)
    for path in ("/md-status", "/md-status/active.test"):
        body = call(env(store, path, accept="text/html"))[2].decode()
        assert page.GENERATED not in body
        assert f"apache-md status as of {snap['generated-page']} &middot;" in body
    assert app.GENERATED == page.GENERATED


def test_certificate_check_only_where_it_can_find_the_certificate(store, config):
    obj = snapshot.snapshot(store, config)["mds"]["active.test"]
    m = page.moment(obj, NOW)
    private = page.render_md(obj, m, page.PageContext())
    assert "crt.sh" not in private  # the sample's CA is a private one
    public = dict(obj, ca={"url": "https://acme-v02.api.letsencrypt.org/directory"})
    fp = obj["cert"]["rsa"]["sha256-fingerprint"]
    assert f'<a href="https://crt.sh?q={fp}">crt.sh</a>' in page.render_md(
        public, m, page.PageContext())
    own = page.PageContext(check=("monitor", "https://ct.example/?sha256="))
    assert f'<a href="https://ct.example/?sha256={fp}">monitor</a>' in page.render_md(
        obj, m, own)


def test_page_wraps_names_between_names_and_writes_one_date_format(store, config):
    snap = snapshot.snapshot(store, config)
    one = snap["bodies"]["html:staged.test"]
    names = ('<span class="name"><span>staged.</span><wbr><span>test</span></span> '
             '<span class="name"><span>www.</span><wbr><span>staged.</span><wbr>'
             '<span>test</span></span>')
    assert names in one  # a break between names, or after a dot, never at a hyphen
    assert '<code class="serial">' in one
    log = one[one.index("Renewal log"):]
    assert re.search(r'data-label="When">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC<', log)
    assert "GMT" not in one  # md-status's HTTP dates never reach the page


def test_ca_stats_count_and_survive_a_corrupt_file(store):
    castats.record(store, CA, request_failed=True, problem="p")
    castats.record(store, CA, request_failed=True)
    assert castats.load(store)[CA]["request-failures"] == 2
    store.write_bytes(castats.GROUP, castats.NAME, castats.FILE, b"{broken")
    assert castats.load(store) == {}
    castats.record(store, CA, renewed=True)
    assert castats.load(store)[CA] == {"request-failures": 0, "renewals": 1,
                                       "renewal-failures": 0}


def test_wildcard_include_names_are_not_glob_patterns():
    from apache_md.apache.includes import include_file, include_path
    assert include_file("*.example.org") == "_wildcard_.example.org.conf"
    assert include_path("/s", "www.example.org") == "/s/apache/www.example.org.conf"
    assert "*" not in include_path("/s", "*.example.org")


def test_challenges_of_dns01_only_mds_are_left_to_the_document_root(store, tmp_path):
    """mod_md declines there (its test 720_008): a backend's own webroot answer wins."""
    dns_only = make_md("dns.test", challenges=["dns-01"])
    config = Config(main_file="x.conf", server_root="/", mds=[dns_only],
                    settings=GlobalSettings(store_dir=str(store.base)))
    snapshot.write_snapshot(store, config)
    docroot = tmp_path / "htdocs"
    (docroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    (docroot / ".well-known" / "acme-challenge" / "tok").write_text("webroot")
    (tmp_path / "secret").write_text("no")

    def get(token: str, host: str = "dns.test"):
        e = env(store, f"/.well-known/acme-challenge/{token}", host=host)
        e["DOCUMENT_ROOT"] = str(docroot)
        return call(e)
    assert get("tok")[0].startswith("200") and get("tok")[2] == b"webroot"
    assert get("missing")[0].startswith("404")
    assert get("..%2F..%2Fsecret")[0].startswith("404")
    # hosts of no MD too
    assert get("tok", host="unknown.test")[2] == b"webroot"


def test_activity_says_why_an_unused_md_is_not_renewed():
    now = datetime.now(timezone.utc)
    unused = {"state": 1, "state-descr": "certificate(rsa) is missing", "renew-mode": 1,
              "watched": False}
    assert "no VirtualHost uses it" in page.activity(unused, now)
    assert page.activity(dict(unused, watched=True), now).startswith("certificate needed")
