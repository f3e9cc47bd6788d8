"""mod_md's rules for an MD found in the store under an earlier name (test_702_030-033)."""
from apache_md.core.renames import find


def test_first_name_dropped_names_swapped_or_added_keep_the_entry():
    stored = {"x.test": ["x.test", "a.test", "b.test"]}
    assert find([("a.test", ["a.test", "b.test"])], stored) == [("x.test", "a.test")]  # 702_030
    # dropped and added at once: the entry sharing the most names (702_031)
    assert find([("a.test", ["a.test", "b.test", "c.test"])], stored) == [("x.test", "a.test")]
    # ServerName and ServerAlias swapped: the MD is named for the other name (702_033)
    assert find([("a.test", ["a.test", "x.test"])], {"x.test": ["x.test", "a.test"]}) == \
        [("x.test", "a.test")]


def test_entries_of_the_configuration_and_unrelated_ones_stay():
    stored = {"x.test": ["x.test"], "y.test": ["y.test"], "broken.test": None}
    assert find([("x.test", ["x.test"]), ("z.test", ["z.test"])], stored) == []
    # an entry a configured MD claims by name is not taken by another
    assert find([("x.test", ["x.test"]), ("new.test", ["x.test", "new.test"])],
                {"x.test": ["x.test"]}) == []
    assert find([("b.test", ["broken.test"])], stored) == []


def test_an_entry_with_all_names_wins_over_one_with_more_in_common_and_is_taken_once():
    stored = {"m.test": ["m.test", "a.test", "b.test", "c.test"], "n.test": ["A.test", "n.test"]}
    assert find([("a.test", ["a.test"])], stored) == [("m.test", "a.test")]
    assert find([("a.test", ["a.test", "b.test", "z.test"]), ("n2.test", ["n.test", "a.test"])],
                stored) == [("m.test", "a.test"), ("n.test", "n2.test")]
    assert find([("p.test", ["a.test"]), ("q.test", ["a.test"])],
                {"o.test": ["a.test"]}) == [("o.test", "p.test")]
