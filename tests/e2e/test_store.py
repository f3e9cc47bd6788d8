"""The store end to end: broken files, a corrupt md_store.json, files changed by others,
renamed MDs, and a store owned by an unprivileged user while root runs the CLI.

Real Apache (mod_ssl + mod_wsgi), real Pebble. Steps run `apache-md worker --once`
(one check cycle with activation and graceful reload) unless a test is about the
running worker.
"""
from __future__ import annotations

import json

from tests.e2e.mdenv import MDEnv


def worker_once(env: MDEnv, *extra: str) -> str:
    p = env.cli_ok("worker", "--once", "--reload-command", env.reload_command(), *extra)
    return p.stdout + p.stderr


def serial(env: MDEnv, name: str) -> str:
    return env.status(name)["cert"]["rsa"]["serial"]


def issued(env: MDEnv, name: str, vhosts: str | None = None, mds: str | None = None) -> str:
    """One MD with its certificate served; returns the serial."""
    env.write_config(mds or f"MDomain {name}\n", vhosts or env.ssl_vhost(name))
    env.start()
    worker_once(env)
    s = serial(env, name)
    env.await_served(name, s)
    return s


def broken_lines(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if ".broken." in ln or "left in place" in ln]


# -- broken files (issue 12.6) --------------------------------------------------------------
def test_broken_files_are_named_once_set_aside_and_a_new_account_replaces_a_broken_one(env):
    first = issued(env, "one.test")
    store = env.store
    [acct] = [p for p in (store / "accounts").iterdir()]
    (acct / "account.pem").write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\ngarbage\n")
    (store / "domains/one.test/job.json").write_bytes(b"\x00\x01 not json")
    (store / "staging/one.test").mkdir()
    (store / "staging/one.test/job.json").write_text('{"name": "one.test", "errors": ')

    # each broken file is named once, however often the worker looks
    log = worker_once(env)
    lines = broken_lines(log)
    assert len(lines) == 2, log
    assert any("staging/one.test/job.json: corrupt JSON" in ln
               and "moved aside to job.json.broken.1; the renewal job starts afresh" in ln
               for ln in lines), lines
    assert any("domains/one.test/job.json: corrupt JSON" in ln for ln in lines), lines
    assert broken_lines(worker_once(env)) == []
    assert (store / "staging/one.test/job.json.broken.1").read_text().endswith('"errors": ')
    shown = {b["file"]: b for b in env.status("one.test")["broken-files"]}
    assert set(shown) == {"staging/one.test/job.json", "domains/one.test/job.json"}
    page = env.cli_ok("status").stdout
    assert "broken store file staging/one.test/job.json: corrupt JSON" in page
    assert serial(env, "one.test") == first  # nothing served was touched

    # a forced renewal says that it registered a new account, and keeps the old one's files
    out = env.cli_ok("renew", "--force", "one.test").stdout
    assert "Registered a new account " in out and f"{acct.name} were set aside" in out, out
    assert sorted(p.name for p in acct.iterdir()) == ["account.json.broken.1",
                                                     "account.pem.broken.1"]
    accounts = sorted(p.name for p in (store / "accounts").iterdir())
    assert len(accounts) == 2 and accounts[0] == acct.name
    new = store / "accounts" / accounts[1]
    assert json.loads((new / "account.json").read_text())["status"] == "valid"
    entry = {b["file"]: b for b in env.status("one.test")["broken-files"]}[
        f"accounts/{acct.name}/account.pem"]
    assert "does not decrypt" in entry["problem"] and "a new account is registered" in \
        entry["action"]
    env.cli_ok("activate", "--reload", env.reload_command())
    second = serial(env, "one.test")
    assert second != first
    env.await_served("one.test", second)
    worker_once(env)  # the new account is used from now on, nothing more is set aside
    assert sorted(p.name for p in (store / "accounts").iterdir()) == accounts
