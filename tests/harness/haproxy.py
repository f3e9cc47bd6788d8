"""Debian's haproxy as a layer-4 (TCP) round-robin balancer in front of Apache nodes:
one frontend per port on 127.0.0.1, the nodes' same port on their own addresses behind
it, with health checks so a node that is gone leaves the rotation within a second."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

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
)

HAPROXY_BIN = "/usr/sbin/haproxy"


class HAProxy:
    def __init__(self, ports: list[int], backends: list[str], host: str = "127.0.0.1"):
        self.ports = list(ports)
        self.backends = list(backends)  # node addresses
        self.host = host
        self.dir = make_tmp_dir("haproxy-")
        self.conf = self.dir / "haproxy.cfg"
        self.log_path = self.dir / "haproxy.log"
        self._proc = None

    def _config(self) -> str:
        lines = ["global", "    maxconn 2000", "defaults", "    mode tcp",
                 "    timeout connect 2s", "    timeout client 30s", "    timeout server 30s"]
        for port in self.ports:
            lines += [f"listen p{port}", f"    bind {self.host}:{port}", "    balance roundrobin"]
            lines += [f"    server n{i} {addr}:{port} check inter 300 fall 1 rise 1"
                      for i, addr in enumerate(self.backends)]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> "HAProxy":
        if not os.path.exists(HAPROXY_BIN):
            raise HarnessError(f"{HAPROXY_BIN} is missing (Debian package haproxy)")
        check_ports_free("haproxy", [(f"port {p}", p, False) for p in self.ports], self.host)
        self.conf.write_text(self._config())
        self._proc = spawn([HAPROXY_BIN, "-db", "-f", str(self.conf)], self.log_path)
        stop_at_exit(self)
        wait_for(lambda: all(port_open(p, self.host) for p in self.ports), timeout,
                 "haproxy listening", logs=[self.log_path],
                 alive=lambda: self._proc.poll() is None)
        return self

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None
        forget_at_exit(self)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace") if self.log_path.exists() else ""
