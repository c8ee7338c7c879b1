"""Every traffic class that IPv4 and IPv6 treat differently (``twinwall diff``).

For each hook path (input, forward, output) each family's rulesets are evaluated over the whole
packet space, and the verdicts are compared region by region over the dimensions both families
share: protocol (icmp 1 <-> ipv6-icmp 58), ports, ICMP type (mapped between the families),
conntrack state, interfaces, owner uid/gid.

Addresses differ between the families, so they are compared by *role*: global (any other
address), loopback, link-local, multicast and the host's own addresses. A rule naming a prefix
that is only part of a role (``-s 198.51.100.0/24``) *may* match a packet of that role: the walk
follows such packets both ways, so the role's verdict becomes the set of verdicts its addresses
get. A set of more than one verdict is reported as ``mixed`` together with the rules that make it
so; where both families are mixed the region is listed as *not comparable*, never dropped.

The walk is a role-level re-run of the evaluator's netfilter semantics
(``analysis.evaluator``): same hook order, user chains, RETURN, goto, policies, nat chains that
see only NEW packets, NOTRACK, DNAT/REDIRECT. It keeps only what a comparison needs (the packets
as they were sent, the verdict and the rule that decided it), which lets it merge regions the
evaluator must keep apart and walk 100k-rule rulesets over the whole packet space. Regions
agree with the evaluator run packet by packet: where a role's verdict is single, it is the
evaluator's verdict for every packet of it; where it is mixed, every packet's verdict is one of
the set (tests/unit/test_diff_properties.py checks this).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from twinwall.analysis.evaluator import MAX_DEPTH, EvaluationError, InertChains, hook_stages
from twinwall.analysis.interfaces import InterfaceUniverse
from twinwall.analysis.parallel import run_jobs, worth_forking
from twinwall.analysis.packetset import (
    CT_ALL,
    CT_NAMES,
    CT_NEW,
    CT_UNTRACKED,
    DPORT,
    DST,
    GID,
    ICMP,
    ICMP_ALL,
    ID_ALL,
    IIF,
    MASK_DIMS,
    NDIMS,
    OIF,
    PORT_ALL,
    PROTO,
    PROTO_ALL,
    SPORT,
    SRC,
    STATE,
    UID,
    Box,
    address_space,
    box_and,
    box_sub,
    iv_and,
    iv_normalize,
    make_box,
    merge_boxes,
    merge_with_payload,
    iv_sub,
    loopback_addresses,
    multicast_addresses,
    prefix_interval,
    split,
)
from twinwall.errors import InputError
from twinwall.model import IPV4, IPV6
from twinwall.ruleset import (
    ACCEPT,
    CONTINUE,
    DNAT,
    DROP,
    GOTO,
    JUMP,
    NAT_DONE,
    NOTRACK,
    QUEUE,
    REDIRECT,
    REJECT,
    RETURN,
    UNKNOWN,
    Decision,
    Ruleset,
)

HOOKS = ("input", "forward", "output")
HOOK_PATHS = {
    "input": ("prerouting", "input"),
    "forward": ("prerouting", "forward", "postrouting"),
    "output": ("output", "postrouting"),
}

V_ACCEPT, V_DROP, V_REJECT, V_MIXED = "accept", "drop", "reject", "mixed"

# ---------------------------------------------------------------------------------------------
# address roles

GLOBAL, LOOPBACK, LINK_LOCAL, MULTICAST, HOST, RESERVED = range(6)
ROLE_NAMES = ("global", "loopback", "link-local", "multicast", "host", "reserved")

_LINK_LOCAL = {IPV4: ("169.254.0.0/16",), IPV6: ("fe80::/10",)}
_RESERVED = {IPV4: ("0.0.0.0/8", "240.0.0.0/4"), IPV6: ("::/128", "::ffff:0:0/96")}


def _ivset(prefixes: Sequence[str], family: str) -> tuple:
    return iv_normalize(prefix_interval(p, family) for p in prefixes)


def _roles_iv(ids: Iterable[int]) -> tuple:
    return iv_normalize((r, r) for r in ids)


# role sets as interval sets of role ids, by bit mask of the roles
_ROLE_IV = [_roles_iv(r for r in range(6) if m >> r & 1) for m in range(64)]


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
            mcast = iv_normalize(list(mcast) + [(0xFFFFFFFF, 0xFFFFFFFF)])
        order = [
            (LOOPBACK, loopback_addresses(family)),
            (MULTICAST, mcast),
            (HOST, host),
            (RESERVED, _ivset(_RESERVED[family], family)),
            (LINK_LOCAL, _ivset(_LINK_LOCAL[family], family)),
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

    def classify(self, value: tuple) -> Tuple[tuple, tuple]:
        """(roles every address of which is in ``value``, roles some address of which is)."""
        hit = self._cache.get(value)
        if hit is None and len(value) == 1:
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
            hit = (_ROLE_IV[must], _ROLE_IV[may])
            self._cache[value] = hit
        elif hit is None:
            must, may = [], []
            for role, s in self.sets.items():
                if not s:
                    continue
                inter = iv_and(s, value)
                if inter:
                    may.append(role)
                    if inter == s:
                        must.append(role)
            hit = (_roles_iv(must), _roles_iv(may))
            self._cache[value] = hit
        return hit


def host_addresses(ctx) -> Tuple[tuple, bool]:
    """The addresses the HOST role stands for in a family context: the host's own non-loopback
    addresses when known, otherwise the offline stand-ins (as the audit assumes)."""
    loop = loopback_addresses(ctx.family)
    if ctx.addresses_known:
        return iv_sub(ctx.local, loop), True
    return iv_sub(ctx.remote_targets, loop), False


# ---------------------------------------------------------------------------------------------
# the evaluated packet boxes per hook (SRC/DST hold role ids)


def hook_roles(hook: str, host_known: bool) -> Tuple[FrozenSet[int], FrozenSet[int]]:
    """(source roles, destination roles) evaluated for a hook."""
    local_side = {HOST, LOOPBACK} if host_known else {HOST, LOOPBACK, GLOBAL, LINK_LOCAL}
    if hook == "input":
        return frozenset({GLOBAL, LOOPBACK, LINK_LOCAL, HOST}), frozenset(local_side | {MULTICAST})
    if hook == "output":
        return frozenset(local_side), frozenset({GLOBAL, LOOPBACK, LINK_LOCAL, MULTICAST, HOST})
    return frozenset({GLOBAL}), frozenset({GLOBAL})


def start_box(family: str, hook: str, src_roles, dst_roles, iface_all: int) -> Box:
    proto = iv_sub(PROTO_ALL, ((58, 58),) if family == IPV4 else ((1, 1),))
    return make_box(_roles_iv(src_roles), _roles_iv(dst_roles), iface_all, iface_all, proto=proto)


# ---------------------------------------------------------------------------------------------
# rules at role level


class _XRule:
    """A compiled rule with its address constraints lifted to roles: ``must`` constraints match
    for certain, ``may`` constraints only for some addresses of a role (or the rule has a match
    twinwall cannot decide)."""

    __slots__ = ("must", "may", "action", "target", "nat_dst", "nat_port", "rule", "source", "_decision", "inert",
                 "repeat")

    def __init__(self, must, may, rule, source, nat_dst=None, nat_port=None):
        self.must = must
        self.may = may
        self.action = rule.action
        self.target = rule.target
        self.nat_dst = nat_dst
        self.nat_port = nat_port
        self.rule = rule
        self.source = source
        self._decision = None
        self.inert = None  # JUMP only: whether the target chain can change nothing (lazy)
        # a "may" jump identical to the rule before it (kube-proxy's loadBalancerSourceRanges:
        # "-s PREFIX -j KUBE-EXT-X" for hundreds of prefixes, all one role-level rule): the
        # index of the first rule after the run of such repeats it belongs to, else 0
        self.repeat = 0

    @property
    def decision(self) -> Decision:
        d = self._decision
        if d is None:
            r = self.rule
            d = self._decision = Decision(r.table, r.chain, r.number, r.text, None, self.source, r.action)
        return d


def _lift_constraint(c, roles: AddressRoles):
    """-> (must constraint or None, may constraint or None); (None, None): never matches."""
    must_c = []
    may_c = []
    partial = False
    must_ok = True
    for dim, value in c:
        if dim == SRC or dim == DST:
            must_v, may_v = roles.classify(value)
            if not may_v:
                return None, None
            if must_v != may_v:
                partial = True
            if not must_v:
                must_ok = False
            must_c.append((dim, must_v))
            may_c.append((dim, may_v))
        else:
            must_c.append((dim, value))
            may_c.append((dim, value))
    if not partial:
        return tuple(must_c), None
    return (tuple(must_c) if must_ok else None), tuple(may_c)


# Constraint dimensions in the order a region is most often told apart from a rule: a rule and
# a region that do not meet usually differ in the port first (intersection is order-free).
_TEST_ORDER = {DPORT: 0, SPORT: 1, ICMP: 2, UID: 3, GID: 4, PROTO: 5, IIF: 6, OIF: 7, STATE: 8, DST: 9, SRC: 10}


_PERMUTATIONS: Dict[tuple, Optional[tuple]] = {}


def _ordered(c: tuple) -> tuple:
    if len(c) < 2:
        return c
    dims = tuple([p[0] for p in c])
    perm = _PERMUTATIONS.get(dims, 0)
    if perm == 0:
        order = tuple(sorted(range(len(c)), key=lambda i: _TEST_ORDER[dims[i]]))
        perm = _PERMUTATIONS[dims] = None if order == tuple(range(len(c))) else order
    if perm is None:
        return c
    return tuple([c[i] for i in perm])


def _lift_single(alts: tuple, unknown: bool, roles: AddressRoles) -> Tuple[tuple, tuple]:
    """(must, may) of a rule with one constraint of one match."""
    dim, value = alts[0][0]
    if dim != SRC and dim != DST:
        return ((), alts) if unknown else (alts, ())
    must_v, may_v = roles.classify(value)
    if not may_v:
        return (), ()
    if unknown or must_v != may_v:
        must = (((dim, must_v),),) if must_v and not unknown else ()
        return must, (((dim, may_v),),)
    return (((dim, must_v),),), ()


def _lift_rule(rule, source: str, roles: AddressRoles, cache: Optional[Dict] = None) -> _XRule:
    """``cache``: (must, may) of single-match rules by their match, shared by the rules of a walk
    (kube-proxy's rulesets repeat a few hundred distinct matches over 100k rules)."""
    alts = rule.alternatives
    action = rule.action
    if len(alts) == 1 and len(alts[0]) == 1 and action != DNAT and action != REDIRECT:
        # one match ("-s PREFIX", "-p tcp", "--ctstate NEW"...): the bulk of big rulesets
        unknown = bool(rule.unknown)
        if cache is None:
            must, may = _lift_single(alts, unknown, roles)
        else:
            key = (alts[0][0], unknown)
            hit = cache.get(key)
            if hit is None:
                hit = cache[key] = _lift_single(alts, unknown, roles)
            must, may = hit
        return _XRule(must, may, rule, source)
    alts = tuple(map(_ordered, alts))
    if not rule.unknown and action != DNAT and action != REDIRECT:
        # the common case: no address in any constraint, nothing to lift
        for c in alts:
            for dim, _ in c:
                if dim == SRC or dim == DST:
                    break
            else:
                continue
            break
        else:
            return _XRule(alts, (), rule, source)
    must: List = []
    may: List = []
    for c in alts:
        m, p = _lift_constraint(c, roles)
        if rule.unknown:
            if p is not None:
                may.append(p)
            elif m is not None:
                may.append(m)
            continue
        if m is not None:
            must.append(m)
        if p is not None:
            may.append(p)
    nat_dst = nat_port = None
    if action in (DNAT, REDIRECT) and rule.nat_to:
        dst, nat_port = rule.nat_to
        if dst is not None:
            nat_dst = roles.classify(dst)[1] or _roles_iv([GLOBAL])
    return _XRule(tuple(must), tuple(may), rule, source, nat_dst, nat_port)


# ---------------------------------------------------------------------------------------------
# merging regions


def merge_tuples(boxes: Sequence[tuple], mask_dims: FrozenSet[int], rounds: int = 6) -> List[tuple]:
    """Merge boxes equal in every dimension but one, repeatedly, until nothing changes."""
    return merge_boxes(list(dict.fromkeys(boxes)), rounds, mask_dims)


_MASK22 = frozenset(list(MASK_DIMS) + [d + NDIMS for d in MASK_DIMS])

# ---------------------------------------------------------------------------------------------
# the walk


class _Flow:
    __slots__ = ("box", "origin", "label")

    def __init__(self, box: Box, origin: Optional[Box], label: FrozenSet[Decision]):
        self.box = box
        self.origin = origin  # None: not rewritten (same as box)
        self.label = label  # the ACCEPT rule/policy that let it through the last base chain


_NO_LABEL: FrozenSet[Decision] = frozenset()


def _restrict(f: _Flow, box: Box) -> _Flow:
    if box is f.box:
        return f
    if f.origin is None:
        return _Flow(box, None, f.label)
    o = list(f.origin)
    fb = f.box
    for d in range(NDIMS):
        if f.origin[d] == fb[d]:
            o[d] = box[d]
    return _Flow(box, tuple(o), f.label)


def merge_flows(flows: List[_Flow]) -> List[_Flow]:
    if len(flows) < 2:
        return flows
    plain: Dict[FrozenSet, List[Box]] = {}
    nat: Dict[FrozenSet, List[tuple]] = {}
    for f in flows:
        if f.origin is None:
            plain.setdefault(f.label, []).append(f.box)
        else:
            nat.setdefault(f.label, []).append(f.box + f.origin)
    out: List[_Flow] = []
    for label, boxes in plain.items():
        out.extend(_Flow(b, None, label) for b in merge_tuples(boxes, MASK_DIMS, rounds=2))
    for label, pairs in nat.items():
        for p in merge_tuples(pairs, _MASK22, rounds=2):
            out.append(_Flow(p[:NDIMS], p[NDIMS:], label))
    return out


def _new_flows(flows: List[_Flow], present: List[_Flow]) -> List[_Flow]:
    """``flows`` minus those ``present`` already holds (same region, origin and label)."""
    seen = {(f.box, f.origin, f.label) for f in present}
    out = []
    for f in flows:
        key = (f.box, f.origin, f.label)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


@dataclass
class Outcome:
    """Packets as they were sent (role level), their verdict and the rules that decided it."""

    origin: Box
    verdict: str
    label: FrozenSet[Decision]


class RoleWalker:
    """Walks one family's rulesets with addresses at role level."""

    MERGE_AT = 24  # merge the flows of a chain walk once there are more than this

    def __init__(self, rulesets: Sequence[Ruleset], roles: AddressRoles, universe, local_addresses):
        self.rulesets = list(rulesets)
        self.roles = roles
        self.universe = universe
        for rs in self.rulesets:
            rs.universe = universe
            rs.local_addresses = local_addresses
        self._lifted: Dict[int, List[_XRule]] = {}
        self._lift_cache: Dict[tuple, Tuple[tuple, tuple]] = {}
        self._inert = InertChains()
        self._keep: List = []  # keeps lifted chains alive so their ids stay unique
        # (chain, flow) -> what a jump with that flow returns and what ends in the chain. A
        # region that several rules may send into the same chain (kube-proxy's
        # loadBalancerSourceRanges: hundreds of "-s PREFIX -j KUBE-EXT-X"), or that several
        # hooks send there (KUBE-SERVICES from PREROUTING and OUTPUT), is walked through it once.
        self._memo: Dict[tuple, Tuple[List[_Flow], List[tuple]]] = {}
        if roles.host_known:
            self.local_roles = _roles_iv([HOST, LOOPBACK])
        else:
            self.local_roles = _roles_iv([HOST, LOOPBACK, GLOBAL])

    def stages(self, hook: str):
        return hook_stages(self.rulesets, hook)

    def run(self, hooks: Sequence[str], boxes: Sequence[Box]) -> List[Outcome]:
        flows = [_Flow(b, None, _NO_LABEL) for b in boxes]
        outcomes: List[Outcome] = []
        for hook in hooks:
            flows = self.run_hook(hook, flows, outcomes)
        for f in flows:
            outcomes.append(Outcome(f.origin or f.box, V_ACCEPT, f.label))
        return outcomes

    def run_hook(self, hook: str, flows: List[_Flow], outcomes: List[Outcome]) -> List[_Flow]:
        for rs, base in self.stages(hook):
            if not flows:
                break
            chain = rs.chain(base.table, base.chain)
            if chain is None:
                continue
            skipped: List[_Flow] = []
            if base.kind == "nat":
                entering = []
                for f in flows:
                    m = box_and(f.box, ((STATE, CT_NEW),))
                    if m is None:
                        skipped.append(f)
                        continue
                    entering.append(_restrict(f, m))
                    skipped.extend(_restrict(f, b) for b in box_sub(f.box, ((STATE, CT_NEW),)))
                flows = entering
            returned, ended = self.walk(rs, base.table, base.chain, flows, 0)
            if len(ended) > 1:
                # a chain reached along several paths ends the same flows once per path
                ended = list({(id(e[0]), e[1], id(e[2])): e for e in ended}.values())
            nxt = skipped
            policy = chain.policy or "ACCEPT"
            decision = Decision(base.table, base.chain, None, None, policy, rs.source, policy)
            cite = base.kind == "filter" and (base.table == "filter" or rs.kind == "nftables")
            for f in returned:
                if policy == "DROP":
                    outcomes.append(Outcome(f.origin or f.box, V_DROP, frozenset((decision,))))
                elif cite:
                    nxt.append(_Flow(f.box, f.origin, frozenset((decision,))))
                else:
                    nxt.append(f)
            for f, action, dec in ended:
                if action == ACCEPT:
                    nxt.append(_Flow(f.box, f.origin, frozenset((dec,))))
                elif action in ("nat", QUEUE):
                    nxt.append(f)
                elif action == REJECT:
                    outcomes.append(Outcome(f.origin or f.box, V_REJECT, frozenset((dec,))))
                else:
                    outcomes.append(Outcome(f.origin or f.box, V_DROP, frozenset((dec,))))
            flows = merge_flows(nxt)
        return flows

    def lifted(self, rs: Ruleset, chain) -> List[_XRule]:
        key = id(chain)
        got = self._lifted.get(key)
        if got is None:
            source, roles, cache = rs.source, self.roles, self._lift_cache
            got = [_lift_rule(r, source, roles, cache) for r in chain.rules]
            for prev, xr in zip(got, got[1:]):
                if (
                    xr.action in (JUMP, GOTO)
                    and not xr.must
                    and xr.action == prev.action
                    and xr.target == prev.target
                    and not prev.must
                    and xr.may == prev.may
                ):
                    xr.repeat = -1
            end = len(got)
            for i in range(len(got) - 1, -1, -1):
                if got[i].repeat:
                    got[i].repeat = end
                else:
                    end = i
            self._lifted[key] = got
            self._keep.append(chain)
        return got

    def walk(self, rs: Ruleset, table: str, chain_name: str, flows: List[_Flow], depth: int):
        if depth > MAX_DEPTH:
            raise EvaluationError(f"chain nesting deeper than {MAX_DEPTH} at {table} {chain_name}: a loop?")
        chain = rs.chain(table, chain_name)
        if chain is None:
            raise EvaluationError(f"{rs.source}: jump to missing chain {table} {chain_name}")
        returned: List[_Flow] = []
        ended: List[tuple] = []
        here: set = set()  # memo keys whose ended flows this walk has passed on
        current = flows
        # the flows a "may" jump with nothing coming back left untouched: an identical rule
        # right after it sends the very same copies into the same chain, with the same result
        settled = None
        rules = self.lifted(rs, chain)
        i, n = 0, len(rules)
        while i < n:
            xr = rules[i]
            i += 1
            if not current:
                break
            if xr.repeat and current is settled:
                i = xr.repeat  # the rest of the run would send the same copies again
                continue
            settled = None
            action = xr.action
            if action == CONTINUE or action == UNKNOWN:
                continue  # LOG, MARK, unmodelled targets: evaluation goes on unchanged
            must, may = xr.must, xr.may
            if not must and not may:
                continue
            entering: List[_Flow] = []
            if not must:
                # only "may" matches: copies enter, every flow also goes on unchanged
                rest = current
                if len(may) == 1:
                    c = may[0]
                    for f in current:
                        x = box_and(f.box, c)
                        if x is not None:
                            entering.append(_restrict(f, x))
                else:
                    for f in current:
                        mm, _ = split(f.box, may)
                        for x in mm:
                            entering.append(_restrict(f, x))
            else:
                rest = []
                single = must[0] if len(must) == 1 else None
                for f in current:
                    if single is not None:
                        b = f.box
                        x = box_and(b, single)
                        if x is None:
                            rest.append(f)
                            if may:
                                for y in split(b, may)[0]:
                                    entering.append(_restrict(f, y))
                            continue
                        entering.append(_restrict(f, x))
                        r = box_sub(b, single) if x is not b else ()
                    else:
                        m, r = split(f.box, must)
                        if not m:
                            rest.append(f)
                            if may:
                                for y in split(f.box, may)[0]:
                                    entering.append(_restrict(f, y))
                            continue
                        for b in m:
                            entering.append(_restrict(f, b))
                    for b in r:
                        rf = _restrict(f, b)
                        rest.append(rf)
                        if may:
                            mm, _ = split(b, may)
                            for x in mm:
                                entering.append(_restrict(rf, x))
            if not entering:
                continue
            if action == JUMP:
                if xr.inert is None:
                    xr.inert = self._inert(rs, table, xr.target)
                if xr.inert:
                    # e.g. KUBE-MARK-MASQ: only marks and returns; splitting here would only
                    # fragment the flows
                    continue
            current = rest
            dec = xr.decision
            if action in (ACCEPT, DROP, REJECT, QUEUE, NAT_DONE):
                kind = "nat" if action == NAT_DONE else action
                ended.extend((f, kind, dec) for f in entering)
            elif action == RETURN:
                returned.extend(entering)
            elif action in (JUMP, GOTO):
                back: List[_Flow] = []
                memo = self._memo
                for f in entering:
                    key = (id(rs), table, xr.target, f.box, f.origin, f.label)
                    hit = memo.get(key)
                    if hit is None:
                        hit = memo[key] = self.walk(rs, table, xr.target, [f], depth + 1)
                        ended.extend(hit[1])
                    elif key not in here:
                        # what ends in the chain ends here too (once per walk of this chain)
                        ended.extend(hit[1])
                    here.add(key)
                    back.extend(hit[0])
                if action == JUMP:
                    if back:
                        new = _new_flows(back, current)
                        if new:
                            current = current + new
                    if not must:
                        settled = current if not back or not new else None
                else:
                    returned.extend(back)
                    if not must and not back:
                        settled = current
            elif action == NOTRACK:
                current = current + [u for f in entering for u in self._untrack(f)]
            elif action in (DNAT, REDIRECT):
                ended.extend((self._nat(f, xr), "nat", dec) for f in entering)
            else:  # pragma: no cover - every action is handled above
                raise EvaluationError(f"unhandled action {action}")
            if len(current) > self.MERGE_AT:
                current = merge_flows(current)
        returned.extend(current)
        return returned, ended

    @staticmethod
    def _untrack(f: _Flow) -> List[_Flow]:
        """NOTRACK: the NEW packets become UNTRACKED (their origin keeps saying NEW)."""
        state = f.box[STATE]
        if not state & CT_NEW:
            return [f]
        out = []
        if state & ~CT_NEW:
            out.append(_restrict(f, f.box[:STATE] + (state & ~CT_NEW,) + f.box[STATE + 1 :]))
        new = _restrict(f, f.box[:STATE] + (CT_NEW,) + f.box[STATE + 1 :])
        origin = new.origin or new.box
        out.append(_Flow(new.box[:STATE] + (CT_UNTRACKED,) + new.box[STATE + 1 :], origin, f.label))
        return out

    def _nat(self, f: _Flow, xr: _XRule) -> _Flow:
        b = list(f.box)
        if xr.action == REDIRECT:
            b[DST] = iv_and(b[DST], self.local_roles) or self.local_roles
        elif xr.nat_dst is not None:
            b[DST] = xr.nat_dst
        if xr.nat_port is not None:
            b[DPORT] = xr.nat_port
        new = tuple(b)
        if new == f.box:
            return f
        return _Flow(new, f.origin or f.box, f.label)


# ---------------------------------------------------------------------------------------------
# neutral space: protocol and ICMP type mapped between the families

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


@lru_cache(maxsize=8192)
def canonical_icmp(ivs: tuple, family: str) -> tuple:
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


def _has(ivs: tuple, value: int) -> bool:
    return any(lo <= value <= hi for lo, hi in ivs)


def project(box: Box, family: str) -> List[Box]:
    """A region of one family's packets in the neutral space shared by both families."""
    proto = box[PROTO]
    if family == IPV6 and _has(proto, 58):
        proto = iv_normalize(list(iv_sub(proto, ((58, 58),))) + [(1, 1)])
    out = []
    other = iv_sub(proto, ((1, 1),))
    if other:
        b = list(box)
        b[PROTO] = other
        b[ICMP] = TWINNED  # ICMP types mean nothing for other protocols
        out.append(tuple(b))
    if _has(proto, 1):
        b = list(box)
        b[PROTO] = ((1, 1),)
        b[ICMP] = canonical_icmp(box[ICMP], family)
        if b[ICMP]:
            out.append(tuple(b))
    return out


# ---------------------------------------------------------------------------------------------
# overlay: overlapping labelled boxes -> disjoint regions with the union of their labels

PARTITION_ORDER = (STATE, PROTO, IIF, OIF, SRC, DST, UID, GID, ICMP, SPORT, DPORT)


def _split_intervals(values: List[tuple]) -> List[Tuple[tuple, List[int]]]:
    """Cut the union of interval sets where the set of values covering it changes: [(the
    points covered by exactly these values, their indices)]."""
    first = values[0]
    n = len(values)
    if values.count(first) == n:
        return [(first, list(range(n)))]
    # equal values share one entry (many regions have the same port set)
    distinct: Dict[tuple, List[int]] = {}
    for i, v in enumerate(values):
        distinct.setdefault(v, []).append(i)
    dvalues = list(distinct)
    union = iv_normalize(p for v in dvalues for p in v)
    spanning = distinct.get(union, [])
    # Sweep the boundaries. Each value has a random 64-bit id and a segment's signature is the
    # XOR of the ids covering it: O(1) per boundary however many values overlap. The covering
    # set itself is copied once per distinct signature.
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
            members = [i for j in active for i in distinct[dvalues[j]]] + spanning
            groups[sig] = ([(k, nxt - 1)], members)
        else:
            g[0].append((k, nxt - 1))
    return [(iv_normalize(segs), members) for segs, members in groups.values()]


_ID_CACHE: List[int] = []


def _ids(n: int) -> List[int]:
    import random

    if len(_ID_CACHE) < n:
        rnd = random.Random(len(_ID_CACHE) + 0x7477)
        _ID_CACHE.extend(rnd.getrandbits(64) for _ in range(n - len(_ID_CACHE)))
    return _ID_CACHE


def _split_masks(values: List[int]) -> List[Tuple[int, List[int]]]:
    first = values[0]
    if values.count(first) == len(values):
        return [(first, list(range(len(values))))]
    distinct: Dict[int, List[int]] = {}
    for i, v in enumerate(values):
        distinct.setdefault(v, []).append(i)
    union = 0
    for v in distinct:
        union |= v
    groups: Dict[Tuple[int, ...], int] = {}
    bit = 0
    u = union
    while u:
        if u & 1:
            key = tuple(v for v in distinct if v >> bit & 1)
            groups[key] = groups.get(key, 0) | (1 << bit)
        u >>= 1
        bit += 1
    return [(mask, [i for v in key for i in distinct[v]]) for key, mask in groups.items()]


def overlay(items: Sequence[Tuple[Box, object]]) -> List[Tuple[Box, FrozenSet]]:
    """Disjoint regions covering the union of the items' boxes, each with the set of tags of
    the items covering it. Regions are cut dimension by dimension where the set of covering
    items changes, so the number of regions follows the structure of the input."""
    out: List[Tuple[Box, FrozenSet]] = []
    if not items:
        return out
    boxes = [b for b, _ in items]
    tags = [t for _, t in items]
    last = len(PARTITION_ORDER)

    def rec(idx: List[int], level: int, prefix: Tuple) -> None:
        while True:
            if len(idx) == 1 or level == last:
                b = list(boxes[idx[0]])
                for lvl, value in enumerate(prefix):
                    b[PARTITION_ORDER[lvl]] = value
                out.append((tuple(b), frozenset(tags[j] for j in idx)))
                return
            dim = PARTITION_ORDER[level]
            values = [boxes[j][dim] for j in idx]
            if values.count(values[0]) == len(values):
                prefix = prefix + (values[0],)
                level += 1
                continue
            parts = _split_masks(values) if dim in MASK_DIMS else _split_intervals(values)
            for value, members in parts:
                rec([idx[m] for m in members], level + 1, prefix + (value,))
            return

    rec(list(range(len(items))), 0, ())
    return out


# ---------------------------------------------------------------------------------------------
# fewest, widest boxes

# outer dimensions first: a region reads "protocol, state, interfaces, roles, owner, ICMP type,
# ports"; ports vary fastest, so they are the dimension that collects ranges.
CANON_ORDER = (PROTO, STATE, IIF, OIF, SRC, DST, UID, GID, ICMP, SPORT, DPORT)


def canonical_union(boxes: Sequence[Box]) -> List[Box]:
    """The union of boxes as disjoint boxes in a canonical form: cut along CANON_ORDER, each
    dimension's value the widest set of values whose cross-sections are the same. The result
    depends only on the union (not on how it was cut into pieces), and regions that differ
    only in, say, the port come out as one region with several port ranges."""
    boxes = list(dict.fromkeys(boxes))
    if len(boxes) < 2:
        return boxes
    memo: Dict[Tuple[int, Tuple[int, ...]], FrozenSet[tuple]] = {}

    def rec(idx: Tuple[int, ...], level: int) -> FrozenSet[tuple]:
        if level == len(CANON_ORDER):
            return frozenset({()})
        key = (level, idx)
        got = memo.get(key)
        if got is not None:
            return got
        dim = CANON_ORDER[level]
        values = [boxes[i][dim] for i in idx]
        parts = _split_masks(values) if dim in MASK_DIMS else _split_intervals(values)
        groups: Dict[FrozenSet[tuple], object] = {}
        for value, members in parts:
            sub = rec(tuple(sorted(idx[m] for m in members)), level + 1)
            old = groups.get(sub)
            if old is None:
                groups[sub] = value
            elif dim in MASK_DIMS:
                groups[sub] = old | value
            else:
                groups[sub] = iv_normalize(list(old) + list(value))
        got = frozenset((value,) + rest for sub, value in groups.items() for rest in sub)
        memo[key] = got
        return got

    out = []
    for t in rec(tuple(range(len(boxes))), 0):
        b: List = [None] * NDIMS
        for dim, value in zip(CANON_ORDER, t):
            b[dim] = value
        out.append(tuple(b))
    return out


# ---------------------------------------------------------------------------------------------
# comparing two sides


@dataclass
class Region:
    """One region where the two sides' verdicts differ (or cannot be compared)."""

    hook: str
    box: Box
    a: Dict[str, FrozenSet[Decision]]  # verdict -> the rules that decided it, side a
    b: Dict[str, FrozenSet[Decision]]

    @property
    def a_verdict(self) -> str:
        return verdict_of(self.a)

    @property
    def b_verdict(self) -> str:
        return verdict_of(self.b)


def verdict_of(side: Dict[str, FrozenSet]) -> str:
    if not side:
        return "none"
    if len(side) == 1:
        return next(iter(side))
    return V_MIXED


@dataclass
class SideOnly:
    hook: str
    box: Box
    side: Dict[str, FrozenSet[Decision]]


@dataclass
class Comparison:
    """The regions of one hook, classified."""

    hook: str
    differences: List[Region] = field(default_factory=list)
    not_comparable: List[Region] = field(default_factory=list)
    a_only: List[SideOnly] = field(default_factory=list)
    b_only: List[SideOnly] = field(default_factory=list)
    # every region of the overlay, for lookups (tests, explanations)
    regions: List[Tuple[Box, Dict, Dict]] = field(default_factory=list)


def _side_key(side: Dict[str, FrozenSet]) -> FrozenSet:
    return frozenset(side.items())


def _group_merge(entries: List[Tuple[object, Box, object]]) -> List[Tuple[Box, object]]:
    """Merge the boxes of entries with equal keys into the widest boxes; payloads of one key
    are equal."""
    groups: Dict[object, Tuple[object, List[Box]]] = {}
    for key, box, payload in entries:
        if key in groups:
            groups[key][1].append(box)
        else:
            groups[key] = (payload, [box])
    out = []
    for payload, boxes in groups.values():
        for b in merge_tuples(canonical_union(boxes), MASK_DIMS):
            out.append((b, payload))
    return out


def _union_sides(x: Tuple[Dict, Dict], y: Tuple[Dict, Dict]) -> Tuple[Dict, Dict]:
    out = []
    for a, b in zip(x, y):
        d = dict(a)
        for v, decs in b.items():
            d[v] = d.get(v, frozenset()) | decs
        out.append(d)
    return out[0], out[1]


def compare_outcomes(hook: str, a: Sequence[Tuple[Box, str, FrozenSet]], b: Sequence[Tuple[Box, str, FrozenSet]],
                     keep_regions: bool = False) -> Comparison:
    """a, b: projected outcomes (box, verdict, label) of the two sides."""
    # (evaluate_family has merged the boxes of one (verdict, rules) already)
    items: List[Tuple[Box, object]] = [
        (box, (side, verdict, label)) for side, outs in ((0, a), (1, b)) for box, verdict, label in outs
    ]
    comp = Comparison(hook)
    diff_entries = []
    nc_entries = []
    a_only = []
    b_only = []
    for box, tags in overlay(items):
        sides: Tuple[Dict[str, set], Dict[str, set]] = ({}, {})
        for side, verdict, label in tags:
            sides[side].setdefault(verdict, set()).update(label)
        sa = {v: frozenset(d) for v, d in sides[0].items()}
        sb = {v: frozenset(d) for v, d in sides[1].items()}
        if keep_regions:
            comp.regions.append((box, sa, sb))
        if not sb:
            a_only.append((("a", _side_key(sa)), box, sa))
            continue
        if not sa:
            b_only.append((("b", _side_key(sb)), box, sb))
            continue
        if sa == sb or (len(sa) == 1 and sa.keys() == sb.keys()):
            continue  # the same verdict (or the very same rules, e.g. before/after)
        if len(sa) > 1 and len(sb) > 1:
            # not comparable: regions are merged by their verdict sets, rules united
            nc_entries.append(((frozenset(sa), frozenset(sb)), box, (sa, sb)))
        else:
            diff_entries.append(((_side_key(sa), _side_key(sb)), box, (sa, sb)))
    comp.differences = [Region(hook, bx, p[0], p[1]) for bx, p in _group_merge(diff_entries)]
    nc_groups: Dict[object, List[Tuple[Box, object]]] = {}
    for key, box, payload in nc_entries:
        nc_groups.setdefault(key, []).append((box, payload))
    comp.not_comparable = [
        Region(hook, bx, p[0], p[1]) for group in nc_groups.values() for bx, p in merge_with_payload(group, _union_sides, rounds=6)
    ]
    comp.a_only = [SideOnly(hook, bx, p) for bx, p in _group_merge(a_only)]
    comp.b_only = [SideOnly(hook, bx, p) for bx, p in _group_merge(b_only)]
    for lst in (comp.differences, comp.not_comparable, comp.a_only, comp.b_only):
        lst.sort(key=lambda r: region_sort_key(r.box))
    return comp


def region_sort_key(box: Box) -> tuple:
    return (box[PROTO], box[DPORT], box[SPORT], box[ICMP], box[UID], box[GID], -box[STATE], box[SRC], box[DST],
            -box[IIF], -box[OIF])


# ---------------------------------------------------------------------------------------------
# evaluating a family


@dataclass
class FamilySetup:
    """What a family walk needs, as plain data (it can be shipped to a worker process)."""

    family: str
    host: tuple
    host_known: bool


def family_roles(ctx) -> AddressRoles:
    host, known = host_addresses(ctx)
    return AddressRoles(ctx.family, host, known)


def evaluate_family(ctx, hooks: Sequence[str], roles_filter: Dict[str, Tuple[FrozenSet[int], FrozenSet[int]]],
                    projector=project) -> Dict[str, List[Tuple[Box, str, FrozenSet]]]:
    """Walk every hook path of one family; projected outcomes per hook.

    Input and forward share one PREROUTING walk: after it, the routing decision sends packets
    still addressed to the host (their current destination role) to INPUT and the others to
    FORWARD and POSTROUTING, as the kernel does (a DNAT to another host is forwarded)."""
    roles = family_roles(ctx)
    walker = RoleWalker(ctx.rulesets, roles, ctx.universe, ctx.local)
    iface_all = ctx.universe.all_mask
    raw: Dict[str, List[Outcome]] = {h: [] for h in hooks}
    pre = [h for h in ("input", "forward") if h in hooks]
    if pre:
        src = frozenset().union(*[roles_filter[h][0] for h in pre])
        dst = frozenset().union(*[roles_filter[h][1] for h in pre])
        box = start_box(ctx.family, "input", src, dst, iface_all)
        pre_out: List[Outcome] = []
        flows = walker.run_hook("prerouting", [_Flow(box, None, _NO_LABEL)], pre_out)
        for h in pre:
            s_roles, d_roles = (_ROLE_IV[_mask(r)] for r in roles_filter[h])
            for o in pre_out:
                b = box_and(o.origin, ((SRC, s_roles), (DST, d_roles)))
                if b is not None:
                    raw[h].append(Outcome(b, o.verdict, o.label))
            # routing decision on the current destination; the source as it was sent
            routed = []
            for f in flows:
                b = box_and(f.box, ((SRC, s_roles), (DST, d_roles)))
                if b is not None:
                    routed.append(_restrict(f, b))
            routed = merge_flows(routed)
            for hook in HOOK_PATHS[h][1:]:
                routed = walker.run_hook(hook, routed, raw[h])
            raw[h].extend(Outcome(f.origin or f.box, V_ACCEPT, f.label) for f in routed)
    if "output" in hooks:
        s_roles, d_roles = roles_filter["output"]
        box = start_box(ctx.family, "output", s_roles, d_roles, iface_all)
        raw["output"] = walker.run(HOOK_PATHS["output"], [box])
    out: Dict[str, List[Tuple[Box, str, FrozenSet]]] = {}
    for hook in hooks:
        # merged per (verdict, rules) here, in the worker, so the comparison has less to do
        groups: Dict[tuple, List[Box]] = {}
        for o in raw[hook]:
            boxes = groups.setdefault((o.verdict, o.label), [])
            boxes.extend(projector(o.origin, ctx.family))
        out[hook] = [
            (b, verdict, label)
            for (verdict, label), boxes in groups.items()
            for b in merge_tuples(boxes, MASK_DIMS, rounds=3)
        ]
    return out


def _mask(roles: Iterable[int]) -> int:
    m = 0
    for r in roles:
        m |= 1 << r
    return m


def common_roles(contexts: Sequence, hooks: Sequence[str]) -> Tuple[Dict[str, Tuple[FrozenSet[int], FrozenSet[int]]], List[str]]:
    """The roles evaluated per hook: those every side has addresses for. Notes say what was
    left out."""
    roles = [family_roles(c) for c in contexts]
    known = all(r.host_known for r in roles)
    present = frozenset.intersection(*[r.present() for r in roles])
    notes = []
    if HOST not in present and any(HOST in r.present() for r in roles):
        notes.append("the host's own addresses exist in one family only: traffic to or from them is not compared")
    if not known:
        notes.append(
            "offline input without --address: the host's own addresses are unknown, so traffic to or from any "
            "global address is evaluated as possibly the host's"
        )
    out = {}
    for hook in hooks:
        s, d = hook_roles(hook, known)
        out[hook] = (s & present, d & present)
    return out, notes


PARALLEL_RULES = 20000  # rulesets bigger than this (both families together) are walked in parallel


def rule_count(contexts) -> int:
    return sum(rs.rule_count() for c in contexts for rs in c.rulesets)


def evaluate_sides(contexts: Sequence, hooks: Sequence[str], roles_filter, projector=project,
                   parallel: Optional[bool] = None) -> List[Dict[str, List]]:
    if parallel is None:
        parallel = rule_count(contexts) > PARALLEL_RULES
    jobs = [
        (lambda c=c: evaluate_family(c, hooks, roles_filter, projector)) for c in contexts
    ]
    return run_jobs(jobs, parallel)


# ---------------------------------------------------------------------------------------------
# the diff


@dataclass
class DiffResult:
    hooks: List[str]
    comparisons: Dict[str, Comparison]
    universe: object
    roles_filter: Dict[str, Tuple[FrozenSet[int], FrozenSet[int]]]
    notes: List[str] = field(default_factory=list)
    side_names: Tuple[str, str] = (IPV4, IPV6)

    @property
    def differences(self) -> List[Region]:
        return [r for h in self.hooks for r in self.comparisons[h].differences]

    @property
    def not_comparable(self) -> List[Region]:
        return [r for h in self.hooks for r in self.comparisons[h].not_comparable]

    def lookup(self, hook: str, point: Box) -> Tuple[Dict, Dict]:
        """The two sides' verdicts at a neutral point (every dimension a single value)."""
        for box, sa, sb in self.comparisons[hook].regions:
            if contains_point(box, point):
                return sa, sb
        return {}, {}

    def to_json(self) -> Dict:
        a, b = self.side_names
        return {
            "differences": [region_json(r, self, a, b) for r in self.differences],
            "not_comparable": [not_comparable_json(r, self, a, b) for r in self.not_comparable],
            f"{b}_only": [d for h in self.hooks for o in self.comparisons[h].b_only for d in only_json(o, self, b)],
            f"{a}_only": [d for h in self.hooks for o in self.comparisons[h].a_only for d in only_json(o, self, a)],
            "notes": self.notes,
        }


def contains_point(box: Box, point: Box) -> bool:
    for d in range(NDIMS):
        v = box[d]
        p = point[d]
        if d in MASK_DIMS:
            if not v & p:
                return False
        elif not _has(v, p[0][0]):
            return False
    return True


@contextmanager
def _gc_paused():
    """The cyclic garbage collector off for the duration (restored after). Compiling and
    walking a 100k-rule ruleset allocates millions of long-lived tuples and almost no cycles:
    the collector's repeated full passes over them cost a third of the run and free nothing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            # what survived goes straight to the oldest generation (freeze, then unfreeze):
            # otherwise the first young collections after this would still scan all of it
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def diff_contexts(contexts: Dict[str, object], hooks: Sequence[str] = HOOKS, keep_regions: bool = False,
                  parallel: Optional[bool] = None) -> DiffResult:
    """Compare IPv4 with IPv6 on the given hooks. ``contexts``: build_contexts() output."""
    sides = [contexts[IPV4], contexts[IPV6]]
    if parallel is None:
        parallel = rule_count(sides) > PARALLEL_RULES
    with _gc_paused():
        roles_filter, notes = common_roles(sides, hooks)
        results = evaluate_sides(sides, hooks, roles_filter, project, parallel)
        comps = compare_hooks(hooks, results[0], results[1], keep_regions, parallel)
    return DiffResult(list(hooks), comps, sides[0].universe, roles_filter, notes)


def diff_snapshot(snapshot, hooks: Sequence[str] = HOOKS, parallel: Optional[bool] = None) -> DiffResult:
    """Compare IPv4 with IPv6 on a host snapshot (what ``twinwall diff`` runs).

    Each family is parsed and walked in its own process on a large host: the walks need only
    the host's addresses from the other side, not its rules. Interface masks are then read in
    the universe of both families' interface names before the comparison."""
    from twinwall.loader import load_rulesets
    from twinwall.analysis.context import build_contexts

    # an empty dump is a ruleset (no tables: nothing filters); no dump at all is not
    missing = [f for f in (IPV4, IPV6) if not snapshot.rulesets_for(f)]
    if missing:
        raise _missing_rules(missing)
    if parallel is None:
        parallel = worth_forking(snapshot)
    bare = build_contexts(snapshot, {})  # addresses and interfaces: all the roles need

    def walk(family: str):
        rulesets = load_rulesets(snapshot, keep_text=False, families=(family,))
        ctx = build_contexts(snapshot, rulesets)[family]
        if not ctx.rules_known:
            raise _missing_rules([family])
        return evaluate_family(ctx, hooks, roles_filter), ctx.universe

    with _gc_paused():
        roles_filter, notes = common_roles([bare[IPV4], bare[IPV6]], hooks)
        (out4, u4), (out6, u6) = run_jobs([lambda: walk(IPV4), lambda: walk(IPV6)], parallel)
        universe = InterfaceUniverse(u4.specs() + u6.specs())
        out4 = _in_universe(out4, u4, universe)
        out6 = _in_universe(out6, u6, universe)
        comps = compare_hooks(hooks, out4, out6, False, parallel)
    return DiffResult(list(hooks), comps, universe, roles_filter, notes)


def _missing_rules(families: Sequence[str]) -> InputError:
    what = " and ".join("iptables" if f == IPV4 else "ip6tables" for f in families)
    return InputError(
        f"no {what} ruleset was read: diff compares both families "
        f"(give --iptables and --ip6tables, --nft, or a snapshot with both)"
    )


def _in_universe(outcomes: Dict[str, List], own: InterfaceUniverse, universe: InterfaceUniverse) -> Dict[str, List]:
    """One family's outcomes, walked in the interface universe ``own``, with their interface
    masks read in ``universe`` (a refinement of it)."""
    if own.labels == universe.labels:
        return outcomes
    tr = own.refine(universe)
    return {
        hook: [(b[:IIF] + (tr(b[IIF]), tr(b[OIF])) + b[OIF + 1 :], verdict, label) for b, verdict, label in items]
        for hook, items in outcomes.items()
    }


def compare_hooks(hooks: Sequence[str], a: Dict[str, List], b: Dict[str, List], keep_regions: bool = False,
                  parallel: bool = False) -> Dict[str, Comparison]:
    """compare_outcomes for every hook; with ``parallel``, input is compared in a worker while
    this process compares the other hooks."""
    if not parallel or len(hooks) < 2 or "input" not in hooks:
        return {h: compare_outcomes(h, a[h], b[h], keep_regions) for h in hooks}
    rest = [h for h in hooks if h != "input"]
    mine, theirs = run_jobs([
        lambda: {h: compare_outcomes(h, a[h], b[h], keep_regions) for h in rest},
        lambda: compare_outcomes("input", a["input"], b["input"], keep_regions),
    ])
    mine["input"] = theirs
    return {h: mine[h] for h in hooks}


# ---------------------------------------------------------------------------------------------
# describing regions


def _ranges(ivs: tuple) -> List[List[int]]:
    return [[lo, hi] for lo, hi in ivs]


def protocol_name(ivs: tuple) -> str:
    names = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp", 33: "dccp", 136: "udplite", 47: "gre", 50: "esp", 51: "ah"}
    if iv_sub(PROTO_ALL, ((58, 58),)) == iv_sub(ivs, ((58, 58),)):
        return "any"
    if len(ivs) == 1 and ivs[0][0] == ivs[0][1]:
        n = ivs[0][0]
        return names.get(n, str(n))
    missing = iv_sub(iv_sub(PROTO_ALL, ((58, 58),)), ivs)
    if len(missing) <= 3 and sum(hi - lo + 1 for lo, hi in missing) <= 6:
        return "any but " + ",".join(names.get(n, str(n)) for lo, hi in missing for n in range(lo, hi + 1))
    parts = []
    for lo, hi in ivs:
        parts.append(names.get(lo, str(lo)) if lo == hi else f"{lo}-{hi}")
    return ",".join(parts)


def icmp_names(ivs: tuple) -> List[str]:
    """Names of canonical ICMP types; runs of unnamed types as one 'types A-B' entry."""
    out: List[str] = []
    run: List[int] = []
    run_prefix = ""

    def flush() -> None:
        if run:
            lo, hi = run[0], run[-1]
            out.append(f"{run_prefix}type {lo}" if lo == hi else f"{run_prefix}types {lo}-{hi}")
            run.clear()

    for lo, hi in ivs:
        for t in range(lo, hi + 1):
            if t >= V6_ONLY_BASE:
                prefix, num, name = "ipv6:", t - V6_ONLY_BASE, ICMP6_NAMES.get(t - V6_ONLY_BASE)
            elif t == PTB:
                prefix, num, name = "", t, ICMP4_NAMES[PTB]
            else:
                twinned = t in ICMP6_TO_4.values()
                prefix, num, name = ("" if twinned else "ipv4:"), t, ICMP4_NAMES.get(t)
            if name is None:
                if run and (prefix != run_prefix or num != run[-1] + 1):
                    flush()
                run_prefix = prefix
                run.append(num)
                continue
            flush()
            out.append(prefix + name)
    flush()
    return out


def only_classes(box: Box) -> List[Tuple[str, Box]]:
    """An ICMP region one family has no twin for, cut into classes: 'ndp' and 'mld' (ICMPv6
    that IPv4 does without), 'no twin' for the rest."""
    out = []
    ndp = _roles_iv(V6_ONLY_BASE + t for t in NDP_TYPES)
    mld = _roles_iv(V6_ONLY_BASE + t for t in MLD_TYPES)
    rest = box[ICMP]
    for name, cls in (("ndp", ndp), ("mld", mld)):
        part = iv_and(rest, cls)
        if part:
            out.append((name, box[:ICMP] + (part,) + box[ICMP + 1 :]))
            rest = iv_sub(rest, cls)
    if rest:
        out.append(("no twin", box[:ICMP] + (rest,) + box[ICMP + 1 :]))
    return out


def state_names(mask: int) -> List[str]:
    return [n for n, bit in CT_NAMES.items() if mask & bit]


def _ifaces(mask: int, universe) -> List[str]:
    if mask == universe.all_mask:
        return ["*"]
    return universe.label_list(mask)


def _roles(ivs: tuple, full: FrozenSet[int]) -> List[str]:
    ids = {r for lo, hi in ivs for r in range(lo, hi + 1)}
    if ids >= full:
        return ["*"]
    return [ROLE_NAMES[r] for r in sorted(ids)]


def region_fields(box: Box, hook: str, result: DiffResult) -> Dict:
    src_full, dst_full = result.roles_filter[hook]
    proto = box[PROTO]
    d = {
        "hook": hook,
        "protocol": protocol_name(proto),
        "protocols": _ranges(proto),
        "dports": _ranges(box[DPORT]),
        "sports": _ranges(box[SPORT]),
        "state": state_names(box[STATE]),
        "iif": _ifaces(box[IIF], result.universe) if hook != "output" else None,
        "oif": _ifaces(box[OIF], result.universe) if hook != "input" else None,
        "uid": _ranges(box[UID]) if hook == "output" else None,
        "gid": _ranges(box[GID]) if hook == "output" else None,
        "icmp_type": icmp_names(box[ICMP]) if _has(proto, 1) else None,
        "src": _roles(box[SRC], src_full),
        "dst": _roles(box[DST], dst_full),
    }
    return d


def _rule_text(decs: FrozenSet[Decision]) -> str:
    if not decs:
        return "no rule (no chain decides it)"
    return "; ".join(sorted(d.describe() for d in decs))


def side_rule(side: Dict[str, FrozenSet[Decision]]) -> str:
    if len(side) == 1:
        return _rule_text(next(iter(side.values())))
    return "; ".join(f"{v}: {_rule_text(side[v])}" for v in sorted(side))


def _decided_by(side: Dict[str, FrozenSet[Decision]]) -> List[Dict]:
    out = []
    for v in sorted(side):
        for dec in sorted(side[v], key=lambda x: x.describe()):
            d = dec.to_dict()
            d["verdict"] = v
            out.append(d)
    return out


def region_json(r: Region, result: DiffResult, a: str, b: str) -> Dict:
    d = region_fields(r.box, r.hook, result)
    d[a] = r.a_verdict
    d[b] = r.b_verdict
    d[f"{a}_rule"] = side_rule(r.a)
    d[f"{b}_rule"] = side_rule(r.b)
    d[f"{a}_verdicts"] = sorted(r.a)
    d[f"{b}_verdicts"] = sorted(r.b)
    d[f"{a}_decided_by"] = _decided_by(r.a)
    d[f"{b}_decided_by"] = _decided_by(r.b)
    return d


def not_comparable_json(r: Region, result: DiffResult, a: str, b: str) -> Dict:
    d = region_json(r, result, a, b)
    d["reason"] = (
        "the verdict depends on addresses (or on matches twinwall cannot decide) in both families: "
        "the rules cannot be compared by role"
    )
    return d


def only_json(o: SideOnly, result: DiffResult, name: str) -> List[Dict]:
    out = []
    for cls, box in only_classes(o.box):
        d = region_fields(box, o.hook, result)
        d["class"] = cls
        d[name] = verdict_of(o.side)
        d[f"{name}_rule"] = side_rule(o.side)
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# example packets


def example_packet(ctx, box: Box, rnd=None) -> Optional[Box]:
    """One concrete packet of ``ctx.family`` inside a neutral region (every dimension a single
    value), for checking a region against the evaluator; None when the family has no packet
    there (an ICMP type without a twin)."""
    import random

    rnd = rnd or random.Random(0)
    roles = family_roles(ctx)

    def pick(ivs: tuple) -> int:
        lo, hi = ivs[rnd.randrange(len(ivs))]
        return rnd.choice((lo, hi, rnd.randint(lo, hi)))

    out = list(box)
    for dim in (SRC, DST):
        ivs = roles.sets.get(pick(box[dim]))
        if not ivs:
            return None
        a = pick(ivs)
        out[dim] = ((a, a),)
    for dim in (SPORT, DPORT, UID, GID):
        v = pick(box[dim])
        out[dim] = ((v, v),)
    for dim in (IIF, OIF, STATE):
        bits = [i for i in range(box[dim].bit_length()) if box[dim] >> i & 1]
        out[dim] = 1 << rnd.choice(bits)
    proto = pick(box[PROTO])
    if proto == 1:
        c = pick(box[ICMP])
        if ctx.family == IPV6:
            out[PROTO] = ((58, 58),)
            six = [t for t, v in ICMP6_TO_4.items() if v == c]
            if c >= V6_ONLY_BASE:
                six = [c - V6_ONLY_BASE]
            if not six:
                return None
            t, code = six[0], rnd.randint(0, 255)
        else:
            out[PROTO] = ((1, 1),)
            if c >= V6_ONLY_BASE:
                return None
            if c == PTB:
                t, code = 3, 4
            else:
                t = c
                code = rnd.choice([x for x in range(256) if x != 4]) if c == 3 else rnd.randint(0, 255)
        v = (t << 8) | code
        out[ICMP] = ((v, v),)
    else:
        out[PROTO] = ((proto, proto),)
        out[ICMP] = ((0, 0),)
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# for the audit


def egress_forward_differences(contexts: Dict[str, object]) -> List[str]:
    """One line per hook (forward, output) whose IPv4 and IPv6 verdicts differ somewhere, with
    the number of regions and one example; [] when they agree or a family's rules are unknown.

    For the audit's finding that points at ``twinwall diff``."""
    if not all(getattr(contexts.get(f), "rules_known", False) for f in (IPV4, IPV6)):
        return []
    result = diff_contexts(contexts, hooks=("forward", "output"))
    out = []
    for hook in result.hooks:
        diffs = result.comparisons[hook].differences
        if not diffs:
            continue
        ex = diffs[0]
        more = f" ({len(diffs)} regions)" if len(diffs) > 1 else ""
        out.append(
            f"{hook}{more}, e.g. {describe_region(ex.box, hook, result)}: IPv4 {ex.a_verdict} "
            f"({side_rule(ex.a)}), IPv6 {ex.b_verdict} ({side_rule(ex.b)})"
        )
    return out


def describe_region(box: Box, hook: str, result: DiffResult) -> str:
    """One line: protocol, ports, ICMP types, state, interfaces, uid/gid, roles."""
    f = region_fields(box, hook, result)
    parts = [f["protocol"]]
    if box[DPORT] != PORT_ALL:
        parts.append("dport " + ranges_text_neg(box[DPORT], PORT_ALL))
    if box[SPORT] != PORT_ALL:
        parts.append("sport " + ranges_text_neg(box[SPORT], PORT_ALL))
    if f["icmp_type"] is not None and box[ICMP] != canonical_icmp(ICMP_ALL, IPV4) and box[ICMP] != TWINNED:
        parts.append("type " + ",".join(f["icmp_type"]))
    if box[STATE] != CT_ALL:
        parts.append("state " + ",".join(f["state"]))
    if f["iif"] and f["iif"] != ["*"]:
        parts.append("in " + ",".join(f["iif"]))
    if f["oif"] and f["oif"] != ["*"]:
        parts.append("out " + ",".join(f["oif"]))
    if hook == "output" and box[UID] != ID_ALL:
        parts.append("uid " + ranges_text_neg(box[UID], ID_ALL))
    if hook == "output" and box[GID] != ID_ALL:
        parts.append("gid " + ranges_text_neg(box[GID], ID_ALL))
    if f["src"] != ["*"]:
        parts.append("from " + ",".join(f["src"]))
    if f["dst"] != ["*"]:
        parts.append("to " + ",".join(f["dst"]))
    return " ".join(parts)


def ranges_text_neg(ivs: tuple, full: tuple) -> str:
    """'25', '1024-65535', or '!1000' when the set is everything but a few values."""
    missing = iv_sub(full, ivs)
    if missing and len(missing) < len(ivs) and len(missing) <= 2:
        return "!" + ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in missing)
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ivs)


# ---------------------------------------------------------------------------------------------
# before / after: two snapshots of one host


@dataclass
class ServiceChange:
    protocol: str
    address: str
    port: int
    family: str
    before: str
    after: str

    @property
    def change(self) -> str:
        rank = {"filtered": 0, "local-only": 0, "not-bound": 0, "disabled": 0, "restricted": 1, "open": 2}
        rb, ra = rank.get(self.before), rank.get(self.after)
        if self.before == "absent":
            return "new service"
        if self.after == "absent":
            return "service gone"
        if rb is not None and ra is not None:
            if ra > rb:
                return "opened"
            if ra < rb:
                return "closed"
        return "changed"

    def to_json(self) -> Dict:
        return {
            "protocol": self.protocol,
            "address": self.address,
            "port": self.port,
            "family": self.family,
            "before": self.before,
            "after": self.after,
            "change": self.change,
        }


@dataclass
class ChangeResult:
    services: List[ServiceChange]
    families: Dict[str, DiffResult]  # per family: before (a) vs after (b)
    notes: List[str] = field(default_factory=list)

    def region_change(self, r: Region) -> str:
        a_acc = V_ACCEPT in r.a
        b_acc = V_ACCEPT in r.b
        if b_acc and not a_acc:
            return "opened"
        if a_acc and not b_acc:
            return "closed"
        return "changed"

    def has_changes(self) -> bool:
        return bool(self.services) or any(res.differences or res.not_comparable for res in self.families.values())

    def to_json(self) -> Dict:
        fams = {}
        for fam, res in self.families.items():
            entries = {"opened": [], "closed": [], "changed": []}
            for r in res.differences + res.not_comparable:
                d = region_json(r, res, "before", "after")
                d["change"] = self.region_change(r)
                entries[d["change"]].append(d)
            fams[fam] = entries
        return {
            "services": [s.to_json() for s in self.services],
            "families": fams,
            "notes": self.notes,
        }


def _service_statuses(report) -> Dict[Tuple, str]:
    out = {}
    for svc in report.services:
        s = svc.socket
        for fam, verdict in svc.verdicts.items():
            out[(s.protocol, s.address, s.port, s.family, fam)] = verdict.status
    return out


def shared_contexts(before_snap, before_rs, after_snap, after_rs) -> Tuple[Dict, Dict]:
    """Family contexts of two snapshots over one interface universe (so interface masks of the
    two sides mean the same)."""
    from twinwall.analysis.context import build_contexts
    from twinwall.analysis.interfaces import InterfaceUniverse

    specs = set(before_snap.interfaces) | set(after_snap.interfaces)
    for rss in list(before_rs.values()) + list(after_rs.values()):
        for rs in rss:
            specs.update(rs.interface_specs)
    universe = InterfaceUniverse(specs)
    out = []
    for snap, rss in ((before_snap, before_rs), (after_snap, after_rs)):
        ctxs = build_contexts(snap, rss)
        names = [i for i in snap.interfaces if i != "lo"]
        remote = universe.of_names(names) if snap.interfaces else universe.non_loopback()
        out.append({f: replace(c, universe=universe, remote_ifaces=remote) for f, c in ctxs.items()})
    return out[0], out[1]


def compare_snapshots(before_snap, after_snap, hooks: Sequence[str] = HOOKS) -> ChangeResult:
    """What a change between two snapshots of one host opened or closed, per family."""
    from twinwall.analysis.audit import audit_snapshot
    from twinwall.loader import load_rulesets

    notes: List[str] = []
    rep_b = audit_snapshot(before_snap)
    rep_a = audit_snapshot(after_snap)
    sb, sa = _service_statuses(rep_b), _service_statuses(rep_a)
    services = []
    for key in sorted(set(sb) | set(sa), key=lambda k: (k[0], k[2], k[1], k[3], k[4])):
        before, after = sb.get(key, "absent"), sa.get(key, "absent")
        if before != after:
            proto, addr, port, sock_family, fam = key
            services.append(ServiceChange(proto, addr, port, fam, before, after))
    rs_b = load_rulesets(before_snap)
    rs_a = load_rulesets(after_snap)
    ctx_b, ctx_a = shared_contexts(before_snap, rs_b, after_snap, rs_a)
    families = {}
    for fam in (IPV4, IPV6):
        if not ctx_b[fam].rules_known or not ctx_a[fam].rules_known:
            notes.append(f"{fam}: no ruleset in {'the before' if not ctx_b[fam].rules_known else 'the after'} snapshot: rules not compared")
            continue
        sides = [ctx_b[fam], ctx_a[fam]]
        roles_filter, fam_notes = common_roles(sides, hooks)
        notes.extend(f"{fam}: {n}" for n in fam_notes)
        with _gc_paused():
            results = evaluate_sides(sides, hooks, roles_filter, project)
            comps = {h: compare_outcomes(h, results[0][h], results[1][h]) for h in hooks}
        families[fam] = DiffResult(list(hooks), comps, ctx_b[fam].universe, roles_filter, [], ("before", "after"))
    return ChangeResult(services, families, list(dict.fromkeys(notes)))
