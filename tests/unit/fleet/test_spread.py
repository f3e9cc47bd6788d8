"""Rendezvous hashing spreads the MDs over the fleet's nodes without any agreement."""
from apache_md.fleet import spread

MDS = [f"md{i}.example" for i in range(3000)]


def test_each_md_has_one_preferred_node_and_the_shares_are_even():
    nodes = ["node1", "node2", "node3"]
    counts = {n: 0 for n in nodes}
    for md in MDS:
        counts[spread.preferred(md, nodes)] += 1
        assert spread.preferred(md, list(reversed(nodes))) == spread.preferred(md, nodes)
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_a_node_leaving_moves_only_its_own_mds():
    three, two = ["a", "b", "c"], ["a", "b"]
    for md in MDS:
        before = spread.preferred(md, three)
        if before != "c":
            assert spread.preferred(md, two) == before


def test_order_puts_the_nodes_own_mds_first_keeping_the_plans_order():
    nodes = ["a", "b"]
    got = spread.order(MDS[:50], "a", nodes, key=lambda m: m)
    own = [m for m in MDS[:50] if spread.preferred(m, nodes) == "a"]
    assert got[:len(own)] == own and sorted(got) == sorted(MDS[:50])
    assert got[len(own):] == [m for m in MDS[:50] if m not in own]
    assert spread.order(MDS[:5], "a", ["a"], key=lambda m: m) == MDS[:5]
