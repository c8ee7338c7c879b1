"""Sets of packets as unions of boxes.

A *box* is a cartesian product: one value set per dimension (source address, destination port,
input interface, conntrack state, ...). A rule's match is a *constraint*: a sparse list of
``(dimension, value set)`` pairs that must all hold. Intersecting a box with a constraint gives one
box; subtracting it gives at most one box per constrained dimension. That is all the evaluator
needs to carry whole address/port/interface ranges through the chains in one walk, instead of
trying packets one at a time.

Value sets come in two kinds:

* interval sets over integers (addresses, ports, protocol numbers, ICMP type/code, uid, gid):
  a tuple of disjoint, sorted, non-adjacent ``(lo, hi)`` pairs, both ends inclusive;
* bit masks over a small finite universe (interface classes, conntrack states): an ``int``.

Everything here is immutable and hashable, so boxes can be shared freely between flows.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right
from functools import lru_cache
from itertools import compress, starmap
from operator import eq, itemgetter, ne
from typing import Any, Callable, FrozenSet, Iterable, List, Optional, Sequence, Tuple

# (the C functions that the socket module re-exports under the same names: importing socket
# itself builds its enum classes, a twentieth of a small audit's start-up)
from _socket import AF_INET, AF_INET6, inet_ntoa, inet_ntop, inet_pton

_INF = 1 << 130  # above every address, port and id

Interval = Tuple[int, int]
IntervalSet = Tuple[Interval, ...]

# Dimension indices. Keep interval dimensions and mask dimensions apart: MASK_DIMS lists the latter.
SRC, DST, PROTO, SPORT, DPORT, ICMP, UID, GID, IIF, OIF, STATE, HOPLIMIT = range(12)
NDIMS = 12
MASK_DIMS = frozenset((IIF, OIF, STATE))

ADDR_BITS = {"ipv4": 32, "ipv6": 128}
PORT_ALL: IntervalSet = ((0, 65535),)
PROTO_ALL: IntervalSet = ((0, 255),)
ICMP_ALL: IntervalSet = ((0, 0xFFFF),)  # type << 8 | code
ID_ALL: IntervalSet = ((0, 0xFFFFFFFF),)
# IPv6 hop limit / IPv4 TTL as the packet arrives (neighbour discovery must carry 255: RFC 4861)
HOPLIMIT_ALL: IntervalSet = ((0, 255),)

# Conntrack states as bits of the STATE dimension.
CT_NEW, CT_ESTABLISHED, CT_RELATED, CT_INVALID, CT_UNTRACKED = 1, 2, 4, 8, 16
CT_ALL = 31
# Before conntrack has run (prerouting and output base chains at priority < -200: raw) a packet
# has no conntrack entry yet, and ``ct state`` / ``-m conntrack --ctstate`` see it INVALID
# (xt_conntrack, nft_ct: no ct and not untracked). The evaluator carries such a packet's coming
# state shifted up by CT_PRE_SHIFT; a state match's mask holds those bits where it takes INVALID
# (ct_state_match), a TCP flags match where the coming state's flags pass (tcp_flag_states).
CT_PRE_SHIFT = 5
CT_PRE_ALL = CT_ALL << CT_PRE_SHIFT
# A NOTRACK in raw untracks a connection's later packets too: UNTRACKED, but carrying ACK, not
# the SYN of the UNTRACKED first packets (TCP_FLAGS_OF_STATE)
CT_UNTRACKED_LATER = 1 << (2 * CT_PRE_SHIFT)
CT_MATCH_ALL = CT_ALL | CT_PRE_ALL | CT_UNTRACKED_LATER  # the STATE values a rule's match is a subset of


def ct_state_match(mask: int) -> int:
    """A conntrack state match's STATE mask: before conntrack every packet looks INVALID."""
    if mask & CT_INVALID:
        mask |= CT_PRE_ALL
    if mask & CT_UNTRACKED:
        mask |= CT_UNTRACKED_LATER
    return mask


def ct_pre(state: int) -> int:
    """A state as the evaluator carries it before conntrack has run."""
    return ((state & CT_ALL) << CT_PRE_SHIFT) | (state & CT_UNTRACKED_LATER)


def ct_post(state: int) -> int:
    """The state conntrack gives a packet carried in the pre-conntrack form."""
    return (state & (CT_ALL | CT_UNTRACKED_LATER)) | ((state & CT_PRE_ALL) >> CT_PRE_SHIFT)


def ct_untrack(state: int) -> int:
    """NOTRACK before conntrack: every packet untracked (first packets and NDP as UNTRACKED,
    a connection's later ones as CT_UNTRACKED_LATER)."""
    pre = state >> CT_PRE_SHIFT
    out = state & (CT_ALL | CT_UNTRACKED_LATER)
    if pre & (CT_NEW | CT_RELATED | CT_UNTRACKED):
        out |= CT_UNTRACKED
    if pre & (CT_ESTABLISHED | CT_INVALID):
        out |= CT_UNTRACKED_LATER
    return out


CT_NAMES = {
    "NEW": CT_NEW,
    "ESTABLISHED": CT_ESTABLISHED,
    "RELATED": CT_RELATED,
    "INVALID": CT_INVALID,
    "UNTRACKED": CT_UNTRACKED,
}

# The TCP flags of the packets each conntrack state stands for. A connection's first packet (NEW;
# RELATED: an expected connection's first packet; UNTRACKED: the evaluator makes those only of
# NEW packets a raw rule exempts) carries SYN alone, as Linux, BSD and Windows clients send it;
# ESTABLISHED and INVALID stand for the rest of a flow, which carries ACK. So "--syn" (SYN set,
# ACK/FIN/RST clear) matches the first packets and none of the others.
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
TCP_FLAGS_OF_STATE = (
    (CT_NEW, TCP_SYN),
    (CT_RELATED, TCP_SYN),
    (CT_UNTRACKED, TCP_SYN),
    (CT_ESTABLISHED, TCP_ACK),
    (CT_INVALID, TCP_ACK),
    (CT_UNTRACKED_LATER, TCP_ACK),
)


def tcp_flag_states(test: Callable[[int], bool]) -> int:
    """The STATE mask of the states whose packets' TCP flags pass ``test`` (flags -> bool)."""
    mask = 0
    for state, flags in TCP_FLAGS_OF_STATE:
        if test(flags):
            mask |= state
    return mask | (mask & CT_ALL) << CT_PRE_SHIFT  # (the flags are the same before conntrack)


Box = Tuple  # NDIMS entries: IntervalSet or int mask
Constraint = Tuple[Tuple[int, Any], ...]  # (dimension, IntervalSet or int mask) pairs


# ---------------------------------------------------------------------------------------------
# interval sets


def _span(a: IntervalSet, lo: int, hi: int) -> Tuple[int, int]:
    """Indices [i, j) of the intervals of ``a`` that overlap [lo, hi] (binary search)."""
    i = bisect_left(a, (lo, -1))
    if i and a[i - 1][1] >= lo:
        i -= 1
    j = bisect_right(a, (hi, _INF), i)
    return i, j


# Operations on long interval sets (a 100k-entry blocklist, "everyone but the blocklist") repeat
# with the very same operands as the evaluator splits flow after flow by the same rule. They
# are remembered by operand identity; the memo keeps the operands alive, so an id cannot be
# reused while its entry exists.
_BIG = 64
_FEW = 16  # iv_or splices this many intervals into a long set one by one
_MEMO_LIMIT = 1024
_memo: dict = {}


def _remembered(op, a: IntervalSet, b: IntervalSet) -> IntervalSet:
    key = (op, id(a), id(b))
    hit = _memo.get(key)
    if hit is not None and hit[0] is a and hit[1] is b:
        return hit[2]
    out = op(a, b)
    if len(_memo) >= _MEMO_LIMIT:
        _memo.clear()
    _memo[key] = (a, b, out)
    if out is not a and out is not b and len(out) > _BIG:
        # where the result came from (see _made_of), under its own identity
        _memo[(_made_of, id(out))] = (out, op, a, b)
    return out


def _made_of(c: IntervalSet) -> Optional[Tuple[Any, IntervalSet, IntervalSet]]:
    """(op, a, b) when the long set ``c`` is ``op(a, b)`` (_iv_sub or _iv_and) as remembered.
    The verdicts undo the evaluator's cuts: the sources a rule took and those it left of "all
    but a blocklist" join back into that very set, and "every remote source minus those" is
    the blocklist again (a - (a - b) = a & b), without a merge or a difference over the 100,000
    intervals each."""
    hit = _memo.get((_made_of, id(c)))
    if hit is None or hit[0] is not c:
        return None
    return hit[1], hit[2], hit[3]


def iv_and(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    if a is b:
        return a
    if len(a) > _BIG or len(b) > _BIG:
        return _remembered(_iv_and, a, b)
    return _iv_and(a, b)


def iv_meets(a: IntervalSet, b: IntervalSet) -> bool:
    """Whether two interval sets share a value (without building their intersection)."""
    if not a or not b:
        return False
    if len(a) < len(b):
        a, b = b, a
    for lo, hi in b:
        i, j = _span(a, lo, hi)
        if i < j:
            return True
    return False


def iv_touching(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    """The intervals of ``a`` that overlap or touch one of ``b`` (a few, found by a binary search
    per interval of ``b``): all that iv_or(a, b) can change of ``a``."""
    hit = sorted({k for lo, hi in b for k in range(*_span(a, lo - 1, hi + 1))})
    return tuple(a[k] for k in hit)


def iv_inside(a: IntervalSet, b: IntervalSet) -> bool:
    """Whether every value of ``a`` is in ``b`` (not iv_sub(a, b), without building the
    difference): a binary search per interval of the shorter one - of ``a`` per gap of ``b``
    (a blocklist's 100,000 values inside the few intervals of a flow's sources), or of ``b``
    per interval of ``a`` (the few intervals of every source inside "all but a blocklist")."""
    if not a:
        return True
    if not b or a[0][0] < b[0][0] or a[-1][1] > b[-1][1]:
        return False
    if len(a) < len(b):
        for lo, hi in a:
            i, j = _span(b, lo, hi)
            if j - i != 1 or b[i][0] > lo or b[i][1] < hi:
                return False
        return True
    for (_, hi), (lo, _) in zip(b, b[1:]):
        i, j = _span(a, hi + 1, lo - 1)
        if i < j:
            return False
    return True


def _iv_and(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    if a is b or a == b:
        return a
    if not a or not b:
        return ()
    if len(a) < len(b):
        a, b = b, a
    # The commonest case by far: one side is a single interval (a port, a /32, a prefix).
    if len(b) == 1:
        lo, hi = b[0]
        if len(a) == 1:
            l2, h2 = a[0]
            l, h = (lo if lo > l2 else l2), (hi if hi < h2 else h2)
            return ((l, h),) if l <= h else ()
        i, j = _span(a, lo, hi)
        if i >= j:
            return ()
        if a[i][0] >= lo and a[j - 1][1] <= hi:
            return a[i:j] if j - i < len(a) else a
        mid = list(a[i:j])
        if mid[0][0] < lo:
            mid[0] = (lo, mid[0][1])
        if mid[-1][1] > hi:
            mid[-1] = (mid[-1][0], hi)
        return tuple(mid)
    if len(b) * 8 < len(a):
        # a few intervals against many (a merged set of pod addresses): binary-search each
        parts: List[Interval] = []
        for lo, hi in b:
            parts.extend(_iv_and(a, ((lo, hi),)))
        return tuple(parts)
    out = []
    i = j = 0
    na, nb = len(a), len(b)
    while i < na and j < nb:
        alo, ahi = a[i]
        blo, bhi = b[j]
        lo = alo if alo > blo else blo
        hi = ahi if ahi < bhi else bhi
        if lo <= hi:
            out.append((lo, hi))
        if ahi < bhi:
            i += 1
        else:
            j += 1
    return tuple(out)


def iv_sub(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    if not a or not b:
        return a
    if len(a) > _BIG or len(b) > _BIG:
        if len(b) > _BIG:
            made = _made_of(b)
            if made is not None and made[0] is _iv_sub and made[1] is a:
                return iv_and(a, made[2])  # a - (a - x) = a & x
        return _remembered(_iv_sub, a, b)
    return _iv_sub(a, b)


def _iv_sub(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    if a is b or a == b:
        return ()
    if len(b) == 1:
        lo, hi = b[0]
        i, j = _span(a, lo, hi)
        if i >= j:
            return a
        mid = []
        if a[i][0] < lo:
            mid.append((a[i][0], lo - 1))
        if a[j - 1][1] > hi:
            mid.append((hi + 1, a[j - 1][1]))
        return a[:i] + tuple(mid) + a[j:]
    if len(a) * 8 < len(b):
        return _sub_many(a, b)
    out = []
    j = 0
    nb = len(b)
    for lo, hi in a:
        while j < nb and b[j][1] < lo:
            j += 1
        k = j
        cur = lo
        while k < nb and b[k][0] <= hi:
            if b[k][0] > cur:
                out.append((cur, b[k][0] - 1))
            if b[k][1] + 1 > cur:
                cur = b[k][1] + 1
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def _sub_many(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    """_iv_sub of a few intervals minus many (every remote source but an nft set of 100,000
    addresses): the gaps between the intervals of ``b`` that a binary search finds inside each
    of ``a``, made in one comprehension each."""
    out: List[Interval] = []
    append, extend = out.append, out.extend
    for lo, hi in a:
        i, j = _span(b, lo, hi)
        if i >= j:
            append((lo, hi))
            continue
        first, last = b[i][0], b[j - 1][1]
        if first > lo:
            append((lo, first - 1))
        # (b is sorted, disjoint and not adjacent: every gap holds a value)
        extend([(h + 1, l - 1) for (_, h), (l, _) in zip(b[i:j - 1], b[i + 1:j])])
        if last < hi:
            append((last + 1, hi))
    return tuple(out)


def iv_or(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    if not a:
        return b
    if not b:
        return a
    if a is b:
        return a
    if len(b) > len(a):
        a, b = b, a
    if len(a) > _BIG:
        whole = _rejoined(a, b)
        if whole is not None:
            return whole
        if len(b) <= _FEW:
            # a few intervals into a long set (the martian ranges into "all but a blocklist"):
            # each spliced in where a binary search puts it, not the 100,000 sorted again
            for lo, hi in b:
                i, j = _span(a, lo - 1, hi + 1)  # (the intervals it overlaps or touches)
                if i < j:
                    lo, hi = min(lo, a[i][0]), max(hi, a[j - 1][1])
                a = a[:i] + ((lo, hi),) + a[j:]
            return a
        if len(b) * 8 < len(a):
            return _spliced_or(a, b)
    return iv_normalize(list(a) + list(b))


def _rejoined(a: IntervalSet, b: IntervalSet) -> Optional[IntervalSet]:
    """``x`` when ``a`` and ``b`` are ``x - y`` and ``x & y`` (in either order) as remembered;
    None otherwise."""
    made_a = _made_of(a)
    if made_a is None:
        return None
    if len(b) > _BIG:
        made_b = _made_of(b)
    else:  # (a short intersection is remembered only where its operands were long)
        hit = _memo.get((_iv_and, id(made_a[1]), id(made_a[2])))
        made_b = (_iv_and, made_a[1], made_a[2]) if hit is not None and hit[2] is b and hit[0] is made_a[1] else None
        if made_b is None:
            hit = _memo.get((_iv_sub, id(made_a[1]), id(made_a[2])))
            made_b = (_iv_sub, made_a[1], made_a[2]) if hit is not None and hit[2] is b and hit[0] is made_a[1] else None
    if made_b is None or made_a[1] is not made_b[1] or made_a[2] is not made_b[2] or made_a[0] is made_b[0]:
        return None
    return made_a[1]


def _spliced_or(a: IntervalSet, b: IntervalSet) -> IntervalSet:
    """iv_or of a long set and a much shorter one: the long set's intervals between the places
    the short one's go are kept as they are (slices), not sorted and rebuilt one by one."""
    out: List[Interval] = []
    extend, append = out.extend, out.append
    pos = 0  # a[:pos] is in ``out`` or in the interval being grown
    grown = False
    clo = chi = 0
    for lo, hi in b:
        i, j = _span(a, lo - 1, hi + 1)  # (the intervals of ``a`` it overlaps or touches)
        if i < j:
            if a[i][0] < lo:
                lo = a[i][0]
            if a[j - 1][1] > hi:
                hi = a[j - 1][1]
        if grown and i < pos:  # it touches an interval the one being grown took
            if hi > chi:
                chi = hi
        else:
            if grown:
                append((clo, chi))
            extend(a[pos:i])
            clo, chi, grown = lo, hi, True
        if j > pos:
            pos = j
    if grown:
        append((clo, chi))
    extend(a[pos:])
    return tuple(out)


def iv_union(sets: Sequence[IntervalSet]) -> IntervalSet:
    """The union of several interval sets: iv_or of the longest with the union of the others
    (a long set is not sorted again with a few short ones)."""
    if len(sets) <= 1:
        return sets[0] if sets else ()
    if len(sets) == 2:
        return iv_or(sets[0], sets[1])
    longest = max(range(len(sets)), key=lambda k: len(sets[k]))
    rest = [p for k, x in enumerate(sets) if k != longest for p in x]
    return iv_or(sets[longest], iv_normalize(rest))


def iv_normalize(pairs: Iterable[Interval]) -> IntervalSet:
    """Sort and merge overlapping or adjacent intervals."""
    out: List[Interval] = []
    append = out.append
    clo = chi = 0  # the interval being grown, once ``grown``
    grown = False
    given: Any = None  # the pair it is, as given, while nothing has grown it (kept, not copied)
    for p in sorted(pairs):
        lo, hi = p
        if lo > hi:
            continue
        if grown and lo <= chi + 1:
            if hi > chi:
                chi = hi
                given = None
        else:
            if grown:
                append(given if given.__class__ is tuple else (clo, chi))
            clo, chi, given = lo, hi, p
            grown = True
    if grown:
        append(given if given.__class__ is tuple else (clo, chi))
    return tuple(out)


def iv_contains(a: IntervalSet, value: int) -> bool:
    i = bisect_right(a, (value, _INF))
    return bool(i) and a[i - 1][1] >= value


def iv_size(a: IntervalSet) -> int:
    return sum(hi - lo + 1 for lo, hi in a)


# ---------------------------------------------------------------------------------------------
# addresses


def plain_prefix(addr: str, length: int, bits: int) -> Optional[Interval]:
    """(first, last) of ``addr``/``length`` where inet_pton reads ``addr`` (of ``bits`` bits: 32,
    128) and the length is 0 to ``bits``; None otherwise (ipaddress, or the caller's general
    reading, decides, and words what is wrong: a negative length would otherwise widen the
    prefix past the address space, and one past ``bits`` fail as a negative shift)."""
    try:
        raw = inet_pton(AF_INET if bits == 32 else AF_INET6, addr)
    except OSError:
        return None
    if not 0 <= length <= bits:
        return None
    value = int.from_bytes(raw, "big")
    if length == bits:
        return value, value  # (one address: one integer, not two equal ones)
    host = (1 << (bits - length)) - 1
    return value & ~host, value | host


def prefix_interval(network: str, family: str) -> Interval:
    """'192.0.2.0/24' (or an address, or a dotted netmask) -> (first, last) as integers."""
    addr, _, plen = network.partition("/")
    if plen.isdigit() or not plen:
        # fast path for the forms iptables-save prints
        bits = ADDR_BITS[family]
        plain = plain_prefix(addr, int(plen) if plen else bits, bits)
        if plain is not None:
            return plain
    net = ipaddress.ip_network(network, strict=False)
    if (net.version == 4) != (family == "ipv4"):
        raise ValueError(f"{network} is not an {family} address")
    return int(net.network_address), int(net.broadcast_address)


def address_space(family: str) -> IntervalSet:
    return ((0, (1 << ADDR_BITS[family]) - 1),)


def remembered_by_identity(fn: Callable[..., Any], size: int = 4096) -> Callable[..., Any]:
    """``fn(a, *rest)`` (``rest`` hashable) remembered: by ``a``'s value while it is short (an
    lru_cache), by its identity once it is long. A long set's hash is every interval hashed
    again, each time: an lru_cache of "all but a blocklist" hashed 100,000 pairs per question.
    The same sets come back as the very same objects (the evaluator's, the interval memo's),
    and an equal copy is only worked out again. The memo keeps what it holds alive, so an
    identity is not reused while its entry lives."""
    by_value = lru_cache(maxsize=size)(fn)
    by_id: dict = {}

    def remembered(a, *rest):
        if len(a) <= _BIG:
            return by_value(a, *rest)
        key = (id(a),) + rest
        hit = by_id.get(key)
        if hit is not None and hit[0] is a:
            return hit[1]
        out = fn(a, *rest)
        if len(by_id) >= 64:
            by_id.clear()
        by_id[key] = (a, out)
        return out

    remembered.__doc__ = fn.__doc__
    return remembered


def cidr_count(a: IntervalSet) -> int:
    """len(to_cidrs(a, family)), counted without spelling (or even finding) the blocks."""
    # (the audit sizes a set cut by a blocklist several ways, each asking for its count again)
    return _cidr_count_remembered(a, None) if len(a) > _BIG else _cidr_count(a)


def cidr_count_over(a: IntervalSet, bound: int) -> bool:
    """Whether ``cidr_count(a) > bound``, counting no further than it needs to (a set cut by a
    blocklist has some 30 blocks per blocked address, and the question is often "over 1,024?")."""
    if len(a) > _BIG:
        # (a long set is asked the same twice: whether "all but a blocklist" needs more blocks
        # than the blocklist, by its sources' list and by its text; ~15 ms each at 100k)
        return _cidr_count_remembered(a, bound) > bound
    return _cidr_count(a, bound) > bound


def _cidr_count(a: IntervalSet, bound: Optional[int] = None) -> int:
    """The number of CIDR blocks of ``a``; with ``bound``, any number over it once past it."""
    if bound is None and len(a) > _BIG and _singles(a):
        return len(a)  # (single addresses, a block each: a blocklist's)
    n = 0
    start = 0
    # (a long set a chunk of intervals at a time: its single addresses, a block each, counted by
    # one C-level pass, the others one by one; over ``bound``, no further chunk. The chunks grow
    # from 64 to _COUNTED intervals: a bound is often passed within the first few dozen - "all
    # but a set" has some 30 blocks per gap - and a first chunk of 4,096 counted 100 times too
    # many)
    size = 64 if bound is not None else _COUNTED
    while start < len(a):
        chunk = a[start:start + size] if start or len(a) > size else a
        start += size
        size = min(2 * size, _COUNTED)
        n += sum(starmap(eq, chunk))
        for lo, hi in compress(chunk, starmap(ne, chunk)):
            k = (lo ^ hi).bit_length()  # lo and hi agree above bit k - 1, where lo has 0, hi 1
            low = (1 << k) - 1
            if not lo & low and hi & low == low:
                n += 1  # one aligned block
                continue
            mid = (hi >> (k - 1)) << (k - 1)  # the aligned point between them: blocks grow up to
            n += (mid - lo).bit_count() + (hi + 1 - mid).bit_count()  # it, then shrink after it
        if bound is not None and n > bound:
            return n
    return n


_COUNTED = 4096  # the intervals _cidr_count counts at a time
# a long set's count, bounded or not (bound None), by the set's identity and the bound
_cidr_count_remembered = remembered_by_identity(_cidr_count, 16)


def _singles_of(a: IntervalSet) -> bool:
    return all(starmap(eq, a))


# Whether every interval of a long set is one address (a blocklist's), remembered by identity:
# the verdicts count a blocklist's blocks, then spell them, and each asked it of the same
# 100,000 intervals (~12 ms a pass)
_singles = remembered_by_identity(_singles_of, 16)


def to_cidrs(a: IntervalSet, family: str) -> List[str]:
    """The fewest CIDR blocks that exactly cover an interval set."""
    # (integer arithmetic: ipaddress.summarize_address_range takes ~20 us a range, seconds for
    # a set cut by a 100k-entry blocklist)
    top = ADDR_BITS[family] + 1
    out: List[str] = []
    append = out.append
    if family == "ipv4":
        ntoa = inet_ntoa
        fmt = lambda v: ntoa(v.to_bytes(4, "big"))  # noqa: E731
    else:
        fmt = format_address6
    single = f"/{top - 1}"
    if len(a) > _BIG and _singles(a):
        # every interval one address (a blocklist's): spelled at once
        if family == "ipv4":
            return [ntoa(lo.to_bytes(4, "big")) + single for lo, _ in a]
        if a[0][0] >> 48:
            # the least address (the set is sorted) and so every one is of those inet_ntop
            # spells as ipaddress does (see format_address6): not asked address by address
            return [inet_ntop(AF_INET6, lo.to_bytes(16, "big")) + single for lo, _ in a]
    v4 = family == "ipv4"
    ntop = inet_ntop
    for lo, hi in a:
        if lo == hi:  # (one address: spelled here, not by a call per address)
            if v4:
                append(inet_ntoa(lo.to_bytes(4, "big")) + single)
            elif lo >> 48:
                append(ntop(AF_INET6, lo.to_bytes(16, "big")) + single)
            else:
                append(format_address6(lo) + single)
            continue
        while lo <= hi:
            size = 1 << ((hi - lo + 1).bit_length() - 1)  # the largest block that fits...
            if lo:
                low = lo & -lo
                if low < size:
                    size = low  # ...and starts on its own boundary
            append(f"{fmt(lo)}/{top - size.bit_length()}")
            lo += size
    return out


def format_address(value: int, family: str) -> str:
    if family == "ipv4":
        return inet_ntoa(value.to_bytes(4, "big"))
    return format_address6(value)


def format_address6(value: int) -> str:
    if value >> 48:
        # inet_ntop spells these as ipaddress does (lowercase, the first longest run of two or
        # more zero groups as "::"); only the forms with 80 leading zero bits differ (the C
        # library writes ::ffff:192.0.2.1 and ::192.0.2.1), so those go to ipaddress
        return inet_ntop(AF_INET6, value.to_bytes(16, "big"))
    return str(ipaddress.IPv6Address(value))


def ranges_text(a: IntervalSet) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in a)


# Sources the kernel drops as martians before any rule sees them: a rule dropping them does not
# make a service "restricted". IPv6 also drops IPv4-mapped sources on the wire (RFC 4942).
_MARTIAN_SOURCES = {
    "ipv4": ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32"),
    "ipv6": ("::/128", "::1/128", "ff00::/8", "::ffff:0:0/96"),
}
_LOOPBACK = {"ipv4": ("127.0.0.0/8",), "ipv6": ("::1/128",)}
_MULTICAST = {"ipv4": ("224.0.0.0/4",), "ipv6": ("ff00::/8",)}


def prefix_set(prefixes: Sequence[str], family: str) -> IntervalSet:
    """The addresses of some prefixes, as one interval set."""
    return iv_normalize(prefix_interval(p, family) for p in prefixes)


# The family-wide sets below are built once: every caller then holds the very same object, which
# the identity shortcuts of iv_and and the interval memo rely on.


@lru_cache(maxsize=None)
def remote_sources(family: str) -> IntervalSet:
    """Every source address a packet arriving on a non-loopback interface can really carry."""
    return iv_sub(address_space(family), prefix_set(_MARTIAN_SOURCES[family], family))


@lru_cache(maxsize=None)
def loopback_addresses(family: str) -> IntervalSet:
    return prefix_set(_LOOPBACK[family], family)


@lru_cache(maxsize=None)
def multicast_addresses(family: str) -> IntervalSet:
    return prefix_set(_MULTICAST[family], family)


# ---------------------------------------------------------------------------------------------
# boxes


def make_box(
    src: IntervalSet,
    dst: IntervalSet,
    iif: int,
    oif: int,
    proto: IntervalSet = PROTO_ALL,
    sport: IntervalSet = PORT_ALL,
    dport: IntervalSet = PORT_ALL,
    icmp: IntervalSet = ICMP_ALL,
    uid: IntervalSet = ID_ALL,
    gid: IntervalSet = ID_ALL,
    state: int = CT_ALL,
    hoplimit: IntervalSet = HOPLIMIT_ALL,
) -> Box:
    """A box by dimension name; every dimension not given is whole."""
    return (src, dst, proto, sport, dport, icmp, uid, gid, iif, oif, state, hoplimit)


# the whole range of each interval dimension but the addresses (see domain)
_DOMAINS = {
    SPORT: PORT_ALL, DPORT: PORT_ALL, PROTO: PROTO_ALL, ICMP: ICMP_ALL, UID: ID_ALL, GID: ID_ALL,
    HOPLIMIT: HOPLIMIT_ALL,
}


def domain(dim: int, family: str) -> IntervalSet:
    """Every value an interval dimension can take."""
    return address_space(family) if dim == SRC or dim == DST else _DOMAINS[dim]


def complement(dim: int, value, family: str, all_ifaces: int):
    """The values of a dimension that ``value`` leaves out (``all_ifaces``: the interface
    universe's mask, for the interface dimensions)."""
    if dim == STATE:
        return CT_MATCH_ALL & ~value
    if dim in MASK_DIMS:
        return all_ifaces & ~value
    return iv_sub(domain(dim, family), value)


def conjoin(base: dict, extra: dict) -> Optional[dict]:
    """Two constraints (``{dim: value set}``) at once, or None when no packet can meet both."""
    merged = dict(base)
    for dim, value in extra.items():
        if dim in merged:
            value = (merged[dim] & value) if dim in MASK_DIMS else iv_and(merged[dim], value)
        if not value:
            return None
        merged[dim] = value
    return merged


def box_and(box: Box, constraint: Constraint) -> Optional[Box]:
    """box ∩ constraint, or None when empty."""
    out = None
    for dim, value in constraint:
        cur = box[dim] if out is None else out[dim]
        if dim in MASK_DIMS:
            new = cur & value
            if not new:
                return None
        else:
            new = iv_and(cur, value)
            if not new:
                return None
        if new is not cur:
            if out is None:
                out = list(box)
            out[dim] = new
    return box if out is None else tuple(out)


def box_meets(box: Box, constraint: Constraint) -> bool:
    """Whether box ∩ constraint holds a packet (without building it)."""
    for dim, value in constraint:
        if dim in MASK_DIMS:
            if not box[dim] & value:
                return False
        elif not iv_meets(box[dim], value):
            return False
    return True


def box_sub(box: Box, constraint: Constraint) -> List[Box]:
    """box \\ constraint as disjoint boxes (at most one per constrained dimension)."""
    pieces: List[Box] = []
    cur = box
    for dim, value in constraint:
        v = cur[dim]
        if dim in MASK_DIMS:
            outside = v & ~value
            inside = v & value
            empty_out, empty_in = not outside, not inside
        else:
            outside = iv_sub(v, value)
            inside = iv_and(v, value)
            empty_out, empty_in = not outside, not inside
        if not empty_out:
            piece = list(cur)
            piece[dim] = outside
            pieces.append(tuple(piece))
        if empty_in:
            return pieces
        if inside is not v:
            nxt = list(cur)
            nxt[dim] = inside
            cur = tuple(nxt)
    return pieces


def split(box: Box, alternatives: Sequence[Constraint]) -> Tuple[List[Box], List[Box]]:
    """Split a box by a disjunction of constraints into (matched boxes, unmatched boxes)."""
    if len(alternatives) == 1:
        if len(alternatives[0]) == 1:
            return _split_one(box, alternatives[0][0])
        return _split_and(box, alternatives[0])
    matched: List[Box] = []
    rest = [box]
    for constraint in alternatives:
        if not constraint:
            matched.extend(rest)
            return matched, []
        nxt: List[Box] = []
        for b in rest:
            m = box_and(b, constraint)
            if m is None:
                nxt.append(b)
                continue
            matched.append(m)
            if m is not b:
                nxt.extend(box_sub(b, constraint))
        rest = nxt
        if not rest:
            break
    return matched, rest


def _split_and(box: Box, constraint: Constraint) -> Tuple[List[Box], List[Box]]:
    """split() by one constraint on several dimensions ("-p tcp --dport P", a dispatch table's
    rule): box_and, then box_sub where the box is cut, with each dimension's inside and outside
    found once (box_sub would find the insides box_and found again); the same boxes."""
    pieces: List[Box] = []
    cur = box
    for dim, value in constraint:
        v = cur[dim]
        if dim in MASK_DIMS:
            inside = v & value
            if not inside:
                return [], [box]
            outside = v & ~value
        elif len(value) == 1 and len(v) <= _BIG:
            inside, outside = _iv_cut(v, value)
            if not inside:
                return [], [box]
        else:
            inside = iv_and(v, value)
            if not inside:
                return [], [box]
            outside = iv_sub(v, value)
        if outside:
            piece = list(cur)
            piece[dim] = outside
            pieces.append(tuple(piece))
        if inside is not v:
            nxt = list(cur)
            nxt[dim] = inside
            cur = tuple(nxt)
    if cur is box:
        return [box], []
    return [cur], pieces


def _iv_cut(a: IntervalSet, b: IntervalSet) -> Tuple[IntervalSet, IntervalSet]:
    """(iv_and(a, b), iv_sub(a, b)) of a set of at most _BIG intervals and a single interval
    ``b``, found with one binary search: ``a`` itself where one of them gives ``a``, so that the
    walk's identity tests read them alike, and ``b`` itself where the intersection is all of it
    (a service chain's "-s PREFIX" inside the sources that reach it: the accepted packets'
    box holds the rule's own value, not a copy per flow). The difference is () where the
    intersection is ``a`` or empty (the callers do not read it then)."""
    if a is b or a == b:
        return a, ()
    if not a:
        return (), ()
    lo, hi = b[0]
    if len(a) == 1:
        l2, h2 = a[0]
        low, high = (lo if lo > l2 else l2), (hi if hi < h2 else h2)
        if low > high:
            return (), ()
        mid = []
        if l2 < lo:
            mid.append((l2, lo - 1))
        if h2 > hi:
            mid.append((hi + 1, h2))
        return b if low == lo and high == hi else ((low, high),), tuple(mid)
    i, j = _span(a, lo, hi)
    if i >= j:
        return (), ()
    first, last = a[i], a[j - 1]
    if first[0] >= lo and last[1] <= hi:
        if j - i == len(a):
            return a, ()
        inside = b if j - i == 1 and first[0] == lo and first[1] == hi else a[i:j]
    elif j - i == 1 and first[0] <= lo and hi <= first[1]:
        inside = b  # (one interval of ``a`` holds all of ``b``)
    else:
        parts = list(a[i:j])
        if first[0] < lo:
            parts[0] = (lo, first[1])
        if last[1] > hi:
            parts[-1] = (parts[-1][0], hi)
        inside = tuple(parts)
    mid = []
    if first[0] < lo:
        mid.append((first[0], lo - 1))
    if last[1] > hi:
        mid.append((hi + 1, last[1]))
    return inside, a[:i] + tuple(mid) + a[j:]


def _split_one(box: Box, match: Tuple[int, Any]) -> Tuple[List[Box], List[Box]]:
    """split() by one constraint on one dimension ("-s PREFIX", "--dport P", a state): the
    commonest rule of all, and the same boxes as box_and and box_sub give, with the inside
    computed once rather than by both."""
    dim, value = match
    cur = box[dim]
    mask = dim in MASK_DIMS
    if not mask and len(value) == 1 and len(cur) <= _BIG:
        # one interval cut out of a short set (a "-s PREFIX" of a service chain, a port): both
        # parts from one binary search (_iv_cut), not one each in iv_and and iv_sub
        inside, outside = _iv_cut(cur, value)
        if not inside:
            return [], [box]
        if inside is cur:
            return [box], []
        head, tail = box[:dim], box[dim + 1:]
        return [head + (inside,) + tail], [head + (outside,) + tail] if outside else []
    inside = cur & value if mask else iv_and(cur, value)
    if not inside:
        return [], [box]
    if inside is cur:
        return [box], []
    outside = cur & ~value if mask else iv_sub(cur, value)
    head, tail = box[:dim], box[dim + 1:]
    return [head + (inside,) + tail], [head + (outside,) + tail] if outside else []


def covers(boxes: Sequence[Box], target: Box, dims: Sequence[int]) -> bool:
    """Whether the union of ``boxes``, projected on ``dims``, covers ``target`` on those dims."""
    for d in dims:
        # (a dimension all the boxes share one value of, and that misses some of the target's,
        # answers at once: "everyone but a blocklist" does not cover everyone, without the
        # 100,000-interval differences of the cuts below)
        value = boxes[0][d] if boxes else None
        if value is not None and d not in MASK_DIMS and all(b[d] is value for b in boxes) and not iv_inside(target[d], value):
            return False
    remaining = [target]
    for b in boxes:
        constraint = tuple((d, b[d]) for d in dims)
        nxt: List[Box] = []
        for r in remaining:
            if box_and(r, constraint) is None:
                nxt.append(r)
            else:
                nxt.extend(box_sub(r, constraint))
        remaining = nxt
        if not remaining:
            return True
    return not remaining


def merge_boxes(boxes: Sequence[Box], rounds: int = 2, mask_dims: FrozenSet[int] = MASK_DIMS) -> List[Box]:
    """Merge boxes that are equal in every dimension but one (a cheap partial union)."""
    return [b for b, _ in merge_with_payload([(b, None) for b in boxes], None, rounds, mask_dims)]


def _merge_pair(
    entries: Sequence[Tuple[tuple, object]],
    combine: Optional[Callable[[object, object], object]],
    mask_dims: FrozenSet[int],
    combine_all: Optional[Callable[[List[object]], object]],
) -> Optional[List[Tuple[tuple, object]]]:
    """merge_with_payload of two entries, comparing them dimension by dimension instead of
    hashing every value of both (the diff merges one pair per blocklist rule: 100,000 pairs).
    None where the general pass could decide otherwise: equal boxes, or a differing
    dimension whose two values hash alike (a collision it would read as a group)."""
    (a, pa), (b, pb) = entries
    if len(a) != len(b):
        return None
    differ = list(compress(range(len(a)), map(ne, a, b)))
    if not differ or any(hash(a[d]) == hash(b[d]) for d in differ):
        return None
    if len(differ) > 1:
        return [(a, pa), (b, pb)]
    dim = differ[0]
    merged = list(a)
    merged[dim] = a[dim] | b[dim] if dim in mask_dims else iv_or(a[dim], b[dim])
    if combine_all is not None:
        payload = combine_all([pa, pb])
    elif combine is not None:
        payload = combine(pa, pb)
    else:
        payload = pa
    return [(tuple(merged), payload)]


def merge_with_payload(
    entries: Sequence[Tuple[tuple, object]],
    combine: Optional[Callable[[object, object], object]] = None,
    rounds: int = 2,
    mask_dims: FrozenSet[int] = MASK_DIMS,
    combine_all: Optional[Callable[[List[object]], object]] = None,
) -> List[Tuple[tuple, object]]:
    """Merge ``(box, payload)`` entries whose boxes are equal in every dimension but one; the
    merged box carries ``combine`` of its members' payloads (None: the first member's). Boxes
    may have any number of dimensions (``mask_dims`` says which are bit masks); ``rounds``
    passes over all dimensions at most. ``combine_all`` (instead of ``combine``) takes the list
    of a merged box's payloads at once: a union grown in place, not rebuilt per member.

    Dimension values can be long interval sets and tuples do not cache their hash: each value
    is hashed once, groups are keyed by the other dimensions' hashes and then checked for real
    equality."""
    if len(entries) < 2:
        return list(entries)
    if len(entries) == 2 and rounds > 0:
        pair = _merge_pair(entries, combine, mask_dims, combine_all)
        if pair is not None:
            return pair
    return _merge_groups(entries, combine, rounds, mask_dims, combine_all)


def _merge_groups(
    entries: Sequence[Tuple[tuple, object]],
    combine: Optional[Callable[[object, object], object]],
    rounds: int,
    mask_dims: FrozenSet[int],
    combine_all: Optional[Callable[[List[object]], object]],
    by_varying: bool = True,
) -> List[Tuple[tuple, object]]:
    """merge_with_payload's general pass (two or more entries). (``by_varying=False``: never
    _merge_varying, for the tests that compare the two.)"""
    ndims = len(entries[0][0])
    first = entries[0][0]
    if by_varying and all(len(b) == ndims for b, _ in entries):
        # the dimensions where some boxes differ, found by value (list.count: in C, equal
        # objects by identity first); the others are the same in every box, and so in every
        # key below: the boxes are hashed, and grouped, by the varying dimensions alone
        # (the boxes' columns, and the varying ones' hashes per box, built by zip: in C)
        cols = list(zip(*[b for b, _ in entries]))
        varying = [d for d in range(ndims) if cols[d].count(first[d]) != len(entries)]
        # ([] when the boxes are all equal: then the general pass below)
        if varying:
            hashed = list(zip(*[map(hash, cols[d]) for d in varying]))
            del cols
            if len(set(hashed)) == len(entries):
                return _merge_varying(entries, hashed, varying, combine, rounds, mask_dims, combine_all)
    items = [(tuple(map(hash, b)), b, p) for b, p in entries]
    dims: Sequence[int] = range(ndims)
    if len({it[0] for it in items}) == len(items):
        # distinct boxes merge only along a dimension where they differ, and merging changes
        # no other dimension: the ones where every box has the same value are left out
        first = items[0][1]
        dims = [d for d in dims if any(it[1][d] != first[d] for it in items)]
    for _ in range(rounds):
        changed = False
        for dim in dims:
            if len(items) < 2:
                break
            groups: dict = {}
            for it in items:
                h = it[0]
                groups.setdefault(h[:dim] + h[dim + 1 :], []).append(it)
            if len(groups) == len(items):
                continue
            out = []
            for members in groups.values():
                if len(members) == 1:
                    out.append(members[0])
                    continue
                first = members[0][1]
                head, tail = first[:dim], first[dim + 1 :]
                same = []
                for m in members:
                    if m[1][:dim] == head and m[1][dim + 1 :] == tail:
                        same.append(m)
                    else:  # a hash collision: left as it is
                        out.append(m)
                if len(same) == 1:
                    out.append(same[0])
                    continue
                changed = True
                out.append(_merged(same, dim, dim, mask_dims, combine, combine_all))
            items = out
        if not changed:
            break
    return [(b, p) for _, b, p in items]


def _merged(
    same: List[tuple],
    dim: int,
    pos: int,
    mask_dims: FrozenSet[int],
    combine: Optional[Callable[[object, object], object]],
    combine_all: Optional[Callable[[List[object]], object]],
) -> tuple:
    """One (hashes, box, payload) item for the items ``same`` (equal but along ``dim``), united
    along ``dim``; ``pos``: where ``dim``'s hash is in their hash tuples."""
    v: Any
    if dim in mask_dims:
        v = 0
        for m in same:
            v |= m[1][dim]
    else:
        v = iv_union([m[1][dim] for m in same])
    payload = same[0][2]
    if combine_all is not None:
        payload = combine_all([m[2] for m in same])
    elif combine is not None:
        for m in same[1:]:
            payload = combine(payload, m[2])
    merged = list(same[0][1])
    merged[dim] = v
    hashes = list(same[0][0])
    hashes[pos] = hash(v)
    return (tuple(hashes), tuple(merged), payload)


def _no_key(hashes: tuple) -> tuple:
    """The key along the only varying dimension: every box has the same."""
    return ()


def _merge_varying(
    entries: Sequence[Tuple[tuple, object]],
    hashed: List[tuple],
    varying: List[int],
    combine: Optional[Callable[[object, object], object]],
    rounds: int,
    mask_dims: FrozenSet[int],
    combine_all: Optional[Callable[[List[object]], object]],
) -> List[Tuple[tuple, object]]:
    """_merge_groups of distinct boxes (``hashed``: the hashes of their ``varying``
    dimensions, distinct), the same passes in the same order: a box's key along a dimension is
    the hashes of the other varying ones (the dimensions every box has the same value in add
    the same to every key, and are never merged along)."""
    items = [(h, b, p) for h, (b, p) in zip(hashed, entries)]
    # a box's other varying dimensions (None: it has no other), to tell a collision
    rests = [itemgetter(*others) if others else None
             for others in ([d for d in varying if d != dim] for dim in varying)]
    # a box's key along each varying dimension: the hashes of the other varying ones, picked
    # by an itemgetter (in C; equal keys, equal hashes: one position's key is that hash alone)
    key_getters = [itemgetter(*others) if others else _no_key
                   for others in ([i for i in range(len(varying)) if i != pos] for pos in range(len(varying)))]
    hashes_of = itemgetter(0)
    for _ in range(rounds):
        changed = False
        for pos, dim in enumerate(varying):
            if len(items) < 2:
                break
            rest_of = rests[pos]
            keys = list(map(key_getters[pos], map(hashes_of, items)))
            if len(set(keys)) == len(items):
                continue  # (nothing merges along it: found in C, without the groups)
            groups: dict = {}
            for key, it in zip(keys, items):
                members = groups.get(key)
                if members is None:
                    groups[key] = [it]
                else:
                    members.append(it)
            out = []
            for members in groups.values():
                if len(members) == 1:
                    out.append(members[0])
                    continue
                first = members[0][1]
                if rest_of is None:
                    same = members
                else:
                    rest = rest_of(first)
                    same = [members[0]]
                    for m in members[1:]:
                        if rest_of(m[1]) == rest:
                            same.append(m)
                        else:  # a hash collision: left as it is
                            out.append(m)
                    if len(same) == 1:
                        out.append(same[0])
                        continue
                changed = True
                out.append(_merged(same, dim, pos, mask_dims, combine, combine_all))
            items = out
        if not changed:
            break
    return [(b, p) for _, b, p in items]
