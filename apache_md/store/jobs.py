"""Reading and writing jobs (`job.json`) in the store: staging, watch and OCSP."""
from __future__ import annotations

import logging

from ..core.job import Job
from .fs import STAGING, StoreError

log = logging.getLogger(__name__)


def load(store, group: str, name: str) -> Job:
    """The job in `<group>/<name>/job.json`; a corrupt file is replaced by a fresh
    job whose log notes the loss (the store error names the file)."""
    try:
        return Job.from_json(name, store.read_json(group, name, "job.json"))
    except StoreError as e:
        log.warning("%s", e)
        job = Job(name)
        job.add_log("progress", detail=f"discarded corrupt job.json: {e}")
        return job


def load_job(store, md_name: str) -> Job:
    """The staging job (renewal) of an MD."""
    return load(store, STAGING, md_name)


def save_job(store, job: Job) -> None:
    store.write_json(STAGING, job.name, "job.json", job.to_json())
