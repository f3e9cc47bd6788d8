"""The worker with a per-MD timeline: where the time of each MD goes (bench/faults.py --timeline).

Run as `python bench/timeline.py OUT -- <apache-md arguments>`: apache-md's main,
with the drive's runs, its progress steps and every request to the CA written to
OUT as JSON lines {"t", "md", "what", ...} (t: seconds since the start; md: the
MD the thread drives). Only for measuring: it wraps methods, changes nothing.
`summary(OUT)` reads it back: per MD, its start, end and the requests that took
longest or failed.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class _Wrapped:
    """A module seen through: the names given replaced, the rest its own."""

    def __init__(self, module, **names):
        self._module, self._names = module, names

    def __getattr__(self, name):
        return self._names[name] if name in self._names else getattr(self._module, name)


def install(out: Path) -> None:
    from apache_md.ca import client, drive

    t0 = time.monotonic()
    lock = threading.Lock()
    fh = open(out, "w")  # noqa: SIM115 - open for the process's life
    local = threading.local()

    def note(what: str, **kw) -> None:
        rec = {"t": round(time.monotonic() - t0, 3), "md": getattr(local, "md", None),
               "what": what, **kw}
        with lock:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()

    run = drive.Driver.run

    def run_noted(self, md, reason=None):
        local.md = md.name
        note("queued")
        try:
            r = run(self, md, reason)
            note("end", outcome=r.outcome)
            return r
        finally:
            local.md = None

    drive.Driver.run = run_noted
    locked = drive.Driver._run_locked

    def locked_noted(self, md, reason=None):
        note("slot")
        return locked(self, md, reason)

    drive.Driver._run_locked = locked_noted
    progress = drive.Driver._progress

    def progress_noted(self, job, md, activity, detail=None, save=False):
        if activity:
            note("step", step=activity.split(" for ")[0][:40])
        return progress(self, job, md, activity, detail, save)

    drive.Driver._progress = progress_noted
    new_key = drive.Driver._new_key

    def new_key_noted(self, md, spec):
        start = time.monotonic()
        key = new_key(self, md, spec)
        note("key", took=round(time.monotonic() - start, 3))  # > 0: waited for it
        return key

    drive.Driver._new_key = new_key_noted
    from apache_md.ca import keymaker
    generate = keymaker.crypto.generate_key

    def generate_noted(spec):  # a key made (by a key thread or a taker): when, how long
        start, cpu = time.monotonic(), time.thread_time()
        try:
            return generate(spec)
        finally:
            note("keygen", thread=threading.current_thread().name,
                 took=round(time.monotonic() - start, 3), cpu=round(time.thread_time() - cpu, 3))

    keymaker.crypto = _Wrapped(keymaker.crypto, generate_key=generate_noted)
    send = client._Network._send_request

    def send_noted(self, method, url, *args, **kwargs):
        start = time.monotonic()
        held = self._gate.held_for(url)
        try:
            r = send(self, method, url, *args, **kwargs)
            note("req", step=self.step_for(url), took=round(time.monotonic() - start, 3),
                 held=round(held, 2), status=r.status_code)
            return r
        except Exception as e:
            note("req", step=self.step_for(url), took=round(time.monotonic() - start, 3),
                 held=round(held, 2), error=type(e).__name__)
            raise

    client._Network._send_request = send_noted
    wait = client._Network.wait

    def wait_noted(self, seconds):
        note("wait", took=round(seconds, 3))
        return wait(self, seconds)

    client._Network.wait = wait_noted
    from apache_md.status import snapshot
    write = snapshot.write_snapshot

    def write_noted(*args, **kwargs):
        start, cpu = time.monotonic(), time.thread_time()
        try:
            return write(*args, **kwargs)
        finally:
            note("snapshot", took=round(time.monotonic() - start, 3),
                 cpu=round(time.thread_time() - cpu, 3))

    snapshot.write_snapshot = write_noted
    thread_run = threading.Thread.run

    def thread_run_noted(self):
        try:
            return thread_run(self)
        finally:  # the CPU of each thread, by its name (drive_N, keymaker_N, ...)
            note("thread", name=self.name, cpu=round(time.thread_time(), 3))

    threading.Thread.run = thread_run_noted

    def sample() -> None:  # the process's CPU every 0.1 s: where the CPUs idle
        while True:
            note("cpu", process=round(time.process_time(), 3))
            time.sleep(0.1)

    threading.Thread(target=sample, name="cpu_sampler", daemon=True).start()
    import atexit
    atexit.register(lambda: note("thread", name="MainThread", cpu=round(time.thread_time(), 3),
                                 process=round(time.process_time(), 3)))


def summary(path: Path, worst: int = 3) -> list[str]:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_md: dict[str, list[dict]] = {}
    for r in recs:
        if r["md"]:
            by_md.setdefault(r["md"], []).append(r)
    spans = []
    for md, rs in by_md.items():
        q = next((r["t"] for r in rs if r["what"] == "queued"), 0.0)
        s = next((r["t"] for r in rs if r["what"] == "slot"), q)
        e = next((r["t"] for r in rs if r["what"] == "end"), rs[-1]["t"])
        reqs = [r for r in rs if r["what"] == "req"]
        spans.append((e, md, q, s, reqs, rs))
    spans.sort()
    out = [f"{'md':10} {'queued':>7} {'slot':>7} {'end':>7} {'reqs':>5} {'slow':>5} "
           f"{'fault':>6} {'waits':>6}"]
    for e, md, q, s, reqs, rs in spans:
        slow = sum(r["took"] for r in reqs if r["took"] > 1.0)
        faults = sum(1 for r in reqs if r.get("error") or r.get("status", 200) >= 429)
        waits = sum(r["took"] for r in rs if r["what"] == "wait" and r["took"] >= 0.3)
        out.append(f"{md:10} {q:7.2f} {s:7.2f} {e:7.2f} {len(reqs):5} {slow:5.1f} "
                   f"{faults:6} {waits:6.1f}")
    for e, md, q, s, reqs, rs in spans[len(spans) - worst:]:
        out.append(f"-- {md}:")
        for r in rs:
            if r["what"] == "req":
                mark = r.get("error") or r.get("status")
                out.append(f"   {r['t']:7.2f} req  {r['step'][:28]:28} {r['took']:6.2f} s "
                           f"{mark}" + (f" (held {r['held']})" if r["held"] else ""))
            elif r["what"] == "wait" and r["took"] >= 0.1:
                out.append(f"   {r['t']:7.2f} wait {r['took']:.2f} s")
            elif r["what"] in ("step", "slot", "end", "key"):
                what = r.get("step") or r.get("outcome") or ""
                out.append(f"   {r['t']:7.2f} {r['what']:4} {what}")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1])
    argv = sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
    install(target)
    from apache_md.cli import main
    raise SystemExit(main(argv))
