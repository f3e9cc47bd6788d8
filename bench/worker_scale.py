#!/usr/bin/env python3
"""Worker at scale: N managed domains that all have valid certificates.

The store is built directly (no CA round trips): a local CA made with
`cryptography` signs one EC P-256 certificate per MD, written in mod_md's
layout (domains/<md>/pubcert.secp256r1.pem, privkey.secp256r1.pem, md.json),
next to an Apache configuration with N MDs and N SSL vhosts. Nothing is due,
so a check cycle is what the worker does all day long.

Measured for apache-md:
  worker --once       a whole process run (start, config, cycle): wall, CPU,
                      peak RSS (from wait4), cold (first run) and warm
  live worker         RSS after its first cycle (/proc VmRSS, VmHWM)
  one check cycle     Worker.cycle() in this process: CPU, first and steady
and, for a comparison of what each costs on a server, the memory of a
running Apache with mod_md managing the same store, against Apache with
apache-md's handlers plus the worker (PSS summed over all processes, so
pages shared between Apache's processes count once).

Usage: python bench/worker_scale.py [-n 1000] [--no-apache]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import socket
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
    apache_md,
    loadavg,
    md_status,
    names,
    process_group,
    ratio,
    rss_kb,
    say,
    ssl_vhost,
    wait,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import Apache

CA_URL = "https://localhost:14700/dir"  # never contacted: nothing is due
KEYS = "secp256r1"


def md_conf(store: Path, domains: list[str], includes: bool) -> str:
    mds = "".join(f"    MDomain {d}\n" for d in domains)
    return (f"<IfModule md_module>\n    MDCertificateAuthority {CA_URL}\n"
            f"    MDCertificateAgreement accepted\n    MDContactEmail admin@example.test\n"
            f"    MDPortMap http:{HTTP} https:{HTTPS}\n    MDStoreDir {store}\n"
            f"    MDPrivateKeys {KEYS}\n{mds}</IfModule>\n"
            + "".join(ssl_vhost(d, f"{store}/apache/{d}.conf" if includes else None)
                      for d in domains))


def build_store(apache: Apache, store: Path, domains: list[str]) -> float:
    """N certificates from a local CA, in mod_md's layout; returns seconds taken."""
    from apache_md.apache.config import load_config
    from apache_md.core.mdjson import md_to_json
    from apache_md.store.fs import DOMAINS, Store

    t0 = time.monotonic()
    config = load_config(str(apache.main_conf))
    if config.errors:
        raise SystemExit("\n".join(map(str, config.errors)))
    s = Store(store)
    s.init()
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench local CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=400))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    for md in config.mds:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, md.name)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=89))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in md.domains]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        spec = md.keyspecs[0]
        s.write_bytes(DOMAINS, md.name, spec.file_name("privkey"),
                      key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), mode=0o600)
        s.write_bytes(DOMAINS, md.name, spec.file_name("pubcert"),
                      cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
        s.write_json(DOMAINS, md.name, "md.json", md_to_json(md, ca_url=CA_URL, state=2))
    return time.monotonic() - t0


def run_once(apache: Apache) -> dict:
    """`apache-md worker --once` as a child: wall, CPU and peak RSS from wait4()."""
    t0 = time.monotonic()
    p = subprocess.Popen(APACHE_MD + ["-f", str(apache.main_conf), "worker", "--once",
                                      "--reload-command", "true"],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"worker --once failed ({p.returncode}):\n{err[-3000:]}")
    return {"wall": time.monotonic() - t0, "cpu": ru.ru_utime + ru.ru_stime,
            "maxrss_mb": ru.ru_maxrss / 1024}


def run_live(apache: Apache, tmp: Path, code: Path = REPO) -> dict:
    """A long-running worker (apache-md from the checkout `code`): RSS and CPU once it
    reports its first cycle done (sd_notify), and the wall and CPU of its stop (SIGTERM
    until it exits: systemd kills a worker that takes longer than its stop timeout)."""
    sock_path = str(tmp / "notify.sock")
    Path(sock_path).unlink(missing_ok=True)  # an earlier run's
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    p = subprocess.Popen(APACHE_MD + ["-f", str(apache.main_conf), "worker",
                                      "--reload-command", "true"],
                         cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, NOTIFY_SOCKET=sock_path))
    out: dict = {}
    try:
        def cycled():
            try:
                return "next check" in sock.recv(4096).decode()
            except socket.timeout:
                return p.poll() is not None and SystemExit("worker exited")
        wait(cycled, 300, "the live worker's first cycle", interval=0)
        out.update(rss_mb=rss_kb(p.pid) / 1024, hwm_mb=rss_kb(p.pid, "VmHWM") / 1024,
                   pss_mb=pss_kb(p.pid) / 1024)
        out["cpu"], out["children_cpu"] = proc_cpu(p.pid)
    finally:
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        _, _, ru = os.wait4(p.pid, 0)
        p.returncode = 0
        out["stop_wall"] = time.monotonic() - t0
        if "cpu" in out:  # wait4 counts the children the worker waited for too
            out["stop_cpu"] = ru.ru_utime + ru.ru_stime - out["cpu"] - out["children_cpu"]
        sock.close()
    return out


def proc_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) a process has used itself, and its children that it
    waited for (the configuration is read in one)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def restarts(apache: Apache, codes: list[Path], k: int) -> None:
    """k live workers in a row for each checkout in `codes`, on the same store: a
    restart's first cycle (CPU, RSS) and stop (wall, CPU). The first run of each
    checkout follows the other's stop (or the store's build): its figures say what a
    switch costs, the later ones what a restart of the same code does."""
    say(f"{'code':28} {'run':>3} {'1st cycle CPU s':>15} {'children':>8} {'RSS MB':>7} "
        f"{'peak MB':>8} {'stop wall s':>11} {'stop CPU s':>10}  load")
    for code in codes:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(code / "apache_md")],
                       check=True, stdout=subprocess.DEVNULL)  # as Debian ships them
        for i in range(k):
            r = run_live(apache, apache.root, code)
            say(f"{str(code)[-28:]:28} {i + 1:3d} {r['cpu']:15.2f} {r['children_cpu']:8.2f} "
                f"{r['rss_mb']:7.1f} "
                f"{r['hwm_mb']:8.1f} {r['stop_wall']:11.2f} {r['stop_cpu']:10.2f}  "
                f"{loadavg()}")


def cycle_cpu(apache: Apache, cycles: int = 3) -> list[float]:
    """CPU seconds of Worker.cycle() in this process: the first parses every
    certificate, later ones find them in the parse cache."""
    from apache_md.apache.config import load_config
    from apache_md.worker import Worker

    w = Worker(lambda: load_config(str(apache.main_conf)), ["true"], once=True)
    if not w.refresh_config():
        raise SystemExit("worker: configuration did not load")
    out = []
    for _ in range(cycles):
        c0 = time.process_time()
        w.cycle()
        out.append(time.process_time() - c0)
    return out


def group_memory(master: int) -> tuple[float, float, int]:
    """(PSS MB, RSS MB, process count) of Apache's master and all its children."""
    pids = process_group(master)
    pss = sum(pss_kb(pid) for pid in pids)
    rss = sum(pss_kb(pid, "Rss") for pid in pids)
    return pss / 1024, rss / 1024, len(pids)


def pss_kb(pid: int, key: str = "Pss") -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def apache_memory(apache: Apache, settle: float = 3.0) -> tuple[float, float, int, float]:
    t0 = time.monotonic()
    apache.start(timeout=300)
    started = time.monotonic() - t0
    time.sleep(settle)  # children and (mod_md) the watchdog settle
    pss, rss, n = group_memory(apache.pid)
    return pss, rss, n, started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000, help="managed domains (default 1000)")
    ap.add_argument("--no-apache", action="store_true",
                    help="skip the Apache memory comparison (Apache need not run)")
    ap.add_argument("--restarts", type=int, metavar="K",
                    help="only live workers: K in a row for each checkout of --code "
                         "(a restart's first cycle and its stop), nothing else")
    ap.add_argument("--code", default=str(REPO), metavar="DIR[,DIR]",
                    help="with --restarts: the checkouts whose apache-md runs, in turn "
                         "(default this one)")
    args = ap.parse_args()
    load = loadavg()
    domains = names(args.n)
    if not args.no_apache and not os.path.exists(MOD_MD):
        say(f"{MOD_MD} is missing (Debian's apache2 ships it): no memory comparison")
        args.no_apache = True

    amd = Apache(http_port=HTTP, https_port=HTTPS, log_level="warn")
    store = amd.root / "md"
    amd.write_conf("10-md", md_conf(store, domains, includes=True))
    try:
        say(f"building a store with {args.n} valid certificates ...")
        built = build_store(amd, store, domains)
        amd.write_conf("00-apache-md", apache_md(amd, "apache-conf").stdout)
        apache_md(amd, "activate")  # the includes, as after installation
        if args.restarts:
            restarts(amd, [Path(c).resolve() for c in args.code.split(",")], args.restarts)
            say(f"load average {load} before, {loadavg()} after, {os.cpu_count()} CPUs")
            return 0
        say("apache-md worker --once (x2), a live worker, Worker.cycle() ...")
        cold = run_once(amd)
        warm = run_once(amd)
        live = run_live(amd, amd.root)
        cycles = cycle_cpu(amd)
        mem = {}
        if not args.no_apache:
            say("Apache with apache-md's handlers ...")
            mem["apache-md"] = apache_memory(amd)
            amd.stop()
            mm = Apache(http_port=HTTP, https_port=HTTPS, log_level="warn md:notice")
            mm.main_conf.write_text(mm.main_conf.read_text().replace(
                "LoadModule ssl_module", f"LoadModule md_module {MOD_MD}\n"
                "LoadModule ssl_module", 1))
            # Same store (mod_md's own layout), same MDs; mod_md hands the certificates
            # to mod_ssl itself, so the vhosts have no include.
            mm.write_conf("10-md", md_conf(store, domains, includes=False)
                          + "<Location /md-status>\n    SetHandler md-status\n"
                          "    Require local\n</Location>\n")
            try:
                say("Apache with mod_md ...")
                mem["mod_md"] = apache_memory(mm)
                st = md_status(mm)
                renewing = [m["name"] for m in st.get("managed-domains", [])
                            if m.get("state") != 2 or m.get("renewal")]
                if renewing:
                    say(f"  note: mod_md does not consider {len(renewing)} MD(s) complete, "
                        f"e.g. {renewing[:3]}")
                else:
                    say(f"  mod_md takes all {args.n} MDs from the store as complete")
            finally:
                mm.stop()
                shutil.rmtree(mm.root, ignore_errors=True)
    finally:
        amd.stop()
        shutil.rmtree(amd.root, ignore_errors=True)

    say(f"\nworker with {args.n} MDs, all valid (store built in {built:.1f} s)")
    say(f"{'':22} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12}")
    for label, r in (("worker --once (1st)", cold), ("worker --once (2nd)", warm)):
        say(f"{label:22} {r['wall']:8.2f} {r['cpu']:8.2f} {r['maxrss_mb']:12.1f}")
    say(f"live worker after its first cycle: RSS {live['rss_mb']:.1f} MB, "
        f"peak {live['hwm_mb']:.1f} MB, PSS {live['pss_mb']:.1f} MB   (target: tens of MB)")
    say(f"one check cycle, CPU: first {cycles[0]:.3f} s, then "
        f"{', '.join(f'{c:.3f}' for c in cycles[1:])} s   (target: well under 1 s)")
    if mem:
        say(f"\nApache serving {args.n} SSL vhosts (PSS = shared pages counted once)")
        say(f"{'':24} {'start s':>8} {'PSS MB':>8} {'RSS MB':>8} {'procs':>6}")
        for who, (pss, rss, n, started) in mem.items():
            say(f"{who:24} {started:8.2f} {pss:8.1f} {rss:8.1f} {n:6d}")
        if "apache-md" in mem and "mod_md" in mem:
            total = mem["apache-md"][0] + live["pss_mb"]
            say(f"{'apache-md + worker':24} {'':8} {total:8.1f}")
            say(f"ratio (Apache + worker) / (Apache with mod_md), PSS: "
                f"{ratio(total, mem['mod_md'][0])}")
    say(f"load average {load} before, {loadavg()} after, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
