#!/usr/bin/env python3
"""`make bench-status`: md-status requests/second, apache-md against Debian's mod_md.

One run, one machine, the same 50 managed domains with real certificates:
apache-md obtains them from Pebble once, then a second private Apache with
the real mod_md gets a copy of that store (the formats are identical) and
`MDRenewMode manual`, so it never talks to a CA. wrk measures both servers,
one after the other, for the full list and for one domain, and the ratios
are printed against the targets (list >= 10x mod_md, one domain >= 1x),
with each server's CPU time per request (steadier than the rate on a busy
machine).

Everything listens on loopback only, on ports of its own (shifted by
E2E_PORT_OFFSET like the tests); every load run is bounded in time.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchenv import proc_cpu, process_group  # noqa: E402

from tests.harness import Apache, Pebble  # noqa: E402
from tests.harness.apache import DEFAULT_MODULES  # noqa: E402
from tests.harness.client import curl  # noqa: E402

APACHE_MD = [sys.executable, "-m", "apache_md"]
OFF = int(os.environ.get("E2E_PORT_OFFSET", "0")) + 50  # next to the tests' ports
PEBBLE_PORTS = dict(acme_port=14000 + OFF, mgmt_port=15000 + OFF, dns_port=8053 + OFF,
                    challtestsrv_port=8055 + OFF)
OURS = dict(http_port=5002 + OFF, https_port=5001 + OFF)
THEIRS = dict(http_port=5004 + OFF, https_port=5003 + OFF)
TARGETS = {"list": 10.0, "one": 1.0}  # issue 15: one MD at least at mod_md's rate


def say(text: str) -> None:
    print(f"== {text}", flush=True)


def md_names(n: int) -> list[str]:
    return [f"md{i:02d}.bench.test" for i in range(n)]


def md_block(pebble: Pebble, store: Path, names: list[str], http_port: int, https_port: int,
             extra: str = "") -> str:
    mds = "".join(f"    MDomain {n}\n" for n in names)
    return f"""<IfModule md_module>
    MDCertificateAuthority {pebble.directory_url}
    MDCACertificateFile {pebble.ca_bundle}
    MDCertificateAgreement accepted
    MDContactEmail admin@bench.test
    MDPortMap http:{http_port} https:{https_port}
    MDStoreDir {store}
{extra}{mds}</IfModule>
"""


def vhosts(names: list[str], https: int, include_dir: Path | None) -> str:
    out = []
    for n in names:
        inc = f"    Include {include_dir}/{n}.conf\n" if include_dir else ""
        out.append(f"<VirtualHost 127.0.0.1:{https}>\n    ServerName {n}\n"
                   f"    SSLEngine on\n{inc}</VirtualHost>\n")
    return "".join(out)


def cli(conf: Path, *args: str) -> str:
    p = subprocess.run(APACHE_MD + ["-f", str(conf), *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"apache-md {' '.join(args)} failed ({p.returncode}):\n"
                         f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: sudo apt-get install wrk")
    say("installing wrk")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, env=env,
                   stdin=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def server_cpu(srv: Apache) -> float:
    """CPU seconds Apache's processes have used so far."""
    total = 0.0
    for pid in process_group(int(srv.pid_file.read_text())):
        try:
            total += proc_cpu(pid)
        except OSError:
            pass  # a child that just exited
    return total


def wrk_rate(wrk: str, url: str, seconds: int, connections: int, threads: int,
             srv: Apache) -> tuple[float, float]:
    """(requests/s, the server's CPU microseconds per request): the second depends far
    less on what else the machine runs."""
    # A short warm-up first: daemon start, snapshot load, caches.
    subprocess.run([wrk, "-t1", "-c4", "-d1s", url], capture_output=True, timeout=60)
    cpu = server_cpu(srv)
    p = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
                       capture_output=True, text=True, timeout=seconds + 60)
    cpu = server_cpu(srv) - cpu
    m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
    n = re.search(r"(\d+) requests in", p.stdout)
    if not m or not n:
        raise SystemExit(f"wrk {url}: no rate in output:\n{p.stdout}\n{p.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
    if bad:
        raise SystemExit(f"wrk {url}: {bad.group(1)} error responses:\n{p.stdout}")
    return float(m.group(1)), cpu / int(n.group(1)) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mds", type=int, default=50, help="managed domains (default 50)")
    ap.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the server roots")
    args = ap.parse_args()
    if not os.path.exists("/usr/lib/apache2/modules/mod_md.so"):
        raise SystemExit("mod_md.so is missing (Debian's apache2 ships it)")
    wrk = ensure_wrk()
    names = md_names(args.mds)
    one = names[len(names) // 2]

    pebble = Pebble(**PEBBLE_PORTS, **OURS)
    ours = Apache(**OURS)
    theirs = Apache(**THEIRS, log_level="info ssl:warn", modules=tuple(m for m in DEFAULT_MODULES if m != "wsgi") + ("md",))
    try:
        say(f"Pebble, and apache-md obtaining {len(names)} certificates")
        pebble.start()
        store = ours.root / "md"
        ours.write_conf("10-md", md_block(pebble, store, names, **OURS)
                        + vhosts(names, OURS["https_port"], store / "apache"))
        ours.write_conf("00-apache-md", cli(ours.main_conf, "apache-conf"))
        cli(ours.main_conf, "activate")
        ours.start()
        t0 = time.monotonic()
        cli(ours.main_conf, "renew")
        cli(ours.main_conf, "activate")
        ours.graceful()
        say(f"  issued in {time.monotonic() - t0:.1f} s")

        say("mod_md on a copy of the store (MDRenewMode manual: it never renews)")
        their_store = theirs.root / "md"
        their_store.mkdir(mode=0o700)
        shutil.copy2(store / "md_store.json", their_store / "md_store.json")
        for group in ("accounts", "domains"):
            shutil.copytree(store / group, their_store / group, symlinks=True)
        theirs.write_conf("10-md", md_block(pebble, their_store, names, **THEIRS,
                                            extra="    MDRenewMode manual\n")
                          + vhosts(names, THEIRS["https_port"], None)
                          + "<Location /md-status>\n    SetHandler md-status\n"
                            "    Require local\n</Location>\n")
        theirs.start()

        urls, servers = {}, {"apache-md": ours, "mod_md": theirs}
        for label, srv in servers.items():
            base = f"http://127.0.0.1:{srv.http_port}/md-status"
            urls[label] = {"list": base, "one": f"{base}/{one}"}
            listed = curl(base).json().get("managed-domains", [])
            states = {m["state"] for m in listed}
            if len(listed) != len(names) or states != {2}:
                raise SystemExit(f"{label}: expected {len(names)} complete MDs, got "
                                 f"{len(listed)} with states {states}")
            if "cert" not in curl(urls[label]["one"]).json():
                raise SystemExit(f"{label}: /md-status/{one} is not an MD object")

        # Rounds alternate the servers (and which goes first), and the median counts:
        # other load on the machine then hits both alike.
        runs: dict[str, dict[str, list[float]]] = {lb: {"list": [], "one": []} for lb in urls}
        cpus: dict[str, dict[str, list[float]]] = {lb: {"list": [], "one": []} for lb in urls}
        for rnd in range(args.rounds):
            order = list(urls) if rnd % 2 == 0 else list(reversed(list(urls)))
            for kind in ("list", "one"):
                for label in order:
                    rate, cpu = wrk_rate(wrk, urls[label][kind], args.seconds,
                                         args.connections, args.threads, servers[label])
                    runs[label][kind].append(rate)
                    cpus[label][kind].append(cpu)
                    say(f"round {rnd + 1}: {label:9} {kind:4} {rate:8.0f}/s "
                        f"{cpu:8.1f} us CPU/request")
        rates = {lb: {k: statistics.median(v) for k, v in kinds.items()}
                 for lb, kinds in runs.items()}
        cost = {lb: {k: statistics.median(v) for k, v in kinds.items()}
                for lb, kinds in cpus.items()}
        print()
        print(f"md-status with {len(names)} MDs, wrk -t{args.threads} -c{args.connections} "
              f"-d{args.seconds}s, median of {args.rounds} rounds, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{'':12}{'apache-md':>12}{'mod_md':>12}{'ratio':>9}{'target':>9}"
              f"   CPU/request: apache-md  mod_md  (mod_md/apache-md)")
        ok = True
        for kind, label in (("list", "full list"), ("one", "one domain")):
            a, m = rates["apache-md"][kind], rates["mod_md"][kind]
            ratio = a / m if m else float("inf")
            met = ratio >= TARGETS[kind]
            ok &= met
            ca, cm = cost["apache-md"][kind], cost["mod_md"][kind]
            print(f"{label:12}{a:>10.0f}/s{m:>10.0f}/s{ratio:>8.2f}x{TARGETS[kind]:>7.1f}x"
                  f"  {'met' if met else 'MISSED':6} {ca:>10.1f} us {cm:>7.1f} us "
                  f"{cm / ca if ca else float('inf'):>8.2f}x")
        return 0 if ok else 1
    finally:
        ours.stop()
        theirs.stop()
        pebble.stop()
        if not args.keep:
            shutil.rmtree(ours.root, ignore_errors=True)
            shutil.rmtree(theirs.root, ignore_errors=True)
            shutil.rmtree(pebble.work_dir, ignore_errors=True)
        else:
            print(f"kept: {ours.root} {theirs.root}")


if __name__ == "__main__":
    raise SystemExit(main())
