#!/usr/bin/env python3
"""`make demo`: Pebble + Apache + apache-md on loopback, two MDs to real certificates.

Everything runs in private directories under /tmp on ports of its own
(ACME 14100, Apache http 5102 / https 5101), so it does not touch a system
Apache nor a test run. When done, or with `--keep` (`make demo KEEP=1`) after
Ctrl-C, it stops what it started and removes its directories.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import Apache, Pebble  # noqa: E402
from tests.harness.client import curl  # noqa: E402

APACHE_MD = [sys.executable, "-m", "apache_md"]
HTTP, HTTPS = 5102, 5101
MDS = {"demo.test": ["demo.test", "www.demo.test"], "ec.demo.test": ["ec.demo.test"]}


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    print("$ apache-md " + " ".join(args[2:]), flush=True)
    proc = subprocess.run(APACHE_MD + list(args), text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: apache-md {' '.join(args)} failed ({proc.returncode})")
    return proc


def site_conf(store: str, pebble: Pebble) -> str:
    return f"""
<IfModule md_module>
    MDCertificateAuthority {pebble.directory_url}
    MDCACertificateFile {pebble.ca_bundle}
    MDCertificateAgreement accepted
    MDContactEmail admin@demo.test
    MDPortMap http:{HTTP} https:{HTTPS}
    MDStoreDir {store}
    MDomain demo.test
    <MDomain ec.demo.test>
        MDPrivateKeys secp256r1 rsa2048
    </MDomain>
</IfModule>
<VirtualHost 127.0.0.1:{HTTPS}>
    ServerName demo.test
    ServerAlias www.demo.test
    SSLEngine on
    IncludeOptional {store}/apache/demo.test.conf
</VirtualHost>
<VirtualHost 127.0.0.1:{HTTPS}>
    ServerName ec.demo.test
    SSLEngine on
    IncludeOptional {store}/apache/ec.demo.test.conf
</VirtualHost>
"""


def keep_running(pebble: Pebble) -> None:
    """Print where to look, then wait for Ctrl-C (or SIGTERM)."""
    base = f"http://127.0.0.1:{HTTP}"
    root = pebble.root_pem_path
    say("Running until you press Ctrl-C (on this machine: Apache listens on loopback only)")
    print(f"status page (HTML):  {base}/md-status?format=html\n"
          f"one domain (HTML):   {base}/md-status/demo.test?format=html\n"
          f"md-status (JSON):    {base}/md-status\n"
          f"metrics:             {base}/md-status/metrics\n"
          f"a served site:       curl --cacert {root} --resolve demo.test:{HTTPS}:127.0.0.1 "
          f"https://demo.test:{HTTPS}/", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true",
                    help="keep everything running until Ctrl-C, and print the URLs")
    args = ap.parse_args()
    say("Starting Pebble (ACME CA) and pebble-challtestsrv (DNS)")
    pebble = Pebble(acme_port=14100, mgmt_port=15100, dns_port=8153, challtestsrv_port=8155,
                    http_port=HTTP, https_port=HTTPS)
    apache = Apache(http_port=HTTP, https_port=HTTPS)
    worker = None
    try:
        pebble.start()
        store = str(apache.root / "md")
        apache.write_conf("10-sites", site_conf(store, pebble))
        conf = ["-f", str(apache.main_conf)]
        say(f"Apache ServerRoot {apache.root}: mounting the apache-md handlers")
        snippet = run(*conf, "apache-conf").stdout
        apache.write_conf("00-apache-md", snippet)
        run(*conf, "check", check=False)
        say("First activation: fallback certificates, so Apache can start")
        run(*conf, "activate")
        apache.start()
        say("Running the worker until both MDs have certificates")
        reload_cmd = " ".join(apache.apache_cmd("-k", "graceful"))
        worker = subprocess.Popen(APACHE_MD + conf + ["worker", "--reload-command", reload_cmd])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            proc = subprocess.run(APACHE_MD + conf + ["status", "--json"], capture_output=True,
                                  text=True)
            mds = json.loads(proc.stdout or "{}").get("managed-domains", []) \
                if proc.returncode == 0 else []
            if mds and all(m.get("state") == 2 for m in mds):
                break
            time.sleep(0.5)
        else:
            raise SystemExit("demo: certificates did not arrive within 120 s")
        time.sleep(1.5)  # the graceful reload after activation
        say("Status (the worker keeps running until the demo ends)")
        run(*conf, "status")
        say("Proof: curl over https, verified against Pebble's root")
        for md, names in MDS.items():
            for name in names:
                st, _, _ = curl(f"https://{name}:{HTTPS}/", cacert=str(pebble.root_pem_path))
                print(f"https://{name}:{HTTPS}/ -> HTTP {st} (certificate verified)")
                if st != 200:
                    raise SystemExit(f"demo: {name} answered {st}")
        say("Done: both managed domains are served with certificates from the CA")
        if args.keep:
            keep_running(pebble)
        return 0
    finally:
        say("Stopping the worker, Apache and Pebble; removing their directories")
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        apache.stop()
        pebble.stop()
        # Pebble's directory holds its CA key: nothing of the demo stays behind.
        for path in (apache.root, pebble.work_dir):
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
