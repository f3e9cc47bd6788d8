#!/usr/bin/env python3
"""Issuance: N managed domains from nothing to certificates, mod_md vs apache-md vs a bare client.

Both run against the same Pebble on this machine, one after the other; Pebble
is restarted before each run (fresh state, same start for both) unless
--keep-pebble. Times are wall clock from the first step of each contender:

  mod_md     Apache start (mod_md makes fallback certificates and starts its
             watchdog) until /md-status shows every MD's renewal finished;
             then a graceful restart (mod_md activates) until Apache serves
             Pebble's certificate for every name.
  apache-md  `apache-md activate` (fallback includes) + Apache start +
             `apache-md renew` until it exits with every MD staged; then
             `apache-md activate --reload` until every name is served.
             With --worker: `apache-md worker --once` instead of renew+activate
             (it drives, activates and reloads in one go).
  bare       bench/bareacme.py, a bare parallel ACME client (one account, every name
             at once, RSA 2048 keys made ahead, http-01 from its own server on the
             port Pebble validates, no store, no Apache): from its start until it
             exits with every chain in memory. The issue's aim is apache-md staged
             at this speed (0.10x mod_md); `--no-bare` leaves it out,
             `--bare-account-key ec256` gives it a P-256 account (RSA 3072 as the
             others otherwise).

  --parallel P  apache-md's --parallel (MDs driven at once; its default otherwise).
  --pool     the store starts with the key pool (store/keypool) filled as a worker
             that ran before the MDs were added keeps it (`MDKeyPool`, default 16
             keys of each kind, --pool-size to change it); without, the store starts
             empty, as on a fresh install.

  --profile OUT  apache-md's `renew` (or `worker --once`) under `py-spy record --threads
             --format raw` (py-spy from PyPI): OUT has its collapsed stacks per thread
             (the sampling slows it: no timing from such a run).
  --timeline OUT  apache-md run through bench/timeline.py: OUT has each MD's steps,
             requests and key as JSON lines, a summary is printed.
  --tty      `renew` on a terminal (script(1)): how often its progress bar was drawn
             and its last frame are printed.
  --cpu OUT  apache-md through bench/cpuacct.py: the CPU spent in chosen functions,
             counted per thread (time.thread_time), to OUT as JSON and printed.
  --cprofile OUT  apache-md under cProfile in every thread (bench/cprofile.py): OUT in
             pstats format (the first `activate`'s in OUT.activate), the top functions by own
             time printed (slowed: no timing).

Usage: python bench/issuance.py [-n 50] [--worker] [--pool [--pool-size K]] [--keep-pebble]
                                [--only NAME] [--no-bare] [--bare-account-key KIND] [--parallel P] [--profile OUT] [--timeline OUT]
                                [--cpu OUT] [--cprofile OUT] [--tty]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchenv import (
    APACHE_MD,
    HTTP,
    HTTPS,
    MOD_MD,
    REPO,
    all_served_by_pebble,
    apache_md,
    apache_md_apache,
    byte_compile,
    children_cpu,
    loadavg,
    md_status,
    mod_md_apache,
    names,
    proc_cpu,
    ratio,
    say,
    start_pebble,
    wait,
)

TIMEOUT = 300


def finished_count(apache, domains) -> int:
    mds = {m["name"]: m for m in md_status(apache).get("managed-domains", [])}
    return sum(1 for d in domains if (mds.get(d, {}).get("renewal") or {}).get("finished"))


def errors(apache) -> list[str]:
    out = []
    for m in md_status(apache).get("managed-domains", []):
        r = m.get("renewal") or {}
        if r.get("errors"):
            out.append(f"{m['name']}: {(r.get('last') or {}).get('detail')}")
    return out


def run_mod_md(pebble, domains) -> dict:
    apache = mod_md_apache(pebble, domains)
    pebble_cpu0 = proc_cpu(pebble._pebble.pid)  # noqa: SLF001
    cpu0 = children_cpu()
    try:
        t0 = time.monotonic()
        apache.start(timeout=TIMEOUT)
        t_started = time.monotonic()
        wait(lambda: finished_count(apache, domains) == len(domains), TIMEOUT,
             "mod_md: all renewals finished")
        t_done = time.monotonic()
        errs = errors(apache)
        apache.graceful(timeout=TIMEOUT)
        wait(lambda: all_served_by_pebble(HTTPS, domains), 60, "mod_md: all served")
        t_served = time.monotonic()
    finally:
        apache.stop()
    shutil.rmtree(apache.root, ignore_errors=True)
    # Apache ran as our child: its CPU and that of its reaped children (mod_md's
    # watchdog, the workers) is in RUSAGE_CHILDREN once it stopped.
    return {"start": t_started - t0, "staged": t_done - t0, "served": t_served - t0,
            "cpu": children_cpu() - cpu0, "errors": errs,
            "pebble_cpu": proc_cpu(pebble._pebble.pid) - pebble_cpu0}  # noqa: SLF001


def run_bare(pebble, domains, account_key: str = "rsa3072") -> dict:
    """bench/bareacme.py against the same Pebble, answering http-01 on Apache's port
    (no Apache runs then)."""
    pebble_cpu0 = proc_cpu(pebble._pebble.pid)  # noqa: SLF001
    cpu0 = children_cpu()
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "bareacme.py"),
                        "--directory", pebble.directory_url, "--ca-bundle", str(pebble.ca_bundle),
                        "--http-port", str(HTTP), "--account-key", account_key, *domains],
                       cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    t_done = time.monotonic()
    if p.returncode != 0:
        raise SystemExit(f"bareacme failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                         f"{p.stderr[-3000:]}")
    return {"staged": t_done - t0, "cpu": children_cpu() - cpu0, "errors": [],
            "pebble_cpu": proc_cpu(pebble._pebble.pid) - pebble_cpu0,  # noqa: SLF001
            "report": json.loads(p.stdout.strip().splitlines()[-1])}


def fill_pool(apache) -> int:
    """The key pool as an idle worker leaves it (worker.py _fill_key_pool): every key
    it keeps for this configuration, made before the clock starts."""
    from apache_md.apache.config import load_config
    from apache_md.store import keypool
    from apache_md.store.fs import Store
    config = load_config(str(apache.main_conf), server_root=str(apache.root))
    store = Store(config.settings.store_dir)
    store.init()
    want = keypool.wanted({s for md in config.mds for s in md.keyspecs},
                          config.settings.key_pool)
    made = 0
    while keypool.fill_one(store, want):
        made += 1
    return made


def run_apache_md(pebble, domains, worker: bool, pool: int | None = None,
                  profile: str | None = None, timeline: str | None = None,
                  cprofile: str | None = None, cpu: str | None = None,
                  tty: bool = False, parallel: int | None = None) -> dict:
    apache = apache_md_apache(pebble, domains,
                              extra=f"    MDKeyPool {pool}\n" if pool is not None else "")
    apache.write_conf("00-apache-md", apache_md(apache, "apache-conf").stdout)
    pooled = fill_pool(apache) if pool is not None else 0
    reload_cmd = " ".join(apache.apache_cmd("-k", "graceful"))
    more = ["--parallel", str(parallel)] if parallel else []
    cmd = APACHE_MD
    if timeline:
        cmd = [sys.executable, os.path.join(REPO, "bench", "timeline.py"), timeline, "--"]
    if cpu:
        cmd = [sys.executable, os.path.join(REPO, "bench", "cpuacct.py"), cpu, "--"]
    if cprofile:
        cmd = [sys.executable, os.path.join(REPO, "bench", "cprofile.py"), cprofile, "--"]
    if profile:
        cmd = [shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy"),
               "record", "--threads", "--format", "raw", "-r", "250", "-o", profile,
               *os.environ.get("PYSPY_ARGS", "").split(), "--"] + cmd
    pebble_cpu0 = proc_cpu(pebble._pebble.pid)  # noqa: SLF001
    cpu0 = children_cpu()
    try:
        t0 = time.monotonic()
        if cprofile:  # the first activate too, beside: OUT.activate
            p = subprocess.run(cmd[:2] + [cprofile + ".activate", "--", "-f", str(apache.main_conf),
                                          "activate"], cwd=REPO, capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(f"apache-md activate failed:\n{p.stdout}\n{p.stderr}")
        else:
            apache_md(apache, "activate")
        t_activated = time.monotonic()
        apache.start(timeout=TIMEOUT)
        t_started = time.monotonic()
        cpu1 = children_cpu()
        if worker:
            p = subprocess.run(cmd + ["-f", str(apache.main_conf), "worker", "--once",
                                      "--reload-command", reload_cmd, *more],
                               cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
            t_done = time.monotonic()
        else:
            argv = cmd + ["-f", str(apache.main_conf), "renew", *more]
            if tty:  # stderr a terminal: the progress bar instead of a line per step
                argv = ["script", "-qfec", shlex.join(argv), "/dev/null"]
            p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
            t_done = time.monotonic()
        cpu2 = children_cpu()
        if p.returncode != 0:
            raise SystemExit(f"apache-md failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                             f"{p.stderr[-3000:]}")
        if not worker:
            apache_md(apache, "activate", "--reload", reload_cmd)
        wait(lambda: all_served_by_pebble(HTTPS, domains), 60, "apache-md: all served")
        t_served = time.monotonic()
    finally:
        apache.stop()
    shutil.rmtree(apache.root, ignore_errors=True)
    return {"start": t_started - t0, "staged": t_done - t0, "served": t_served - t0,
            "cpu": children_cpu() - cpu0, "drive": t_done - t_started,
            "activate": t_activated - t0, "drive_cpu": cpu2 - cpu1, "setup_cpu": cpu1 - cpu0,
            "errors": [], "pebble_cpu": proc_cpu(pebble._pebble.pid) - pebble_cpu0,  # noqa: SLF001
            "pooled": pooled, "output": p.stdout}


def _col(r: dict, key: str) -> str:
    return f"{r[key]:10.2f}" if key in r else f"{'-':>10}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50, help="managed domains (default 50)")
    ap.add_argument("--worker", action="store_true",
                    help="apache-md via `worker --once` instead of renew + activate")
    ap.add_argument("--keep-pebble", action="store_true",
                    help="do not restart Pebble between the runs")
    ap.add_argument("--only", choices=("mod_md", "apache-md", "bare"))
    ap.add_argument("--no-bare", action="store_true", help="leave out the bare ACME client")
    ap.add_argument("--bare-account-key", choices=("rsa3072", "ec256"), default="rsa3072",
                    help="the bare client's account key (default rsa3072, as the others)")
    ap.add_argument("--pool", action="store_true",
                    help="start with the key pool an idle worker keeps filled")
    ap.add_argument("--pool-size", type=int, default=16, help="MDKeyPool (default 16)")
    ap.add_argument("--parallel", type=int, help="apache-md's --parallel (MDs driven at once)")
    ap.add_argument("--profile", metavar="OUT", help="apache-md under py-spy, stacks to OUT")
    ap.add_argument("--timeline", metavar="OUT", help="apache-md's steps per MD to OUT")
    ap.add_argument("--tty", action="store_true", help="renew on a terminal: its progress bar")
    ap.add_argument("--cpu", metavar="OUT", help="CPU of chosen functions in apache-md, to OUT")
    ap.add_argument("--cprofile", metavar="OUT", help="apache-md under cProfile, stats to OUT")
    args = ap.parse_args()
    domains = names(args.n)
    load = loadavg()
    if args.only in (None, "mod_md") and not os.path.exists(MOD_MD):
        say(f"{MOD_MD} is missing (Debian's apache2 ships it): no mod_md")
        args.only = args.only and "apache-md"
    run = {who for who in ("mod_md", "apache-md", "bare") if args.only in (None, who)}
    if args.no_bare and args.only != "bare":
        run.discard("bare")
    if not os.path.exists(MOD_MD):
        run.discard("mod_md")
    byte_compile()
    pebble = start_pebble()
    results = {}
    try:
        if "mod_md" in run:
            say(f"mod_md: {args.n} MDs ...")
            results["mod_md"] = run_mod_md(pebble, domains)
            if not args.keep_pebble and len(run) > 1:
                pebble.restart()
        if "bare" in run:
            say(f"bare ACME client: {args.n} names ...")
            results["bare"] = run_bare(pebble, domains, args.bare_account_key)
            if not args.keep_pebble and "apache-md" in run:
                pebble.restart()
        if "apache-md" in run:
            how = "worker --once" if args.worker else "renew + activate"
            say(f"apache-md ({how}): {args.n} MDs ...")
            results["apache-md"] = run_apache_md(pebble, domains, args.worker,
                                                 args.pool_size if args.pool else None,
                                                 args.profile, args.timeline, args.cprofile,
                                                 args.cpu, args.tty, args.parallel)
    finally:
        pebble.stop()
        shutil.rmtree(pebble.work_dir, ignore_errors=True)

    say(f"\nissuance of {args.n} MDs, Pebble {'kept' if args.keep_pebble else 'restarted'} "
        "between runs (seconds, wall clock from start)")
    done = "activated" if args.worker else "staged"
    say(f"{'':10} {'apache up':>10} {done:>10} {'served':>10} {'cpu':>8} {'pebble cpu':>11}")
    for who, r in results.items():
        say(f"{who:10} {_col(r, 'start')} {r['staged']:10.2f} {_col(r, 'served')} "
            f"{r['cpu']:8.2f} {r['pebble_cpu']:11.2f}")
        for e in r["errors"][:5]:
            say(f"  {who} error: {e}")
    am = results.get("apache-md")
    if am:
        what = "worker --once" if args.worker else "renew"
        say(f"apache-md {what} alone: {am['drive']:.2f} s wall, {am['drive_cpu']:.2f} s CPU "
            "(mod_md's `staged`: md-status shows renewal.finished for all); "
            f"`apache-md activate` before Apache's start {am['activate']:.2f} s")
        say(f"key pool: {am['pooled']} keys ready before the start (MDKeyPool {args.pool_size} "
            "of each key type in use, and one account key)"
            if args.pool else "key pool: none (a fresh store)")
    if am and args.timeline:
        from timeline import summary
        for line in summary(Path(args.timeline), worst=2):
            say(line)
    if am and args.tty:
        # (text mode made each \r a line end)
        frames = re.findall(r"\[[#.]+\] \d+/\d+ done(?:, \d+ failed)?", am["output"])
        say(f"renew's progress bar: drawn {len(frames)} times, the last: "
            f"{frames[-1] if frames else 'none'}")
    if am and args.cpu:
        from cpuacct import report
        for line in report(Path(args.cpu)):
            say(line)
    if am and args.cprofile:
        import pstats
        for f in (args.cprofile + ".activate", args.cprofile):
            pstats.Stats(f).sort_stats("tottime").print_stats(25)
    bare = results.get("bare")
    if bare:
        b = bare["report"]
        say(f"bare client ({args.bare_account_key} account): {b['certificates']} chains, "
            f"account at {b['account']:.2f} s, last done {b['done']:.2f} s (its own clock), "
            f"{b['requests']} requests ({b['requests'] / max(1, b['certificates']):.1f} per "
            f"name), {b['polls']} polls, {b['bad_nonces']} badNonce; step times summed over "
            "the names: " + ", ".join(f"{k} {v:.1f}" for k, v in b["step_sums"].items()))
    mm = results.get("mod_md")
    if am and mm:
        say(f"ratio apache-md/mod_md: {done} {ratio(am['staged'], mm['staged'])}, "
            f"served {ratio(am['served'], mm['served'])}, CPU {ratio(am['cpu'], mm['cpu'])}  "
            "(aim: staged <= 0.10)")
    if bare and mm:
        say(f"ratio bare/mod_md: {ratio(bare['staged'], mm['staged'])}, "
            f"CPU {ratio(bare['cpu'], mm['cpu'])}")
    if bare and am:
        say(f"ratio apache-md/bare: {done} {ratio(am['staged'], bare['staged'])}, "
            f"CPU {ratio(am['cpu'], bare['cpu'])}; `{what}` alone against bare "
            f"{ratio(am['drive'], bare['staged'])}")
    say(f"load average {load} before, {loadavg()} after, {os.cpu_count()} CPUs "
        "(others' work on this machine inflates wall times, less so CPU times)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
