"""CAProblem: a failed exchange with a CA, as a value.

Its own module, free of the `acme` library and `requests`, so the check loop
(ARI, stapling, challenge selection) can name it without importing either;
they are loaded only when a CA or OCSP responder is actually contacted.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CAProblem(Exception):
    """A failed exchange with the CA, in mod_md's terms (job.json `last`)."""

    status: int  # APR-like status: 0 ok, 111 refused, 70007 timeout, 20014 general
    description: str
    problem: str | None = None  # ACME problem type URN or mod_md problem name
    detail: str | None = None
    subproblems: list | None = None
    retry_after: float | None = None
    ca_url: str | None = None  # set when a request to this CA failed (per-CA metrics)
    # The CA's trouble, not the MD's: "unreachable" (no connection at all) or "failing"
    # (5xx, resets, timeouts that outlasted the retries); ca/outages watches those CAs.
    ca_trouble: str | None = None
    http_status: int | None = None  # an HTTP error answer without a problem document

    def __str__(self) -> str:
        return self.detail or self.description
