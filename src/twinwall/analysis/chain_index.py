"""Which rules of a long chain some packets can meet, without testing every rule.

A big chain is usually a dispatch table: kube-proxy's KUBE-SERVICES holds one rule per cluster
IP and port (``-d 10.96.0.10/32 -p udp --dport 53 -j KUBE-SVC-...``), a firewall's blocklist
one rule per source. Packets addressed to the host meet none of the cluster-IP rules, yet a
rule-by-rule walk would test thousands of them. A ``ChainIndex`` sorts the rules by the values
they require on each dimension most of them constrain (addresses, ports); given the boxes
entering the chain, each dimension names the rules whose values meet the boxes' (plus the rules
that do not constrain it), and only the rules every dimension names are walked, in chain order.

Why this is exact: a rule that cannot meet the entering packets on one dimension cannot match
any of them; and the packets walking on through a chain only ever shrink (a rule splits them,
a jump returns parts of them, NOTRACK changes the state dimension alone), so a rule that meets
none of the entering boxes meets none of the later ones either.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from itertools import compress
from operator import itemgetter
from typing import Any, Dict, List, Optional, Sequence, Set

from twinwall.netfilter.packetset import DPORT, DST, MASK_DIMS, PROTO, SPORT, SRC, iv_meets, iv_normalize
from twinwall.netfilter.ruleset import RuleList

# Chains shorter than this are walked rule by rule: an index would cost more than it saves.
MIN_RULES = 32
# dimensions worth indexing: the ones dispatch tables key on
INDEXED_DIMS = (DST, SRC, DPORT, SPORT)
# dimensions that only gate ``candidates`` (ChainIndex.build(gates=...)): a value every rule
# shares still tells apart the packets that lack it (a dispatch table's "-p tcp --dport P"
# rules, which ICMPv6 or UDP packets meet none of, for all their ports)
GATE_DIMS = (PROTO,)
# a dimension is indexed when at least this share of the rules constrain it, with at least
# MIN_DISTINCT different values (a value every rule shares tells no rule apart)
MIN_SHARE = 0.5
MIN_DISTINCT = 4
# when the entering packets may meet more than this share of the rules, walk them all
MAX_PICKED_SHARE = 0.75
# next_meeting gives up (skips nothing) past this many interval tests
NEXT_LIMIT = 64


class _DimIndex:
    """The rules' values on one dimension, sorted for stabbing queries."""

    __slots__ = ("dim", "always", "los", "his", "rule_of", "reach", "wide", "wide_by_rule", "wide_rules")

    def __init__(self, dim: int, always: List[int], spans: List[tuple]):
        self.dim = dim
        self.always = always  # rules that do not constrain ``dim``: always candidates
        # the widest tenth of the values are tested one by one, so that one broad rule (a /8)
        # does not widen every lookup
        widths = sorted(v[-1][1] - v[0][0] for _, v in spans)
        cut = widths[int(len(widths) * 0.9)] if widths else 0
        entries: List[tuple] = []
        self.wide: List[tuple] = []
        for i, values in spans:
            if values[-1][1] - values[0][0] > cut:
                self.wide.append((values, i))
            else:
                entries.extend((lo, hi, i) for lo, hi in values)
        entries.sort()
        self.los = [e[0] for e in entries]
        self.his = [e[1] for e in entries]
        self.rule_of = [e[2] for e in entries]
        # the widest narrow interval: a query [lo, hi] can only meet intervals starting in
        # [lo - reach, hi]
        self.reach = max((e[1] - e[0] for e in entries), default=0)
        # (for next_meeting: the wide values in chain order)
        self.wide_by_rule = sorted(self.wide, key=lambda w: w[1])
        self.wide_rules = [w[1] for w in self.wide_by_rule]

    def candidates(self, boxes: Sequence[tuple], limit: float) -> Optional[Set[int]]:
        """The rules whose values on this dimension meet some box; None: more than ``limit``."""
        dim = self.dim
        picked = set(self.always)
        los, his, rule_of, reach = self.los, self.his, self.rule_of, self.reach
        queries = set()
        for b in boxes:
            queries.update(b[dim])
        for qlo, qhi in queries:
            k = bisect_left(los, qlo - reach)
            end = bisect_right(los, qhi)
            if end - k > limit:
                return None
            while k < end:
                if his[k] >= qlo:
                    picked.add(rule_of[k])
                k += 1
            if len(picked) > limit:
                return None
        if self.wide:
            values = [b[dim] for b in boxes]
            for ivs, i in self.wide:
                if i not in picked and any(iv_meets(ivs, v) for v in values):
                    picked.add(i)
        return None if len(picked) > limit else picked


    def next_meeting(self, boxes: Sequence[tuple], after: int, size: int) -> int:
        """A position past ``after`` before which no rule after ``after`` meets any of
        ``boxes`` on this dimension (``size``: none does); ``after + 1`` when telling would
        take more than NEXT_LIMIT tests."""
        dim, always = self.dim, self.always
        k = bisect_right(always, after)
        nxt = always[k] if k < len(always) else size
        los, his, rule_of, reach = self.los, self.his, self.rule_of, self.reach
        # (one box, the commonest - what a small chain sent back -: its own intervals, which
        # are distinct; the order of the queries changes neither the answer nor the budget)
        queries = boxes[0][dim] if len(boxes) == 1 else set().union(*[b[dim] for b in boxes])
        budget = NEXT_LIMIT
        for qlo, qhi in queries:
            k = bisect_left(los, qlo - reach)
            end = bisect_right(los, qhi)
            budget -= end - k
            if budget < 0:
                return after + 1
            while k < end:
                i = rule_of[k]
                if after < i < nxt and his[k] >= qlo:
                    nxt = i
                k += 1
        wide = self.wide_by_rule
        if wide:
            values = [b[dim] for b in boxes]
            one = values[0] if len(values) == 1 else None
            k = bisect_right(self.wide_rules, after)
            while k < len(wide):
                ivs, i = wide[k]
                if i >= nxt:
                    break
                budget -= 1
                if budget < 0 or (iv_meets(ivs, one) if one is not None else any(iv_meets(ivs, v) for v in values)):
                    return i  # (the first one not known to miss them)
                k += 1
        return nxt


class ChainIndex:
    __slots__ = ("size", "dims", "gates")

    def __init__(self, size: int, dims: List[_DimIndex], gates: Sequence[_DimIndex] = ()):
        self.size = size  # rules in the chain
        self.dims = dims
        # dimensions consulted by ``candidates`` only, after ``dims`` (see GATE_DIMS)
        self.gates = list(gates)

    @classmethod
    def build(cls, rules: Sequence, gates: Sequence[int] = ()) -> Optional["ChainIndex"]:
        """An index over ``rules`` (compiled ``Rule`` objects), or None when none is worth it.
        ``gates``: dimensions (GATE_DIMS) indexed for ``candidates`` alone, whose values the
        rules may all share (interval dimensions of every box the walk gives the index)."""
        n = len(rules)
        if n < MIN_RULES:
            return None
        every = INDEXED_DIMS + tuple(gates)
        always_of: Dict[int, List[int]] = {dim: [] for dim in every}
        spans_of: Dict[int, List[tuple]] = {dim: [] for dim in every}
        for i, r in enumerate(rules):
            alternatives = r.alternatives
            if not alternatives:
                continue  # (a rule that can never match is never a candidate)
            if len(alternatives) == 1:
                # one pass over the rule's one constraint for every dimension (_values of each)
                got: Dict[int, tuple] = {}
                for d, value in alternatives[0]:
                    if d in always_of and d not in got:
                        got[d] = value
                for dim in every:
                    value = got.get(dim)
                    if value is None:
                        always_of[dim].append(i)
                    elif value:
                        spans_of[dim].append((i, value))
                continue
            for dim in every:
                values = _values(r, dim)
                if values is None:
                    always_of[dim].append(i)
                elif values:
                    spans_of[dim].append((i, values))
        dims = []
        for dim in INDEXED_DIMS:
            always, spans = always_of[dim], spans_of[dim]
            if len(always) > n * (1 - MIN_SHARE) or len({v for _, v in spans}) < MIN_DISTINCT:
                continue
            dims.append(_DimIndex(dim, always, spans))
        gated = [_DimIndex(dim, always_of[dim], spans_of[dim]) for dim in gates
                 if len(always_of[dim]) <= n * (1 - MIN_SHARE) and spans_of[dim]]
        return cls(n, dims, gated) if dims or gated else None

    def candidates(self, boxes: Sequence[tuple]) -> Optional[List[int]]:
        """Positions of the rules that may meet some of ``boxes``, in chain order; None when
        that is (nearly) every rule."""
        limit = self.size * MAX_PICKED_SHARE
        found: Optional[Set[int]] = None
        for index in (self.dims + self.gates if self.gates else self.dims):
            got = index.candidates(boxes, limit)
            if got is None:
                continue  # this dimension tells nothing apart for these packets
            found = got if found is None else found & got
            if not found:
                break
        return None if found is None else sorted(found)

    def next_meeting(self, boxes: Sequence[tuple], after: int) -> int:
        """A position past ``after`` such that no rule between the two (``after`` < position <
        it) can meet any of ``boxes``: the rules a walk of these packets may skip, from a rule
        at ``after`` on (``size``: all the rest). Exact for the same reason ``candidates`` is;
        a lower bound (the rule there may not meet them either)."""
        best = after + 1
        size = self.size
        for index in self.dims:
            nxt = index.next_meeting(boxes, after, size)
            if nxt > best:
                best = nxt
                if best >= size:
                    break
        return best


def _values(rule, dim: int):
    """The values a rule requires on ``dim`` (an interval set), or None when some alternative
    lets any value through. A rule that can never match requires nothing: ``()``."""
    alternatives = rule.alternatives
    if not alternatives:
        return ()
    if len(alternatives) == 1:
        for d, value in alternatives[0]:
            if d == dim:
                return value
        return None
    parts = []
    for alt in alternatives:
        for d, value in alt:
            if d == dim:
                parts.extend(value)
                break
        else:
            return None
    return iv_normalize(parts)


# --------------------------------------------------------------------------------------------
# runs of one-dimension rules


# a run shorter than this is walked rule by rule
MIN_RUN = 8


class Run:
    """Consecutive terminal rules that each test one and the same interval dimension, on values
    no two of them share: a blocklist's ``-s ADDR -j DROP`` x 100,000, a port table's
    ``--dport P -j ACCEPT``. Walked rule by rule, every rule would cut its value out of the
    packets going on and copy what is left (quadratic in the run's length). Since the values
    are disjoint, the part of a packet set each rule takes is simply its intersection with that
    rule's value, and what goes on past the run is the set minus their union: the same regions,
    in the same order, found with a binary search per interval instead."""

    __slots__ = ("start", "end", "dim", "los", "his", "_owner", "union", "values", "source", "decisions", "action")

    def __init__(self, start: int, end: int, dim: int, los: List[int], his: List[int], owner: Optional[Sequence[int]],
                 values: Sequence[tuple] = (), union: Optional[tuple] = None, pairs: Optional[List[tuple]] = None):
        """``los``, ``his``, ``owner``: the intervals (sorted, disjoint) and the position in the
        run of the rule holding each (kept as an array: 100,000 positions are no 100,000 int
        objects; None when every rule's value is one interval: found from ``values`` when first
        asked, see ``owner``); ``values``: each rule's value, by position in the run (the parts
        that are a rule's whole value are that value); ``union``: theirs, when the caller knows it
        (else made here, of ``pairs``, the intervals as tuples, where the caller has them)."""
        self.start, self.end, self.dim = start, end, dim  # rules[start:end]
        self.los, self.his = los, his
        self._owner = owner if owner is None or isinstance(owner, array) else array("l", owner)
        self.union = _union_sorted(los, his, pairs) if union is None else union
        self.values = list(values)
        # the walk's Decision of each rule, by position in the run, for the ruleset ``source``
        # (every walk of the chain cites its rules alike: made once, shared)
        self.source: Optional[str] = None
        self.decisions: Dict[int, Any] = {}
        # the action every rule of the run that can match has, "" if they differ (the
        # evaluator's run_action; None: not asked yet)
        self.action: Optional[str] = None

    @property
    def owner(self) -> Sequence[int]:
        """The position in the run of the rule each interval (``los``, ``his``) is of. Where the
        run was made without it (every rule one interval), found now: each rule's position,
        sorted by its interval's start as ``los`` is (a walk that only ends whole flows, a
        blocklist's, never asks)."""
        if self._owner is None:
            firsts = [v[0][0] for v in self.values]
            self._owner = array("l", sorted(range(len(firsts)), key=firsts.__getitem__))
        return self._owner

    def parts(self, value) -> Dict[int, tuple]:
        """{position in the run: that rule's part of ``value``} for the rules that meet it (a
        rule's whole value is the rule's own tuple, not a copy per walk and region)."""
        if not iv_meets(self.union, value):
            return {}  # (no rule's value meets it: the positions are not even looked up)
        return _parts(self.los, self.his, self.owner, self.values, value)


def _parts(los: Sequence[int], his: Sequence[int], owner: Sequence[int], values: Sequence[tuple],
           value: tuple) -> Dict[int, tuple]:
    """Run.parts and Dispatch.parts: {position: that rule's part of ``value``} from the rules'
    intervals sorted by start (``los``, ``his``), the position of the rule each is of
    (``owner``) and each rule's value by position (``values``; empty: none kept)."""
    out: Dict[int, tuple] = {}
    split: Dict[int, list] = {}  # the rules ``value`` cuts, or meets more than once
    for qlo, qhi in value:
        k = bisect_right(his, qlo - 1)  # first entry ending at or after qlo
        end = bisect_right(los, qhi)
        while k < end:
            lo, hi = los[k], his[k]
            i = owner[k]
            k += 1
            if lo >= qlo and hi <= qhi and values and len(values[i]) == 1:
                out[i] = values[i]  # (the commonest case: met once and whole)
                continue
            split.setdefault(i, []).append((lo if lo > qlo else qlo, hi if hi < qhi else qhi))
    for i, p in split.items():
        t = tuple(p)
        out[i] = values[i] if values and t == values[i] else t
    return out


def _union_sorted(los: List[int], his: List[int], pairs: Optional[List[tuple]] = None) -> tuple:
    """iv_normalize of sorted, disjoint intervals: only adjacent ones join (``pairs``: the
    same intervals as tuples, kept where nothing joins them)."""
    out: List[tuple] = []
    if not los:
        return ()
    # (the intervals are disjoint: two join only where one starts right after the other ends)
    joins = list(compress(range(1, len(los)), map(int.__eq__, los[1:], map((1).__add__, his))))
    if not joins:
        return tuple(pairs) if pairs is not None else tuple(zip(los, his))  # (none adjacent)
    if pairs is None:
        pairs = list(zip(los, his))
    # the pairs between the joins as they are (slices), each chain of joined ones as one
    done = 0  # pairs[:done] are in ``out``
    k = 0
    while k < len(joins):
        first = last = joins[k]  # pairs[first - 1] and pairs[first] join, ... up to pairs[last]
        k += 1
        while k < len(joins) and joins[k] == last + 1:
            last = joins[k]
            k += 1
        out += pairs[done:first - 1]
        out.append((los[first - 1], his[last]))
        done = last + 1
    out += pairs[done:]
    return tuple(out)


def _run_value(rule, terminal) -> Optional[tuple]:
    """(dimension, value) of a rule a run may hold, or None."""
    if rule.action not in terminal or rule.unknown or rule.logs or len(rule.alternatives) != 1:
        return None
    alt = rule.alternatives[0]
    if len(alt) != 1 or alt[0][0] in MASK_DIMS or not alt[0][1]:
        return None
    return alt[0]


def runs_within(full: Dict[int, Run], picked: Sequence[int]) -> Dict[int, Run]:
    """The runs of the rules at positions ``picked`` (sorted) of a chain whose runs are ``full``
    (find_runs of the whole chain), by position in ``picked``: each run's picked rules, where
    MIN_RUN or more. (find_runs of the picked rules would also join runs that rules left out
    separate: walked apart, they give the same regions.) The whole run's sorted values are
    filtered, not sorted again: an index picks most of a 100,000-rule chain on every walk."""
    out: Dict[int, Run] = {}
    for run in full.values():
        i0, i1 = bisect_left(picked, run.start), bisect_left(picked, run.end)
        if i1 - i0 < MIN_RUN:
            continue
        if i1 - i0 == run.end - run.start:  # (every rule of it)
            out[i0] = Run(i0, i1, run.dim, run.los, run.his, run.owner, run.values, run.union)
            continue
        # position in the run -> position in the part of it picked
        moved = {picked[i] - run.start: i - i0 for i in range(i0, i1)}
        kept = [(lo, hi, moved[k]) for lo, hi, k in zip(run.los, run.his, run.owner) if k in moved]
        out[i0] = Run(i0, i1, run.dim, [lo for lo, _, _ in kept], [hi for _, hi, _ in kept], array("l", [k for _, _, k in kept]),
                      [run.values[picked[i] - run.start] for i in range(i0, i1)])
    return out


def find_runs(rules: Sequence, terminal) -> Dict[int, Run]:
    """{start position: Run} of the runs in ``rules`` (actions in ``terminal`` only). A
    RuleList's stretches are read as their values, their Rules not made: each of their rules is
    one a run may hold (one non-empty value on one dimension, nothing else) when their action is
    terminal, and none is otherwise."""
    runs: Dict[int, Run] = {}
    n = len(rules)
    stretch_at = {s.start: s for s in rules.stretches} if type(rules) is RuleList else {}
    i = 0
    while i < n:
        stretch = stretch_at.get(i)
        if stretch is not None:
            if stretch.action not in terminal:
                i = stretch.end
                continue
            dim = stretch.dim
            j = stretch.end
            values: List[tuple] = list(stretch.values)
        else:
            first = _run_value(rules[i], terminal)
            if first is None:
                i += 1
                continue
            dim = first[0]
            j = i + 1
            values = [first[1]]
        append = values.append
        while j < n:
            stretch = stretch_at.get(j)
            if stretch is not None:
                if stretch.action not in terminal or stretch.dim != dim:
                    break
                values.extend(stretch.values)
                j = stretch.end
                continue
            rule = rules[j]
            alternatives = rule.alternatives
            if not alternatives:
                append(())
                j += 1  # a rule that can never match (the other family's, in an inet table)
                continue
            # (_run_value, inline: this loop visits every rule of a 100,000-rule blocklist)
            if rule.action not in terminal or rule.unknown or rule.logs or len(alternatives) != 1:
                break
            alt = alternatives[0]
            if len(alt) != 1:
                break
            d, value = alt[0]
            if d != dim or not value:
                break
            append(value)
            j += 1
        if j - i >= MIN_RUN:
            run = _run(i, j, dim, values)
            if run is not None:
                runs[i] = run
        i = j
    return runs


def _run(start: int, end: int, dim: int, values: List[tuple]) -> Optional[Run]:
    """The Run of rules[start:end], whose values on ``dim`` are ``values``; None when two of
    them overlap (a later rule sees only what earlier ones left: walked one by one)."""
    if set(map(len, values)) == {1}:
        # every rule one interval (a blocklist's addresses): the very pairs sorted by their
        # start (a stable sort: equal starts in rule order, as a sort of the positions by start
        # gives them), the union made of them (not a copy of each); which rule holds which
        # interval is found only if asked (Run.owner)
        pairs = sorted(map(itemgetter(0), values), key=itemgetter(0))
        los = list(map(itemgetter(0), pairs))
        his = list(map(itemgetter(1), pairs))
        if all(map(int.__gt__, los[1:], map((1).__add__, his))):
            # none overlap and none are adjacent (the commonest): the union is the pairs
            return Run(start, end, dim, los, his, None, values, tuple(pairs))
        if not all(map(int.__gt__, los[1:], his)):
            return None
        return Run(start, end, dim, los, his, None, values, pairs=pairs)
    los, his, owners = [], [], []
    for k, value in enumerate(values):
        for lo, hi in value:
            los.append(lo)
            his.append(hi)
            owners.append(k)
    # sorted by first value (equal ones overlap, refused below whatever their order)
    order = sorted(range(len(los)), key=los.__getitem__)
    los = [los[k] for k in order]
    his = [his[k] for k in order]
    if not all(map(int.__gt__, los[1:], his)):
        return None
    return Run(start, end, dim, los, his, [owners[k] for k in order], values)


# --------------------------------------------------------------------------------------------
# dispatch runs: jumps told apart by one dimension


class Dispatch:
    """Consecutive jumps that are the same rule but for their value on one interval dimension,
    on values no two of them share: a port table's ``-p tcp --dport P -j SVC-P`` x 16,000.
    Walked rule by rule, every rule tests every flow going on (and the flows that came back from
    the rules before it); but a flow meets only the rules whose value meets its own on ``dim``:
    found with a binary search per interval (``meeting``), the rules that meet no flow are the
    rules the walk rule by rule matches nothing with."""

    __slots__ = ("start", "end", "dim", "common", "values", "los", "his", "owner")

    def __init__(self, start: int, end: int, dim: int, common: tuple, values: List[tuple]):
        self.start, self.end, self.dim = start, end, dim  # rules[start:end]
        self.common = common  # the constraint every rule has besides its value on ``dim``
        self.values = values  # each rule's value on ``dim``, by position in the run
        ivs = sorted((lo, hi, k) for k, value in enumerate(values) for lo, hi in value)
        self.los = [lo for lo, _, _ in ivs]
        self.his = [hi for _, hi, _ in ivs]
        self.owner = array("l", [k for _, _, k in ivs])  # the position in the run of each

    def parts(self, value: tuple) -> Dict[int, tuple]:
        """{position in the run: that rule's part of ``value``} for the rules that meet it (a
        rule's whole value is the rule's own tuple, as split's cut gives it)."""
        return _parts(self.los, self.his, self.owner, self.values, value)


def _dispatch_value(rule, jump: str) -> Optional[tuple]:
    """The one constraint of a jump a dispatch run may hold (no match twinwall cannot decide,
    nothing logged), or None."""
    if rule.action != jump or rule.unknown or rule.logs or rule.ct_dnat is not None or len(rule.alternatives) != 1:
        return None
    return rule.alternatives[0]


def find_dispatches(rules: Sequence, jump: str) -> Dict[int, Dispatch]:
    """{start position: Dispatch} of the dispatch runs in ``rules`` (``jump``: the action of a
    jump to a chain): MIN_RUN or more consecutive rules of that action with one constraint each,
    the same but for one interval dimension's value, and those values disjoint. (A RuleList's
    stretches, rules of one dimension that end what they match, hold none.)"""
    out: Dict[int, Dispatch] = {}
    n = len(rules)
    inside = [(s.start, s.end) for s in rules.stretches] if type(rules) is RuleList else []
    skip = {start: end for start, end in inside}
    i = 0
    while i < n - MIN_RUN + 1:
        if i in skip:
            i = skip[i]
            continue
        first = _dispatch_value(rules[i], jump)
        nxt = rules[i + 1] if i + 1 not in skip else None
        second = _dispatch_value(nxt, jump) if nxt is not None else None
        if first is None or second is None or len(first) != len(second):
            i += 1
            continue
        # the one dimension the first two rules differ in
        diff = [k for k, (a, b) in enumerate(zip(first, second)) if a != b]
        if len(diff) != 1 or first[diff[0]][0] != second[diff[0]][0] or first[diff[0]][0] in MASK_DIMS:
            i += 1
            continue
        at = diff[0]
        dim = first[at][0]
        common = first[:at] + first[at + 1:]
        if any(d == dim for d, _ in common):
            i += 1
            continue
        values = [first[at][1]]
        j = i + 1
        while j < n and j not in skip:
            c = _dispatch_value(rules[j], jump)
            if c is None or len(c) != len(first) or c[at][0] != dim or not c[at][1] or c[:at] + c[at + 1:] != common:
                break
            values.append(c[at][1])
            j += 1
        while j - i >= MIN_RUN:
            run = Dispatch(i, j, dim, common, values)
            los, his, owner = run.los, run.his, run.owner
            met = [max(owner[t], owner[t + 1]) for t in range(len(los) - 1) if los[t + 1] <= his[t]]
            if not met:  # (no two values meet)
                out[i] = run
                break
            # the run ends before the first rule whose value meets an earlier one's (the rule
            # there may start the next)
            values = values[:min(met)]
            j = i + len(values)
        i = j
    return out
