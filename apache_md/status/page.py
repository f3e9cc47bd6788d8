"""The status page for people: /md-status asked by a browser (Accept: text/html).

Rendered from the md-status objects into the snapshot, like every other body,
so serving it costs nothing. Self-contained HTML: inline CSS, no scripts, no
external assets; links are relative, so the page works behind a proxy prefix.
Pure: objects in, text out.

Times are absolute, so a page changes only when what it says changes: the
clock reaches it only through its `view()` (the object without what moves by
itself, and the `Moment`: condition, renewal due, the "now" mark on the
validity bar in whole percent), and the snapshot renders a page again only
when its view changed. The one time that moves with
every snapshot, when it was made, is the `GENERATED` mark: the handler puts the
snapshot's own time there.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ..core.durations import DurationError, Timeslice
from ..core.jsonfmt import http_date, parse_http_date
from ..core.model import GlobalSettings, MDState, RenewMode, name_of
from .condition import ca_url, condition

# = wsgi/app.py GENERATED (that file must not import the package)
GENERATED = "<!--apache-md:generated-->"
# = wsgi/app.py META: where an MD's page says who runs (meta(), in the snapshot's index):
# the worker's pid and Apache's last reload must not make every MD's page new.
META = "<!--apache-md:meta-->"
# ACME CAs whose certificates are publicly trusted, so in Certificate Transparency logs
# (browsers require it): only for them does the default MDCertificateCheck (crt.sh)
# find anything. A check the administrator configured is offered for every certificate.
CT_LOGGED_CAS = ("acme-v02.api.letsencrypt.org", "acme.zerossl.com", "acme.sectigo.com",
                 "api.buypass.com", "dv.acme-v02.api.pki.goog", "acme.ssl.com",
                 "acme.digicert.com")


@dataclass(frozen=True)
class PageContext:
    """What the pages say besides the MDs (hashable: part of the render cache's key)."""

    worker_pid: Any = None  # None: no worker runs
    check: tuple[str, str] = GlobalSettings.certificate_check  # MDCertificateCheck
    refresh: int = 30  # seconds; the page reloads itself without JavaScript
    last_reload: datetime | None = None  # when apache-md last reloaded Apache
    activation_error: str | None = None  # why the last activation was rolled back


class Moment(NamedTuple):
    """All that an MD's rows and page say which depends on the clock."""

    condition: str
    due: bool  # the renew window is open
    mark: int | None  # the bar's "now": whole percent of the certificate's lifetime


def view(md: dict[str, Any], now: datetime) -> tuple[dict[str, Any], Moment]:
    """The object an MD's row and page are rendered from, and their moment: together,
    all they depend on. Left out is what moves with the clock and the page does not show:
    `next-check` (for most MDs the worker's next cycle) and, once the renew window is
    open, `renew-at` (mod_md sets it to "now" while a certificate is missing): the bar's
    renew mark then stops at its now mark."""
    m = moment(md, now)
    obj = {k: v for k, v in md.items() if k != "next-check"}
    if m.due:
        marks = window_marks(md)
        if marks is None or m.mark is None:
            obj.pop("renew-at", None)
        else:
            at_mark = marks["from"] + (marks["until"] - marks["from"]) * m.mark / 100
            obj["renew-at"] = http_date(min(marks["renew"], at_mark))
    return obj, m


def moment(md: dict[str, Any], now: datetime) -> Moment:
    at = parse_http_date(md.get("renew-at"))
    marks = window_marks(md)
    mark = None
    if marks is not None:
        total = (marks["until"] - marks["from"]).total_seconds()
        mark = int(100 * min(max((now - marks["from"]).total_seconds(), 0), total) // total)
    return Moment(condition(md, now), at is not None and at <= now, mark)


# -- words --------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def date(dt: datetime | None, seconds: bool = False) -> str:
    """The one way the page writes a time (the log adds seconds)."""
    if not dt:
        return "-"
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


CSS_CLASS = {"expired": "bad", "error": "bad", "staged": "busy", "renewing": "busy",
             "good": "ok", "incomplete": "wait", "unknown": "wait"}


def status_label(md: dict[str, Any], now: datetime) -> tuple[str, str]:
    """(css class, word) for the MD's condition."""
    word = condition(md, now)
    return CSS_CLASS[word], word


def activity(md: dict[str, Any], now: datetime) -> str:
    """One line on what happens with the MD (mod_md's server-status "Activity")."""
    return _activity(md, moment(md, now).due)


def _activity(md: dict[str, Any], due: bool) -> str:
    renewal = md.get("renewal")
    if renewal:
        if renewal.get("finished"):
            return (md.get("activation") or {}).get("detail") or "staged, waiting for activation"
        last = renewal.get("last") or {}
        if renewal.get("errors"):
            text = f"{renewal['errors']} failed attempt(s)"
            nxt = parse_http_date(renewal.get("next-run"))
            if nxt:
                text += f", next try {date(nxt)}"
            return text
        entries = (renewal.get("log") or {}).get("entries") or []
        detail = next((e.get("detail") for e in entries if e.get("type") == "progress"
                       and e.get("detail")), None)
        return f"renewing: {detail or last.get('activity') or 'started'}"
    if md.get("renew-mode") == RenewMode.MANUAL:
        return "manual renewal (MDRenewMode manual)"
    if md.get("watched") is False:
        return "no VirtualHost uses it: not renewed (unless MDRenewMode always)"
    if md.get("state") == MDState.INCOMPLETE:
        return f"certificate needed: {md.get('state-descr') or 'incomplete'}"
    at = parse_http_date(md.get("renew-at"))
    return f"renewal from {date(at)}" if at and not due else "renewal due"


def last_error(md: dict[str, Any]) -> str:
    renewal = md.get("renewal") or {}
    if not renewal.get("errors"):
        return ""
    last = renewal.get("last") or {}
    parts = [p for p in (last.get("problem"), last.get("detail")
                         or last.get("status-description")) if p]
    return ": ".join(parts)


def _host(name: str) -> str:
    """A host name that wraps, if it must, only after a dot (never at a hyphen)."""
    labels = name.split(".")
    return '<span class="name">' + "<wbr>".join(
        f"<span>{_e(label)}{'.' if i < len(labels) - 1 else ''}</span>"
        for i, label in enumerate(labels)) + "</span>"


def _names(domains: list[str]) -> str:
    """Host names that wrap between names, and inside one only when it must."""
    return " ".join(_host(d) for d in domains)


def _hex(text: str, group: int = 16) -> str:
    """A long hex string that may wrap only between groups (copying gives it whole)."""
    return "<wbr>".join(_e(text[i:i + group]) for i in range(0, len(text), group))


# -- the validity bar ---------------------------------------------------------------------
def window_marks(md: dict[str, Any]) -> dict[str, datetime] | None:
    """from, renew, warn, until of the live certificates (None without one)."""
    valid = (md.get("cert") or {}).get("valid") or {}
    start, end = parse_http_date(valid.get("from")), parse_http_date(valid.get("until"))
    if not start or not end or end <= start:
        return None
    renew = parse_http_date(md.get("renew-at")) or end
    try:
        warn = Timeslice.parse(str(md.get("warn-window", "10%"))).start(start, end)
    except DurationError:  # not from md_status: no warn mark
        warn = end
    clamp = lambda t: min(max(t, start), end)  # noqa: E731
    return {"from": start, "renew": clamp(renew), "warn": clamp(max(warn, renew)), "until": end}


def validity_bar(md: dict[str, Any], mark: int | None) -> str:
    marks = window_marks(md)
    if marks is None:
        return '<div class="bar none" title="no certificate"><span>no certificate</span></div>'
    start, end = marks["from"], marks["until"]
    total = (end - start).total_seconds()

    def pct(t: datetime) -> float:
        return round(100.0 * min(max((t - start).total_seconds(), 0), total) / total, 2)

    r, w = pct(marks["renew"]), pct(marks["warn"])
    title = (f"valid {date(start)} to {date(end)}; renew from {date(marks['renew'])}; "
             f"warn from {date(marks['warn'])}")
    return (f'<div class="bar" title="{_e(title)}">'
            f'<i class="seg ok" style="left:0;width:{r}%"></i>'
            f'<i class="seg renew" style="left:{r}%;width:{round(w - r, 2)}%"></i>'
            f'<i class="seg warn" style="left:{w}%;width:{round(100 - w, 2)}%"></i>'
            f'<i class="now" style="left:{mark or 0}%"></i></div>'
            f'<div class="dates"><span>{_e(start.strftime("%Y-%m-%d"))}</span>'
            f'<span>renew {_e(marks["renew"].strftime("%Y-%m-%d"))}</span>'
            f'<span>{_e(end.strftime("%Y-%m-%d"))}</span></div>')


# -- pages ----------------------------------------------------------------------------------
CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#1d2329;
background:#f6f7f9}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em}
.meta{color:#555;margin:.2em 0 1em}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:.45em .6em;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#2f3b48;color:#fff;font-weight:600}
.name{display:inline-block;margin-right:.5em;max-width:100%;overflow-x:auto;vertical-align:top}
.name span{white-space:nowrap}h1 .name span{white-space:normal}
td.validity{min-width:15em}td.activity{min-width:12em}
.badge{display:inline-block;padding:.1em .55em;border-radius:.8em;color:#fff;font-weight:600}
.ok .badge{background:#2e9e4f}.busy .badge{background:#2f6fb3}.wait .badge{background:#8a939c}
.bad .badge{background:#c9302c}
.bar{position:relative;height:14px;min-width:14em;background:#dde1e5;border-radius:3px;
overflow:hidden}
.bar .seg{position:absolute;top:0;bottom:0}
.seg.ok{background:#2e9e4f}.seg.renew{background:#e6a700}.seg.warn{background:#d9534f}
.bar .now{position:absolute;top:0;bottom:0;width:3px;margin-left:-1px;background:#111}
.bar.none{background:repeating-linear-gradient(45deg,#dde1e5,#dde1e5 6px,#c8cdd2 6px,
#c8cdd2 12px)}
.bar.none span{position:absolute;left:.5em;font-size:11px;line-height:14px;color:#333}
.dates{display:flex;justify-content:space-between;font-size:11px;color:#555;min-width:14em;
white-space:nowrap;gap:.5em}
.err{color:#a12622;overflow-wrap:anywhere}
.summary span{margin-right:1.2em;white-space:nowrap}
.legend i{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:-.1em}
.legend span{white-space:nowrap}
code{font-size:12px}
.serial,td.when{white-space:nowrap}
dl{display:grid;grid-template-columns:max-content auto;gap:.25em 1.2em;background:#fff;
padding:.8em 1em;box-shadow:0 1px 2px #0002}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
@media (max-width:760px){
body{margin:1em}
thead{display:none}
table,tbody,tr,td{display:block}
tr{border-bottom:2px solid #c8cdd2;padding:.3em 0}
td{border:0;padding:.15em .6em}
td:empty{display:none}
td[data-label]::before{content:attr(data-label);display:block;font-size:11px;color:#555;
text-transform:uppercase;letter-spacing:.03em}
td.validity,td.activity{min-width:0}
dl{grid-template-columns:auto}
dt{margin-top:.3em}
}
"""


def _head(title: str, refresh: int | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n")


def _cell(label: str, content: str, css: str = "") -> str:
    """A table cell that says what it is when the table is shown as cards (narrow)."""
    klass = f' class="{css}"' if css else ""
    return f'<td{klass} data-label="{_e(label)}">{content}</td>'


def meta(ctx: PageContext) -> str:
    """as of (filled in by the handler) and the worker; no time that moves by itself."""
    if ctx.worker_pid is None:
        text = ('<span class="err">no apache-md worker is running: certificates are not '
                'renewed automatically</span>')
    else:
        text = f"worker running (pid {_e(ctx.worker_pid)})"
    if ctx.last_reload:
        text += f" &middot; Apache reloaded {_e(date(ctx.last_reload))}"
    if ctx.activation_error:
        text += (f' &middot; <span class="err">last activation rolled back: '
                 f"{_e(ctx.activation_error)}</span>")
    return f'<p class="meta">apache-md status as of {GENERATED} &middot; {text}</p>'


def _legend() -> str:
    return ('<p class="legend">Validity: <span><i style="background:#2e9e4f"></i>valid</span> '
            '<span><i style="background:#e6a700"></i>renew window</span> '
            '<span><i style="background:#d9534f"></i>warn window</span> '
            '<span><i style="background:#111;width:3px"></i>now</span></p>')


def list_row(md: dict[str, Any], m: Moment) -> str:
    """The MD's row of the list page, from its view()."""
    css, word = CSS_CLASS[m.condition], m.condition
    keys = [k for k in (md.get("cert") or {}) if k != "valid"] or \
        [k for k in ((md.get("renewal") or {}).get("cert") or {}) if k != "valid"]
    err = last_error(md)
    name = md.get("name", "")
    return (f'<tr class="{css}"><td><a href="md-status/{_e(name)}"><b>{_host(name)}</b></a></td>'
            + _cell("Names", _names(md.get("domains", [])))
            + _cell("Keys", _e(", ".join(keys) or "-"))
            + _cell("Status", f'<span class="badge">{_e(word)}</span>')
            + _cell("Validity", validity_bar(md, m.mark), "validity")
            + _cell("Activity", _e(_activity(md, m.due))
                    + (f'<div class="err">{_e(err)}</div>' if err else ""), "activity")
            + "</tr>\n")


def render_list(rows: list[str], conditions: list[str], ctx: PageContext,
                renewals: dict[str, int] | None = None,
                fleet: dict[str, Any] | None = None) -> str:
    """The list page from the MDs' rows (list_row, in name order) and their conditions
    (one per MD: the snapshot passes one slot for all rows, see status/snapshot.py), and
    the md-status list's `renewals`."""
    counts: dict[str, int] = {}
    for word in conditions:
        counts[word] = counts.get(word, 0) + 1
    summary = "".join(f" <span>{n} {_e(w)}</span>" for w, n in sorted(counts.items()))
    if renewals:  # md-status `renewals`: a batch's progress
        summary += (f' <span class="busy">renewals: {renewals["finished"]} of '
                    f'{renewals["total"]} done'
                    + (f', {renewals["failed"]} failing' if renewals["failed"] else "")
                    + "</span>")
    n = len(conditions)
    body = (f"<h1>Managed domains</h1>{meta(ctx)}"
            f'<p class="summary"><span><b>{n}</b> managed domain'
            f'{"s" if n != 1 else ""}</span>{summary}</p>')
    if not n:
        body += "<p>No managed domains are configured (MDomain in the Apache configuration).</p>"
    else:
        body += ("<table><thead><tr><th>Domain</th><th>Names</th><th>Keys</th><th>Status</th>"
                 "<th>Validity</th><th>Activity</th></tr></thead><tbody>\n"
                 + "".join(rows) + "</tbody></table>" + _legend())
    if fleet:
        body += _fleet_section(fleet)
    body += ('<p class="meta">JSON: <a href="md-status?format=json">md-status</a> '
             '(mod_md format) &middot; metrics: <a href="md-status/metrics">'
             'md-status/metrics</a></p>')
    return _head("apache-md: managed domains", ctx.refresh) + body + "\n</body></html>\n"


def _fleet_section(fleet: dict[str, Any]) -> str:
    """The fleet's nodes: heartbeat, the locks each holds, what it serves per MD."""
    locks = fleet.get("locks") or {}
    head = (f"<h2>Fleet {_e(str(fleet.get('prefix', '')))}</h2><p class=\"meta\">this node: "
            f"{_e(str(fleet.get('node', '')))}"
            + (f" &middot; etcd unavailable: {_e(str(fleet['error']))}" if fleet.get("error")
               else "") + "</p>")
    rows = []
    for node, n in sorted((fleet.get("nodes") or {}).items()):
        held = sorted(md for md, h in locks.items() if h == node)
        serves = "<br>".join(f"{_e(md)}: " + ", ".join(f"{_e(k)} {_e(str(c.get('serial')))}"
                                                       for k, c in sorted(certs.items()))
                             for md, certs in sorted((n.get("serves") or {}).items()))
        rows.append(f"<tr><td>{_e(node)}</td><td>{_e(str(n.get('heartbeat', '')))}</td>"
                    f"<td>{_e(', '.join(held)) or '-'}</td><td>{serves or '-'}</td></tr>\n")
    return (head + "<table><thead><tr><th>Node</th><th>Heartbeat</th><th>Renewing</th>"
            "<th>Serves</th></tr></thead><tbody>\n" + "".join(rows) + "</tbody></table>")


def _check_link(fp: str, ca_url: str | None, ctx: PageContext) -> str:
    name, url = ctx.check or ("", "")
    if not fp or not url:
        return ""
    if ctx.check == GlobalSettings.certificate_check and \
            urlsplit(ca_url or "").hostname not in CT_LOGGED_CAS:
        return ""  # crt.sh knows nothing of a private CA's certificates
    return f' <a href="{_e(url + fp)}">{_e(name)}</a>'


def _cert_table(certs: dict[str, Any], ca_url: str | None, ctx: PageContext) -> str:
    rows = []
    for key_type, c in certs.items():
        if key_type == "valid" or not isinstance(c, dict):
            continue
        valid = c.get("valid") or {}
        fp = c.get("sha256-fingerprint", "")
        rows.append("<tr>" + _cell("Key", _e(key_type))
                    + _cell("Serial", f'<code class="serial">{_e(c.get("serial", ""))}</code>')
                    + _cell("SHA-256", f"<code>{_hex(fp)}</code>{_check_link(fp, ca_url, ctx)}")
                    + _cell("Issuer", _e(c.get("issuer-name", "")))
                    + _cell("Valid from", _e(date(parse_http_date(valid.get("from")))), "when")
                    + _cell("Valid until", _e(date(parse_http_date(valid.get("until")))), "when")
                    + "</tr>")
    if not rows:
        return "<p>none</p>"
    return ("<table><thead><tr><th>Key</th><th>Serial</th><th>SHA-256</th><th>Issuer</th>"
            "<th>Valid from</th><th>Valid until</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _ocsp_table(certs: dict[str, Any]) -> str:
    """OCSP stapling of the live certificates: status, response age, next refresh."""
    rows, job = [], None
    for key_type, c in certs.items():
        o = c.get("ocsp") if isinstance(c, dict) else None
        if not o:
            continue
        job = o.get("renewal") or job
        if "status" not in o:
            continue
        valid = o.get("valid") or {}
        rows.append("<tr>" + _cell("Key", _e(key_type)) + _cell("Status", _e(o["status"]))
                    + _cell("Response from", _e(date(parse_http_date(valid.get("from")))),
                            "when")
                    + _cell("Valid until", _e(date(parse_http_date(valid.get("until")))), "when")
                    + _cell("Next refresh", _e(date(parse_http_date(o.get("refresh-at")))),
                            "when")
                    + _cell("Responder", _e(o.get("responder", ""))) + "</tr>")
    if not rows and not job:
        return ""
    text = "<h2>OCSP stapling</h2>"
    if rows:
        text += ("<table><thead><tr><th>Key</th><th>Status</th><th>Response from</th>"
                 "<th>Valid until</th><th>Next refresh</th><th>Responder</th></tr></thead>"
                 "<tbody>" + "".join(rows) + "</tbody></table>")
    if job and job.get("errors"):
        text += (f'<p class="err">{_e(job["errors"])} failed update(s): '
                 f'{_e((job.get("last") or {}).get("detail", ""))}; next try '
                 f'{_e(date(parse_http_date(job.get("next-run"))))}</p>')
    return text


def render_md(md: dict[str, Any], m: Moment, ctx: PageContext) -> str:
    """The MD's page, from its view()."""
    css, word = CSS_CLASS[m.condition], m.condition
    name = md.get("name", "")
    ca = md.get("ca") or {}
    renewal = md.get("renewal") or {}
    detail = (md.get("activation") or {}).get("detail", "-")
    doing = _activity(md, m.due)
    facts = [
        ("Names", _names(md.get("domains", []))),
        ("Status", _e(word + (f": {md['state-descr']}" if md.get("state-descr") else ""))),
        ("Activation", _e(detail)),
    ] + ([("Activity", _e(doing))] if doing != detail else []) + [
        ("CA", _e((ca_url(md) or "-")
                  + (f" (account {ca['account']})" if ca.get("account") else ""))),
        ("Renew mode", _e(name_of(RenewMode, md.get("renew-mode")))),
        ("Renew window", _e(f"{md.get('renew-window')} before expiry, " + (
            "renewal due" if m.due else f"renew from {date(parse_http_date(md.get('renew-at')))}"
        ))),
        ("Warn window", _e(f"{md.get('warn-window')} before expiry")),
        ("Last renewal", _e(date(parse_http_date(md.get("last-renewal"))))),
    ]
    if renewal:
        nxt = parse_http_date(renewal.get("next-run"))
        facts.append(("Renewal", _e(f"{renewal.get('errors', 0)} error(s), CA "
                                    f"{renewal.get('ca-url', '-')}"
                                    + (f", next run {date(nxt)}" if nxt else ""))))
    err = last_error(md)
    if err:
        facts.append(("Last error", _e(err)))
    for b in md.get("broken-files") or []:
        facts.append(("Broken file", _e(f"{b.get('file')}: {b.get('problem')}; {b.get('action')} "
                                        f"({date(parse_http_date(b.get('when')))})")))
    certs = md.get("cert") or {}
    body = (f'<p class="meta"><a href="../md-status">all managed domains</a></p>'
            f'<h1 class="{css}">{_host(name)} <span class="badge">{_e(word)}</span></h1>'
            + META
            + "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
            f"<h2>Validity</h2>{validity_bar(md, m.mark)}"
            + (_legend() if window_marks(md) else "")
            + f"<h2>Certificates in use</h2>{_cert_table(certs, ca.get('url'), ctx)}"
            + _ocsp_table(certs))
    if renewal:
        body += ("<h2>Staged certificates</h2>"
                 + _cert_table(renewal.get("cert") or {}, renewal.get("ca-url"), ctx))
        entries = (renewal.get("log") or {}).get("entries") or []
        if entries:
            body += ("<h2>Renewal log</h2><table><thead><tr><th>When</th><th>Type</th>"
                     "<th>Status</th><th>Detail</th></tr></thead><tbody>"
                     + "".join("<tr>" + _cell("When", _e(_log_time(e.get("when"))), "when")
                               + _cell("Type", _e(e.get("type", "")))
                               + _cell("Status", _e(e.get("status", "")))
                               + _cell("Detail", _e(e.get("detail", ""))) + "</tr>"
                               for e in entries)
                     + "</tbody></table>")
    return _head(f"apache-md: {name}", ctx.refresh) + body + "\n</body></html>\n"


def _log_time(when: Any) -> str:
    dt = parse_http_date(when)
    return date(dt, seconds=True) if dt else str(when or "")
