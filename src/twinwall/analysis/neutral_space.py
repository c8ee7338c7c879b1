"""The space both families share, where their regions are compared.

Protocol 1 (icmp) and 58 (ipv6-icmp) are one protocol there, and ICMP types are mapped to
canonical values (echo-request is echo-request in both; an ICMPv6 type IPv4 has no twin for gets
a value of its own). ``overlay`` cuts overlapping labelled boxes into disjoint regions with the
union of their labels; ``canonical_union`` gives the fewest, widest boxes of a union.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Dict, FrozenSet, Hashable, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union, cast

from twinwall.netfilter.packetset import (
    Box,
    IntervalSet,
    DPORT,
    DST,
    GID,
    HOPLIMIT,
    ICMP,
    IIF,
    MASK_DIMS,
    NDIMS,
    OIF,
    PROTO,
    SPORT,
    SRC,
    STATE,
    UID,
    iv_contains,
    iv_normalize,
    iv_or,
    iv_sub,
    merge_boxes,
)
from twinwall.model import IPV4, IPV6

V = TypeVar("V", bound=Hashable)  # a value being cut (an interval set, a bit mask)
C = TypeVar("C")  # its cut, as the caller's cutter makes it

PTB = 256  # canonical "fragmentation needed / packet too big"
V6_ONLY_BASE = 1000  # canonical value of an ICMPv6 type IPv4 has no twin for: 1000 + type
# ICMPv6 type -> the IPv4 type it twins
ICMP6_TO_4 = {128: 8, 129: 0, 1: 3, 3: 11, 4: 12, 2: PTB}
TWINNED = iv_normalize((t, t) for t in ICMP6_TO_4.values())

ICMP4_NAMES = {
    0: "echo-reply", 3: "destination-unreachable", 4: "source-quench", 5: "redirect",
    8: "echo-request", 9: "router-advertisement", 10: "router-solicitation", 11: "time-exceeded",
    12: "parameter-problem", 13: "timestamp-request", 14: "timestamp-reply", 15: "info-request",
    16: "info-reply", 17: "address-mask-request", 18: "address-mask-reply",
    PTB: "fragmentation-needed/packet-too-big",
}
ICMP6_NAMES = {
    1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded", 4: "parameter-problem",
    128: "echo-request", 129: "echo-reply", 130: "mld-listener-query", 131: "mld-listener-report",
    132: "mld-listener-done", 133: "router-solicitation", 134: "router-advertisement",
    135: "neighbour-solicitation", 136: "neighbour-advertisement", 137: "redirect",
    138: "router-renumbering", 139: "node-information-query", 140: "node-information-response",
    141: "inverse-nd-solicitation", 142: "inverse-nd-advertisement", 143: "mld2-listener-report",
}
NDP_TYPES = frozenset((133, 134, 135, 136, 137))
MLD_TYPES = frozenset((130, 131, 132, 143))
# the same, as canonical ICMP values (see canonical_icmp)
NDP_CANONICAL = iv_normalize((V6_ONLY_BASE + t, V6_ONLY_BASE + t) for t in NDP_TYPES)
MLD_CANONICAL = iv_normalize((V6_ONLY_BASE + t, V6_ONLY_BASE + t) for t in MLD_TYPES)


@lru_cache(maxsize=8192)
def canonical_icmp(ivs: IntervalSet, family: str) -> IntervalSet:
    """The canonical ICMP types an ICMP/ICMPv6 (type << 8 | code) set touches. Codes are
    family-specific: a set holding only some codes of a type touches the type (a verdict that
    depends on the code shows as mixed)."""
    types = set()
    for lo, hi in ivs:
        for t in range(lo >> 8, (hi >> 8) + 1):
            if family == IPV4:
                if t == 3:
                    clo = max(lo, t << 8) & 0xFF
                    chi = min(hi, (t << 8) | 0xFF) & 0xFF
                    if clo <= 4 <= chi:
                        types.add(PTB)
                    if clo < 4 or chi > 4:
                        types.add(3)
                else:
                    types.add(t)
            else:
                types.add(ICMP6_TO_4.get(t, V6_ONLY_BASE + t))
    return iv_normalize((x, x) for x in types)


def project(box: Box, family: str) -> List[Box]:
    """A region of one family's packets in the neutral space shared by both families."""
    proto = box[PROTO]
    if family == IPV6 and iv_contains(proto, 58):
        proto = iv_or(iv_sub(proto, ((58, 58),)), ((1, 1),))
    out = []
    other = iv_sub(proto, ((1, 1),))
    if other:
        b = list(box)
        b[PROTO] = other
        b[ICMP] = TWINNED  # ICMP types mean nothing for other protocols
        out.append(tuple(b))
    if iv_contains(proto, 1):
        b = list(box)
        b[PROTO] = ((1, 1),)
        b[ICMP] = canonical_icmp(box[ICMP], family)
        if b[ICMP]:
            out.append(tuple(b))
    return out


def project_outcomes(outcomes: Iterable[Tuple[Box, str, FrozenSet]], family: str,
                     rounds: int = 3) -> List[Tuple[Box, str, FrozenSet]]:
    """One family's outcomes (origin box, verdict, rules) in the neutral space, the boxes of one
    (verdict, rules) merged. A router's 9,700 forward outcomes have a few hundred distinct
    boxes (a chain of per-host rules decides the same region once per rule): each distinct box
    is projected, and each distinct list of boxes merged, once."""
    projected: Dict[Box, List[Box]] = {}
    groups: Dict[tuple, List[Box]] = {}
    for origin, verdict, label in outcomes:
        p = projected.get(origin)
        if p is None:
            p = projected[origin] = project(origin, family)
        groups.setdefault((verdict, label), []).extend(p)
    merged: Dict[tuple, List[Box]] = {}
    # the rules of each (box, verdict): one box that many groups share (a blocklist's 100,000
    # rules, one source each, all the same region once addresses are roles) is one entry whose
    # rules are theirs together, as the comparison's overlay unites the rules of boxes that
    # overlap (it would otherwise carry, and the worker pickle back, 100,000 copies of the box)
    rules_of: Dict[Tuple[Box, str], List[FrozenSet]] = {}
    for (verdict, label), boxes in groups.items():
        if len(boxes) == 1:
            # nothing to merge (what merge_boxes makes of one box): most groups of a host with
            # many small chains, one rule's verdict each, are one box
            rules_of.setdefault((boxes[0], verdict), []).append(label)
            continue
        key = tuple(boxes)
        m = merged.get(key)
        if m is None:
            m = merged[key] = merge_boxes(list(dict.fromkeys(boxes)), rounds, MASK_DIMS)
        for b in m:
            rules_of.setdefault((b, verdict), []).append(label)
    return [(b, verdict, labels[0] if len(labels) == 1 else frozenset().union(*labels))
            for (b, verdict), labels in rules_of.items()]


# ---------------------------------------------------------------------------------------------
# overlay: overlapping labelled boxes -> disjoint regions with the union of their labels

PARTITION_ORDER = (STATE, PROTO, IIF, OIF, SRC, DST, UID, GID, ICMP, SPORT, DPORT)


def _split_intervals(values: List[IntervalSet], names: Optional[Sequence[int]] = None
                     ) -> List[Tuple[IntervalSet, List[int]]]:
    """Cut the union of interval sets where the set of values covering it changes: [(the
    points covered by exactly these values, their indices)]. ``names``: the values' indices
    are these instead (overlay_cuts: of its boxes), and the values are not all equal."""
    if names is None:
        first = values[0]
        n = len(values)
        if values.count(first) == n:
            return [(first, list(range(n)))]
    distinct, dvalues, cut = _distinct_cut(values, _CUTS, _cut_distinct, names)
    return [(segs, [i for j in js for i in distinct[dvalues[j]]]) for segs, js in cut]


def _distinct_cut(values: Sequence[V], memo: Dict[Tuple[V, ...], C], cut_distinct: Callable[[Tuple[V, ...]], C],
                  names: Optional[Sequence[int]] = None) -> Tuple[Dict[V, List[int]], Tuple[V, ...], C]:
    """The positions of each distinct value (equal values share one entry: many regions have
    the same port set), the distinct values in order, and their cut, remembered in ``memo``:
    the cut depends on the distinct values only, and a comparison asks for the same few again
    and again (a router's: 8,000 cuts of 100 different lists of values). ``names``: what each
    position is called in the lists of positions (overlay_cuts: the boxes' indices)."""
    distinct: Dict[V, List[int]] = {}
    for i, v in zip(range(len(values)) if names is None else names, values):
        distinct.setdefault(v, []).append(i)
    dvalues = tuple(distinct)
    cut = memo.get(dvalues)
    if cut is None:
        if len(memo) >= _CUTS_LIMIT:
            memo.clear()
        cut = memo[dvalues] = cut_distinct(dvalues)
    return distinct, dvalues, cut


_CUTS: Dict[Tuple[IntervalSet, ...], List[Tuple[IntervalSet, List[int]]]] = {}
_CUTS_LIMIT = 4096


def _cut_distinct(dvalues: Tuple[IntervalSet, ...]) -> List[Tuple[IntervalSet, List[int]]]:
    """_split_intervals of distinct values: [(points, the positions in ``dvalues`` of the
    values covering them)]."""
    union = iv_normalize([p for v in dvalues for p in v])
    spanning = [j for j, v in enumerate(dvalues) if v == union]
    # Sweep the boundaries. Each value has a well-mixed 64-bit id (_ids) and a segment's
    # signature is the XOR of the ids covering it: O(1) per boundary however many values
    # overlap. The covering set itself is copied once per distinct signature.
    events: Dict[int, List[int]] = {}
    for j, v in enumerate(dvalues):
        if v == union:
            continue
        for lo, hi in v:
            events.setdefault(lo, []).append(j)
            events.setdefault(hi + 1, []).append(j)
    for lo, hi in union:
        events.setdefault(lo, []).append(-1)
        events.setdefault(hi + 1, []).append(-1)
    ids = _ids(len(dvalues))
    keys = sorted(events)
    sig = 0
    active: set = set()
    inside = False
    # signature -> [segments, members]; a group's segments come in increasing order and apart
    # from each other, so merging each with the one before it if they touch normalises them
    groups: Dict[int, Tuple[List[Tuple[int, int]], List[int]]] = {}
    for k, nxt in zip(keys, keys[1:]):
        for j in events[k]:
            if j < 0:
                inside = not inside
            elif j in active:
                active.discard(j)
                sig ^= ids[j]
            else:
                active.add(j)
                sig ^= ids[j]
        if not inside:
            continue
        g = groups.get(sig)
        if g is None:
            groups[sig] = ([(k, nxt - 1)], list(active) + spanning)
        else:
            segs = g[0]
            if segs[-1][1] + 1 == k:
                segs[-1] = (segs[-1][0], nxt - 1)
            else:
                segs.append((k, nxt - 1))
    return [(tuple(segs), members) for segs, members in groups.values()]


_ID_CACHE: List[int] = []
_M64 = (1 << 64) - 1


def _ids(n: int) -> List[int]:
    """At least ``n`` 64-bit ids, the k-th the splitmix64 finalizer of k + 1: well mixed, and
    distinct (each step is a bijection of 64-bit words). (Not the random module: importing it,
    with math and hashlib's sha512, is ~6 M instructions, ~2 ms, of every diff and small audit.)"""
    for k in range(len(_ID_CACHE), n):
        z = (k + 1) * 0x9E3779B97F4A7C15 & _M64
        z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9 & _M64
        z = (z ^ z >> 27) * 0x94D049BB133111EB & _M64
        _ID_CACHE.append(z ^ z >> 31)
    return _ID_CACHE


def _split_masks(values: List[int], names: Optional[Sequence[int]] = None) -> List[Tuple[int, List[int]]]:
    """_split_intervals of bit masks."""
    if names is None:
        first = values[0]
        if values.count(first) == len(values):
            return [(first, list(range(len(values))))]
    distinct, _, cut = _distinct_cut(values, _MASK_CUTS, _cut_masks, names)
    return [(mask, [i for v in key for i in distinct[v]]) for key, mask in cut]


_MASK_CUTS: Dict[Tuple[int, ...], List[Tuple[Tuple[int, ...], int]]] = {}


def _cut_masks(dvalues: Tuple[int, ...]) -> List[Tuple[Tuple[int, ...], int]]:
    """_split_masks of distinct masks: [(the masks covering a part, the part)]."""
    union = 0
    for v in dvalues:
        union |= v
    groups: Dict[Tuple[int, ...], int] = {}
    bit = 0
    u = union
    while u:
        if u & 1:
            key = tuple(v for v in dvalues if v >> bit & 1)
            groups[key] = groups.get(key, 0) | (1 << bit)
        u >>= 1
        bit += 1
    return list(groups.items())


def overlay(items: Sequence[Tuple[Box, object]]) -> List[Tuple[Box, FrozenSet]]:
    """Disjoint regions covering the union of the items' boxes, each with the set of tags of
    the items covering it. Regions are cut dimension by dimension where the set of covering
    items changes, so the number of regions follows the structure of the input."""
    boxes, tags_of = group_boxes(items)
    return [
        (box, frozenset(t for g in groups for t in tags_of[g])) for box, groups in overlay_boxes(boxes)
    ]


def group_boxes(items: Sequence[Tuple[Box, object]]) -> Tuple[List[Box], List[List]]:
    """The distinct boxes of labelled items (in the order they first come) and each one's
    tags. (A diff's items repeat a few hundred boxes: the regions a chain of rules decides.)"""
    index: Dict[Box, int] = {}
    tags_of: List[List] = []
    for box, tag in items:
        g = index.setdefault(box, len(tags_of))  # (a box hashed once, found or added)
        if g == len(tags_of):
            tags_of.append([])
        tags_of[g].append(tag)
    return list(index), tags_of


def overlay_boxes(boxes: Sequence[Box]) -> Iterator[Tuple[Box, FrozenSet[int]]]:
    """``overlay`` of distinct boxes: each region with the indices of the boxes covering it, one
    after the other (a router's comparison has 17,000 regions, most of them settled at once).
    (Equal boxes are never cut apart, so overlaying each distinct box once gives the same
    regions, in the same order, as overlaying every copy.)"""
    for idx, cuts in overlay_cuts(boxes):
        yield cut_box(boxes, idx, cuts), frozenset(idx)


def cut_box(boxes: Sequence[Box], idx: List[int], cuts: tuple) -> Box:
    """The box of a region of ``overlay_cuts``: its first covering box, cut."""
    b = list(boxes[idx[0]])
    for dim, value in cuts:
        b[dim] = value
    return tuple(b)


def overlay_cuts(boxes: Sequence[Box]) -> Iterator[Tuple[List[int], tuple]]:
    """``overlay_boxes`` with each region unbuilt: (the indices of the boxes covering it, the
    ((dimension, part), ...) it was cut to; ``cut_box`` makes its box). A comparison settles
    most regions by their covering boxes alone.

    Regions are cut along PARTITION_ORDER, depth first: a group of boxes is cut at the first
    dimension where they differ, each part's boxes further. A region is the box of its first
    covering box with the parts it was cut to."""
    if not boxes:
        return
    first = boxes[0]
    # the dimensions where some boxes differ: the others cut nothing
    dims = [d for d in PARTITION_ORDER if any(b[d] != first[d] for b in boxes)]
    cols = [[b[d] for b in boxes] for d in dims]
    last = len(dims)
    # (box indices, position in dims, ((dimension, part), ...) of the cuts above): depth first,
    # the parts of a cut in their order
    stack: List[Tuple[List[int], int, tuple]] = [(list(range(len(boxes))), 0, ())]
    pop, push = stack.pop, stack.extend
    while stack:
        idx, level, cuts = pop()
        while True:
            if len(idx) == 1 or level == last:
                yield idx, cuts
                break
            col = cols[level]
            values = [col[j] for j in idx]
            if values.count(values[0]) == len(values):
                level += 1
                continue
            dim = dims[level]
            # (the parts' members named by their boxes' indices, not their positions in idx)
            parts = _split_masks(values, idx) if dim in MASK_DIMS else _split_intervals(values, idx)
            level += 1
            push([(members, level, cuts + ((dim, value),)) for value, members in reversed(parts)])
            break


# ---------------------------------------------------------------------------------------------
# fewest, widest boxes

# outer dimensions first: a region reads "protocol, state, interfaces, roles, owner, ICMP type,
# ports"; ports vary fastest, so they are the dimension that collects ranges.
CANON_ORDER = (PROTO, STATE, IIF, OIF, SRC, DST, UID, GID, HOPLIMIT, ICMP, SPORT, DPORT)


def canonical_union(boxes: Sequence[Box]) -> List[Box]:
    """The union of boxes as disjoint boxes in a canonical form: cut along CANON_ORDER, each
    dimension's value the widest set of values whose cross-sections are the same. The result
    depends only on the union (not on how it was cut into pieces), and regions that differ
    only in, say, the port come out as one region with several port ranges."""
    boxes = list(dict.fromkeys(boxes))
    if len(boxes) < 2:
        return boxes
    # fewer pieces of the same union first (boxes equal but in one dimension, merged exactly):
    # the cut below costs by the pieces, its result depends only on the union
    boxes = merge_boxes(boxes, 2, MASK_DIMS)
    if len(boxes) < 2:
        return boxes
    memo: Dict[Tuple[int, Tuple[int, ...]], FrozenSet[tuple]] = {}
    out = []
    for t in _canonical_cut(boxes, memo, tuple(range(len(boxes))), 0):
        b: List = [None] * NDIMS
        for dim, value in zip(CANON_ORDER, t):
            b[dim] = value
        out.append(tuple(b))
    return out


# (a module function, not a closure: a closure that calls itself is a cycle, which would hold
# its memo until the diff's paused collector runs again)
def _canonical_cut(boxes: Sequence[Box], memo: Dict[Tuple[int, Tuple[int, ...]], FrozenSet[tuple]],
                   idx: Tuple[int, ...], level: int) -> FrozenSet[tuple]:
    if level == len(CANON_ORDER):
        return frozenset({()})
    key = (level, idx)
    got = memo.get(key)
    if got is not None:
        return got
    dim = CANON_ORDER[level]
    values = [boxes[i][dim] for i in idx]
    parts = _split_masks(values) if dim in MASK_DIMS else _split_intervals(values)
    # a mask (MASK_DIMS) or an interval set, the same kind for every value of one dimension
    groups: Dict[FrozenSet[tuple], Union[int, IntervalSet]] = {}
    for value, members in parts:
        sub = _canonical_cut(boxes, memo, tuple(sorted(idx[m] for m in members)), level + 1)
        old = groups.get(sub)
        if old is None:
            groups[sub] = value
        elif dim in MASK_DIMS:
            groups[sub] = cast(int, old) | cast(int, value)
        else:
            groups[sub] = iv_or(cast(IntervalSet, old), cast(IntervalSet, value))
    got = frozenset((value,) + rest for sub, value in groups.items() for rest in sub)
    memo[key] = got
    return got
