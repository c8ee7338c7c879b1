"""The overlay's splits with the values named by their boxes' indices are the positional
splits with each position read as its index (overlay_cuts skips that translation)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from twinwall.analysis import neutral_space as NS
from twinwall.netfilter.packetset import iv_normalize

_iv = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)).map(lambda t: (min(t), max(t))),
               min_size=1, max_size=3).map(iv_normalize)


@given(st.lists(_iv, min_size=2, max_size=8), st.randoms(use_true_random=False))
def test_named_interval_split_is_the_positional_one(values, rnd):
    if values.count(values[0]) == len(values):
        values = values + [((31, 40),)]
    names = rnd.sample(range(100), len(values))
    want = [(v, [names[m] for m in ms]) for v, ms in NS._split_intervals(values)]
    assert NS._split_intervals(values, names) == want


@given(st.lists(st.integers(1, 15), min_size=2, max_size=8), st.randoms(use_true_random=False))
def test_named_mask_split_is_the_positional_one(values, rnd):
    if values.count(values[0]) == len(values):
        values = values + [16]
    names = rnd.sample(range(100), len(values))
    want = [(v, [names[m] for m in ms]) for v, ms in NS._split_masks(values)]
    assert NS._split_masks(values, names) == want
