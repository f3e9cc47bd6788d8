"""drive_all: the one loop that drives MDs in parallel for the worker and `renew`."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from apache_md.ca import drive
from apache_md.ca.drive import RunResult, drive_all
from apache_md.core.model import GlobalSettings


class FakeDriver:
    """Driver's places (slots) around a run that sleeps; MDs in `waits` wait for the CA
    first, as a Retry-After has them do."""

    _slot, _idle = drive.Driver._slot, drive.Driver._idle

    def __init__(self, seconds: float, waits: float = 0.0, waiting: tuple = ()):
        self.seconds, self.waits, self.waiting = seconds, waits, waiting
        self.slots = None
        self.store = None  # drive_all's KeyMaker makes nothing: no MD has a key spec
        self.settings = GlobalSettings()
        self._local = threading.local()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def _work(self, seconds: float) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(seconds)
        with self.lock:
            self.running -= 1

    def run(self, md, reason=None):
        with self._slot():
            if md.name in self.waiting:
                with self._idle():
                    time.sleep(self.waits)
            self._work(self.seconds)
        return RunResult(md.name, "renewed", reason or "")


def decisions(n: int):
    return [SimpleNamespace(md=SimpleNamespace(name=f"d{i}.test", keyspecs=()),
                            reason=f"r{i}")
            for i in range(n)]


def test_results_in_order_each_reported_at_most_parallel_at_once(monkeypatch):
    monkeypatch.setattr(drive, "REFRESH_EVERY", 0.01)
    driver = FakeDriver(0.05)
    done, refreshed = [], []
    results = drive_all(driver, decisions(6), parallel=2, refresh=lambda: refreshed.append(1),
                        done=lambda r: done.append(r.md))
    assert [r.md for r in results] == [f"d{i}.test" for i in range(6)]
    assert [r.detail for r in results] == [f"r{i}" for i in range(6)]
    assert sorted(done) == sorted(r.md for r in results)
    assert driver.most == 2
    assert refreshed  # the snapshot was refreshed while the drives ran


def test_nothing_to_drive_starts_nothing():
    assert drive_all(FakeDriver(0), [], refresh=lambda: 1 / 0) == []



def test_an_md_waiting_for_the_ca_lets_another_work_meanwhile():
    driver = FakeDriver(0.01, waits=0.5, waiting=("d0.test",))
    done = []
    drive_all(driver, decisions(3), parallel=1, done=lambda r: done.append(r.md))
    assert done[-1] == "d0.test"  # the others worked while it waited
    assert driver.most == 1  # never more than `parallel` at work


def test_an_md_back_from_waiting_works_without_a_place_rather_than_wait_for_ever(monkeypatch):
    """What it waited on may hold up the MDs in the places (a lock it holds)."""
    monkeypatch.setattr(drive, "IDLE_BACK", 0.05)
    driver = FakeDriver(0)
    driver.slots = drive.Places(1)
    with driver._slot():
        with driver._idle():
            driver.slots.acquire()  # another MD took the place, and keeps it
        assert driver._local.held is False  # on without it
    driver.slots.release()
    assert driver.slots.acquire(blocking=False)  # nothing released twice, nothing lost


def test_places_go_in_order_and_to_mds_back_from_waiting_first():
    places = drive.Places(1)
    assert places.acquire()
    order, threads = [], []

    def want(name, back=False):
        assert places.acquire(back=back, timeout=5)
        order.append(name)
        places.release()
    def until(cond):
        deadline = time.monotonic() + 5
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.005)
    for i, name in enumerate(("new1", "new2", "new3")):
        threads.append(threading.Thread(target=want, args=(name,)))
        threads[-1].start()
        until(lambda: len(places._queue) == i + 1)  # queued in this order
    threads.append(threading.Thread(target=want, args=("back", True)))
    threads[-1].start()
    until(lambda: places.back == 1)
    places.release()
    for t in threads:
        t.join()
    assert order == ["back", "new1", "new2", "new3"]
    assert places.free == 1  # every place back, none twice


def test_a_wait_within_a_wait_takes_no_second_place(monkeypatch):
    """An MD waiting for another's fetch of the directory may fetch it itself (the other
    one's failed), and wait for the CA within that: one place back, none taken twice."""
    monkeypatch.setattr(drive, "IDLE_BACK", 0.05)
    driver = FakeDriver(0)
    driver.slots = drive.Places(2)
    with driver._slot():
        with driver._idle():
            with driver._idle():
                pass
            assert driver.slots.acquire(blocking=False)  # both places free meanwhile
            assert driver.slots.acquire(blocking=False)
            driver.slots.release()
            driver.slots.release()
        assert driver._local.held is True
        assert driver.slots.acquire(blocking=False)  # the other one is free
        driver.slots.release()
    assert driver.slots.acquire(blocking=False) and driver.slots.acquire(blocking=False)
