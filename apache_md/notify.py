"""MDMessageCmd and MDNotifyCmd (reference/mod_md-formats.md §5.1).

Commands are split like a shell line but run without a shell; a reason is
rate-limited by the newest `message-<reason>` entry in the job log, which is
written after every successful send, even when no command is configured.
"""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
from datetime import datetime, timedelta

from . import MOD_MD_COMPAT_VERSION
from .core.aprstatus import CANNOT_START, exec_status, strerror
from .core.job import Job, now_utc
from .store import owner

log = logging.getLogger(__name__)

RATE_LIMITS = {
    "renewing": timedelta(hours=1), "renewed": timedelta(days=1),
    "installed": timedelta(days=1), "expiring": timedelta(days=1),
    "errored": timedelta(hours=1), "ocsp-renewed": timedelta(days=1),
    "ocsp-errored": timedelta(hours=1),
}
PROBLEM_NOTIFY = "urn:org:apache:httpd:log:AH10108:"
PROBLEM_MESSAGE = "urn:org:apache:httpd:log:AH10109:"
COMMAND_TIMEOUT = 300  # mod_md waits forever; a hung script must not stall renewals


def run_command(cmdline: str, args: list[str], store_dir: str | None = None) -> tuple[int, str]:
    """Run `cmdline args...`; returns (exit status, stderr). A command that cannot start
    exits with 255, as in mod_md (APR's child); why is logged."""
    rc, err = _run(cmdline, args, store_dir)
    if rc == CANNOT_START and err:
        log.warning("%s", err)
    return rc, err


def _run(cmdline: str, args: list[str], store_dir: str | None) -> tuple[int, str]:
    try:
        argv = shlex.split(cmdline) + list(args)
    except ValueError as e:
        return CANNOT_START, f"cannot parse command line {cmdline!r}: {e}"
    env = dict(os.environ, MD_VERSION=MOD_MD_COMPAT_VERSION)
    if store_dir:
        env["MD_STORE"] = store_dir
    try:
        with owner.as_root():  # as mod_md: `activate` (root) runs them as root
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=env, timeout=COMMAND_TIMEOUT,
                                  check=False)
    except FileNotFoundError:
        return CANNOT_START, f"command not found: {argv[0]}"
    except PermissionError:
        return CANNOT_START, f"command not executable: {argv[0]}"
    except subprocess.TimeoutExpired:
        return 124, f"command timed out after {COMMAND_TIMEOUT}s: {argv[0]}"
    except OSError as e:
        return CANNOT_START, f"cannot run {argv[0]}: {e.strerror}"
    err = proc.stderr.decode("utf-8", "replace").strip()
    if err:
        log.info("%s: %s", argv[0], err)
    return proc.returncode, err


class Messenger:
    """Sends events for one installation's MDMessageCmd / MDNotifyCmd."""

    def __init__(self, message_cmd: str | None, notify_cmd: str | None = None,
                 store_dir: str | None = None):
        self.message_cmd = message_cmd
        self.notify_cmd = notify_cmd
        self.store_dir = store_dir

    def rate_limited(self, job: Job, reason: str, now: datetime | None = None) -> bool:
        limit = RATE_LIMITS.get(reason.split(":", 1)[0])
        last = job.last_log_time(f"message-{reason}")
        return bool(limit and last and (now or now_utc()) - last < limit)

    def send(self, job: Job, reason: str, md_name: str, now: datetime | None = None) -> bool:
        """True when sent (or skipped by the rate limit); failures are logged in `job` and
        become its `last` result, as mod_md's `notify` does."""
        if self.rate_limited(job, reason, now):
            return True
        if reason == "renewed" and self.notify_cmd:
            rc, err = run_command(self.notify_cmd, [md_name], self.store_dir)
            if rc != 0:
                self._failed(job, rc, PROBLEM_NOTIFY,
                             f"MDNotifyCmd {self.notify_cmd} failed with exit code {rc}.")
                job.add_log("notify-error", status=PROBLEM_NOTIFY, detail=job.last["detail"])
                return False
        if self.message_cmd:
            rc, err = run_command(self.message_cmd, [reason, md_name], self.store_dir)
            if rc != 0:
                self._failed(job, rc, PROBLEM_MESSAGE,
                             f"MDMessageCmd {self.message_cmd} failed with exit code {rc}.")
                job.add_log("message-error", status=reason, detail=job.last["detail"])
                return False
        job.add_log(f"message-{reason}", when=now)
        # mod_md notes `notified` for the events a job waits on (md_job_notify), not for
        # those it only announces (renewing, errored, installed, ocsp-*)
        if reason in ("renewed", "expiring") or reason.startswith("challenge-setup:"):
            job.notified = True
        if reason == "renewed":
            job.notified_renewed = True
        return True

    @staticmethod
    def _failed(job: Job, rc: int, problem: str, detail: str) -> None:
        status = exec_status(rc)
        last = {"status": status, "status-description": strerror(status), "problem": problem,
                "detail": detail}
        if job.last.get("activity"):
            last["activity"] = job.last["activity"]
        job.last = last

