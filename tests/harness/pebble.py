"""Pebble (ACME test CA) + pebble-challtestsrv (its DNS), Debian's pebble 2.4.

challtestsrv answers every A query with 127.0.0.1, so Pebble validates http-01
against 127.0.0.1:<http_port>, i.e. our Apache. Its own http/https/tls-alpn
listeners are switched off because they would take Apache's ports.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import socket
import ssl
import struct
import urllib.error
import urllib.request
from pathlib import Path

from . import pki
from ._util import (
    HarnessError,
    check_ports_free,
    forget_at_exit,
    make_tmp_dir,
    port_open,
    spawn,
    stop_at_exit,
    terminate,
    wait_for,
    with_logs,
)

EAB_EXAMPLE = Path("/usr/share/doc/pebble/examples/pebble-config-external-account-bindings.json")
# Same values as the example file, in case the docs were excluded (dpkg path-exclude).
_EAB_FALLBACK = {
    "kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    "kid-2": "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH",
}


def default_eab() -> dict[str, str]:
    """kid -> base64url HMAC key, as in pebble's EAB example config."""
    try:
        return dict(json.loads(EAB_EXAMPLE.read_text())["pebble"]["externalAccountMACKeys"])
    except (OSError, ValueError, KeyError):
        return dict(_EAB_FALLBACK)


_QTYPES = {"A": 1, "TXT": 16, "AAAA": 28}


def dns_query(name: str, qtype: str = "TXT", port: int = 8053,
              server: str = "127.0.0.1", timeout: float = 3.0) -> list[str]:
    """Minimal DNS client over UDP (no dnspython needed): answers as text."""
    qid = random.randrange(1 << 16)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname \
        + struct.pack(">HH", _QTYPES[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, port))
        data = s.recv(4096)
    _, _, _, ancount, _, _ = struct.unpack(">HHHHHH", data[:12])
    pos = 12 + len(qname) + 4

    def skip_name(p):
        while data[p]:
            if data[p] & 0xC0 == 0xC0:
                return p + 2
            p += data[p] + 1
        return p + 1
    out = []
    for _ in range(ancount):
        pos = skip_name(pos)
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        rdata = data[pos + 10:pos + 10 + rdlen]
        pos += 10 + rdlen
        if rtype == 16:
            i, txt = 0, b""
            while i < len(rdata):
                txt += rdata[i + 1:i + 1 + rdata[i]]
                i += 1 + rdata[i]
            out.append(txt.decode())
        elif rtype in (1, 28):
            out.append(str(ipaddress.ip_address(rdata)))
    return out


class Pebble:
    # Also in pebble's TLS certificate, but no resolver knows it (.invalid, RFC 6761):
    # a client reaches `proxy_only_directory_url` only through a proxy that maps it.
    PROXY_ONLY_NAME = "pebble.invalid"

    def __init__(self, work_dir: str | os.PathLike | None = None, *,
                 acme_port: int = 14000, mgmt_port: int = 15000,
                 dns_port: int = 8053, challtestsrv_port: int = 8055,
                 http_port: int = 5002, https_port: int = 5001,
                 ocsp_responder_url: str = "",
                 eab: dict[str, str] | None = None, eab_required: bool | None = None,
                 domain_blocklist=("blocked-domain.example",),
                 env: dict[str, str] | None = None, strict: bool = False,
                 pebble_bin: str = "pebble", challtestsrv_bin: str = "pebble-challtestsrv"):
        self.work_dir = Path(work_dir) if work_dir else make_tmp_dir("pebble-")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work_dir, 0o755)  # the bundle must be readable by www-data
        self.acme_port = acme_port
        self.mgmt_port = mgmt_port
        self.dns_port = dns_port
        self.challtestsrv_port = challtestsrv_port
        self.http_port = http_port
        self.https_port = https_port
        self.ocsp_responder_url = ocsp_responder_url
        self.eab = dict(eab) if eab else None
        self.eab_required = bool(eab) if eab_required is None else eab_required
        self.domain_blocklist = list(domain_blocklist) if domain_blocklist else None
        self.extra_env = dict(env or {})
        self.strict = strict  # -strict: Pebble's checks of upcoming breaking changes
        self.pebble_bin = shutil.which(pebble_bin) or pebble_bin
        self.challtestsrv_bin = shutil.which(challtestsrv_bin) or challtestsrv_bin

        self.config_path = self.work_dir / "pebble.json"
        self.pebble_log = self.work_dir / "pebble.log"
        self.challtestsrv_log = self.work_dir / "challtestsrv.log"
        self.ca_bundle = self.work_dir / "ca-bundle.pem"  # harness CA + pebble root
        self.root_pem_path = self.work_dir / "pebble-root.pem"
        self.intermediate_pem_path = self.work_dir / "pebble-intermediate.pem"
        self.intermediate_key_path = self.work_dir / "pebble-intermediate.key.pem"
        self.tls_ca, self.tls_leaf = pki.localhost_pki(self.work_dir / "tls",
                                                       extra_names=(self.PROXY_ONLY_NAME,))
        self._pebble = None
        self._challtestsrv = None
        self.root_pem: str | None = None
        self.intermediate_pem: str | None = None
        self.intermediate_key_pem: str | None = None

    # ---- URLs --------------------------------------------------------------

    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.acme_port}/dir"

    @property
    def proxy_only_directory_url(self) -> str:
        return f"https://{self.PROXY_ONLY_NAME}:{self.acme_port}/dir"

    @property
    def mgmt_url(self) -> str:
        return f"https://localhost:{self.mgmt_port}"

    @property
    def challtestsrv_url(self) -> str:
        return f"http://127.0.0.1:{self.challtestsrv_port}"

    @property
    def running(self) -> bool:
        return (self._pebble is not None and self._pebble.poll() is None
                and self._challtestsrv is not None and self._challtestsrv.poll() is None)

    # ---- lifecycle ---------------------------------------------------------

    def config(self) -> dict:
        conf = {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(self.tls_leaf.cert),
            "privateKey": str(self.tls_leaf.key),
            "httpPort": self.http_port,
            "tlsPort": self.https_port,
            "ocspResponderURL": self.ocsp_responder_url,
            "externalAccountBindingRequired": self.eab_required,
        }
        if self.eab:
            conf["externalAccountMACKeys"] = self.eab
        if self.domain_blocklist:
            conf["domainBlocklist"] = self.domain_blocklist
        return {"pebble": conf}

    def start(self, timeout: float = 20.0) -> "Pebble":
        if self.running:
            return self
        check_ports_free("pebble", [
            ("pebble ACME", self.acme_port, False),
            ("pebble management", self.mgmt_port, False),
            ("challtestsrv DNS", self.dns_port, False),
            ("challtestsrv DNS", self.dns_port, True),
            ("challtestsrv management", self.challtestsrv_port, False),
        ])
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        stop_at_exit(self)
        try:
            self._start_challtestsrv(timeout)
            self._start_pebble(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_challtestsrv(self, timeout: float) -> None:
        self._challtestsrv = spawn(
            [self.challtestsrv_bin,
             "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-dns01", f"127.0.0.1:{self.dns_port}",
             "-management", f"127.0.0.1:{self.challtestsrv_port}"],
            self.challtestsrv_log)
        proc = self._challtestsrv
        wait_for(lambda: port_open(self.challtestsrv_port), timeout,
                 "pebble-challtestsrv management port", logs=[self.challtestsrv_log],
                 alive=lambda: proc.poll() is None)
        # No AAAA answers: pebble would try ::1 first, where Apache does not listen.
        self._challtestsrv_post("/set-default-ipv6", {"ip": ""})

    def _start_pebble(self, timeout: float) -> None:
        env = dict(os.environ)
        # Keep pebble's own defaults (5% badNonce, 50% authz reuse) unless the
        # caller overrides them; only the random validation sleeps go.
        env["PEBBLE_VA_NOSLEEP"] = "1"
        env.update(self.extra_env)
        self._pebble = spawn(
            [self.pebble_bin, "-config", str(self.config_path),
             "-dnsserver", f"127.0.0.1:{self.dns_port}"] + (["-strict"] if self.strict else []),
            self.pebble_log, env=env, cwd=self.work_dir)
        self.wait_ready(timeout)
        self._fetch_roots(timeout)

    def wait_ready(self, timeout: float = 20.0) -> dict:
        """Poll the directory over verified TLS until it answers."""
        proc = self._pebble

        def directory():
            with self._open(self.directory_url, timeout=2) as r:
                return json.loads(r.read())
        return wait_for(directory, timeout, f"pebble directory {self.directory_url}",
                        logs=[self.pebble_log],
                        alive=lambda: proc is not None and proc.poll() is None)

    def _fetch_roots(self, timeout: float) -> None:
        # Pebble makes a new root at every start, so the bundle is redone each time.
        self.root_pem = wait_for(lambda: self._mgmt_get("/roots/0"), timeout,
                                 "pebble root from /roots/0", logs=[self.pebble_log])
        self.root_pem_path.write_text(self.root_pem)
        self.intermediate_pem = self._mgmt_get("/intermediates/0", missing_ok=True)
        self.intermediate_key_pem = self._mgmt_get("/intermediate-keys/0", missing_ok=True)
        if self.intermediate_pem:
            self.intermediate_pem_path.write_text(self.intermediate_pem)
        if self.intermediate_key_pem:
            self.intermediate_key_path.write_text(self.intermediate_key_pem)
            os.chmod(self.intermediate_key_path, 0o600)
        tmp = self.ca_bundle.with_suffix(".tmp")
        tmp.write_text(self.tls_ca.cert.read_text().rstrip("\n") + "\n"
                       + self.root_pem.rstrip("\n") + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.ca_bundle)  # atomic: readers never see half a bundle

    def stop(self) -> None:
        terminate(self._pebble)
        terminate(self._challtestsrv)
        self._pebble = self._challtestsrv = None
        forget_at_exit(self)

    def restart(self, timeout: float = 20.0, **changes) -> "Pebble":
        """Stop, apply attribute changes (e.g. eab=..., eab_required=...,
        ocsp_responder_url=...), start again. The root changes."""
        self.stop()
        for name, value in changes.items():
            if not hasattr(self, name):
                raise AttributeError(f"Pebble has no setting {name!r}")
            setattr(self, name, value)
        if "eab" in changes and "eab_required" not in changes:
            self.eab_required = bool(self.eab)
        return self.start(timeout)

    @contextlib.contextmanager
    def configured(self, **changes):
        """Run with other settings, then restore them, e.g.
        `with pebble.configured(eab=default_eab()): ...` (two restarts)."""
        keys = set(changes) | {"eab_required"}
        old = {k: getattr(self, k) for k in keys}
        self.restart(**changes)
        try:
            yield self
        finally:
            self.restart(**old)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- management APIs ---------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls_ca.cert))

    def _open(self, url: str, data: bytes | None = None, timeout: float = 10):
        return urllib.request.urlopen(urllib.request.Request(url, data=data),
                                      timeout=timeout, context=self._ssl_context())

    def _mgmt_get(self, path: str, missing_ok: bool = False) -> str | None:
        try:
            with self._open(self.mgmt_url + path, timeout=5) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            if missing_ok and e.code == 404:
                return None
            raise

    def _challtestsrv_post(self, path: str, body: dict) -> None:
        req = urllib.request.Request(self.challtestsrv_url + path,
                                     data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
        except urllib.error.URLError as e:
            raise HarnessError(with_logs(f"challtestsrv {path} {body}: {e}",
                                         self.challtestsrv_log)) from e

    @staticmethod
    def _fqdn(host: str) -> str:
        return host if host.endswith(".") else host + "."

    def set_txt(self, host: str, value: str) -> None:
        """Add a TXT record, e.g. set_txt('_acme-challenge.a.test', token)."""
        self._challtestsrv_post("/set-txt", {"host": self._fqdn(host), "value": value})

    def clear_txt(self, host: str) -> None:
        self._challtestsrv_post("/clear-txt", {"host": self._fqdn(host)})

    def set_acme_txt(self, domain: str, value: str) -> None:
        """dns-01 record for `domain` (wildcards: pass the base domain)."""
        self.set_txt(f"_acme-challenge.{domain.removeprefix('*.')}", value)

    def clear_acme_txt(self, domain: str) -> None:
        self.clear_txt(f"_acme-challenge.{domain.removeprefix('*.')}")

    def add_a(self, host: str, addresses: list[str]) -> None:
        """Override the default 127.0.0.1 answer for one host."""
        self._challtestsrv_post("/add-a", {"host": self._fqdn(host), "addresses": addresses})

    def clear_a(self, host: str) -> None:
        self._challtestsrv_post("/clear-a", {"host": self._fqdn(host)})

    def cert_status(self, serial: int | str) -> dict | None:
        """Pebble's view of an issued certificate ({'Status': 'Valid'|'Revoked', ...});
        None if pebble does not know the serial. serial: int or hex string."""
        hexs = format(serial, "x") if isinstance(serial, int) else serial.lower().replace(":", "")
        text = self._mgmt_get(f"/cert-status-by-serial/{hexs}", missing_ok=True)
        return json.loads(text) if text else None

    def query(self, name: str, qtype: str = "TXT") -> list[str]:
        """Ask challtestsrv's DNS (as pebble would) for A/AAAA/TXT records."""
        return dns_query(self._fqdn(name), qtype, self.dns_port)

    def directory(self) -> dict:
        with self._open(self.directory_url) as r:
            return json.loads(r.read())

    def logs(self) -> str:
        return with_logs("pebble logs:", self.pebble_log, self.challtestsrv_log)
