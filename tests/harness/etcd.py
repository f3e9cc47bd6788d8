"""Debian's etcd (etcd-server 3.4) on loopback ports, one member or a cluster of several.

Each member has its own data directory under /tmp and listens on 127.0.0.1 only;
`stop()` ends the member (SIGTERM), `kill()` with SIGKILL, `start()` brings it back
with its data. Product-independent: the tests talk to it over its JSON gateway.
"""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

from ._util import (
    HarnessError,
    check_ports_free,
    forget_at_exit,
    make_tmp_dir,
    spawn,
    stop_at_exit,
    terminate,
    wait_for,
    with_logs,
)

ETCD_BIN = "/usr/bin/etcd"


class EtcdMember:
    def __init__(self, name: str, client_port: int, peer_port: int, cluster: str,
                 work_dir: Path, token: str):
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.cluster = cluster  # initial-cluster: name=peer URL,...
        self.data_dir = work_dir / f"{name}.etcd"
        self.log_path = work_dir / f"{name}.log"
        self.token = token
        self._proc = None
        self._started_once = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        if self.running:
            return
        check_ports_free(f"etcd {self.name}", [("client", self.client_port, False),
                                               ("peer", self.peer_port, False)])
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [ETCD_BIN, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.cluster, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new",
                # short elections: a lost member is noticed in a second, not five
                "--heartbeat-interval", "100", "--election-timeout", "1000",
                "--logger", "zap", "--log-outputs", "stderr"]
        self._proc = spawn(argv, self.log_path)
        self._started_once = True
        stop_at_exit(self)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None
        forget_at_exit(self)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None
        forget_at_exit(self)


class EtcdCluster:
    """`size` members on client ports base, base+2, ... and peer ports base+1, base+3, ..."""

    def __init__(self, base_port: int, size: int = 1, work_dir: Path | None = None):
        self.work_dir = Path(work_dir) if work_dir else make_tmp_dir("etcd-")
        cluster = ",".join(f"m{i}=http://127.0.0.1:{base_port + 2 * i + 1}" for i in range(size))
        token = f"apache-md-test-{base_port}-{self.work_dir.name}"
        self.members = [EtcdMember(f"m{i}", base_port + 2 * i, base_port + 2 * i + 1, cluster,
                                   self.work_dir, token) for i in range(size)]

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        if not Path(ETCD_BIN).exists():
            raise HarnessError(f"{ETCD_BIN} is missing (Debian package etcd-server)")
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0, members=None) -> None:
        members = [m for m in (members or self.members) if m.running]
        wait_for(lambda: all(m.healthy() for m in members), timeout,
                 f"etcd {', '.join(m.name for m in members)} healthy",
                 logs=[m.log_path for m in members],
                 alive=lambda: all(m.running for m in members))

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(with_logs(m.name, m.log_path) for m in self.members)
