"""A renamed MD's store entry moves to its new name (apache/renames.py)."""
from apache_md.apache import includes, renames
from apache_md.core.model import Config, GlobalSettings, Location, ManagedDomain
from apache_md.store.fs import APACHE, DOMAINS, OCSP, STAGING, Store
from apache_md.store.locks import md_lock


def config(store, *mds):
    return Config(main_file="x.conf", server_root="/",
                  settings=GlobalSettings(store_dir=str(store.base)),
                  mds=[ManagedDomain(name=n, domains=d, location=Location("x.conf", 1))
                       for n, d in mds])


def test_the_entry_moves_with_its_staging_and_ocsp_and_the_old_include_follows(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    s.write_json(DOMAINS, "x.test", "md.json", {"name": "x.test", "domains": ["x.test", "a.test"]})
    s.write_bytes(DOMAINS, "x.test", "pubcert.pem", b"cert")
    s.write_bytes(STAGING, "x.test", "job.json", b"{}")
    s.write_bytes(OCSP, "x.test", "ocsp-" + "0" * 40 + ".json", b"{}")
    old_include = s.dir(APACHE) / includes.include_file("x.test")
    old_include.write_text(f'SSLCertificateFile "{s.fsdir(DOMAINS, "x.test")}/pubcert.pem"\n')
    cfg = config(s, ("a.test", ["a.test", "x.test"]))
    with md_lock(s, "x.test"):  # a renewal of it runs: not now
        assert renames.follow(s, cfg) == []
    assert renames.follow(s, cfg) == [("x.test", "a.test")]
    assert s.read_bytes(DOMAINS, "a.test", "pubcert.pem") == b"cert"
    assert s.exists(STAGING, "a.test", "job.json") and s.names(OCSP) == ["a.test"]
    assert s.names(DOMAINS) == ["a.test"] and s.names(STAGING) == ["a.test"]
    assert old_include.read_text() == \
        f'SSLCertificateFile "{s.fsdir(DOMAINS, "a.test")}/pubcert.pem"\n'
    assert renames.follow(s, cfg) == []  # done once


def test_nothing_moves_when_every_md_has_its_entry(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    s.write_json(DOMAINS, "x.test", "md.json", {"name": "x.test", "domains": ["x.test"]})
    s.write_json(DOMAINS, "old.test", "md.json", {"name": "old.test", "domains": ["x.test"]})
    assert renames.follow(s, config(s, ("x.test", ["x.test"]))) == []
    assert s.names(DOMAINS) == ["old.test", "x.test"]
