"""The file store, in mod_md's layout (reference/mod_md-formats.md §3).

Every write is atomic (exclusive temp file, fsync, rename) with explicit
permissions, so a crash or a concurrent reader never sees half a file, and a
store can be handed back and forth between mod_md and apache-md.
"""
from __future__ import annotations

import base64
import errno
import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import threading
from pathlib import Path
from typing import Any, Iterable

from ..core import jsonfmt

ACCOUNTS, CHALLENGES, DOMAINS, STAGING = "accounts", "challenges", "domains", "staging"
ARCHIVE, TMP, OCSP = "archive", "tmp", "ocsp"
# apache-md's own additions: generated Apache config, lock files, status snapshot,
# and per-MD monitoring state kept between renewal runs (ARI answers, messages)
APACHE, LOCKS, STATUS, WATCH = "apache", "locks", "status", "watch"
# Each MD's md-status JSON alone (status/snapshot), served by Apache itself for the
# names this pattern allows (the handler snippet's rewrite; apache/includes)
STATUS_ONE = (STATUS, "snapshot", "one")
ONE_NAME = r"[A-Za-z0-9_*-][A-Za-z0-9_.*-]*"
HTTP01_FILE = "acme-http-01.txt"  # challenges/<domain>/: "<token>.<thumbprint>" (mod_md)

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
REFUSAL = ("It holds the key that protects the ACME account keys and the staged private keys, "
           "so apache-md never replaces it, and renews and activates nothing until it is "
           "repaired (Apache goes on serving the certificates it has). Restore it from a "
           "backup; without one, move it away: a new key is made, and the accounts and staged "
           "keys it protected are set aside and made anew (a new ACME account)")


class StoreError(Exception):
    """A store problem a user can act on; the message names the file."""


class StoreKeyError(StoreError):
    """md_store.json cannot be used: nothing that needs the store's key may go on."""

    def __init__(self, path: Path, problem: str, advice: str):
        super().__init__(f"{path}: {problem}. {advice}")
        self.path = path
        self.problem = problem


class CorruptFile(StoreError):
    """A store file that is there but does not parse. `seen` identifies the version that
    was read, so that only that one is set aside (Store.set_aside), not a good one a
    writer put in its place meanwhile."""

    def __init__(self, path: Path, problem: str, seen: tuple | None = None):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.seen = seen


def _access_problem(path: Path, e: OSError, base: Path | None) -> str:
    """e.strerror, and for a permission problem who owns what: the file, or the directory
    above it that shuts us out (the usual cause: files root or mod_md made in a store
    that belongs to the worker's user), and the chown of the whole store `base` that
    fixes it (where there is one such entry, mod_md has left more)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{e.strerror}: the filesystem of {base or path.parent} is full (what is "
                "served stays as it is; apache-md goes on once there is space)")
    if e.errno != errno.EACCES or base is None:
        return e.strerror or str(e)
    blocked = path
    while True:
        try:
            st = os.stat(blocked)
            break
        except OSError:
            if blocked.parent == blocked:
                return e.strerror
            blocked = blocked.parent
    try:
        owner = _user(os.stat(base).st_uid)
    except OSError:
        return e.strerror
    return (f"{e.strerror} ({'it' if blocked == path else blocked} belongs to "
            f"{_user(st.st_uid)}:{_group(st.st_gid)}, mode {stat.S_IMODE(st.st_mode):04o}, the "
            f"store to {owner}; chown -R {owner}: {base})")


def describe(e: OSError, path: str | os.PathLike | None = None,
             base: Path | None = None) -> str:
    """An OSError as a message naming its file (Store.describe: in a store `base`)."""
    path = path or e.filename
    if not path:
        return e.strerror or str(e)
    return f"{path}: {_access_problem(Path(path), e, base)}"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def identity(st: os.stat_result) -> tuple:
    """Which version of a file a stat() saw: every write replaces the file (a new inode)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def safe_name(name: str) -> str:
    """Refuse names that would escape their group directory."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise StoreError(f"invalid name for the store: {name!r}")
    return name


def _named(e: OSError, path: str | os.PathLike) -> OSError:
    """`e` with the file it is about: a failed write() or fsync() (a full disk) names
    none, and "apache-md: : No space left on device" told the admin nothing."""
    if e.filename is None and e.errno is not None:
        return type(e)(e.errno, e.strerror, os.fspath(path))
    return e


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of a directory durable: a rename or a new file is only safe from a
    power loss once its directory is synced (a renewal reported done must stay done)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        raise _named(e, path) from None
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int, unsynced: set[str] | None = None) -> None:
    """mkdir -p with `mode` for each new level (whatever the umask), each one made durable;
    with `unsynced`, the directories whose new entries want a sync go there instead
    (a Batch syncs them at its commit)."""
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
        if unsynced is None:
            fsync_dir(d.parent)
        else:
            unsynced.add(os.fspath(d.parent))


def rename(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """rename(2), durable: both directories synced."""
    os.rename(src, dst)
    fsync_dir(os.path.dirname(os.path.abspath(dst)))
    src_dir = os.path.dirname(os.path.abspath(src))
    if src_dir != os.path.dirname(os.path.abspath(dst)):
        fsync_dir(src_dir)


_RENAME_EXCHANGE = 2
_renameat2 = None


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        import ctypes
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    return _renameat2


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE), both directories synced,
    so a reader never finds neither: an MD's live directory replaced this way is never
    missing, not even for the instant between two renames. False where the kernel or
    the filesystem cannot (the caller then renames twice)."""
    fn = _libc_renameat2()
    if not fn:
        return False
    AT_FDCWD = -100
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        import ctypes
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise OSError(err, os.strerror(err), os.fspath(a))
    for d in {os.path.dirname(os.path.abspath(a)), os.path.dirname(os.path.abspath(b))}:
        fsync_dir(d)
    return True


def atomic_write(path: Path, data: bytes | Iterable[bytes], mode: int,
                 sync_dir: bool = True, durable: bool = True) -> None:
    """`data` may come in chunks, so a large file need not be held in memory whole.
    `sync_dir` False: the caller syncs the directory once after many files.
    `durable` False: atomic, but nothing synced, for files whose loss in a power cut
    costs nothing (a renewal's progress, its order, a challenge answer): a process
    killed loses nothing either way, and a run of many MDs spent a third of its
    store time in fsync()."""
    make_dirs(path.parent, 0o755)
    fd, tmp = _new_tmp(os.fspath(path), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                for chunk in data:
                    f.write(chunk)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _named(e, path) from None
        raise
    if sync_dir and durable:
        fsync_dir(path.parent)


def _new_tmp(path: str, mode: int) -> tuple[int, str]:
    """A new temporary file next to `path` (atomic_write's and Batch's): (fd, its path)."""
    for attempt in range(100):
        tmp = f"{path}.{os.getpid()}.{attempt}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), tmp
        except FileExistsError:
            continue
    raise StoreError(f"cannot create a temporary file next to {path}")


class Batch:
    """Many files written atomically and durably with one sync: each goes to a temporary
    file, one sync(2) makes them all durable, then each is renamed into place and its
    directory synced once (commit). For thousands of small files, the status snapshot's
    pieces: an fsync() of each was most of the time taken writing them (ext4 commits
    its journal at each one; 1,000 files of 9 KB: 4.6 s against 0.4 s). A few files are
    synced each by itself: sync() writes out everything on the machine, which a busy
    server may have plenty of."""

    SYNC_ALL = 16  # from this many files (or directories) unsynced on, one sync()

    def __init__(self) -> None:
        self._files: dict[str, list[tuple[str, str]]] = {}  # directory -> (tmp, path)
        self._unsynced: list[str] = []  # temporary files written since the last sync
        self._new_entries: set[str] = set()  # directories with new subdirectories (commit_all)
        self._then: list = []  # called after commit_all

    def add(self, path: Path, data: bytes, mode: int, dir_mode: int = 0o755) -> None:
        if os.path.dirname(os.fspath(path)) not in self._files:
            make_dirs(Path(path).parent, dir_mode, self._new_entries)
        path = os.fspath(path)
        fd, tmp = _new_tmp(path, mode)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, mode)  # whatever the umask
        except OSError as e:  # a full disk: no temporary file left behind
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _named(e, path) from None
        self._files.setdefault(os.path.dirname(path), []).append((tmp, path))
        self._unsynced.append(tmp)

    def commit(self, directory: str | os.PathLike) -> bool:
        """The files added in `directory` in place, durable; False when there were none."""
        files = self._files.pop(os.fspath(directory), None)
        if not files:
            return False
        self._sync_files()
        for tmp, path in files:
            os.replace(tmp, path)
        fsync_dir(directory)
        for d in sorted(self._new_entries):  # the new directories' own entries
            fsync_dir(d)
        self._new_entries.clear()
        return True

    def then(self, fn) -> None:
        """Call `fn()` once commit_all() has put the files in place (what looks at them)."""
        self._then.append(fn)

    def commit_all(self) -> bool:
        """Every file added in place, durable with their directories: the files synced
        (one sync() for many), renamed, then their directories and those that got new
        subdirectories synced (again one sync() for many). False when there were none.
        Nothing is in place before the data is durable: a power cut leaves each file
        either as it was or complete, never empty."""
        if not self._files:
            return False
        self._sync_files()
        dirs = set(self._files) | self._new_entries
        for files in self._files.values():
            for tmp, path in files:
                os.replace(tmp, path)
        self._files.clear()
        self._new_entries.clear()
        if len(dirs) >= self.SYNC_ALL:
            os.sync()
        else:
            for d in sorted(dirs):
                fsync_dir(d)
        then, self._then = self._then, []
        for fn in then:
            fn()
        return True

    def _sync_files(self) -> None:
        if len(self._unsynced) >= self.SYNC_ALL:
            os.sync()  # every file added so far, in whichever directory
        else:
            for tmp in self._unsynced:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self._unsynced.clear()

    def discard(self) -> None:
        """Away with the temporary files not committed (after an error)."""
        for files in self._files.values():
            for tmp, _ in files:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self._files.clear()
        self._unsynced.clear()
        self._new_entries.clear()
        self._then.clear()


class Store:
    def __init__(self, base: str | os.PathLike):
        self.base = Path(base)
        self._key: bytes | None = None
        self._key_seen: tuple | None = None  # identity() of md_store.json when read
        self._dirs: dict[str, Path] = {}
        self._fsdirs: dict[tuple[str, str], str] = {}

    # -- layout -------------------------------------------------------------
    def dir(self, group: str, name: str | None = None) -> Path:
        # An MD's directory is kept as a str only (fsdir): Path objects of every MD's
        # three directories were a tenth of the worker's memory at 10,000 MDs.
        if name is not None:
            return Path(self.fsdir(group, name))
        d = self._dirs.get(group)
        if d is None:
            d = self._dirs[group] = self.base / group
        return d

    def path(self, group: str, name: str, file: str) -> Path:
        return self.dir(group, name) / safe_name(file)

    def fspath(self, group: str, name: str, file: str) -> str:
        """path() as a str: stat() and open() on it skip pathlib, whose joins cost more
        than the system calls when a cycle looks at the files of a thousand MDs."""
        d = self._fsdirs.get((group, name)) or self.fsdir(group, name)
        return os.path.join(d, safe_name(file))

    def fsdir(self, group: str, name: str) -> str:
        """dir() as a str (see fspath)."""
        d = self._fsdirs.get((group, name))
        if d is None:
            d = self._fsdirs[(group, name)] = os.path.join(os.fspath(self.base), group,
                                                           safe_name(name))
        return d

    def init(self) -> None:
        """Create the base layout and md_store.json; idempotent."""
        try:
            if not self.base.exists():
                make_dirs(self.base, 0o755)
            for group, (dmode, _) in GROUP_MODES.items():
                make_dirs(self.base / group, dmode)
            self.key  # noqa: B018 - creates md_store.json on first use
        except OSError as e:
            raise StoreError(f"cannot set up the store at {self.base}: {e.strerror}") from None

    @property
    def key(self) -> bytes:
        """The 48 raw bytes mod_md encrypts staged and account keys with (md_store.json,
        made on first use); StoreKeyError when the file cannot be used."""
        if self._key is None:
            self._key, self._key_seen = self._read_key(create=True)
        return self._key

    def check_key(self) -> None:
        """StoreKeyError unless md_store.json still holds the key in use: a long-running
        process must not go on with a key the file no longer has (cheap: one stat)."""
        if self._key is None:
            self.key  # noqa: B018
            return
        p = self.base / STORE_FILE
        try:
            seen = identity(os.stat(p))
        except OSError:
            seen = None
        if seen == self._key_seen:
            return
        key, seen = self._read_key(create=False)
        if key != self._key:
            raise StoreKeyError(p, "replaced by a file with another key while apache-md was "
                                   "using it", REFUSAL)
        self._key_seen = seen

    def _read_key(self, create: bool) -> tuple[bytes, tuple]:
        p = self.base / STORE_FILE
        try:
            with open(p, "rb") as f:
                data, seen = f.read(), identity(os.fstat(f.fileno()))
        except FileNotFoundError:
            if not create:
                raise StoreKeyError(p, "removed while apache-md was using it", REFUSAL) from None
            return self._create_key(p)
        except OSError as e:
            raise StoreKeyError(p, _access_problem(p, e, self.base), REFUSAL
                                if e.errno != errno.EACCES
                                else "apache-md renews and activates nothing until it can "
                                     "read it") from None
        try:
            doc = json.loads(data)
            text = doc["key"]
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            version = float(doc.get("store", {}).get("version", 0))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise StoreKeyError(p, "corrupt: no valid 'key'", REFUSAL) from None
        if version > 3:
            raise StoreKeyError(p, f"store version {version} is newer than this apache-md "
                                   "knows (3)", "Upgrade apache-md") from None
        if len(raw) != 48:
            raise StoreKeyError(p, f"corrupt: the key has {len(raw)} bytes, not 48", REFUSAL)
        return raw, seen

    def _create_key(self, p: Path) -> tuple[bytes, tuple]:
        """A new md_store.json, complete before it appears: a process that starts at the
        same moment reads either none or the whole file, and the first one wins."""
        raw = secrets.token_bytes(48)
        doc = {"store": {"version": 3.0},
               "key": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
        tmp = p.with_name(f"{p.name}.{os.getpid()}.{threading.get_ident()}.new")
        atomic_write(tmp, jsonfmt.dumps(doc).encode(), 0o600)
        try:
            os.link(tmp, p)
        except FileExistsError:  # another process won the race: read theirs
            return self._read_key(create=False)
        finally:
            os.unlink(tmp)
        fsync_dir(self.base)
        return raw, identity(os.stat(p))

    def describe(self, e: OSError, path: str | os.PathLike | None = None) -> str:
        """An OSError met in the store as a message: the file, what went wrong, and for a
        permission problem who owns what and the chown that fixes it."""
        return describe(e, path, self.base)

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
            path = self.path(group, name, file)
            raise StoreError(self.describe(e, path)) from None

    def read_bytes(self, group: str, name: str, file: str) -> bytes | None:
        got = self._read(group, name, file)
        return got[0] if got else None

    def read_json(self, group: str, name: str, file: str) -> dict[str, Any] | None:
        """The JSON object, None when absent; CorruptFile (naming the file) when it does not
        parse, StoreError when it cannot be read."""
        got = self._read(group, name, file)
        if got is None:
            return None
        try:
            obj = json.loads(got[0])
        except ValueError as e:
            raise CorruptFile(self.path(group, name, file), f"corrupt JSON ({e})",
                              got[1]) from None
        if not isinstance(obj, dict):
            raise CorruptFile(self.path(group, name, file), "not a JSON object", got[1])
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
                    mode: int | None = None, durable: bool = True,
                    sync_dir: bool = True, batch: Batch | None = None) -> Path:
        """`durable`, `sync_dir`: as atomic_write's (sync_dir False: a later durable write
        to the same directory syncs it for both). `batch`: the file goes there, in place
        (durable) at the batch's commit_all(), not before."""
        dmode, fmode = GROUP_MODES.get(group, (0o755, 0o644))
        d = self.dir(group, name)
        p = d / safe_name(file)
        if batch is not None:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                data = b"".join(data)
            batch.add(p, data, fmode if mode is None else mode, dmode)
            return p
        make_dirs(d, dmode)
        atomic_write(p, data, fmode if mode is None else mode, sync_dir=sync_dir,
                     durable=durable)
        return p

    def write_json(self, group: str, name: str, file: str, obj: Any,
                   mode: int | None = None, durable: bool = True,
                   sync_dir: bool = True, batch: Batch | None = None) -> Path:
        return self.write_bytes(group, name, file, jsonfmt.dumps(obj).encode(), mode, durable,
                                sync_dir, batch)

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
