"""Prometheus text exposition (format 0.0.4) of the md-status objects.

Served at /md-status/metrics. Names carry their unit (`_seconds`,
`_timestamp_seconds`), counters end in `_total`, label names are `md`,
`key_type`, `ca`, `state` (OCSP: `certificate`, a key type or, for certificates
of no MD, the file). Pure: md-status objects and counters in, text out.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from ..core.jsonfmt import parse_http_date
from ..core.model import MDState, RenewMode, name_of
from . import condition

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ACTIVATION_STATES = ("pending", "staged", "active")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return repr(float(value))


def _ts(text: Any) -> float | None:
    dt = parse_http_date(text)
    return dt.timestamp() if dt else None


class _Family:
    def __init__(self, name: str, kind: str, help_: str):
        self.name, self.kind, self.help = name, kind, help_
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float | None, **labels: str) -> None:
        if value is not None:
            self.samples.append((labels, value))

    def text(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{self.name}{_labels(lb)} {_number(v)}" for lb, v in self.samples]
        return "\n".join(lines) + "\n"


def render(mds: Iterable[dict[str, Any]], ca_stats: dict[str, dict[str, Any]],
           worker: dict[str, Any] | None, now: datetime,
           staplings: Iterable[dict[str, Any]] = ()) -> str:
    """The whole exposition for the md-status objects `mds`, the per-CA counters and the
    stapled certificates (status snapshot `staplings` rows)."""
    fams: dict[str, _Family] = {}

    def fam(name: str, kind: str, help_: str) -> _Family:
        return fams.setdefault(name, _Family("apache_md_" + name, kind, help_))

    info = fam("info", "gauge", "Managed domain: its names, renew mode and CA (always 1).")
    state = fam("state", "gauge", "1 for the MD's state, 0 for the others: mod_md's "
                "unknown, incomplete, complete, and expired (the certificate ran out) or error "
                "(renewals keep failing, or broken files), as the status page shows them.")
    act = fam("activation_state", "gauge", "1 for where the certificate stands (pending: "
              "none from the CA yet; staged: waiting for activation; active), else 0.")
    nb = fam("cert_not_before_timestamp_seconds", "gauge",
             "Start of the live certificate's validity, per key type.")
    na = fam("cert_not_after_timestamp_seconds", "gauge",
             "End of the live certificate's validity, per key type.")
    ra = fam("renew_at_timestamp_seconds", "gauge", "When the renew window opens.")
    errs = fam("renewal_errors", "gauge", "Consecutive failed renewal runs (0 after success).")
    nxt = fam("renewal_next_run_timestamp_seconds", "gauge",
              "Not before this time will the renewal run again (backoff, activation delay).")
    last = fam("last_renewal_timestamp_seconds", "gauge",
               "When a renewal last succeeded (its certificates were staged).")
    check = fam("next_check_timestamp_seconds", "gauge",
                "When apache-md next looks at the MD (only while the worker runs).")
    fails = fam("ca_request_failures_total", "counter",
                "Requests to the CA that failed (network, HTTP or ACME errors).")
    runs = fam("ca_renewals_total", "counter", "Renewal runs at the CA, by outcome.")
    o_status = fam("ocsp_status", "gauge", "1 for the stored OCSP status of a stapled "
                   "certificate (good, revoked, unknown: none stored), 0 for the others.")
    o_this = fam("ocsp_this_update_timestamp_seconds", "gauge",
                 "thisUpdate of the stored OCSP response: its age is time() minus this.")
    o_until = fam("ocsp_valid_until_timestamp_seconds", "gauge",
                  "nextUpdate of the stored OCSP response: stapled until then at most.")
    o_refresh = fam("ocsp_refresh_at_timestamp_seconds", "gauge",
                    "When the worker asks the OCSP responder next.")
    o_errs = fam("ocsp_errors", "gauge", "Consecutive failed OCSP updates of the MD's "
                 "certificates (\"other\": certificates of no MD).")
    up = fam("worker_up", "gauge", "1 while the apache-md worker runs.")
    gen = fam("status_generated_timestamp_seconds", "gauge",
              "When this status was computed; a stale value means nobody updates it.")

    for md in mds:
        name = md.get("name", "")
        ca = (md.get("ca") or {}).get("url") or ""
        info.add(1, md=name, domains=",".join(md.get("domains", [])), ca=ca,
                 renew_mode=name_of(RenewMode, md.get("renew-mode")))
        current_state = condition.state(md, now)
        for code in MDState:
            state.add(1 if current_state == code else 0, md=name, state=code.name.lower())
        current = (md.get("activation") or {}).get("state")
        for label in ACTIVATION_STATES:
            act.add(1 if current == label else 0, md=name, state=label)
        for key_type, cert in (md.get("cert") or {}).items():
            if key_type == "valid" or not isinstance(cert, dict):
                continue
            valid = cert.get("valid") or {}
            nb.add(_ts(valid.get("from")), md=name, key_type=key_type)
            na.add(_ts(valid.get("until")), md=name, key_type=key_type)
        ra.add(_ts(md.get("renew-at")), md=name)
        renewal = md.get("renewal") or {}
        errs.add(renewal.get("errors", 0), md=name)
        nxt.add(_ts(renewal.get("next-run")), md=name)
        last.add(_ts(md.get("last-renewal")), md=name)
        check.add(_ts(md.get("next-check")), md=name)
    for ca_url, entry in sorted(ca_stats.items()):
        fails.add(entry.get("request-failures", 0), ca=ca_url)
        runs.add(entry.get("renewals", 0), ca=ca_url, outcome="success")
        runs.add(entry.get("renewal-failures", 0), ca=ca_url, outcome="failure")
    seen = set()
    for row in staplings:
        if row.get("skipped"):
            continue
        labels = {"md": row.get("md", ""), "certificate": row.get("certificate", "")}
        for word in ("good", "revoked", "unknown"):
            o_status.add(1 if row.get("status") == word else 0, **labels, status=word)
        valid = row.get("valid") or {}
        o_this.add(_ts(valid.get("from")), **labels)
        o_until.add(_ts(valid.get("until")), **labels)
        o_refresh.add(_ts(row.get("refresh-at")), **labels)
        if "errors" in row and labels["md"] not in seen:
            seen.add(labels["md"])
            o_errs.add(row["errors"], md=labels["md"])
    up.add(1 if worker else 0)
    gen.add(now.timestamp())
    return "".join(f.text() for f in fams.values())
