"""The netfilter walk, written once: hooks, base chains, user chains, policies, nat, NOTRACK.

Two algebras walk packets through the same skeleton: the audit's exact packet boxes with the
trail of rules that decided them (``analysis.evaluator.Evaluator``) and the diff's address roles
with the rule that let them through (``analysis.role_walk.RoleWalker``). ``NetfilterWalk`` is
the netfilter part; a subclass says what a flow is (how it is narrowed, merged, rewritten by
NAT, ended by a rule, turned into an outcome, and how a rule is matched against it).

Netfilter semantics modelled here:

* Base chains on a hook run in priority order (raw -300, mangle -150, nat -100, filter 0,
  security 50 for iptables; any priority for nftables). ACCEPT ends only the current base chain:
  the packet goes on to the next one. DROP/REJECT anywhere is final.
* User chains: jump (-j) returns to the next rule after the end of the chain or a RETURN; goto
  (-g) returns to the caller's caller. A base chain's end applies its policy.
* LOG/NFLOG/MARK... do not end evaluation. Jumps to chains that can change nothing (only log,
  mark or return: ``InertChains``) are skipped.
* Conntrack runs at priority -200 on prerouting and output: chains before it (raw) see every
  packet's ct state as INVALID (no entry yet) unless a NOTRACK made it UNTRACKED; NOTRACK after
  it does nothing (packetset.CT_PRE_SHIFT says how the coming state is carried meanwhile).
* nat chains see only a connection's first packet (state NEW); DNAT/REDIRECT rewrite the
  destination.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from twinwall.analysis.chain_index import MIN_RULES as MIN_INDEXED_RULES
from twinwall.errors import TwinwallError
from twinwall.netfilter.packetset import (
    CT_ESTABLISHED,
    CT_NEW,
    DPORT,
    DST,
    STATE,
    Box,
    box_and,
    box_sub,
    iv_and,
)
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
    UNKNOWN,
    BaseChain,
    Chain,
    Decision,
    RuleList,
    Ruleset,
)
from twinwall.vocabulary import Verdict

# Final verdicts of an outcome (twinwall.vocabulary.Verdict)
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

NEW_ONLY = ((STATE, CT_NEW),)
ESTABLISHED_ONLY = ((STATE, CT_ESTABLISHED),)

# actions that end a packet's walk through the chains of one base chain
_ENDING = frozenset((ACCEPT, DROP, REJECT, QUEUE, NAT_DONE))

Flow = Any  # one algebra's flow (evaluator.Flow, role_walk._Flow)
# (flow, ACCEPT/DROP/REJECT/QUEUE/"nat", the deciding rule: a Decision, or what stands for a run of
# rules that ended the flow alike, the evaluator's RunEnd)
Ended = Tuple[Any, str, Any]


class EvaluationError(TwinwallError):
    """The ruleset cannot be walked (a jump to a missing chain, a loop)."""


def narrow_origin(origin: Box, box: Box, sub: Box) -> Box:
    """The packets as they arrived (``origin``) of the part ``sub`` of what NAT made of them
    (``box``): narrowed on the dimensions NAT did not rewrite."""
    out = list(origin)
    for d in range(len(sub)):
        if origin[d] == box[d]:
            out[d] = sub[d]
    return tuple(out)


def nat_rewrite(box: Box, redirect: bool, dst: Any, port: Any, local: Any) -> Box:
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


def bind_rulesets(rulesets: Sequence[Ruleset], universe: Any, local_addresses: Any) -> None:
    """Give rulesets the interface universe and the host's addresses their rules compile with."""
    for rs in rulesets:
        rs.universe = universe
        rs.local_addresses = local_addresses


def nat_entry(flows: List[Flow], restrict: Callable[[Flow, Box], Flow]) -> Tuple[List[Flow], List[Flow]]:
    """A nat base chain sees only the first packet of a connection (state NEW; never an
    untracked one): (the parts of ``flows`` that enter it, the parts that pass it by).
    ``restrict(flow, box)`` narrows a flow to a sub-box (the algebras' flows differ)."""
    entering: List[Flow] = []
    skipped: List[Flow] = []
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

    def __init__(self) -> None:
        # (id(ruleset), table) -> {chain: inert} (a dict per table, not a key per chain: a
        # dispatch table's thousands of chains share it)
        self.known: Dict[tuple, Dict[str, bool]] = {}

    def of(self, rs: Ruleset, table: str) -> Dict[str, bool]:
        """{chain: inert} of the chains of one table asked about so far."""
        key = (id(rs), table)
        names = self.known.get(key)
        if names is None:
            names = self.known[key] = {}
        return names

    def __call__(self, rs: Ruleset, table: str, name: str, depth: int = 0) -> bool:
        names = self.of(rs, table)
        known = names.get(name)
        if known is not None:
            return known
        chain = rs.chain(table, name)
        inert = chain is not None and depth < MAX_DEPTH
        if inert and chain is not None:
            rules = chain.rules
            # (a RuleList's stretch by its first rule: its rules all have its action and target)
            for r in rules.representatives() if type(rules) is RuleList else rules:
                if r.action in (CONTINUE, RETURN) or not r.alternatives:
                    continue
                if r.action == JUMP and r.target is not None and self(rs, table, r.target, depth + 1):
                    continue
                inert = False
                break
        names[name] = inert
        return inert


class NetfilterWalk:
    """The walk of one family's rulesets; a subclass supplies the flow algebra (see the module
    docstring). The rules it walks are the algebra's (``rules_of``): objects with ``action``,
    ``target``, ``alternatives`` (what a packet must match, empty when nothing can) and
    ``unknown`` (the matches twinwall cannot decide)."""

    # whether the walk models conntrack on prerouting and output (raw chains see no ct state)
    PRE_CONNTRACK = True
    # merge a chain walk's flows after a rule that matched once there are more than this (and
    # twice as many as the last merge left)
    MERGE_AT: Optional[int] = None
    # whether a flow may have been ended twice (a memo hands it to several paths), so that
    # run_hook ends each once: a per-walk flag (an instance attribute), which a subclass's
    # walk raises when it hands the same ended flows on (RoleWalker.jump)
    dedupe_ended = False
    # flows coming back from a jump skip the rules of a long chain they cannot meet (see walk)
    PARK = True

    trace: Optional[Callable[[str, int, Any, List[Any]], None]] = None

    def __init__(self, rulesets: Sequence[Ruleset], universe: Any, local_addresses: Any):
        self.rulesets = list(rulesets)
        self.universe = universe
        self._inert = InertChains()
        bind_rulesets(self.rulesets, universe, local_addresses)

    # -- the algebra (overridden) ----------------------------------------------------------

    @staticmethod
    def restrict(flow: Flow, box: Box) -> Flow:
        """The flow narrowed to a sub-box of it."""
        raise NotImplementedError

    def merge(self, flows: List[Flow]) -> List[Flow]:
        """Fewer flows for the same packets where their fates are the same."""
        return flows

    def before_conntrack(self, flows: List[Flow]) -> List[Flow]:
        """Into the pre-conntrack form (see packetset.CT_PRE_SHIFT): raw chains are about to run."""
        return flows

    def conntrack_runs(self, flows: List[Flow]) -> List[Flow]:
        """Conntrack has run: the states carried in the pre-conntrack form become the states."""
        return flows

    def rules_of(self, rs: Ruleset, chain: Chain) -> Sequence[Any]:
        """The chain's rules as this algebra matches them."""
        return list(chain.rules)

    def index_of(self, chain: Chain, rules: Sequence[Any]) -> Any:
        """The chain's ChainIndex over ``rules`` (built once), or a false value: none."""
        return False

    def runs_of(self, chain: Chain, rules: Sequence[Any], picked: Optional[List[int]]) -> Optional[Dict[int, Any]]:
        """{position: Run} of runs walked at once (analysis.chain_index.Run) in ``rules`` (the
        chain's, or the part of them at the positions ``picked``), or None."""
        return None

    def dispatches_of(self, chain: Chain, rules: Sequence[Any], picked: Optional[List[int]]) -> Optional[Dict[int, Any]]:
        """{position: Dispatch} of dispatch runs of jumps walked at once (walk_dispatch;
        analysis.chain_index.Dispatch) in ``rules`` (as runs_of), or None."""
        return None

    def repeats_of(self, rs: Ruleset, chain: Chain, picked: Optional[List[int]]) -> Optional[Dict[int, int]]:
        """{position: the position after it} of rules that send the very same copies as the
        one before them when nothing came back from it, or None."""
        return None

    def match(self, rule: Any, flows: List[Flow]) -> Tuple[List[Flow], List[Flow]]:
        """(the parts of ``flows`` the rule takes, the parts that go on); the flows themselves
        (the same list) go on when the rule only may match."""
        raise NotImplementedError

    def undecided(self, rule: Any, matched: List[Flow], rest: List[Flow]) -> List[Flow]:
        """The flows a rule whose match twinwall cannot decide (``rule.unknown``) takes; the
        algebra may also add them to ``rest``, where they go on as well."""
        return matched

    def decision(self, rs: Ruleset, rule: Any) -> Decision:
        raise NotImplementedError

    def policy_decision(self, rs: Ruleset, base: BaseChain, chain: Chain, policy: str) -> Decision:
        return Decision(base.table, base.chain, None, None, policy, rs.source, policy, chain.line)

    def ended_by(self, flow: Flow, decision: Decision) -> Flow:
        """The flow as a rule (or a policy) that ends its walk of a base chain leaves it."""
        return flow

    def accepted(self, flow: Flow, decision: Decision) -> Flow:
        """A flow an ACCEPT (rule or cited policy) lets on to the next base chain."""
        return flow

    def queued(self, flow: Flow) -> Flow:
        """A flow a QUEUE hands to user space (which decides: it goes on)."""
        return flow

    def outcome(self, flow: Flow, verdict: str, decision: Decision) -> Any:
        raise NotImplementedError

    def jump(self, rs: Ruleset, table: str, rule: Any, decision: Decision, entering: List[Flow], depth: int,
             ended: List[Ended], seen: Set[tuple]) -> List[Flow]:
        """Walk ``entering`` through the chain a jump or goto names: returns what comes back,
        adds what ends there to ``ended``. (``seen``: for the algebra's memo, per chain walk.)"""
        back, sub_ended = self.walk(rs, table, rule.target, entering, depth + 1)
        ended.extend(sub_ended)
        return back

    def rejoin(self, current: List[Flow], back: List[Flow]) -> List[Flow]:
        """The flows going on after a jump: those that did not jump and those that came back.
        (The same list when nothing new came back.)"""
        return current + back if back else current

    def untrack(self, flow: Flow) -> List[Flow]:
        raise NotImplementedError

    def nat(self, rs: Ruleset, flow: Flow, rule: Any, decision: Decision) -> List[Flow]:
        """What DNAT/REDIRECT makes of a flow (ended "nat": on to the next base chain)."""
        raise NotImplementedError

    def unknown_target(self, rule: Any, flows: List[Flow]) -> List[Flow]:
        """Flows a target twinwall does not model let go on."""
        return flows

    def nat_later(self, rs: Ruleset, base: BaseChain, flows: List[Flow]) -> List[Flow]:
        """A connection's later packets at a nat chain (see Evaluator.local_input)."""
        raise NotImplementedError

    # -- hooks -----------------------------------------------------------------------------

    def stages(self, hook: str) -> List[Tuple[Ruleset, BaseChain]]:
        return hook_stages(self.rulesets, hook)

    def run_hook(self, hook: str, flows: List[Flow], outcomes: List[Any], nat: bool = True,
                 later: bool = False) -> List[Flow]:
        """All base chains of a hook; returns the flows that every one of them let through.
        ``nat=False`` skips nat chains; ``later``: the flows are later packets (nat_later)."""
        pre = False  # flows in the pre-conntrack form (raw chains of prerouting and output)
        tracks = self.PRE_CONNTRACK and hook in CONNTRACK_HOOKS
        trace = self.trace
        for rs, base in self.stages(hook):
            if not flows:
                break
            if tracks and (base.priority < CONNTRACK_PRIORITY) != pre:
                pre = not pre
                flows = self.before_conntrack(flows) if pre else self.conntrack_runs(flows)
            if base.kind == "nat" and not nat:
                continue
            chain = rs.chain(base.table, base.chain)
            if chain is None:
                continue
            if base.kind == "nat" and later:
                flows = self.nat_later(rs, base, flows)
                continue
            skipped: List[Flow] = []
            if base.kind == "nat":
                flows, skipped = nat_entry(flows, self.restrict)
            returned, ended = self.walk(rs, base.table, base.chain, flows, 0)
            if self.dedupe_ended and len(ended) > 1:
                # a chain reached along several paths ends the same flows once per path
                ended = list({(id(e[0]), e[1], id(e[2])): e for e in ended}.values())
            nxt = skipped
            # end of a base chain: its policy
            policy = chain.policy or "ACCEPT"
            cite = cites_accept_policy(rs, base, hook)
            decision = self.policy_decision(rs, base, chain, policy)
            for f in returned:
                if policy == "DROP":
                    outcomes.append(self.outcome(self.ended_by(f, decision), V_DROP, decision))
                elif cite:
                    nxt.append(self.accepted(self.ended_by(f, decision), decision))
                else:
                    nxt.append(f)
                if trace:
                    trace("policy", 0, decision, [f])
            for f, action, dec in ended:
                if action == ACCEPT:
                    nxt.append(self.accepted(f, dec))
                elif action == "nat":
                    nxt.append(f)
                elif action == QUEUE:
                    nxt.append(self.queued(f))
                elif action == REJECT:
                    outcomes.append(self.outcome(f, V_REJECT, dec))
                else:
                    outcomes.append(self.outcome(f, V_DROP, dec))
            flows = self.merge(nxt)
        if pre:
            flows = self.conntrack_runs(flows)
        return flows

    # -- chains ----------------------------------------------------------------------------

    def walk(self, rs: Ruleset, table: str, chain_name: Optional[str], flows: List[Flow],
             depth: int) -> Tuple[List[Flow], List[Ended]]:
        """Returns (flows that reached the end or RETURN, [(flow, terminal action, decision)])."""
        if depth > MAX_DEPTH:
            raise EvaluationError(f"chain nesting deeper than {MAX_DEPTH} at {table} {chain_name}: a loop?")
        chain = rs.chain(table, chain_name) if chain_name is not None else None
        if chain is None:
            raise EvaluationError(f"{rs.source}: jump to missing chain {table} {chain_name}")
        returned: List[Flow] = []
        ended: List[Ended] = []
        seen: Set[tuple] = set()
        current = flows
        trace = self.trace
        inert_known = self._inert.of(rs, table)
        rules = self.rules_of(rs, chain)
        picked = None
        index = None
        if len(rules) >= MIN_INDEXED_RULES:
            # a long chain: only the rules these packets can meet (see analysis.chain_index)
            index = self.index_of(chain, rules)
            if index:
                picked = index.candidates([f.box for f in flows])
                if picked is not None:
                    rules = [rules[i] for i in picked]
        # (a trace that only follows logging rules misses nothing in a run: none of its rules logs)
        runs = self.runs_of(chain, rules, picked) if trace is None or getattr(trace, "logging_only", False) else None
        repeats = self.repeats_of(rs, chain, picked)
        # (a dispatch run parks what comes back from its jumps: only in a chain with an index)
        dispatches = self.dispatches_of(chain, rules, picked) if trace is None and index and self.PARK else None
        merge_at = self.MERGE_AT
        match, decide = self.match, self.decision  # (looked up once: the loop below is hot)
        # the flows a "may" jump with nothing coming back left untouched: an identical rule
        # right after it sends the very same copies into the same chain, with the same result
        settled = None
        i, n = 0, len(rules)
        # flows that came back from a jump and meet none of the next rules (as the chain's index
        # tells): {position: flows} of where they rejoin the walk. Many small chains (one per
        # port, each returning what it did not accept) would otherwise pile their returns up in
        # ``current``, every later rule testing, and every rejoin merging, all of them: quadratic.
        park = index if index and self.PARK else None
        parked: Dict[int, List[Flow]] = {}
        wake = n + 1  # the first position in ``parked``
        while i < n:
            if i >= wake:
                current = self._unpark(parked, i, current)
                wake = min(parked) if parked else n + 1
            position = i
            rule = rules[i]
            i += 1
            if not current:
                if wake < n:
                    i = wake
                    continue
                break
            if runs and position in runs:
                run = runs[position]
                if wake < run.end:
                    # flows due inside the run walk all of it (its first rules miss them)
                    current = self._unpark(parked, run.end - 1, current)
                    wake = min(parked) if parked else n + 1
                current = self.walk_run(rs, rules, run, current, ended)
                i = run.end
                continue
            if dispatches and position in dispatches and settled is None and merge_at is None:
                dispatch = dispatches[position]
                if wake >= dispatch.end:  # (no parked flow due inside it)
                    current, i = self.walk_dispatch(rs, table, rules, dispatch, current, depth, ended, seen, index, picked,
                                                    parked)
                    wake = min(parked) if parked else n + 1
                    continue
            if settled is not None:
                if current is settled and repeats:
                    end = repeats.get(position)
                    if end and end <= wake:
                        i = end  # the rest of the run would send the same copies again
                        continue
                settled = None
            if not rule.alternatives:
                continue
            action = rule.action
            if action == CONTINUE:
                if trace:
                    self._trace_match(rule, current, depth)
                continue  # LOG, counters...: nothing to decide
            inert = inert_known.get(rule.target) if action == JUMP else False
            if inert:
                # a jump already found inert (below): no need to split the flows to learn it
                if trace:
                    self._trace_match(rule, current, depth)
                continue
            matched, rest = match(rule, current)
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
                matched = self.undecided(rule, matched, rest)
            if trace:
                trace("match", depth, rule, matched)
            may_only = rest is current
            current = rest
            decision = decide(rs, rule)
            if action in _ENDING:
                kind = "nat" if action == NAT_DONE else action
                ended_by = self.ended_by
                ended.extend([(ended_by(f, decision), kind, decision) for f in matched])
            elif action == RETURN:
                returned.extend(matched)
            elif action == JUMP or action == GOTO:
                back = self.jump(rs, table, rule, decision, matched, depth, ended, seen)
                if park is not None and back and action == JUMP and not may_only:
                    after = picked[position] if picked is not None else position
                    skip_to = park.next_meeting([f.box for f in back], after)
                    if picked is not None:
                        skip_to = bisect_left(picked, skip_to)
                    if skip_to > i:
                        parked.setdefault(skip_to, []).extend(back)
                        if skip_to < wake:
                            wake = skip_to
                        continue
                if action == JUMP:
                    joined = self.rejoin(current, back)
                    if may_only and joined is current:
                        settled = current
                    current = joined
                else:
                    returned.extend(back)
                    if may_only and not back:
                        settled = current
            elif action == NOTRACK:
                # (with an undecidable match the tracked copies are already in ``rest``)
                current = current + [u for f in matched for u in self.untrack(f)]
            elif action == DNAT or action == REDIRECT:
                for f in matched:
                    ended.extend([(g, "nat", decision) for g in self.nat(rs, f, rule, decision)])
            elif action == UNKNOWN:
                current = current + self.unknown_target(rule, matched)
            else:  # pragma: no cover - every action is handled above
                raise EvaluationError(f"unhandled action {action}")
            if merge_at is not None and len(current) > merge_at:
                current = self.merge(current)
                # the next merge once the flows have doubled: flows that do not merge would
                # otherwise be merged again after every rule
                merge_at = max(self.MERGE_AT or 0, 2 * len(current))
        if parked:
            current = self._unpark(parked, n, current)
        returned.extend(current)
        return returned, ended

    def _unpark(self, parked: Dict[int, List[Flow]], position: int, current: List[Flow]) -> List[Flow]:
        """``current`` with the parked flows due at ``position`` (or before it) back in."""
        for due in sorted(p for p in parked if p <= position):
            current = self.rejoin(current, parked.pop(due))
        return current

    def walk_dispatch(self, rs: Ruleset, table: str, rules: Sequence[Any], dispatch: Any, current: List[Flow], depth: int,
                      ended: List[Ended], seen: Set[tuple], index: Any, picked: Optional[List[int]],
                      parked: Dict[int, List[Flow]]) -> Tuple[List[Flow], int]:
        """What walk's loop gives for the rules of a dispatch run (dispatches_of) from its first
        on, with no parked flow due before its end: (the flows going on, the position of the
        next rule to walk: the run's end, or the rule after one whose jump sent back flows walk
        would not park past the run, those rejoined or parked as walk does)."""
        raise NotImplementedError

    def walk_run(self, rs: Ruleset, rules: Sequence[Any], run: Any, current: List[Flow], ended: List[Ended]) -> List[Flow]:
        """The flows past a run of rules (runs_of), each rule's part of them ended."""
        raise NotImplementedError

    def _trace_match(self, rule: Any, flows: List[Flow], depth: int) -> None:
        """Tell the trace which flows a rule that decides nothing matched."""


def remap_repeats(full: Dict[int, int], picked: List[int]) -> Dict[int, int]:
    """``repeats_of`` for the rules a chain index picked (positions ``picked`` of the chain):
    identical rules meet the same packets, so a run of them is picked whole."""
    out = {}
    for k, p in enumerate(picked):
        end = full.get(p)
        if end:
            out[k] = bisect_left(picked, end)
    return out
