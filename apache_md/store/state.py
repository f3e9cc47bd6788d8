"""What the processes leave in the store for each other (`<store>/status/`).

- `worker/worker.json`: the worker's heartbeat (pid, next cycle), so status
  can tell whether renewals run at all;
- `activation/activation-requested`: MDs with staged sets, written by a worker
  that may not reload Apache and consumed by `apache-md activate` (root);
- `activation/activation.json`: when Apache was last reloaded, what waits for
  activation and why, the last activation error, what each MD's include
  serves (certificate, static files or fallback), broken live sets that were
  repaired (until the MD's next activation), and Apache's PidFile.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from ..core.jsonfmt import http_date, parse_http_date, put
from . import broken
from .fs import STATUS, Store

WORKER = (STATUS, "worker", "worker.json")
ACTIVATION_REQUEST = (STATUS, "activation", "activation-requested")
ACTIVATION_STATE = (STATUS, "activation", "activation.json")
FLEET = (STATUS, "fleet", "fleet.json")  # the fleet as the worker saw it last (fleet/cluster.py)


# -- the worker's heartbeat ----------------------------------------------------------------
def write_worker_info(store: Store, next_cycle: datetime | None) -> None:
    """Written by the worker each cycle: status tells whether renewals run at all."""
    obj: dict[str, Any] = {"pid": os.getpid()}
    put(obj, "next-cycle", http_date(next_cycle))
    store.write_json(*WORKER, obj)


def clear_worker_info(store: Store) -> None:
    store.remove(*WORKER)


def read_worker_info(store: Store) -> dict[str, Any] | None:
    """The running worker's info, None when no worker runs."""
    info = broken.read_json(store, *WORKER, "the worker writes it again at its next wake-up")
    pid = info.get("pid") if info else None
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return info


# -- the fleet -------------------------------------------------------------------------------
def write_fleet_view(store: Store, view: dict[str, Any] | None) -> None:
    """What md-status and the metrics show of the fleet; None: this is no fleet node."""
    if view is None:
        store.remove(*FLEET)
    else:
        store.write_json(*FLEET, view)


def read_fleet_view(store: Store) -> dict[str, Any] | None:
    return broken.read_json(store, *FLEET, "the worker writes it again at its next cycle")


# -- the request for activation --------------------------------------------------------------
def request_activation(store: Store, md_names: list[str]) -> None:
    """Ask the root-side unit (apache-md-activate.path) to activate these MDs."""
    store.write_bytes(*ACTIVATION_REQUEST, ("\n".join(md_names) + "\n").encode())


def take_activation_request(store: Store) -> None:
    """Consume the request first: one written while activation runs triggers it again."""
    store.remove(*ACTIVATION_REQUEST)


def activation_requested(store: Store) -> set[str]:
    data = store.read_bytes(*ACTIVATION_REQUEST)
    return set(data.decode("utf-8", "replace").split()) if data else set()


# -- activation state: when Apache was last reloaded, what waits and why ----------------
def load_activation_state(store: Store) -> dict:
    doc = broken.read_json(store, *ACTIVATION_STATE,
                           "the time of the last reload is no longer known") or {}
    if not isinstance(doc, dict):
        doc = {}
    # values of another type (the file edited by hand) count as absent: every reader
    # (check, status, the snapshot) takes these as dicts of strings
    repaired = {md: rec for md, rec in _mapping(doc.get("repaired")).items()
                if isinstance(rec, dict)}
    return {"last-reload": parse_http_date(_text(doc.get("last-reload"))),
            "waiting": _strings(doc.get("waiting")), "error": _text(doc.get("error")),
            "served": _strings(doc.get("served")), "repaired": repaired,
            "pid-file": _text(doc.get("pid-file")),
            # md -> when its set went live with no reload after it (Apache ran then and
            # still serves the previous set): the next reload is due for them
            "unloaded": _strings(doc.get("unloaded"))}


def _text(v) -> str | None:
    return v if isinstance(v, str) else None


def _mapping(v) -> dict:
    return {k: x for k, x in v.items() if isinstance(k, str)} if isinstance(v, dict) else {}


def _strings(v) -> dict[str, str]:
    return {k: x for k, x in _mapping(v).items() if isinstance(x, str)}


def save_activation_state(store: Store, *, reloaded: datetime | None = None,
                          waiting: dict | None = None, error: str | None = None,
                          served: dict | None = None, repaired: dict | None = None,
                          resolved: list[str] | None = None, pid_file: str | None = None,
                          unloaded: list[str] | None = None,
                          loaded: list[str] | None = None) -> None:
    """Update the record; `repaired` adds entries (md -> what was done), `resolved`
    drops those of MDs that got a new set, `unloaded` adds MDs whose new set went live
    without a reload (a reload clears them), `loaded` drops those Apache serves."""
    doc = load_activation_state(store)
    now = http_date(datetime.now(timezone.utc))
    if reloaded:
        doc["last-reload"] = reloaded
        doc["error"] = None
        doc["unloaded"] = {}
    doc["unloaded"].update({md: now for md in unloaded or ()})
    for md in loaded or ():
        doc["unloaded"].pop(md, None)
    if waiting is not None:
        doc["waiting"] = waiting
    if error is not None:
        doc["error"] = error
    if served is not None:
        doc["served"] = served
    if pid_file is not None:
        doc["pid-file"] = pid_file
    doc["repaired"].update({md: {"when": now, "detail": text}
                            for md, text in (repaired or {}).items()})
    for md in resolved or ():
        doc["repaired"].pop(md, None)
    out = {"last-reload": http_date(doc["last-reload"]), "waiting": doc["waiting"]}
    for key in ("error", "served", "repaired", "pid-file", "unloaded"):
        if doc.get(key):
            out[key] = doc[key]
    store.write_json(*ACTIVATION_STATE, out)
