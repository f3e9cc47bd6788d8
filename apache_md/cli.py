"""`apache-md`: check, status, renew, activate, worker, apache-conf, cluster."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading

# A SIGHUP that reaches `apache-md worker` before it has its handlers (systemctl reload,
# or a reload of apache2 propagated to it, while it starts) asks for a reading of the
# configuration it is about to make anyway: it must not kill it (the default action).
_HUP_HELD = "worker" in sys.argv[1:]
if _HUP_HELD:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

from . import __version__  # noqa: E402 - after the line above, as early as can be
from .apache import includes, renames
from .ca import DRIVE_PARALLEL, ari
from .core import tailscale
from .core.job import now_utc
from .core.jsonfmt import parse_http_date
from .core.model import Config
from .core.plan import plan
from .notify import Messenger
from .status import condition, page, snapshot
from .store import certcache, credentials, facts, owner, state
from .store.fs import Store, StoreError, StoreKeyError
from .store.state import load_activation_state

DEFAULT_CONF = "/etc/apache2/apache2.conf"


def _default_level(verbose: bool) -> int:
    return logging.DEBUG if verbose else logging.INFO


def _setup_logging(verbose: bool) -> None:
    # Under systemd the journal adds time stamps itself.
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") \
        else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=_default_level(verbose), format=fmt,
                        stream=sys.stderr)
    for noisy in ("urllib3", "acme", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _loader(args, apart: bool = False):
    """`apart`: read in a child process (apache/config.load_config_apart), for the worker."""
    from .apache.config import load_config, load_config_apart

    def load() -> Config:
        config = (load_config_apart if apart else load_config)(
            args.config, server_root=args.server_root, defines=args.define)
        # `LogLevel md:<level>` is apache-md's level too (at each load: the worker's SIGHUP)
        level = config.settings.log_level
        if args.verbose or level is None:
            level = _default_level(args.verbose)
        logging.getLogger().setLevel(level)
        return config
    return load


def _load(args) -> Config | None:
    """The config, or None after printing its errors (exit 1)."""
    config = _loader(args)()
    return config if _usable(config) else None


def _usable(config: Config) -> bool:
    """Print the config's warnings and errors; False when it has errors."""
    for p in config.warnings:
        print(f"warning: {p}", file=sys.stderr)
    for p in config.errors:
        print(p, file=sys.stderr)
    return not config.errors


def _open_store(config: Config, need_key: bool = True) -> Store | None:
    """The config's store, initialised (renamed MDs followed), or None after printing
    why. Without `need_key` an unusable md_store.json is only a warning (status), and
    the store is left as it is."""
    store = Store(config.settings.store_dir)
    try:
        store.init()
    except StoreKeyError as e:
        print(f"apache-md: {e}", file=sys.stderr)
        return None if need_key else store
    except StoreError as e:
        print(f"apache-md: {e}", file=sys.stderr)
        return None
    # What the worker knows of the certificate files (store/certcache.py), as at its
    # start: at 10,000 MDs `status` parsed every certificate again (seconds). A file
    # changed since is read anew.
    certcache.load(store)
    renames.follow(store, config)
    return store


# -- check ---------------------------------------------------------------------------
def cmd_check(args) -> int:
    config = _loader(args)()
    with owner.acting_as(config.settings.store_dir):
        if not _usable(config):
            _write_generated(config, None)  # at least the fallback, so Apache can start
            return 1
        return _check(config)


def _check(config: Config) -> int:
    store_dir = config.settings.store_dir
    missing = 0
    print(f"{len(config.mds)} managed domain(s), store {store_dir}")
    store = Store(store_dir)
    broken = _write_generated(config, store)
    now = now_utc()
    for md in config.mds:
        print(f"\n{md.name}: {' '.join(md.domains)}")
        print(f"  CA: {' '.join(md.ca_urls)}   renew: {md.renew_mode.name.lower()}"
              f"   keys: {' '.join(s.name for s in md.keyspecs)}")
        if not md.is_static and not tailscale.applies(md):
            _check_challenges(config, md)
        if not md.vhosts:
            print("  no VirtualHost uses it (not renewed unless MDRenewMode always)")
        for vh in md.vhosts:
            kind = "SSL " if vh.ssl else ""
            print(f"  {kind}vhost {vh.label} at {vh.location}")
            if vh.ssl:
                inc = includes.include_path(store_dir, md.name)
                if inc not in vh.includes:
                    missing += 1
                    print(f"{vh.location}: SSL VirtualHost {vh.label} of MD {md.name} lacks "
                          f"its certificate include; add inside it:\n    "
                          f"{includes.include_line(store_dir, md.name)}")
        if store.base.exists():
            try:
                infos = credentials.active(store, md)
            except StoreError as e:
                print(f"  store: {e}")
                continue
            for name, info in infos.items():
                if info:
                    print(f"  certificate {name}: valid until {info.not_after:%Y-%m-%d %H:%M} UTC"
                          + (" (EXPIRED)" if info.not_after < now else ""))
                else:
                    print(f"  certificate {name}: missing")
                if info and md.stapling and not info.ocsp_url:
                    print(f"  certificate {name}: no OCSP responder URL, not stapled")
    _check_stapling(config)
    if certcache.loaded(store):  # what it learned, for the worker's next start
        certcache.save(store)
    return 1 if missing or broken else 0


def _write_generated(config: Config, store: Store | None) -> int:
    """What Apache includes from the store, written now (a vhost's IncludeOptional, the
    fallback in global.conf), when we may write the store; broken live sets are repaired
    first. Returns how many errors were printed (broken live sets)."""
    from .apache import activation, ctl, serving
    store = store or Store(config.settings.store_dir)
    if os.geteuid() != 0 and not os.access(store.base if store.base.exists()
                                           else store.base.parent, os.W_OK):
        print(f"note: {store.base} is not writable for this user: the generated includes "
              "were not written (run as root or as the store's owner)", file=sys.stderr)
        return 0
    try:
        store.init()
        if config.errors:
            serving.write_includes(store, None)
            return 0
        certcache.load(store)  # as _open_store: not every key proved again
        renames.follow(store, config)  # before anything is written for a new name
        repaired, _ = activation.prepare(store, config)
        snapshot.write_snapshot(store, config)  # the handlers know the MDs from now on
        pid_file = ctl.pid_file(config)
        if pid_file:
            state.save_activation_state(store, pid_file=pid_file)  # for `status`
    except StoreError as e:
        print(f"apache-md: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"apache-md: {store.describe(e)}", file=sys.stderr)
        return 1
    for name, text in repaired.items():
        print(f"error: MD {name}: {text}", file=sys.stderr)
    served = load_activation_state(store).get("served") or {}
    errors = len(repaired)
    for name, rec in (load_activation_state(store).get("repaired") or {}).items():
        if name not in repaired and served.get(name) == "fallback":
            errors += 1
            print(f"error: MD {name}: {rec.get('detail')} ({rec.get('when')}); served the "
                  "fallback until it is renewed", file=sys.stderr)
    return errors


def _check_challenges(config: Config, md) -> None:
    """The challenge types a renewal would use; a warning when some name cannot work."""
    from .ca.challenges import check_names, preferred_types
    from .core.problem import CAProblem
    types = preferred_types(md, config.settings)
    print(f"  challenges: {' '.join(types) or 'none usable'}")
    try:
        check_names(md, types, config.settings)
    except CAProblem as p:
        print(f"warning: {md.location}: MD {md.name}: {p.detail}", file=sys.stderr)


def _check_stapling(config: Config) -> None:
    """OCSP stapling needs mod_ssl to reach the relay; say so when it cannot."""
    if not (includes.staples_others(config) or any(m.stapling for m in config.mds)):
        return
    problem = includes.stapling_problem(config)
    if problem:
        print(f"\nwarning: MDStapling is on, but mod_ssl cannot staple apache-md's OCSP "
              f"responses: {problem}", file=sys.stderr)
    else:
        print(f"\nOCSP stapling: mod_ssl fetches responses from {includes.relay_url(config)}")


# -- status ---------------------------------------------------------------------------
def cmd_status(args) -> int:
    config = _load(args)
    if config is None:
        return 1
    with owner.acting_as(config.settings.store_dir):
        if owner.stranger(config.settings.store_dir):
            return _status_published(args, config)
        store = _open_store(config, need_key=False)
        if store is None:
            return 1
        md = args.name and (config.md_by_name(args.name) or config.md_for_domain(args.name))
        # the full list is printed from the bodies: no MD object is kept for it
        return _status(args, config, store, snapshot.snapshot(
            store, config, only=md.name if md else None, keep=bool(md)))


def _status_published(args, config: Config) -> int:
    """For a user who may not read the store (not root, not its owner): what /md-status
    shows, from the snapshot the worker publishes, rather than errors about files closed
    to this user."""
    store = Store(config.settings.store_dir)
    try:
        snap = snapshot.published(store)
    except (StoreError, ValueError) as e:
        print(f"apache-md: {e}", file=sys.stderr)
        return 1
    if snap is None:
        print(f"apache-md: no status published in {store.base} yet (the worker writes it), "
              "and this user may not read the store itself: run as root", file=sys.stderr)
        return 1
    print(f"note: the status published {snap.get('generated')}, as /md-status shows it "
          "(this user may not read the store; `sudo apache-md status` reads it itself)",
          file=sys.stderr)
    return _status(args, config, store, snap)


def _status(args, config: Config, store: Store, snap: snapshot.Snap) -> int:
    now = now_utc()
    if args.name:
        md = config.md_by_name(args.name) or config.md_for_domain(args.name)
        if md is None:
            print(f"apache-md: no managed domain named or covering '{args.name}'", file=sys.stderr)
            return 1
        try:
            obj = snap.md(md.name)
        except ValueError as e:
            print(f"apache-md: the status of {md.name}: {e}", file=sys.stderr)
            return 1
        if obj is None:  # a published snapshot older than the MD
            print(f"apache-md: {md.name} is not in the status published {snap.get('generated')}"
                  " yet: the worker has not seen it", file=sys.stderr)
            return 1
        if args.json:
            print(snap["bodies"][f"md:{md.name}"])
            return 0
        _print_table([obj], now)
        _print_details(obj, now)
        return 0
    if args.json:
        print(snap["bodies"]["list"])
        return 0
    _print_table(snap["list"].get("managed-domains", []), now)
    _print_broken(snap["list"].get("broken-files"))
    fleet = snap["list"].get("fleet")
    if fleet:  # as the worker saw it at its last cycle
        from .fleet.cluster import render
        print("\n" + render({"nodes": {}, "locks": {}, "published": {}, **fleet}))
        if fleet.get("error"):
            print(f"etcd unavailable at the worker's last cycle: {fleet['error']}")
    worker = state.read_worker_info(store)
    if not worker:
        print("\nNo apache-md worker is running: certificates are not renewed automatically.")
    pid_file = load_activation_state(store).get("pid-file")
    if pid_file and not _apache_runs(pid_file):
        print(f"\nApache is not running (no process for its PidFile {pid_file}): nothing "
              "is served.")
    return 0


def _apache_runs(pid_file: str) -> bool:
    from .apache import ctl
    return ctl.running(None, pid_file) is not None


def _fmt_time(text: str | None) -> str:
    dt = parse_http_date(text)
    return dt.strftime("%Y-%m-%d %H:%M") if dt else "-"


def _print_table(objs: list[dict], now) -> None:
    rows = [("NAME", "STATUS", "KEYS", "VALID UNTIL", "RENEW AT", "ACTIVITY")]
    for o in objs:
        cert = o.get("cert", {})
        keys = ",".join(k for k in cert if k != "valid") or "-"
        _, word = page.status_label(o, now)
        rows.append((o["name"], word, keys, _fmt_time(cert.get("valid", {}).get("until")),
                     _fmt_time(o.get("renew-at")), page.activity(o, now)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    for o in objs:
        err = page.last_error(o)
        if err:
            print(f"{o['name']}: last error: {err}")
        _print_broken(o.get("broken-files"), f"{o['name']}: ")


def _print_broken(entries: list[dict] | None, prefix: str = "") -> None:
    for b in entries or []:
        print(f"{prefix}broken store file {b.get('file')}: {b.get('problem')}; "
              f"{b.get('action')} ({_fmt_time(b.get('when'))})")


def _print_details(obj: dict, now) -> None:
    print()
    ca = obj.get("ca") or {}
    facts = [("names", " ".join(obj.get("domains", []))),
             ("state", obj.get("state-descr") or page.status_label(obj, now)[1]),
             ("activation", (obj.get("activation") or {}).get("detail")),
             ("CA", condition.ca_url(obj) or None), ("account", ca.get("account")),
             ("next check", _fmt_time(obj.get("next-check"))),
             ("last renewal", _fmt_time(obj.get("last-renewal")))]
    for key_type, c in (obj.get("cert") or {}).items():
        if key_type != "valid":
            facts.append((f"cert {key_type}", f"serial {c.get('serial')}, valid "
                          f"{_fmt_time(c['valid']['from'])} .. {_fmt_time(c['valid']['until'])}"))
            o = c.get("ocsp") or {}
            if "status" in o:
                until = _fmt_time((o.get("valid") or {}).get("until"))
                fetched, refresh = _fmt_time(o.get("fetched")), _fmt_time(o.get("refresh-at"))
                facts.append((f"OCSP {key_type}", f"{o['status']}, valid until {until}, "
                              f"fetched {fetched}, refresh {refresh}"))
    renewal = obj.get("renewal") or {}
    for key_type, c in (renewal.get("cert") or {}).items():
        if key_type != "valid":
            facts.append((f"staged {key_type}", f"serial {c.get('serial')}, valid "
                          f"{_fmt_time(c['valid']['from'])} .. {_fmt_time(c['valid']['until'])}"))
    width = max(len(k) for k, _ in facts)
    for k, v in facts:
        if v:
            print(f"{k.ljust(width)}  {v}")
    entries = (renewal.get("log") or {}).get("entries") or []
    if entries:
        print("\nrenewal log (newest first):")
    for e in entries[:20]:
        print(f"  {e.get('when')}  {e.get('type')}  {e.get('status', '')} "
              f"{e.get('detail', '')}".rstrip())


# -- renew ----------------------------------------------------------------------------
def cmd_renew(args) -> int:
    config = _load(args)
    if config is None:
        return 1
    owner.become(config.settings.store_dir)
    store = _open_store(config)
    if store is None:
        return 1
    unknown = [n for n in args.names if not config.md_by_name(n)]
    if unknown:
        print(f"apache-md: unknown managed domain(s): {', '.join(unknown)}", file=sys.stderr)
        return 1
    settings = config.settings
    # the acme library: only for commands that drive
    from .ca import preflight
    from .ca.drive import Driver, drive_all
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    driver = Driver(store, settings, Messenger(settings.message_cmd, settings.notify_cmd,
                                               str(store.base)),
                    progress=None if bar else lambda md, text: _say(f"{md}: {text}"))
    fleet = None
    if settings.clustered:  # the fleet's newer sets first, and the MDs' locks held
        from .fleet.node import Fleet
        fleet = Fleet(settings, verify=preflight.check_configured)
        for name in fleet.sync(store, config):
            print(f"{name}: staged the certificates another node published")
        driver.share = fleet.share
        driver.order_saved = fleet.order_saved
    known = facts.read_all(store, config, args.names or None)
    if not args.force:
        for name in ari.refresh_all(store, config, known, now_utc()):
            known[name] = facts.read(store, config.md_by_name(name))
    decisions = plan(config, known, now_utc(), force=args.force)
    todo = [d for d in decisions if d.drive]
    for d in decisions:
        if d not in todo:
            print(f"{d.md.name}: {d.reason}")
    if fleet is not None and todo:
        todo, waiting = fleet.claim(store, todo, spread_out=False)  # asked here
        for name, holder in waiting.items():
            print(f"{name}: not renewed here: {holder}")
    renderer = snapshot.Renderer()  # bodies of the MDs that did not change
    snapshot.write_snapshot(store, config, renderer)  # the challenge handler must know the MDs

    def refresh() -> None:  # progress shows on /md-status while we drive
        try:
            snapshot.write_snapshot(store, config, renderer)
        except (StoreError, OSError):
            pass  # the final write below reports

    def done(r) -> None:
        if bar:
            bar.clear()
        _say(f"{r.md}: {r.outcome}: {r.detail}")
        if bar:
            bar.count(r.outcome == "renewed")
    if bar and todo:
        bar.start(len(todo))
    try:
        results = drive_all(driver, todo, args.parallel, refresh, done)
        if fleet is not None:
            fleet.finish(store, config, results)  # published for the others
    finally:
        if fleet is not None:
            fleet.close()  # its locks go with its lease
    if bar and todo:
        bar.end()
    snapshot.write_snapshot(store, config, renderer, persist=True)
    failed = sum(r.outcome in ("failed", "vetoed", "busy") for r in results)
    if todo and not failed:
        print("New certificates are staged; run 'apache-md activate' to put them live.")
    return 1 if failed else 0


_say_lock = threading.Lock()


def _say(line: str) -> None:
    """A line of `renew`'s, whole: print() from the drive threads wrote the text and its
    line end apart, and lines ran into each other."""
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class ProgressBar:
    """`[#####.....] 23/50 done, 1 failed` on a terminal, redrawn in place under the
    lines `renew` prints as each MD finishes."""

    WIDTH = 30

    def __init__(self, out):
        self.out = out
        self.total = self.done = self.failed = 0

    def start(self, total: int) -> None:
        self.total = total
        self.draw()

    def count(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        self.draw()

    def line(self) -> str:
        filled = self.WIDTH * self.done // max(1, self.total)
        failed = f", {self.failed} failed" if self.failed else ""
        return f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} done{failed}"

    def draw(self) -> None:
        self.out.write("\r" + self.line())
        self.out.flush()

    def clear(self) -> None:
        self.out.write("\r\033[K")

    def end(self) -> None:
        self.out.write("\n")
        self.out.flush()


# -- activate -------------------------------------------------------------------------
def cmd_activate(args) -> int:
    config = _load(args)
    if config is None:
        return 1
    with owner.acting_as(config.settings.store_dir):
        store = _open_store(config)
        return _activate(args, config, store) if store else 1


def _activate(args, config: Config, store: Store) -> int:
    from .apache.activation import activate_and_reload
    reload_cmd = shlex.split(args.reload) if args.reload else None
    report = activate_and_reload(store, config, reload_cmd, force=not args.respect_window,
                                 before_reload=lambda: snapshot.write_snapshot(store, config))
    for name, text in report.repaired.items():
        print(f"{name}: {text}", file=sys.stderr)
    for name in report.activated:
        print(f"{name}: activated")
    for name, why in report.waiting.items():
        print(f"{name}: not activated: {why}")
    for name, why in {**report.blocked, **report.failed}.items():
        print(f"{name}: activation failed: {why}", file=sys.stderr)
    snapshot.write_snapshot(store, config)
    certcache.save(store)  # what it learned, for the worker's next start (it saw every MD)
    if report.error:
        restored = " previous certificates restored;" if report.activated else ""
        print(f"apache-md: reload failed,{restored} {report.error}", file=sys.stderr)
    elif report.unloaded and reload_cmd is None:
        print(f"note: Apache runs and still serves the previous certificates of "
              f"{', '.join(report.unloaded)}: reload it (`apache-md activate --reload CMD`, "
              "or `systemctl reload apache2`); the worker does at its next check")
    # Non-zero whenever something asked for did not go live (waiting as configured,
    # for MDActivationDelay/-Window or a running renewal, is not a failure).
    unresolved = set(report.repaired) - set(report.activated)  # a broken set not replaced
    return 1 if report.failed or report.blocked or report.error or unresolved else 0


# -- worker -----------------------------------------------------------------------------
def cmd_worker(args) -> int:
    from .worker import run_worker
    # a worker that root starts renews as the store's owner, config errors or not; the
    # configuration is read apart for it too (in this process, reading 10,000 vhosts
    # loaded `cryptography` and left its peak: 10 MB at 1,000 MDs)
    if os.geteuid() == 0:
        owner.become(_loader(args, apart=True)().settings.store_dir)
    return run_worker(_loader(args, apart=True), args.reload_command, once=args.once,
                      max_parallel=args.parallel)


# -- apache-conf --------------------------------------------------------------------------
def cmd_apache_conf(args) -> int:
    config = _load(args)
    if config is None:
        return 1
    print(includes.handler_snippet(config, user=args.user, daemon=args.daemon), end="")
    return 0


# -- cluster -------------------------------------------------------------------------
def cmd_cluster(args) -> int:
    """keygen: a new fleet key; seed: publish this store; status: the fleet from etcd."""
    from .fleet import seal
    from .fleet.etcd import EtcdError
    if args.action == "keygen":
        path = args.file or _loader(args)().settings.cluster_key_file
        if not path:
            print("apache-md: cluster keygen: name the file (or set MDClusterKeyFile)",
                  file=sys.stderr)
            return 1
        try:
            kid = seal.write_new_key(path)
        except seal.SealError as e:
            print(f"apache-md: {e}", file=sys.stderr)
            return 1
        print(f"wrote fleet key {kid} to {path} (mode 0600); copy it to every node")
        return 0
    config = _loader(args)()
    if not _usable(config):
        return 1
    if not config.settings.clustered:
        print("apache-md: no MDClusterEtcd in the configuration: this server is no fleet node",
              file=sys.stderr)
        return 1
    from .fleet import cluster
    from .fleet.node import Fleet
    fleet = Fleet(config.settings)
    try:
        if args.action == "seed":
            owner.become(config.settings.store_dir)
            store = _open_store(config)
            if store is None:
                return 1
            results = cluster.seed(fleet, store, config)
            for name, what in results:
                print(f"{name}: {what}")
            return 1 if any(w.startswith("not published") for _, w in results) else 0
        v = cluster.view(fleet)
        print(json.dumps(v, indent=2) if args.json else cluster.render(v))
        return 0
    except EtcdError as e:
        print(f"apache-md: {e}", file=sys.stderr)
        return 1
    finally:
        fleet.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apache-md",
                                description="Managed TLS certificates for Apache httpd (ACME).")
    p.add_argument("--version", action="version", version=f"apache-md {__version__}")
    p.add_argument("-f", dest="config", default=DEFAULT_CONF, metavar="APACHE_CONF",
                   help=f"main Apache configuration file (default {DEFAULT_CONF})")
    p.add_argument("-d", dest="server_root", default=None, metavar="SERVER_ROOT",
                   help="ServerRoot (default: as the configuration says)")
    p.add_argument("-D", dest="define", action="append", default=[], metavar="NAME",
                   help="define a parameter for <IfDefine>, like apache2 -D")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate the configuration and list managed domains")
    s = sub.add_parser("status", help="show the managed domains and their certificates")
    s.add_argument("--json", action="store_true", help="md-status JSON")
    s.add_argument("name", nargs="?")
    r = sub.add_parser("renew", help="renew now, in the foreground")
    r.add_argument("--force", action="store_true", help="renew even if not due")
    r.add_argument("--parallel", type=int, default=DRIVE_PARALLEL,
                   help=f"MDs driven at once (default {DRIVE_PARALLEL})")
    r.add_argument("names", nargs="*", metavar="NAME")
    a = sub.add_parser("activate", help="put staged certificates live, write Apache includes")
    a.add_argument("--reload", metavar="CMD", help="then reload Apache with CMD")
    a.add_argument("--respect-window", action="store_true",
                   help="honour MDActivationInterval/MDActivationWindow (the systemd unit does)")
    w = sub.add_parser("worker", help="run the renewal worker in the foreground")
    w.add_argument("--reload-command", metavar="CMD",
                   help="how to reload Apache after activation (default: the Debian way)")
    w.add_argument("--once", action="store_true", help="one check cycle, then exit")
    w.add_argument("--parallel", type=int, default=DRIVE_PARALLEL,
                   help=f"MDs driven at once (default {DRIVE_PARALLEL})")
    c = sub.add_parser("apache-conf", help="print the Apache snippet that mounts the handlers")
    c.add_argument("--daemon", action="store_true",
                   help="run the handlers in a mod_wsgi daemon process instead of embedded "
                        "in Apache's children (for WSGIRestrictEmbedded On)")
    c.add_argument("--user", help="user of the WSGI daemon (default: Apache's User)")
    f = sub.add_parser("cluster", help="the fleet (MDClusterEtcd): status, seed, keygen")
    f.add_argument("action", choices=("status", "seed", "keygen"),
                   help="status: nodes, locks, what each node serves; seed: publish this "
                        "server's certificates and accounts; keygen: write a new fleet key")
    f.add_argument("file", nargs="?", help="keygen: where (default MDClusterKeyFile)")
    f.add_argument("--json", action="store_true", help="status as JSON")
    return p


COMMANDS = {"cluster": cmd_cluster, "check": cmd_check, "status": cmd_status, "renew": cmd_renew,
            "activate": cmd_activate, "worker": cmd_worker, "apache-conf": cmd_apache_conf}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if _HUP_HELD and args.command != "worker":
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # "worker" was an argument's value
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except StoreError as e:
        print(f"apache-md: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        from .store.fs import describe
        print(f"apache-md: {describe(e)}", file=sys.stderr)
        return 1



