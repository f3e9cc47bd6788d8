"""The fleet key and sealed values."""
from __future__ import annotations

import os

import pytest

from apache_md.fleet import seal


def test_keygen_writes_a_private_key_once(tmp_path):
    path = str(tmp_path / "fleet.key")
    kid = seal.write_new_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert seal.key_id(seal.load_key(path)) == kid
    with pytest.raises(seal.SealError, match="never replaced"):
        seal.write_new_key(path)
    assert seal.key_id(seal.load_key(path)) == kid


def test_a_key_others_may_read_is_refused(tmp_path):
    path = str(tmp_path / "fleet.key")
    seal.write_new_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(seal.SealError, match=r"mode 0640\); chmod 600"):
        seal.load_key(path)


@pytest.mark.parametrize("content, why", [
    (b"", "is not a fleet key"), (b"c2hvcnQ\n", "is not a fleet key"), (b"\xff\xfe", "not a fleet key")])
def test_a_file_that_is_no_key(tmp_path, content, why):
    path = tmp_path / "fleet.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(seal.SealError, match=why):
        seal.load_key(str(path))
    with pytest.raises(seal.SealError, match="does not exist.*cluster keygen"):
        seal.load_key(str(tmp_path / "missing"))


def test_seal_round_trip_bound_to_key_and_place(tmp_path):
    key, other = os.urandom(32), os.urandom(32)
    sealed = seal.seal(key, b"-----BEGIN PRIVATE KEY-----", "/f/md/a/set")
    assert b"PRIVATE" not in sealed.encode() and "PRIVATE" not in sealed
    assert seal.unseal(key, sealed, "/f/md/a/set") == b"-----BEGIN PRIVATE KEY-----"
    with pytest.raises(seal.SealError, match="moved from another key"):
        seal.unseal(key, sealed, "/f/md/b/set")
    with pytest.raises(seal.SealError, match="another fleet key"):
        seal.unseal(other, sealed, "/f/md/a/set")
    version, kid, body = sealed.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(seal.SealError, match="does not open"):
        seal.unseal(key, ".".join((version, kid, flipped)), "/f/md/a/set")
    with pytest.raises(seal.SealError, match="not a sealed value"):
        seal.unseal(key, "plain", "/f/md/a/set")
