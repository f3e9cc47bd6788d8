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


# name (after apache_md_), type, help; in the order of the exposition
FAMILIES = (
    ("info", "gauge", "Managed domain: its names, renew mode and CA (always 1)."),
    ("state", "gauge", "1 for the MD's state, 0 for the others: mod_md's unknown, incomplete, "
     "complete, and expired (the certificate ran out) or error (renewals keep failing, or "
     "broken files), as the status page shows them."),
    ("activation_state", "gauge", "1 for where the certificate stands (pending: none from the "
     "CA yet; staged: waiting for activation; active), else 0."),
    ("cert_not_before_timestamp_seconds", "gauge",
     "Start of the live certificate's validity, per key type."),
    ("cert_not_after_timestamp_seconds", "gauge",
     "End of the live certificate's validity, per key type."),
    ("renew_at_timestamp_seconds", "gauge", "When the renew window opens."),
    ("renewal_errors", "gauge", "Consecutive failed renewal runs (0 after success)."),
    ("renewal_next_run_timestamp_seconds", "gauge",
     "Not before this time will the renewal run again (backoff, activation delay)."),
    ("last_renewal_timestamp_seconds", "gauge",
     "When a renewal last succeeded (its certificates were staged)."),
    ("next_check_timestamp_seconds", "gauge",
     "When apache-md next looks at the MD (only while the worker runs)."),
    ("ca_request_failures_total", "counter",
     "Requests to the CA that failed (network, HTTP or ACME errors)."),
    ("ca_renewals_total", "counter", "Renewal runs at the CA, by outcome."),
    ("ocsp_status", "gauge", "1 for the stored OCSP status of a stapled certificate (good, "
     "revoked, unknown: none stored), 0 for the others."),
    ("ocsp_this_update_timestamp_seconds", "gauge",
     "thisUpdate of the stored OCSP response: its age is time() minus this."),
    ("ocsp_valid_until_timestamp_seconds", "gauge",
     "nextUpdate of the stored OCSP response: stapled until then at most."),
    ("ocsp_refresh_at_timestamp_seconds", "gauge", "When the worker asks the OCSP responder next."),
    ("ocsp_errors", "gauge", "Consecutive failed OCSP updates of the MD's certificates "
     "(\"other\": certificates of no MD)."),
    ("worker_up", "gauge", "1 while the apache-md worker runs."),
    ("renewals", "gauge", "Renewals under way or staged, by state (finished: staged, "
     "waiting for activation; failed: the last attempt failed; running): how far a batch "
     "of new MDs is."),
    ("fleet_node_heartbeat_timestamp_seconds", "gauge",
     "Last heartbeat of each live fleet node in etcd (MDClusterEtcd)."),
    ("fleet_lock", "gauge", "1 for the fleet node that holds an MD's renewal lock."),
    ("fleet_serves", "gauge", "1 for the certificate (serial) each fleet node serves for an MD."),
    ("fleet_etcd_up", "gauge", "1 when this node's worker reached etcd at its last cycle."),
    ("status_generated_timestamp_seconds", "gauge",
     "When this status was computed; a stale value means nobody updates it."),
)


class _Samples:
    """Sample lines by family."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {}

    def add(self, family: str, value: float | None, **labels: str) -> None:
        if value is not None:
            self.lines.setdefault(family, []).append(
                f"apache_md_{family}{_labels(labels)} {_number(value)}")


def md_samples(md: dict[str, Any], now: datetime) -> dict[str, list[str]]:
    """The sample lines of one MD by family; they depend on the clock only through
    condition.state(md, now)."""
    out = _Samples()
    name = md.get("name", "")
    out.add("info", 1, md=name, domains=",".join(md.get("domains", [])),
            ca=condition.ca_url(md),
            renew_mode=name_of(RenewMode, md.get("renew-mode")))
    current = condition.state(md, now)
    for code in MDState:
        out.add("state", 1 if current == code else 0, md=name, state=code.name.lower())
    current = (md.get("activation") or {}).get("state")
    for label in ACTIVATION_STATES:
        out.add("activation_state", 1 if current == label else 0, md=name, state=label)
    for key_type, cert in (md.get("cert") or {}).items():
        if key_type == "valid" or not isinstance(cert, dict):
            continue
        valid = cert.get("valid") or {}
        out.add("cert_not_before_timestamp_seconds", _ts(valid.get("from")), md=name,
                key_type=key_type)
        out.add("cert_not_after_timestamp_seconds", _ts(valid.get("until")), md=name,
                key_type=key_type)
    out.add("renew_at_timestamp_seconds", _ts(md.get("renew-at")), md=name)
    renewal = md.get("renewal") or {}
    out.add("renewal_errors", renewal.get("errors", 0), md=name)
    out.add("renewal_next_run_timestamp_seconds", _ts(renewal.get("next-run")), md=name)
    out.add("last_renewal_timestamp_seconds", _ts(md.get("last-renewal")), md=name)
    out.add("next_check_timestamp_seconds", _ts(md.get("next-check")), md=name)
    return out.lines


def render(mds: Iterable[dict[str, Any]], ca_stats: dict[str, dict[str, Any]],
           worker: dict[str, Any] | None, now: datetime,
           staplings: Iterable[dict[str, Any]] = ()) -> str:
    """The whole exposition for the md-status objects `mds`, the per-CA counters and the
    stapled certificates (status snapshot `staplings` rows)."""
    mds = list(mds)
    pieces = [md_pieces(md, now) for md in mds]
    out = []
    for part in template(ca_stats, worker, now, staplings,
                         progress(renewal_state(md) for md in mds)):
        out.append(part if isinstance(part, str)
                   else part[1].join(p[part[0]] for p in pieces if part[0] in p))
    return "".join(out)


def renewal_state(md: dict[str, Any]) -> str | None:
    """"finished" (staged), "failed" (its last attempt), "running", or None: no renewal."""
    renewal = md.get("renewal")
    if not renewal:
        return None
    return "finished" if renewal.get("finished") else \
        "failed" if renewal.get("errors") else "running"


def progress(states: Iterable[str | None]) -> dict[str, int] | None:
    """The renewals under way or waiting in staging/ (a batch of new MDs: how many are
    done), for the list page and the metrics; None when there is none. (The list JSON
    stays mod_md's, key for key.)"""
    states = [s for s in states if s]
    if not states:
        return None
    return {"total": len(states), "finished": states.count("finished"),
            "failed": states.count("failed")}


def _fleet_samples(out: _Samples, fleet: dict[str, Any]) -> None:
    for node, n in sorted((fleet.get("nodes") or {}).items()):
        try:
            beat = datetime.fromisoformat(str(n.get("heartbeat"))).timestamp()
        except ValueError:
            beat = None
        out.add("fleet_node_heartbeat_timestamp_seconds", beat, node=node)
        for md, certs in sorted((n.get("serves") or {}).items()):
            for key, c in sorted(certs.items()):
                out.add("fleet_serves", 1, md=md, node=node, key=key,
                        serial=str(c.get("serial")))
    for md, node in sorted((fleet.get("locks") or {}).items()):
        out.add("fleet_lock", 1, md=md, node=node)
    out.add("fleet_etcd_up", 0 if fleet.get("error") else 1)


def md_pieces(md: dict[str, Any], now: datetime) -> dict[str, str]:
    """One MD's sample lines as text per template slot (`m:<family>`)."""
    return {f"m:{family}": "".join(line + "\n" for line in lines)
            for family, lines in md_samples(md, now).items()}


def template(ca_stats: dict[str, dict[str, Any]], worker: dict[str, Any] | None,
             now: datetime, staplings: Iterable[dict[str, Any]] = (),
             renewals: dict[str, int] | None = None,
             fleet: dict[str, Any] | None = None) -> list:
    """The exposition without the MDs' samples: text, and in each family a slot
    `["m:<family>", ""]` that the MDs' md_pieces fill in name order (status snapshot
    templates: the handler joins them, so an MD's samples are formatted once)."""
    out = _Samples()
    for ca_url, entry in sorted(ca_stats.items()):
        out.add("ca_request_failures_total", entry.get("request-failures", 0), ca=ca_url)
        out.add("ca_renewals_total", entry.get("renewals", 0), ca=ca_url, outcome="success")
        out.add("ca_renewals_total", entry.get("renewal-failures", 0), ca=ca_url,
                outcome="failure")
    seen = set()
    for row in staplings:
        if row.get("skipped"):
            continue
        labels = {"md": row.get("md", ""), "certificate": row.get("certificate", "")}
        for word in ("good", "revoked", "unknown"):
            out.add("ocsp_status", 1 if row.get("status") == word else 0, **labels, status=word)
        valid = row.get("valid") or {}
        out.add("ocsp_this_update_timestamp_seconds", _ts(valid.get("from")), **labels)
        out.add("ocsp_valid_until_timestamp_seconds", _ts(valid.get("until")), **labels)
        out.add("ocsp_refresh_at_timestamp_seconds", _ts(row.get("refresh-at")), **labels)
        if "errors" in row and labels["md"] not in seen:
            seen.add(labels["md"])
            out.add("ocsp_errors", row["errors"], md=labels["md"])
    out.add("worker_up", 1 if worker else 0)
    r = renewals or {"total": 0, "finished": 0, "failed": 0}
    for word, n in (("finished", r["finished"]), ("failed", r["failed"]),
                    ("running", r["total"] - r["finished"] - r["failed"])):
        out.add("renewals", n, state=word)
    if fleet:
        _fleet_samples(out, fleet)
    out.add("status_generated_timestamp_seconds", now.timestamp())
    parts: list = []
    for name, kind, help_ in FAMILIES:
        parts.append(f"# HELP apache_md_{name} {help_}\n# TYPE apache_md_{name} {kind}\n")
        parts.append([f"m:{name}", ""])
        parts.append("".join(line + "\n" for line in out.lines.get(name, ())))
    return [p for p in parts if p != ""]
