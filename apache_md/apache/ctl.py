"""Running Apache: configuration test, reload, and whether it still runs after one.

A graceful reload returns before Apache has read its configuration again; when
mod_ssl then cannot load a key, the parent exits. `confirm_reload` waits for the
new generation (children forked after the reload, a Listen port answering) or
for the parent's death, by Apache's PidFile and /proc.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass

from ..core.model import Config
from ..store import owner

log = logging.getLogger(__name__)
DEBIAN_CONF = "/etc/apache2/apache2.conf"


def default_reload_command() -> list[str] | None:
    """Debian's way to reload Apache, or None when we may not (not root)."""
    if os.geteuid() != 0:
        return None
    if os.path.isdir("/run/systemd/system"):
        return ["systemctl", "reload", "apache2"]
    return ["apache2ctl", "graceful"]


def configtest_command(config: Config) -> list[str]:
    """`apache2ctl -t` for Debian's own config (it needs Debian's envvars),
    else the binary pointed at this config and root."""
    if os.path.abspath(config.main_file) == DEBIAN_CONF:
        return ["apache2ctl", "-t"]
    return ["apache2", "-d", config.server_root, "-f", config.main_file, "-t"]


def run(cmd: list[str], what: str, timeout: float = 120) -> str | None:
    """Run an Apache command; None on success, else a one-line error."""
    log.info("%s: %s", what, shlex.join(cmd))
    try:
        with owner.as_root():  # `activate` works as the store's owner otherwise
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{shlex.join(cmd)}: {e}"
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        lines = [ln for ln in out.splitlines() if ln.strip() and "AH01882" not in ln]
        return f"{shlex.join(cmd)} exited with {proc.returncode}: {' '.join(lines[-3:])}"
    return None


def configtest(config: Config) -> str | None:
    return run(configtest_command(config), "Apache configuration test")


def reload(cmd: list[str]) -> str | None:
    return run(cmd, "reloading Apache")


def start_command(reload_cmd: list[str]) -> list[str] | None:
    """The start command that goes with a reload command (`systemctl reload apache2`,
    `apache2ctl graceful`, `apache2 ... -k graceful`), or None for one we do not know."""
    for i, word in enumerate(reload_cmd):
        if word in ("reload", "graceful"):
            return reload_cmd[:i] + ["start"] + reload_cmd[i + 1:]
    return None


# -- is it running? -----------------------------------------------------------------------
@dataclass
class Running:
    pid: int
    children: set[int]
    pid_file: str


def pid_file(config: Config) -> str | None:
    """Apache's PidFile as Apache itself resolves it (Debian's envvars included)."""
    cmd = configtest_command(config) + ["-D", "DUMP_RUN_CFG"]
    try:
        with owner.as_root():
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'^PidFile: "(.*)"$', proc.stdout.decode("utf-8", "replace"), re.M)
    return m.group(1) if m else None


def _alive(pid: int) -> bool:
    """Running and not a zombie (Apache's parent may be a child of whoever started it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        out.add(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def running(config: Config | None, path: str | None = None) -> Running | None:
    """Apache's parent process, by its PidFile; None when it does not run."""
    path = path or pid_file(config)
    if not path:
        return None
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return Running(pid, _children(pid), path) if _alive(pid) else None


def _listen_targets(config: Config) -> list[tuple[str, int, bool]]:
    """(host, port, TLS) per Listen: a wildcard is reached on loopback."""
    ssl_ports = {p for vh in config.vhosts if vh.ssl for p in vh.ports}
    out = []
    for addr in config.listens:
        host, _, port = addr.rpartition(":")
        if not port.isdigit():
            continue
        host = host.strip("[]")
        host = {"": "127.0.0.1", "*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(
            host, host)
        out.append((host, int(port), int(port) in ssl_ports))
    return sorted(out, key=lambda t: t[2])  # plain http first: cheaper to ask


def answers(config: Config, timeout: float = 3) -> bool:
    """Does one of Apache's Listen ports answer (an HTTP status line, or a TLS handshake)?"""
    for host, port, tls in _listen_targets(config):
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                if tls:
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                    with ctx.wrap_socket(sock):
                        return True
                sock.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
                if sock.recv(5) == b"HTTP/":
                    return True
        except (OSError, ssl.SSLError):
            continue
    return False


def served_sha256(config: Config, name: str, timeout: float = 3) -> set[str]:
    """SHA-256 (hex of DER) of the certificates Apache serves for `name` on its TLS Listen
    ports (by SNI, on loopback); empty when none answers."""
    host_name = "apache-md-probe." + name[2:] if name.startswith("*.") else name
    out = set()
    for host, port, tls in _listen_targets(config):
        if not tls:
            continue
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock, \
                    ctx.wrap_socket(sock, server_hostname=host_name) as tls_sock:
                der = tls_sock.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError, ValueError):
            continue
        if der:
            out.add(hashlib.sha256(der).hexdigest())
    return out


SETTLE = 0.2  # seconds


def confirm_reload(config: Config, before: Running, timeout: float = 30) -> str | None:
    """None once Apache's new generation serves, else what went wrong."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()  # children of the new generation that answered, a moment ago
    while time.monotonic() < deadline:
        if not _alive(before.pid):
            return (f"Apache (pid {before.pid}) exited after the reload; its error log "
                    "says why (e.g. AH02564: a certificate or key it could not load)")
        new = _children(before.pid) - before.children
        up = set(new) if new and answers(config) else set()
        # twice, SETTLE apart: a child the old generation spawned while the reload command
        # ran is new too, and answers while a parent on its way out still lives
        if seen & up:
            return None
        seen = up
        time.sleep(SETTLE if seen else 0.1)
    log.warning("Apache (pid %d) runs, but no new generation answered within %d s of the "
                "reload", before.pid, timeout)
    return None


def confirm_start(config: Config, timeout: float = 30) -> bool:
    """Whether Apache, just started, runs and answers. `apache2 -k start` returns once
    it has detached, before the daemon has loaded its modules and keys and written its
    PidFile (10 ms unloaded, much longer on a busy machine): its absence then says
    nothing yet. A daemon that exits (a key it cannot load) removes no pid file it never
    wrote, so this waits out `timeout` only for an Apache that never comes up."""
    path = pid_file(config)
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        up = running(config, path) if path else None
        if up is not None:
            seen = up.pid
            if answers(config):
                return True
        elif seen is not None:
            return False  # it had written its pid file, and exited
        time.sleep(0.1)
    return seen is not None and _alive(seen)

