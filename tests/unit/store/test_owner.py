"""Root works on a store that belongs to another user as that user (store/owner.py)."""
import os
import shutil

import pytest

from apache_md.store import owner
from apache_md.store.fs import DOMAINS, STAGING, Store, StoreError
from tests.harness._util import make_tmp_dir

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tests run as root in CI)")


@pytest.fixture
def open_dir():
    """A directory the other user can reach (pytest's tmp_path is under a 0700 one)."""
    d = make_tmp_dir("owner-")
    yield d
    shutil.rmtree(d)


def test_acting_as_the_owner_with_root_only_where_asked(open_dir):
    tmp_path = open_dir
    base = tmp_path / "md"
    base.mkdir(mode=0o755)
    os.chown(base, NOBODY, NOBODY)
    groups = os.getgroups()
    with owner.acting_as(base):
        assert (os.geteuid(), os.getegid(), os.getgroups()) == (NOBODY, NOBODY, [NOBODY])
        s = Store(base)
        s.init()
        p = s.write_bytes(STAGING, "a.test", "job.json", b"{}")
        with owner.as_root():
            assert os.geteuid() == 0 and os.getgroups() == groups
            (tmp_path / "root-only").write_text("x")
        assert os.geteuid() == NOBODY
    assert (os.geteuid(), os.getegid(), os.getgroups()) == (0, 0, groups)
    assert {os.lstat(f).st_uid for f in [base, *base.rglob("*")]} == {NOBODY}
    assert os.stat(p).st_uid == NOBODY and os.stat(tmp_path / "root-only").st_uid == 0


def test_a_store_root_owns_changes_nothing(tmp_path):
    assert owner.owner(tmp_path) is None and owner.owner(tmp_path / "missing") is None
    with owner.acting_as(tmp_path), owner.as_root():
        assert os.geteuid() == 0


def test_what_root_left_in_the_owners_store_is_named_with_the_chown(open_dir):
    """e.g. mod_md, back in charge for a while, made domains/<md>/ root:root 0700."""
    base = open_dir / "md"
    base.mkdir(mode=0o755)
    os.chown(base, NOBODY, NOBODY)
    with owner.acting_as(base):
        Store(base).init()
    live = base / "domains" / "a.test"
    live.mkdir(mode=0o700)
    (live / "md.json").write_text("{}")
    with owner.acting_as(base):
        s = Store(base)
        with pytest.raises(StoreError) as e:
            s.read_json(DOMAINS, "a.test", "md.json")
        try:
            os.listdir(live)
        except OSError as err:
            described = s.describe(err)
    fix = f"belongs to root:root, mode 0700, the store to nobody; chown -R nobody: {base})"
    assert str(e.value) == f"{live}/md.json: Permission denied ({live} {fix}"
    assert described == f"{live}: Permission denied (it {fix}"


def test_a_stranger_is_neither_root_nor_the_owner(open_dir):
    base = open_dir / "md"
    base.mkdir(mode=0o755)
    assert not owner.stranger(base)  # root
    os.chown(base, NOBODY, NOBODY)
    with owner.acting_as(base):
        assert not owner.stranger(base)  # the owner
    os.chown(base, 0, 0)
    os.seteuid(NOBODY)
    try:
        assert owner.stranger(base) and not owner.stranger(open_dir / "missing")
    finally:
        os.seteuid(0)
