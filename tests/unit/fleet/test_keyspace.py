from apache_md.fleet.keyspace import Keyspace


def test_keys_under_the_prefix():
    ks = Keyspace("/apache-md")
    assert ks.node("web1") == "/apache-md/nodes/web1" and ks.nodes() == "/apache-md/nodes/"
    assert ks.lock("a.example") == "/apache-md/locks/a.example"
    assert ks.md_set("a.example") == "/apache-md/md/a.example/set"
    assert ks.challenge("a.example", "tok") == "/apache-md/challenges/a.example/tok"
    assert ks.ack("tok", "web2") == "/apache-md/acks/tok/web2"
    assert ks.leaf(ks.ack("tok", "web2"), ks.acks("tok")) == "web2"
    # one MD's keys are never under another's: "a" is no prefix of "a.example"
    assert not ks.md_set("a.example").startswith(ks.md_set("a"))
