"""A renewal cut short goes on with its order, as mod_md's does: one order per MD at the CA.

Real Apache, real Pebble behind a front (tests/harness/acmefront.py) that records every
new-order it forwards and can hold a finalize until the test lets it go. An
`apache-md renew` is killed with SIGKILL at a step the test waits for (a challenge set
up, the CSR submitted), then run again.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from apache_md.core import crypto
from apache_md.store.fs import Store
from tests.conftest import PORTS
from tests.e2e.mdenv import APACHE_MD, MDEnv, executable
from tests.harness import AcmeFront
from tests.harness.front import Request, Reset

NAME = "one.test"

STALL = """#!/bin/sh
# MDMessageCmd: holds the renewal at its challenge set-up while <mark>.stall exists
case "$2" in challenge-setup*)
  if [ -e "$1.stall" ]; then touch "$1.stalled"; sleep 120; fi;;
esac
exit 0
"""


class HoldingFront(AcmeFront):
    """An AcmeFront that holds the first finalize request until `release` is set, then
    forwards it (`forward_held`) or drops the connection without a word. `finalizes`
    counts the held finalize and those after it that the CA did not refuse for a bad nonce
    (those are sent again); `took_held`: the CA took the held one."""

    def __init__(self, pebble, port: int):
        super().__init__(pebble, port)
        self.hold = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.forward_held = True
        self.finalizes = 0
        self.forwarded = threading.Event()  # a held finalize has reached Pebble
        self.took_held = False  # and Pebble took it

    def handle(self, req: Request):
        if req.method == "POST" and req.path.startswith("/finalize-order/"):
            if self.hold:
                self.hold = False
                self.finalizes += 1  # sent, whether the CA takes it or not
                self.held.set()
                self.release.wait(60)
                if not self.forward_held:
                    raise Reset()
                try:
                    answer = self.forward(req)
                    # Pebble's own 5% bad nonces: then the CA did not take it after all
                    self.took_held = b"badNonce" not in answer.body
                    return answer
                finally:
                    self.forwarded.set()
            answer = super().handle(req)
            if b"badNonce" not in answer.body:  # Pebble's own 5% rejects are sent again
                self.finalizes += 1
            return answer
        return super().handle(req)


@pytest.fixture
def front(pebble):
    f = HoldingFront(pebble, PORTS["acme_port"] + 40).start()
    yield f
    f.release.set()
    f.stop()


def orders_for(front, name: str) -> int:
    return sum(1 for o in front.orders
               if name in [i.get("value") for i in o.get("identifiers", [])])


def staging(env: MDEnv) -> Path:
    return env.store / "staging" / NAME


def renew_in_background(env: MDEnv) -> subprocess.Popen:
    return subprocess.Popen(APACHE_MD + ["-f", str(env.apache.main_conf), "renew", NAME],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for(what: str, done, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise AssertionError(f"apache-md renew ended before {what}: {proc.stdout.read()}")
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.1)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL to it and the commands it runs, as systemd stops a unit that hangs."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()


def job_details(env: MDEnv) -> list[str]:
    job = json.loads((staging(env) / "job.json").read_text())
    return [e.get("detail", "") for e in job["log"]["entries"]]


def renewed(env: MDEnv) -> tuple[str, list[str]]:
    """Renew again (it must succeed), activate: the serial now served, and the details
    the renewal logged."""
    p = env.cli("renew", NAME)
    assert p.returncode == 0, p.stdout + p.stderr
    details = job_details(env)
    env.cli_ok("activate", "--reload", env.reload_command())
    serial = env.status(NAME)["cert"]["rsa"]["serial"]
    env.await_served(NAME, serial)
    return serial, details


def setup(env: MDEnv, front, extra: str = "") -> None:
    env.ca_url = front.directory_url
    env.write_config(f"MDomain {NAME}\n", env.ssl_vhost(NAME, aliases=[f"www.{NAME}"]), extra)
    env.start()


def killed_at_a_challenge(env: MDEnv, front, tmp_path: Path) -> Path:
    """A `renew` killed while MDMessageCmd holds its first challenge-setup; removing
    `<mark>.stall` lets the next run go on."""
    script = executable(tmp_path / "stall.sh", STALL)
    mark = tmp_path / "msg"
    Path(f"{mark}.stall").touch()
    setup(env, front, f"MDMessageCmd {script} {mark}\n")
    proc = renew_in_background(env)
    wait_for("a challenge set up", lambda: Path(f"{mark}.stalled").exists(), proc)
    kill(proc)
    return mark


def test_a_renewal_killed_at_its_challenge_goes_on_with_the_same_order(env, front, tmp_path):
    mark = killed_at_a_challenge(env, front, tmp_path)
    saved = json.loads((staging(env) / "order.json").read_text())
    # mod_md's order.json: what the next run needs, and the answer it left in place
    assert set(saved) == {"url", "status", "authorizations", "challenge-setups", "finalize"}
    assert saved["status"] == "pending" and len(saved["authorizations"]) == 2
    assert len(saved["challenge-setups"]) == 1
    domain = saved["challenge-setups"][0].removeprefix("http-01:")
    assert (env.store / "challenges" / domain / "acme-http-01.txt").exists()
    assert orders_for(front, NAME) == 1

    Path(f"{mark}.stall").unlink()
    _, details = renewed(env)
    assert orders_for(front, NAME) == 1, front.orders  # the same order, finished
    assert any(f"Continuing the order {saved['url']} (pending)" in d for d in details), details
    assert not (env.store / "challenges" / domain).exists()  # its answers taken down
    assert not staging(env).exists()  # activated: staging purged, order.json with it


@pytest.mark.parametrize("reaches_ca", [True, False], ids=["finalized", "finalize-lost"])
def test_a_renewal_killed_at_finalize_goes_on_with_its_order_and_staged_key(
        env, front, reaches_ca):
    setup(env, front)
    front.hold, front.forward_held = True, reaches_ca
    proc = renew_in_background(env)
    wait_for("a finalize", front.held.is_set, proc)
    # the key the CSR was made with is staged before finalize, as the store keeps keys
    key = staging(env) / "privkey.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    staged_key = key.read_bytes()
    kill(proc)
    front.release.set()
    if reaches_ca:
        assert front.forwarded.wait(30)  # Pebble issues for an order whose client is gone
        reaches_ca = front.took_held  # else Pebble refused its nonce: lost after all
    _, details = renewed(env)
    assert orders_for(front, NAME) == 1, front.orders
    # finalized already: the certificate is fetched, not asked for again; lost: finalized
    # now, with the staged key
    assert front.finalizes == (1 if reaches_ca else 2)
    # Pebble issues in the background: 'processing' until then
    status = ("(valid)", "(processing)") if reaches_ca else ("(ready)",)
    assert any("Continuing the order " in d and d.endswith(status) for d in details), details
    # the key staged before the kill went live with the certificate (activation checks
    # that they match)
    live = (env.store / "domains" / NAME / "privkey.pem").read_bytes()
    assert crypto.key_to_pem(crypto.store_key_from_pem(staged_key, Store(env.store).key)) \
        == crypto.key_to_pem(crypto.store_key_from_pem(live, None))


def test_an_order_that_cannot_go_on_is_dropped_and_a_new_one_placed(env, front, tmp_path):
    mark = killed_at_a_challenge(env, front, tmp_path)
    Path(f"{mark}.stall").unlink()
    order_file = staging(env) / "order.json"
    saved = json.loads(order_file.read_text())
    domain = saved["challenge-setups"][0].removeprefix("http-01:")
    # the CA no longer knows it (a CA's database reset; Pebble answers 404)
    saved["url"] = saved["url"].rsplit("/", 1)[0] + "/gone"
    order_file.write_text(json.dumps(saved))
    _, details = renewed(env)
    assert orders_for(front, NAME) == 2
    assert any(f"The order {saved['url']} is not continued: the CA does not know it" in d
               for d in details), details
    assert not (env.store / "challenges" / domain).exists()
