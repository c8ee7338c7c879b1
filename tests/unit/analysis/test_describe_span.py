"""describe._span_of (one pass) is the stable sort by first rule number it replaced: the first
item of the lowest number, the last of the highest, ties included."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from twinwall.analysis.diff.describe import _span_of
from twinwall.analysis.labels import RuleRun
from twinwall.netfilter.ruleset import Decision


def _item(spec):
    number, run, tag = spec
    if run:
        return RuleRun("filter", "C", "src", "ACCEPT", number, texts=tuple(f"-A C {tag} {i}" for i in range(run)))
    return Decision("filter", "C", number, f"-A C {tag}", None, "src", "ACCEPT")


@given(st.lists(st.tuples(st.integers(1, 6), st.sampled_from([0, 0, 2, 3]), st.integers(0, 99)), min_size=1, max_size=8))
def test_span_is_the_sorted_ends(specs):
    members = [_item(s) for s in specs]
    ends = [(m.first, m.last) if type(m) is RuleRun else (m, m) for m in members]
    ends.sort(key=lambda e: e[0].rule_number or 0)
    assert _span_of(members) == (ends[0][0], ends[-1][1])
