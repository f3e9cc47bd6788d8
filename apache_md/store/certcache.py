"""What the worker knows of certificate files, kept in the store between its runs.

A worker that starts over 10,000 unchanged MDs parsed every certificate and proved
every key against its certificate before its first check (half a minute), and
loading `cryptography` for it was a third of an idle worker's memory. Kept here, in
`status/cache/certificates.json` (0600): per certificate file its stamp (inode,
size, mtime, ctime), the SHA-256 of its content and its summary (core/crypto.CertInfo:
public facts of the certificate), and per certificate/key pair of mod_ssl's its two
stamps and the verdict (serving.problem). No key and nothing derived from a key.
A stamp is kept as its hash (ints only: the same in every process): at 10,000 MDs the
stamps' tuples of four ints were 6 MB of the worker.

An entry counts only while the file's stamp is the same (a certificate whose stamp
changed counts again when its content hash is the same); the stamps change whenever
a file is replaced or written, so a key garbled by hand is proved again. A file that
does not parse, or of another format, is named once in the log and made anew.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
from datetime import datetime, timezone
from typing import Any

from ..core.crypto import CertInfo
from .fs import STATUS, Store, atomic_write

log = logging.getLogger(__name__)
FILE = (STATUS, "cache", "certificates.json")
FORMAT = 2  # 1: stamps as lists of four ints (read too)

_lock = threading.Lock()
# path: (hash of its stamp, sha256 of the content, summary); (cert, key): (hash of
# their stamps, problem)
_certs: dict[str, tuple[int, str, CertInfo]] = {}
_pairs: dict[tuple[str, str], tuple[int, str | None]] = {}
_used: set = set()  # what this process looked up or learned
_dirty = False
_loaded: set[str] = set()  # stores whose file was read


def clear() -> None:
    """Forget what is in memory (as a new process would start)."""
    global _dirty
    with _lock:
        _certs.clear()
        _pairs.clear()
        _used.clear()
        _loaded.clear()
        _dirty = False


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cert(path: str, stamp: tuple, read=None) -> CertInfo | None:
    """The summary of the certificate file at `path` as it is (`stamp`); `read()` gives
    its content when the stamp alone does not tell (None: then it is not asked)."""
    global _dirty
    stamp = hash(stamp)
    with _lock:
        hit = _certs.get(path)
    if hit is None:
        return None
    if hit[0] != stamp:
        data = read() if read else None
        if data is None or digest(data) != hit[1]:
            return None
        with _lock:
            _certs[path] = hit = (stamp, hit[1], hit[2])
            _dirty = True
    with _lock:
        _used.add(path)
    return hit[2]


def put_cert(path: str, stamp: tuple, data: bytes, info: CertInfo) -> None:
    global _dirty
    with _lock:
        _certs[path] = (hash(stamp), digest(data), info)
        _used.add(path)
        _dirty = True


def pair(cert: str, key: str, stamps: tuple) -> tuple[bool, str | None]:
    """(known, problem) of the pair as its files are (`stamps`)."""
    with _lock:
        hit = _pairs.get((cert, key))
        if hit is None or hit[0] != hash(stamps):
            return False, None
        _used.add((cert, key))
        return True, hit[1]


def put_pair(cert: str, key: str, stamps: tuple, problem: str | None) -> None:
    global _dirty
    if not all(isinstance(s, tuple) and s for s in stamps):
        return  # a file missing or not looked at: nothing to keep
    with _lock:
        _pairs[(cert, key)] = (hash(stamps), problem)
        _used.add((cert, key))
        _dirty = True


# -- the file -------------------------------------------------------------------------------
def _info_json(i: CertInfo) -> list:
    return [i.not_before.timestamp(), i.not_after.timestamp(), i.serial, i.sha256,
            i.issuer_name, i.issuer_uri, i.ocsp_url, i.ari_cert_id, list(i.names),
            i.must_staple, i.key_type, i.ari_id, i.sha1]


def _info(v: list) -> CertInfo:
    nb, na, serial, sha256, issuer, issuer_uri, ocsp_url, ari_cert_id, names, must, \
        key_type, ari_id, sha1 = v
    strs = (serial, sha256, issuer, key_type, sha1)
    opt = (issuer_uri, ocsp_url, ari_cert_id, ari_id)
    if not all(isinstance(s, str) for s in strs) or \
            not all(s is None or isinstance(s, str) for s in opt) or \
            not isinstance(names, list) or not all(isinstance(n, str) for n in names) or \
            not isinstance(must, bool):
        raise ValueError("not a certificate summary")
    intern = sys.intern  # issuers and responders: shared by many certificates
    return CertInfo(
        not_before=datetime.fromtimestamp(nb, timezone.utc),
        not_after=datetime.fromtimestamp(na, timezone.utc), serial=serial, sha256=sha256,
        issuer_name=intern(issuer), issuer_uri=issuer_uri and intern(issuer_uri),
        ocsp_url=ocsp_url and intern(ocsp_url), ari_cert_id=ari_cert_id, names=tuple(names),
        must_staple=must, key_type=intern(key_type), ari_id=ari_id, sha1=sha1)


def _stamp(v: Any) -> tuple:
    if not isinstance(v, list) or not v or not all(isinstance(n, int) for n in v):
        raise ValueError("not a file stamp")
    return tuple(v)


def _hash(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError("not a file stamp's hash")
    return v


def load(store: Store) -> None:
    """Read the store's file once per process (what is in memory already wins)."""
    path = store.path(*FILE)
    with _lock:
        if str(path) in _loaded:
            return
        _loaded.add(str(path))
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        fmt = doc.get("format") if isinstance(doc, dict) else None
        if fmt not in (1, FORMAT):
            raise ValueError(f"format {fmt!r}, not {FORMAT}")
        old = fmt == 1
        # a certificate's path once for its entry and its pairs'
        certs = {sys.intern(p): (hash(_stamp(e[0])) if old else _hash(e[0]), e[1], _info(e[2]))
                 for p, e in doc["certs"].items() if isinstance(e[1], str)}
        pairs = {}
        for e in doc["pairs"]:
            if old:
                c, k, s1, s2, problem = e
                h = hash((_stamp(s1), _stamp(s2)))
            else:
                c, k, h, problem = e
                h = _hash(h)
            if not isinstance(c, str) or not isinstance(k, str) or \
                    not (problem is None or isinstance(problem, str)):
                raise ValueError("not a pair")
            pairs[(sys.intern(c), k)] = (h, problem)
    except FileNotFoundError:
        return
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        log.warning("%s: not usable (%s); it is made anew", path, e)
        return
    with _lock:
        for p, v in certs.items():
            _certs.setdefault(p, v)
        for p, v in pairs.items():
            _pairs.setdefault(p, v)


def loaded(store: Store) -> bool:
    """Whether this process read (or tried to read) the store's file."""
    with _lock:
        return str(store.path(*FILE)) in _loaded


def save(store: Store) -> None:
    """Write what this process used, when something was learned (what no one looked up
    since the start is left out: files of MDs that left, archived sets)."""
    global _dirty
    with _lock:
        if not _dirty:
            return
        certs = {p: [v[0], v[1], _info_json(v[2])] for p, v in _certs.items() if p in _used}
        pairs = [[c, k, v[0], v[1]] for (c, k), v in _pairs.items() if (c, k) in _used]
        _dirty = False
    data = json.dumps({"format": FORMAT, "certs": certs, "pairs": pairs},
                      separators=(",", ":")).encode()
    try:
        atomic_write(store.path(*FILE), data, 0o600)
    except OSError as e:
        log.warning("%s: cannot be written: %s", store.path(*FILE), e)
