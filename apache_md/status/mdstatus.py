"""md-status and certificate-status JSON (reference/mod_md-formats.md §1, §2).

Built by whoever changes the store (worker, activation, `renew`) and written as
one snapshot file with every response body already rendered (JSON, the HTML
page, the metrics), so the WSGI handlers answer without parsing a certificate
or serializing anything.

apache-md adds keys after mod_md's own (scrapers ignore what they do not know):
`activation` (is the certificate live, staged, or still missing, and why),
`next-check` (when apache-md next looks at the MD), `last-renewal` (when a
renewal last succeeded), `broken-files` (store files of the MD found broken
during the last week and what was done about them, status/snapshot.py) and,
inside `renewal`, `ca-url` (the CA that renewal uses, which differs from
`ca.url` after a failover).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from .. import MOD_MD_COMPAT_VERSION
from ..core.crypto import CertInfo
from ..core.facts import MDFacts
from ..core.job import Job, now_utc
from ..core.jsonfmt import http_date, parse_http_date, period, put
from ..core.mdjson import md_to_json
from ..core.model import GlobalSettings, ManagedDomain
from ..core.schedule import md_state, renew_at, window_start
from ..store import credentials, jobs, staples
from ..store.facts import read as read_facts
from ..store.fs import DOMAINS, STAGING, Store


def cert_json(info: CertInfo) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    put(obj, "issuer-name", info.issuer_name)
    put(obj, "issuer-uri", info.issuer_uri)
    put(obj, "valid", period(info.not_before, info.not_after))
    obj["serial"] = info.serial
    obj["sha256-fingerprint"] = info.sha256
    put(obj, "ari-cert-id", info.ari_cert_id)
    return obj


def certs_json(infos: dict[str, CertInfo | None]) -> dict[str, Any]:
    """Per key type, plus `valid`: the overlap of all validity periods."""
    out: dict[str, Any] = {}
    present = [i for i in infos.values() if i]
    for name, info in infos.items():
        if info:
            out[name] = cert_json(info)
    first = next(iter(infos.values()), None)
    if present and first:
        out["valid"] = period(max(i.not_before for i in present),
                              min(i.not_after for i in present))
    return out


def job_seems_valid(store: Store, md: ManagedDomain, job: Job) -> bool:
    """mod_md #420: a finished+notified job without a staged set is stale."""
    if job.finished and job.notified_renewed:
        return credentials.staged_complete(store, md) and store.exists(STAGING, md.name, "md.json")
    return True


# -- one MD --------------------------------------------------------------------------------
def activation(md: ManagedDomain, complete: bool, job: Job | None, staged: bool,
               now: datetime, worker: dict | None, requested: bool,
               waiting: str | None = None, served: str | None = None,
               repaired: dict | None = None, unloaded: str | None = None) -> dict[str, str]:
    """Where the MD's certificate stands between the CA and Apache, for people.

    `waiting` is what the last activation said about this MD, `served` what its include
    points at ("certificate", "static", "fallback"; None: not written yet) and `repaired`
    a broken live set found and handled, `unloaded` when its set went live without a
    reload (store.state.load_activation_state).
    """
    out = _activation(md, complete, job, staged, now, worker, requested, waiting, served)
    if unloaded and out["state"] == "active" and not md.is_static:
        out = {"state": "staged", "detail": (
            f"live in the store since {unloaded}, but Apache has not reloaded since and "
            "still serves the previous certificate: " + (
                "the worker reloads it at its next check" if worker else
                "run `apache-md activate --reload CMD` (as root) or reload Apache"))}
    if repaired:
        out["detail"] += f" (at {repaired.get('when')}: {repaired.get('detail')})"
    return out


def _activation(md: ManagedDomain, complete: bool, job: Job | None, staged: bool,
                now: datetime, worker: dict | None, requested: bool,
                waiting: str | None, served: str | None) -> dict[str, str]:
    if staged and job is not None:
        if job.valid_from and job.valid_from > now:
            why = (f"activation delayed until {http_date(job.valid_from)} "
                   "(MDActivationDelay, or the new certificate's notBefore)")
        elif waiting:
            why = waiting
        elif requested:
            why = ("waiting for `apache-md activate` as root: this worker may not "
                   "reload Apache")
        elif worker:
            why = "the worker activates it and reloads Apache at its next check"
        else:
            why = ("no worker is running: run `apache-md activate --reload CMD` "
                   "(as root), or start the worker")
        return {"state": "staged", "detail": f"staged, waiting for activation: {why}"}
    if served == "fallback":
        return {"state": "pending",
                "detail": ("the certificate files of MDCertificateFile are not usable" if
                           md.is_static else "no certificate from the CA yet") +
                          ": its include points Apache at a self-signed fallback "
                          "certificate, answered with 503"}
    if md.is_static:
        return {"state": "active", "detail": "certificate files from MDCertificateFile"}
    if complete:
        return {"state": "active", "detail": "Apache serves the certificate from the CA"}
    if served is None:
        return {"state": "pending", "detail": "no certificate from the CA yet, and its "
                "include is not written yet (`apache-md check` or the worker writes it)"}
    return {"state": "pending", "detail": "no certificate from the CA yet"}


def own_check(md: ManagedDomain, job: Job | None, at: datetime, now: datetime
              ) -> datetime | None:
    """When the MD itself asks for the worker (None: at the worker's next cycle)."""
    if md.will_renew:
        if job is not None and job.next_run and job.next_run > now:
            return job.next_run  # backoff, activation delay, ARI
        if at > now:
            return at
    return None


def next_check(own: datetime | None, now: datetime, worker: dict | None) -> datetime | None:
    """When the worker next does something for this MD (None: no worker runs)."""
    if not worker:
        return None
    cycle = parse_http_date(worker.get("next-cycle")) or now
    return max(cycle, own) if own else cycle


def _last_renewal(store: Store, md: ManagedDomain, job: Job | None) -> datetime | None:
    if job is not None and job.finished:
        when = job.last_log_time("finished")
        if when:
            return when
    active_job = jobs.find(store, DOMAINS, md.name)
    return active_job.last_log_time("finished") if active_job else None


def md_status(store: Store, md: ManagedDomain, now: datetime | None = None,
              with_log: bool = True, worker: dict | None = None,
              requested: set[str] | None = None,
              activation_state: dict | None = None,
              settings: GlobalSettings | None = None,
              facts: MDFacts | None = None, notes: dict | None = None,
              planned: dict | None = None) -> dict[str, Any]:
    """The md-status object of one MD; `facts` as store/facts.read() gives them.
    `worker` is the running worker's info (None: none runs), `planned` the info of the
    worker whose plan `next-check` shows (default `worker`: status/snapshot.py passes
    the last one's once it stopped).

    It depends on the clock only where it compares `now` with renew-at and the job's
    next-run and valid-from; `notes` (status/snapshot.py, which keeps an MD's pieces
    until the next of those times) gets them: "at", "moving" (renew-at is now: an
    incomplete MD), "job" (the job shown) and "own" (own_check())."""
    now = now or now_utc()
    facts = facts or read_facts(store, md)
    active, managed, issuer, ca = facts.active, facts.managed, facts.issuer, facts.ca
    state, reason = md_state(md, managed, active)
    job = facts.job
    if job is not None and not job_seems_valid(store, md, job):
        job = None
    job_ca = md.ca_urls[job.ca_index % len(md.ca_urls)] if job is not None and md.ca_urls \
        else None
    # ca.url: as mod_md's (md->ca_effective), the CA of the certificate that went live,
    # from domains/<md>/md.json; none before the first one, none for static files. The
    # CA a renewal uses is `renewal.ca-url`.
    obj = md_to_json(md, ca_url=ca.get("url") if managed else None, account=ca.get("account"),
                     state=state, state_descr=reason, public=True)
    obj["cert"] = certs_json(active)
    staples.add_status(obj["cert"], store, md, active, settings, with_log)
    if managed:
        at = renew_at(md, active, now, issuer)
    elif all(active.values()):  # MDCertificateFile: the window of the files' certificates
        at = min(window_start(md, info) for info in active.values() if info)
    else:
        at = now
    put(obj, "renew-at", http_date(at))
    obj["watched"] = md.is_watched
    if job is not None or at <= now:
        obj["renew"] = True
    staged = False
    if job is not None:
        renewal = job.to_json(with_log=with_log)
        renewal.pop("ca-index", None)
        staged = facts.staged_finished
        renewal["cert"] = certs_json(credentials.staged(store, md))
        put(renewal, "ca-url", job_ca)
        obj["renewal"] = renewal
    # apache-md extras
    act = activation_state or {}
    obj["activation"] = activation(md, reason is None, job, staged, now, worker,
                                   md.name in (requested or ()),
                                   (act.get("waiting") or {}).get(md.name),
                                   (act.get("served") or {}).get(md.name),
                                   (act.get("repaired") or {}).get(md.name),
                                   (act.get("unloaded") or {}).get(md.name))
    own = own_check(md, job, at, now)
    put(obj, "next-check", http_date(next_check(own, now, worker if planned is None
                                                  else planned)))
    if notes is not None:
        notes.update(at=at, moving=at is now, job=job, own=own)
    put(obj, "last-renewal", http_date(_last_renewal(store, md, job)))
    ari = _ari_json(md, facts)
    if ari:
        obj["ari"] = ari  # what the CA's renewalInfo said
    return obj


def _ari_json(md: ManagedDomain, facts: MDFacts) -> dict[str, Any]:
    """Per key type, the ARI entry of the active certificate."""
    if not (facts.managed and md.ari_renewals):
        return {}
    return {name: facts.ari[info.ari_id] for name, info in facts.active.items()
            if info and info.ari_id in facts.ari}


def cert_status(md_obj: dict[str, Any], spec_names: list[str]) -> dict[str, Any]:
    """/.httpd/certificate-status for one MD, derived from its md-status object."""
    out: dict[str, Any] = {}
    cert = md_obj.get("cert", {})
    if "valid" in cert:
        out["valid"] = cert["valid"]
    for name in spec_names:
        c = cert.get(name) or {}
        out[name] = {k: c[k] for k in ("valid", "serial", "sha256-fingerprint") if k in c}
    if "renewal" in md_obj:
        out["renewal"] = {"cert": md_obj["renewal"].get("cert", {})}
    return out


def _cert_status_keys(md: ManagedDomain) -> list[str]:
    # mod_md names one key per key spec; static-file MDs' certificates are keyed
    # "0", "1", ... in md-status, so we add those too (mod_md leaves the spec keys {}).
    names = [s.name for s in md.keyspecs]
    if md.is_static:
        names += [str(i) for i in range(len(md.cert_files))]
    return names


def _without_logs(obj: dict[str, Any]) -> dict[str, Any]:
    """The list form drops job logs: `renewal.log` and `cert.<key>.ocsp.renewal.log`."""
    obj = dict(obj)
    if "renewal" in obj:
        obj["renewal"] = {k: v for k, v in obj["renewal"].items() if k != "log"}
    cert = dict(obj.get("cert", {}))
    for key, c in cert.items():
        if isinstance(c, dict) and "renewal" in c.get("ocsp", {}):
            o = dict(c["ocsp"])
            o["renewal"] = {k: v for k, v in o["renewal"].items() if k != "log"}
            cert[key] = {**c, "ocsp": o}
    obj["cert"] = cert
    return obj


def list_json(mds: list[dict[str, Any]]) -> dict[str, Any]:
    """The full list: sorted by name, without job logs (mod_md status_get_json)."""
    listed = [_without_logs(obj) for obj in sorted(mds, key=lambda o: o["name"])]
    top: dict[str, Any] = {"version": MOD_MD_COMPAT_VERSION}
    if listed:
        top["managed-domains"] = listed
    return top


