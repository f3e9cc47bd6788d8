"""The renewal job (`job.json`, reference/mod_md-formats.md §1.5 and §3.6).

A Job is the persistent memory of one MD's renewal: progress, errors and
backoff survive restarts of the worker because they live in this file
(store/jobs.py reads and writes it in every group that keeps one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .jsonfmt import http_date, parse_http_date, put

LOG_CAP = 128


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Job:
    name: str
    finished: bool = False
    notified: bool = False
    notified_renewed: bool = False
    next_run: datetime | None = None
    last_run: datetime | None = None
    valid_from: datetime | None = None
    errors: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)  # newest first
    # apache-md extras, kept in job.json under their own keys
    ca_index: int = 0  # which of ca.urls is in use (failover)

    @classmethod
    def from_json(cls, name: str, obj: dict[str, Any] | None) -> "Job":
        if not obj:
            return cls(name)
        entries = obj.get("log", {}).get("entries", []) if isinstance(obj.get("log"), dict) else []
        last = obj.get("last") if isinstance(obj.get("last"), dict) else {}
        errors = obj.get("errors")
        ca_index = obj.get("ca-index")
        return cls(
            name=name,
            finished=obj.get("finished") is True,
            notified=obj.get("notified") is True,
            notified_renewed=obj.get("notified-renewed") is True,
            next_run=parse_http_date(obj.get("next-run")),
            last_run=parse_http_date(obj.get("last-run")),
            valid_from=parse_http_date(obj.get("valid-from")),
            errors=errors if isinstance(errors, int) and errors >= 0 else 0,
            last=last,
            log=[e for e in entries if isinstance(e, dict)],
            ca_index=ca_index if isinstance(ca_index, int) and ca_index >= 0 else 0,
        )

    def to_json(self, with_log: bool = True) -> dict[str, Any]:
        obj: dict[str, Any] = {"name": self.name, "finished": self.finished,
                               "notified": self.notified,
                               "notified-renewed": self.notified_renewed}
        put(obj, "next-run", http_date(self.next_run))
        put(obj, "last-run", http_date(self.last_run))
        put(obj, "valid-from", http_date(self.valid_from))
        obj["errors"] = self.errors
        if self.last:
            obj["last"] = self.last
        if with_log and self.log:
            obj["log"] = {"entries": self.log}
        obj["ca-index"] = self.ca_index
        return obj

    # -- log --------------------------------------------------------------------
    def add_log(self, type_: str, status: str | None = None, detail: str | None = None,
                when: datetime | None = None) -> None:
        entry: dict[str, Any] = {"when": http_date(when or now_utc()), "type": type_}
        put(entry, "status", status)
        put(entry, "detail", detail)
        self.log.insert(0, entry)
        del self.log[LOG_CAP:]

    def last_log_time(self, type_: str) -> datetime | None:
        for e in self.log:
            if e.get("type") == type_:
                return parse_http_date(e.get("when"))
        return None

    # -- run lifecycle ------------------------------------------------------------
    def start_run(self, when: datetime | None = None) -> None:
        self.last_run = when or now_utc()
        self.finished = False
        self.notified = self.notified_renewed = False
        self.valid_from = None
        self.last = {"status": 0}  # then the activity, as mod_md's result while it runs
        self.add_log("starting", when=when)

    def progress(self, activity: str | None = None, detail: str | None = None,
                 problem: str | None = None) -> None:
        parts = [p for p in (activity, detail) if p]
        text = ": ".join(parts)
        if problem:
            text = f"{text}, problem: {problem}" if text else f"problem: {problem}"
        put(self.last, "activity", activity)
        self.add_log("progress", detail=text or None)

    def succeed(self, valid_from: datetime, detail: str) -> None:
        self.finished = True
        self.errors = 0
        self.valid_from = valid_from
        self.next_run = None
        self.last = {"status": 0, "valid-from": http_date(valid_from)}
        self.add_log("progress", detail=detail)
        self.add_log("finished")

    def fail(self, status: int, description: str | None, problem: str | None,
             detail: str | None, activity: str | None = None,
             subproblems: list | None = None, log_type: str = "renewal-error") -> None:
        self.finished = False
        self.errors += 1
        last: dict[str, Any] = {"status": status}
        put(last, "status-description", description if status > 0 else None)
        put(last, "problem", problem)
        put(last, "detail", detail)
        put(last, "activity", activity or self.last.get("activity"))
        put(last, "subproblems", subproblems)
        self.last = last
        self.add_log(log_type, status=problem, detail=detail or description)
