"""The status snapshot: every body the WSGI handlers serve, rendered once.

Whoever changes the store (worker, activation, `renew`) rebuilds it, so the
handlers answer without parsing a certificate or serializing anything. It is
an index and one file of pieces per MD:

  status/snapshot/status.json      the index: what the handlers look up (the MDs'
                                   names, their piece files, the domains, the OCSP
                                   relay's index) and the templates of the list, the
                                   list page and the metrics, with a slot where every
                                   MD's piece goes
  status/snapshot/md/<digest>.json one MD's pieces: its md-status JSON, page and
                                   certificate-status, its entry in the list, its row
                                   of the list page, its metrics lines
  status/snapshot/generation       a counter bumped after every index, which the
                                   handlers compare instead of a stat() per request
  status/snapshot/one/<name>.json  an MD's md-status JSON alone, byte for byte what
                                   /md-status/<name> answers, for Apache to serve
                                   itself (apache/includes.py: mod_rewrite sends
                                   plain requests for an MD's name there, at about
                                   two thirds of a WSGI request's cost); written with
                                   the index, after it, before the counter

A piece file is named by the digest of its content and never changes: an MD's
file is written again only when what it says changed, so a cycle over
thousands of unchanged MDs writes the index alone, and a handler that read a
file keeps it for as long as the index names it. wsgi/app.py's View reads and
fills them; `published()` reads them through it, so the format has one reader.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Iterator

from .. import MOD_MD_COMPAT_VERSION, __version__
from ..core.job import now_utc
from ..core.jsonfmt import dumps, http_date
from ..core.facts import MDFacts
from ..core.model import Config, RenewMode
from ..store import broken, castats, staples
from ..store.fs import ONE_NAME, STATUS, STATUS_ONE, Batch, Store, StoreError, atomic_write
from ..store.changes import stamp
from ..store.locks import store_lock
from ..store.state import (
    activation_requested,
    load_activation_state,
    read_fleet_view,
    read_worker_info,
)
from ..wsgi import app
from . import condition, metrics, page
from ..store.facts import read as read_facts, signature_of as facts_signature
from .mdstatus import _cert_status_keys, _without_logs, cert_status, md_status, next_check

SNAPSHOT = (STATUS, "snapshot", "status.json")  # the index
PIECES = "md"  # the directory of the piece files, next to the index
GENERATION = "generation"  # bumped after every index: the handlers compare it
# MD names whose file the rewrite in the handler snippet looks for
_ONE_NAME = re.compile(f"^{ONE_NAME}$")
MDS_SLOT = "<apache-md:managed-domains>"
ROWS_SLOT = "<!--apache-md:rows-->"


class _Made:
    """What one MD's pieces were made from (hashes of the inputs, so that the render
    cache holds no copy of them: at 10,000 MDs that was most of the worker's memory),
    and where they are: their file, and the texts until the file is written.

    `inputs` are what its md-status object was made of (the MD, its facts object, what
    the worker and the last activation say about it), `until` the first time the clock
    changes it (None: at once), `own` and `check` its next-check: while all hold, the
    MD's pieces stand as they are and nothing of it is made again."""

    __slots__ = ("obj", "page", "state", "file", "pieces", "inputs", "until", "own",
                 "check", "renewal", "digest")

    def __init__(self, obj: int | None, page_key: tuple, state: Any, file: str,
                 pieces: dict[str, str] | None):
        self.obj, self.page, self.state, self.file, self.pieces = \
            obj, page_key, state, file, pieces
        self.inputs = self.until = self.own = self.check = self.renewal = None
        self.digest: str | None = None  # of `inputs`, the same in the next process (MADE)


class Renderer:
    """The pieces of the last snapshot, by MD.

    While a drive runs the snapshot is rebuilt twice a second, the worker rebuilds it
    every cycle, and most MDs have not changed: hashing their objects is far cheaper
    than rendering them again. Whoever writes snapshots repeatedly keeps one; each
    snapshot keeps only the MDs it has, so MDs that left the configuration leave it.
    """

    def __init__(self) -> None:
        self._last: dict[str, _Made] = {}
        self.written: set[str] = set()  # piece files this writer knows are on disk
        self.index: tuple | None = None  # the index file as this writer last wrote it
        # MD -> the piece file its one/ file was made from, and a hash of that file's
        # identity (what the next process checks before it believes MADE)
        self.one: dict[str, tuple[str, int]] = {}
        self.planned: dict[str, Any] | None = None  # the worker info next-check shows
        self.saved: dict[str, list] | None = None  # MADE as the last writer left it
        self.dirty = False  # something MADE holds changed since this writer saved it
        self.saved_at: float | None = None  # monotonic time of its last save

    def made(self, name: str) -> _Made | None:
        return self._last.get(name)


def _hash(text: str) -> int:
    return hash(text)  # compared within one process only


def _compact(obj: Any) -> str:
    # Compact: only the handlers read it, and the indented form takes Python's
    # slow encoder.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _pieces(store: Store, r: Renderer, name: str, obj: dict[str, Any], now: datetime,
            ctx: page.PageContext, cs_keys: list[str], page_ctx: tuple) -> _Made:
    """The MD's pieces, made again only where their inputs changed."""
    obj_key = _hash(_compact(obj))
    last = r.made(name)
    v = None
    page_key = last.page if last else None
    moment = page.moment(obj, now)
    if last is None or last.obj != obj_key or (moment, page_ctx) != last.page[1:]:
        v = page.view(obj, now)
        page_key = (_hash(_compact(v[0])), moment, page_ctx)
    state = condition.state(obj, now)
    if last is not None and last.obj == obj_key and last.page == page_key \
            and last.state == state:
        return last
    old = _old_pieces(store, last)
    out: dict[str, str] = {}
    if old is not None and last.obj == obj_key:
        out.update((k, old[k]) for k in ("md", "cs", "entry") if k in old)
    else:
        out["md"] = dumps(obj)
        out["cs"] = dumps(cert_status(obj, cs_keys))
        # its place in the list: indented as json.dumps(indent=2) nests it; the same
        # text when there are no logs to leave out (the indented dump is Python's slow
        # encoder: one of the three a restart makes of each MD)
        listed = _without_logs(obj)
        out["entry"] = (out["md"] if listed == obj else dumps(listed)).replace("\n", "\n    ")
    if old is not None and last.page == page_key:
        out.update((k, old[k]) for k in ("html", "row") if k in old)
    else:
        v = v or page.view(obj, now)
        out["html"] = page.render_md(*v, ctx)
        out["row"] = page.list_row(*v)
    if old is not None and last.obj == obj_key and last.state == state:
        out.update((k, t) for k, t in old.items() if k.startswith("m:"))
    else:
        out.update(metrics.md_pieces(obj, now))
    text = _compact(out)
    file = hashlib.blake2b(text.encode(), digest_size=16).hexdigest() + ".json"
    return _Made(obj_key, page_key, state, file, out)


def _old_pieces(store: Store, last: _Made | None) -> dict[str, str] | None:
    """The pieces `last` made: kept until written, then read back from their file."""
    if last is None:
        return None
    if last.pieces is not None:
        return last.pieces
    try:
        with open(_pieces_dir(store) / last.file, "rb") as f:
            got = json.loads(f.read())
        return got if isinstance(got, dict) else None
    except (OSError, ValueError):
        return None


# What a writer made, for the next process (`apache-md activate`, a restarted worker):
# per MD a digest of the inputs of its pieces and what else a _Made holds, and which
# piece file each one/ file was made from. A new writer takes an MD's pieces from it
# rather than making them again when its inputs give the same digest (at 10,000 MDs,
# making every MD again was 18-20 s of a restarted worker's first cycle). Its loss
# costs that work only: piece files are named by their content, and the digest covers
# everything they are made of, so a stale entry is never taken.
MADE = (STATUS, "snapshot", "made.json")
# A writer saves it at most this often (and when asked to, at a stop): while a drive
# rewrites the snapshot twice a second, 10,000 entries each time would be a tenth of
# the write.
SAVE_EVERY = 30.0
_PIECE_FILE = re.compile(r"^[0-9a-f]{32}\.json$")


@functools.cache
def _code() -> str:
    """apache-md's modules as this process runs them (and Python's version, which the
    facts' signature hash depends on): MADE is believed by the same code only."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.blake2b(f"{__version__} {sys.version}".encode(), digest_size=16)
    for where, _, names in sorted(os.walk(root)):
        for name in sorted(n for n in names if n.endswith(".py")):
            st = os.stat(os.path.join(where, name))
            h.update(f"{where}/{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _digest(signature: int, inputs: tuple, settings_key: str) -> str:
    """The inputs of an MD's pieces, the same in the next process: its facts by the
    signature of the files they were read from (store/facts.py), the rest by repr
    (dataclasses, strings, numbers, datetimes: no object addresses)."""
    md, _facts, _settings, *rest = inputs
    text = repr((signature, md, settings_key, rest))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _revive(entry: Any, inputs: tuple, digest: Callable[[], str | None]) -> _Made | None:
    """An MD's _Made as MADE has it, when its inputs are what they were then."""
    try:
        want, file, until, own, check, condition, renewal = entry
        if not (isinstance(file, str) and _PIECE_FILE.match(file) and isinstance(condition, str)
                and isinstance(renewal, (str, type(None)))):
            return None
        if want != digest():
            return None
        # what the list needs of its page key (its condition): one for all of each kind
        key = _REVIVED.setdefault(condition, (None, page.Moment(condition, False, None), None))
        m = _Made(None, key, None, file, None)
        m.until, m.own = (None if t is None else datetime.fromisoformat(t) for t in (until, own))
        m.check = m.own if check == own else None if check is None else \
            datetime.fromisoformat(check)
    except (TypeError, ValueError):
        return None
    m.inputs, m.digest, m.renewal = inputs, want, renewal and sys.intern(renewal)
    return m


_REVIVED: dict[str, tuple] = {}


def _load(store: Store, r: Renderer) -> None:
    r.saved = {}
    try:
        with open(store.path(*MADE), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return
    if not isinstance(data, dict) or data.get("code") != _code():
        return
    mds, planned, one = data.get("mds"), data.get("planned"), data.get("one")
    files: dict[str, str] = {}  # a piece file's name once for its MD and its one/ file
    if isinstance(mds, dict):
        r.saved = mds
        for e in mds.values():
            if isinstance(e, list) and len(e) > 1 and isinstance(e[1], str):
                e[1] = files.setdefault(e[1], e[1])
    if isinstance(planned, dict):
        r.planned = planned
    if isinstance(one, dict):
        r.one = {name: (files.get(v[0], v[0]), v[1]) for name, v in one.items()
                 if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                 and isinstance(v[1], int)}
        _check_ones(store, r)


def _check_ones(store: Store, r: Renderer) -> None:
    """Forget the one/ files that are not as this writer left them (another wrote them,
    or someone by hand): those are compared with their pieces again."""
    d = os.fspath(store.path(*STATUS_ONE))
    for name, (_, ident) in list(r.one.items()):
        try:
            same = _one_identity(os.stat(os.path.join(d, f"{name}.json"))) == ident
        except OSError:
            same = False
        if not same:
            del r.one[name]


def _one_identity(st: os.stat_result) -> int:
    return hash(stamp(st))  # ints only: the same in the next process


def _save(store: Store, r: Renderer, built: Built, persist: bool | None) -> None:
    """MADE, when it changed: `persist` None at most every SAVE_EVERY, True now."""
    if not r.dirty or persist is False:
        return
    clock = time.monotonic()
    if persist is None and r.saved_at is not None and clock - r.saved_at < SAVE_EVERY:
        return
    iso = lambda t: None if t is None else t.isoformat()  # noqa: E731
    mds = {name: [m.digest, m.file, iso(m.until), iso(m.own), iso(m.check),
                  m.page[1].condition, m.renewal]
           for name, m in built.made.items() if m.digest is not None and m.until is not None}
    data = {"code": _code(), "planned": r.planned, "mds": mds,
            "one": {name: list(v) for name, v in r.one.items() if name in built.made}}
    # not synced: its loss costs the work it saves, nothing else
    atomic_write(store.path(*MADE), _compact(data).encode(), 0o644, durable=False)
    r.dirty, r.saved_at = False, clock


def _at_hand(where: str, r: Renderer, m: _Made) -> bool:
    """Are the pieces of `m` in memory or on disk (another writer may have taken them)?
    `where`: the pieces' directory. A file found there is one the writer need not look
    for again (a restart's first snapshot looked for each of 10,000 twice)."""
    if m.pieces is not None or m.file in r.written:
        return True
    if os.path.exists(os.path.join(where, m.file)):
        r.written.add(m.file)
        return True
    return False


def _pieces_dir(store: Store):
    return store.path(STATUS, "snapshot", PIECES)


class Built:
    """One snapshot: the index, every MD's pieces (`made`) and, if kept, its md-status
    objects (`mds`)."""

    def __init__(self, index: dict[str, Any], made: dict[str, _Made],
                 mds: dict[str, dict[str, Any]]):
        self.index, self.made, self.mds = index, made, mds


def build(store: Store, config: Config, now: datetime | None = None,
          renderer: Renderer | None = None, keep: bool = True,
          facts: Mapping[str, MDFacts] | None = None,
          emit: Callable[[_Made], None] | None = None, only: str | None = None) -> Built:
    """The snapshot, one MD at a time: `keep` False (a writer) holds no MD's md-status
    object longer than it takes to make its pieces (at 10,000 MDs, all of them at once
    were most of the worker's peak memory), and `emit` gets each MD's new pieces as
    they are made (the writer writes them then, rather than holding them all).
    `facts`: the MDs' facts as the caller read them in this cycle (others are read).
    `only`: that MD's alone (`apache-md status <name>`: at 10,000 MDs the others were
    most of its time); not for a writer, whose index must name every MD."""
    now = now or now_utc()
    r = renderer or Renderer()
    if r.saved is None:
        _load(store, r)  # a new writer: what the last one made
    worker = read_worker_info(store)
    # next-check shows what the running worker plans, or once it stopped what it had
    # planned: rewriting every MD's pieces to say that no worker runs was most of a
    # stop and of the next start at 10,000 MDs (the list page and the metrics say it)
    planned = worker or r.planned
    if planned != r.planned:
        r.planned, r.dirty = planned, True
    requested = activation_requested(store)
    act_state = load_activation_state(store)
    mds = sorted((md for md in config.mds if only is None or md.name == only),
                 key=lambda m: m.name)
    settings = config.settings
    ctx = page.PageContext(worker_pid=worker.get("pid") if worker else None,
                           check=settings.certificate_check,
                           last_reload=act_state.get("last-reload"),
                           activation_error=act_state.get("error"))
    full: dict[str, dict[str, Any]] = {}
    made: dict[str, _Made] = {}
    page_ctx = (ctx.check, ctx.refresh)  # what an MD's page says of them (page.META)
    waiting, served, repaired, unloaded = (act_state.get(k) or {} for k in (
        "waiting", "served", "repaired", "unloaded"))

    settings_key: list[str] = []  # repr(settings), made once when first needed
    where = os.fspath(_pieces_dir(store))

    def digest(md, f, inputs) -> str | None:
        sig = facts_signature(store, md, f)
        if sig is None:
            return None
        if not settings_key:
            settings_key.append(repr(settings))
        return _digest(sig, inputs, settings_key[0])

    def one(md, shown: list[dict[str, Any]] | None) -> None:
        f = (facts or {}).get(md.name) or read_facts(store, md)
        # whether a worker runs shows only in a staged MD's activation detail
        gone_live = unloaded.get(md.name)
        inputs = (md, f, settings, bool(worker) if f.staged_finished or gone_live else None,
                  md.name in (requested or ()), waiting.get(md.name), served.get(md.name),
                  _compact(repaired.get(md.name)), _compact(shown), page_ctx, gone_live)
        last = r.made(md.name)
        if last is None and r.saved:
            last = _revive(r.saved.pop(md.name, None), inputs, lambda: digest(md, f, inputs))
        if last is not None and last.until is not None and now < last.until \
                and last.inputs == inputs and last.check == next_check(last.own, now, planned) \
                and _at_hand(where, r, last):
            old = _old_pieces(store, last) if keep else None
            if not keep or old is not None:
                made[md.name] = last  # nothing it is made of changed
                if emit is not None:
                    emit(last)
                if keep:
                    full[md.name] = json.loads(old["md"])
                return
        notes: dict[str, Any] = {}
        obj = md_status(store, md, now, with_log=True, worker=worker, requested=requested,
                        activation_state=act_state, settings=settings, facts=f, notes=notes,
                        planned=planned)
        if shown:
            obj["broken-files"] = shown
        m = made[md.name] = _pieces(store, r, md.name, obj, now, ctx, _cert_status_keys(md),
                                    page_ctx)
        m.inputs, m.until, m.own = inputs, _until(md, obj, notes, now), notes["own"]
        m.check, m.renewal = next_check(m.own, now, planned), metrics.renewal_state(obj)
        m.digest = digest(md, f, inputs)
        r.dirty = True
        if emit is not None:
            emit(m)
        if keep:
            full[md.name] = obj
    seen = _broken_by_md(store, now)
    for md in mds:
        one(md, seen.get(md.name))
    ca_stats = castats.load(store)
    stapled = staples.targets(store, config)
    rows = staples.rows(store, stapled, settings)
    # Files found broken while reading (the reads record them): their MDs once more.
    found = _broken_by_md(store, now)
    for md in mds:
        if found.get(md.name) != seen.get(md.name):
            one(md, found.get(md.name))
    store_broken = found.get("")
    domains: dict[str, str] = {}
    for md in mds:
        for d in md.domains:
            domains.setdefault(d, md.name)
    if made.keys() != r._last.keys():
        r.dirty = True  # MDs left
    r._last = made
    r.saved = {}  # what was not taken is no more
    # mod_md's list (status_get_json): the MDs without job logs, in name order
    top: dict[str, Any] = {"version": MOD_MD_COMPAT_VERSION}
    if mds:
        top["managed-domains"] = [MDS_SLOT]
    if store_broken:
        top["broken-files"] = store_broken
    progress = metrics.progress(made[md.name].renewal for md in mds)
    fleet = read_fleet_view(store)
    if fleet:
        top["fleet"] = fleet  # apache-md's: nodes, lock holders, what each node serves
    conditions = [made[md.name].page[1].condition for md in mds]  # page key: its Moment
    index = {
        "format": app.FORMAT,
        "generated": http_date(now),
        # what the pages' GENERATED mark becomes: the handlers cannot import the page
        "generated-page": page.date(now),
        # what the MDs' pages say of the worker and the last reload (their META mark)
        "meta-page": page.meta(ctx),
        "pieces": [[md.name, made[md.name].file] for md in mds],
        "templates": {
            "list": _template(dumps(top), f'"{MDS_SLOT}"', ["entry", ",\n    "]),
            "html": _template(page.render_list([ROWS_SLOT], conditions, ctx, progress, fleet),
                              ROWS_SLOT, ["row", ""]),
            "metrics": metrics.template(ca_stats, worker, now, rows, progress, fleet),
        },
        "domains": domains,
        # http-01 answers only for MDs that may use it (mod_md declines otherwise)
        "http01": {md.name: md.challenges is None or "http-01" in md.challenges for md in mds},
        # MDs mod_md does not renew itself (manual, static files): without an answer of
        # ours the path is the site's (PR62189: another ACME client's webroot)
        "http01-shared": sorted(md.name for md in mds if md.renew_mode == RenewMode.MANUAL
                                or (md.is_static and md.renew_mode == RenewMode.AUTO)),
        "certificate-status": settings.certificate_status,
        # OCSP: what the relay answers mod_ssl with, and one row per stapled certificate
        "ocsp-relay": staples.relay_index(stapled),
        "staplings": rows,
    }
    return Built(index, made, full)


# However well the inputs of an MD's pieces are known, they are made again within this
# time (spread over the MDs by name, so that no one cycle makes them all).
REMAKE = timedelta(hours=6)


def _until(md, obj: dict[str, Any], notes: dict[str, Any], now: datetime) -> datetime | None:
    """The first time after `now` at which the clock alone changes an MD's md-status
    object or its pieces (mdstatus.md_status's notes; page.moment: condition, renew
    window open, the bar's whole percent; metrics: condition.state); None: at once."""
    if notes["moving"]:
        return None  # renew-at is "now": incomplete
    times = [notes["at"], now + REMAKE * (1 + zlib.crc32(md.name.encode()) % 64 / 64)]
    job = notes["job"]
    if job is not None:
        times += [job.next_run, job.valid_from]
    marks = page.window_marks(obj)
    if marks is not None:
        start, end = marks["from"], marks["until"]
        times.append(end)  # expired
        total = (end - start).total_seconds()
        done = min(max((now - start).total_seconds(), 0), total)
        mark = int(100 * done // total)
        if mark < 100:
            times.append(start + timedelta(seconds=total * (mark + 1) / 100))
    later = [t for t in times if t is not None and t > now]
    return min(later) if later else None


def _template(text: str, slot: str, fill: list[str]) -> list:
    head, found, tail = text.partition(slot)
    return [head, fill, tail] if found else [text]


def _broken_by_md(store: Store, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """`broken-files` (apache-md): store files found broken during the last week, by MD
    ("": the store's own files, shown in the list)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in broken.recent(store, now):
        out.setdefault(e.get("md") or "", []).append({k: v for k, v in e.items() if k != "md"})
    return out


class Bodies(Mapping):
    """The bodies of a snapshot by the handlers' keys ("list", "md:<name>", ...), made
    from its pieces by wsgi/app.py's View, as the handlers make them."""

    def __init__(self, view: app.View):
        self.view = view
        self._list: str | None = None
        self._keys = ["list", "html", "metrics"] + [
            f"{kind}:{name}" for name in view.files for kind in ("md", "html", "cs")]

    def __getitem__(self, key: str) -> str:
        if key == "list" and self._list is not None:
            return self._list
        try:
            text = self.view.text(key)
        except app.StaleView as e:
            raise ValueError(f"{e}: a piece file of the snapshot is gone") from None
        if text is None:
            raise KeyError(key)
        if key == "list":  # made of every MD's piece file, which a writer may clean away
            self._list = text
        return text

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class Snap(dict):
    """A snapshot as a dict: the index's entries and `bodies` (Bodies); `list` (the
    md-status list) and `mds` (every MD's md-status object by name) are parsed from the
    bodies on first use, so that a reader who wants the list's text, or one MD, does not
    hold 10,000 MD objects. md() is one MD's object (None: not in the snapshot).
    ValueError when a body is gone or does not parse."""

    def __missing__(self, key: str) -> Any:
        if key == "list":
            got = json.loads(self["bodies"]["list"])
        elif key == "mds":
            got = {name: self.md(name) for name in self["bodies"].view.files}
        else:
            raise KeyError(key)
        self[key] = got
        return got

    def md(self, name: str) -> dict[str, Any] | None:
        mds = dict.get(self, "mds")
        if mds is not None:
            return mds.get(name)
        text = self["bodies"].get(f"md:{name}")
        return None if text is None else json.loads(text)


def _view(store: Store, built: Built) -> app.View:
    # made once and read once: keeping what it reads would hold every MD's pieces
    view = app.View(str(store.base), built.index, cache=False)
    view.pieces.update((m.file, m.pieces) for m in built.made.values()
                       if m.pieces is not None)
    return view


def snapshot(store: Store, config: Config, now: datetime | None = None,
             renderer: Renderer | None = None, only: str | None = None,
             keep: bool = True) -> Snap:
    """Everything the WSGI handlers serve (Snap); nothing is written. `only`: of that MD
    alone (build()). `keep` False: the MD objects are not kept as they are made
    (`mds` is then parsed from the bodies if asked for): the full list at 10,000 MDs."""
    built = build(store, config, now, renderer, keep=keep, only=only)
    snap = Snap(built.index)
    if keep:
        snap["mds"] = built.mds
    snap["bodies"] = Bodies(_view(store, built))
    return snap


def write_snapshot(store: Store, config: Config, renderer: Renderer | None = None,
                   now: datetime | None = None,
                   facts: Mapping[str, MDFacts] | None = None,
                   persist: bool | None = None) -> None:
    """Build the snapshot and publish it: the piece files not on disk yet, then the
    index (the handlers see the new snapshot from its rename on), then away with the
    piece files it no longer names. One writer at a time (the worker, `activate` as
    root, `renew`): another's clean-up must not take files before its index names them.
    `persist`: save what was made for the next writer (MADE) now (True), at most every
    SAVE_EVERY (None: a writer's first snapshot saves at once) or not (False)."""
    r = renderer or Renderer()
    with store_lock(store, "status-snapshot"):
        index_path = store.path(*SNAPSHOT)
        if r.index is not None and _identity(index_path) != r.index:
            r.written.clear()  # another writer came between: its clean-up may have run
            _check_ones(store, r)
        d = _pieces_dir(store)
        where = os.fspath(d)
        batch = Batch()  # the new pieces and one/ files, made durable with one sync

        def emit(m: _Made) -> None:
            # As soon as it is made: the texts of every MD at once were the peak of the
            # first snapshot of a worker (10 KB per MD).
            if m.file not in r.written:
                if not os.path.exists(os.path.join(where, m.file)):
                    batch.add(d / m.file, _compact(m.pieces).encode(), 0o644)
                r.written.add(m.file)
            m.pieces = None  # on disk: read back when they are needed again
        try:
            built = build(store, config, now, r, keep=False, facts=facts, emit=emit)
            names = {m.file for m in built.made.values()}
            batch.commit(d)  # the files before the index that names them
            ones = _changed_ones(store, r, built, batch)  # read from those files
            store.write_bytes(*SNAPSHOT, _compact(built.index).encode())
            r.index = _identity(index_path)
            _place_ones(store, r, built, ones, batch)
        finally:
            batch.discard()
        _bump(store.path(STATUS, "snapshot", GENERATION))
        _clean(d, names)
        r.written &= names
        _save(store, r, built, persist)


def _changed_ones(store: Store, r: Renderer, built: Built, batch: Batch) -> list[str]:
    """The one/ files of MDs whose pieces changed, added to `batch` where their text did
    (the others are left alone): the names of those whose file was looked at."""
    d = store.path(*STATUS_ONE)
    looked = []
    for name, m in built.made.items():
        if r.one.get(name, ("",))[0] == m.file or not _ONE_NAME.match(name):
            continue
        text = (_old_pieces(store, m) or {}).get("md")
        if not isinstance(text, str):
            continue
        body, path = text.encode("utf-8"), d / f"{name}.json"
        looked.append(name)
        try:
            with open(path, "rb") as f:
                if f.read() == body:
                    r.one[name] = (m.file, _one_identity(os.fstat(f.fileno())))
                    r.dirty = True
                    continue
        except FileNotFoundError:
            pass
        batch.add(path, body, 0o644)
    return looked


def _place_ones(store: Store, r: Renderer, built: Built, looked: list[str],
                batch: Batch) -> None:
    """The one/ files that changed in place (after the index), and away with those of
    MDs the index no longer has."""
    d = store.path(*STATUS_ONE)
    batch.commit(d)
    for name in looked:
        if r.one.get(name, ("",))[0] != built.made[name].file:
            r.one[name] = (built.made[name].file, _one_identity(os.stat(d / f"{name}.json")))
            r.dirty = True
    if set(r.one) - set(built.made) or looked:
        keep = {f"{n}.json" for n in built.made}
        for e in _entries(d):
            if e.name not in keep and not e.name.endswith(".tmp"):
                _unlink(e.path)
        for name in set(r.one) - set(built.made):
            del r.one[name]


def _entries(d) -> list[os.DirEntry]:
    try:
        return list(os.scandir(d))
    except FileNotFoundError:
        return []


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _bump(path) -> None:
    """One more on the counter the handlers map (wsgi/app.py RECHECK): in place, never
    truncated or replaced (a mapped file that shrinks kills its reader), so every
    handler sees the new value in its existing mapping."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_mode & 0o777 != 0o644:
            os.fchmod(fd, 0o644)  # whatever the umask: Apache's children read it
        old = os.pread(fd, 8, 0)
        n = int.from_bytes(old, "little") + 1 if len(old) == 8 else 1
        os.pwrite(fd, (n % 2**64).to_bytes(8, "little"), 0)
    finally:
        os.close(fd)


def _identity(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _clean(d, names: set[str]) -> None:
    """Remove the piece files no index names any more (a handler that still reads the
    previous index finds a file gone, and reads the index again)."""
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return
    for e in entries:
        if e.name not in names and not e.name.endswith(".tmp"):
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                pass


def published(store: Store) -> Snap | None:
    """The snapshot as its last writer published it (world-readable: what /md-status
    serves), with its list parsed again from the bodies (its MD objects when asked for);
    None when there is none yet. StoreError when it cannot be read, ValueError when it does not parse."""
    data = store.read_bytes(*SNAPSHOT)
    if data is None:
        return None
    where = store.path(*SNAPSHOT)
    try:
        snap = json.loads(data)
        if snap.get("format") != app.FORMAT:
            raise ValueError(f"format {snap.get('format')!r}, not {app.FORMAT}")
        snap = Snap(snap)
        snap["bodies"] = bodies = Bodies(app.View(str(store.base), snap, cache=False))
        # the list's text now (Bodies keeps it), before a writer's next snapshot may clean
        # away the piece files it is made of; an MD's own is read when asked for
        bodies["list"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{where}: not a status snapshot ({e!r})") from None
    except OSError as e:
        raise StoreError(f"{where}: {store.describe(e)}") from None
    return snap
