"""What Apache serves: the certificate files each MD's include points mod_ssl at.

The include of an MD names its live set in domains/, the files of
MDCertificateFile, or, before there is a certificate, a self-signed fallback
(mod_md's `fallback-*.pem`). global.conf adds a server-wide fallback that every
SSL vhost without a certificate of its own inherits (a vhost whose include is
not written yet still starts), and answers 503 whenever a fallback is served.
`write_includes` writes them all from apache/includes' text.

mod_ssl loads every key at a (re)start and Apache exits when one is broken, so
nothing here points Apache at a file that does not verify (`problem`, cached by
stat): a broken live set is moved aside into archive/ and the previous good set
restored from there, or else the MD is served the fallback and renewed.
"""
from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Callable

from ..core import crypto
from ..core.job import now_utc
from ..core.model import Config, KeySpec, ManagedDomain
from ..store import certcache, credentials
from ..store.fs import (
    APACHE,
    ARCHIVE,
    DOMAINS,
    Batch,
    Store,
    StoreError,
    atomic_write,
    fsync_dir,
    rename,
)
from . import includes

log = logging.getLogger(__name__)
FALLBACK_MIN_LEFT = timedelta(days=2)
SERVER_FALLBACK = "fallback.pem"  # <store>/apache/: certificate and key in one file
FALLBACK_NAME = "fallback.apache-md.invalid"


# One fallback key per key type for all MDs of this process. The key guards
# nothing (its self-signed certificate only ever answers 503), and making one
# RSA key per MD cost seconds before Apache could start with many new MDs.
_fallback_keys: dict[tuple, object] = {}
# An RSA fallback's size, whatever the MD's: mod_ssl needs an RSA key in the slot, of
# no size in particular, and an RSA 16384 key takes minutes on a busy machine (`apache-md
# check` before Apache's start, the directive sweep's hang at load 8).
FALLBACK_RSA = KeySpec("RSA", 2048)


def _fallback_key(spec):
    if spec.kind != "EC":
        spec = FALLBACK_RSA
    ident = (spec.kind, spec.rsa_bits if spec.kind != "EC" else spec.curve.lower())
    key = _fallback_keys.get(ident)
    if key is None:
        key = _fallback_keys[ident] = crypto.generate_key(spec)
    return key


def ensure_fallback(store: Store, md: ManagedDomain, spec,
                    batch: Batch | None = None) -> tuple[str, str]:
    """The self-signed stand-in for a key type without a certificate yet (with `batch`:
    in place at its commit)."""
    cert_f = store.path(DOMAINS, md.name, "fallback-" + spec.file_name("pubcert"))
    key_f = store.path(DOMAINS, md.name, "fallback-" + spec.file_name("privkey"))
    ok = False
    if cert_f.exists() and key_f.exists():
        # the pair as mod_ssl loads it: a garbled fallback key passed here and took
        # Apache down at the next reload
        why = problem(str(cert_f), str(key_f))
        if why:
            log.error("%s: broken fallback: %s; made anew", md.name, why)
        try:
            info = crypto.cert_info(crypto.load_chain(cert_f.read_bytes())[0])
            ok = (why is None and info.not_after - now_utc() > FALLBACK_MIN_LEFT
                  and all(crypto.covers(list(info.names), label)
                          for label in map(crypto.a_label, md.domains) if label))
        except (OSError, crypto.CryptoError, IndexError):
            ok = False
    if not ok:
        key = _fallback_key(spec)
        # the directory synced once, by the certificate's write: 50 new MDs' activation
        # spent most of its time in fsync()
        store.write_bytes(DOMAINS, md.name, key_f.name, crypto.key_to_pem(key), mode=0o600,
                          sync_dir=False, batch=batch)
        store.write_bytes(DOMAINS, md.name, cert_f.name, crypto.self_signed(key, md.domains),
                          batch=batch)
    return str(cert_f), str(key_f)


def server_fallback(store: Store, batch: Batch | None = None) -> str:
    """`<store>/apache/fallback.pem`, the server-wide fallback (certificate and key in
    one file: a vhost with its own SSLCertificateFile but no SSLCertificateKeyFile
    would otherwise inherit our key for its certificate)."""
    path = store.dir(APACHE) / SERVER_FALLBACK
    info = credentials.file_info(path)  # asked every cycle: by the file's stamp
    ok = info is not None and info.not_after - now_utc() > FALLBACK_MIN_LEFT \
        and problem(str(path)) is None
    if not ok:
        key = _fallback_key(FALLBACK_RSA)
        data = crypto.self_signed(key, [FALLBACK_NAME]) + crypto.key_to_pem(key)
        if batch is not None:
            batch.add(path, data, 0o600)
        else:
            atomic_write(path, data, 0o600)
    return str(path)


# -- verification: would mod_ssl load this pair? ------------------------------------------------
# (cert, key): (hash of their stamps, problem)
_checked: dict[tuple[str, str], tuple[int, str | None]] = {}
_checked_lock = threading.Lock()


def _stamp(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return ()  # cannot tell (e.g. a directory we may not enter)
    # ctime too: a key garbled in place with its old size and mtime (touch -r) is new
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def problem(cert: str, key: str | None = None, stamp: tuple | None = None) -> str | None:
    """Why mod_ssl would refuse the pair (naming the file), or None. `key` None: the key
    sits in the certificate's file. Cached by the files' stat: a check over a thousand
    unchanged sets reads nothing. Files we may not read (an unprivileged worker and
    /etc/ssl/private) and passphrase-protected keys count as good: we cannot tell.
    `stamp`: (_stamp(cert), _stamp(key)) as the caller just took them."""
    key = key or cert
    stamps = stamp or (_stamp(cert), _stamp(key))
    h = hash(stamps)
    with _checked_lock:
        hit = _checked.get((cert, key))
    if hit and hit[0] == h:
        return hit[1]
    known, result = certcache.pair(cert, key, stamps)  # as a previous run found it
    if not known:
        result = _verify(cert, key)
        certcache.put_pair(cert, key, stamps, result)
    with _checked_lock:
        _checked[(cert, key)] = (h, result)
    return result


def _verify(cert: str, key: str) -> str | None:
    try:
        with open(cert, "rb") as f:
            cert_pem = f.read()
        with open(key, "rb") as f:
            key_pem = cert_pem if key == cert else f.read()
    except FileNotFoundError as e:
        return f"{e.filename}: missing"
    except PermissionError:
        return None
    except OSError as e:
        return f"{e.filename}: {e.strerror}"
    try:
        chain = crypto.load_chain(cert_pem)
    except crypto.CryptoError:
        chain = []
    if not chain:
        return f"{cert}: no certificate in it"
    if b"ENCRYPTED" in key_pem:
        return None  # SSLPassPhraseDialog's business
    try:
        k = crypto.store_key_from_pem(key_pem)
    except (ValueError, TypeError, crypto.CryptoError) as e:
        return f"{key}: not a usable private key ({e})"
    if not crypto.key_signs_for(k, chain[0]):
        return f"{key}: the private key does not match the certificate in {cert}"
    return None


# -- what an include points at -------------------------------------------------------------------
def _live(store: Store, md: ManagedDomain) -> list[tuple[KeySpec, str, str, str | None]]:
    """The (spec, cert, key, problem()) of each key type with a file in domains/<md>/,
    from one stat() per file."""
    out = []
    d = store.fsdir(DOMAINS, md.name)
    for spec in md.keyspecs:
        cert = os.path.join(d, spec.file_name("pubcert"))
        key = os.path.join(d, spec.file_name("privkey"))
        stamp = (_stamp(cert), _stamp(key))
        if stamp != (None, None):
            out.append((spec, cert, key, problem(cert, key, stamp)))
    return out


def live_problem(store: Store, md: ManagedDomain) -> str | None:
    """What is wrong with the MD's live set in domains/ (None: good, or nothing there)."""
    return next((why for *_, why in _live(store, md) if why), None)


def static_problem(md: ManagedDomain) -> str | None:
    """What is wrong with the files of MDCertificateFile / MDCertificateKeyFile."""
    for i, cert in enumerate(md.cert_files):
        why = problem(cert, md.key_files[i] if i < len(md.key_files) else None)
        if why:
            return why
    return None


def cert_pairs(store: Store, md: ManagedDomain,
               batch: Batch | None = None) -> tuple[list[tuple[str, str]], bool]:
    """What the MD's include points mod_ssl at, and whether that is the fallback:
    only files that verify; else the fallback (made in `batch` when there is one)."""
    if not credentials.uses_managed(store, md):
        if static_problem(md) is None:
            return list(zip(md.cert_files, md.key_files)), False
    else:
        live = _live(store, md)
        if live and all(why is None for *_, why in live):
            return [(c, k) for _, c, k, _ in live], False
    return [ensure_fallback(store, md, spec, batch) for spec in md.keyspecs], True


# -- repair ------------------------------------------------------------------------------------------
def repair(store: Store, md: ManagedDomain) -> str | None:
    """A broken live set is moved into archive/<md>.broken.<n> (nothing is lost) and the
    newest good, unexpired set of archive/<md>.<n> copied back; without one the MD has
    no live set, so its include points at the fallback and the next check renews it.
    Returns what was found and done, for the log and md-status; None when all is well."""
    if not credentials.uses_managed(store, md):
        return None
    why = live_problem(store, md)
    if why is None:
        return None
    files = [f for spec in md.keyspecs for f in (spec.file_name("pubcert"),
                                                  spec.file_name("privkey"))]
    slot = store.archive_slot(f"{md.name}.broken")
    for f in files:
        try:
            rename(store.fspath(DOMAINS, md.name, f), slot / f)
        except FileNotFoundError:
            pass
    restored = _restore_from_archive(store, md, files)
    done = (f"restored the set of {restored}" if restored else
            "no good set in archive/: Apache gets the fallback until the renewal")
    text = f"broken live set: {why}; moved to {slot}, {done}"
    log.error("%s: %s", md.name, text)
    return text


def _restore_from_archive(store: Store, md: ManagedDomain, files: list[str]) -> str | None:
    """Copy the newest archived set of `md` that verifies and has not expired into domains/."""
    prefix = md.name + "."
    slots = []
    for name in store.names(ARCHIVE):
        n = name[len(prefix):] if name.startswith(prefix) else ""
        if n.isdigit():
            slots.append((int(n), store.dir(ARCHIVE) / name))
    now = now_utc()
    for _, slot in sorted(slots, reverse=True):
        pairs = [(str(slot / spec.file_name("pubcert")), str(slot / spec.file_name("privkey")))
                 for spec in md.keyspecs]
        if any(problem(c, k) for c, k in pairs):
            continue
        try:
            if any(crypto.cert_info(crypto.load_chain(Path(c).read_bytes())[0]).not_after <= now
                   for c, _ in pairs):
                continue
            for f in files:
                data = (slot / f).read_bytes()
                store.write_bytes(DOMAINS, md.name, f, data,
                                  mode=0o600 if f.startswith("privkey") else None)
        except (OSError, crypto.CryptoError, StoreError):
            continue
        return str(slot)
    return None


def repair_all(store: Store, config: Config) -> dict[str, str]:
    """repair() for every MD: md -> what was done."""
    out = {}
    for md in config.mds:
        try:
            done = repair(store, md)
        except (OSError, StoreError) as e:
            done = f"broken live set, and it could not be moved aside: {e}"
            log.error("%s: %s", md.name, done)
        if done:
            out[md.name] = done
    return out


def served_problems(store: Store, config: Config) -> list[str]:
    """Every certificate/key pair Apache will load that would make it exit (after
    write_includes): the MDs' includes, the fallback, and vhosts' own SSLCertificateFile."""
    out = []
    for md in config.mds:
        if md.ssl_vhosts:
            pairs, _ = cert_pairs(store, md)
            out += [p for p in (problem(c, k) for c, k in pairs) if p]
    mine = {c for md in config.mds for c in md.cert_files}
    own = os.path.join(str(store.base), "")  # our includes, read into the vhosts: done above
    for vh in config.vhosts:
        for i, cert in enumerate(vh.cert_files):
            if vh.ssl and cert not in mine and not cert.startswith(own):
                why = problem(cert, vh.key_files[i] if i < len(vh.key_files) else None)
                if why:
                    out.append(why)
    return out


def write_if_changed(store: Store, path: Path, text: str, sync_dir: bool = True,
                     batch: Batch | None = None) -> bool:
    """`sync_dir` False: the caller syncs the directory once after many files; `batch`:
    in place at its commit."""
    data = text.encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    if batch is not None:
        batch.add(path, data, 0o644)
    else:
        atomic_write(path, data, 0o644, sync_dir=sync_dir)
    return True


# include path: (what it was made of, the file's stamp once it said so). A cycle over
# 10,000 MDs rendered and read every include to find it unchanged; now it renders and
# reads only those whose certificates, settings or file changed (by hand: removed,
# edited), and otherwise costs one stat().
# (The MD is kept, for its id() in the hash not to be reused.)
_written: dict[str, tuple[ManagedDomain, int]] = {}


def _write_include(store: Store, path: Path, md: ManagedDomain, made_of: tuple,
                   render: Callable[[], str], batch: Batch | None = None) -> bool:
    key = os.fspath(path)
    hit = _written.get(key)
    if hit is not None and hit[0] is md and hit[1] == hash((made_of, _stamp(key))):
        return False
    # write_includes syncs the directory
    changed = write_if_changed(store, path, render(), sync_dir=False, batch=batch)

    def note() -> None:
        _written[key] = (md, hash((made_of, _stamp(key))))

    if changed and batch is not None:
        batch.then(note)  # the file's stamp once it is in place
    else:
        note()
    return changed


def write_includes(store: Store, config: Config | None,
                   batch: Batch | None = None) -> tuple[bool, dict[str, str]]:
    """Every MD's include and global.conf with the server-wide fallback: (whether any
    include changed, md -> what its include serves: "certificate", "static" or
    "fallback"). With `config` None (unreadable), only global.conf's fallback, when
    there is no global.conf yet. `batch`: the includes, fallbacks and global.conf go
    there, all in place (durable) at its commit_all(), which the caller does."""
    apache_dir = store.dir(APACHE)
    apache_dir.mkdir(parents=True, exist_ok=True)
    fallback = server_fallback(store, batch)
    if config is None:
        glob = apache_dir / "global.conf"
        if not glob.exists():
            atomic_write(glob, includes.global_conf(None, fallback).encode(), 0o644)
        return False, {}
    changed = False
    served = {}
    setup = includes.relay_setup(config)  # once, not per MD: it walks every vhost
    for md in config.mds:
        pairs, fallback_md = cert_pairs(store, md, batch)
        served[md.name] = "fallback" if fallback_md else \
            "certificate" if credentials.uses_managed(store, md) else "static"
        responder = any(i and i.ocsp_url for i in credentials.active(store, md).values())
        stapling = includes.md_stapling(config, md, fallback_md, responder, setup)
        changed |= _write_include(
            store, apache_dir / includes.include_file(md.name), md,
            (tuple(pairs), fallback_md, stapling),
            lambda: includes.md_include(md, pairs, fallback_md, stapling),  # noqa: B023
            batch)
    changed |= write_if_changed(store, apache_dir / "global.conf",
                                includes.global_conf(config, fallback), sync_dir=False,
                                batch=batch)
    if changed and batch is None:
        # the includes' directory once for all of them, before Apache reads them
        fsync_dir(apache_dir)
    # Includes of MDs removed from the config stay: a vhost may still include them.
    return changed, served
