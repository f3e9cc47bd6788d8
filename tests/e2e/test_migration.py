"""Switching a server from Debian's mod_md to apache-md and back (issue 11's proof).

Real Apache, real Pebble (behind tests/harness/acmefront.py, which counts every
newOrder), Debian's real mod_md (/usr/lib/apache2/modules/mod_md.so). The private
ServerRoot stands in for /etc/apache2: conf.d/00-md.conf is mods-enabled/md.load
(a2enmod md), conf.d/50-apache-md.conf is conf-enabled/apache-md.conf (a2enconf
apache-md: what `apache-md apache-conf` prints), conf.d/60-site.conf the site.
Both use their default store, `md` under the ServerRoot. The switch follows
docs/debian.md "Migration from mod_md" step by step, with the store handed to an
unprivileged user as the package's postinst does and the worker running as that
user, while a probe makes TLS handshakes all the time and records what is served.
"""
from __future__ import annotations

import base64
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
from cryptography.hazmat.primitives import serialization

from tests.conftest import PORTS
from tests.e2e.mdenv import APACHE_MD, MDEnv
from tests.harness import AcmeFront, OCSPResponder, pki
from tests.harness._util import make_tmp_dir
from tests.harness.client import curl, dns_names, s_client

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
                               + self.vhosts(vhosts, includes=False))

    def apache_md_site(self, mds: str, vhosts, includes: bool = True) -> None:
        """The same, switched as docs/debian.md says: all of mod_md's part inside
        <IfModule md_module>, each SSL vhost with its include."""
        self.apache.write_conf("60-site", "<IfModule md_module>\n" + LOG_LEVEL + self.globals()
                               + mds + STATUS_LOCATION + "</IfModule>\n"
                               + self.vhosts(vhosts, includes))

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


# -- 1: mod_md -> apache-md ------------------------------------------------------------------
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


def test_mod_md_store_is_taken_over_with_no_new_order_and_no_fallback(server, responder,
                                                                       tmp_path):
    s, a = server, server.apache
    # a static certificate from a CA of the admin's own, stapled by mod_md
    ca = pki.make_ca(tmp_path, name="static test CA")
    responder.add_issuer(ca.cert.read_bytes(), ca.key.read_bytes())
    static = static_files(a.root, ca, "static.test", responder.url)
    mds = ("MDomain plain.test www.plain.test\n"
           "<MDomain keys.test>\n    MDPrivateKeys secp256r1 rsa2048\n</MDomain>\n"
           f"<MDomain static.test>\n    MDCertificateFile {static.cert}\n"
           f"    MDCertificateKeyFile {static.key}\n    MDStapling on\n</MDomain>\n")
    vhosts = [("plain.test", ["www.plain.test"], "plain.test"), ("keys.test", [], "keys.test"),
              ("static.test", [], "static.test")]
    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    a.start()
    await_mod_md(s, ["plain.test", "keys.test"])
    a.restart()  # mod_md activates staged certificates at a restart
    by_mod_md = {m["name"]: m for m in s.http_status()["managed-domains"]}
    assert all(by_mod_md[n]["state"] == 2 for n in ("plain.test", "keys.test", "static.test"))
    assert by_mod_md["static.test"]["cert"]["0"]["ocsp"]["status"] == "good"
    targets = [("plain.test", None), ("www.plain.test", None), ("keys.test", "rsa"),
               ("keys.test", "ec"), ("static.test", None)]
    want = {t: served(a.https_port, *t) for t in targets}
    assert same(want[("static.test", None)], hexserial(static.certificate))
    assert want[("keys.test", "rsa")] != want[("keys.test", "ec")]
    stapled = s_client("127.0.0.1", a.https_port, "static.test", status=True)
    assert stapled.ocsp_cert_status == "good", stapled.output
    cs_mod_md = {n: certificate_status(s, n) for n in HOSTS}
    ocsp_asked = len(responder.requests)
    orders = s.orders()
    assert sorted(orders) == [["keys.test"], ["keys.test"], ["plain.test", "www.plain.test"]]

    s.probe_start(targets)
    install(s)
    switch_to_apache_md(s, mds, vhosts)
    s.worker_status("next check")  # its first cycle over the MDs
    # 6. apache-md status
    status = s.env.cli_ok("status").stdout
    seen = s.probe_stop()

    assert s.orders() == orders, "apache-md ordered a certificate"
    for t in targets:
        assert seen[t] == {want[t]}, (t, seen[t], want[t])
    assert s.probe.count > 10
    for t in targets:
        assert served(a.https_port, *t) == want[t]
    ours = {m["name"]: m for m in s.env.status()["managed-domains"]}
    for name in ("plain.test", "keys.test", "static.test"):
        assert ours[name]["state"] == 2, ours[name]
        assert alike(validity(ours[name]), validity(by_mod_md[name])), name
        assert name in status
    # the response mod_md fetched, stapled through apache-md's relay, not fetched again
    stapled = s_client("127.0.0.1", a.https_port, "static.test", status=True)
    assert stapled.ocsp_cert_status == "good", stapled.output
    assert "POST /.httpd/ocsp-relay" in a.access_log()
    assert len(responder.requests) == ocsp_asked
    # mod_md's certificate-status, key for key (apache-md adds a static MD's files as "0")
    for name in HOSTS:
        ours = certificate_status(s, name)
        assert alike({k: ours.get(k) for k in cs_mod_md[name]}, cs_mod_md[name]), name
    # /md-status is apache-md's now (mod_md's <Location> went into the <IfModule>)
    assert {m["name"]: m["state"] for m in s.http_status()["managed-domains"]} == \
        {"plain.test": 2, "keys.test": 2, "static.test": 2}
    log = s.worker_log()
    assert "Traceback" not in log and "ERROR" not in log.split("SIGHUP", 1)[1], log


# -- 2: MDs renamed during the switch --------------------------------------------------------
def test_mds_renamed_during_the_switch_keep_their_certificates(server):
    """mod_md's "MD renamed" rules across the switch: x.test loses its first name and
    gains c.test, sw.test has ServerName and ServerAlias swapped. Neither is served a
    fallback; the one with a new name is renewed in the background, as the worker's user,
    and activated by root, as on Debian."""
    s, a = server, server.apache
    s.a2enmod_md()
    s.mod_md_site("MDomain x.test a.test b.test\nMDomain sw.test\n",
                  [("a.test", [], "x.test"), ("b.test", [], "x.test"),
                   ("sw.test", ["alias.test"], "sw.test")])
    a.start()
    await_mod_md(s, ["x.test", "sw.test"])
    a.restart()
    by_mod_md = {m["name"]: m for m in s.http_status()["managed-domains"]}
    assert by_mod_md["sw.test"]["domains"] == ["sw.test", "alias.test"]
    targets = [(n, None) for n in ("a.test", "b.test", "sw.test", "alias.test")]
    old = {t: served(a.https_port, *t) for t in targets}
    orders = s.orders()

    s.probe_start(targets + [("c.test", None)])
    install(s)
    renamed = [("a.test", [], "a.test"), ("b.test", [], "a.test"), ("c.test", [], "a.test"),
               ("alias.test", ["sw.test"], "alias.test")]
    check = switch_to_apache_md(s, "MDomain a.test b.test c.test\nMDomain alias.test\n",
                                renamed)
    assert "MD x.test renamed to a.test (a.test b.test c.test)" in check.stderr, check
    assert "MD sw.test renamed to alias.test" in check.stderr, check
    s.worker_status("next check")  # the cycle that renewed a.test for its new names
    assert "a.test" in (s.store / "status/activation/activation-requested").read_text()
    s.activate()  # apache-md-activate.path
    new = s.env.status("a.test")["cert"]["rsa"]["serial"].lstrip("0")
    assert not same(new, old[("a.test", None)])
    s.probe.await_seen(new, [(n, None) for n in ("a.test", "b.test", "c.test")])
    seen = s.probe_stop()

    assert s.orders()[len(orders):] == [["a.test", "b.test", "c.test"]], s.orders()
    for name in ("a.test", "b.test"):
        assert seen[(name, None)] == {old[(name, None)], new}, seen
    assert seen[("c.test", None)] <= {old[("a.test", None)], new}, seen  # never a fallback
    assert sorted(dns_names(handshake(a.https_port, "c.test"))) == ["a.test", "b.test", "c.test"]
    for name in ("sw.test", "alias.test"):
        assert seen[(name, None)] == {old[(name, None)]}, seen
        assert served(a.https_port, name) == old[(name, None)]
    ours = {m["name"]: m for m in s.env.status()["managed-domains"]}
    assert sorted(ours) == ["a.test", "alias.test"]
    assert ours["alias.test"]["domains"] == ["alias.test", "sw.test"]
    assert ours["alias.test"]["state"] == ours["a.test"]["state"] == 2
    assert alike(validity(ours["alias.test"]), validity(by_mod_md["sw.test"]))
    assert not (s.store / "domains/x.test").exists() and not (s.store / "domains/sw.test").exists()
    assert "Traceback" not in s.worker_log()


# -- 3: apache-md -> mod_md ------------------------------------------------------------------
def test_a_store_apache_md_wrote_is_taken_back_by_mod_md(server):
    s, a, store = server, server.apache, server.store
    # apache-md from the start, as the package sets it up
    store.mkdir(mode=0o755)
    os.chown(store, s.user.pw_uid, s.user.pw_gid)
    mds = ("MDomain back.test www.back.test\n"
           "<MDomain duo.test>\n    MDPrivateKeys secp256r1 rsa2048\n</MDomain>\n")
    vhosts = [("back.test", ["www.back.test"], "back.test"), ("duo.test", [], "duo.test")]
    s.apache_md_site(mds, vhosts)
    s.a2enconf_apache_md()
    s.env.cli_ok("check")
    a.start()
    s.start_worker()
    s.worker_status("next check")  # both obtained and staged
    s.activate()
    # a renewal (the first set goes into archive/), broken files set aside
    s.env.cli_ok("renew", "--force", "back.test")
    s.activate()
    (store / "domains/back.test/job.json").write_text("{not json")
    (store / "domains/back.test/md.json").write_text("[]")
    s.worker.send_signal(signal.SIGHUP)
    s.worker_status("next check")
    assert (store / "domains/back.test/job.json.broken.1").exists()
    assert (store / "domains/back.test/md.json.broken.1").exists()
    # a renewal of duo.test staged, not yet activated: mod_md activates it at its start
    s.env.cli_ok("renew", "--force", "duo.test")
    ours = {m["name"]: m for m in s.env.status()["managed-domains"]}
    live = validity(ours["back.test"])
    staged = validity(ours["duo.test"]["renewal"])
    assert set(staged) == {"rsa", "secp256r1"} and staged != validity(ours["duo.test"])
    orders = s.orders()
    targets = [("back.test", None), ("www.back.test", None)]
    await_served(a.https_port, "back.test", live["rsa"][0])
    s.probe_start(targets)

    # what mod_md does not know is there: apache-md's own groups, files set aside
    assert all(any((store / g).iterdir()) for g in ("apache", "locks", "status", "watch"))
    # docs/debian.md: "Going back"
    s.stop_worker()  # systemctl disable --now apache-md apache-md-activate.path
    s.a2disconf_apache_md()
    s.a2enmod_md()
    s.apache_md_site(mds, vhosts, includes=False)  # the vhosts as mod_md had them
    rc, out = a.configtest()
    assert rc == 0, out
    a.stop()  # systemctl restart apache2: a new master (mod_md sets itself up only then)
    a.start()
    seen = s.probe_stop()

    # no fallback (only refused connections while Apache restarted), no order
    for target in targets:
        assert {g for g in seen[target] if not g.startswith("error")} == {live["rsa"][0]}, seen
    assert s.orders() == orders
    # mod_md activated the set apache-md staged: it decrypted apache-md's keys
    by_mod_md = {m["name"]: m for m in s.http_status()["managed-domains"]}
    assert by_mod_md["back.test"]["state"] == by_mod_md["duo.test"]["state"] == 2, by_mod_md
    assert alike(validity(by_mod_md["back.test"]), live)
    assert alike(validity(by_mod_md["duo.test"]), staged)
    assert same(served(a.https_port, "duo.test", "ec"), staged["secp256r1"][0])
    assert same(served(a.https_port, "duo.test", "rsa"), staged["rsa"][0])
    assert not by_mod_md["back.test"].get("renew") and not by_mod_md["duo.test"].get("renew")
    assert not re.search(r"\[md:(error|warn)\]", a.error_log()), a.error_log()
    # and renews in this store, with apache-md's account
    accounts = sorted(p.name for p in (store / "accounts").iterdir())
    due = "<MDomain back.test www.back.test>\n    MDRenewWindow 1900d\n</MDomain>\n"
    s.apache_md_site(mds.replace("MDomain back.test www.back.test\n", due), vhosts,
                     includes=False)
    a.graceful()
    await_mod_md(s, ["back.test"])
    s.apache_md_site(mds, vhosts, includes=False)  # as before: nothing due
    a.stop()
    a.start()
    assert s.orders()[len(orders):] == [["back.test", "www.back.test"]]
    by_mod_md = {m["name"]: m for m in s.http_status()["managed-domains"]}
    renewed = validity(by_mod_md["back.test"])
    assert renewed != live and same(served(a.https_port, "back.test"), renewed["rsa"][0])
    assert sorted(p.name for p in (store / "accounts").iterdir()) == accounts

    # and forward again ("Coming from mod_md" with the package installed): the files
    # mod_md made as root (and www-data) meanwhile go back to the package's user
    targets = [("back.test", None), ("duo.test", "rsa"), ("duo.test", "ec")]
    want = {t: served(a.https_port, *t) for t in targets}
    orders = s.orders()
    s.probe_start(targets)
    s.start_worker()  # 1. systemctl enable --now apache-md apache-md-activate.path
    s.worker_status("waiting for a valid configuration")
    s.a2dismod_md()
    s.apache_md_site(mds, vhosts)
    check = s.env.cli("check")  # an admin who forgot the chown is told
    assert check.returncode == 1, check
    assert f"belongs to root:root, mode 0700, the store to {s.user.pw_name}; chown -R " \
           f"{s.user.pw_name}: {store})" in check.stderr, check.stderr
    s.chown_store()
    switch_to_apache_md(s, mds, vhosts)
    s.worker_status("next check")
    seen = s.probe_stop()
    assert s.orders() == orders
    for t in targets:
        assert seen[t] == {want[t]}, (t, seen[t])
    ours = {m["name"]: m for m in s.env.status()["managed-domains"]}
    for name in ("back.test", "duo.test"):
        assert ours[name]["state"] == 2
        assert alike(validity(ours[name]), validity(by_mod_md[name])), name
    assert "Traceback" not in s.worker_log() and "ERROR" not in s.worker_log().split("SIGHUP")[-1]


# -- 4: what is in between: a set mod_md staged, the store's key -------------------------------
def store_key(store: Path) -> bytes:
    """The 48 bytes of md_store.json's key, which encrypt staged and account keys."""
    text = json.loads((store / "md_store.json").read_text())["key"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_set_mod_md_staged_goes_live_under_apache_md_and_the_store_key_is_shared(server):
    """mod_md obtained a certificate but Apache was not restarted since: the set waits in
    staging/ (encrypted key). apache-md activates it, renews with mod_md's account and
    key, and mod_md activates apache-md's staged set in turn, while the worker, left
    running, stands down."""
    s, a, store = server, server.apache, server.store
    mds, vhosts = "MDomain wait.test\n", [("wait.test", [], "wait.test")]
    s.a2enmod_md()
    s.mod_md_site(mds, vhosts)
    a.start()
    await_mod_md(s, ["wait.test"])  # staged, not restarted: mod_md serves its fallback
    staged = store / "staging/wait.test"
    assert b"ENCRYPTED PRIVATE KEY" in (staged / "privkey.pem").read_bytes()
    by_mod_md = hexserial(x509.load_pem_x509_certificate((staged / "pubcert.pem").read_bytes()))
    # the account mod_md registered waits there too, for the activation to save it
    assert (staged / "account.json").exists() and not list((store / "accounts").iterdir())
    key, orders = store_key(store), s.orders()

    install(s)
    switch_to_apache_md(s, mds, vhosts)
    s.worker_status("next check")
    s.activate()  # the worker asked for it
    await_served(a.https_port, "wait.test", by_mod_md)
    assert s.orders() == orders
    assert not staged.exists()
    accounts = [p.name for p in (store / "accounts").iterdir()]
    assert len(accounts) == 1 and (store / "accounts" / accounts[0] / "account.pem").exists()
    live = json.loads((store / "domains/wait.test/md.json").read_text())
    assert live["ca"]["account"] == accounts[0]

    # a renewal by apache-md: mod_md's account (its key decrypted), the set staged with
    # mod_md's store key
    s.env.cli_ok("renew", "--force", "wait.test")
    assert s.orders()[len(orders):] == [["wait.test"]]
    assert [p.name for p in (store / "accounts").iterdir()] == accounts
    assert store_key(store) == key
    serialization.load_pem_private_key((staged / "privkey.pem").read_bytes(), password=key)
    renewed = hexserial(x509.load_pem_x509_certificate((staged / "pubcert.pem").read_bytes()))

    # back to mod_md, which activates it at its start; the admin forgot to stop the
    # worker, which stands down once it sees mod_md loaded
    s.a2disconf_apache_md()
    s.a2enmod_md()
    s.apache_md_site(mds, vhosts, includes=False)
    a.stop()
    a.start()
    assert served(a.https_port, "wait.test") == renewed
    st = s.http_status("wait.test")
    assert st["state"] == 2 and same(st["cert"]["rsa"]["serial"], renewed), st
    s.worker_status("waiting for a valid configuration")
    log = s.worker_log()
    assert "mod_md manages the certificates now" in log and "Traceback" not in log, log
    assert not (store / "status/worker/worker.json").exists()
    assert s.orders()[len(orders):] == [["wait.test"]]
