"""Private keys made before they are asked for: `<store>/keypool/<kind>/`.

An RSA 2048 key costs ~40 ms of CPU to make, an account's RSA 3072 key ~250 ms;
when many new MDs come at once their keys are half the CPU the batch takes. The
worker keeps `MDKeyPool` keys of every kind the configuration uses, and one
account key, ready while it has nothing else to do (worker.py, in a child process
at low priority); a renewal run takes one instead of making it, and makes one
when the pool is empty.

- Bounded: at most `size` files per kind in use; kinds no longer used go.
- Files 0600 in 0700 directories, encrypted with the store's key like staged keys.
- A key is taken by removing its file, the directory synced, before it is used:
  one key is never used twice, also by two processes or after a power loss.
  A run that dies after taking one loses only that key (a new one is made).
"""
from __future__ import annotations

import logging
import os
import pickle
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from ..core import crypto
from ..core.model import KeySpec
from .fs import Store, StoreError, atomic_write, fsync_dir, make_dirs

log = logging.getLogger(__name__)
POOL = "keypool"
ACCOUNT_SPEC = KeySpec("RSA", 3072)  # mod_md's MD_ACME_ACCT_PKEY_BITS
ACCOUNT_KEYS = 1  # a new account is rare: one registration, not a batch


def kind(spec: KeySpec) -> str | None:
    """The pool's name for what a spec makes: rsa2048, rsa3072, secp256r1, ...; None
    for a curve this `cryptography` does not know (the run reports it)."""
    if spec.kind != "EC":
        return f"rsa{spec.rsa_bits}"
    known = crypto.CURVE_NAMES.get(spec.curve.lower())  # without loading `cryptography`
    if known:
        return known
    c = crypto.curve(spec.curve)
    return c.name if c is not None else None


def wanted(specs: Iterable[KeySpec], size: int) -> dict[str, tuple[KeySpec, int]]:
    """kind -> (spec, how many to keep) for the key specs in use (MDs' and accounts')."""
    if size <= 0:
        return {}
    out = {kind(s): (s, size) for s in specs if kind(s)}
    k = kind(ACCOUNT_SPEC)
    out[k] = (ACCOUNT_SPEC, max(ACCOUNT_KEYS, out.get(k, (None, 0))[1]))
    return out


def _dir(store: Store, k: str) -> str:
    return os.path.join(os.fspath(store.base), POOL, k)


def _files(d: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(d) if n.endswith(".pem"))
    except FileNotFoundError:
        return []


def count(store: Store, spec: KeySpec) -> int:
    k = kind(spec)
    return len(_files(_dir(store, k))) if k else 0


def take(store: Store, spec: KeySpec):
    """A key of `spec` from the pool, now no longer in it; None when there is none.
    Never raises: a pool in trouble only means the key is made as before."""
    k = kind(spec)
    if k is None:
        return None
    d = _dir(store, k)
    for name in _files(d):
        path = os.path.join(d, name)
        try:
            with open(path, "rb") as f:
                pem = f.read()
            os.unlink(path)  # whoever removes it owns it; FileNotFoundError: another did
            fsync_dir(d)  # gone for good before it is used
            key = crypto.store_key_from_pem(pem, store.key)
        except FileNotFoundError:
            continue
        except (OSError, StoreError, ValueError, TypeError) as e:
            log.warning("%s: not used from the key pool: %s", path, e)
            continue
        if crypto.key_matches_spec(key, spec):
            return key
        log.warning("%s: not a %s key, not used", path, kind(spec))
    return None


def give(store: Store, spec: KeySpec, key, size: int) -> bool:
    """Keep `key` (made, never used nor written anywhere) for a later run, when the pool
    of its kind has fewer than `size`; False when it was not kept. Never raises."""
    k = kind(spec)
    if k is None or size <= 0:
        return False
    d = _dir(store, k)
    try:
        if len(_files(d)) >= size:
            return False
        make_dirs(Path(d), 0o700)
        atomic_write(Path(d, f"{secrets.token_hex(8)}.pem"),
                     crypto.key_to_pem(key, store.key), 0o600)
    except (OSError, StoreError, ValueError, TypeError) as e:
        log.warning("%s: a key made ahead not kept: %s", d, e)
        return False
    return True


def lacking(store: Store, want: dict[str, tuple[KeySpec, int]]) -> bool:
    """Whether a kind has fewer keys than it should (a listdir per kind, no key read)."""
    return any(len(_files(_dir(store, k))) < size for k, (_, size) in want.items())


# Run by start_filling() in a fresh interpreter at low priority: making keys loads
# `cryptography`, a third of an idle worker's memory, and a process keeps what it loaded.
_CHILD = ("import logging, os, pickle, sys\n"
          "os.nice(10)\n"
          "logging.basicConfig(level=logging.WARNING, format='apache-md key pool: %(message)s')\n"
          "base, want = pickle.loads(sys.stdin.buffer.read())\n"
          "from apache_md.store.fs import Store\n"
          "from apache_md.store.keypool import fill_all\n"
          "sys.exit(fill_all(Store(base), want))\n")


def start_filling(store: Store, want: dict[str, tuple[KeySpec, int]]
                  ) -> subprocess.Popen | None:
    """fill_all() in a child process (the caller polls it); None when it cannot start."""
    from ..core.apart import child_env
    try:
        p = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                             env=child_env(), close_fds=True)
        assert p.stdin is not None
        p.stdin.write(pickle.dumps((os.fspath(store.base), want)))
        p.stdin.close()
        return p
    except OSError as e:
        log.warning("the key pool is not filled: %s", e)
        return None


def fill_all(store: Store, want: dict[str, tuple[KeySpec, int]]) -> int:
    """Fill the pool up, one key at a time; the exit status of the child."""
    try:
        while fill_one(store, want):
            pass
    except (StoreError, OSError, crypto.CryptoError) as e:
        log.warning("not filled: %s", e)
        return 1
    return 0


def fill_one(store: Store, want: dict[str, tuple[KeySpec, int]]) -> bool:
    """Make one key for the kind that lacks most; False when nothing lacks. Kinds not
    wanted and keys beyond the size are removed first (the pool stays bounded)."""
    root = os.path.join(os.fspath(store.base), POOL)
    try:
        present = [n for n in os.listdir(root) if not n.startswith(".")]
    except FileNotFoundError:
        present = []
    for k in present:
        if k not in want:
            _trim(os.path.join(root, k), 0)
    short = []
    for k, (spec, size) in want.items():
        have = len(_trim(_dir(store, k), size))
        if have < size:
            short.append((have - size, k, spec))
    if not short:
        return False
    _, k, spec = min(short)
    d = _dir(store, k)
    make_dirs(Path(d), 0o700)
    key = crypto.generate_key(spec)
    atomic_write(Path(d, f"{secrets.token_hex(8)}.pem"),
                 crypto.key_to_pem(key, store.key), 0o600)
    return True


def _trim(d: str, size: int) -> list[str]:
    """The pool directory `d` with at most `size` keys: what is left."""
    names = _files(d)
    for name in names[size:]:
        try:
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass
    return names[:size]
