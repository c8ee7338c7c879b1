"""The audit's walk: exact sets of packets through a ruleset, the way netfilter does.

Input: one family's rulesets (``twinwall.netfilter.ruleset``), and a list of packet boxes. Output: every
region of those packets with the verdict it gets and the rules that decided it.

The netfilter semantics (hooks, chains, policies, conntrack and nat) are
``analysis.netfilter_walk``'s; this module is the exact algebra on top of it: a flow is a
packet box with the trail of rules it went through and the packets as they arrived (before NAT).
It adds what only the exact walk can tell:

* the routing decision after PREROUTING sends packets no longer addressed to the host to
  FORWARD instead of INPUT;
* a rule with a match twinwall cannot decide (limit, recent, mark...) *may* match: the packets
  are followed both ways and carry the match's name, so a verdict is never silently assumed;
* long chains are walked through their index and runs of one-dimension rules at once
  (``analysis.chain_index``); REDIRECT goes to the incoming interface's primary address.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from twinwall.analysis.chain_index import GATE_DIMS, MIN_RUN, ChainIndex, Dispatch, Run, find_dispatches, find_runs, runs_within
from twinwall.analysis.netfilter_walk import (  # noqa: F401 - re-exported: the audit's names
    CONNTRACK_HOOKS,
    CONNTRACK_PRIORITY,
    ESTABLISHED_ONLY,
    FILTER_HOOKS,
    MAX_DEPTH,
    NEW_ONLY,
    V_ACCEPT,
    V_DROP,
    V_FORWARD,
    V_REJECT,
    Ended,
    EvaluationError,
    InertChains,
    NetfilterWalk,
    bind_rulesets,
    cites_accept_policy,
    hook_stages,
    narrow_origin,
    nat_entry,
    nat_rewrite,
)
from twinwall.netfilter.packetset import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_PRE_ALL,
    CT_RELATED,
    CT_UNTRACKED,
    DST,
    IIF,
    MASK_DIMS,
    STATE,
    Box,
    _split_one,
    box_and,
    box_sub,
    ct_post,
    ct_pre,
    ct_untrack,
    merge_boxes,
    iv_and,
    iv_inside,
    iv_meets,
    iv_normalize,
    iv_sub,
    split,
)
from twinwall.netfilter.ruleset import (
    ACCEPT,
    CONTINUE,
    DNAT,
    DROP,
    JUMP,
    MATCHES_ANY,
    NO_TABLE,
    QUEUE,
    REDIRECT,
    REJECT,
    RETURN,
    BaseChain,
    Chain,
    Decision,
    Rule,
    RuleList,
    Ruleset,
)

# the share of a long chain in runs of one-dimension rules from which it is not indexed
RUN_SHARE = 0.9

_new_tuple = tuple.__new__  # (a named tuple's __new__ is this, called with its fields)

# the actions of the rules of a plain chain (Evaluator._walk_plain): each ends what it matches
# (as its own verdict), returns it, or only logs or counts
_PLAIN_ACTIONS = frozenset((ACCEPT, DROP, REJECT, QUEUE, RETURN, CONTINUE))

Trail = Optional[Tuple[Decision, Any]]  # linked list: (Decision, parent trail) or None


class Flow:
    """A region of packets on its way through the chains."""

    __slots__ = ("box", "trail", "uncertain", "origin")

    def __init__(self, box: Box, trail, uncertain: Tuple[str, ...], origin: Box):
        self.box = box
        self.trail = trail  # linked list: (Decision, parent) or None
        self.uncertain = uncertain
        self.origin = origin  # the box before any NAT rewrote it


@dataclass
class Outcome:
    # (slots: a blocklist's walk ends in one outcome per rule, 100,000s of them)
    __slots__ = ("box", "origin", "verdict", "decided_by", "uncertain")
    box: Box  # the packets as they reached the verdict (after NAT)
    origin: Box  # the same packets as they arrived
    verdict: str
    decided_by: List[Decision]
    uncertain: Tuple[str, ...]

    def ends(self) -> Iterator[Tuple[Box, Optional[Decision]]]:
        """(packets, the decision that ended them) for each part one decision ended: the whole
        outcome and its last decision (a RunOutcome: each rule's part)."""
        yield self.box, self.decided_by[-1] if self.decided_by else None

    def cited(self) -> Iterator[Decision]:
        """``decided_by``, read in order (a RunOutcome makes its rules' decisions as they are
        read: a verdict cites the first dozen of a blocklist's 100,000)."""
        return iter(self.decided_by)

    def split(self) -> List["Outcome"]:
        """The outcomes a walk rule by rule gives for these packets (a RunOutcome: one per rule)."""
        return [self]


class RunEnd:
    """The rules of a run that end one flow alike (every rule DROP, or every rule REJECT), in a
    compact walk: in the flow's trail, in place of each rule's own decision."""

    __slots__ = ("evaluator", "rs", "rules", "run")

    def __init__(self, evaluator: "Evaluator", rs: Ruleset, rules: Sequence[Any], run: Run):
        self.evaluator, self.rs, self.rules, self.run = evaluator, rs, rules, run

    def decisions(self) -> Iterator[Tuple[tuple, Decision]]:
        """(the rule's value, its Decision) for each rule that can match, in the order of the
        rules, made as they are read (kept on the run: see Evaluator.run_decision)."""
        decide, rs, rules, run = self.evaluator.run_decision, self.rs, self.rules, self.run
        for k, value in enumerate(run.values):
            if value:
                yield value, decide(rs, rules, run, k)


class RunOutcome(Outcome):
    """The outcome of a flow a run of rules ended alike (see RunEnd), in a compact walk: its box
    is the union of the rules' parts (the run's union: the flow held every rule's value whole);
    ``decided_by`` is the flow's path then every rule of the run, as the outcomes of a walk rule
    by rule list them one after the other (cited as a set, they are the same)."""

    __slots__ = ("path", "end", "_decided")

    def __init__(self, box: Box, origin: Box, verdict: str, path: List[Decision], end: RunEnd, uncertain: Tuple[str, ...]):
        self.box, self.origin, self.verdict, self.uncertain = box, origin, verdict, uncertain
        self.path, self.end = path, end
        self._decided: Optional[List[Decision]] = None

    @property
    def decided_by(self) -> List[Decision]:
        if self._decided is None:
            self._decided = self.path + [d for _, d in self.end.decisions()]
        return self._decided

    @decided_by.setter
    def decided_by(self, value: List[Decision]) -> None:
        self._decided = value

    def cited(self) -> Iterator[Decision]:
        if self._decided is not None:
            return iter(self._decided)
        return itertools.chain(self.path, (d for _, d in self.end.decisions()))

    def _parts(self) -> Iterator[Tuple[Box, Box, Decision]]:
        """(box, origin, decision) of each rule's part, in the order of the rules."""
        box, origin, dim = self.box, self.origin, self.end.run.dim
        head, tail = box[:dim], box[dim + 1:]
        for value, decision in self.end.decisions():
            part = head + (value,) + tail
            yield part, part if origin is box else narrow_origin(origin, box, part), decision

    def ends(self) -> Iterator[Tuple[Box, Optional[Decision]]]:
        return ((part, decision) for part, _, decision in self._parts())

    def split(self) -> List[Outcome]:
        path, verdict, uncertain = self.path, self.verdict, self.uncertain
        return [Outcome(part, origin, verdict, path + [decision], uncertain) for part, origin, decision in self._parts()]


def run_action(rules: Sequence[Any], run: Run) -> Optional[str]:
    """DROP or REJECT when every rule of the run that can match has that action, else None
    (found once per run)."""
    if run.action is None:
        if type(rules) is RuleList:
            actions = rules.actions(run.start, run.end)  # (its stretches' Rules not made)
        else:
            actions = {rules[run.start + k].action for k, v in enumerate(run.values) if v}
        run.action = actions.pop() if len(actions) == 1 and actions <= {DROP, REJECT} else ""
    return run.action or None


def accepted_by_policy(decided_by: Sequence[Decision]) -> bool:
    """Accepted only because chains' ACCEPT policies let it through: no rule accepted it.

    (With several base chains on a hook, as nftables allows, a rule may accept in one chain
    and another chain's policy then lets it pass: that is a rule's decision.)"""
    by_policy = False
    for d in decided_by:
        if d.policy is None and d.action == ACCEPT:
            return False
        if d.policy == "ACCEPT":
            by_policy = True
    return by_policy


def _trail_list(trail) -> List[Decision]:
    if trail is not None and trail[1] is None:
        return [trail[0]]  # (one step, the commonest: a list of exactly one, not one grown)
    if trail is not None and trail[1][1] is None:
        return [trail[1][0], trail[0]]  # (two: a jump and the rule that decided in its chain)
    out = []
    while trail is not None:
        out.append(trail[0])
        trail = trail[1]
    out.reverse()
    return out


def after_nat(origin: Box, after: Box, box: Box, piece: Box) -> Box:
    """The reverse of narrow_origin: a piece of the packets as they arrived (narrowed from
    ``origin``) in the terms of ``box``, a part of what NAT made of them (``after``): the
    dimensions NAT rewrote keep ``box``'s values."""
    return tuple(piece[d] if origin[d] == after[d] else box[d] for d in range(len(box)))


def _restrict(flow: Flow, box: Box) -> Flow:
    """The same flow narrowed to a sub-box, keeping ``origin`` aligned with ``box``."""
    if box is flow.box:
        return flow
    if flow.origin is flow.box:
        return Flow(box, flow.trail, flow.uncertain, box)
    return Flow(box, flow.trail, flow.uncertain, narrow_origin(flow.origin, flow.box, box))


def one_interval(rule: Any) -> Optional[Tuple[int, Any]]:
    """(dimension, value) of a rule whose only constraint is one interval on one interval
    dimension (a service chain's "-s PREFIX"), for match_one_interval; None for any other."""
    alts = rule.alternatives
    if len(alts) != 1 or len(alts[0]) != 1:
        return None
    dim, value = alts[0][0]
    return (dim, value) if dim not in MASK_DIMS and len(value) == 1 else None


def match_one_interval(dim: int, value: Any, flows: List[Flow]) -> Tuple[List[Flow], List[Flow]]:
    """Evaluator.match of a rule one_interval reads as (``dim``, ``value``) and no ct_dnat test:
    the same flows, each box cut by split's own one-constraint step (_split_one) directly, where
    match would go through split to reach it (the walk of many small chains: one call a flow,
    not three)."""
    match = (dim, value)
    matched: List[Flow] = []
    rest: List[Flow] = []
    for f in flows:
        m, r = _split_one(f.box, match)
        if not m:
            rest.append(f)
        elif m[0] is f.box:
            matched.append(f)
        else:
            matched.append(_restrict(f, m[0]))
            if r:
                rest.append(_restrict(f, r[0]))
    return matched, rest


def merge_flows(flows: List[Flow]) -> List[Flow]:
    """Union flows that took the same path and differ in one dimension only.

    Splitting by rules that did not change a region's fate (a LOG, a per-source MARK, a
    cluster IP that is not ours) leaves it in pieces; merging keeps the number of flows that
    later chains must walk small. NAT-rewritten flows are left alone (their origin differs)."""
    if len(flows) < 2:
        return flows
    keep: List[Flow] = []
    alike: List[Flow] = []  # the flows not rewritten, and their paths
    paths: List[tuple] = []
    for f in flows:
        if f.origin is not f.box:
            keep.append(f)
            continue
        alike.append(f)
        paths.append((f.trail, f.uncertain))
    if len(set(paths)) == len(paths):
        # every flow alone on its path (the flows many small chains accepted, a rule each):
        # as they are, without a group for each
        keep.extend(alike)
        return keep
    groups: Dict[tuple, List[Flow]] = {}
    for f, path in zip(alike, paths):
        groups.setdefault(path, []).append(f)
    del alike, paths  # (not beside the merges below: 16,000 flows back from small chains)
    for (trail, uncertain), members in groups.items():
        if len(members) == 1:
            keep.append(members[0])  # (alone on its path: the flow as it is, no copy of it)
            continue
        keep.extend(Flow(b, trail, uncertain, b) for b in merge_boxes([f.box for f in members]))
    return keep


def with_state(flow: Flow, state: int) -> Flow:
    """The flow with its STATE dimension replaced (and its origin's, where NAT left the origin
    the same box)."""
    box = flow.box[:STATE] + (state,) + flow.box[STATE + 1:]
    if flow.origin is flow.box:
        return Flow(box, flow.trail, flow.uncertain, box)
    o = flow.origin
    return Flow(box, flow.trail, flow.uncertain, o[:STATE] + (state if o[STATE] == flow.box[STATE] else o[STATE],) + o[STATE + 1:])


def conntrack_runs(flows: List[Flow]) -> List[Flow]:
    """Conntrack has run: the states carried in the pre-conntrack form become the states."""
    out = []
    for f in flows:
        if f.box[STATE] & CT_PRE_ALL or f.origin[STATE] & CT_PRE_ALL:
            box = f.box[:STATE] + (ct_post(f.box[STATE]),) + f.box[STATE + 1:]
            if f.origin is f.box:
                f = Flow(box, f.trail, f.uncertain, box)
            else:
                o = f.origin
                f = Flow(box, f.trail, f.uncertain, o[:STATE] + (ct_post(o[STATE]),) + o[STATE + 1:])
        out.append(f)
    return out


def before_conntrack(flows: List[Flow]) -> List[Flow]:
    """Into the pre-conntrack form (see packetset.CT_PRE_SHIFT): raw chains are about to run."""
    return [with_state(f, ct_pre(f.box[STATE])) if not f.box[STATE] & CT_PRE_ALL else f for f in flows]


def _ct_dnat_split(rule: Rule, matched: List[Flow], rest: List[Flow]) -> List[Flow]:
    """nft ``ct status dnat`` (``rule.ct_dnat`` True; False: ``!= dnat``): a connection's first
    packet carries the status when nat PREROUTING/OUTPUT rewrote its destination on this walk
    (a DNAT or REDIRECT in its trail); untracked and invalid packets have no conntrack entry, so
    no status; for the rest of a flow the walk cannot tell (followed both ways, named). Returns
    the flows that match; the others join ``rest``."""
    out: List[Flow] = []
    tag = (f"ct status ({rule.table} {rule.chain} #{rule.number})",)
    for f in matched:
        state = f.box[STATE]
        nated = _nated(f.trail)
        for bits, dnat in ((state & CT_NEW, nated), (state & (CT_UNTRACKED | CT_INVALID), False),
                           (state & (CT_ESTABLISHED | CT_RELATED), None)):
            if not bits:
                continue
            part = f if bits == state else _restrict(f, f.box[:STATE] + (bits,) + f.box[STATE + 1 :])
            if dnat is None:
                part = Flow(part.box, part.trail, part.uncertain + tag, part.origin)
                out.append(part)
                rest.append(part)
            elif dnat == rule.ct_dnat:
                out.append(part)
            else:
                rest.append(part)
    return out


def _nated(trail) -> bool:
    while trail is not None:
        if trail[0].action in (DNAT, REDIRECT):
            return True
        trail = trail[1]
    return False


class _Held:
    """A flow that holds a dispatch run's common constraint whole, in Evaluator.walk_dispatch:
    its value on the run's dimension, each rule's part of it (Dispatch.parts) and the parts
    the rules walked so far took."""

    __slots__ = ("flow", "value", "parts", "taken")

    def __init__(self, flow: Flow, value: Any, parts: Dict[int, tuple]):
        self.flow, self.value, self.parts = flow, value, parts
        self.taken: List[tuple] = []


class Evaluator(NetfilterWalk):
    """Evaluates one family's rulesets (the exact algebra of analysis.netfilter_walk)."""

    def __init__(
        self,
        rulesets: Sequence[Ruleset],
        family: str,
        universe: Any,
        local_addresses: Any,
        trace: Optional[Callable[[str, int, Any, List[Any]], None]] = None,
        compact: bool = False,
    ):
        """``compact``: a flow that every rule of a run drops (or rejects) ends as one
        RunOutcome, not one outcome per rule. For consumers that read outcomes' regions and
        decisions as sets (the audit's verdicts and findings), not which rule took which packet
        of them outcome by outcome (explain, the proofs of fixes)."""
        super().__init__(rulesets, universe, local_addresses)
        self.family = family
        self.local = local_addresses  # interval set of the host's own addresses
        self.trace = trace
        self.compact = compact
        self._run_cache: Dict[object, tuple] = {}
        self._dispatch_cache: Dict[object, tuple] = {}
        self._values: Dict[tuple, tuple] = {}  # (_shared_values)

    # -- entry points ----------------------------------------------------------------------

    def local_input(self, boxes: Sequence[Box], nat: bool = True, later: bool = False) -> List[Outcome]:
        """Packets arriving from the network, addressed to this host: PREROUTING then INPUT.

        ``nat=False`` skips nat chains: for packets whose connection was NATed (or not) before
        they arrived here, e.g. loopback traffic, which nat OUTPUT already saw. ``later=True``:
        the boxes are a connection's later packets (ESTABLISHED), which nat chains do not see
        but conntrack rewrites as the first packet was: nat chains rewrite them as they would
        have the first packet (and drop none)."""
        flows = [Flow(b, None, (), b) for b in boxes]
        outcomes: List[Outcome] = []
        flows = self.run_hook("prerouting", flows, outcomes, nat=nat, later=later)
        # Routing decision: only packets still addressed to the host go to INPUT.
        local_flows = []
        for f in flows:
            dst = f.box[DST]
            here = iv_and(dst, self.local)
            if here != dst:
                away = iv_sub(dst, self.local)
                b = list(f.box)
                b[DST] = away
                outcomes.append(self._outcome(_restrict(f, tuple(b)), V_FORWARD))
            if here:
                if here is dst:
                    local_flows.append(f)
                else:
                    b = list(f.box)
                    b[DST] = here
                    local_flows.append(_restrict(f, tuple(b)))
        if not self.stages("input"):
            # nothing hooks INPUT at all: say so, so the verdict still has a reason
            unfiltered = Decision(NO_TABLE, "INPUT", None, None, "ACCEPT", "no table hooks INPUT: nothing filters it", "ACCEPT")
            local_flows = [Flow(f.box, (unfiltered, f.trail), f.uncertain, f.origin) for f in local_flows]
        flows = self.run_hook("input", local_flows, outcomes)
        for f in flows:
            outcomes.append(self._outcome(f, V_ACCEPT))
        return outcomes

    def hook_path(self, hooks: Sequence[str], boxes: Sequence[Box], nat: bool = True) -> List[Outcome]:
        """Run packets through the given hooks in order, with no routing decision between
        (``nat=False``: skipping nat chains, as local_input)."""
        flows = [Flow(b, None, (), b) for b in boxes]
        outcomes: List[Outcome] = []
        for hook in hooks:
            flows = self.run_hook(hook, flows, outcomes, nat=nat)
        for f in flows:
            outcomes.append(self._outcome(f, V_ACCEPT))
        return outcomes

    def _outcome(self, flow: Flow, verdict: str) -> Outcome:
        if flow.box[STATE] & CT_PRE_ALL or flow.origin[STATE] & CT_PRE_ALL:
            flow = conntrack_runs([flow])[0]  # (dropped in raw: say the state it arrived in)
        trail = flow.trail
        if trail is not None and type(trail[0]) is RunEnd:
            return RunOutcome(flow.box, flow.origin, verdict, _trail_list(trail[1]), trail[0], flow.uncertain)
        return Outcome(flow.box, flow.origin, verdict, _trail_list(trail), flow.uncertain)

    # -- the algebra -----------------------------------------------------------------------

    @staticmethod
    def restrict(flow: Any, box: Box) -> Any:
        return _restrict(flow, box)

    def merge(self, flows: List[Flow]) -> List[Flow]:
        return merge_flows(flows)

    def before_conntrack(self, flows: List[Flow]) -> List[Flow]:
        return before_conntrack(flows)

    def conntrack_runs(self, flows: List[Flow]) -> List[Flow]:
        return conntrack_runs(flows)

    def rules_of(self, rs: Ruleset, chain: Chain) -> Sequence[Any]:
        return chain.rules

    def index_of(self, chain: Chain, rules: Sequence[Any]) -> Any:
        index = chain.index
        if index is None:
            # a chain that is mostly runs (a blocklist) is walked past them a binary search per
            # flow already: indexing its 100,000 values again would only cost time and memory
            runs = self.runs_of(chain, rules, None) if len(rules) >= MIN_RUN else None
            # (nor are rules that match nothing, in a run or not: an inet chain's rules of the
            # other family, which the walk steps over at no cost)
            # (find_runs's runs do not overlap: counted run by run, and the rules between)
            covered = pos = 0
            for r in sorted((runs or {}).values(), key=lambda r: r.start):
                covered += sum(1 for rule in rules[pos:r.start] if not rule.alternatives) + r.end - r.start
                pos = r.end
            covered += sum(1 for rule in rules[pos:] if not rule.alternatives)
            mostly_runs = covered >= len(rules) * RUN_SHARE
            index = chain.index = (not mostly_runs and ChainIndex.build(rules, GATE_DIMS)) or False
        return index

    def outcome(self, flow: Flow, verdict: str, decision: Decision) -> Outcome:
        return self._outcome(flow, verdict)

    def decision(self, rs: Ruleset, rule: Any) -> Decision:
        # (asked of every rule that matched, a few per chain of the many small ones: the tuple
        # built as Decision's own __new__ builds it, and the text read as Rule.text reads it,
        # without the two Python calls)
        text = rule.spelling
        if type(text) is not str:
            text = rule.text
        return _new_tuple(Decision, (rule.table, rule.chain, rule.number, text, None, rs.source, rule.action, rule.line, rule.handle))

    def ended_by(self, flow: Flow, decision: Decision) -> Flow:
        return Flow(flow.box, (decision, flow.trail), flow.uncertain, flow.origin)

    def queued(self, flow: Flow) -> Flow:
        return Flow(flow.box, flow.trail, flow.uncertain + ("NFQUEUE (user space decides)",), flow.origin)

    def match(self, rule: Any, flows: List[Flow]) -> Tuple[List[Flow], List[Flow]]:
        alts = rule.alternatives
        matched: List[Flow] = []
        rest: List[Flow] = []
        for f in flows:
            m, r = split(f.box, alts)
            if not m:
                rest.append(f)
                continue
            for b in m:
                matched.append(_restrict(f, b))
            for b in r:
                rest.append(_restrict(f, b))
        if rule.ct_dnat is not None:
            matched = _ct_dnat_split(rule, matched, rest)
        return matched, rest

    def undecided(self, rule: Any, matched: List[Flow], rest: List[Flow]) -> List[Flow]:
        """A match twinwall cannot decide may or may not match: follow both ways, remembering why."""
        tag = tuple(f"{u} ({rule.table} {rule.chain} #{rule.number})" for u in rule.unknown)
        matched = [Flow(f.box, f.trail, f.uncertain + tag, f.origin) for f in matched]
        rest.extend(matched)
        return matched

    def jump(self, rs: Ruleset, table: str, rule: Any, decision: Decision, entering: List[Flow], depth: int,
             ended: List[Ended], seen: set) -> List[Flow]:
        if len(entering) > 1:
            # pieces that differ only where this rule does not look (kube-proxy: one
            # NodePort on each of the host's addresses) go on as one flow: the chain
            # behind the jump then walks once, not once per piece
            entering = merge_flows(entering)
        chain = rs.chain(table, rule.target)
        if chain is not None and depth < MAX_DEPTH and self.trace is None and self._is_plain(chain):
            return self._walk_plain(rs, chain.rules, decision, entering, ended)
        entering = [Flow(f.box, (decision, f.trail), f.uncertain, f.origin) for f in entering]
        sub_ret, sub_end = self.walk(rs, table, rule.target, entering, depth + 1)
        ended.extend(sub_end)
        return [Flow(f.box, f.trail[1], f.uncertain, f.origin) for f in sub_ret]

    def _is_plain(self, chain: Chain) -> bool:
        """Whether a chain is short (no run, no index: see walk) and its rules only end, return
        or log what they match, with matches twinwall decides: a service chain of source
        accepts and a RETURN, of which a dispatch table jumps to thousands."""
        plain = chain.plain
        if plain is None:
            rules = chain.rules
            plain = len(rules) < MIN_RUN
            if plain:
                for r in rules:
                    if r.action not in _PLAIN_ACTIONS or r.unknown or r.ct_dnat is not None:
                        plain = False
                        break
            chain.plain = plain  # (kept on the chain: every evaluator of the audit reads it alike)
        return plain

    def _walk_plain(self, rs: Ruleset, rules: Sequence[Rule], jump: Decision, current: List[Flow],
                    ended: List[Ended]) -> List[Flow]:
        """What jump's walk of a plain chain (_is_plain) without a trace gives: the rules one
        after the other, without the general walk's runs, index, parked flows, jumps and NAT
        (the same steps: what comes back, and what it adds to ``ended``, in the same order).
        The flows walk it with the trail they came with: only those a rule ends take the jump
        (``jump``) into theirs, the rest come back without pushing it and popping it again."""
        returned: List[Flow] = []
        decide = self.decision
        inside: Dict[int, tuple] = {}  # id(a trail) -> the trail in the chain: (jump, trail)
        cut: Optional[Set[int]] = None  # the dimensions one-interval rules cut here
        start = 0
        if len(current) == 1:
            # one flow (what a dispatch run sends each of its chains): a rule of one interval,
            # or one that matches every packet, leaves at most one flow going on - cut as
            # match_one_interval cuts it, without its lists of one flow
            f: Optional[Flow] = current[0]
            for rule in rules:
                action = rule.action
                if not rule.alternatives or action == CONTINUE:
                    start += 1
                    continue
                assert f is not None
                one = one_interval(rule)
                if one is not None:
                    if cut is None:
                        cut = set()
                    cut.add(one[0])
                    box = f.box
                    m, r = _split_one(box, one)
                    if not m:
                        start += 1
                        continue
                    if m[0] is box:
                        taken, f = f, None
                    else:
                        taken = _restrict(f, m[0])
                        f = _restrict(f, r[0]) if r else None
                elif rule.alternatives == MATCHES_ANY:
                    taken, f = f, None
                else:
                    break  # (a rule of another kind: from it on as below)
                start += 1
                if action == RETURN:
                    returned.append(taken)
                else:
                    trail = taken.trail
                    pushed = inside.get(id(trail))
                    if pushed is None:
                        pushed = inside[id(trail)] = (jump, trail)
                    decision = decide(rs, rule)
                    ended.append((Flow(taken.box, (decision, pushed), taken.uncertain, taken.origin), action, decision))
                if f is None:
                    break
            current = [f] if f is not None else []
        match = self.match
        for rule in rules[start:] if start else rules:
            if not current:
                break
            action = rule.action
            if not rule.alternatives or action == CONTINUE:
                continue
            one = one_interval(rule)
            if one is not None:
                matched, rest = match_one_interval(one[0], one[1], current)
                if cut is None:
                    cut = set()
                cut.add(one[0])
            else:
                matched, rest = match(rule, current)
            if not matched:
                continue
            current = rest
            if action == RETURN:
                returned.extend(matched)
                continue
            decision = decide(rs, rule)  # (a RETURN's is read by nobody: what it returns goes on with its trail)
            for g in matched:
                trail = g.trail
                pushed = inside.get(id(trail))
                if pushed is None:
                    pushed = inside[id(trail)] = (jump, trail)
                ended.append((Flow(g.box, (decision, pushed), g.uncertain, g.origin), action, decision))
        returned.extend(current)
        if cut is not None and returned:
            returned = self._shared_values(returned, cut)
        return returned

    # the interval sets _shared_values remembers at most (it starts again when full)
    SHARED_VALUES = 4096

    def _shared_values(self, flows: List[Flow], dims: Set[int]) -> List[Flow]:
        """``flows`` with their values on ``dims`` replaced by an equal set seen before, where
        there is one (the flows themselves, boxes rebuilt only where a value is replaced; not
        the flows NAT rewrote, whose origin is another box). What a plain chain returns is its
        entering flows less its rules' prefixes: many small chains' returns, 16,000 of them
        parked until their dispatch chain ends, hold mostly the same few source sets, each
        otherwise a copy of its own (a kilobyte of pairs), all alive until merged."""
        values = self._values
        if len(values) >= self.SHARED_VALUES:
            values.clear()
        out: List[Flow] = []
        for f in flows:
            box = f.box
            if f.origin is not box:
                out.append(f)
                continue
            new = box
            for d in dims:
                v = new[d]
                seen = values.setdefault(v, v)
                if seen is not v:
                    new = new[:d] + (seen,) + new[d + 1:]
            out.append(f if new is box else Flow(new, f.trail, f.uncertain, new))
        return out

    def rejoin(self, current: List[Flow], back: List[Flow]) -> List[Flow]:
        current = current + back
        if len(current) > 16:
            # flows coming back from many sub-chains (kube-proxy: nodeports whose
            # chains only mark) would otherwise pile up and each walk every rule left
            current = merge_flows(current)
        return current

    def unknown_target(self, rule: Any, flows: List[Flow]) -> List[Flow]:
        tag = (f"target {rule.target} ({rule.table} {rule.chain} #{rule.number})",)
        return [Flow(f.box, f.trail, f.uncertain + tag, f.origin) for f in flows]

    def nat_later(self, rs: Ruleset, base: BaseChain, flows: List[Flow]) -> List[Flow]:
        """A connection's later packets at a nat chain: conntrack rewrites them as the chain
        rewrote the first packet (walked here as NEW), and drops none of them."""
        entering, out = [], []
        for f in flows:
            m = box_and(f.box, ESTABLISHED_ONLY)
            if m is None:
                out.append(f)
                continue
            entering.append(with_state(_restrict(f, m), CT_NEW))
            out.extend(_restrict(f, b) for b in box_sub(f.box, ESTABLISHED_ONLY))
        if not entering:
            return flows
        returned, ended = self.walk(rs, base.table, base.chain, entering, 0)
        for f in returned + [e[0] for e in ended]:
            # the walk's decisions are not the later packets' (only a rewrite carries over)
            out.append(with_state(Flow(f.box, None if f.origin is f.box else f.trail, f.uncertain, f.origin), CT_ESTABLISHED))
        return merge_flows(out)

    # -- long chains -------------------------------------------------------------------------

    _TERMINAL = frozenset((ACCEPT, DROP, REJECT))

    def runs_of(self, chain: Chain, rules: Sequence[Any], picked: Optional[List[int]]) -> Optional[Dict[int, Any]]:
        """The runs of one-dimension terminal rules in ``rules`` (analysis.chain_index.Run),
        found once per chain (kept on the chain: an audit walks a chain with several
        evaluators), or per part of a chain its index picked (``picked``: the positions; this
        evaluator's memo keeps the chain alive)."""
        if len(rules) < MIN_RUN or picked is not None and len(picked) < MIN_RUN:
            return None
        if picked is None:
            if chain.runs is None:
                chain.runs = find_runs(rules, self._TERMINAL)
            return chain.runs

        def made() -> Dict[int, Any]:
            if chain.runs is None:
                chain.runs = find_runs(chain.rules, self._TERMINAL)
            return runs_within(chain.runs, picked)

        return _picked_memo(self._run_cache, chain, picked, made)

    def dispatches_of(self, chain: Chain, rules: Sequence[Any], picked: Optional[List[int]]) -> Optional[Dict[int, Any]]:
        """The dispatch runs of jumps in ``rules`` (analysis.chain_index.find_dispatches), found
        once per chain (kept on it) or per part of it its index picked (as runs_of)."""
        if len(rules) < MIN_RUN:
            return None
        if picked is None:
            if chain.dispatches is None:
                chain.dispatches = find_dispatches(rules, JUMP)
            return chain.dispatches
        return _picked_memo(self._dispatch_cache, chain, picked, lambda: find_dispatches(rules, JUMP))

    def walk_dispatch(self, rs: Ruleset, table: str, rules: Sequence[Any], dispatch: Dispatch, current: List[Flow], depth: int,
                      ended: List[Ended], seen: set, index: Any, picked: Optional[List[int]],
                      parked: Dict[int, List[Flow]]) -> Tuple[List[Flow], int]:
        """The dispatch run's jumps as walk takes them one after the other (the same matches,
        jumps, parked flows, in the same order), each rule matched only against the flows whose
        value on the run's dimension meets its own, found for each flow at once: the others it
        would not match, nor the pieces the run's other rules leave of them.

        A flow that holds the run's common constraint whole (and that no NAT rewrote) is cut by
        one search (_Held): what each rule takes of it is its value there (the rules' values
        are disjoint), what goes on is its value less theirs. One that misses the common
        constraint goes past as it is. Any other is matched rule by rule as walk would, and its
        pieces sorted again into the two kinds (the first rule cuts a flow of every protocol
        into its TCP part, held whole from then on, and the rest, which misses the others)."""
        dim, start, end = dispatch.dim, dispatch.start, dispatch.end
        common = [(d, v, d in MASK_DIMS) for d, v in dispatch.common]

        def sort(f: Flow) -> Any:
            """A flow as a slot holds it: a _Held, the flow as it is to be matched rule by rule,
            or None when it misses the common constraint."""
            box = f.box
            held = f.origin is box
            for d, v, mask in common:
                value = box[d]
                if not (value & v if mask else iv_meets(value, v)):
                    return None
                if held and not (not value & ~v if mask else iv_inside(value, v)):
                    held = False
            return _Held(f, box[dim], dispatch.parts(box[dim])) if held else f

        # slots[j]: what the run's rules so far left of current[j] (None: the flow, untouched), a
        # list of _Held, flows matched rule by rule and (flow,) for the ones past the whole run
        slots: List[Optional[list]] = [None] * len(current)
        meets: Dict[int, List[int]] = {}  # a rule's position in the run -> the slots it meets
        for j, f in enumerate(current):
            got = sort(f)
            if got is None:
                continue
            if type(got) is _Held:
                slots[j] = [got]
            for k in got.parts if type(got) is _Held else dispatch.parts(f.box[dim]):
                met = meets.get(k)
                if met is None:
                    meets[k] = [j]
                else:
                    met.append(j)
        inert_known = self._inert.of(rs, table)
        for k in sorted(meets):
            position = start + k
            rule = rules[position]
            inert = inert_known.get(rule.target)
            if inert:
                continue  # (walk splits no flow for a jump already found inert)
            alternatives = rule.alternatives
            matched: List[Flow] = []
            cut = []  # (j, what is left of current[j] rule by rule)
            takes = []  # (a _Held, the part of it this rule takes)
            for j in meets[k]:
                entries = slots[j]
                if entries is None:
                    entries = [current[j]]
                left: Optional[list] = None  # the slot's new entries, if a flow in it was cut
                for x, e in enumerate(entries):
                    kind = type(e)
                    if kind is _Held:
                        part = e.parts.get(k)
                        if part is not None:
                            box = e.flow.box
                            b = box[:dim] + (part,) + box[dim + 1:]
                            matched.append(Flow(b, e.flow.trail, e.flow.uncertain, b))
                            takes.append((e, part))
                    elif kind is not tuple:
                        m, r = split(e.box, alternatives)
                        if m:
                            if left is None:
                                left = list(entries[:x])
                            for b in m:
                                matched.append(_restrict(e, b))
                            for b in r:
                                piece = _restrict(e, b)
                                got = sort(piece)
                                left.append((piece,) if got is None else got)
                            continue
                    if left is not None:
                        left.append(e)
                if left is not None:
                    cut.append((j, left))
            if not matched or inert is None and self._inert(rs, table, rule.target):
                continue
            for j, left in cut:
                slots[j] = left
            for e, part in takes:
                e.taken.append(part)
            back = self.jump(rs, table, rule, self.decision(rs, rule), matched, depth, ended, seen)
            if not back:
                continue
            i = position + 1
            skip_to = index.next_meeting([f.box for f in back], picked[position] if picked is not None else position)
            if picked is not None:
                skip_to = bisect_left(picked, skip_to)
            if skip_to > i and skip_to >= end:
                parked.setdefault(skip_to, []).extend(back)
                continue
            # (walk would take these back before the run ends: the rest of it rule by rule)
            flows = self._left(current, slots, dim)
            if skip_to > i:
                parked.setdefault(skip_to, []).extend(back)
            else:
                flows = self.rejoin(flows, back)
            return flows, i
        return self._left(current, slots, dim), end

    @staticmethod
    def _left(flows: List[Flow], slots: List[Optional[list]], dim: int) -> List[Flow]:
        """What goes on of ``flows`` in walk_dispatch: each flow (untouched), or what the rules
        left of it, in order (of a _Held, its value less what they took: nothing when they took
        all of it)."""
        out: List[Flow] = []
        for f, entries in zip(flows, slots):
            if entries is None:
                out.append(f)
                continue
            for e in entries:
                kind = type(e)
                if kind is tuple:
                    out.append(e[0])
                elif kind is not _Held:
                    out.append(e)
                elif not e.taken:
                    out.append(e.flow)
                else:
                    left = iv_sub(e.value, iv_normalize([iv for t in e.taken for iv in t]))
                    if left:
                        box = e.flow.box
                        b = box[:dim] + (left,) + box[dim + 1:]
                        out.append(Flow(b, e.flow.trail, e.flow.uncertain, b))
        return out

    def walk_run(self, rs: Ruleset, rules: Sequence[Any], run: Run, current: List[Flow], ended: List[Ended]) -> List[Flow]:
        """The flows past a run of rules, each rule's part of them ended with its action: what
        walking the run rule by rule gives (same regions, same order), without re-cutting the
        remaining packets once per rule. A compact walk ends a flow that holds every rule's
        value whole, in a run of drops (or of rejects), at once (see _end_whole)."""
        dim = run.dim
        whole = self._ends_whole(rules, run)
        rest: List[Flow] = []
        hits = []  # (flow, {position in run: part}, its box before and after ``dim``)
        for f in current:
            value = f.box[dim]
            if whole and iv_inside(run.union, value):
                self._end_whole(rs, rules, run, whole, f, ended)
                parts = None
            else:
                parts = run.parts(value)
                if not parts:
                    rest.append(f)
                    continue
                hits.append((f, parts, f.box[:dim], f.box[dim + 1:]))
            left = iv_sub(value, run.union)
            if left:
                rest.append(_restrict(f, f.box[:dim] + (left,) + f.box[dim + 1:]))
        append = ended.append
        decide, start = self.run_decision, run.start
        for k in sorted({k for _, parts, _, _ in hits for k in parts}):
            action = rules[start + k].action
            decision = decide(rs, rules, run, k)
            for f, parts, head, tail in hits:
                part = parts.get(k)
                if part is None:
                    continue
                box = f.box
                if part == box[dim]:
                    origin = f.origin
                else:  # (what _restrict gives, without the intermediate flow)
                    box = head + (part,) + tail
                    origin = box if f.origin is f.box else narrow_origin(f.origin, f.box, box)
                append((Flow(box, (decision, f.trail), f.uncertain, origin), action, decision))
        return rest

    def run_decision(self, rs: Ruleset, rules: Sequence[Any], run: Run, k: int) -> Decision:
        """The Decision of the run's rule ``k``, kept on the run: every walk of the chain cites
        the same rules alike."""
        if run.source is not rs.source:
            run.source, run.decisions = rs.source, {}
        decision = run.decisions.get(k)
        if decision is None:
            decision = run.decisions[k] = self.decision(rs, rules[run.start + k])
        return decision

    def _ends_whole(self, rules: Sequence[Any], run: Run) -> Optional[str]:
        """The action a compact walk ends flows past the whole run with (DROP or REJECT: every
        rule of the run has it), or None. Not in nat chains: a connection's later packets take
        the walk's trail on there (nat_later)."""
        if not self.compact or rules[run.start].table == "nat":
            return None
        return run_action(rules, run)

    def _end_whole(self, rs: Ruleset, rules: Sequence[Any], run: Run, action: str, f: Flow, ended: List[Ended]) -> None:
        """A flow that holds the value of every rule of the run whole ends with its part of it
        (the run's union) at once: one flow whose trail holds a RunEnd, not one per rule. The
        walk rule by rule would end one flow per rule, each with the same fate and path; cited
        as a set, their decisions come in the same order: every rule, as the rules go."""
        box, dim = f.box, run.dim
        part = box[:dim] + (run.union,) + box[dim + 1:]
        origin = part if f.origin is box else narrow_origin(f.origin, box, part)
        end = RunEnd(self, rs, rules, run)
        ended.append((Flow(part, (end, f.trail), f.uncertain, origin), action, end))

    def _trace_match(self, rule: Any, flows: List[Flow], depth: int) -> None:
        hit: List[Flow] = []
        for f in flows:
            m, _ = split(f.box, rule.alternatives)
            hit.extend(_restrict(f, b) for b in m)
        if hit and self.trace:
            self.trace("match", depth, rule, hit)

    # -- actions -----------------------------------------------------------------------------

    def untrack(self, f: Flow) -> List[Flow]:
        """NOTRACK: before conntrack has run (raw), every packet becomes UNTRACKED (its origin
        keeps the state it was sent in). After it has, the packet has its conntrack entry (or
        is untracked already) and NOTRACK does nothing (nft_notrack_eval)."""
        state = f.box[STATE]
        if not state & CT_PRE_ALL:
            return [f]
        b = f.box[:STATE] + (ct_untrack(state),) + f.box[STATE + 1:]
        return [Flow(b, f.trail, f.uncertain, f.origin)]

    def nat(self, rs: Ruleset, flow: Flow, rule: Any, decision: Decision) -> List[Flow]:
        if rule.action == REDIRECT and rs.local_routes is not None and rs.local_routes.primary:
            return self._redirect(flow, rule, decision, rs.local_routes.primary)
        return [self._nat(flow, rule, decision)]

    def _redirect(self, f: Flow, rule: Rule, decision: Decision, primary: Dict[str, Any]) -> List[Flow]:
        """REDIRECT sends a packet to the primary address of the interface it came in on, not
        to the address it was sent to (nf_nat_redirect_ipv4/ipv6): one flow per interface whose
        primary address is known; the rest as _nat (to the host's address it was sent to)."""
        out = []
        left = f.box[IIF]
        port = (rule.nat_to or (None, None))[1]
        for name, address in primary.items():
            m = left & self.universe.mask(name)
            if not m:
                continue
            left &= ~m
            part = _restrict(f, f.box[:IIF] + (m,) + f.box[IIF + 1:])
            new = nat_rewrite(part.box, False, address, port, self.local)
            out.append(Flow(new, (decision, part.trail), part.uncertain, part.origin))
        if left:
            out.append(self._nat(_restrict(f, f.box[:IIF] + (left,) + f.box[IIF + 1:]), rule, decision))
        return out

    def _nat(self, f: Flow, rule: Rule, decision: Decision) -> Flow:
        dst, port = rule.nat_to or (None, None)
        new = nat_rewrite(f.box, rule.action == REDIRECT, dst, port, self.local)
        return Flow(new, (decision, f.trail), f.uncertain, f.origin)


def _picked_memo(cache: Dict[object, tuple], chain: Chain, picked: List[int], made: Callable[[], Any]) -> Any:
    """What ``made`` finds in the part of ``chain`` its index picked (``picked``: the positions),
    remembered by chain and positions (the entry keeps the chain alive, so its id is not reused
    while it is there); at most 256 parts."""
    key = (id(chain), tuple(picked))
    hit = cache.get(key)
    if hit is not None:
        return hit[1]
    if len(cache) >= 256:
        cache.clear()
    found = made()
    cache[key] = (chain, found)
    return found
