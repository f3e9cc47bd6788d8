"""A first install on Debian, exactly as docs/debian.md tells it (issue 10's proof).

The blocks of the first-run path are marked in docs/debian.md
(`<!-- first-run: NAME -->` before each); this test reads them from the doc and
runs them in the doc's order on this machine's own Apache (/etc/apache2), with
the .deb installed for real. Shell lines run as written: `sudo ...` as root,
the others as an unprivileged user (nobody). An Apache block starts with a
comment naming its file and the command that enables it
(`# /etc/apache2/... (sudo a2enconf mds)`): the test writes the file and runs
that command. Nothing else is done between the blocks but looking: after each
one, Apache must pass `apache2ctl configtest` with its master alive, and root
runs `apache-md status` and `apache-md check` (root-run commands once locked
the worker out of its store).

The substitutions, and why:
- `example.org` -> first-run.test (second-run.test for the second MD): names
  pebble-challtestsrv resolves (to 127.0.0.1) for Pebble's validation.
- The CA: the harness Pebble, by the two lines the doc says to add for another
  CA (`MDCertificateAuthority`, `MDCACertificateFile` at the doc's example
  path, a copy of the harness CA bundle); Pebble validates http-01 on port 80.
- Ports: none; Debian's ports.conf is replaced by one that listens on
  127.0.0.1:80 and :443 only (nothing of this test is reachable from outside).
- `make deb`: the session's build (the same `make deb`, once for every
  package test, into another DEB_DIR); `./build/deb/...deb` is that file.
- The ` ...` line of the vhost block ("the rest of your vhost") is left out.
- No systemd runs here (or, in CI, it must not run these units), so the test
  does what systemd would, from the unit files the package installed in
  /lib/systemd/system: what the postinst starts (apache-md-activate.path,
  apache-md.service) is started after the install; apache-md.service's
  ExecStart runs as the unit says (User/Group via setpriv, NoNewPrivileges,
  an empty CapabilityBoundingSet, UMask, Environment, systemd's variables,
  NOTIFY_SOCKET on a socket of the test's that must receive READY=1 from the
  main process); whenever the path unit's PathChanged file changes (not while
  the activation runs, as systemd), apache-md-activate.service's ExecStart
  runs as root. The sandbox settings (ProtectSystem=, PrivateTmp=, ...) are
  not reproduced; files the units read are kept out of /tmp, as they must be.
- `systemctl reload apache2` (in the doc and in the activation unit's
  ExecStart) is a stand-in on PATH: `apache2ctl graceful` (Debian's
  apache2.service ExecReload), waiting until Apache's new generation is up so
  every reload is known to be accepted, then the ExecReload of every running
  unit with ReloadPropagatedFrom=apache2.service. `journalctl -u <unit>`
  prints the output of the units run here.
- Apache is running before the install, as on any Debian server with apache2
  (`apache2ctl start`; APACHE_STARTED_BY_SYSTEMD keeps apache2ctl from
  handing over to a systemd that may run in CI).

Then a second MD is added the same way (its MDomain line in mds.conf, a vhost
from the doc's vhost block) and only the doc's `systemctl reload apache2` is
run: it must get its certificate with nothing else. Afterwards the units are
stopped (as the prerm would), the package purged, and /etc/apache2 restored
file for file as it was found.

Gated as tests/e2e/test_debian.py: in CI, or with APACHE_MD_TEST_DEB=1.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.debpkg import REPO, SYS_ENV, installed, no_service_starts, run, why_not
from tests.harness._util import make_tmp_dir, pid_alive, port_free, wait_for
from tests.harness.client import curl, s_client_cert, verify_chain

pytestmark = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")

DOC = REPO / "docs" / "debian.md"
ETC = Path("/etc/apache2")
STORE = ETC / "md"
UNIT_DIR = Path("/lib/systemd/system")
ERROR_LOG = Path("/var/log/apache2/error.log")
APACHE_PID = Path("/var/run/apache2/apache2.pid")
GENERATION = "resuming normal operations"  # the master logs it at each (re)start
NAME, NAME2 = "first-run.test", "second-run.test"
DOC_CA_FILE = ETC / "acme-ca.pem"  # the doc's example MDCACertificateFile
# restored file for file at the end
AS_FOUND = (ETC, Path("/var/lib/apache2"))
ADMIN = "nobody"  # runs the doc's lines without sudo
# systemd's PATH for services
UNIT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOCKED_OUT = ("Permission denied", "unreadable", "Traceback")
# Bounds of the test, not of the product: an activation (its unit allows 10 min), and
# the wait for the certificates of one MD (Pebble issues within seconds).
ONESHOT_BOUND = 120
CERTIFICATE_BOUND = 180


# -- the doc -----------------------------------------------------------------------------
@dataclass
class Step:
    name: str
    lang: str  # sh | apache
    text: str


def doc_steps() -> list[Step]:
    steps = [Step(*m.groups()) for m in re.finditer(
        r"<!-- first-run: (\S+)[^>]*-->\n```(\w+)\n(.*?)\n```", DOC.read_text(), re.S)]
    # the path the test is about must be there, however the doc words it
    assert any(s.lang == "sh" and "apt install" in s.text for s in steps), steps
    assert any(s.lang == "apache" and "MDomain" in s.text for s in steps), steps
    assert any(s.lang == "apache" and "<VirtualHost" in s.text for s in steps), steps
    assert any(s.lang == "sh" and "systemctl reload apache2" in s.text for s in steps), steps
    # how to name another CA, which with_ca() follows
    text = DOC.read_text()
    assert "MDCertificateAuthority" in text and f"MDCACertificateFile {DOC_CA_FILE}" in text
    return steps


def sh_lines(text: str) -> list[str]:
    """The commands of a shell block (continuations joined, comment lines dropped)."""
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ours(text: str, name: str) -> str:
    """The doc's example domain -> a name challtestsrv resolves."""
    return text.replace("example.org", name)


def with_ca(text: str, directory_url: str) -> str:
    """The two lines the doc says to add inside the MD block for another CA."""
    block = "<IfModule md_module>\n"
    assert block in text, "the MD block is not where the CA lines go"  # else: Let's Encrypt
    return text.replace(block, f"{block}    MDCertificateAuthority {directory_url}\n"
                        f"    MDCACertificateFile {DOC_CA_FILE}\n", 1)


def apache_file(text: str) -> tuple[Path, str, str]:
    """(file, its text, the command that enables it) of an Apache block."""
    first, _, rest = text.partition("\n")
    m = re.fullmatch(r"#\s*(/\S+)\s+\((.+)\)\s*", first)
    assert m, f"an Apache block of the first-run path must name its file: {first!r}"
    body = "".join(line + "\n" for line in rest.splitlines() if line.strip() != "...")
    return Path(m.group(1)), body, m.group(2)


# -- systemd's part ------------------------------------------------------------------------
def unit_file(name: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, as systemd reads a unit (an empty value resets)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    text = re.sub(r"\\\n", " ", (UNIT_DIR / name).read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def one(svc: dict[str, list[str]], key: str, default: str | None = None) -> str | None:
    return svc[key][-1] if svc.get(key) else default


def seconds(span: str) -> float:
    """A systemd time span as the units write them ("5min", "30s", "10min 30s")."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)\s*([a-z]*)", span))


# [Service] settings the test carries out; those it needs not (it fails when the worker
# exits; the log files are named for the units); the sandbox it does not reproduce
# (systemd-analyze verify checks that in test_debian.py). Any other setting fails the
# test: a new one must be carried out here first.
EMULATED = {"Type", "NotifyAccess", "User", "Group", "ExecStart", "ExecReload", "UMask",
            "Environment", "WatchdogSec", "TimeoutStartSec", "TimeoutStopSec",
            "NoNewPrivileges", "CapabilityBoundingSet", "AmbientCapabilities"}
NOT_NEEDED = {"Restart", "RestartSec", "SyslogIdentifier"}
SANDBOX = {"ProtectSystem", "ReadWritePaths", "ProtectHome", "PrivateTmp", "PrivateDevices",
           "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
           "ProtectControlGroups", "ProtectClock", "ProtectHostname",
           "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime",
           "RestrictSUIDSGID", "LockPersonality", "SystemCallArchitectures",
           "SystemCallFilter", "SystemCallErrorNumber"}


class Service:
    """A .service unit run by hand as systemd would run it (see the module docstring)."""

    def __init__(self, name: str, work: Path, path_first: str = ""):
        self.name = name
        self.unit = unit_file(name)
        self.svc = self.unit["Service"]
        unknown = set(self.svc) - EMULATED - NOT_NEEDED - SANDBOX
        assert not unknown, f"{name}: the test does not carry out {sorted(unknown)}"
        self.log = work / f"{name.removesuffix('.service')}.log"
        self.log.touch(mode=0o644)
        self.path_first = path_first
        self.proc: subprocess.Popen | None = None

    def command(self, key: str) -> list[str]:
        line = one(self.svc, key)
        assert line, f"{self.name} has no {key}"
        argv = shlex.split(line.lstrip("-@+!:"))
        user = one(self.svc, "User")
        pre = ["setpriv"]
        if user:
            pre += [f"--reuid={user}", f"--regid={one(self.svc, 'Group', user)}", "--init-groups"]
        if one(self.svc, "NoNewPrivileges") == "yes":
            pre.append("--no-new-privs")
        if "CapabilityBoundingSet" in self.svc and not self.svc["CapabilityBoundingSet"]:
            pre += ["--bounding-set=-all", "--inh-caps=-all"]
        # WATCHDOG_PID is the main process: the shell's PID, which exec keeps.
        return ["/bin/sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh", *pre, "--", *argv]

    def environ(self) -> dict[str, str]:
        env = {"PATH": f"{self.path_first}:{UNIT_PATH}" if self.path_first else UNIT_PATH,
               "INVOCATION_ID": os.urandom(16).hex()}
        user = one(self.svc, "User")
        if user:
            pw = pwd.getpwnam(user)
            env.update(HOME=pw.pw_dir, USER=user, LOGNAME=user, SHELL=pw.pw_shell)
        for assignment in self.svc.get("Environment", []):
            for item in shlex.split(assignment):
                key, _, value = item.partition("=")
                env[key] = value
        if one(self.svc, "WatchdogSec"):
            env["WATCHDOG_USEC"] = str(int(seconds(one(self.svc, "WatchdogSec")) * 1e6))
        return env

    def _spawn(self, key: str, env: dict[str, str]) -> subprocess.Popen:
        with open(self.log, "ab") as out:
            return subprocess.Popen(self.command(key), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd="/",
                                    umask=int(one(self.svc, "UMask", "0022"), 8),
                                    start_new_session=True)

    def start(self, notify: NotifySocket | None = None) -> None:
        env = self.environ()
        if one(self.svc, "Type") == "notify":
            assert notify is not None
            env["NOTIFY_SOCKET"] = str(notify.path)
        self.proc = self._spawn("ExecStart", env)
        if one(self.svc, "Type") == "notify":
            wait_for(lambda: notify.got("READY=1", self.proc.pid),
                     seconds(one(self.svc, "TimeoutStartSec", "90s")),
                     f"READY=1 from {self.name}", logs=[self.log],
                     alive=lambda: self.proc.poll() is None)

    def run_oneshot(self) -> int:
        with open(self.log, "a") as out:
            out.write(f"--- {time.strftime('%H:%M:%S')} {self.name} starts\n")
        p = self._spawn("ExecStart", self.environ())
        try:
            return p.wait(min(ONESHOT_BOUND, seconds(one(self.svc, "TimeoutStartSec", "90s"))))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            with open(self.log, "a") as out:
                out.write(f"--- killed: still running after {ONESHOT_BOUND} s (the test's bound)\n")
            return p.wait()

    @property
    def main_pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after TimeoutStopSec, as `systemctl stop` does."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(seconds(one(self.svc, "TimeoutStopSec", "90s")))
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


class NotifySocket:
    """A notification socket like systemd's: remembers who sent what (SCM_CREDENTIALS)."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)  # the service's user sends to it
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, str]] = []  # (sender pid, one line)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        creds = struct.calcsize("3i")
        while not self.closed.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = next((struct.unpack("3i", d[:creds])[0] for lvl, typ, d in anc
                        if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS), 0)
            self.messages += [(pid, line) for line in data.decode(errors="replace").split("\n")]

    def got(self, line: str, pid: int) -> bool:
        return (pid, line) in self.messages

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        self.thread.join(5)


class PathWatch:
    """A path unit's PathChanged= (the file written, replaced or removed): runs the unit's
    service, one run at a time; what changes during a run does not trigger another (as
    for systemd, whose start job merges into the running one)."""

    def __init__(self, service: Service):
        path_unit = unit_file(service.name.replace(".service", ".path"))["Path"]
        assert one(path_unit, "Unit", service.name) == service.name
        assert set(path_unit) <= {"PathChanged", "Unit"}, f"not carried out: {set(path_unit)}"
        self.path = Path(one(path_unit, "PathChanged"))
        self.service = service
        self.runs: list[int] = []  # exit codes
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _seen(self):
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size

    def start(self) -> None:
        self.last = self._seen()
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopped.wait(0.1):
            if self._seen() != self.last:
                self.runs.append(self.service.run_oneshot())
                self.last = self._seen()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(ONESHOT_BOUND + 10)


STANDIN_SYSTEMCTL = '''#!/usr/bin/python3
"""systemctl for tests/e2e/test_debian_first_run.py, on a machine without systemd."""
import json, os, subprocess, sys, time

with open({conf!r}) as f:
    conf = json.load(f)
args = [a.removesuffix(".service") for a in sys.argv[1:]]
if args != ["reload", "apache2"]:
    sys.exit("systemctl stand-in: not carried out here: " + " ".join(sys.argv[1:]))


def generations():
    with open(conf["error_log"], errors="replace") as f:
        return f.read().count(conf["mark"])


before = generations()
# Debian's apache2.service: ExecReload=/usr/sbin/apachectl graceful
rc = subprocess.call(["apache2ctl", "graceful"])
if rc:
    sys.exit(rc)
deadline = time.monotonic() + 30
while generations() == before:
    if time.monotonic() > deadline:
        sys.exit("systemctl stand-in: Apache did not come back from the graceful reload")
    time.sleep(0.1)
with open(conf["reloads"], "a") as f:
    f.write(" ".join(sys.argv) + "\\n")
# ReloadPropagatedFrom=apache2.service: the ExecReload of each running unit that says so
for pid_file, command in conf["propagate"]:
    try:
        with open(pid_file) as f:
            pid = f.read().strip()
    except FileNotFoundError:
        continue
    if pid:
        subprocess.call(command.replace("$MAINPID", pid), shell=True)
'''

STANDIN_JOURNALCTL = '''#!/usr/bin/python3
"""journalctl -u UNIT...: the output of the units tests/e2e/test_debian_first_run.py runs."""
import sys

units = [a for i, a in enumerate(sys.argv[1:], 1) if sys.argv[i - 1] == "-u"]
for unit in units:
    print(open({logs!r} + "/" + unit.removesuffix(".service") + ".log").read(), end="")
'''


# -- /etc/apache2, as found -----------------------------------------------------------------
def tree(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("d", st.st_mode, st.st_uid, st.st_gid)
            else:
                out[rel] = ("f", st.st_mode, st.st_uid, st.st_gid,
                            hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def restore(root: Path, backup: Path) -> None:
    """Make `root` what `backup` is, file for file."""
    now, was = tree(root), tree(backup)
    for rel in sorted(set(now) - set(was), reverse=True):  # children before their parents
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    for rel in sorted(was):  # parents before their children
        if now.get(rel) == was[rel]:
            continue
        src, dst = backup / rel, root / rel
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        if was[rel][0] == "l":
            dst.symlink_to(os.readlink(src))
        elif was[rel][0] == "d":
            dst.mkdir(exist_ok=True)
        else:
            shutil.copy2(src, dst)
        if was[rel][0] != "l":
            os.chmod(dst, was[rel][1])
            os.chown(dst, was[rel][2], was[rel][3])


# -- the machine -------------------------------------------------------------------------------
def apache_pid() -> int | None:
    try:
        pid = int(APACHE_PID.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


class FirstRun:
    """The machine of one first run: the units by hand, the stand-ins, Apache."""

    def __init__(self, deb: Path, pebble, work: Path):
        self.deb, self.pebble, self.work = deb, pebble, work
        self.bin = work / "bin"
        self.bin.mkdir(mode=0o755)
        self.reloads = work / "reloads"
        self.apache_pid: int | None = None
        self.worker: Service | None = None
        self.watch: PathWatch | None = None
        self.notify: NotifySocket | None = None
        self.checks: list[str] = []  # every command run and its exit code, for failures

    def shell_env(self) -> dict[str, str]:
        return dict(SYS_ENV, PATH=f"{self.bin}:{SYS_ENV['PATH']}")

    def sh(self, line: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """One line of a shell block, as the admin runs it."""
        if line.startswith("sudo "):
            argv = ["sh", "-c", line.removeprefix("sudo ")]
        else:
            argv = ["runuser", "-u", ADMIN, "--", "sh", "-c", line]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                           env=self.shell_env(), stdin=subprocess.DEVNULL)
        self.checks.append(f"$ {line} -> {p.returncode}")
        assert p.returncode == 0, f"docs/debian.md: `{line}` -> {p.returncode}\n" \
            f"{p.stdout}\n{p.stderr}\nso far:\n" + "\n".join(self.checks) + "\n" + self.logs()
        # what the admin reads says nothing about files closed to them
        assert not any(word in p.stdout + p.stderr for word in LOCKED_OUT), \
            f"docs/debian.md: `{line}` says:\n{p.stdout}\n{p.stderr}"
        return p

    def ran(self, command: str) -> bool:
        return any(command in line for line in self.checks if line.startswith("$"))

    def output(self) -> dict[Path, str]:
        """What the units wrote (systemd's journal)."""
        units = (self.worker, self.watch and self.watch.service)
        return {u.log: u.log.read_text(errors="replace") for u in units if u is not None}

    def logs(self) -> str:
        return "\n".join(f"--- {log} ---\n{text[-6000:]}" for log, text in self.output().items())

    # -- before the doc: a Debian server with Apache running ---------------------------------
    def start_apache(self) -> None:
        (ETC / "ports.conf").write_text(
            "# tests/e2e/test_debian_first_run.py: loopback only\nListen 127.0.0.1:80\n"
            "<IfModule ssl_module>\n\tListen 127.0.0.1:443\n</IfModule>\n")
        run("apache2ctl", "start", env=dict(self.shell_env(), APACHE_STARTED_BY_SYSTEMD="1"))
        wait_for(apache_pid, 30, "the system Apache", logs=[ERROR_LOG])
        self.apache_pid = apache_pid()

    def stop_apache(self) -> None:
        """SIGTERM to the master we started (`apache2ctl stop` would read the configuration
        first and refuse when a failed test left it broken)."""
        if self.apache_pid and apache_pid() == self.apache_pid:
            os.kill(self.apache_pid, signal.SIGTERM)
            wait_for(lambda: not pid_alive(self.apache_pid), 30, "the system Apache to stop")

    def write_standins(self) -> None:
        conf = self.work / "standins.json"
        propagate = []
        for unit in sorted(UNIT_DIR.glob("apache-md*.service")):
            svc = unit_file(unit.name)
            if "apache2.service" in " ".join(svc["Unit"].get("ReloadPropagatedFrom", [])):
                propagate.append([str(self.work / f"{unit.stem}.pid"), one(svc["Service"],
                                                                           "ExecReload")])
        conf.write_text(json.dumps({"error_log": str(ERROR_LOG), "mark": GENERATION,
                                    "reloads": str(self.reloads), "propagate": propagate}))
        for name, text in (("systemctl", STANDIN_SYSTEMCTL.format(conf=str(conf))),
                           ("journalctl", STANDIN_JOURNALCTL.format(logs=str(self.work)))):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)

    # -- what systemd does after the install (postinst: deb-systemd-invoke start) -------------
    def start_units(self) -> None:
        self.write_standins()
        activate = Service("apache-md-activate.service", self.work, path_first=str(self.bin))
        self.watch = PathWatch(activate)
        self.watch.start()
        self.worker = Service("apache-md.service", self.work)
        self.notify = NotifySocket(self.work / "notify")
        self.worker.start(self.notify)
        (self.work / "apache-md.pid").write_text(str(self.worker.main_pid))

    def stop_units(self) -> int | None:
        (self.work / "apache-md.pid").unlink(missing_ok=True)
        if self.watch:
            self.watch.stop()
        rc = self.worker.stop() if self.worker else None
        if self.notify:
            self.notify.close()
        return rc

    # -- between the steps: Apache is fine, root's commands lock nobody out ------------------
    def between(self, *root_commands: str) -> None:
        p = run("apache2ctl", "configtest", ok=False, env=self.shell_env())
        assert p.returncode == 0, f"apache2ctl configtest -> {p.returncode}\n{p.stderr}"
        assert apache_pid() == self.apache_pid, "the Apache master is gone"
        for cmd in root_commands:
            p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True,
                               env=self.shell_env(), timeout=120)
            self.checks.append(f"# {cmd} -> {p.returncode}")
            assert "Traceback" not in p.stderr, p.stderr
            assert p.returncode in (0, 1), f"{cmd} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        self.assert_worker_fine()

    def assert_worker_fine(self) -> bool:
        """The worker runs and nothing it or the activation logged says it is locked out."""
        if self.worker is None:
            return True
        assert self.worker.main_pid, f"the worker exited\n{self.logs()}"
        assert not any(word in text for text in self.output().values() for word in LOCKED_OUT), \
            "locked out, after:\n" + "\n".join(self.checks) + "\n" + self.logs()
        return True

    # -- the doc's steps -----------------------------------------------------------------------
    def do(self, step: Step, name: str = NAME, extra_md: str | None = None) -> None:
        """One marked block, with the module docstring's substitutions."""
        text = ours(step.text, name)
        if step.lang == "apache":
            path, body, enable = apache_file(text)
            if "MDomain" in body:
                shutil.copy(self.pebble.ca_bundle, DOC_CA_FILE)  # the CA's PEM, where the doc says
                DOC_CA_FILE.chmod(0o644)
                body = with_ca(body, self.pebble.directory_url)
                if extra_md:  # the second MD: the doc's MDomain line once more, for it
                    line = next(x for x in step.text.splitlines() if "MDomain" in x)
                    body = body.replace(ours(line, name) + "\n",
                                        ours(line, name) + "\n" + ours(line, extra_md) + "\n")
            path.write_text(body)
            self.sh(enable)
            return
        for line in sh_lines(text):
            if re.match(r"make deb\b(?!-)", line):
                continue  # the session's build
            line = re.sub(r"\./build/deb/\S+\.deb", str(self.deb), line)
            if re.match(r"sudo apt(-get)? install\b", line):
                with no_service_starts():  # systemd's part is the test's: start_units()
                    self.sh(line)
                self.start_units()
            else:
                self.sh(line)

    def served(self, name: str):
        chain = s_client_cert("127.0.0.1", 443, name)
        return chain if chain and verify_chain(chain, self.pebble.root_pem, hostname=name) \
            else None

    def await_certificate(self, *names: str) -> None:
        deadline = time.monotonic() + CERTIFICATE_BOUND
        for n in names:
            wait_for(lambda: self.served(n), max(1.0, deadline - time.monotonic()),
                     f"Apache serving Pebble's certificate for {n}",
                     logs=[self.worker.log, self.watch.service.log], interval=0.5,
                     alive=self.assert_worker_fine)


@pytest.fixture
def machine(deb, pebble):
    if installed("apache-md"):
        pytest.fail("apache-md is installed already; purge it first")
    if apache_pid() or not (port_free(80) and port_free(443)):
        msg = "the system Apache runs, or 127.0.0.1:80/443 are taken"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    work = make_tmp_dir("first-run-")
    # as found: Apache's configuration, and a2enmod's records of what the admin enabled
    backups = {d: work / "as-found" / str(d).strip("/").replace("/", "+") for d in AS_FOUND}
    store_existed = STORE.exists()
    had_user = _user_exists()
    m = None
    try:
        for d, b in backups.items():
            shutil.copytree(d, b, symlinks=True)
        # Pebble validates http-01 on port 80: the system Apache
        with pebble.configured(http_port=80, https_port=443):
            m = FirstRun(deb, pebble, work)
            m.start_apache()
            yield m
    finally:
        # every step, whatever failed before it; the first error is raised at the end
        errors = []

        def attempt(step, *args):
            try:
                step(*args)
            except Exception as e:  # noqa: BLE001 - clean up the rest first
                errors.append(e)
        if m is not None:
            attempt(m.stop_units)
        if installed("apache-md") or run("dpkg", "-s", "apache-md", ok=False).returncode == 0:
            attempt(run, "dpkg", "--purge", "apache-md")
        if m is not None:
            attempt(m.stop_apache)
        if not store_existed and STORE.exists():
            attempt(shutil.rmtree, STORE)
        if not had_user and _user_exists():
            attempt(run, "deluser", "--system", "--quiet", "apache-md")
        for d, b in backups.items():
            if b.exists():
                attempt(restore, d, b)
        if errors:
            sys.stderr.write(f"\n[first run] kept {work}\n")
            raise errors[0]
        shutil.rmtree(work, ignore_errors=True)


def _user_exists() -> bool:
    try:
        pwd.getpwnam("apache-md")
        return True
    except KeyError:
        return False


def test_first_run_as_the_doc_says(machine):
    m = machine
    steps = doc_steps()
    root_cmds = ("apache-md status", "apache-md check")
    for step in steps:
        m.do(step)
        # `check` writes the includes: only once the doc has run it, or it would hide
        # a step the doc is missing
        m.between(*root_cmds if m.ran("apache-md check") else root_cmds[:1])
    assert m.worker is not None, "the doc's path never installed the package"
    m.await_certificate(NAME, f"www.{NAME}")
    r = curl(f"https://{NAME}/", cacert=m.pebble.root_pem_path)
    assert r.status != 503, r  # 503 is the fallback's answer
    status = curl("http://localhost/md-status").json()
    assert {md["name"]: md["state"] for md in status["managed-domains"]} == {NAME: 2}, status

    # A second MD, the same way; then only the doc's reload.
    mds = next(s for s in steps if s.lang == "apache" and "MDomain" in s.text)
    vhost = next(s for s in steps if s.lang == "apache" and "<VirtualHost" in s.text)
    reload_line = next(line for s in steps if s.lang == "sh" for line in sh_lines(s.text)
                       if "systemctl reload apache2" in line)
    m.do(mds, extra_md=NAME2)
    m.do(vhost, name=NAME2)
    m.between("apache-md status")
    m.sh(reload_line)
    assert s_client_cert("127.0.0.1", 443, NAME2), "the new vhost does not answer"
    m.await_certificate(NAME2, f"www.{NAME2}", NAME)
    m.between(*root_cmds)

    # the worker was never locked out, and owns everything in its store
    pw = pwd.getpwnam("apache-md")
    m.assert_worker_fine()
    not_owned = [str(p) for p in [STORE, *STORE.rglob("*")] if p.lstat().st_uid != pw.pw_uid]
    assert not not_owned, not_owned
    assert m.watch.runs and set(m.watch.runs) == {0}, (m.watch.runs, m.logs())
    # systemd's view of the worker: READY=1 and everything else from its main process
    assert {pid for pid, _ in m.notify.messages} == {m.worker.main_pid}, m.notify.messages
    # every reload was accepted: the stand-in saw each new generation come up
    assert m.reloads.read_text().count("reload") >= 4  # two of the doc's, two activations
    assert apache_pid() == m.apache_pid
    status = curl("http://localhost/md-status").json()
    assert {md["name"]: md["state"] for md in status["managed-domains"]} == \
        {NAME: 2, NAME2: 2}, status

    # stopped as `apt purge` stops the units (prerm), then purged
    assert m.stop_units() == 0, m.logs()
    assert m.notify.got("STOPPING=1", m.worker.proc.pid)
    run("apt-get", "purge", "-y", "-q", "apache-md")
    assert not _user_exists()
    run("apache2ctl", "configtest", env=m.shell_env())  # Apache is fine without us
