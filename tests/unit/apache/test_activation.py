"""apache/activation: the move of a staged set into domains/ and back."""
from __future__ import annotations

from apache_md.apache.activation import replace_domain, replace_domain_back
from apache_md.store.fs import DOMAINS, Store


def test_replace_domain_archives(tmp_path):
    s = Store(tmp_path / "md")
    s.init()
    s.write_bytes(DOMAINS, "a.test", "pubcert.pem", b"old")
    s.write_bytes("tmp", "a.test", "pubcert.pem", b"new")
    archived = replace_domain(s, "a.test")
    assert archived.endswith("archive/a.test.1")
    assert s.read_bytes(DOMAINS, "a.test", "pubcert.pem") == b"new"
    s.write_bytes("tmp", "a.test", "pubcert.pem", b"newer")
    assert replace_domain(s, "a.test").endswith("a.test.2")
    rejected = replace_domain_back(s, "a.test", archived.replace(".1", ".2"))
    assert rejected.endswith("archive/a.test.rejected.1")
    assert s.read_bytes(DOMAINS, "a.test", "pubcert.pem") == b"new"
