"""The worker and the Apache configuration: how it notices an edited one by itself
(config_stamp), and what it does with one that loads mod_md."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apache_md.apache.config import load_config, load_text
from apache_md.store import owner, state
from apache_md import worker
from apache_md.worker import Worker, config_stamp
from tests.harness._util import make_tmp_dir

NOBODY = 65534


def test_config_stamp_sees_edits_and_new_files_but_not_our_own(tmp_path):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    store = tmp_path / "md"
    (store / "apache").mkdir(parents=True)
    (store / "apache" / "a.test.conf").write_text("# generated\n")
    main = tmp_path / "apache2.conf"
    main.write_text(f"MDStoreDir {store}\nIncludeOptional {conf_d}/*.conf\n"
                    f"<VirtualHost *:443>\n  ServerName a.test\n"
                    f"  IncludeOptional {store}/apache/a.test.conf\n</VirtualHost>\n")
    (conf_d / "10-md.conf").write_text("<IfModule md_module>\nMDomain a.test\n</IfModule>\n")
    config = load_config(str(main), server_root=str(tmp_path), env={})
    stamp = config_stamp(config)
    (store / "apache" / "a.test.conf").write_text("# rewritten by the worker\n")
    assert config_stamp(config) == stamp
    (conf_d / "20-new.conf").write_text("# a2enconf\n")
    assert config_stamp(config) != stamp
    stamp = config_stamp(config)
    (conf_d / "10-md.conf").write_text("<IfModule md_module>\nMDomain b.test\n</IfModule>\n")
    os.utime(conf_d / "10-md.conf", ns=(1, 1))
    assert config_stamp(config) != stamp


def test_the_worker_stands_down_when_mod_md_is_loaded_again(tmp_path, caplog):
    """Going back to mod_md: its config is not "a config with errors" whose previous one
    stays in force; the worker renews and activates nothing until mod_md is gone again."""
    store = tmp_path / "md"
    md = f"MDStoreDir {store}\n<IfModule md_module>\nMDomain a.test\n</IfModule>\n"
    load = "LoadModule md_module /usr/lib/apache2/modules/mod_md.so\n"
    texts = [md, load + md, md + "MDRenewWindow soon\n", md]
    w = Worker(lambda: load_text(texts.pop(0), str(tmp_path / "apache2.conf")), ["true"])
    assert w.refresh_config() and w.config.mds[0].name == "a.test"
    state.write_worker_info(w.store, None)
    assert not w.refresh_config()
    assert w.config is None and w.store is None
    assert not (store / "status/worker/worker.json").exists()  # `status`: no worker runs
    assert "mod_md manages the certificates now" in caplog.text
    assert not w.refresh_config()  # other errors: nothing previous to keep either
    assert w.refresh_config() and w.config.mds[0].name == "a.test"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tests run as root in CI)")
def test_a_store_the_worker_may_not_read_stops_a_step_not_the_worker(caplog):
    """Left by mod_md as root: the worker says what to chown and goes on once it is done,
    instead of exiting (and being restarted by systemd into the same wall)."""
    caplog.set_level(logging.INFO, "apache_md.worker")
    base = make_tmp_dir("worker-") / "md"
    try:
        base.mkdir(mode=0o755)
        os.chown(base, NOBODY, NOBODY)
        live = base / "domains" / "a.test"
        with owner.acting_as(base):
            w = Worker(lambda: load_text(f"MDStoreDir {base}\n<IfModule md_module>\n"
                                         "MDomain a.test\n</IfModule>\n",
                                         str(base.parent / "apache2.conf")), ["true"])
            assert w.refresh_config()
        live.mkdir(mode=0o700)  # root's
        with owner.acting_as(base):
            assert w._step(w.activate_and_reload, "stopped") == "stopped"
            assert w._step(w.activate_and_reload, "stopped") == "stopped"
        assert f"chown -R nobody: {base}" in w.stuck and str(live) in w.stuck
        assert caplog.text.count("nothing more is done until the next wake-up") == 1
        os.chown(live, NOBODY, NOBODY)
        with owner.acting_as(base):
            assert w._step(w.activate_and_reload, "stopped") != "stopped"
        assert w.stuck is None and "the store is usable again" in caplog.text
    finally:
        shutil.rmtree(base.parent)


def pool_worker(tmp_path):
    store = tmp_path / "md"
    w = Worker(lambda: load_text(f"MDStoreDir {store}\n<IfModule md_module>\nMDKeyPool 2\n"
                                 "MDPrivateKeys RSA secp384r1\nMDomain a.test\n</IfModule>\n",
                                 str(tmp_path / "apache2.conf")), ["true"])
    assert w.refresh_config() and w.config.settings.key_pool == 2
    w.store.init()
    return w, store


def fill_pool(w) -> None:
    deadline = time.monotonic() + 60
    while not w.pool_full:
        assert time.monotonic() < deadline
        w._sleep_until(time.monotonic() + 0.1)


def test_an_idle_worker_fills_the_key_pool_between_its_checks_and_a_drive_takes_from_it(
        tmp_path):
    """MDKeyPool keys of each kind the MDs use, one account key; made by a child process
    while the worker sleeps, and not looked at again until a cycle (a run may take some)."""
    from apache_md.ca.drive import Driver
    from apache_md.core.crypto import key_to_pem
    from apache_md.core.model import GlobalSettings, KeySpec
    from apache_md.notify import Messenger
    from apache_md.store import keypool
    w, store = pool_worker(tmp_path)
    w._sleep_until(0)  # past its deadline: no time to spare
    assert not (store / keypool.POOL).exists() and w.pool_child is None
    fill_pool(w)
    assert w.pool_child is None
    assert {k: len(os.listdir(store / keypool.POOL / k))
            for k in os.listdir(store / keypool.POOL)} == {"rsa2048": 2, "secp384r1": 2,
                                                           "rsa3072": 1}
    w._fill_key_pool()
    assert w.pool_child is None  # full: not even looked at until the next cycle
    w.pool_full = False
    w._fill_key_pool()
    assert w.pool_child is None and w.pool_full  # nothing lacks: no child started
    pooled = {(store / keypool.POOL / "secp384r1" / n).read_bytes()
              for n in os.listdir(store / keypool.POOL / "secp384r1")}
    driver = Driver(w.store, GlobalSettings(), Messenger(None, None, str(store)))
    key = driver._new_key(w.config.mds[0], KeySpec("EC", curve="secp384r1"))
    assert key.curve.name == "secp384r1"
    assert keypool.count(w.store, KeySpec("EC", curve="secp384r1")) == 1
    left = {(store / keypool.POOL / "secp384r1" / n).read_bytes()
            for n in os.listdir(store / keypool.POOL / "secp384r1")}
    assert len(pooled - left) == 1  # the one taken is gone from the pool
    assert key_to_pem(key) != key_to_pem(keypool.take(w.store, KeySpec("EC", curve="secp384r1")))


POOL_SCRIPT = """
import sys, time
from pathlib import Path
from apache_md.apache.config import load_text
from apache_md.worker import Worker
store = Path(sys.argv[1]) / "md"
# (RSA only: reading an EC curve's name in this process would load cryptography; the
# worker reads its configuration in a child process)
w = Worker(lambda: load_text(f"MDStoreDir {store}\\nMDKeyPool 2\\nMDomain a.test\\n"),
           ["true"])
assert w.refresh_config()
w.store.init()
deadline = time.monotonic() + 60
while not w.pool_full and time.monotonic() < deadline:
    w._sleep_until(time.monotonic() + 0.1)
print(sorted(m for m in sys.modules if m.startswith("cryptography")) == [],
      sum(1 for _ in (store / "keypool").rglob("*.pem")))
"""


def test_the_worker_itself_never_loads_cryptography_to_fill_the_pool(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-c", POOL_SCRIPT, str(tmp_path)],
                       cwd=repo, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["True", "3"]  # 2 RSA 2048, the account's RSA 3072


def test_a_signal_arriving_inside_a_wait_does_not_hang_the_worker(monkeypatch):
    """The handler runs in the main thread, maybe inside Event.wait() while that holds the
    event's lock: it must not set the events itself (set() takes that lock: a SIGTERM
    hung a worker at 1,000 MDs until it was killed)."""
    import signal
    import threading
    w = Worker(lambda: None, ["true"])
    setters: dict[str, int] = {}

    class Recorded(threading.Event):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def set(self):
            setters[self.name] = threading.get_ident()
            super().set()
    w.stop, w.wake, w.reread = Recorded("stop"), Recorded("wake"), Recorded("reread")
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        w.install_signals()
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert w.stop.wait(10) and w.wake.wait(10) and w.reread.wait(10)
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    assert set(setters) == {"stop", "wake", "reread"}
    assert threading.get_ident() not in setters.values()



def test_a_sighup_while_the_worker_starts_does_not_kill_it(tmp_path):
    """systemd may send a reload (SIGHUP) while the worker starts (a reload of apache2
    propagated to it): from its first import on, a SIGHUP asks for the reading of the
    configuration it is about to make anyway, and never ends it (the default action)."""
    conf = tmp_path / "apache2.conf"
    conf.write_text(f"MDStoreDir {tmp_path / 'md'}\n")
    sock_path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    # its own reload command: the Debian default would reload (so start) the system Apache
    proc = subprocess.Popen([sys.executable, "-m", "apache_md", "-f", str(conf), "worker",
                             "--reload-command", "true"],
                            env=dict(os.environ, NOTIFY_SOCKET=str(sock_path)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def hup_bits() -> tuple[bool, bool]:  # (ignored, caught), as the kernel has them
        fields = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{proc.pid}/status").read_text().splitlines())
        return tuple(bool(int(fields[k], 16) & 1 << (signal.SIGHUP - 1))
                     for k in ("SigIgn", "SigCgt"))

    try:
        # the interpreter's own start-up (before any of our code) is the one window left;
        # from there on, until the worker says READY, SIGHUP after SIGHUP
        deadline = time.monotonic() + 60
        while hup_bits() == (False, False) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert hup_bits()[0], "SIGHUP is not ignored before the worker's handlers"
        ready, hups = False, 0
        while not ready and proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGHUP)  # from the fork on, until it says READY
            hups += 1
            try:
                ready = "READY=1" in sock.recv(4096).decode().splitlines()
            except BlockingIOError:
                time.sleep(0.005)
        assert proc.poll() is None, f"ended by SIGHUP {hups}: {proc.returncode}"
        assert ready, "no READY=1"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        sock.close()


def test_what_a_reread_replaced_is_collected_though_the_start_froze_it():
    """worker._settle: the start's objects are frozen out of the collector's sight; a
    configuration replaced at a re-read, in reference cycles, must not stay for good."""
    import gc
    import weakref

    class Node:
        pass
    old = Node()
    old.me = old  # a cycle: refcounting alone never frees it
    gone = weakref.ref(old)
    try:
        worker._settle(first=True)
        del old
        gc.collect()
        assert gone() is not None  # frozen
        worker._settle()
        assert gone() is None
    finally:
        gc.unfreeze()
