"""drive_all: the one loop that drives MDs in parallel for the worker and `renew`."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from apache_md.ca import drive
from apache_md.ca.drive import RunResult, drive_all


class FakeDriver:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def run(self, md, reason=None):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return RunResult(md.name, "renewed", reason or "")


def decisions(n: int):
    return [SimpleNamespace(md=SimpleNamespace(name=f"d{i}.test"), reason=f"r{i}")
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

