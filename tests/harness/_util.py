"""Process, port and wait helpers shared by the harness classes."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class HarnessError(RuntimeError):
    """A harness step failed; the message says what and shows the log tail."""


def tail(path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"<{path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def with_logs(message: str, *logs) -> str:
    parts = [message]
    for log in logs:
        if not os.path.exists(log) or os.path.getsize(log) == 0:
            continue  # nothing logged there (yet)
        parts.append(f"--- last lines of {log} ---\n{tail(log)}")
    return "\n".join(parts)


def make_tmp_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that www-data can traverse (mkdtemp makes
    0700, which would lock Apache's children out)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def _holder(port: int, udp: bool) -> str:
    """Who holds a port, from `ss`, for the error message."""
    try:
        out = subprocess.run(["ss", "-H", "-lnp", "-u" if udp else "-t", f"sport = :{port}"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return out


def port_free(port: int, host: str = "127.0.0.1", udp: bool = False) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        # Servers set SO_REUSEADDR too, so TIME_WAIT leftovers do not count as busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def check_ports_free(what: str, ports, host: str = "127.0.0.1") -> None:
    """ports: iterable of (label, port, udp). Raise with a clear message."""
    busy = []
    for label, port, udp in ports:
        if not port_free(port, host, udp=udp):
            who = _holder(port, udp)
            busy.append(f"  {label}: {host}:{port}/{'udp' if udp else 'tcp'} is in use"
                        + (f"\n    {who}" if who else ""))
    if busy:
        raise HarnessError(f"cannot start {what}, ports busy (pass other ports or stop "
                           f"the leftover process):\n" + "\n".join(busy))


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(pred, timeout: float, what: str, logs=(), interval: float = 0.1,
             alive=None):
    """Poll pred() until truthy; on timeout raise HarnessError with log tails.
    alive(): optional check that the process is still running, to fail fast."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            result = pred()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        if alive is not None and not alive():
            raise HarnessError(with_logs(f"{what}: process exited", *logs))
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise HarnessError(with_logs(f"timed out after {timeout:.0f}s waiting for "
                                         f"{what}{extra}", *logs))
        time.sleep(interval)


_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM when this process dies, even by
    SIGKILL, so a crashed test run leaves no pebble behind (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort
        pass


def spawn(argv, log_path, env=None, cwd=None) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                start_new_session=True, preexec_fn=_die_with_parent)
    finally:
        log.close()


def terminate(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# Objects with a stop() that must run at interpreter exit (also after a test
# failure or Ctrl-C). Strong references on purpose: an instance a test forgot
# to stop must still be stopped, not garbage-collected with its server running.
_to_stop: list = []


def stop_at_exit(obj) -> None:
    if not any(o is obj for o in _to_stop):
        _to_stop.append(obj)


def forget_at_exit(obj) -> None:
    _to_stop[:] = [o for o in _to_stop if o is not obj]


@atexit.register
def _stop_all():
    for obj in reversed(list(_to_stop)):
        try:
            obj.stop()
        except Exception:  # noqa: BLE001 - keep stopping the others
            pass
