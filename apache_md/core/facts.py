"""What the store says about one MD, as one value (store/facts.py reads it).

Planning (core/plan), ARI, activation and md-status judge an MD by the same
handful of files: the live certificates, domains/<md>/md.json, the staging
job and set, the ARI answers and the stored OCSP status. Read once per cycle
into an MDFacts, the decisions built on it are pure functions of
(MD, facts, now).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .crypto import CertInfo
from .job import Job


@dataclass(slots=True)
class MDFacts:
    managed: bool  # served (and judged) by the set in domains/ (not MDCertificateFile)
    active: dict[str, CertInfo | None]  # key type -> live leaf (None: missing, unreadable)
    ca: dict[str, Any] = field(default_factory=dict)  # domains/<md>/md.json "ca"
    job: Job | None = None  # staging/<md>/job.json, when a renewal is under way or done
    staged_complete: bool = False  # a key and certificate per key type in staging/
    ari: dict[str, dict[str, Any]] = field(default_factory=dict)  # watch/<md>/ari.json certs
    revoked: list[str] = field(default_factory=list)  # key types OCSP reports revoked

    @property
    def issuer(self) -> str | None:
        """The CA the live managed certificates came from (md.json ca.url)."""
        url = self.ca.get("url") if self.managed else None
        return url if isinstance(url, str) and url else None

    @property
    def staged_finished(self) -> bool:
        """A renewal finished and its complete set waits in staging/ for activation."""
        return self.job is not None and self.job.finished and self.staged_complete

    @property
    def staged_by_hand(self) -> bool:
        """A complete set in staging/ that no finished renewal of ours wrote (an admin's,
        another tool's, or a drive cut short): activated after the same verification,
        as mod_md does at a restart."""
        return self.staged_complete and (self.job is None or not self.job.finished)

    def ari_entries(self) -> list[dict[str, Any]]:
        """The stored ARI entries of the live certificates."""
        return [self.ari[i.ari_id] for i in self.active.values() if i and i.ari_id in self.ari]
