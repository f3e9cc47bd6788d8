"""md-status and certificate-status JSON (reference/mod_md-formats.md §1, §2).

Built by whoever changes the store (worker, activation, `renew`) and written as
one snapshot file, so the WSGI handlers answer without parsing a certificate.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from . import MOD_MD_COMPAT_VERSION, credentials
from .crypto import CertInfo
from .activation import load_state as load_activation_state
from .drive import load_job
from .job import Job, now_utc
from .jsonfmt import http_date, period, put
from .mdjson import md_to_json
from .model import (RENEW_ALWAYS, RENEW_MANUAL, STATE_COMPLETE, STATE_INCOMPLETE, Config,
                    ManagedDomain)
from .schedule import missing_reason, renew_at
from .store import DOMAINS, STAGING, Store, StoreError


def is_watched(md: ManagedDomain) -> bool:
    """Supervised for renewal or expiry warnings (mod_md init_cert_watch_status)."""
    if md.renew_mode == RENEW_MANUAL or md.is_static:
        return True  # still watched for `expiring`
    return bool(md.vhosts) or md.renew_mode == RENEW_ALWAYS


def will_renew(md: ManagedDomain) -> bool:
    """Driven by the worker (mod_md md_will_renew_cert + check_usage)."""
    if md.renew_mode == RENEW_MANUAL:
        return False
    if md.renew_mode == RENEW_ALWAYS:
        return True
    return bool(md.vhosts) and not md.is_static


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


def md_status(store: Store, md: ManagedDomain, now: datetime | None = None,
              with_log: bool = True, activation_state: dict | None = None) -> dict[str, Any]:
    now = now or now_utc()
    active = credentials.active(store, md)
    reason = missing_reason(md, active) if not md.is_static else (
        None if all(active.values()) else "certificate files are missing")
    try:
        stored = store.read_json(DOMAINS, md.name, "md.json") or {}
    except StoreError:
        stored = {}
    ca = stored.get("ca") if isinstance(stored.get("ca"), dict) else {}
    obj = md_to_json(md, ca_url=ca.get("url"), account=ca.get("account"),
                     state=STATE_INCOMPLETE if reason else STATE_COMPLETE,
                     state_descr=reason, public=True)
    obj["cert"] = certs_json(active)
    at = renew_at(md, active, now) if not md.is_static or all(active.values()) else now
    put(obj, "renew-at", http_date(at))
    obj["watched"] = is_watched(md)
    job = None
    if store.exists(STAGING, md.name, "job.json"):
        job = load_job(store, md.name)
        if not job_seems_valid(store, md, job):
            job = None
    if job is not None or at <= now:
        obj["renew"] = True
    if job is not None:
        renewal = job.to_json(with_log=with_log)
        renewal.pop("ca-index", None)
        renewal["cert"] = certs_json(credentials.staged(store, md)) \
            if credentials.staged_complete(store, md) else {}
        obj["renewal"] = renewal
        # apache-md extras: which CA is in use, and why a staged set is not live yet
        obj["ca"]["url"] = md.ca_urls[job.ca_index % len(md.ca_urls)] if md.ca_urls else None
        if job.finished:
            waiting = (activation_state or {}).get("waiting", {}).get(md.name)
            obj["activation"] = {"state": "staged, waiting for activation",
                                 "reason": waiting or "activation pending"}
    return obj


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


def snapshot(store: Store, config: Config, now: datetime | None = None) -> dict[str, Any]:
    """Everything the WSGI handlers serve, computed once."""
    now = now or now_utc()
    mds = sorted(config.mds, key=lambda m: m.name)
    state = load_activation_state(store)
    full = {md.name: md_status(store, md, now, with_log=True, activation_state=state)
            for md in mds}
    listed = []
    for md in mds:
        obj = dict(full[md.name])
        if "renewal" in obj:
            obj["renewal"] = {k: v for k, v in obj["renewal"].items() if k != "log"}
        listed.append(obj)
    top: dict[str, Any] = {"version": MOD_MD_COMPAT_VERSION}
    if listed:
        top["managed-domains"] = listed
    domains: dict[str, str] = {}
    for md in mds:
        for d in md.domains:
            domains.setdefault(d, md.name)
    return {
        "generated": http_date(now),
        "list": top,
        "mds": full,
        "domains": domains,
        # http-01 answers only for MDs that may use it (mod_md declines otherwise)
        "http01": {md.name: md.challenges is None or "http-01" in md.challenges for md in mds},
        "cert-status": {md.name: cert_status(full[md.name],
                                             list((credentials.static_infos(md) if md.is_static
                                                   else {s.name: 0 for s in md.keyspecs}).keys()))
                        for md in mds},
        "certificate-status": config.settings.certificate_status,
    }


def write_snapshot(store: Store, config: Config) -> None:
    store.write_json("status", "snapshot", "status.json", snapshot(store, config))
