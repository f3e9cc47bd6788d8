"""kill -9 at random moments of `renew` and `activate` loses nothing and never leaves a
set Apache cannot load (issue 12): after each kill, `check` and an activation bring every
MD to a good certificate that Apache serves, without a reload ever stopping it.

Seeded (KILL9_SEED, 9 by default), so a failure can be run again; bounded: six rounds."""
from __future__ import annotations

import os
import random
import subprocess
import time

from apache_md.core.crypto import FALLBACK_CN
from tests.e2e.mdenv import APACHE_MD
from apache_md.apache.serving import problem
from tests.e2e.test_activation import config, reload_ok, served, serial

NAMES = ["k1.test", "k2.test", "k3.test"]


def killed(env, *args: str, after: float) -> int:
    """Start `apache-md args`, kill -9 it after `after` seconds (if it still runs)."""
    p = subprocess.Popen(APACHE_MD + ["-f", str(env.apache.main_conf)] + list(args),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait(after)
        return p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return -9


def all_good(env) -> None:
    """Every MD serves the CA's certificate that status names, and Apache never went away."""
    deadline = time.monotonic() + 20
    for name in NAMES:
        while True:
            want = env.status(name)["cert"]["rsa"]["serial"].lstrip("0")
            got = served(env, name)
            if FALLBACK_CN not in got.issuer.rfc4514_string() and \
                    serial(got).lstrip("0") == want:
                break
            assert time.monotonic() < deadline, f"{name}: served {serial(got)}, status {want}"
            time.sleep(0.2)


def test_kill_9_anywhere_in_renew_and_activate_loses_nothing(env):
    rnd = random.Random(int(os.environ.get("KILL9_SEED", "9")))
    config(env, NAMES, NAMES)
    env.start()
    env.cli_ok("renew", *NAMES)
    env.cli_ok("activate", "--reload", env.reload_command())
    pid = env.apache.pid
    all_good(env)
    kills = 0
    for _ in range(6):
        # a renewal killed at some point of its way: the next one goes on or starts anew
        if killed(env, "renew", "--force", *NAMES, after=rnd.uniform(0.05, 1.5)) == -9:
            kills += 1
        # an activation killed at some point of its way (its reload too)
        env.cli_ok("renew", *NAMES)
        if killed(env, "activate", "--reload", env.reload_command(),
                  after=rnd.uniform(0.02, 0.8)) == -9:
            kills += 1
        # what the kill left is loadable as it is: each live pair matches, and the
        # admin's own reload (logrotate's) keeps Apache up
        for name in NAMES:
            d = env.store / "domains" / name
            assert problem(str(d / "pubcert.pem"), str(d / "privkey.pem")) is None, name
        reload_ok(env)
        p = env.cli("check")
        assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
        env.cli_ok("activate", "--reload", env.reload_command())
        assert env.apache.pid == pid and env.apache.running
        all_good(env)
        assert env.cli("check").returncode == 0
    assert kills >= 4  # the draws did kill, not only wait for the end
    assert "AH00020" not in env.apache.error_log()
