"""The file store, in mod_md's layout (reference/mod_md-formats.md §3).

Every write is atomic (exclusive temp file, fsync, rename) with explicit
permissions, so a crash or a concurrent reader never sees half a file, and a
store can be handed back and forth between mod_md and apache-md.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterable

from ..core import jsonfmt

ACCOUNTS, CHALLENGES, DOMAINS, STAGING = "accounts", "challenges", "domains", "staging"
ARCHIVE, TMP, OCSP = "archive", "tmp", "ocsp"
# apache-md's own additions: generated Apache config, lock files, status snapshot,
# and per-MD monitoring state kept between renewal runs (ARI answers, messages)
APACHE, LOCKS, STATUS, WATCH = "apache", "locks", "status", "watch"

# (dir mode, file mode) per group, as mod_md's md_store_fs.h; ours are world
# readable where the unprivileged WSGI daemon must read them.
GROUP_MODES = {
    ACCOUNTS: (0o755, 0o644), CHALLENGES: (0o755, 0o644), STAGING: (0o755, 0o644),
    OCSP: (0o755, 0o644), DOMAINS: (0o700, 0o600), TMP: (0o700, 0o600),
    ARCHIVE: (0o700, 0o600), APACHE: (0o755, 0o644), LOCKS: (0o755, 0o644),
    STATUS: (0o755, 0o644), WATCH: (0o755, 0o644),
}
KEY_MODE = 0o600
STORE_FILE = "md_store.json"


class StoreError(Exception):
    """A store problem a user can act on; the message names the file."""


class CorruptFile(StoreError):
    """A store file that is there but does not parse. `seen` identifies the version that
    was read, so that only that one is set aside (Store.set_aside), not a good one a
    writer put in its place meanwhile."""

    def __init__(self, path: Path, problem: str, seen: tuple | None = None):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.seen = seen


def identity(st: os.stat_result) -> tuple:
    """Which version of a file a stat() saw: every write replaces the file (a new inode)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def safe_name(name: str) -> str:
    """Refuse names that would escape their group directory."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise StoreError(f"invalid name for the store: {name!r}")
    return name


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of a directory durable: a rename or a new file is only safe from a
    power loss once its directory is synced (a renewal reported done must stay done)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int) -> None:
    """mkdir -p with `mode` for each new level (whatever the umask), each one made durable."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue  # made by another process meanwhile
        os.chmod(d, mode)
        fsync_dir(d.parent)


def rename(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """rename(2), durable: both directories synced."""
    os.rename(src, dst)
    fsync_dir(os.path.dirname(os.path.abspath(dst)))
    src_dir = os.path.dirname(os.path.abspath(src))
    if src_dir != os.path.dirname(os.path.abspath(dst)):
        fsync_dir(src_dir)


def atomic_write(path: Path, data: bytes | Iterable[bytes], mode: int) -> None:
    """`data` may come in chunks, so a large file need not be held in memory whole."""
    make_dirs(path.parent, 0o755)
    for attempt in range(100):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{attempt}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            break
        except FileExistsError:
            continue
    else:
        raise StoreError(f"cannot create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                for chunk in data:
                    f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


class Store:
    def __init__(self, base: str | os.PathLike):
        self.base = Path(base)
        self._key: bytes | None = None
        self._dirs: dict[tuple[str, str | None], Path] = {}
        self._fsdirs: dict[tuple[str, str], str] = {}

    # -- layout -------------------------------------------------------------
    def dir(self, group: str, name: str | None = None) -> Path:
        # Joined once: a check cycle over a thousand MDs asks for the same
        # directories thousands of times, and pathlib joins are slow.
        d = self._dirs.get((group, name))
        if d is None:
            d = self.base / group
            if name is not None:
                d = d / safe_name(name)
            self._dirs[(group, name)] = d
        return d

    def path(self, group: str, name: str, file: str) -> Path:
        return self.dir(group, name) / safe_name(file)

    def fspath(self, group: str, name: str, file: str) -> str:
        """path() as a str: stat() and open() on it skip pathlib, whose joins cost more
        than the system calls when a cycle looks at the files of a thousand MDs."""
        d = self._fsdirs.get((group, name))
        if d is None:
            d = self._fsdirs[(group, name)] = os.fspath(self.dir(group, name))
        return os.path.join(d, safe_name(file))

    def init(self) -> None:
        """Create the base layout and md_store.json; idempotent."""
        try:
            if not self.base.exists():
                make_dirs(self.base, 0o755)
            for group, (dmode, _) in GROUP_MODES.items():
                d = self.base / group
                if not d.exists():
                    make_dirs(d, dmode)
                    self.adopt(d)  # a group added by an upgrade, made by root
            self.key  # noqa: B018 - creates md_store.json on first use
        except OSError as e:
            raise StoreError(f"cannot set up the store at {self.base}: {e.strerror}") from None

    @property
    def key(self) -> bytes:
        """The 48 raw bytes mod_md encrypts staged and account keys with."""
        if self._key is None:
            p = self.base / STORE_FILE
            try:
                data = json.loads(p.read_bytes())
            except FileNotFoundError:
                data = None
            except (OSError, ValueError) as e:
                raise StoreError(f"{p}: unreadable store file ({e})") from None
            if data is None:
                raw = secrets.token_bytes(48)
                doc = {"store": {"version": 3.0},
                       "key": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
                try:
                    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(jsonfmt.dumps(doc))
                        f.flush()
                        os.fsync(f.fileno())
                    fsync_dir(self.base)
                    self.adopt(p)  # root (e.g. `check` in postinst) must not lock the worker out
                    self._key = raw
                    return raw
                except FileExistsError:  # another process won the race: read theirs
                    return self.key
            try:
                text = data["key"]
                raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
                version = float(data.get("store", {}).get("version", 0))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise StoreError(f"{p}: no valid 'key' in store file") from None
            if len(raw) != 48 or version > 3:
                raise StoreError(f"{p}: unsupported store version or key length")
            self._key = raw
        return self._key

    # -- files ----------------------------------------------------------------
    def exists(self, group: str, name: str, file: str) -> bool:
        return os.path.exists(self.fspath(group, name, file))

    def _read(self, group: str, name: str, file: str) -> tuple[bytes, tuple] | None:
        """The content and identity() of a file; None when absent."""
        try:
            with open(self.fspath(group, name, file), "rb") as f:
                return f.read(), identity(os.fstat(f.fileno()))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self.path(group, name, file)}: {e.strerror}") from None

    def read_bytes(self, group: str, name: str, file: str) -> bytes | None:
        got = self._read(group, name, file)
        return got[0] if got else None

    def read_json(self, group: str, name: str, file: str) -> dict[str, Any] | None:
        """The JSON object, None when absent; CorruptFile (naming the file) when it does not
        parse, StoreError when it cannot be read."""
        got = self._read(group, name, file)
        if got is None:
            return None
        path = self.path(group, name, file)
        try:
            obj = json.loads(got[0])
        except ValueError as e:
            raise CorruptFile(path, f"corrupt JSON ({e})", got[1]) from None
        if not isinstance(obj, dict):
            raise CorruptFile(path, "not a JSON object", got[1])
        return obj

    def set_aside(self, path: str | os.PathLike, seen: tuple | None = None) -> Path | None:
        """Move a broken file out of the way, next to itself as `<name>.broken.<n>` (n from
        1), where it stays for inspection. None when it is gone, or was replaced since it
        was read as `seen` (whoever replaced it wrote a good one)."""
        path = Path(path)
        for n in range(1, 1000):
            aside = path.with_name(f"{path.name}.broken.{n}")
            try:
                os.link(path, aside)  # never replaces an earlier broken copy
            except FileExistsError:
                continue
            except FileNotFoundError:
                return None
            break
        else:
            raise StoreError(f"{path}: no free name to set it aside")
        if seen is not None and identity(os.stat(aside)) != seen:
            os.unlink(aside)
            return None
        os.unlink(path)
        fsync_dir(path.parent)
        return aside

    def write_bytes(self, group: str, name: str, file: str, data: bytes | Iterable[bytes],
                    mode: int | None = None) -> Path:
        dmode, fmode = GROUP_MODES.get(group, (0o755, 0o644))
        d = self.dir(group, name)
        make_dirs(d, dmode)
        p = d / safe_name(file)
        atomic_write(p, data, fmode if mode is None else mode)
        if os.geteuid() == 0:
            self.adopt(d)
            self.adopt(p)
        return p

    def write_json(self, group: str, name: str, file: str, obj: Any,
                   mode: int | None = None) -> Path:
        return self.write_bytes(group, name, file, jsonfmt.dumps(obj).encode(), mode)

    def remove(self, group: str, name: str, file: str) -> None:
        try:
            self.path(group, name, file).unlink()
        except FileNotFoundError:
            pass

    def purge(self, group: str, name: str) -> None:
        shutil.rmtree(self.dir(group, name), ignore_errors=True)

    def names(self, group: str) -> list[str]:
        try:
            return sorted(p.name for p in self.dir(group).iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    # -- ownership ------------------------------------------------------------------
    def adopt(self, path: Path, recursive: bool = False) -> None:
        """Give what root wrote to the store's owner, so the unprivileged worker
        can read and replace it later (activation runs as root)."""
        if os.geteuid() != 0:
            return
        try:
            st = os.stat(self.base)
        except OSError:
            return
        if st.st_uid == 0:
            return
        paths = [path] + (list(path.rglob("*")) if recursive and path.is_dir() else [])
        for p in paths:
            try:
                os.lchown(p, st.st_uid, st.st_gid)
            except OSError:
                pass

    # -- the archive ---------------------------------------------------------------
    def archive_slot(self, stem: str) -> Path:
        """A fresh empty `archive/<stem>.<n>` (n from 1): rename(2) may replace it."""
        arch_root = self.dir(ARCHIVE)
        arch_root.mkdir(mode=0o700, exist_ok=True)
        for n in range(1, 1000):
            cand = arch_root / f"{stem}.{n}"
            try:
                cand.mkdir(mode=0o700)
                return cand
            except FileExistsError:
                continue
        raise StoreError(f"{arch_root}: no free archive slot for {stem}")
