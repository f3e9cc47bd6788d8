#!/usr/bin/env python3
"""A flaky CA: N new MDs certified through a fault-injecting proxy, against a clean run.

apache-md's worker drives N new MDs against Pebble behind tests/harness/faults.py,
twice: once with the proxy passing everything through (clean), once injecting
faults (by default 10% 5xx, 5% 429 with Retry-After: 2, 3% connection resets,
5% answers held back 2.5 s, plus Pebble's own 5% bad nonces). The time is wall
clock from the worker's start until every MD's certificate is live
(domains/<md>/pubcert.pem; the worker activates and reloads Apache itself).
Pebble is restarted between the runs. Printed: both times, their ratio, the
faults injected, and the requests the proxy saw to an endpoint before a
Retry-After it had sent for it was over (there should be none).

`--profile failing15`: a CA that fails 15% of requests, 10% 5xx and 5% connection
resets, no 429 and no slow answers (Pebble's bad nonces as ever).

Usage: python bench/faults.py [-n 20] [--seed 1] [--profile issue|failing15]
                              [--timeout 600] [--timeline DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchenv import (
    APACHE_MD,
    PORTS,
    REPO,
    apache_md,
    apache_md_apache,
    loadavg,
    names,
    ratio,
    say,
    start_pebble,
    wait,
)

from tests.harness import FaultProxy

PROXY_PORT = PORTS["acme_port"] + 10
NO_FAULTS = {"error_rate": 0, "rate_limit_rate": 0, "reset_rate": 0, "slow_rate": 0}
# the fault mixes of the faulty run; "issue": the proxy's defaults (issue 12 item 8)
PROFILES = {"issue": {},
            "failing15": {"error_rate": 0.10, "reset_rate": 0.05, "rate_limit_rate": 0,
                          "slow_rate": 0}}


def certified(apache, domains) -> int:
    store = apache.root / "md"
    return sum((store / "domains" / d / "pubcert.pem").exists() for d in domains)


def run(pebble, domains, faults: dict, seed: int, timeout: float,
        timeline: Path | None = None) -> dict:
    proxy = FaultProxy(pebble, PROXY_PORT, seed=seed, **faults).start()
    apache = apache_md_apache(pebble, domains, ca_url=proxy.directory_url)
    apache.write_conf("00-apache-md", apache_md(apache, "apache-conf").stdout)
    reload_cmd = " ".join(apache.apache_cmd("-k", "graceful"))
    log = apache.root / "worker.log"
    worker = None
    try:
        apache_md(apache, "activate")
        apache.start()
        t0 = time.monotonic()
        cmd = APACHE_MD if timeline is None else \
            [sys.executable, str(REPO / "bench" / "timeline.py"), str(timeline), "--"]
        worker = subprocess.Popen(cmd + ["-f", str(apache.main_conf), "worker",
                                               "--reload-command", reload_cmd],
                                  cwd=REPO, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        try:
            wait(lambda: certified(apache, domains) == len(domains), timeout,
                 "all MDs certified", interval=0.1)
            done = True
        except SystemExit:
            done = False
        elapsed = time.monotonic() - t0
        got = certified(apache, domains)
        lines = log.read_text(errors="replace").splitlines()
        failed = [line for line in lines if "renewal failed" in line]
        if not done:  # what held it up
            for line in (failed or lines)[-5:]:
                say(f"  worker: {line}")
        failures = len(failed)
        return {"time": elapsed, "done": done, "certified": got, "failures": failures,
                "requests": proxy.requests, "faults": dict(proxy.faults),
                "violations": list(proxy.violations)}
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        apache.stop()
        proxy.stop()
        shutil.rmtree(apache.root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="managed domains (default 20)")
    ap.add_argument("--seed", type=int, default=1, help="the proxy's random seed")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="issue",
                    help="the faulty run's mix (default issue: 10%% 5xx, 5%% 429, 3%% resets, "
                         "5%% slow; failing15: 10%% 5xx and 5%% resets only)")
    ap.add_argument("--timeout", type=float, default=600, help="give up after (seconds)")
    ap.add_argument("--timeline", metavar="DIR", type=Path,
                    help="write each run's per-MD timeline there (bench/timeline.py) and "
                         "print where the slowest MDs' time went")
    args = ap.parse_args()
    domains = names(args.n)
    load = loadavg()
    pebble = start_pebble()
    results = {}
    try:
        say(f"clean: {args.n} MDs through the proxy, no faults ...")
        lines = {who: args.timeline / f"{who}.jsonl" if args.timeline else None
                 for who in ("clean", "faults")}
        if args.timeline:
            args.timeline.mkdir(parents=True, exist_ok=True)
        results["clean"] = run(pebble, domains, NO_FAULTS, args.seed, args.timeout,
                               lines["clean"])
        pebble.restart()
        say(f"faults: {args.n} MDs through the proxy injecting faults ({args.profile}) ...")
        results["faults"] = run(pebble, domains, PROFILES[args.profile], args.seed, args.timeout, lines["faults"])
    finally:
        pebble.stop()
        shutil.rmtree(pebble.work_dir, ignore_errors=True)

    say(f"\n{args.n} new MDs until every certificate is live (seconds, wall clock)")
    say(f"{'':8} {'time':>8} {'certified':>10} {'failed runs':>12} {'requests':>9}  faults")
    for who, r in results.items():
        faults = ", ".join(f"{k} {v}" for k, v in sorted(r["faults"].items()) if k != "forward")
        mark = "" if r["done"] else " (timed out)"
        say(f"{who:8} {r['time']:8.2f} {r['certified']:>6}/{args.n:<3} {r['failures']:>12} "
            f"{r['requests']:>9}  {faults or '-'}{mark}")
    clean, flaky = results["clean"], results["faults"]
    say(f"ratio faults/clean: {ratio(flaky['time'], clean['time'])}  (aim <= 3; "
        f"profile {args.profile}, seed {args.seed})")
    violations = clean["violations"] + flaky["violations"]
    say(f"requests before a Retry-After had passed: {len(violations)}")
    for v in violations[:5]:
        say(f"  {v}")
    if args.timeline:
        from timeline import summary
        for who, path in lines.items():
            say(f"\n{who}: per MD (seconds since the worker started)")
            for line in summary(path, worst=0 if who == "clean" else 3):
                say(line)
    say(f"load average {load} before, {loadavg()} after, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
