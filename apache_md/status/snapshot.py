"""The status snapshot: every body the WSGI handlers serve, rendered once.

Whoever changes the store (worker, activation, `renew`) rebuilds it and
writes it as one file (`status/snapshot/status.json`), so the handlers answer
without parsing a certificate or serializing anything: the md-status JSON of
the list and of each MD, the HTML pages, the metrics, certificate-status per
MD, and the OCSP relay's index.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable, Iterator, TypeVar

from ..core.job import now_utc
from ..core.jsonfmt import dumps, http_date
from ..core.model import Config
from ..store import broken, castats, staples
from ..store.fs import STATUS, Store
from ..store.state import activation_requested, load_activation_state, read_worker_info
from . import condition, metrics, page
from .mdstatus import _cert_status_keys, cert_status, list_json, md_status

SNAPSHOT = (STATUS, "snapshot", "status.json")
T = TypeVar("T")


# -- the snapshot -----------------------------------------------------------------------------
class Renderer:
    """The bodies of the last snapshot, by (kind, name): (inputs, text).

    While a drive runs the snapshot is rebuilt twice a second, the worker rebuilds it
    every cycle, and most MDs have not changed: comparing their objects is far cheaper
    than rendering them again. Whoever writes snapshots repeatedly keeps one; each
    snapshot keeps only what it used, so MDs that left the configuration leave the cache.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._next: dict[tuple[str, str], tuple[Any, Any]] = {}

    def render(self, kind: str, name: str, inputs: Any, render: Callable[[], T]) -> T:
        hit = self._last.get((kind, name))
        if hit is None or hit[0] != inputs:
            hit = (inputs, render())
        self._next[(kind, name)] = hit
        return hit[1]

    def done(self) -> None:
        """One snapshot is rendered: forget what it did not use."""
        self._last, self._next = self._next, {}


def snapshot(store: Store, config: Config, now: datetime | None = None,
             renderer: Renderer | None = None) -> dict[str, Any]:
    """Everything the WSGI handlers serve, rendered once."""
    now = now or now_utc()
    r = renderer or Renderer()
    worker = read_worker_info(store)
    requested = activation_requested(store)
    act_state = load_activation_state(store)
    mds = sorted(config.mds, key=lambda m: m.name)
    full = {md.name: md_status(store, md, now, with_log=True, worker=worker,
                               requested=requested, activation_state=act_state,
                               settings=config.settings)
            for md in mds}
    ca_stats = castats.load(store)
    stapled = staples.targets(store, config)
    rows = staples.rows(store, stapled, config.settings)
    store_broken = _add_broken(full, broken.recent(store, now))  # after every other read
    top = list_json(list(full.values()))
    if store_broken:
        top["broken-files"] = store_broken
    domains: dict[str, str] = {}
    for md in mds:
        for d in md.domains:
            domains.setdefault(d, md.name)
    settings = config.settings
    ctx = page.PageContext(worker_pid=worker.get("pid") if worker else None,
                           check=settings.certificate_check,
                           last_reload=act_state.get("last-reload"),
                           activation_error=act_state.get("error"))
    # A page is rendered again when its view changes, not every minute.
    views = {name: page.view(obj, now) for name, obj in full.items()}
    html_rows = [r.render("row", name, v, lambda: page.list_row(*v)) for name, v in views.items()]
    bodies = {"list": r.render("list", "", top, lambda: dumps(top)),
              "html": page.render_list(html_rows, [m.condition for _, m in views.values()],
                                       ctx),
              "metrics": metrics.render(
                  list(full.values()), ca_stats, worker, now, rows,
                  per_md=lambda obj: r.render("metrics", obj["name"],
                                              (obj, condition.state(obj, now)),
                                              lambda: metrics.md_samples(obj, now)))}
    for md in mds:
        obj, v = full[md.name], views[md.name]
        cs = cert_status(obj, _cert_status_keys(md))
        bodies[f"md:{md.name}"] = r.render("md", md.name, obj, lambda: dumps(obj))
        bodies[f"html:{md.name}"] = r.render("html", md.name, (v, ctx),
                                             lambda: page.render_md(*v, ctx))
        bodies[f"cs:{md.name}"] = r.render("cs", md.name, cs, lambda: dumps(cs))
    r.done()
    return {
        "generated": http_date(now),
        # what the pages' GENERATED mark becomes: the handlers cannot import the page
        "generated-page": page.date(now),
        "list": top,
        "mds": full,
        "domains": domains,
        # http-01 answers only for MDs that may use it (mod_md declines otherwise)
        "http01": {md.name: md.challenges is None or "http-01" in md.challenges for md in mds},
        "certificate-status": settings.certificate_status,
        "bodies": bodies,
        # OCSP: what the relay answers mod_ssl with, and one row per stapled certificate
        "ocsp-relay": staples.relay_index(stapled),
        "staplings": rows,
    }


def _add_broken(full: dict[str, dict[str, Any]], entries: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """`broken-files` (apache-md): store files found broken during the last week, put into
    the object of their MD; returns the others (the store's own files) for the list."""
    rest = []
    for e in entries:
        shown = {k: v for k, v in e.items() if k != "md"}
        obj = full.get(e.get("md") or "")
        if obj is None:
            rest.append(shown)
        else:
            obj.setdefault("broken-files", []).append(shown)
    return rest


def write_snapshot(store: Store, config: Config,
                   renderer: Renderer | None = None) -> dict[str, Any]:
    snap = snapshot(store, config, renderer=renderer)
    # The handlers need only what they serve; the objects stay for `status`.
    served = {k: v for k, v in snap.items() if k not in ("list", "mds")}
    store.write_bytes(*SNAPSHOT, _compact_chunks(served))
    return snap


def published(store: Store) -> dict[str, Any] | None:
    """The snapshot as its last writer published it (world-readable: what /md-status
    serves), with its list and MD objects parsed again from the bodies; None when there
    is none yet. StoreError when it cannot be read, ValueError when it does not parse."""
    data = store.read_bytes(*SNAPSHOT)
    if data is None:
        return None
    try:
        snap = json.loads(data)
        bodies = snap["bodies"]
        snap["list"] = json.loads(bodies["list"])
        snap["mds"] = {key[3:]: json.loads(body) for key, body in bodies.items()
                       if key.startswith("md:")}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{store.path(*SNAPSHOT)}: not a status snapshot ({e!r})") from None
    return snap


def _compact(obj: Any) -> str:
    # Compact: only the handlers read it, and the indented form takes Python's
    # slow encoder (a third of the writing time with a thousand MDs).
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _compact_chunks(served: dict[str, Any]) -> Iterator[bytes]:
    """_compact(served) as bytes, one body at a time: with a thousand MDs the whole
    text is ~10 MB, and held as str and bytes at once it doubled the worker's peak."""
    yield b"{"
    for i, (key, value) in enumerate(served.items()):
        head = ("," if i else "") + _compact(key) + ":"
        if key == "bodies" and isinstance(value, dict):
            yield (head + "{").encode()
            for j, (name, body) in enumerate(value.items()):
                yield (("," if j else "") + _compact(name) + ":" + _compact(body)).encode()
            yield b"}"
        else:
            yield (head + _compact(value)).encode()
    yield b"}"
