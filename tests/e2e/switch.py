"""A server switching between Debian's mod_md and apache-md, as docs/debian.md has it.

Real Apache, real Pebble (behind tests/harness/acmefront.py, which counts every
newOrder), Debian's real mod_md (/usr/lib/apache2/modules/mod_md.so). The private
ServerRoot stands in for /etc/apache2: conf.d/00-md.conf is mods-enabled/md.load
(a2enmod md), conf.d/50-apache-md.conf is conf-enabled/apache-md.conf (a2enconf
apache-md: what `apache-md apache-conf` prints), conf.d/60-site.conf the site.
Both use their default store, `md` under the ServerRoot. Used by test_migration.py
(the switch itself) and test_side_by_side.py (both answering the same configuration).
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import PORTS
from tests.e2e.mdenv import APACHE_MD, MDEnv
from tests.harness import AcmeFront, OCSPResponder, pki
from tests.harness._util import make_tmp_dir
from tests.harness.client import curl

MOD_MD = "/usr/lib/apache2/modules/mod_md.so"
LOG_LEVEL = "LogLevel info ssl:warn md:notice\n"
STATUS_LOCATION = '<Location "/md-status">\n    SetHandler md-status\n    Require local\n</Location>\n'
FALLBACK_CN = "Apache Managed Domain Fallback"  # mod_md's and apache-md's


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def front(pebble):
    """Pebble behind a front that records every order it accepts."""
    f = AcmeFront(pebble, PORTS["acme_port"] + 20).start()
    yield f
    f.stop()


@pytest.fixture
def server(env, front, service_user):
    s = Server(env, front, service_user)
    yield s
    s.probe_stop()
    s.stop_worker()


# -- the server: what an administrator has and does ----------------------------------------
class Server:
    def __init__(self, env: MDEnv, front: AcmeFront, user: pwd.struct_passwd):
        self.env, self.front, self.user = env, front, user
        self.apache = env.apache
        self.store = env.store  # the default: md under the ServerRoot, for both
        self.worker: subprocess.Popen | None = None
        self.notes: list[str] = []  # sd_notify messages of the worker
        self.http_names: list[str] = []
        self.probe: Probe | None = None

    # the configuration, in Debian's pieces
    def globals(self) -> str:
        a, p = self.apache, self.env.pebble
        return (f"MDCertificateAuthority {self.front.directory_url}\n"
                f"MDCACertificateFile {p.ca_bundle}\n"
                "MDCertificateAgreement accepted\n"
                "MDContactEmail admin@example.test\n"
                f"MDPortMap http:{a.http_port} https:{a.https_port}\n")

    def vhosts(self, specs, includes: bool) -> str:
        """SSL vhosts from (ServerName, ServerAliases, MD) specs, with or without the
        include apache-md generates for the MD."""
        out = ""
        for name, aliases, md in specs:
            alias = f"    ServerAlias {' '.join(aliases)}\n" if aliases else ""
            inc = f"    IncludeOptional {self.store}/apache/{md}.conf\n" if includes else ""
            out += (f"<VirtualHost 127.0.0.1:{self.apache.https_port}>\n"
                    f"    ServerName {name}\n{alias}    SSLEngine on\n{inc}</VirtualHost>\n")
        return out

    def mod_md_site(self, mds: str, vhosts) -> None:
        """As mod_md's documentation has it: MD directives and LogLevel md: at server
        level, md-status by its handler."""
        self.apache.write_conf("60-site", LOG_LEVEL + self.globals() + mds + STATUS_LOCATION
                               + self.vhosts(vhosts, includes=False) + self.http_vhosts())

    def apache_md_site(self, mds: str, vhosts, includes: bool = True) -> None:
        """The same, switched as docs/debian.md says: all of mod_md's part inside
        <IfModule md_module>, each SSL vhost with its include."""
        self.apache.write_conf("60-site", "<IfModule md_module>\n" + LOG_LEVEL + self.globals()
                               + mds + STATUS_LOCATION + "</IfModule>\n"
                               + self.vhosts(vhosts, includes) + self.http_vhosts())

    def http_vhosts(self) -> str:
        """Plain http vhosts of `http_names` (what MDRequireHttps redirects in)."""
        return "".join(f"<VirtualHost 127.0.0.1:{self.apache.http_port}>\n"
                       f"    ServerName {name}\n</VirtualHost>\n" for name in self.http_names)

    def a2enmod_md(self) -> None:
        self.apache.write_conf("00-md", f"LoadModule md_module {MOD_MD}\n")

    def a2dismod_md(self) -> None:
        self.apache.remove_conf("00-md")

    def a2enconf_apache_md(self) -> None:
        self.apache.write_conf("50-apache-md", self.env.cli_ok("apache-conf").stdout)

    def a2disconf_apache_md(self) -> None:
        self.apache.remove_conf("50-apache-md")

    def reload(self) -> None:
        """`systemctl reload apache2`: a graceful restart, and SIGHUP for the worker
        (apache-md.service has ReloadPropagatedFrom=apache2.service)."""
        rc, out = self.apache.configtest()
        assert rc == 0, out
        self.apache.graceful()
        if self.worker and self.worker.poll() is None:
            self.hup_worker()

    def hup_worker(self) -> None:
        """What systemd does for `systemctl reload apache-md` (or a reload propagated from
        apache2): SIGHUP once the unit is active, i.e. after the worker's READY=1; a
        reload asked for while it starts waits for that (the job queue)."""
        deadline = time.monotonic() + 120
        while not any("READY=1" in m.splitlines() for m in self.notes):
            assert self.worker.poll() is None, self.worker_log()
            assert time.monotonic() < deadline, f"worker: no READY=1\n{self.worker_log()}"
            try:
                self.notes.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
        self.worker.send_signal(signal.SIGHUP)

    # the package
    def install_package(self) -> subprocess.CompletedProcess:
        """What apache-md.postinst does to an existing store (the package's user takes it
        over, `apache-md check`), and apache-md.service starting (enabled by the package)."""
        self.chown_store()
        os.chmod(self.store, 0o755)
        check = self.env.cli("check")
        self.start_worker()
        return check

    def chown_store(self) -> None:
        name = self.user.pw_name
        subprocess.run(["chown", "-R", f"{name}:{name}", str(self.store)], check=True)

    def start_worker(self) -> None:
        """apache-md.service: `apache-md worker` as the package's user, Type=notify."""
        self.sock_dir = make_tmp_dir("mig-notify-")
        self.notes = []  # this worker's own
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_dir / "notify"))
        os.chmod(self.sock_dir / "notify", 0o777)
        self.sock.settimeout(0.2)
        self.log = self.sock_dir / "worker.log"
        self.worker = subprocess.Popen(
            APACHE_MD + ["-f", str(self.apache.main_conf), "worker"],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
            env=dict(os.environ, NOTIFY_SOCKET=str(self.sock_dir / "notify")),
            user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        self.env.workers.append(self.worker)

    def worker_status(self, want: str, timeout: float = 120) -> str:
        """Wait for the worker's next sd_notify STATUS containing `want`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.worker.poll() is None, self.worker_log()
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.notes.append(msg)
            if any(ln.startswith("STATUS=") and want in ln for ln in msg.splitlines()):
                return msg
        raise AssertionError(f"worker: no STATUS with {want!r}; got {self.notes[-5:]}\n"
                             f"{self.worker_log()[-3000:]}")

    def drain_status(self) -> None:
        """Take in the notes the worker sent so far: the next worker_status() waits for
        one sent after now (a cycle's STATUS left unread would answer it at once)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.notes.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(0.2)

    def worker_log(self) -> str:
        return self.log.read_text(errors="replace")

    def stop_worker(self) -> None:
        """systemctl stop apache-md."""
        if self.worker is None:
            return
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            self.worker.wait(30)
        self.sock.close()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        self.worker = None

    def activate(self) -> subprocess.CompletedProcess:
        """apache-md-activate.service (root), started by the path unit."""
        return self.env.cli_ok("activate", "--respect-window", "--reload",
                               self.env.reload_command())

    # observation
    def http_status(self, name: str | None = None) -> dict:
        """/md-status over http: mod_md's handler, or apache-md's once switched."""
        path = f"/md-status/{name}" if name else "/md-status"
        return curl(f"http://localhost:{self.apache.http_port}{path}").json()

    def orders(self) -> list[list[str]]:
        """The identifiers of every order the CA accepted so far."""
        return [sorted(i["value"] for i in o.get("identifiers", [])) for o in self.front.orders]

    def probe_start(self, targets) -> None:
        self.probe = Probe(self.apache.https_port, targets)
        self.probe.start()

    def probe_stop(self) -> dict:
        if not self.probe:
            return {}
        self.probe.stop.set()
        self.probe.join(30)
        return self.probe.seen


def await_mod_md(server: Server, names: list[str], timeout: float = 120) -> dict:
    """Until mod_md's md-status has a finished renewal for each MD (staged, not live)."""
    deadline = time.monotonic() + timeout
    while True:
        st = {m["name"]: m for m in server.http_status()["managed-domains"]}
        if all(st.get(n, {}).get("renewal", {}).get("finished") for n in names):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"mod_md did not renew {names}: {json.dumps(st)[:3000]}\n"
                                 f"{server.apache.error_log()[-3000:]}")
        time.sleep(0.5)


def install(s: Server) -> None:
    """docs/debian.md, "Migration from mod_md", step 1: apt install (the store changes
    hands, `apache-md check` runs, the worker starts) while mod_md still runs."""
    check = s.install_package()
    assert check.returncode == 1 and "mod_md is loaded" in check.stderr, check
    s.worker_status("waiting for a valid configuration")


def switch_to_apache_md(s: Server, mds: str, vhosts) -> subprocess.CompletedProcess:
    """Steps 2 to 5, with Apache running; returns what step 4's `apache-md check` said."""
    # 2. a2dismod md
    s.a2dismod_md()
    # 3. mod_md's directives (LogLevel md:, md-status's <Location>) in <IfModule md_module>
    s.apache_md_site(mds, vhosts, includes=False)
    # 4. the IncludeOptional line `apache-md check` prints, in each SSL vhost
    check = s.env.cli("check")
    assert check.returncode == 1, check
    lines = re.findall(r"lacks its certificate include; add inside it:\n\s+(IncludeOptional \S+)",
                       check.stdout)
    assert sorted(lines) == sorted(f"IncludeOptional {s.store}/apache/{md}.conf"
                                   for _, _, md in vhosts), check.stdout
    s.apache_md_site(mds, vhosts)
    s.env.cli_ok("check")
    # 5. a2enconf apache-md, configtest, systemctl reload apache2 (which reaches the worker)
    s.a2enconf_apache_md()
    s.reload()
    return check


# -- what clients get ----------------------------------------------------------------------
CIPHERS = {"rsa": "ECDHE-RSA-AES128-GCM-SHA256", "ec": "ECDHE-ECDSA-AES128-GCM-SHA256"}


def handshake(port: int, name: str, kind: str | None = None) -> x509.Certificate:
    """The leaf a client gets for SNI `name`; `kind` 'rsa'/'ec' asks for that key type."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if kind:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(CIPHERS[kind])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True))


def hexserial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "X")


def served(port: int, name: str, kind: str | None = None) -> str:
    """The serial served, failing on a fallback certificate."""
    cert = handshake(port, name, kind)
    assert FALLBACK_CN not in cert.subject.rfc4514_string(), f"{name} {kind}: fallback served"
    return hexserial(cert)


def await_served(port: int, name: str, serial: str, timeout: float = 30) -> None:
    """Until `serial` is served for `name`: after a graceful reload, children of the old
    generation may still answer a new connection for a moment."""
    deadline = time.monotonic() + timeout
    while not same(hexserial(handshake(port, name)), serial):
        assert time.monotonic() < deadline, f"{name}: {serial} is not served"
        time.sleep(0.1)


class Probe(threading.Thread):
    """Handshakes with every (name, key type) in turn until stopped: `seen` maps each
    target to the set of what it got (a serial, FALLBACK or the connection error)."""

    def __init__(self, port: int, targets):
        super().__init__(daemon=True)
        self.port, self.targets = port, list(targets)
        self.seen: dict[tuple, set[str]] = {t: set() for t in self.targets}
        self.count = 0
        self.stop = threading.Event()

    def await_seen(self, serial: str, targets, timeout: float = 30) -> None:
        """Until each target got `serial` (after a graceful reload, when the old
        generation's children have gone)."""
        deadline = time.monotonic() + timeout
        while not all(serial in self.seen[t] for t in targets):
            assert time.monotonic() < deadline, f"{serial} not served: {self.seen}"
            time.sleep(0.1)

    def run(self) -> None:
        while not self.stop.is_set():
            for t in self.targets:
                try:
                    cert = handshake(self.port, *t)
                    got = "FALLBACK" if FALLBACK_CN in cert.subject.rfc4514_string() \
                        else hexserial(cert)
                except (OSError, ValueError) as e:
                    got = f"error: {e}"
                self.seen[t].add(got)
            self.count += 1
            time.sleep(0.05)


HOSTS = ("plain.test", "www.plain.test", "keys.test", "static.test")


def certificate_status(s: Server, name: str) -> dict:
    return curl(f"http://{name}:{s.apache.http_port}/.httpd/certificate-status").json()


def same(a: str, b: str) -> bool:
    return a.lstrip("0").upper() == b.lstrip("0").upper()


def alike(ours, theirs) -> bool:
    """Equal, but for dates a second apart: mod_md derives a certificate's dates from the
    current time plus the difference to it (md_asn1_time_get), so two of its answers may
    differ by a second."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(alike(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return len(ours) == len(theirs) and all(map(alike, ours, theirs))
    if ours != theirs and isinstance(ours, str) and isinstance(theirs, str):
        try:
            return abs(parsedate_to_datetime(ours) - parsedate_to_datetime(theirs)) \
                <= timedelta(seconds=1)
        except (TypeError, ValueError):
            return False
    return ours == theirs


def validity(md_status: dict) -> dict:
    """key type -> (serial, valid from, valid until) of an md-status object."""
    return {k: (c["serial"].lstrip("0").upper(), c["valid"]["from"], c["valid"]["until"])
            for k, c in md_status.get("cert", {}).items() if isinstance(c, dict) and "serial" in c}


# -- a static certificate ---------------------------------------------------------------------
def static_files(root: Path, ca: pki.CertFiles, name: str, ocsp_url: str) -> pki.CertFiles:
    """A certificate from a CA of the admin's own, where Debian keeps such files: the
    chain in ssl/certs (0644), the key in ssl/private (root:ssl-cert 0640, the directory
    0710), which the package's user may not read."""
    leaf = pki.make_leaf(ca, root / "ssl" / "certs", names=(name,), stem=name,
                         ocsp_url=ocsp_url, with_chain=True)
    private = root / "ssl" / "private"
    private.mkdir(mode=0o710)
    shutil.chown(private, "root", "ssl-cert")
    key = private / leaf.key.name
    leaf.key.rename(key)
    shutil.chown(key, "root", "ssl-cert")
    key.chmod(0o640)
    leaf.key = key
    return leaf


@pytest.fixture
def responder():
    r = OCSPResponder().start()
    yield r
    r.stop()


