"""Interval sets and boxes against plain Python sets."""

import ipaddress
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from twinwall.netfilter import packetset
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import (
    box_and,
    box_meets,
    box_sub,
    covers,
    iv_and,
    iv_contains,
    iv_inside,
    iv_touching,
    iv_meets,
    cidr_count,
    cidr_count_over,
    iv_normalize,
    iv_or,
    iv_sub,
    iv_union,
    merge_boxes,
    merge_with_payload,
    prefix_interval,
    remote_sources,
    split,
    to_cidrs,
)

intervals = st.lists(
    st.tuples(st.integers(0, 80), st.integers(0, 80)).map(lambda t: (min(t), max(t))), max_size=6
).map(iv_normalize)


def points(a):
    return {x for lo, hi in a for x in range(lo, hi + 1)}


@given(intervals, intervals)
def test_interval_algebra_matches_sets(a, b):
    assert points(iv_and(a, b)) == points(a) & points(b)
    assert points(iv_sub(a, b)) == points(a) - points(b)
    assert points(iv_or(a, b)) == points(a) | points(b)
    for result in (iv_and(a, b), iv_sub(a, b), iv_or(a, b)):
        assert result == iv_normalize(result)  # stays sorted, disjoint, non-adjacent


@given(intervals, intervals)
def test_the_intervals_a_union_can_change_are_those_touching(a, b):
    near = iv_touching(a, b)
    assert set(near) <= set(a)
    rest = tuple(x for x in a if x not in near)
    # what is not near stays as it is in the union, apart from the rest of it
    assert iv_or(a, b) == iv_normalize(list(rest) + list(iv_or(near, b)))
    assert not any(points(((lo - 1, hi + 1),)) & points(b) for lo, hi in rest)


@given(intervals, st.integers(0, 3))
def test_a_few_intervals_join_a_long_set_as_the_general_union_would(a, offset):
    long = iv_normalize((x, x + offset) for x in range(0, 400, 5))  # (more than _BIG intervals)
    assert iv_or(long, a) == iv_or(a, long) == iv_normalize(list(long) + list(a))


@given(intervals, intervals)
def test_meets_is_a_non_empty_intersection(a, b):
    assert iv_meets(a, b) == bool(points(a) & points(b))
    assert iv_meets(b, a) == iv_meets(a, b)


@given(intervals, intervals)
def test_inside_is_an_empty_difference(a, b):
    assert iv_inside(a, b) == (points(a) <= points(b))
    assert iv_inside(a, iv_or(a, b)) and iv_inside(iv_and(a, b), b)
    long = iv_normalize((x, x) for x in range(0, 81, 2))  # (the other search: b the shorter one)
    assert iv_inside(a, long) == (points(a) <= points(long)) and iv_inside(long, a) == (points(long) <= points(a))


@given(intervals, st.integers(0, 80))
def test_contains(a, v):
    assert iv_contains(a, v) == (v in points(a))


# two-dimensional boxes over small domains, third dimension a mask
box2 = st.tuples(intervals, intervals, st.integers(0, 7))


def box_points(b):
    return {(x, y, m) for x in points(b[0]) for y in points(b[1]) for m in range(3) if b[2] >> m & 1}


def as_box(b):
    # pad to the evaluator's dimension layout: dims 0, 1 and 8 (IIF, a mask) carry the data
    full = ((0, 80),)
    return (b[0], b[1], full, full, full, full, full, full, b[2], 7, 31)


def from_box(b):
    return (b[0], b[1], b[8])


@given(box2, box2)
def test_box_meets_is_box_and_not_empty(a, b):
    constraint = ((0, b[0]), (1, b[1]), (8, b[2]))
    assert box_meets(as_box(a), constraint) == (box_and(as_box(a), constraint) is not None)
    assert box_meets(as_box(a), constraint) == bool(box_points(a) & box_points(b))


constraint = st.lists(
    st.sampled_from([0, 1, 8]).flatmap(lambda d: st.tuples(st.just(d), st.integers(0, 7) if d == 8 else intervals)),
    max_size=3,
    unique_by=lambda t: t[0],
).map(tuple)


@settings(max_examples=300)
@given(box2, st.lists(constraint, min_size=1, max_size=3))
def test_split_partitions_the_box(b, alternatives):
    box = as_box(b)
    matched, rest = split(box, alternatives)

    def in_constraint(p, c):
        x, y, m = p
        vals = {0: x, 1: y}
        for d, v in c:
            if d == 8:
                if not v >> m & 1:
                    return False
            elif vals[d] not in points(v):
                return False
        return True

    want_matched = {p for p in box_points(b) if any(in_constraint(p, c) for c in alternatives)}
    got_matched = set()
    for m in matched:
        got_matched |= box_points(from_box(m))
    got_rest = set()
    for r in rest:
        got_rest |= box_points(from_box(r))
    assert got_matched == want_matched
    assert got_rest == box_points(b) - want_matched
    # the pieces are disjoint
    assert sum(len(box_points(from_box(x))) for x in matched + rest) == len(box_points(b))


@settings(max_examples=300)
@given(box2, st.sampled_from([0, 1, 8]).flatmap(lambda d: st.tuples(st.just(d), st.integers(0, 7) if d == 8 else intervals)))
def test_a_one_dimension_split_is_the_general_one(b, match):
    """One constraint on one dimension takes a shortcut: the boxes of box_and and box_sub."""
    box = as_box(b)
    general = box_and(box, (match,))
    want = ([], [box]) if general is None else ([general], [] if general is box else box_sub(box, (match,)))
    assert split(box, [(match,)]) == want


@given(st.lists(box2, min_size=1, max_size=5))
def test_merge_keeps_the_union(bs):
    boxes = [as_box(b) for b in bs]
    before = set().union(*(box_points(b) for b in bs))
    after = set().union(*(box_points(from_box(m)) for m in merge_boxes(boxes)))
    assert before == after


@given(box2, box2, st.booleans())
def test_merging_a_pair_is_the_general_merge(a, b, twin):
    """Two entries take a shortcut (compared dimension by dimension): it gives what the general
    pass gives, boxes, payloads and order."""
    import twinwall.netfilter.packetset as ps

    if twin:
        b = (a[0], b[1], a[2])  # (one dimension apart, or equal)
    entries = [(as_box(a), ["a"]), (as_box(b), ["b"])]
    for kw in ({}, {"combine": lambda x, y: x + y}, {"combine_all": lambda ps_: [p for q in ps_ for p in q]}):
        for rounds in (1, 2, 6):
            general = ps._merge_groups(entries, kw.get("combine"), rounds, ps.MASK_DIMS, kw.get("combine_all"))
            assert merge_with_payload(entries, rounds=rounds, **kw) == general


_pool_iv = st.sampled_from([((0, 3),), ((4, 9),), ((0, 1), (5, 6)), ((10, 12),), ((2, 2),)])
# masks: -1 and -2 hash alike (CPython), a collision the general pass leaves apart
_pool_mask = st.sampled_from([1, 2, 4, 3, -1, -2])


@settings(max_examples=400)
@given(st.lists(st.tuples(_pool_iv, _pool_iv, _pool_mask), min_size=2, max_size=14), st.integers(1, 6),
       st.sampled_from([0, 1, 2]), st.booleans())
def test_merging_by_varying_dimensions_is_the_general_merge(bs, rounds, payloads, same_objects):
    """Distinct boxes are hashed and grouped by the dimensions where they differ only
    (_merge_varying): boxes, payloads and order are what the general pass gives, with equal
    boxes, hash collisions and dimensions whose values are equal but not the same object."""
    import twinwall.netfilter.packetset as ps

    entries = []
    for i, b in enumerate(bs):
        box = as_box(b)
        if not same_objects:  # equal values, distinct objects (the count-by-value test)
            box = tuple(tuple(list(v)) if isinstance(v, tuple) else v for v in box)
        entries.append((box, [i]))
    kw = ({}, {"combine": lambda x, y: x + y}, {"combine_all": lambda ps_: [p for q in ps_ for p in q]})[payloads]
    general = ps._merge_groups(entries, kw.get("combine"), rounds, ps.MASK_DIMS, kw.get("combine_all"), by_varying=False)
    assert ps._merge_groups(entries, kw.get("combine"), rounds, ps.MASK_DIMS, kw.get("combine_all")) == general
    assert merge_with_payload(entries, rounds=rounds, **kw) == general


def test_covers_on_two_dims():
    target = as_box((((0, 10),), ((0, 10),), 1))
    half = as_box((((0, 5),), ((0, 10),), 1))
    other = as_box((((6, 10),), ((0, 10),), 1))
    assert not covers([half], target, (0, 1))
    assert covers([half, other], target, (0, 1))


small = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)).map(lambda t: (min(t), max(t))), min_size=1, max_size=4).map(iv_normalize)


@given(small, small, st.lists(small, min_size=1, max_size=3), st.booleans())
def test_covers_is_the_union_holding_every_point(t0, t1, firsts, shared):
    """covers() against the points; ``shared``: every box has the same object on dimension 1
    (the quick refusal's case)."""
    second = firsts[0]
    boxes = [as_box((f, second if shared else f, 1)) for f in firsts]
    target = as_box((t0, t1, 1))
    held = {(x, y) for b in boxes for x in points(b[0]) for y in points(b[1])}
    assert covers(boxes, target, (0, 1)) == all((x, y) in held for x in points(t0) for y in points(t1))


def test_addresses_and_cidrs():
    assert prefix_interval("192.0.2.0/24", "ipv4") == (0xC0000200, 0xC00002FF)
    assert prefix_interval("192.0.2.0/255.255.255.0", "ipv4") == (0xC0000200, 0xC00002FF)
    assert to_cidrs((prefix_interval("2001:db8::/32", "ipv6"),), "ipv6") == ["2001:db8::/32"]
    remote = remote_sources("ipv4")
    assert not iv_contains(remote, prefix_interval("127.0.0.1", "ipv4")[0])
    assert iv_contains(remote, prefix_interval("198.51.100.7", "ipv4")[0])
    assert not iv_contains(remote_sources("ipv6"), prefix_interval("::1", "ipv6")[0])


def test_interface_universe_wildcards():
    u = InterfaceUniverse(["eth0", "lo", "wlan0"], ["eth+", "et+"])
    # eth+ covers eth0 and the "other eth*" class, not wlan0
    labels = u.label_list(u.mask("eth+"))
    assert "eth0" in labels and "eth+" in labels and "wlan0" not in labels
    # et+ is wider than eth+
    assert u.mask("eth+") & ~u.mask("et+") == 0
    # '+' only at the end is a wildcard: an exact name never matches a different name
    assert u.mask("eth0") == 1 << u.exact.index("eth0")
    assert u.mask("+") == u.all_mask
    assert u.non_loopback() & u.mask("lo") == 0


def test_cidr_count_over_answers_as_the_full_count_would() -> None:
    rng = Random(7)
    for _ in range(200):
        pieces = []
        for _ in range(rng.randint(0, 12)):
            lo = rng.randrange(0, 1 << 32)
            pieces.append((lo, min(lo + rng.randrange(0, 1 << rng.randint(0, 24)), (1 << 32) - 1)))
        a = iv_normalize(pieces)
        n = cidr_count(a)
        assert n == len(to_cidrs(a, "ipv4"))
        for bound in (0, n - 1, n, n + 1, n // 2):
            assert cidr_count_over(a, bound) == (n > bound), (a, bound)


def _general_or(a, b):
    """The union the general path makes (sorting every interval again), as reference."""
    return iv_normalize(list(a) + list(b))


def _random_set(rng, n, top=1 << 20, width=40):
    pieces = []
    for _ in range(n):
        lo = rng.randrange(0, top)
        pieces.append((lo, lo + rng.randrange(0, width)))
    return iv_normalize(pieces)


def test_a_short_set_spliced_into_a_long_one_is_the_general_union() -> None:
    # _spliced_or (more than _FEW intervals, fewer than an eighth of the long set's)
    rng = Random(11)
    for _ in range(300):
        long = _random_set(rng, rng.randint(70, 400), top=rng.choice((1 << 12, 1 << 20)))
        short = _random_set(rng, rng.randint(17, max(17, len(long) // 9)), top=rng.choice((1 << 12, 1 << 20)),
                            width=rng.choice((2, 40, 400)))
        got = iv_or(long, short)
        assert got == iv_or(short, long) == _general_or(long, short), (long, short)
        assert got == iv_normalize(got)


def test_normalize_keeps_the_pairs_it_does_not_change() -> None:
    rng = Random(5)
    for _ in range(200):
        pieces = [tuple(sorted((rng.randrange(0, 300), rng.randrange(0, 300)))) for _ in range(rng.randint(0, 30))]
        for form in (pieces, [[lo, hi] for lo, hi in pieces]):  # (lists are never kept)
            out = iv_normalize(form)
            assert points(out) == {x for lo, hi in pieces for x in range(lo, hi + 1)}
            assert all(type(p) is tuple for p in out)
            assert all(hi + 1 < lo for (_, hi), (lo, _) in zip(out, out[1:]))
    single = (5, 9)
    assert iv_normalize([single, (1, 2)])[1] is single


def test_a_difference_and_an_intersection_rejoin_into_their_set() -> None:
    # the remembered provenance (_made_of): a cut's two sides join back into the very set cut,
    # and a - (a - b) is a & b; every answer the same as the general path's
    rng = Random(3)
    for _ in range(100):
        packetset._memo.clear()  # (a full memo starts again: what it remembers goes)
        top = 1 << 16
        whole = ((0, top - 1),)
        blocked = _random_set(rng, rng.randint(70, 300), top=top, width=rng.choice((1, 5)))
        everyone_but = iv_sub(whole, blocked)
        assert everyone_but == _sub_general(whole, blocked)
        back = iv_sub(whole, everyone_but)
        assert back == iv_normalize(blocked) == _sub_general(whole, everyone_but)
        cut = _random_set(rng, rng.randint(1, 90), top=top, width=rng.choice((3, 3000)))
        inside, outside = iv_and(everyone_but, cut), iv_sub(everyone_but, cut)
        joined = iv_or(outside, inside)
        assert joined == iv_or(inside, outside) == _general_or(inside, outside) == everyone_but
        if inside and outside and len(everyone_but) > 64:
            assert joined is everyone_but  # (rejoined, not merged)
            assert iv_sub(everyone_but, outside) == inside
        # an unrelated pair of the same sizes is not taken for a cut
        other = iv_sub(whole, iv_or(blocked, ((0, 2),)))
        assert iv_or(iv_sub(other, cut), inside) == _general_or(iv_sub(other, cut), inside)
        assert iv_sub(other, iv_sub(whole, blocked)) == _sub_general(other, everyone_but)


def _sub_general(a, b):
    pts = points(a) - points(b)
    return iv_normalize((x, x) for x in pts)


def test_a_union_of_many_sets_is_the_general_union() -> None:
    rng = Random(9)
    for _ in range(100):
        sets = [_random_set(rng, rng.randint(0, rng.choice((5, 200))), top=1 << 14) for _ in range(rng.randint(1, 5))]
        assert iv_union(sets) == iv_normalize(p for s in sets for p in s)
    assert iv_union([]) == ()


def test_single_addresses_are_spelled_as_the_general_path_would() -> None:
    rng = Random(4)
    for family, bits in (("ipv4", 32), ("ipv6", 128)):
        singles = iv_normalize((v, v) for v in (rng.randrange(0, 1 << bits) for _ in range(200)))
        mixed = iv_normalize(list(singles) + [(v, v + rng.randrange(1, 9)) for v in (rng.randrange(0, 1 << bits) for _ in range(50))])
        # (IPv6 addresses with 80 leading zero bits are spelled by ipaddress: ::ffff:192.0.2.1)
        low = iv_normalize(list(singles) + [(v, v) for v in ((5, 0xFFFFC0000201, 1 << 40) if bits == 128 else (5,))])
        for a in (singles, mixed, low):
            want = [str(net) for lo, hi in a for net in ipaddress.summarize_address_range(
                ipaddress.ip_address(lo) if bits == 32 else ipaddress.IPv6Address(lo),
                ipaddress.ip_address(hi) if bits == 32 else ipaddress.IPv6Address(hi))]
            assert to_cidrs(a, family) == want
            assert cidr_count(a) == len(want) and packetset._cidr_count(a) == len(want)


def test_remembered_by_identity_answers_as_the_function_does() -> None:
    calls = []

    def count(a, k):
        calls.append(a)
        return len(a) * k

    remembered = packetset.remembered_by_identity(count, 4)
    short, long = ((1, 2),), tuple((i * 3, i * 3 + 1) for i in range(100))
    copy = tuple(list(long))
    assert remembered(short, 2) == remembered(((1, 2),), 2) == 2 and len(calls) == 1  # (by value)
    assert remembered(long, 2) == remembered(long, 2) == 200 and len(calls) == 2  # (by identity)
    assert remembered(copy, 2) == 200 and len(calls) == 3  # (an equal copy: worked out again)
    assert remembered(long, 3) == 300
    for i in range(70):  # (a full memo starts again)
        assert remembered(tuple((j, j) for j in range(0, 200 + 2 * i, 2)), 1) == 100 + i
    assert remembered(long, 2) == 200


def test_a_few_intervals_minus_many_is_the_general_difference() -> None:
    # _sub_many (a set with more than 8 times the intervals of the one it is cut from)
    rng = Random(13)
    for _ in range(300):
        many = _random_set(rng, rng.randint(9, 200), top=1 << 12, width=rng.choice((1, 4, 30)))
        few = _random_set(rng, rng.randint(1, max(1, len(many) // 9)), top=1 << 12, width=rng.choice((50, 800, 4096)))
        if len(few) * 8 >= len(many):
            continue
        got = iv_sub(few, many)
        assert got == _sub_general(few, many), (few, many)
        assert got == iv_normalize(got)


def test_cidr_counts_of_long_sets_counted_chunk_by_chunk_are_the_blocks_to_cidrs_spells():
    """_cidr_count of sets longer than the chunk it counts at a time: exact unbounded, and over a
    bound exactly when the exact count is (the same count where it is not)."""
    import random

    from twinwall.netfilter import packetset

    rng = random.Random(12)
    for _ in range(30):
        family = rng.choice(("ipv4", "ipv6"))
        bits = 32 if family == "ipv4" else 128
        ivs = []
        for _ in range(rng.choice((packetset._COUNTED - 1, packetset._COUNTED + 1, 3 * packetset._COUNTED))):
            lo = rng.getrandbits(bits - 1)
            ivs.append((lo, lo + rng.choice((0, 0, 0, 1, 2, 7, 255, 1 << 12))))
        a = packetset.iv_normalize(ivs)
        exact = len(packetset.to_cidrs(a, family))
        assert packetset.cidr_count(a) == packetset._cidr_count(a) == exact
        for bound in (0, 4, packetset._COUNTED, exact - 1, exact, exact + 1):
            assert packetset.cidr_count_over(a, bound) == (exact > bound)
            if exact <= bound:
                assert packetset._cidr_count(a, bound) == exact


one_interval = st.tuples(st.integers(0, 80), st.integers(0, 80)).map(lambda t: ((min(t), max(t)),))


def _split_one_general(box, match):
    """_split_one as it was before _iv_cut: iv_and, then iv_sub where the box is cut."""
    dim, value = match
    cur = box[dim]
    inside = iv_and(cur, value)
    if not inside:
        return [], [box]
    if inside is cur:
        return [box], []
    outside = iv_sub(cur, value)
    head, tail = box[:dim], box[dim + 1:]
    return [head + (inside,) + tail], [head + (outside,) + tail] if outside else []


@given(intervals, one_interval, st.booleans())
def test_one_cut_gives_the_intersection_and_difference_objects(a, b, same):
    # the very objects iv_and and iv_sub give (the walk tests identity: a part that is the
    # whole set goes on as the same box)
    if same:
        b = a if len(a) == 1 else b
    inside, outside = packetset._iv_cut(a, b)
    expect_in = iv_and(a, b)
    assert inside == expect_in and (inside is a) == (expect_in is a)
    if inside == b and inside is not a:
        assert inside is b  # (the rule's own value, not a copy of it)
    if inside and inside is not a:
        assert outside == iv_sub(a, b)


@given(intervals, one_interval, st.sampled_from((packetset.SRC, packetset.DPORT)))
def test_split_by_one_interval_is_the_general_split(a, b, dim):
    box = [packetset.PORT_ALL] * 5 + [0] * 7
    box[dim] = a
    box = tuple(box)
    got = packetset._split_one(box, (dim, b))
    expect = _split_one_general(box, (dim, b))
    assert got == expect
    # the box itself where the general split hands it on unchanged
    assert [x is box for part in got for x in part] == [x is box for part in expect for x in part]


def _split_general(box, alternatives):
    """split() as it was for one constraint: box_and, then box_sub where the box is cut."""
    matched, rest = [], []
    m = box_and(box, alternatives[0])
    if m is None:
        return [], [box]
    matched.append(m)
    if m is not box:
        rest.extend(box_sub(box, alternatives[0]))
    return matched, rest


@given(intervals, intervals, st.lists(st.tuples(st.sampled_from((packetset.SRC, packetset.DPORT, packetset.STATE)),
                                               st.one_of(intervals, one_interval)), max_size=4))
def test_split_by_one_constraint_of_several_dimensions_is_the_general_split(src, dport, constraint):
    box = [packetset.PORT_ALL] * 12
    box[packetset.SRC], box[packetset.DPORT], box[packetset.STATE] = src, dport, 0b10110
    box = tuple(box)
    # (a state constraint is a mask: a few bits of the interval drawn)
    constraint = tuple((d, (sum(1 << (lo % 5) for lo, _ in v) if v else 0) if d == packetset.STATE else v)
                       for d, v in constraint)
    got = split(box, (constraint,))
    expect = _split_general(box, (constraint,))
    assert got == expect
    assert [x is box for part in got for x in part] == [x is box for part in expect for x in part]
