"""MDCluster*: values, ranges and what they need of each other."""
from __future__ import annotations


import pytest

from apache_md.apache.config import load_text
from apache_md.core.model import Location


def config(tmp_path, text: str):
    return load_text(text, path=str(tmp_path / "fleet.conf"), server_root=str(tmp_path))


def key_file(tmp_path, mode=0o600):
    from apache_md.fleet import seal
    p = tmp_path / "fleet.key"
    if not p.exists():
        seal.write_new_key(str(p))
    p.chmod(mode)
    return p


def test_without_mdclusteretcd_nothing_is_clustered(tmp_path):
    c = config(tmp_path, "MDStoreDir md\n")
    assert not c.settings.clustered and c.errors == [] and c.warnings == []
    c = config(tmp_path, "MDClusterNode web1\nMDClusterLeaseTTL 5s\n")
    assert not c.settings.clustered and c.errors == []
    assert [str(w) for w in c.warnings] == [
        f"{tmp_path}/fleet.conf:1: MDClusterNode has no effect without MDClusterEtcd",
        f"{tmp_path}/fleet.conf:2: MDClusterLeaseTTL has no effect without MDClusterEtcd"]


def test_all_settings(tmp_path):
    key_file(tmp_path)
    for f in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / f).write_text("x")
    c = config(tmp_path, "MDClusterEtcd https://10.0.0.1:2379 10.0.0.2 https://[::1]:2380/\n"
                         "MDClusterNode web-1.a\nMDClusterPrefix /sites/md/\n"
                         "MDClusterKeyFile fleet.key\nMDClusterEtcdCA ca.pem\n"
                         "MDClusterEtcdCert client.pem\nMDClusterEtcdKey client.key\n"
                         "MDClusterLeaseTTL 1mi\n")
    s = c.settings
    assert c.errors == [] and c.warnings == []
    assert s.cluster_etcd == ["https://10.0.0.1:2379", "http://10.0.0.2:2379", "https://[::1]:2380"]
    assert (s.cluster_node, s.cluster_prefix, s.cluster_lease_ttl) == ("web-1.a", "/sites/md", 60)
    assert s.cluster_key_file == str(tmp_path / "fleet.key")
    assert s.cluster_etcd_ca == str(tmp_path / "ca.pem")


def test_defaults(tmp_path):
    key_file(tmp_path)
    s = config(tmp_path, "MDClusterEtcd 127.0.0.1:2379\nMDClusterKeyFile fleet.key\n").settings
    assert s.clustered and s.cluster_prefix == "/apache-md" and s.cluster_lease_ttl == 15
    assert s.cluster_node and s.cluster_node == s.cluster_node.strip("-.")


@pytest.mark.parametrize("line, message", [
    ("MDClusterEtcd", "MDClusterEtcd needs at least one endpoint"),
    ("MDClusterEtcd ftp://x:1", "MDClusterEtcd: 'ftp://x:1' is not an etcd endpoint"),
    ("MDClusterEtcd 127.0.0.1:99999", "MDClusterEtcd: port 99999 of '127.0.0.1:99999' is out of range"),
    ("MDClusterEtcd http://a/b", "is not an etcd endpoint"),
    ("MDClusterNode -x", "MDClusterNode '-x': a node name is"),
    ("MDClusterNode a/b", "MDClusterNode 'a/b': a node name is"),
    ("MDClusterPrefix apache-md", "MDClusterPrefix 'apache-md' must be a key path"),
    ("MDClusterPrefix /a//b", "must be a key path"),
    ("MDClusterLeaseTTL 1s", "MDClusterLeaseTTL 1s: must be between 2s and 1h"),
    ("MDClusterLeaseTTL 2h", "must be between 2s and 1h"),
    ("MDClusterLeaseTTL x", "unrecognized duration format"),
])
def test_bad_values_name_file_and_line(tmp_path, line, message):
    c = config(tmp_path, f"# a fleet\n{line}\n")
    assert len(c.errors) == 1, c.errors
    assert message in c.errors[0].message
    assert c.errors[0].location == Location(str(tmp_path / "fleet.conf"), 2)


def test_missing_pieces(tmp_path):
    c = config(tmp_path, "MDClusterEtcd 127.0.0.1:2379\n")
    assert [e.message for e in c.errors] == [
        "MDClusterEtcd needs MDClusterKeyFile, the file with the fleet key that seals private "
        "keys in etcd (`apache-md cluster keygen <file>` writes one)"]
    c = config(tmp_path, "MDClusterEtcd 127.0.0.1:2379\nMDClusterKeyFile fleet.key\n")
    assert "does not exist; `apache-md cluster keygen" in c.errors[0].message
    assert c.errors[0].location.line == 2
    key_file(tmp_path, 0o644)
    c = config(tmp_path, "MDClusterEtcd 127.0.0.1:2379\nMDClusterKeyFile fleet.key\n")
    assert "others may access it (mode 0644); chmod 600" in c.errors[0].message
    key_file(tmp_path, 0o600)
    c = config(tmp_path, "MDClusterEtcd 127.0.0.1:2379\nMDClusterKeyFile fleet.key\n"
                         "MDClusterEtcdCert client.pem\n")
    assert [e.message for e in c.errors] == [
        "MDClusterEtcdCert needs MDClusterEtcdKey too (a client certificate and its key)",
        f"MDClusterEtcdCert: file not found: {tmp_path}/client.pem"]
    (tmp_path / "ca.pem").write_text("x")
    c = config(tmp_path, "MDClusterEtcd 127.0.0.1:2379\nMDClusterKeyFile fleet.key\n"
                         "MDClusterEtcdCA ca.pem\n")
    assert c.errors == [] and "only used with https:// endpoints" in c.warnings[0].message
