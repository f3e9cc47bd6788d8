#!/usr/bin/env python3
"""The scale curve: how each cost grows with the number of managed domains.

For every size N (default 100 and 1000; `make bench-scale` adds 10000) the
script builds N MDs with valid certificates from a local CA in mod_md's store
layout (bench/worker_scale.py), with one SSL vhost each, and measures:

  config read       CPU of reading the Apache configuration (apache-md's reader)
  worker RSS        a live worker after its first check cycle (VmRSS; PSS), started
                    first on the new store, then again (a restart: what the first
                    run kept of the certificates spares it parsing them)
  restart           CPU of a restarted live worker until its first cycle is done
                    (the worker itself; the child reading the configuration
                    apart), with the load average at the time
  check cycle       CPU of one steady Worker.cycle() (first one in brackets)
  snapshot          size of the index (status/snapshot/status.json, written every
                    time) and of the MDs' piece files (written when an MD changes),
                    CPU of a steady write and of a fresh writer's (`activate`)
  md-status list    requests/s of the full /md-status list (wrk), against mod_md's
  Apache memory     PSS of all Apache processes (+ the worker for apache-md)
  graceful reload   wall time from `apache2 -k graceful` until the new generation
                    answers, with apache-md's includes against mod_md's in-process
                    handling of the same store

mod_md runs as Debian ships it, on a copy of the same store with
`MDRenewMode manual` (it never talks to a CA). The table goes to stdout, and
with --readme it replaces the "Scale curve" section of bench/README.md.
Nothing is asserted.

Usage: python bench/scale.py [--sizes 100,1000,10000] [--no-mod-md] [--readme]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchenv import HTTP, HTTPS, MOD_MD, REPO, apache_md, loadavg, names, ratio, say
from worker_scale import build_store, cycle_cpu, group_memory, md_conf, run_live

from tests.harness import Apache

README = REPO / "bench" / "README.md"
SECTION = "## Scale curve"


def wrk_rate(url: str, seconds: int = 4) -> float | None:
    wrk = shutil.which("wrk")
    if not wrk:
        return None
    subprocess.run([wrk, "-t1", "-c2", "-d1s", url], capture_output=True, timeout=120)
    p = subprocess.run([wrk, "-t2", "-c8", f"-d{seconds}s", "--timeout", "30s", url],
                       capture_output=True, text=True, timeout=seconds + 120)
    m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
    if not m or "Non-2xx" in p.stdout:
        say(f"  wrk {url}: no clean rate:\n{p.stdout[-500:]}")
        return None
    return float(m.group(1))


def config_read_cpu(conf: Path) -> float:
    """CPU seconds of one load_config() in a fresh interpreter (no warm caches)."""
    code = ("import time; from apache_md.apache.config import load_config\n"
            f"t = time.process_time(); c = load_config({str(conf)!r})\n"
            "print(time.process_time() - t, len(c.mds), len(c.errors))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0])


def snapshot_cost(conf: Path) -> tuple[float, int, int, float]:
    """(CPU of a first write, bytes of the index, bytes of the MDs' piece files, CPU of a
    steady write) of the status snapshot. The first write is a fresh writer's (every MD
    rendered; the piece files are there already), the steady one the worker's next."""
    from apache_md.apache.config import load_config
    from apache_md.status import snapshot
    from apache_md.store.fs import Store

    config = load_config(str(conf))
    store = Store(config.settings.store_dir)
    renderer = snapshot.Renderer()
    t = time.process_time()
    snapshot.write_snapshot(store, config, renderer)
    first = time.process_time() - t
    t = time.process_time()
    snapshot.write_snapshot(store, config, renderer)
    steady = time.process_time() - t
    index = store.path(*snapshot.SNAPSHOT)
    pieces = sum(e.stat().st_size for e in os.scandir(index.parent / snapshot.PIECES))
    return first, index.stat().st_size, pieces, steady


def graceful_seconds(apache: Apache) -> float:
    t = time.monotonic()
    apache.graceful(timeout=600)
    return time.monotonic() - t


def mod_md_server(store: Path, domains: list[str]) -> Apache:
    mm = Apache(http_port=HTTP, https_port=HTTPS, log_level="warn md:notice")
    mm.main_conf.write_text(mm.main_conf.read_text().replace(
        "LoadModule ssl_module", f"LoadModule md_module {MOD_MD}\nLoadModule ssl_module", 1))
    mm.write_conf("10-md", md_conf(store, domains, includes=False).replace(
        "<IfModule md_module>\n", "<IfModule md_module>\n    MDRenewMode manual\n", 1)
        + "<Location /md-status>\n    SetHandler md-status\n    Require local\n</Location>\n")
    return mm


def measure(n: int, with_mod_md: bool) -> dict:
    r: dict = {"n": n}
    domains = names(n)
    amd = Apache(http_port=HTTP, https_port=HTTPS, log_level="warn")
    store = amd.root / "md"
    amd.write_conf("10-md", md_conf(store, domains, includes=True))
    try:
        say(f"[{n}] building a store with {n} valid certificates ...")
        r["built"] = build_store(amd, store, domains)
        amd.write_conf("00-apache-md", apache_md(amd, "apache-conf").stdout)
        apache_md(amd, "activate", timeout=3600)
        r["config_cpu"] = config_read_cpu(amd.main_conf)
        say(f"[{n}] live worker, check cycles, snapshot ...")
        live = run_live(amd, amd.root)
        r["rss"], r["pss"] = live["rss_mb"], live["pss_mb"]
        # once more: a restart finds what the first run kept (status/cache)
        live = run_live(amd, amd.root)
        r["rss2"], r["pss2"] = live["rss_mb"], live["pss_mb"]
        r["restart_cpu"], r["restart_children"] = live["cpu"], live["children_cpu"]
        r["restart_load"] = loadavg()
        cycles = cycle_cpu(amd)
        r["cycle_first"], r["cycle"] = cycles[0], min(cycles[1:])
        r["snap_first"], r["snap_bytes"], r["pieces_bytes"], r["snap"] = \
            snapshot_cost(amd.main_conf)
        say(f"[{n}] Apache with apache-md's includes ...")
        t = time.monotonic()
        amd.start(timeout=1800)
        r["start"] = time.monotonic() - t
        time.sleep(2)
        r["apache_pss"] = group_memory(amd.pid)[0]
        r["list_rps"] = wrk_rate(f"http://127.0.0.1:{HTTP}/md-status")
        r["graceful"] = graceful_seconds(amd)
        amd.stop()
        if with_mod_md:
            copy = amd.root / "md-mod_md"
            shutil.copytree(store, copy, symlinks=True)
            mm = mod_md_server(copy, domains)
            try:
                say(f"[{n}] Apache with mod_md ...")
                t = time.monotonic()
                mm.start(timeout=1800)
                r["mm_start"] = time.monotonic() - t
                time.sleep(2)
                r["mm_pss"] = group_memory(mm.pid)[0]
                r["mm_list_rps"] = wrk_rate(f"http://127.0.0.1:{HTTP}/md-status")
                r["mm_graceful"] = graceful_seconds(mm)
            finally:
                mm.stop()
                shutil.rmtree(mm.root, ignore_errors=True)
    finally:
        amd.stop()
        shutil.rmtree(amd.root, ignore_errors=True)
    return r


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(rows: list[dict]) -> list[str]:
    head = ["MDs", "config read CPU s", "worker RSS MB (PSS); after a restart",
            "check cycle CPU s (first)",
            "restart: first cycle CPU s (config child), load",
            "snapshot index + pieces MB, write CPU s (fresh writer)", "md-status list req/s (mod_md)",
            "Apache PSS MB + worker (mod_md)", "graceful s (mod_md)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mm = "mm_pss" in r
        cells = [
            str(r["n"]), _f(r["config_cpu"], ".2f"),
            f"{r['rss']:.0f} ({r['pss']:.0f}); {r['rss2']:.0f} ({r['pss2']:.0f})",
            f"{r['cycle']:.2f} ({r['cycle_first']:.2f})",
            f"{r['restart_cpu']:.2f} ({r['restart_children']:.2f}), {r['restart_load']}",
            f"{r['snap_bytes'] / 1e6:.1f} + {r['pieces_bytes'] / 1e6:.1f}, {r['snap']:.2f} "
            f"({r['snap_first']:.2f})",
            f"{_f(r.get('list_rps'), '.0f')} ({_f(r.get('mm_list_rps'), '.0f')})",
            f"{r['apache_pss']:.0f} + {r['pss']:.0f} ({_f(r.get('mm_pss'), '.0f')})",
            f"{r['graceful']:.1f} ({_f(r.get('mm_graceful'), '.1f')})",
        ]
        out.append("| " + " | ".join(cells) + " |")
        if mm:
            out.append(f"|  | ratios vs mod_md: list req/s "
                       f"{ratio(r.get('list_rps') or 0, r.get('mm_list_rps') or 0)}, memory "
                       f"{ratio(r['apache_pss'] + r['pss'], r['mm_pss'])}, graceful "
                       f"{ratio(r['graceful'], r['mm_graceful'])} |" + " |" * (len(head) - 2))
    return out


def growth(rows: list[dict]) -> list[str]:
    """How each cost grows from one size to the next (1.0 = linear)."""
    out = []
    for a, b in zip(rows, rows[1:]):
        k = b["n"] / a["n"]
        parts = []
        for key, label in (("config_cpu", "config read"), ("cycle", "check cycle"),
                           ("restart_cpu", "a restart's first cycle"),
                           ("snap", "snapshot write"), ("snap_bytes", "snapshot index size"),
                           ("rss", "worker RSS")):
            if a.get(key) and b.get(key):
                parts.append(f"{label} x{b[key] / a[key]:.1f}")
        out.append(f"{a['n']} -> {b['n']} MDs (x{k:.0f}): " + ", ".join(parts))
    return out


def write_readme(lines: list[str]) -> None:
    text = README.read_text()
    block = SECTION + "\n\n" + "\n".join(lines) + "\n"
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + block + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    README.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000", help="comma-separated MD counts")
    ap.add_argument("--no-mod-md", action="store_true", help="apache-md only")
    ap.add_argument("--readme", action="store_true",
                    help="write the table into bench/README.md (section 'Scale curve')")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with_mod_md = not args.no_mod_md and os.path.exists(MOD_MD)
    load0 = loadavg()
    rows = [measure(n, with_mod_md) for n in sizes]
    lines = table(rows) + [""] + growth(rows)
    lines.append("")
    lines.append(f"Measured {dt.date.today()} on {os.cpu_count()} CPUs, load average "
                 f"{load0} before, {loadavg()} after (`python bench/scale.py --sizes "
                 f"{args.sizes}`).")
    say("\n" + "\n".join(lines))
    if args.readme:
        write_readme(lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
