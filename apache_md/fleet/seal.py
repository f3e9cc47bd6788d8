"""Sealing secrets with the fleet key: AES-256-GCM, the key in a 0600 file on each node.

Private keys and account keys only ever go into etcd sealed; whoever reads etcd
without the fleet key learns certificates (public anyway) and nothing else. The etcd
key a value is stored under is the GCM associated data, so a sealed value copied to
another key (another MD's private key) does not open.
"""
from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
VERSION = "v1"


class SealError(Exception):
    """A fleet key file or a sealed value that cannot be used; the message says why."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(key: bytes) -> str:
    """A short public name of a fleet key: which key sealed a value."""
    return hashlib.sha256(b"apache-md fleet key\0" + key).hexdigest()[:12]


def load_key(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SealError(f"fleet key {path} does not exist (`apache-md cluster keygen {path}` "
                        "writes one; every node needs the same)") from None
    except OSError as e:
        raise SealError(f"fleet key {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_mode & 0o077:
            raise SealError(f"fleet key {path} may be read by others (mode "
                            f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 {path}")
        text = f.read(200).decode("ascii", "replace").strip()
    try:
        key = _unb64(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise SealError(f"fleet key {path} is not a fleet key (expected {KEY_BYTES} bytes in "
                        "base64, as `apache-md cluster keygen` writes)")
    return key


def write_new_key(path: str) -> str:
    """A new fleet key in `path` (0600, never replacing a file); returns its key id."""
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise SealError(f"{path} exists already; a fleet key is never replaced (every node "
                        "holds a copy): remove it first if you mean it") from None
    except OSError as e:
        raise SealError(f"cannot write {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write((_b64(key) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    return key_id(key)


def seal(key: bytes, plain: bytes, where: str) -> str:
    """`plain` sealed for the etcd key `where`: "v1.<key id>.<nonce+ciphertext>"."""
    nonce = secrets.token_bytes(12)
    ct = AESGCM(key).encrypt(nonce, plain, where.encode())
    return f"{VERSION}.{key_id(key)}.{_b64(nonce + ct)}"


def unseal(key: bytes, sealed: str, where: str) -> bytes:
    try:
        version, kid, body = sealed.split(".", 2)
        raw = _unb64(body)
    except (ValueError, AttributeError):
        raise SealError(f"{where}: not a sealed value") from None
    if version != VERSION:
        raise SealError(f"{where}: sealed in an unknown format {version!r}")
    if kid != key_id(key):
        raise SealError(f"{where}: sealed with another fleet key ({kid}, this node has "
                        f"{key_id(key)}); every node needs the same MDClusterKeyFile")
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], where.encode())
    except (InvalidTag, ValueError):
        raise SealError(f"{where}: the sealed value does not open (altered, or moved from "
                        "another key)") from None
