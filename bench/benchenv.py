"""What the benchmarks share: ports, Pebble, the two Apache setups, clocks.

Benchmarks measure; they assert nothing about time. Both contenders run on the
same machine against the same Pebble (tests/harness), one after the other.
"""
from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402

from tests.harness import Apache, Pebble  # noqa: E402

# Ports of their own, so a bench can run beside the e2e tests of other checkouts;
# E2E_PORT_OFFSET shifts them as it shifts the tests' ports.
_OFF = int(os.environ.get("E2E_PORT_OFFSET", "0"))
PORTS = {name: port + _OFF for name, port in {
    "acme_port": 14700, "mgmt_port": 15700, "dns_port": 8753,
    "challtestsrv_port": 8755, "http_port": 5702, "https_port": 5701}.items()}
HTTP, HTTPS = PORTS["http_port"], PORTS["https_port"]
MOD_MD = "/usr/lib/apache2/modules/mod_md.so"
# Run apache-md from this checkout with the interpreter running the bench
# (the venv), as the e2e tests do.
APACHE_MD = [sys.executable, "-m", "apache_md"]


def byte_compile() -> None:
    """apache-md's modules compiled once, before any clock starts, as the Debian package
    ships them (py3compile): with PYTHONDONTWRITEBYTECODE set (as here) every apache-md
    process would compile its ~100 modules again, 0.1 s each time."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "apache_md")],
                   check=True, stdout=subprocess.DEVNULL)


def say(text: str) -> None:
    print(text, flush=True)


def start_pebble() -> Pebble:
    """Pebble with the harness defaults (5% badNonce, 50% authz reuse, no VA sleeps)."""
    return Pebble(**PORTS).start()


def names(n: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i}.test" for i in range(1, n + 1)]


def md_globals(pebble: Pebble, store: Path, extra: str = "", ca_url: str | None = None) -> str:
    """The MD directives both contenders read, identical for mod_md and apache-md.
    `ca_url`: a front of Pebble's (e.g. tests/harness/faults.py) instead of Pebble."""
    return f"""    MDCertificateAuthority {ca_url or pebble.directory_url}
    MDCACertificateFile {pebble.ca_bundle}
    MDCertificateAgreement accepted
    MDContactEmail admin@example.test
    MDPortMap http:{HTTP} https:{HTTPS}
    MDStoreDir {store}
    MDRetryDelay 1s
{extra}"""


def ssl_vhost(name: str, include: str | None = None) -> str:
    inc = f"    Include {include}\n" if include else ""
    return (f"<VirtualHost 127.0.0.1:{HTTPS}>\n    ServerName {name}\n    SSLEngine on\n"
            f"{inc}</VirtualHost>\n")


def mod_md_apache(pebble: Pebble, domains: list[str]) -> Apache:
    """A private Apache with Debian's mod_md managing `domains` and /md-status mounted."""
    apache = Apache(http_port=HTTP, https_port=HTTPS, log_level="warn md:notice")
    store = apache.root / "md"
    apache.main_conf.write_text(apache.main_conf.read_text().replace(
        "LoadModule ssl_module", f"LoadModule md_module {MOD_MD}\nLoadModule ssl_module", 1))
    mds = "".join(f"    MDomain {d}\n" for d in domains)
    apache.write_conf("10-md", f"""<IfModule md_module>
{md_globals(pebble, store)}{mds}</IfModule>
<Location /md-status>
    SetHandler md-status
    Require local
</Location>
""" + "".join(ssl_vhost(d) for d in domains))
    return apache


def apache_md_apache(pebble: Pebble, domains: list[str], extra: str = "",
                     ca_url: str | None = None) -> Apache:
    """A private Apache with apache-md's handler snippet and one include per vhost.
    The snippet is written by the caller (`apache-md apache-conf`), as a user would."""
    apache = Apache(http_port=HTTP, https_port=HTTPS, log_level="warn")
    store = apache.root / "md"
    mds = "".join(f"    MDomain {d}\n" for d in domains)
    apache.write_conf("10-md", f"<IfModule md_module>\n{md_globals(pebble, store, extra, ca_url)}"
                      f"{mds}</IfModule>\n"
                      + "".join(ssl_vhost(d, f"{store}/apache/{d}.conf") for d in domains))
    return apache


def apache_md(apache: Apache, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(APACHE_MD + ["-f", str(apache.main_conf), *args], cwd=REPO,
                       capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise SystemExit(f"apache-md {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def md_status(apache: Apache) -> dict:
    url = f"http://127.0.0.1:{apache.http_port}/md-status"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def served_issuer(port: int, name: str) -> str:
    """The issuer CN of the certificate Apache serves for SNI `name`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            der = s.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return cert.issuer.rfc4514_string()


def all_served_by_pebble(port: int, domains: list[str]) -> bool:
    return all("Pebble" in served_issuer(port, d) for d in domains)


def wait(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = pred()
            if v:
                return v
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def children_cpu() -> float:
    """User+system CPU seconds of all reaped children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> float:
    """User+system CPU seconds of a live process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def process_group(master: int) -> list[int]:
    """Apache's master and all its children."""
    return [master] + [int(d) for d in os.listdir("/proc") if d.isdigit()
                       and _ppid(int(d)) == master]


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"
