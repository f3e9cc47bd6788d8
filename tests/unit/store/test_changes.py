"""Changes others make to the MDs' files are noticed by stat() alone (store/changes.py)."""
import os

from apache_md.core.model import Config, GlobalSettings, Location, ManagedDomain
from apache_md.store.changes import Changes
from apache_md.store.fs import DOMAINS, STAGING, Store


def test_changes_to_live_and_staged_files_are_noticed(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    md = ManagedDomain(name="a.test", domains=["a.test"], location=Location("x.conf", 1))
    config = Config(main_file="x.conf", server_root="/",
                    settings=GlobalSettings(store_dir=str(s.base)), mds=[md])
    p = s.write_bytes(DOMAINS, "a.test", "pubcert.pem", b"one")
    c = Changes()
    c.mark(s, config)
    assert c.changed(s, config) is None
    st = os.stat(p)
    with open(p, "r+b") as f:  # in place, same size, old mtime: as `cp -p` leaves it
        f.write(b"two")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert c.changed(s, config) == "a.test"
    assert c.changed(s, config) is None  # marked
    c.mark(s, config)  # the same configuration: what the last look saw stands
    s.write_bytes(STAGING, "a.test", "job.json", b"{}")  # a new directory
    assert c.changed(s, config) == "a.test"
    s.write_bytes(DOMAINS, "a.test", "other.txt", b"x")  # not a file planning reads
    assert c.changed(s, config) == "a.test"  # but its directory changed
    assert c.changed(s, config) is None
