"""Seeded fuzz of the MD's own store files as an admin's editor or a broken disk may
leave them (issue 12): md.json and job.json whose values have any type. The facts, the
plan, prepare() and the status snapshot read them without a traceback (a wrong file
is set aside and named, or its values are taken as absent)."""
from __future__ import annotations

import json
import logging
import os
import random
from datetime import datetime, timezone

from apache_md.apache import activation
from apache_md.apache.config import load_text
from apache_md.core.plan import plan
from apache_md.status import snapshot
from apache_md.store import facts
from apache_md.store.fs import Store

SEED, CASES = 20261203, 200
VALS = [{"url": 5}, {"url": "https://ca.example/dir", "account": 7}, {"url": [], "account": {}},
        None, 0, -1, 1e308, "x", "", [], {}, [1], {"a": 1}, True, "2026-13-45", "9" * 40,
        [None], ["a.test"], {"rsa": None}]
JOB_KEYS = ["name", "finished", "notified", "error-runs", "last", "log", "next-run",
            "valid-from", "errors"]


def test_md_json_and_job_json_of_any_shape_never_give_a_traceback(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.CRITICAL)
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not what is tested
    monkeypatch.setattr(os, "sync", lambda: None)
    rnd = random.Random(SEED)
    text = (f"<IfModule md_module>\nMDStoreDir {tmp_path}/md\nMDPrivateKeys P-256\n"
            "MDomain a.test\n</IfModule>\n"
            "<VirtualHost *:443>\nServerName a.test\nSSLEngine on\n</VirtualHost>\n")
    config = load_text(text, str(tmp_path / "a.conf"), server_root=str(tmp_path))
    store = Store(config.settings.store_dir)
    store.init()
    activation.prepare(store, config)
    d = store.base / "domains" / "a.test"
    good = json.loads((d / "md.json").read_text())
    for _ in range(CASES):
        doc = dict(good)
        for _ in range(rnd.randint(1, 3)):
            doc[rnd.choice(list(doc) + ["extra"])] = rnd.choice(VALS)
        (d / "md.json").write_text(json.dumps(doc))
        if rnd.random() < 0.5:
            (d / "job.json").write_text(json.dumps({k: rnd.choice(VALS) for k in JOB_KEYS}))
        known = facts.read_all(store, config)
        plan(config, known, datetime.now(timezone.utc))
        activation.prepare(store, config)
        snapshot.write_snapshot(store, config)
        assert snapshot.snapshot(store, config)["mds"]["a.test"]["name"] == "a.test"
