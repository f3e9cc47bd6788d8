"""apache-md under cProfile in every thread (bench/issuance.py --cprofile OUT).

Run as `python bench/cprofile.py OUT -- <apache-md arguments>`: each thread gets
its own profiler timed by that thread's CPU clock (threading.setprofile hands
over at the thread's first call),
and at exit their stats are merged into OUT (pstats format; `python -m pstats
OUT`). Deterministic, unlike py-spy's sampling of threads that wait on locks, so
it tells CPU per function in the drive threads; the profiler itself slows
Python code about twofold, C code (key generation, TLS) not: read the shares,
not the times.
"""
from __future__ import annotations

import atexit
import cProfile
import pstats
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _start_in_thread(*_args) -> None:
    sys.setprofile(None)
    p = cProfile.Profile(time.thread_time)  # CPU of this thread, not waits
    with _lock:
        _profiles.append(p)
    p.enable()


def install(out: Path) -> None:
    threading.setprofile(_start_in_thread)
    main = cProfile.Profile(time.thread_time)
    _profiles.append(main)
    main.enable()

    def dump() -> None:
        for p in list(_profiles):
            p.disable()
        stats = pstats.Stats(*_profiles)
        stats.dump_stats(str(out))

    atexit.register(dump)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    argv = sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
    install(target)
    from apache_md.cli import main as cli_main
    raise SystemExit(cli_main(argv))
