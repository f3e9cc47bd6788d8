"""Every JSON file of a live store given values of any type, one file at a time (an
editor, a bad restore, another tool): check, status and activate answer without a
traceback, and afterwards, with the files as they were, Apache reloads onto the same
certificates (issue 12: no file that makes a site go down). Seeded, bounded."""
from __future__ import annotations

import json
import random

from tests.e2e.test_activation import await_serving, config

VALS = [None, 0, -1, 1e308, "x", "", [], {}, [1], {"a": 1}, True, "2026-13-45", "9" * 40,
        [None], {"url": 5}]
SKIP = ("status/snapshot/md/", "status/snapshot/one/")  # the handlers' pieces: named by content


def test_store_files_of_any_shape_give_no_traceback(env):
    names = ["a.test", "b.test"]
    config(env, names, names, extra_mds="MDStapling on\n")
    env.start()
    env.cli_ok("renew", *names)
    env.cli_ok("activate", "--reload", env.reload_command())
    env.cli_ok("renew", "--force", "b.test")  # a staged set too
    rnd = random.Random(20261203)
    files = sorted(p for p in env.store.rglob("*.json")
                   if not any(s in str(p.relative_to(env.store)) for s in SKIP))
    assert len(files) > 10
    for p in files:
        if not p.exists():  # an activation below took the staged set
            continue
        orig = p.read_bytes()
        doc = json.loads(orig)
        for _ in range(2):
            if isinstance(doc, dict) and doc:
                bad = dict(doc)
                for _ in range(2):
                    bad[rnd.choice(list(bad))] = rnd.choice(VALS)
            else:
                bad = rnd.choice(VALS)
            p.write_text(json.dumps(bad))
            for args in (["check"], ["status"], ["status", "--json", "a.test"], ["activate"]):
                r = env.cli(*args)
                assert "Traceback" not in r.stdout + r.stderr, \
                    f"{p.relative_to(env.store)} = {bad!r}: apache-md {' '.join(args)}\n{r.stderr}"
            if p.exists():
                p.write_bytes(orig)
    env.cli_ok("activate", "--reload", env.reload_command())
    assert env.apache.running
    for name in names:
        await_serving(env, name, timeout=10)
