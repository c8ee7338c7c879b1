"""One family's rulesets walked with addresses at role level (see ``analysis.roles``).

The diff's algebra on the netfilter walk (``analysis.netfilter_walk``, which the audit's
exact walk, ``analysis.evaluator``, shares): a flow is a region of packets whose addresses are
roles, with the packets as they were sent and the rule (or policy) that let it through the last
base chain. It keeps only what a comparison needs, which lets it merge regions the evaluator
must keep apart and walk 100k-rule rulesets over the whole packet space. A rule whose prefix
covers part of a role *may* match: packets of that role are followed both ways, as the
evaluator follows a match it cannot decide.
"""

from __future__ import annotations

from itertools import count, repeat
from operator import is_
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

from twinwall.analysis.netfilter_walk import (
    V_ACCEPT,
    Ended,
    NetfilterWalk,
    narrow_origin,
    nat_rewrite,
    remap_repeats,
)
from twinwall.analysis.chain_index import ChainIndex
from twinwall.analysis.labels import RuleRun
from twinwall.netfilter.packetset import (
    CT_PRE_ALL,
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
    Box,
    box_and,
    ct_post,
    ct_pre,
    ct_untrack,
    merge_boxes,
    split,
)
from twinwall.analysis.roles import GLOBAL, HOST, LOOPBACK, AddressRoles, role_set
from twinwall.netfilter.ruleset import (
    ACCEPT,
    CONTINUE,
    DNAT,
    DROP,
    GOTO,
    JUMP,
    REDIRECT,
    REJECT,
    RETURN,
    UNKNOWN,
    BaseChain,
    Chain,
    Decision,
    MATCHES_ANY,
    Rule,
    RuleList,
    Ruleset,
)


class _XRule:
    """A compiled rule with its address constraints lifted to roles: ``must`` constraints match
    for certain, ``may`` constraints only for some addresses of a role (or the rule has a match
    twinwall cannot decide)."""

    __slots__ = ("must", "may", "alternatives", "action", "target", "nat_dst", "nat_port", "rule", "source",
                 "_decision")

    # what the walk asks of a rule (netfilter_walk.NetfilterWalk): undecidable matches are
    # already in ``may``
    unknown = ()

    def __init__(self, must: tuple, may: tuple, rule: Rule, source: str, nat_dst: Any = None, nat_port: Any = None):
        self.must = must
        self.may = may
        self.alternatives = must + may if may else must  # every way a packet may match
        # a target twinwall does not model changes nothing the comparison sees
        self.action = CONTINUE if rule.action == UNKNOWN else rule.action
        self.target = rule.target
        self.nat_dst = nat_dst
        self.nat_port = nat_port
        self.rule = rule
        self.source = source
        # (a RuleRun when this rule stands for a run of rules: see _lift_collapsed)
        self._decision: Any = None

    @property
    def decision(self) -> Any:
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
_TEST_ORDER = {DPORT: 0, SPORT: 1, ICMP: 2, UID: 3, GID: 4, PROTO: 5, IIF: 6, OIF: 7, STATE: 8, DST: 9, SRC: 10, HOPLIMIT: 11}


_PERMUTATIONS: Dict[tuple, Optional[tuple]] = {}


def _ordered(c: tuple) -> tuple:
    if len(c) < 2:
        return c
    dims = tuple([p[0] for p in c])
    if dims in _PERMUTATIONS:
        perm = _PERMUTATIONS[dims]
    else:
        order = tuple(sorted(range(len(c)), key=lambda i: _TEST_ORDER[dims[i]]))
        perm = _PERMUTATIONS[dims] = None if order == tuple(range(len(c))) else order
    if perm is None:
        return c
    return tuple([c[i] for i in perm])


def _names_addresses(alts: tuple) -> bool:
    for c in alts:
        for dim, _ in c:
            if dim == SRC or dim == DST:
                return True
    return False


def _lift_alts(alts: tuple, unknown: bool, roles: AddressRoles) -> Tuple[tuple, tuple]:
    """(must, may) of a rule's alternatives (see _XRule)."""
    if not unknown and not _names_addresses(alts):
        return alts, ()  # the common case: no address in any constraint, nothing to lift
    must: List = []
    may: List = []
    for c in alts:
        m, p = _lift_constraint(c, roles)
        if unknown:
            if p is not None:
                may.append(p)
            elif m is not None:
                may.append(m)
            continue
        if m is not None:
            must.append(m)
        if p is not None:
            may.append(p)
    return tuple(must), tuple(may)


def _lift_single(alts: tuple, unknown: bool, roles: AddressRoles, cache: Dict) -> Tuple[tuple, tuple]:
    """What _lift_alts makes of one constraint of one match, directly: the bulk of a big
    ruleset. ``cache`` (shared by the rules of a walk) keeps each result once: an address match
    by its roles (kube-proxy's ~90,000 "-s PREFIX -j KUBE-EXT-X" name 86,000 distinct prefixes,
    of a handful of roles: one lifted copy each, not one per prefix), any other by the match
    itself (a few hundred distinct ones over 100k rules)."""
    c = alts[0][0]
    dim = c[0]
    if dim != SRC and dim != DST:
        key: tuple = (c, unknown)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = ((), alts) if unknown else (alts, ())
        return hit
    must_v, may_v = roles.classify(c[1])
    key = (dim, must_v, may_v, unknown)
    hit = cache.get(key)
    if hit is None:
        if not may_v:
            hit = (), ()
        elif unknown or must_v != may_v:
            must = (((dim, must_v),),) if must_v and not unknown else ()
            hit = must, (((dim, may_v),),)
        else:
            hit = (((dim, must_v),),), ()
        cache[key] = hit
    return hit


def _lift_rule(rule, source: str, roles: AddressRoles, cache: Dict) -> _XRule:
    """``cache``: see _lift_single."""
    alts = rule.alternatives
    action = rule.action
    unknown = bool(rule.unknown)
    if len(alts) == 1 and len(alts[0]) == 1 and action != DNAT and action != REDIRECT:
        # one match ("-s PREFIX", "-p tcp", "--ctstate NEW"...): the bulk of big rulesets
        hit = _lift_single(alts, unknown, roles, cache)
        return _XRule(hit[0], hit[1], rule, source)
    alts = tuple(map(_ordered, alts))
    if not unknown and action != DNAT and action != REDIRECT and not _names_addresses(alts):
        return _XRule(alts, (), rule, source)  # the common case (as in _lift_alts), on the hot path
    must, may = _lift_alts(alts, unknown, roles)
    nat_dst = nat_port = None
    if action in (DNAT, REDIRECT) and rule.nat_to:
        dst, nat_port = rule.nat_to
        if dst is not None:
            nat_dst = roles.classify(dst)[1] or role_set([GLOBAL])
    return _XRule(must, may, rule, source, nat_dst, nat_port)


# actions a run of indistinguishable rules may share: each rule ends the very same copies
_RUN_ACTIONS = frozenset((DROP, REJECT, ACCEPT))
# the stretches of rules (ruleset.RuleStretch) _lift_collapsed reads from their values: a
# parse for the role walk keeps those only (loader.load_rulesets)
LIFTED_STRETCHES = _RUN_ACTIONS


def _runs_from(xr: _XRule) -> bool:
    """Whether a lifted rule can be part of a run (_lift_collapsed): it only *may* match (its
    prefixes cover part of a role), and it ends what it matches."""
    r = xr.rule
    return (xr.action in _RUN_ACTIONS and not xr.must and bool(xr.may) and not r.unknown and not r.logs
            and xr.nat_dst is None and xr.nat_port is None)


def _lift_collapsed(rules: Sequence[Rule], source: str, roles: AddressRoles, cache: Dict) -> List[_XRule]:
    """A chain's rules lifted (_lift_rule), each run of consecutive rules that are
    indistinguishable at role level - the same "may" constraints, the same terminal action
    (DROP, REJECT, ACCEPT), consecutive numbers - as its first rule alone, deciding for the run
    (a RuleRun, analysis.labels).

    A "may" match leaves the flows as they were and sends copies of them into the rule: each
    rule of such a run ends the very same copies as the first, with its own Decision. Walked
    rule by rule a blocklist's 100,000 "-s ADDR/32 -j DROP" end 100,000 copies of each flow,
    one Outcome each; as a run, one whose label is the RuleRun. A rule that must match for some
    packets ends them alone (the next identical rule never sees them); a LOG, a jump, a NAT
    rule or one with a match twinwall cannot decide is not part of a run (_runs_from).

    (A rule of one address match that continues a run is told by its roles alone, not lifted:
    a blocklist's rules, one "-s ADDR" each. Of a RuleList's stretches, ruleset.RuleStretch,
    such rules are read as their values and texts: their Rules are not made.)"""
    out: List[_XRule] = []
    classify = roles.classify
    head: Optional[_XRule] = None  # the first rule of the run going on, if any
    texts: List[str] = []  # the texts of its rules
    # of the run going on: its rules' action, where the next one is, and, when its first rule
    # is one address match, its dimension and roles (what a rule like it must classify as)
    action = table = chain = None
    after = 0
    dim: Optional[int] = None
    pair: Any = None
    piece: Optional[Tuple[int, int, int, int]] = None
    for item in _items(rules):
        if type(item) is tuple:  # (a stretch's rule: its number, its value, the stretch, which)
            number, value, st, k = item
            if head is not None and number == after and st.action == action and st.dim == dim \
                    and _joins(value, piece, pair, classify):
                texts.append(st.text(k))
                after += 1
                continue
            r = rules[number - 1]
        else:
            r = item
        if head is not None:
            if r.action == action and r.number == after and not r.unknown and not r.logs \
                    and r.table == table and r.chain == chain:
                alts = r.alternatives
                if dim is not None and len(alts) == 1 and len(alts[0]) == 1 and alts[0][0][0] == dim \
                        and _joins(alts[0][0][1], piece, pair, classify):
                    texts.append(r.text)
                    after += 1
                    continue
                xr = _lift_rule(r, source, roles, cache)
                if _runs_from(xr) and (xr.may is head.may or xr.may == head.may):
                    texts.append(r.text)
                    after += 1
                    continue
            else:
                xr = _lift_rule(r, source, roles, cache)
            if len(texts) > 1:
                head._decision = _rule_run(head.rule, texts, source)
            head = None
        else:
            xr = _lift_rule(r, source, roles, cache)
        out.append(xr)
        if _runs_from(xr):
            head, texts = xr, [r.text]
            action, table, chain, after = r.action, r.table, r.chain, r.number + 1
            alts = r.alternatives
            dim = pair = piece = None
            if len(alts) == 1 and len(alts[0]) == 1 and alts[0][0][0] in (SRC, DST):
                dim = alts[0][0][0]
                pair = classify(alts[0][0][1])
                piece = roles.segment(alts[0][0][1])
    if head is not None and len(texts) > 1:
        head._decision = _rule_run(head.rule, texts, source)
    return out


def _items(rules: Sequence[Rule]) -> Iterable[Any]:
    """A chain's rules as _lift_collapsed reads them: each Rule, but a RuleList's stretch of
    rules a run may hold (a terminal action, an address dimension) as (number, value, the
    stretch, its index in it), its Rules not made."""
    if type(rules) is not RuleList or not rules.stretches:
        return rules
    return _stretched_items(rules)


def _stretched_items(rules: RuleList) -> Iterator[Any]:
    at = 0
    for st in rules.stretches:
        yield from rules[at:st.start]
        if st.action in _RUN_ACTIONS and (st.dim == SRC or st.dim == DST):
            first = st.start + 1
            yield from zip(range(first, first + len(st.values)), st.values, repeat(st), count())
        else:
            yield from rules[st.start:st.end]
        at = st.end
    yield from rules[at:]


def _joins(value: tuple, piece: Optional[Tuple[int, int, int, int]], pair: Any, classify: Callable) -> bool:
    """Whether an address match of ``value`` is indistinguishable at role level from the run's
    first rule, whose roles are ``pair`` and piece of its role ``piece``."""
    if piece is not None and len(value) == 1:
        # inside the first rule's piece of its role, not covering the role: classified as it
        # is (AddressRoles.segment), without classifying
        lo, hi = value[0]
        if piece[0] <= lo and hi <= piece[1] and not (lo <= piece[2] and piece[3] <= hi):
            return True
    got = classify(value)
    return got is pair or got == pair


def _rule_run(first: Rule, texts: List[str], source: str) -> RuleRun:
    return RuleRun(first.table, first.chain, source, first.action, first.number, texts=tuple(texts))


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
        # the ACCEPT rule/policy that let it through the last base chain (a Decision, or the
        # RuleRun of a run of rules: analysis.labels)
        self.label = label


_NO_LABEL: FrozenSet[Decision] = frozenset()
_SOME = MATCHES_ANY  # what a lifted rule of a walk that owns its rules keeps of its constraints


def _restrict(f: _Flow, box: Box) -> _Flow:
    if box is f.box:
        return f
    if f.origin is None:
        return _Flow(box, None, f.label)
    return _Flow(box, narrow_origin(f.origin, f.box, box), f.label)


def merge_flows(flows: List[_Flow]) -> List[_Flow]:
    if len(flows) < 2:
        return flows
    plain: Dict[FrozenSet, List[_Flow]] = {}
    nat: Dict[FrozenSet, List[Tuple[_Flow, tuple]]] = {}
    for f in flows:
        if f.origin is None:
            plain.setdefault(f.label, []).append(f)
        else:
            nat.setdefault(f.label, []).append((f, f.box + f.origin))
    out: List[_Flow] = []
    # (a label with one flow is kept as it is: a base chain's end has thousands of labels, one
    # flow each, which merging would only copy)
    for label, members in plain.items():
        if len(members) == 1:
            out.append(members[0])
            continue
        out.extend(_Flow(b, None, label) for b in merge_tuples([f.box for f in members], MASK_DIMS, rounds=2))
    for label, pairs in nat.items():
        if len(pairs) == 1:
            out.append(pairs[0][0])
            continue
        for p in merge_tuples([pair for _, pair in pairs], _MASK22, rounds=2):
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


def _with_state(f: _Flow, change: Callable[[int], int]) -> _Flow:
    """The flow with ``change`` applied to its STATE dimension (and its origin's)."""
    box = f.box[:STATE] + (change(f.box[STATE]),) + f.box[STATE + 1:]
    o = f.origin
    if o is None:
        return _Flow(box, None, f.label)
    return _Flow(box, o[:STATE] + (change(o[STATE]),) + o[STATE + 1:], f.label)


class Outcome(NamedTuple):
    """Packets as they were sent (role level), their verdict and the rules that decided it.

    A named tuple: the (origin, verdict, label) that the comparison projects as it is, and a
    walk of many small chains makes one per rule (13,000 a family on the chains shape). The
    label's items are Decisions and RuleRuns (analysis.labels)."""

    origin: Box
    verdict: str
    label: FrozenSet[Decision]


def _repeated_jumps(rules: List[_XRule]) -> Dict[int, int]:
    """RoleWalker._repeats of one chain's lifted rules: {position: the position after the run}
    of each "may" jump identical to the rule before it."""
    repeat = [False] + [
        xr.action in (JUMP, GOTO)
        and not xr.must
        and xr.action == prev.action
        and xr.target == prev.target
        and not prev.must
        and xr.may == prev.may
        for prev, xr in zip(rules, rules[1:])
    ]
    repeats: Dict[int, int] = {}
    end = len(rules)
    for i in range(len(rules) - 1, -1, -1):
        if repeat[i]:
            repeats[i] = end
        else:
            end = i
    return repeats


_WALKED_ONCE = object()  # RoleWalker._index: the chain was walked once, without an index
_UNCITED_ACTIONS = frozenset((JUMP, GOTO, RETURN))
_UNCITED = Decision("", "", None, None, None)  # (see RoleWalker.decision)


class RoleWalker(NetfilterWalk):
    """Walks one family's rulesets with addresses at role level."""

    MERGE_AT = 2  # merge the flows of a chain walk once there are more than this
    # (its jump memo and merging after every rule keep the many-small-chains shape linear)
    PARK = False
    # walk each run of rules indistinguishable at role level as one rule (_lift_collapsed);
    # False walks them rule by rule (the tests compare the two)
    collapse_runs = True

    def __init__(self, rulesets: Sequence[Ruleset], roles: AddressRoles, universe: Any, local_addresses: Any,
                 owns_rules: bool = False):
        super().__init__(rulesets, universe, local_addresses)
        self.roles = roles
        # the rulesets were parsed for this walk alone (diff_snapshot's): a lifted chain's rules
        # let go of their own constraints (see lifted)
        self.owns_rules = owns_rules
        self._lifted: Dict[int, List[_XRule]] = {}
        # {id(chain): {position: the position after the run}} of the "may" jumps identical to
        # the rule before them (kube-proxy's loadBalancerSourceRanges: "-s PREFIX -j KUBE-EXT-X"
        # for hundreds of prefixes, all one role-level rule)
        self._repeats: Dict[int, Dict[int, int]] = {}
        self._lift_cache: Dict[tuple, Tuple[tuple, tuple]] = {}
        self._index: Dict[int, Any] = {}  # id(chain) -> ChainIndex over its lifted rules, or False
        self._keep: List = []  # keeps lifted chains alive so their ids stay unique
        # (chain, flow) -> what a jump with that flow returns and what ends in the chain. A
        # region that several rules may send into the same chain (kube-proxy's
        # loadBalancerSourceRanges: hundreds of "-s PREFIX -j KUBE-EXT-X"), or that several
        # hooks send there (KUBE-SERVICES from PREROUTING and OUTPUT), is walked through it once.
        self._memo: Dict[tuple, Tuple[List[_Flow], List[Ended]]] = {}
        # (flows, may constraints, the copies that entered) of the last "may"-only match
        self._last_may: tuple = (None, None, None)
        # the jump memo hands the same ended flows to every path that reaches a chain: ended
        # flows are deduplicated (NetfilterWalk.run_hook) once it has (see jump). Until then
        # there is nothing to drop, and a hook that ends one flow per rule of thousands of
        # small chains would build a dict of all of them for nothing.
        self.dedupe_ended = False
        # handed from match to jump: (flows, the copies that entered, the rest) of the last
        # match with a "must" constraint; and from jump to rejoin: (the flows the jump sent back,
        # the rest, the flows before the match) when it sent back exactly the copies that
        # entered it (see rejoin). (The walk's match/jump/rejoin interface is the evaluator's
        # too: these ride beside it, read only by the step right after the one that set them.)
        self._split_for_jump: tuple = (None, None, None)
        self._whole_for_rejoin: tuple = (None, None, None)
        if roles.host_known:
            self.local_roles = role_set([HOST, LOOPBACK])
        else:
            self.local_roles = role_set([HOST, LOOPBACK, GLOBAL])

    # -- entry points ----------------------------------------------------------------------

    def run(self, hooks: Sequence[str], boxes: Sequence[Box]) -> List[Outcome]:
        flows = [_Flow(b, None, _NO_LABEL) for b in boxes]
        outcomes: List[Outcome] = []
        for hook in hooks:
            flows = self.run_hook(hook, flows, outcomes)
        for f in flows:
            outcomes.append(Outcome(f.origin or f.box, V_ACCEPT, f.label))
        return outcomes

    def run_routed(self, box: Box, paths: Dict[str, Tuple[Tuple[Any, Any], Sequence[str]]]) -> Dict[str, List[Outcome]]:
        """PREROUTING once, then for each ``{name: ((source roles, destination roles), hooks)}``
        the part of the packets with those roles (the source as sent, the destination as it is
        after PREROUTING: the routing decision) on through those hooks. What PREROUTING itself
        decides is counted in every path whose roles it holds."""
        pre_out: List[Outcome] = []
        flows = self.run_hook("prerouting", [_Flow(box, None, _NO_LABEL)], pre_out)
        out: Dict[str, List[Outcome]] = {}
        for name, ((s_roles, d_roles), hooks) in paths.items():
            selector = ((SRC, s_roles), (DST, d_roles))
            mine: List[Outcome] = []
            out[name] = mine
            for o in pre_out:
                b = box_and(o.origin, selector)
                if b is not None:
                    mine.append(Outcome(b, o.verdict, o.label))
            routed = []
            for f in flows:
                b = box_and(f.box, selector)
                if b is not None:
                    routed.append(_restrict(f, b))
            routed = merge_flows(routed)
            for hook in hooks:
                routed = self.run_hook(hook, routed, mine)
            mine.extend(Outcome(f.origin or f.box, V_ACCEPT, f.label) for f in routed)
        return out

    # -- the algebra -----------------------------------------------------------------------

    @staticmethod
    def restrict(flow: Any, box: Box) -> Any:
        return _restrict(flow, box)

    def merge(self, flows: List[_Flow]) -> List[_Flow]:
        return merge_flows(flows)

    def rules_of(self, rs: Ruleset, chain: Chain) -> Sequence[Any]:
        return self.lifted(rs, chain)

    def repeats_of(self, rs: Ruleset, chain: Chain, picked: Optional[List[int]]) -> Optional[Dict[int, int]]:
        full = self._repeats.get(id(chain))
        if not full or picked is None:
            return full
        return remap_repeats(full, picked)

    def decision(self, rs: Ruleset, rule: Any) -> Decision:
        # the walk asks it of every rule that matched; a jump or a RETURN decides nothing the
        # role walk cites (it has no trace): one shared stand-in, not a Decision per rule
        # (the chains shape: a third of its 20,000 rules a family)
        return _UNCITED if rule.action in _UNCITED_ACTIONS else rule.decision

    def policy_decision(self, rs: Ruleset, base: BaseChain, chain: Chain, policy: str) -> Decision:
        return Decision(base.table, base.chain, None, None, policy, rs.source, policy)

    def accepted(self, flow: _Flow, decision: Decision) -> _Flow:
        return _Flow(flow.box, flow.origin, frozenset((decision,)))

    def outcome(self, flow: _Flow, verdict: str, decision: Decision) -> Outcome:
        origin = flow.origin or flow.box
        if origin[STATE] & CT_PRE_ALL:
            # (dropped in raw: the state it arrived in)
            origin = origin[:STATE] + (ct_post(origin[STATE]),) + origin[STATE + 1:]
        return Outcome(origin, verdict, frozenset((decision,)))

    def lifted(self, rs: Ruleset, chain: Chain) -> List[_XRule]:
        key = id(chain)
        got = self._lifted.get(key)
        if got is None:
            source, roles, cache = rs.source, self.roles, self._lift_cache
            if self.collapse_runs:
                got = _lift_collapsed(chain.rules, source, roles, cache)
            else:
                got = [_lift_rule(r, source, roles, cache) for r in chain.rules]
            # (most chains have no "may"-only jump, and so no run of them: a service chain's
            # accepts and RETURN)
            if any(not xr.must and (xr.action == JUMP or xr.action == GOTO) for xr in got):
                repeats = _repeated_jumps(got)
                if repeats:
                    self._repeats[key] = repeats
            self._lifted[key] = got
            self._keep.append(chain)
            if self.owns_rules:
                # the walk reads the lifted rules from now on; of a rule's own constraints only
                # whether it can match at all is still asked (InertChains): 19 MB of the bench
                # pair's IPv6 walk (kube's 98,000 "-s PREFIX" constraints)
                rules = chain.rules
                made: Sequence[Rule] = rules
                if type(rules) is RuleList:  # (its stretches' Rules not made: their values go)
                    for st in rules.stretches:
                        st.let_values_go()
                    made = rules.made()
                for r in made:
                    if r.alternatives:
                        r.alternatives = _SOME
        return got

    def match(self, rule: Any, flows: List[_Flow]) -> Tuple[List[_Flow], List[_Flow]]:
        must, may = rule.must, rule.may
        entering: List[_Flow] = []
        if not must:
            # only "may" matches: copies enter, every flow also goes on unchanged
            # the same copies as the rule before, when it only may match the very same flows
            # (a router's per-host chains: "-s HOST -m mac ... -j RETURN", "-s HOST -j DROP"
            # for hundreds of hosts, each pair one "may" constraint at role level)
            last = self._last_may
            if last[0] is flows and last[1] == may:
                return last[2], flows
            if len(may) == 1:
                c = may[0]
                for f in flows:
                    x = box_and(f.box, c)
                    if x is not None:
                        entering.append(_restrict(f, x))
            else:
                for f in flows:
                    mm, _ = split(f.box, may)
                    for x in mm:
                        entering.append(_restrict(f, x))
            self._last_may = (flows, may, entering)
            return entering, flows
        rest: List[_Flow] = []
        for f in flows:
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
        self._split_for_jump = (flows, entering, rest)
        return entering, rest

    def jump(self, rs: Ruleset, table: str, rule: Any, decision: Decision, entering: List[_Flow], depth: int,
             ended: List[Ended], seen: Set[tuple]) -> List[_Flow]:
        split_before = self._split_for_jump  # (the walk below matches rules of its own)
        back: List[_Flow] = []
        memo = self._memo
        for f in entering:
            key = (id(rs), table, rule.target, f.box, f.origin, f.label)
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = self.walk(rs, table, rule.target, [f], depth + 1)
                ended.extend(hit[1])
            elif key not in seen:
                # what ends in the chain ends here too (once per walk of this chain)
                ended.extend(hit[1])
                if hit[1]:
                    self.dedupe_ended = True
            seen.add(key)
            back.extend(hit[0])
        if entering is split_before[1] and len(back) == len(entering) and all(map(is_, back, entering)) \
                and all(f.origin is None for f in split_before[0]):
            self._whole_for_rejoin = (back, split_before[2], split_before[0])
        return back

    def rejoin(self, current: List[_Flow], back: List[_Flow]) -> List[_Flow]:
        whole = self._whole_for_rejoin
        if back is whole[0] and current is whole[1]:
            # every copy the rule's match cut off came back untouched (a chain that only
            # decides some of them, or a "may" part of them: a service chain of source
            # prefixes, ending in RETURN): the flows are those before the match again, not its
            # pieces put side by side and merged back together after every such jump. (Not
            # where a flow was rewritten: a piece's origin is narrowed only along what NAT left
            # alone, and what the walk then reports of the rewritten flows depends on how the
            # others were cut, so that, as before, they go on merged.)
            return whole[2]
        if back:
            new = _new_flows(back, current)
            if new:
                return current + new
        return current

    def untrack(self, f: _Flow) -> List[_Flow]:
        """NOTRACK: before conntrack has run (raw), every packet becomes untracked (its origin
        keeps the state it was sent in); after it, NOTRACK does nothing (as the evaluator's)."""
        state = f.box[STATE]
        if not state & CT_PRE_ALL:
            return [f]
        b = f.box[:STATE] + (ct_untrack(state),) + f.box[STATE + 1:]
        return [_Flow(b, f.origin or f.box, f.label)]

    def before_conntrack(self, flows: List[_Flow]) -> List[_Flow]:
        return [_with_state(f, ct_pre) if not f.box[STATE] & CT_PRE_ALL else f for f in flows]

    def conntrack_runs(self, flows: List[_Flow]) -> List[_Flow]:
        return [_with_state(f, ct_post) if f.box[STATE] & CT_PRE_ALL or (f.origin is not None and f.origin[STATE] & CT_PRE_ALL)
                else f for f in flows]

    def index_of(self, chain: Chain, rules: Sequence[Any]) -> Any:
        # built on a chain's second walk: building reads every rule, as one walk does, and at
        # role level most long chains are walked once (a router's per-host chains, each from
        # its interface's jump), where the index would only tell that every rule may match
        key = id(chain)
        index = self._index.get(key)
        if index is None:
            self._index[key] = _WALKED_ONCE
            return False
        if index is _WALKED_ONCE:
            index = self._index[key] = ChainIndex.build(rules) or False
        return index

    def nat(self, rs: Ruleset, flow: _Flow, rule: Any, decision: Decision) -> List[_Flow]:
        new = nat_rewrite(flow.box, rule.action == REDIRECT, rule.nat_dst, rule.nat_port, self.local_roles)
        if new == flow.box:
            return [flow]
        return [_Flow(new, flow.origin or flow.box, flow.label)]
