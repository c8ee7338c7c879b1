"""Addresses by role, the way ``twinwall diff`` compares two families whose addresses differ.

A family's address space is cut into roles: global (any other address), loopback, link-local,
multicast, the host's own addresses, reserved. At role level a box's SRC and DST dimensions hold
interval sets of role ids (``role_set``); a rule's prefix that covers a whole role matches it
for certain, one that covers part of a role *may* match it (``AddressRoles.classify``).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import (
    Dict,
    FrozenSet,
    Iterable,
    List,
    Optional,
    Tuple,
)

from twinwall.netfilter.packetset import (
    Box,
    PROTO_ALL,
    address_space,
    iv_and,
    iv_normalize,
    iv_or,
    iv_sub,
    loopback_addresses,
    make_box,
    multicast_addresses,
    prefix_set,
)
from twinwall.model import IPV4, IPV6

GLOBAL, LOOPBACK, LINK_LOCAL, MULTICAST, HOST, RESERVED = range(6)
ROLE_NAMES = ("global", "loopback", "link-local", "multicast", "host", "reserved")

_LINK_LOCAL = {IPV4: ("169.254.0.0/16",), IPV6: ("fe80::/10",)}
_RESERVED = {IPV4: ("0.0.0.0/8", "240.0.0.0/4"), IPV6: ("::/128", "::ffff:0:0/96")}


def role_set(ids: Iterable[int]) -> tuple:
    """Role ids as an interval set (the value of a SRC or DST dimension at role level)."""
    return iv_normalize((r, r) for r in ids)


# role sets as interval sets of role ids, by bit mask of the roles
_ROLE_IV = [role_set(r for r in range(6) if m >> r & 1) for m in range(64)]
_ROLE_PAIRS: Dict[int, Tuple[tuple, tuple]] = {}  # must << 6 | may -> (_ROLE_IV[must], _ROLE_IV[may])


class AddressRoles:
    """One family's address space cut into roles. ``host``: the host's own addresses (loopback
    left out), or the offline stand-in addresses when the real ones are unknown."""

    def __init__(self, family: str, host: tuple, host_known: bool):
        self.family = family
        self.host_known = host_known
        rest = address_space(family)
        sets: Dict[int, tuple] = {}
        mcast = multicast_addresses(family)
        if family == IPV4:
            mcast = iv_or(mcast, ((0xFFFFFFFF, 0xFFFFFFFF),))
        order = [
            (LOOPBACK, loopback_addresses(family)),
            (MULTICAST, mcast),
            (HOST, host),
            (RESERVED, prefix_set(_RESERVED[family], family)),
            (LINK_LOCAL, prefix_set(_LINK_LOCAL[family], family)),
        ]
        for role, value in order:
            mine = iv_and(rest, value)
            sets[role] = mine
            rest = iv_sub(rest, mine)
        sets[GLOBAL] = rest
        self.sets = sets
        self._cache: Dict[tuple, Tuple[tuple, tuple]] = {}
        # the partition as sorted segments, for classifying one interval by bisection
        segs = sorted((lo, hi, role) for role, ivs in sets.items() for lo, hi in ivs)
        self._seg_lo = [lo for lo, _, _ in segs]
        self._segs = segs
        self._span = {role: (ivs[0][0], ivs[-1][1]) for role, ivs in sets.items() if ivs}

    def present(self) -> FrozenSet[int]:
        return frozenset(r for r, s in self.sets.items() if s)

    def segment(self, value: tuple) -> Optional[Tuple[int, int, int, int]]:
        """(first, last) of the piece of one role that holds every address of a one-interval
        ``value``, and (first, last) of that role's span; None when ``value`` is more than one
        interval or meets more than one piece. Any interval inside the piece that does not
        cover the span classifies as ``value`` does when ``value`` does not cover it."""
        if len(value) != 1:
            return None
        lo, hi = value[0]
        i = bisect_right(self._seg_lo, lo) - 1
        if i < 0:
            return None
        s_lo, s_hi, role = self._segs[i]
        if hi > s_hi:
            return None
        span = self._span[role]
        return s_lo, s_hi, span[0], span[1]

    def classify(self, value: tuple) -> Tuple[tuple, tuple]:
        """(roles every address of which is in ``value``, roles some address of which is)."""
        if len(value) == 1:
            # one interval (a rule's prefix: the bulk of big rulesets) is classified by
            # bisection, not remembered: a blocklist's 100,000 distinct /32s would be as many
            # entries, each looked up once
            lo, hi = value[0]
            segs = self._segs
            i = bisect_right(self._seg_lo, lo) - 1
            if i < 0:
                i = 0
            may = must = 0
            span = self._span
            n = len(segs)
            while i < n and segs[i][0] <= hi:
                if segs[i][1] >= lo:
                    r = segs[i][2]
                    may |= 1 << r
                    if lo <= span[r][0] and span[r][1] <= hi:
                        must |= 1 << r
                i += 1
            # (one pair per combination of roles, not per value: a 100k-rule ruleset names 86,000
            # distinct prefixes, of a handful of classes)
            key = must << 6 | may
            hit = _ROLE_PAIRS.get(key)
            if hit is None:
                hit = _ROLE_PAIRS[key] = (_ROLE_IV[must], _ROLE_IV[may])
            return hit
        hit = self._cache.get(value)
        if hit is None:
            must_roles: List[int] = []
            may_roles: List[int] = []
            for role, s in self.sets.items():
                if not s:
                    continue
                inter = iv_and(s, value)
                if inter:
                    may_roles.append(role)
                    if inter == s:
                        must_roles.append(role)
            hit = (role_set(must_roles), role_set(may_roles))
            self._cache[value] = hit
        return hit


def host_addresses(ctx) -> Tuple[tuple, bool]:
    """The addresses the HOST role stands for in a family context: the host's own non-loopback
    addresses when known, otherwise the offline stand-ins (as the audit assumes)."""
    loop = loopback_addresses(ctx.family)
    if ctx.addresses_known:
        return iv_sub(ctx.local, loop), True
    return iv_sub(ctx.remote_targets, loop), False


# the evaluated packet boxes per hook (SRC/DST hold role ids)


def hook_roles(hook: str, host_known: bool) -> Tuple[FrozenSet[int], FrozenSet[int]]:
    """(source roles, destination roles) evaluated for a hook."""
    local_side = {HOST, LOOPBACK} if host_known else {HOST, LOOPBACK, GLOBAL, LINK_LOCAL}
    if hook == "input":
        return frozenset({GLOBAL, LOOPBACK, LINK_LOCAL, HOST}), frozenset(local_side | {MULTICAST})
    if hook == "output":
        return frozenset(local_side), frozenset({GLOBAL, LOOPBACK, LINK_LOCAL, MULTICAST, HOST})
    return frozenset({GLOBAL}), frozenset({GLOBAL})


def start_box(family: str, src_roles, dst_roles, iface_all: int) -> Box:
    """Every packet from the source roles to the destination roles (the other family's ICMP
    protocol left out)."""
    proto = iv_sub(PROTO_ALL, ((58, 58),) if family == IPV4 else ((1, 1),))
    return make_box(role_set(src_roles), role_set(dst_roles), iface_all, iface_all, proto=proto)
