"""Walk sets of packets through a ruleset the way netfilter does.

Input: one family's rulesets (``twinwall.netfilter.ruleset``), and a list of packet boxes. Output: every
region of those packets with the verdict it gets and the rules that decided it.

Netfilter semantics modelled here:

* Base chains on a hook run in priority order (raw -300, mangle -150, nat -100, filter 0,
  security 50 for iptables; any priority for nftables). ACCEPT ends only the current base chain:
  the packet goes on to the next one. DROP/REJECT anywhere is final.
* User chains: jump (-j) returns to the next rule after the end of the chain or a RETURN; goto
  (-g) returns to the caller's caller. A base chain's end applies its policy.
* LOG/NFLOG/MARK... do not end evaluation. NOTRACK in raw makes the packet UNTRACKED.
* Conntrack runs at priority -200 on prerouting and output: chains before it (raw) see every
  packet's ct state as INVALID (no entry yet) unless a NOTRACK made it UNTRACKED; NOTRACK after
  it does nothing (packetset.CT_PRE_SHIFT says how the coming state is carried meanwhile).
* nat chains see only a connection's first packet (state NEW); DNAT/REDIRECT rewrite the
  destination, and the routing decision after PREROUTING sends packets no longer addressed to
  the host to FORWARD instead of INPUT.
* A rule with a match twinwall cannot decide (limit, recent, mark...) *may* match: the packets
  are followed both ways and carry the match's name, so a verdict is never silently assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from twinwall.analysis.chain_index import MIN_RULES as MIN_INDEXED_RULES
from twinwall.analysis.chain_index import MIN_RUN, ChainIndex, find_runs
from twinwall.netfilter.packetset import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_PRE_ALL,
    CT_RELATED,
    CT_UNTRACKED,
    DPORT,
    DST,
    IIF,
    STATE,
    Box,
    box_and,
    box_sub,
    ct_post,
    ct_pre,
    ct_untrack,
    merge_boxes,
    iv_and,
    iv_sub,
    split,
)
from twinwall.errors import TwinwallError
from twinwall.netfilter.ruleset import (
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
    NO_TABLE,
    UNKNOWN,
    BaseChain,
    Decision,
    Rule,
    Ruleset,
)
from twinwall.vocabulary import Verdict

# Final verdicts of an Outcome (twinwall.vocabulary.Verdict)
V_ACCEPT = Verdict.ACCEPT
V_DROP = Verdict.DROP
V_REJECT = Verdict.REJECT
V_FORWARD = Verdict.FORWARD

# conntrack's priority on prerouting and output: base chains before it (raw) see no ct state
CONNTRACK_PRIORITY = -200
CONNTRACK_HOOKS = ("prerouting", "output")

MAX_DEPTH = 128  # netfilter allows no loops; this only guards against malformed input
# hooks whose base chains' ACCEPT policy is the filtering decision (a prerouting chain's is not)
FILTER_HOOKS = ("input", "forward", "output")


class EvaluationError(TwinwallError):
    """The ruleset cannot be walked (a jump to a missing chain, a loop)."""


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
    box: Box  # the packets as they reached the verdict (after NAT)
    origin: Box  # the same packets as they arrived
    verdict: str
    decided_by: List[Decision]
    uncertain: Tuple[str, ...]


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
    out = []
    while trail is not None:
        out.append(trail[0])
        trail = trail[1]
    out.reverse()
    return out


def narrow_origin(origin: Box, box: Box, sub: Box) -> Box:
    """The packets as they arrived (``origin``) of the part ``sub`` of what NAT made of them
    (``box``): narrowed on the dimensions NAT did not rewrite."""
    out = list(origin)
    for d in range(len(sub)):
        if origin[d] == box[d]:
            out[d] = sub[d]
    return tuple(out)


def after_nat(origin: Box, after: Box, box: Box, piece: Box) -> Box:
    """The reverse of narrow_origin: a piece of the packets as they arrived (narrowed from
    ``origin``) in the terms of ``box``, a part of what NAT made of them (``after``): the
    dimensions NAT rewrote keep ``box``'s values."""
    return tuple(piece[d] if origin[d] == after[d] else box[d] for d in range(len(box)))


def nat_rewrite(box: Box, redirect: bool, dst, port, local) -> Box:
    """A box as DNAT (to ``dst``/``port``, each None to keep it) or REDIRECT (to the address of
    the incoming interface: one of the host's, ``local``) rewrites it."""
    b = list(box)
    if redirect:
        b[DST] = iv_and(b[DST], local) or local
    elif dst is not None:
        b[DST] = dst
    if port is not None:
        b[DPORT] = port
    return tuple(b)


def bind_rulesets(rulesets: Sequence[Ruleset], universe, local_addresses) -> None:
    """Give rulesets the interface universe and the host's addresses their rules compile with."""
    for rs in rulesets:
        rs.universe = universe
        rs.local_addresses = local_addresses


def _restrict(flow: Flow, box: Box) -> Flow:
    """The same flow narrowed to a sub-box, keeping ``origin`` aligned with ``box``."""
    if box is flow.box:
        return flow
    if flow.origin is flow.box:
        return Flow(box, flow.trail, flow.uncertain, box)
    return Flow(box, flow.trail, flow.uncertain, narrow_origin(flow.origin, flow.box, box))


def merge_flows(flows: List[Flow]) -> List[Flow]:
    """Union flows that took the same path and differ in one dimension only.

    Splitting by rules that did not change a region's fate (a LOG, a per-source MARK, a
    cluster IP that is not ours) leaves it in pieces; merging keeps the number of flows that
    later chains must walk small. NAT-rewritten flows are left alone (their origin differs)."""
    if len(flows) < 2:
        return flows
    groups: Dict[tuple, List[Flow]] = {}
    keep: List[Flow] = []
    for f in flows:
        if f.origin is not f.box:
            keep.append(f)
            continue
        groups.setdefault((f.trail, f.uncertain), []).append(f)
    for (trail, uncertain), members in groups.items():
        boxes = [f.box for f in members]
        if len(boxes) > 1:
            boxes = merge_boxes(boxes)
        keep.extend(Flow(b, trail, uncertain, b) for b in boxes)
    return keep


NEW_ONLY = ((STATE, CT_NEW),)
ESTABLISHED_ONLY = ((STATE, CT_ESTABLISHED),)


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


def nat_entry(flows: list, restrict) -> Tuple[list, list]:
    """A nat base chain sees only the first packet of a connection (state NEW; never an
    untracked one): (the parts of ``flows`` that enter it, the parts that pass it by).
    ``restrict(flow, box)`` narrows a flow to a sub-box (the walkers' flows differ)."""
    entering, skipped = [], []
    for f in flows:
        m = box_and(f.box, NEW_ONLY)
        if m is None:
            skipped.append(f)
            continue
        entering.append(restrict(f, m))
        skipped.extend(restrict(f, b) for b in box_sub(f.box, NEW_ONLY))
    return entering, skipped


def cites_accept_policy(rs: Ruleset, base: BaseChain, hook: str) -> bool:
    """Whether a base chain's ACCEPT policy is worth citing as what let packets through: only
    where it is the filtering decision (a filter chain on input, forward or output), not where
    packets only pass by (raw, mangle, nat, a prerouting chain)."""
    return base.kind == "filter" and hook in FILTER_HOOKS and (base.table == "filter" or rs.kind == "nftables")


def hook_stages(rulesets: Sequence[Ruleset], hook: str) -> List[Tuple[Ruleset, BaseChain]]:
    """Every base chain on a hook, across rulesets, in the order netfilter runs them."""
    stages = [(rs, b) for rs in rulesets for b in rs.base_chains if b.hook == hook]
    stages.sort(key=lambda s: s[1].priority)
    return stages


class InertChains:
    """Whether jumping to a chain can change nothing a verdict depends on: all its rules only
    log/mark/count or return, or jump to chains that are inert themselves (kube-proxy's
    KUBE-MARK-MASQ). Jumps to them are skipped: splitting regions there only fragments them."""

    def __init__(self):
        self.known: Dict[tuple, bool] = {}  # (id(ruleset), table, chain) -> inert

    def __call__(self, rs: Ruleset, table: str, name: str, depth: int = 0) -> bool:
        key = (id(rs), table, name)
        known = self.known.get(key)
        if known is not None:
            return known
        chain = rs.chain(table, name)
        inert = chain is not None and depth < MAX_DEPTH
        if inert:
            for r in chain.rules:
                if r.action in (CONTINUE, RETURN) or not r.alternatives:
                    continue
                if r.action == JUMP and self(rs, table, r.target, depth + 1):
                    continue
                inert = False
                break
        self.known[key] = inert
        return inert


class Evaluator:
    """Evaluates one family's rulesets. Bind the interface universe and local addresses first."""

    def __init__(
        self,
        rulesets: Sequence[Ruleset],
        family: str,
        universe,
        local_addresses,
        trace: Optional[Callable[[str, int, object, List[Flow]], None]] = None,
    ):
        self.family = family
        self.rulesets = list(rulesets)
        self.universe = universe
        self.local = local_addresses  # interval set of the host's own addresses
        self.trace = trace
        self._inert = InertChains()
        self._run_cache: Dict[object, tuple] = {}
        bind_rulesets(self.rulesets, universe, local_addresses)

    # -- hooks ------------------------------------------------------------------------------

    def stages(self, hook: str) -> List[Tuple[Ruleset, BaseChain]]:
        return hook_stages(self.rulesets, hook)

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
        return Outcome(flow.box, flow.origin, verdict, _trail_list(flow.trail), flow.uncertain)

    def run_hook(self, hook: str, flows: List[Flow], outcomes: List[Outcome], nat: bool = True,
                 later: bool = False) -> List[Flow]:
        """All base chains of a hook; returns the flows that every one of them let through.
        (``later``: see local_input.)"""
        pre = False  # flows in the pre-conntrack form (raw chains of prerouting and output)
        tracks = hook in CONNTRACK_HOOKS
        for rs, base in self.stages(hook):
            if not flows:
                break
            if tracks and (base.priority < CONNTRACK_PRIORITY) != pre:
                pre = not pre
                flows = before_conntrack(flows) if pre else conntrack_runs(flows)
            if base.kind == "nat" and not nat:
                continue
            chain = rs.chain(base.table, base.chain)
            if chain is None:
                continue
            if base.kind == "nat" and later:
                flows = self._nat_later(rs, base, flows)
                continue
            skipped: List[Flow] = []
            if base.kind == "nat":
                flows, skipped = nat_entry(flows, _restrict)
            returned, ended = self.walk(rs, base.table, base.chain, flows, 0)
            nxt = skipped
            # end of a base chain: its policy
            policy = chain.policy or "ACCEPT"
            cite = cites_accept_policy(rs, base, hook)
            decision = Decision(base.table, base.chain, None, None, policy, rs.source, policy, chain.line)
            for f in returned:
                if policy == "DROP":
                    outcomes.append(self._outcome(Flow(f.box, (decision, f.trail), f.uncertain, f.origin), V_DROP))
                else:
                    if cite:
                        f = Flow(f.box, (decision, f.trail), f.uncertain, f.origin)
                    nxt.append(f)
                if self.trace:
                    self.trace("policy", 0, decision, [f])
            for f, action in ended:
                if action in (ACCEPT, "nat", QUEUE):
                    if action == QUEUE:
                        f = Flow(f.box, f.trail, f.uncertain + ("NFQUEUE (user space decides)",), f.origin)
                    nxt.append(f)
                elif action == REJECT:
                    outcomes.append(self._outcome(f, V_REJECT))
                else:
                    outcomes.append(self._outcome(f, V_DROP))
            flows = merge_flows(nxt)
        if pre:
            flows = conntrack_runs(flows)
        return flows

    def _nat_later(self, rs: Ruleset, base: BaseChain, flows: List[Flow]) -> List[Flow]:
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
        for f in returned + [f for f, _ in ended]:
            # the walk's decisions are not the later packets' (only a rewrite carries over)
            out.append(with_state(Flow(f.box, None if f.origin is f.box else f.trail, f.uncertain, f.origin), CT_ESTABLISHED))
        return merge_flows(out)

    # -- chains -----------------------------------------------------------------------------

    def walk(self, rs: Ruleset, table: str, chain_name: str, flows: List[Flow], depth: int):
        """Returns (flows that reached the end or RETURN, [(flow, terminal action)])."""
        if depth > MAX_DEPTH:
            raise EvaluationError(f"chain nesting deeper than {MAX_DEPTH} at {table} {chain_name}: a loop?")
        chain = rs.chain(table, chain_name)
        if chain is None:
            raise EvaluationError(f"{rs.source}: jump to missing chain {table} {chain_name}")
        returned: List[Flow] = []
        ended: List[Tuple[Flow, str]] = []
        current = flows
        trace = self.trace
        inert_known = self._inert.known
        rs_id = id(rs)
        rules = chain.rules
        run_key = id(rules)
        if len(rules) >= MIN_INDEXED_RULES:
            # a long chain: only the rules these packets can meet (see analysis.chain_index)
            index = chain.index
            if index is None:
                index = chain.index = ChainIndex.build(rules) or False
            if index:
                picked = index.candidates([f.box for f in flows])
                if picked is not None:
                    rules = [rules[i] for i in picked]
                    run_key = (run_key, tuple(picked)) if len(picked) >= MIN_RUN else None
        runs = self._runs(rules, run_key) if trace is None and run_key is not None else None
        position = -1
        skip_to = 0
        for rule in rules:
            position += 1
            if not current:
                break
            if position < skip_to:
                continue
            if runs and position in runs:
                run = runs[position]
                current = self._walk_run(rs, rules, run, current, ended)
                skip_to = run.end
                continue
            alts = rule.alternatives
            if not alts:
                continue
            action = rule.action
            if action == CONTINUE:
                if trace:
                    self._trace_match(rule, current, depth)
                continue  # LOG, counters...: nothing to decide
            inert = inert_known.get((rs_id, table, rule.target)) if action == JUMP else False
            if inert:
                # a jump already found inert (below): no need to split the flows to learn it
                if trace:
                    self._trace_match(rule, current, depth)
                continue
            matched: List[Flow] = []
            rest: List[Flow] = []
            for f in current:
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
            if not matched:
                continue
            if inert is None and self._inert(rs, table, rule.target):
                # e.g. KUBE-MARK-MASQ: only marks and returns; splitting here would only
                # fragment the flows. (Asked only of jumps that match: the answer compiles
                # the chains behind the jump.)
                if trace:
                    trace("match", depth, rule, matched)
                continue
            if rule.unknown:
                # may or may not match: follow both ways, remembering why
                tag = tuple(f"{u} ({rule.table} {rule.chain} #{rule.number})" for u in rule.unknown)
                matched = [Flow(f.box, f.trail, f.uncertain + tag, f.origin) for f in matched]
                rest.extend(matched)
            if trace:
                trace("match", depth, rule, matched)
            current = rest
            decision = Decision(rule.table, rule.chain, rule.number, rule.text, None, rs.source, action, rule.line, rule.handle)
            if action in (ACCEPT, DROP, REJECT, QUEUE, NAT_DONE):
                for f in matched:
                    ended.append((Flow(f.box, (decision, f.trail), f.uncertain, f.origin), "nat" if action == NAT_DONE else action))
            elif action == RETURN:
                returned.extend(matched)
            elif action in (JUMP, GOTO):
                if len(matched) > 1:
                    # pieces that differ only where this rule does not look (kube-proxy: one
                    # NodePort on each of the host's addresses) go on as one flow: the chain
                    # behind the jump then walks once, not once per piece
                    matched = merge_flows(matched)
                entering = [Flow(f.box, (decision, f.trail), f.uncertain, f.origin) for f in matched]
                sub_ret, sub_end = self.walk(rs, table, rule.target, entering, depth + 1)
                ended.extend(sub_end)
                back = [Flow(f.box, f.trail[1], f.uncertain, f.origin) for f in sub_ret]
                if action == JUMP:
                    current = current + back
                    if len(current) > 16:
                        # flows coming back from many sub-chains (kube-proxy: nodeports whose
                        # chains only mark) would otherwise pile up and each walk every rule left
                        current = merge_flows(current)
                else:
                    returned.extend(back)
            elif action == NOTRACK:
                # (with an undecidable match the tracked copies are already in ``rest``)
                current = current + [u for f in matched for u in self._untrack(f)]
            elif action == REDIRECT and rs.local_routes is not None and rs.local_routes.primary:
                for f in matched:
                    ended.extend((g, "nat") for g in self._redirect(f, rule, decision, rs.local_routes.primary))
            elif action in (DNAT, REDIRECT):
                for f in matched:
                    ended.append((self._nat(f, rule, decision), "nat"))
            elif action == UNKNOWN:
                tag = (f"target {rule.target} ({rule.table} {rule.chain} #{rule.number})",)
                current = current + [Flow(f.box, f.trail, f.uncertain + tag, f.origin) for f in matched]
            else:  # pragma: no cover - every action is handled above
                raise EvaluationError(f"unhandled action {action}")
        returned.extend(current)
        return returned, ended

    _TERMINAL = frozenset((ACCEPT, DROP, REJECT))

    def _runs(self, rules: List[Rule], key):
        """The runs of one-dimension terminal rules in ``rules`` (analysis.chain_index.Run),
        found once per chain, or per part of a chain its index picked (``key``: the chain's
        rules' id, with the picked positions). The memo keeps the rule lists alive."""
        if len(rules) < MIN_RUN:
            return None
        hit = self._run_cache.get(key)
        if hit is not None:
            return hit[1]
        if len(self._run_cache) >= 256:
            self._run_cache.clear()
        runs = find_runs(rules, self._TERMINAL)
        self._run_cache[key] = (rules, runs)
        return runs

    def _walk_run(self, rs: Ruleset, rules: List[Rule], run, current: List[Flow], ended: list) -> List[Flow]:
        """The flows past a run of rules, each rule's part of them ended with its action: what
        walking the run rule by rule gives (same regions, same order), without re-cutting the
        remaining packets once per rule."""
        dim = run.dim
        rest: List[Flow] = []
        hits = []  # (flow, {position in run: part})
        for f in current:
            value = f.box[dim]
            parts = run.parts(value)
            if not parts:
                rest.append(f)
                continue
            hits.append((f, parts))
            left = iv_sub(value, run.union)
            if left:
                rest.append(_restrict(f, f.box[:dim] + (left,) + f.box[dim + 1:]))
        for k in sorted({k for _, parts in hits for k in parts}):
            rule = rules[run.start + k]
            action = rule.action
            decision = Decision(rule.table, rule.chain, rule.number, rule.text, None, rs.source, action, rule.line, rule.handle)
            for f, parts in hits:
                part = parts.get(k)
                if part is None:
                    continue
                g = _restrict(f, f.box if part == f.box[dim] else f.box[:dim] + (part,) + f.box[dim + 1:])
                ended.append((Flow(g.box, (decision, g.trail), g.uncertain, g.origin), action))
        return rest

    def _trace_match(self, rule: Rule, flows: List[Flow], depth: int) -> None:
        hit = []
        for f in flows:
            m, _ = split(f.box, rule.alternatives)
            hit.extend(_restrict(f, b) for b in m)
        if hit:
            self.trace("match", depth, rule, hit)

    @staticmethod
    def _untrack(f: Flow) -> List[Flow]:
        """NOTRACK: before conntrack has run (raw), every packet becomes UNTRACKED (its origin
        keeps the state it was sent in). After it has, the packet has its conntrack entry (or
        is untracked already) and NOTRACK does nothing (nft_notrack_eval)."""
        state = f.box[STATE]
        if not state & CT_PRE_ALL:
            return [f]
        b = f.box[:STATE] + (ct_untrack(state),) + f.box[STATE + 1:]
        return [Flow(b, f.trail, f.uncertain, f.origin)]

    def _redirect(self, f: Flow, rule: Rule, decision: Decision, primary: Dict[str, tuple]) -> List[Flow]:
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
