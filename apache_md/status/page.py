"""The status page for people: /md-status asked by a browser (Accept: text/html).

Rendered from the md-status objects into the snapshot, like every other body,
so serving it costs nothing. Self-contained HTML: inline CSS, no scripts, no
external assets; links are relative, so the page works behind a proxy prefix.
Pure: objects in, text out.
"""
from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..core.durations import DurationError, Timeslice
from ..core.jsonfmt import parse_http_date
from ..core.model import MDState, RenewMode, name_of
from .condition import condition


@dataclass
class PageContext:
    generated: datetime
    worker: dict[str, Any] | None = None
    check: tuple[str, str] = ("crt.sh", "https://crt.sh?q=")  # MDCertificateCheck
    refresh: int = 30  # seconds; the page reloads itself without JavaScript
    last_reload: datetime | None = None  # when apache-md last reloaded Apache
    activation_error: str | None = None  # why the last activation was rolled back


# -- words --------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _date(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else "-"


def _span(delta: timedelta) -> str | None:
    secs = abs(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= size:
            n = int(secs // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return None  # the page is exact to the minute


def relative(dt: datetime | None, now: datetime) -> str:
    if dt is None:
        return "-"
    span = _span(dt - now)
    if span is None:
        return "within a minute" if dt >= now else "just now"
    return f"in {span}" if dt >= now else f"{span} ago"


CSS_CLASS = {"expired": "bad", "error": "bad", "staged": "busy", "renewing": "busy",
             "good": "ok", "incomplete": "wait", "unknown": "wait"}


def status_label(md: dict[str, Any], now: datetime) -> tuple[str, str]:
    """(css class, word) for the MD's condition."""
    word = condition(md, now)
    return CSS_CLASS[word], word


def activity(md: dict[str, Any], now: datetime) -> str:
    """One line on what happens with the MD (mod_md's server-status "Activity")."""
    renewal = md.get("renewal")
    if renewal:
        if renewal.get("finished"):
            return (md.get("activation") or {}).get("detail") or "staged, waiting for activation"
        last = renewal.get("last") or {}
        if renewal.get("errors"):
            text = f"{renewal['errors']} failed attempt(s)"
            nxt = parse_http_date(renewal.get("next-run"))
            if nxt:
                text += f", next try {relative(nxt, now)}"
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
    if at and at > now:
        return f"renewal {relative(at, now)}"
    return "renewal due"


def last_error(md: dict[str, Any]) -> str:
    renewal = md.get("renewal") or {}
    if not renewal.get("errors"):
        return ""
    last = renewal.get("last") or {}
    parts = [p for p in (last.get("problem"), last.get("detail")
                         or last.get("status-description")) if p]
    return ": ".join(parts)


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


def validity_bar(md: dict[str, Any], now: datetime) -> str:
    valid = (md.get("cert") or {}).get("valid") or {}
    key = (valid.get("from"), valid.get("until"), md.get("renew-at"),
           str(md.get("warn-window", "10%")))
    try:
        parts = _bar_parts(*key)
    except TypeError:  # an unhashable value: not from md_status, render without the cache
        parts = _bar_parts.__wrapped__(*key)
    if parts is None:
        return '<div class="bar none" title="no certificate"><span>no certificate</span></div>'
    start, total, head, tail = parts
    n = round(100.0 * min(max((now - start).total_seconds(), 0), total) / total, 2)
    return f'{head}<i class="now" style="left:{n}%"></i></div>{tail}'


@functools.lru_cache(maxsize=4096)
def _bar_parts(valid_from, valid_until, renew_at, warn_window):
    """The bar without its `now` mark: rendered once per certificate, not per page and
    minute (the list and every MD's page show it, re-rendered each minute)."""
    marks = window_marks({"cert": {"valid": {"from": valid_from, "until": valid_until}},
                          "renew-at": renew_at, "warn-window": warn_window})
    if marks is None:
        return None
    start, end = marks["from"], marks["until"]
    total = (end - start).total_seconds()

    def pct(t: datetime) -> float:
        return round(100.0 * min(max((t - start).total_seconds(), 0), total) / total, 2)

    r, w = pct(marks["renew"]), pct(marks["warn"])
    title = (f"valid {_date(start)} to {_date(end)}; renew from {_date(marks['renew'])}; "
             f"warn from {_date(marks['warn'])}")
    head = (f'<div class="bar" title="{_e(title)}">'
            f'<i class="seg ok" style="left:0;width:{r}%"></i>'
            f'<i class="seg renew" style="left:{r}%;width:{round(w - r, 2)}%"></i>'
            f'<i class="seg warn" style="left:{w}%;width:{round(100 - w, 2)}%"></i>')
    tail = (f'<div class="dates"><span>{_e(start.strftime("%Y-%m-%d"))}</span>'
            f'<span>renew {_e(marks["renew"].strftime("%Y-%m-%d"))}</span>'
            f'<span>{_e(end.strftime("%Y-%m-%d"))}</span></div>')
    return start, total, head, tail


# -- pages ----------------------------------------------------------------------------------
CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#1d2329;
background:#f6f7f9}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em}
.meta{color:#555;margin:.2em 0 1em}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:.45em .6em;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#2f3b48;color:#fff;font-weight:600}
td.names{max-width:18em;overflow-wrap:anywhere}
td.validity{min-width:17em}
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
.err{color:#a12622}
.summary span{margin-right:1.2em}
.legend i{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:-.1em}
code{font-size:12px;word-break:break-all}
dl{display:grid;grid-template-columns:max-content auto;gap:.25em 1.2em;background:#fff;
padding:.8em 1em;box-shadow:0 1px 2px #0002}
dt{font-weight:600}dd{margin:0}
"""


def _head(title: str, refresh: int | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n")


def _worker_line(ctx: PageContext) -> str:
    if not ctx.worker:
        text = ('<span class="err">no apache-md worker is running: certificates are not '
                'renewed automatically</span>')
    else:
        nxt = parse_http_date(ctx.worker.get("next-cycle"))
        when = f", next check {relative(nxt, ctx.generated)}" if nxt else ""
        text = f"worker running (pid {_e(ctx.worker.get('pid'))}){_e(when)}"
    if ctx.last_reload:
        text += f" &middot; Apache reloaded {_e(relative(ctx.last_reload, ctx.generated))}"
    if ctx.activation_error:
        text += (f' &middot; <span class="err">last activation rolled back: '
                 f"{_e(ctx.activation_error)}</span>")
    return text


def _legend() -> str:
    return ('<p class="legend">Validity: <i style="background:#2e9e4f"></i>'
            'valid <i style="background:#e6a700"></i>renew window '
            '<i style="background:#d9534f"></i>warn window '
            '<i style="background:#111;width:3px"></i>now</p>')


def render_list(mds: list[dict[str, Any]], ctx: PageContext) -> str:
    now = ctx.generated
    mds = sorted(mds, key=lambda m: m.get("name", ""))
    counts: dict[str, int] = {}
    rows = []
    for md in mds:
        css, word = status_label(md, now)
        counts[word] = counts.get(word, 0) + 1
        keys = [k for k in (md.get("cert") or {}) if k != "valid"] or \
            [k for k in ((md.get("renewal") or {}).get("cert") or {}) if k != "valid"]
        err = last_error(md)
        name = md.get("name", "")
        rows.append(
            f'<tr class="{css}"><td><a href="md-status/{_e(name)}">{_e(name)}</a></td>'
            f'<td class="names">{_e(" ".join(md.get("domains", [])))}</td>'
            f'<td>{_e(", ".join(keys) or "-")}</td>'
            f'<td><span class="badge">{_e(word)}</span></td>'
            f'<td class="validity">{validity_bar(md, now)}</td>'
            f"<td>{_e(activity(md, now))}"
            + (f'<div class="err">{_e(err)}</div>' if err else "") + "</td></tr>\n")
    summary = "".join(f"<span>{n} {_e(w)}</span>" for w, n in sorted(counts.items()))
    body = (f"<h1>Managed domains</h1>"
            f'<p class="meta">apache-md status as of {_e(_date(now))} &middot; '
            f"{_worker_line(ctx)}</p>"
            f'<p class="summary"><span><b>{len(mds)}</b> managed domain'
            f'{"s" if len(mds) != 1 else ""}</span>{summary}</p>')
    if not mds:
        body += "<p>No managed domains are configured (MDomain in the Apache configuration).</p>"
    else:
        body += ("<table><thead><tr><th>Domain</th><th>Names</th><th>Keys</th><th>Status</th>"
                 "<th>Validity</th><th>Activity</th></tr></thead><tbody>\n"
                 + "".join(rows) + "</tbody></table>" + _legend())
    body += ('<p class="meta">JSON: <a href="md-status?format=json">md-status</a> (mod_md format) &middot; '
             'metrics: <a href="md-status/metrics">md-status/metrics</a></p>')
    return _head("apache-md: managed domains", ctx.refresh) + body + "\n</body></html>\n"


def _cert_table(certs: dict[str, Any], ctx: PageContext) -> str:
    rows = []
    for key_type, c in certs.items():
        if key_type == "valid" or not isinstance(c, dict):
            continue
        valid = c.get("valid") or {}
        fp = c.get("sha256-fingerprint", "")
        check = (f' <a href="{_e(ctx.check[1] + fp)}">{_e(ctx.check[0])}</a>'
                 if fp and ctx.check and ctx.check[1] else "")
        rows.append(f"<tr><td>{_e(key_type)}</td><td><code>{_e(c.get('serial', ''))}</code></td>"
                    f"<td><code>{_e(fp)}</code>{check}</td>"
                    f"<td>{_e(c.get('issuer-name', ''))}</td>"
                    f"<td>{_e(_date(parse_http_date(valid.get('from'))))}</td>"
                    f"<td>{_e(_date(parse_http_date(valid.get('until'))))}</td></tr>")
    if not rows:
        return "<p>none</p>"
    return ("<table><thead><tr><th>Key</th><th>Serial</th><th>SHA-256</th><th>Issuer</th>"
            "<th>Valid from</th><th>Valid until</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _ocsp_table(certs: dict[str, Any], now: datetime) -> str:
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
        this = parse_http_date(valid.get("from"))
        rows.append(f"<tr><td>{_e(key_type)}</td><td>{_e(o['status'])}</td>"
                    f"<td>{_e(relative(this, now) if this else '-')}</td>"
                    f"<td>{_e(_date(parse_http_date(valid.get('until'))))}</td>"
                    f"<td>{_e(relative(parse_http_date(o.get('refresh-at')), now))}</td>"
                    f"<td>{_e(o.get('responder', ''))}</td></tr>")
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
                 f'{_e(relative(parse_http_date(job.get("next-run")), now))}</p>')
    return text


def render_md(md: dict[str, Any], ctx: PageContext) -> str:
    now = ctx.generated
    css, word = status_label(md, now)
    name = md.get("name", "")
    ca = md.get("ca") or {}
    renewal = md.get("renewal") or {}
    facts = [
        ("Names", " ".join(md.get("domains", []))),
        ("Status", f"{word}" + (f": {md['state-descr']}" if md.get("state-descr") else "")),
        ("Activation", (md.get("activation") or {}).get("detail", "-")),
        ("Activity", activity(md, now)),
        ("CA", ca.get("url", "-") + (f" (account {ca['account']})" if ca.get("account") else "")),
        ("Renew mode", name_of(RenewMode, md.get("renew-mode"))),
        ("Renew window", f"{md.get('renew-window')} before expiry, renew at "
                         f"{_date(parse_http_date(md.get('renew-at')))}"),
        ("Warn window", f"{md.get('warn-window')} before expiry"),
        ("Next check", _date(parse_http_date(md.get("next-check")))),
        ("Last renewal", _date(parse_http_date(md.get("last-renewal")))),
    ]
    if renewal:
        facts.append(("Renewal", f"{renewal.get('errors', 0)} error(s), CA "
                                  f"{renewal.get('ca-url', '-')}, next run "
                                  f"{_date(parse_http_date(renewal.get('next-run')))}"))
    err = last_error(md)
    if err:
        facts.append(("Last error", err))
    for b in md.get("broken-files") or []:
        facts.append(("Broken file", f"{b.get('file')}: {b.get('problem')}; {b.get('action')} "
                                     f"({b.get('when')})"))
    body = (f'<p class="meta"><a href="../md-status">all managed domains</a></p>'
            f'<h1 class="{css}">{_e(name)} <span class="badge">{_e(word)}</span></h1>'
            f'<p class="meta">as of {_e(_date(now))} &middot; {_worker_line(ctx)}</p>'
            "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>"
            f"<h2>Validity</h2>{validity_bar(md, now)}{_legend()}"
            f"<h2>Certificates in use</h2>{_cert_table(md.get('cert') or {}, ctx)}"
            + _ocsp_table(md.get("cert") or {}, now))
    if renewal:
        body += f"<h2>Staged certificates</h2>{_cert_table(renewal.get('cert') or {}, ctx)}"
        entries = (renewal.get("log") or {}).get("entries") or []
        if entries:
            body += ("<h2>Renewal log</h2><table><thead><tr><th>When</th><th>Type</th>"
                     "<th>Status</th><th>Detail</th></tr></thead><tbody>"
                     + "".join(f"<tr><td>{_e(e.get('when', ''))}</td><td>{_e(e.get('type', ''))}"
                               f"</td><td>{_e(e.get('status', ''))}</td>"
                               f"<td>{_e(e.get('detail', ''))}</td></tr>" for e in entries)
                     + "</tbody></table>")
    return _head(f"apache-md: {name}", ctx.refresh) + body + "\n</body></html>\n"
