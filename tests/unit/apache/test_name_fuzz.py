"""Seeded fuzz of MD names through what `check` and the worker do with them before any CA
is asked (issue 12): the config read, prepare() (md.json, the fallback pair, the
include), the status snapshot and the names' check. Any name an admin may write (not
ASCII, slashes, quotes, controls) gives a warning or an MD failure, never a traceback
that stops the other MDs (`MDomain bücher.example` and `MDomain a/b` did)."""
from __future__ import annotations

import logging
import os
import random

from apache_md.apache import activation
from apache_md.apache.config import load_text
from apache_md.ca.challenges import check_names, preferred_types
from apache_md.core.problem import CAProblem
from apache_md.status import snapshot
from apache_md.store.fs import Store

SEED, CASES = 20261203, 120
CHARS = "abcz09-._*?üé\u200b\u00a0:/@%\\'[]{}()#$!~^`=+,;<>|&" + "x" * 20


def _name(rnd: random.Random) -> str:
    return "".join(rnd.choice(CHARS) for _ in range(rnd.randint(1, 24)))


def test_any_md_name_leaves_the_other_mds_working(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.CRITICAL)
    # durability is not what is tested here: the fsync()s were nearly all of the time
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "sync", lambda: None)
    rnd = random.Random(SEED)
    for i in range(CASES):
        names = [_name(rnd) for _ in range(rnd.randint(1, 3))]
        root = tmp_path / str(i)
        text = (f"<IfModule md_module>\nMDStoreDir {root}/md\nMDPrivateKeys P-256\n"
                f"MDomain good.example\nMDomain {' '.join(names)}\n</IfModule>\n"
                "<VirtualHost *:443>\nServerName good.example\nSSLEngine on\n</VirtualHost>\n"
                f"<VirtualHost *:443>\nServerName {names[0]}\nSSLEngine on\n</VirtualHost>\n")
        config = load_text(text, str(root / "a.conf"), server_root=str(root))
        if config.errors:
            continue  # refused with file:line (the reader's own fuzz test looks at those)
        store = Store(config.settings.store_dir)
        store.init()
        activation.prepare(store, config)
        snapshot.write_snapshot(store, config)
        assert (store.base / "apache" / "good.example.conf").exists(), names
        for md in config.mds:
            try:
                check_names(md, preferred_types(md, config.settings), config.settings)
            except CAProblem:
                pass  # the MD's renewal fails, with its reason
