"""apache-md with the CPU of chosen functions counted per call (bench/issuance.py --cpu).

Run as `python bench/cpuacct.py OUT -- <apache-md arguments>`: each function named
in SPOTS is wrapped to add the CPU its calling thread spent inside it
(time.thread_time(): a thread waiting for the interpreter lock, the network or a
key is not counted) to a total per name, written to OUT as JSON at exit. Calls
nested in another counted call count for both. Unlike a profiler this slows
nothing but the wrapped calls (a few us each), so the totals are what a plain
run spends.
"""
from __future__ import annotations

import atexit
import functools
import importlib
import json
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPOTS = [
    "apache_md.ca.drive:Driver.run",
    "apache_md.ca.drive:Driver._progress",
    "apache_md.ca.drive:Driver._save",
    "apache_md.ca.drive:Driver._succeeded",
    "apache_md.ca.drive:Driver._authorize",
    "apache_md.ca.drive:Driver._run_locked",
    "apache_md.ca.drive:Driver._obtain",
    "apache_md.ca.drive:md_lock",
    "apache_md.ca.drive:md_to_json",
    "apache_md.ca.accounts:obtain",
    "apache_md.ca.client:CAConnection.new_order",
    "apache_md.ca.client:CAConnection.answer",
    "apache_md.ca.client:CAConnection.await_authorizations",
    "apache_md.ca.client:CAConnection.finalize",
    "apache_md.ca.client:CAConnection.download",
    "apache_md.ca.client:_Network._get_nonce",
    "apache_md.core.crypto:make_csr",
    "apache_md.core.crypto:load_chain",
    "apache_md.core.crypto:key_matches_cert",
    "apache_md.core.crypto:key_to_pem",
    "apache_md.store.credentials:staged",
    "apache_md.store.credentials:active",
    "apache_md.ca.drive:Driver._set_up",
    "apache_md.ca.drive:Driver._tear_down",
    "apache_md.ca.drive:Driver._drop_order",
    "apache_md.ca.drive:Driver._save_order",
    "apache_md.ca.client:_Network._send_once",
    "apache_md.ca.client:_Network._wrap_in_jws",
    "apache_md.ca.client:CAConnection.call",
    "apache_md.ca.http:Session.request",
    "apache_md.store.fs:Store.write_bytes",
    "apache_md.store.fs:Store.write_json",
    "apache_md.store.jobs:save",
    "apache_md.store.castats:record",
    "apache_md.core.jsonfmt:dumps",
    "apache_md.core.crypto:generate_key",
    "apache_md.core.crypto:generate_key_rsa",
    "apache_md.status.snapshot:write_snapshot",
    "apache_md.status.snapshot:build",
    "apache_md.status.snapshot:_pieces",
    "apache_md.status.snapshot:_changed_ones",
    "apache_md.status.snapshot:_place_ones",
    "apache_md.status.snapshot:_save",
    "apache_md.status.page:render_md",
    "apache_md.status.page:view",
    "apache_md.status.metrics:md_pieces",
    "apache_md.store.fs:Batch.commit",
    "apache_md.cli:cmd_renew",
    "apache_md.cli:main",
]


def install(out: Path) -> None:
    totals: dict[str, list[float]] = {}
    lock = threading.Lock()

    def wrap(name, fn):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            cpu = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - cpu
                with lock:
                    t = totals.setdefault(name, [0, 0.0])
                    t[0] += 1
                    t[1] += spent
        return counted

    for spot in SPOTS:
        mod_name, _, attr = spot.partition(":")
        mod = importlib.import_module(mod_name)
        owner, _, fn_name = attr.rpartition(".")
        target = getattr(mod, owner) if owner else mod
        if not callable(getattr(target, fn_name)) or \
                isinstance(vars(target).get(fn_name) if owner else None, property):
            raise SystemExit(f"cpuacct: {spot} is not a function")
        setattr(target, fn_name, wrap(spot.split(":")[1], getattr(target, fn_name)))

    # the store's writes per file name (job.json, md.json, ...): which ones a run repeats
    from apache_md.store.fs import Store
    written: dict[str, list[float]] = {}
    write_bytes = Store.write_bytes

    def counted_write(self, group, name, file, *args, **kwargs):
        cpu = time.thread_time()
        try:
            return write_bytes(self, group, name, file, *args, **kwargs)
        finally:
            spent = time.thread_time() - cpu
            with lock:
                t = written.setdefault(f"write {group}/*/{file}", [0, 0.0])
                t[0] += 1
                t[1] += spent
    Store.write_bytes = counted_write

    def dump() -> None:
        rows = {k: {"calls": n, "cpu": round(c, 4)}
                for k, (n, c) in (totals | written).items()}
        rows["process"] = {"calls": 1, "cpu": round(time.process_time(), 4)}
        out.write_text(json.dumps(rows, indent=1))

    atexit.register(dump)


def report(path: Path) -> list[str]:
    rows = json.loads(path.read_text())
    return [f"{v['cpu']:8.3f} s {v['calls']:6}  {k}"
            for k, v in sorted(rows.items(), key=lambda kv: -kv[1]["cpu"])]


if __name__ == "__main__":
    target = Path(sys.argv[1])
    argv = sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
    install(target)
    from apache_md.cli import main as cli_main
    raise SystemExit(cli_main(argv))
