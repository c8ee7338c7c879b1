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


_mask = st.integers(1, 15)


@given(st.lists(st.tuples(_iv, _iv, _mask), min_size=1, max_size=40), st.integers(1, 4))
def test_the_overlays_shares_sorted_by_group_are_its_regions_in_order(parts, n):
    """overlay_share's n shares, their regions sorted by group (stably), are overlay_cuts's
    regions in its order; none is in two shares."""
    from twinwall.netfilter.packetset import DPORT, IIF, SRC, make_box

    boxes = []
    for src, dport, iif in parts:
        box = list(make_box(((0, 2**32 - 1),), ((0, 2**32 - 1),), 1, 1))
        box[SRC], box[DPORT], box[IIF] = src, dport, iif
        boxes.append(tuple(box))
    whole = list(NS.overlay_cuts(boxes))
    shares = [list(NS.overlay_share(boxes, k, n)) for k in range(n)]
    merged = sorted((r for share in shares for r in share), key=lambda r: r[0])
    assert [(idx, cuts) for _, idx, cuts in merged] == whole
    groups = [{g for g, _, _ in share} for share in shares]
    assert all(not (groups[i] & groups[j]) for i in range(n) for j in range(i + 1, n))
