"""apache-md on top of the harness: a private Apache with the handlers mounted,
MD config pointed at the session's Pebble, and the `apache-md` CLI at hand."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from apache_md.apache.includes import include_path
from tests.harness import Apache, Pebble

APACHE_MD = [sys.executable, "-m", "apache_md"]


class MDEnv:
    def __init__(self, apache: Apache, pebble: Pebble):
        self.apache = apache
        self.pebble = pebble
        self.store = apache.root / "md"
        self.workers: list[subprocess.Popen] = []
        self.ca_url: str | None = None  # another directory than Pebble's (a front)

    # -- configuration ---------------------------------------------------------------
    def md_globals(self, extra: str = "") -> str:
        """Global MD directives for Pebble; `extra` (MDs too) goes inside the same block."""
        p = self.pebble
        return f"""<IfModule md_module>
    MDCertificateAuthority {self.ca_url or p.directory_url}
    MDCACertificateFile {p.ca_bundle}
    MDCertificateAgreement accepted
    MDContactEmail admin@example.test
    MDPortMap http:{self.apache.http_port} https:{self.apache.https_port}
    MDStoreDir {self.store}
    MDRetryDelay 1s
{extra}
</IfModule>
"""

    def ssl_vhost(self, name: str, aliases=(), md: str | None = None, extra: str = "") -> str:
        md = md or name
        alias = f"    ServerAlias {' '.join(aliases)}\n" if aliases else ""
        return (f"<VirtualHost {self.apache.address}:{self.apache.https_port}>\n"
                f"    ServerName {name}\n{alias}    SSLEngine on\n"
                f"    IncludeOptional {include_path(str(self.store), md)}\n{extra}</VirtualHost>\n")

    def write_config(self, mds: str, vhosts: str, extra_globals: str = "") -> None:
        self.apache.write_conf("10-md", self.md_globals(extra_globals + "\n" + mds) + "\n" + vhosts)
        snippet = self.cli_ok("apache-conf").stdout
        self.apache.write_conf("00-apache-md", snippet)

    # -- the CLI -------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
        return subprocess.run(APACHE_MD + ["-f", str(self.apache.main_conf)] + list(args),
                              capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})))

    def cli_ok(self, *args: str, **kw) -> subprocess.CompletedProcess:
        p = self.cli(*args, **kw)
        assert p.returncode == 0, f"apache-md {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def start(self) -> None:
        """First activation (fallback includes) and Apache start."""
        self.cli_ok("activate")
        self.apache.start()

    def reload_command(self) -> str:
        return " ".join(self.apache.apache_cmd("-k", "graceful"))

    def start_worker(self, *extra: str, env=None, log: Path | None = None) -> subprocess.Popen:
        # In the ServerRoot: removed with it, kept with it when the test fails.
        log = log or self.apache.root / "logs" / f"worker-{len(self.workers)}.log"
        proc = subprocess.Popen(
            APACHE_MD + ["-f", str(self.apache.main_conf), "worker", "--reload-command",
                         self.reload_command(), *extra],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})))
        proc.log_path = log  # type: ignore[attr-defined]
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                try:
                    w.wait(20)
                except subprocess.TimeoutExpired:
                    w.kill()
        self.workers.clear()

    # -- observation ---------------------------------------------------------------------
    def status(self, name: str | None = None) -> dict:
        args = ["status", "--json"] + ([name] if name else [])
        return json.loads(self.cli_ok(*args).stdout)

    def await_state(self, names: list[str], state: int = 2, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = {m["name"]: m for m in self.status().get("managed-domains", [])}
            if all(last.get(n, {}).get("state") == state for n in names):
                return last
            time.sleep(0.3)
        raise AssertionError(f"MDs {names} did not reach state {state}: "
                             f"{json.dumps(last, indent=1)[:3000]}")

    def await_served(self, name: str, serial: str, timeout: float = 30, sigalgs=None):
        """Wait until Apache serves the certificate with `serial` for `name`."""
        from tests.harness.client import s_client_cert
        deadline = time.monotonic() + timeout
        while True:
            chain = s_client_cert(self.apache.address, self.apache.https_port, name, sigalgs=sigalgs)
            if chain and format(chain[0].serial_number, "X").lstrip("0") == serial.lstrip("0"):
                return chain
            if time.monotonic() > deadline:
                got = format(chain[0].serial_number, "X") if chain else None
                raise AssertionError(f"{name}: served serial {got}, expected {serial}")
            time.sleep(0.3)


def executable(path: Path, text: str) -> Path:
    """A script at `path` (an MDMessageCmd, a hook), ready to run."""
    path.write_text(text)
    path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
