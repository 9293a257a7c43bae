"""nvparser._gotypes: Go's %v renderings of each field type, read back."""
import re

from hypothesis import example, given
from hypothesis import strategies as st

from nvparser._gotypes import is_go_float, is_go_int, split_list, split_map
from nvparser.schema import ITEM_START


def test_numbers_only_as_go_prints_them():
    assert all(is_go_int(t) for t in ("0", "443", "-1", "18446744073709551615"))
    assert not any(is_go_int(t) for t in ("4_43", " 443", "+443", "\u0664\u0664\u0663", "0x1bb", "", "-"))
    assert all(is_go_float(t) for t in ("10", "7.5", "-0.5", "1e+06", "1.5e-07"))
    assert not any(is_go_float(t) for t in ("1_0", " 7.5", "nan", "inf", "5.", ".5", "1e6", "\u0667.5", ""))


def test_go_list_and_map_renderings():
    assert split_list("high_vuls", "CVE-1 CVE-2") == ["CVE-1", "CVE-2"]
    assert split_list("servers", "") == [""]  # Go prints [""] as []
    assert split_list("items", "D.5.4 WARN - Ensure a, b D.5.12 WARN - Ensure c custom/chk1 HIGH - x y") == [
        "D.5.4 WARN - Ensure a, b", "D.5.12 WARN - Ensure c", "custom/chk1 HIGH - x y"]
    assert split_map(":admin") == {"": "admin"}
    assert split_map(":reader dev:admin") == {"": "reader", "dev": "admin"}
    assert split_map("") is None  # a nil map is JSON null


# The rule as the reference states it (§3.4: an item starts "<check> <LEVEL> - "), as a
# regex lookahead at every space: the oracle for split_items' finds.
ITEM_ORACLE = re.compile(r" (?=(?:[^ /]+/)?[^ /]+ (?:PASS|INFO|WARN|MANUAL|HIGH|NOTE|ERROR) - )")
ITEM_WORDS = ["D.5.4", "custom/chk1", "a/b/c", "/x", "x/", "/", "WARN", "HIGH", "PASS", "MANUAL",
              "ERROR", "NOTE", "INFO", "-", "--", "Ensure", "é", "", "WARN-", "a,b"]
# Whole "<check> <LEVEL> -" phrases, well-formed or not, so that starts are common.
ITEM_STARTS = ["%s %s -" % (check, level) for check in ("D.5.4", "g/t", "a/b/c", "/x", "x/", "", "-")
               for level in ("WARN", "HIGH", "NOTE", "LOW")]


@given(st.lists(st.sampled_from(ITEM_WORDS) | st.sampled_from(ITEM_STARTS), max_size=30))
@example(["x", "WARN", "-", "WARN", "-", "y"])  # a level mark right after another
@example(["", "WARN", "-", "a"])  # no check before the level
@example(["WARN", "-", "a", "bc"])  # nothing before the level
def test_split_items_cuts_where_the_reference_rule_does(words):
    inner = " ".join(words)
    assert split_list("items", inner) == ITEM_ORACLE.split(inner)
    assert ITEM_START.split(inner) == ITEM_ORACLE.split(inner)  # Splunk's search-time split
