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

The parts: ``analysis.roles`` (addresses by role), ``analysis.role_walk`` (the walk of one family
at role level), ``analysis.neutral_space`` (the space both families share); this module compares
the two walks (``analysis.diff.describe`` describes the regions). Regions agree with the evaluator run packet by packet:
where a role's verdict is single, it is the evaluator's verdict for every packet of it; where it
is mixed, every packet's verdict is one of the set (tests/unit/analysis/test_diff_properties.py checks
this).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial, reduce
from operator import or_
from typing import Any, Callable, Collection, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, cast

from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.analysis.neutral_space import (
    ICMP6_TO_4,
    PTB,
    V6_ONLY_BASE,
    canonical_union,
    cut_box,
    group_boxes,
    overlay_cuts,
    project_outcomes,
)
from twinwall.netfilter.packetset import (
    Box,
    DPORT,
    DST,
    GID,
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
    merge_with_payload,
)
from twinwall.analysis.context import FamilyContext, build_contexts
from twinwall.gc_pause import gc_paused
from twinwall.analysis.diff.describe import (
    Citations,
    describe_region,
    not_comparable_json,
    only_json,
    region_json,
    side_rule,
    verdict_of,
)
from twinwall.analysis.labels import has_runs, same_rules, share_rules
from twinwall.analysis.parallel import DIFF_FORK_MIN_RULES, FORK_MIN_RULES, can_fork, run_jobs, worth_forking
from twinwall.analysis.role_walk import LIFTED_STRETCHES, Outcome, RoleWalker, merge_tuples
from twinwall.analysis.roles import (
    HOST,
    AddressRoles,
    hook_roles,
    host_addresses,
    role_set,
    start_box,
)
from twinwall.errors import InputError
from twinwall.loader import import_parsers, load_rulesets, unread_table_note, unread_tables
from twinwall.model import IPV4, IPV6
from twinwall.netfilter.ruleset import Decision

HOOKS = ("input", "forward", "output")
# the document's versions (their "schema"): /2 cites each rule once, in a shared table
DIFF_SCHEMA = "twinwall.diff/2"
DIFF_SCHEMA_VERBOSE = "twinwall.diff/1"
HOOK_PATHS = {
    "input": ("prerouting", "input"),
    "forward": ("prerouting", "forward", "postrouting"),
    "output": ("output", "postrouting"),
}



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


def _group_merge(entries: Sequence[Tuple[Any, Box, Any]], combine=None) -> List[Tuple[Box, Any]]:
    """Merge the boxes of entries with equal keys into the widest boxes. Without ``combine`` the
    payloads of one key are equal; with it they differ, and a merged box carries ``combine`` of
    the list of its members' payloads."""
    groups: Dict[Any, List[Tuple[Box, Any]]] = {}
    for key, box, payload in entries:
        groups.setdefault(key, []).append((box, payload))
    out: List[Tuple[Box, Any]] = []
    for group in groups.values():
        if combine is not None:
            out.extend(merge_with_payload(group, rounds=6, combine_all=combine))
            continue
        payload = group[0][1]
        out.extend((b, payload) for b in merge_tuples(canonical_union([b for b, _ in group]), MASK_DIMS))
    return out


def _union_coverings(coverings: List[Collection[int]]) -> FrozenSet[int]:
    """The boxes covering regions merged into one (their rules are the union of the regions')."""
    return frozenset().union(*coverings)


def compare_outcomes(hook: str, a: Sequence[Tuple[Box, str, FrozenSet]], b: Sequence[Tuple[Box, str, FrozenSet]],
                     keep_regions: bool = False, differences_only: bool = False) -> Comparison:
    """a, b: projected outcomes (box, verdict, label) of the two sides. ``differences_only``
    leaves the not comparable and one-side-only regions out (the audit's egress finding)."""
    # (evaluate_family has merged the boxes of one (verdict, rules) already)
    boxes, tags_of = group_boxes(
        [(box, (side, verdict, label)) for side, outs in ((0, a), (1, b)) for box, verdict, label in outs]
    )
    # each distinct box's verdicts and rules per side, once: a region is covered by a few boxes
    # but often by hundreds of their rules (a router's per-host chains)
    box_sides = []
    for tags in tags_of:
        per: Tuple[Dict[str, List], Dict[str, List]] = ({}, {})
        for side, verdict, label in tags:
            per[side].setdefault(verdict, []).append(label)
        box_sides.append(per)
    # many regions are covered by the very same boxes (one rule's verdict cut by others'): each
    # set of covering boxes is made into verdicts once, and into the rules per verdict once and
    # only where a region needs them (most regions of a router are settled by their verdicts)
    # a region's verdicts per side: the union of its covering boxes' verdicts, as bit masks
    # (one bit per verdict); each pair of masks made into sets of verdicts once
    bit: Dict[str, int] = {}
    pair_masks: List[Tuple[int, int]] = []
    for per in box_sides:
        vm = [0, 0]
        for side in (0, 1):
            for verdict in per[side]:
                vm[side] |= bit.setdefault(verdict, 1 << len(bit))
        pair_masks.append((vm[0], vm[1]))
    names = list(bit)
    # a box's two masks as one integer, side b's above side a's: a region's are the OR of its
    # covering boxes' (reduce: in C; a router's forward regions are covered by 8 boxes each)
    shift = len(names)
    masks = [ma | mb << shift for ma, mb in pair_masks]
    low = (1 << shift) - 1
    del pair_masks
    # whether the two sides cite a rule in common, and which boxes cite any rule: where the
    # sides share none, the rules of a region covered by a box that cites one are not the same
    cites = [any(lb for labels in per[0].values() for lb in labels) or any(lb for labels in per[1].values() for lb in labels)
             for per in box_sides]
    # (label items: Decisions and RuleRuns, which the two walks may cut differently: see
    # analysis.labels)
    cited_a = {d for per in box_sides for labels in per[0].values() for lb in labels for d in lb}
    shared = share_rules(cited_a, (d for per in box_sides for labels in per[1].values() for lb in labels for d in lb))
    del cited_a
    verdict_pairs: Dict[int, Tuple[FrozenSet[str], FrozenSet[str]]] = {}
    sides_known: Dict[Collection[int], tuple] = {}
    interned: Dict[FrozenSet[Decision], FrozenSet[Decision]] = {}
    pairs: Dict[Tuple[FrozenSet, FrozenSet], tuple] = {}
    same_known: Dict[Collection[int], bool] = {}

    def united(covering: Collection[int]) -> Tuple[Dict[str, set], Dict[str, set]]:
        sides: Tuple[Dict[str, set], Dict[str, set]] = ({}, {})
        for g in covering:
            for side in (0, 1):
                for verdict, labels in box_sides[g][side].items():
                    sides[side].setdefault(verdict, set()).update(*labels)
        return sides

    def sides_of(covering: Collection[int]) -> tuple:
        got = sides_known.get(covering)
        if got is None:
            sides = united(covering)
            # equal sides are kept once (regions covered by different boxes are often decided
            # by the same rules: a router's diff held 1,800 copies of such sets of rules)
            sa = {v: interned.setdefault(fs, fs) for v, fs in ((v, frozenset(d)) for v, d in sides[0].items())}
            sb = {v: interned.setdefault(fs, fs) for v, fs in ((v, frozenset(d)) for v, d in sides[1].items())}
            ka, kb = _side_key(sa), _side_key(sb)
            got = pairs.get((ka, kb))
            if got is None:
                got = pairs[(ka, kb)] = (sa, sb, ka, kb)
            sides_known[covering] = got
        return got

    comp = Comparison(hook)
    diff_entries = []
    nc_entries = []
    a_only = []
    b_only = []
    # equal lists of covering boxes kept once (the router's 14,000 not comparable regions
    # kept a copy each of the few hundred distinct ones, 20 MB, until they were merged), as
    # tuples: the router's 10,000 distinct ones were 7 MB as frozensets of 8 indices (a
    # region's rules are the union of its boxes' whatever their order; merged regions'
    # coverings are united into frozensets, _union_coverings)
    coverings: Dict[Tuple[int, ...], Tuple[int, ...]] = {}

    def covering_of(idx: List[int]) -> Tuple[int, ...]:
        c = tuple(idx)
        return coverings.setdefault(c, c)

    for idx, cuts in overlay_cuts(boxes):
        m = reduce(or_, map(masks.__getitem__, idx), 0)
        vs = verdict_pairs.get(m)
        if vs is None:
            ma, mb = m & low, m >> shift
            vs = verdict_pairs[m] = (
                frozenset(v for i, v in enumerate(names) if ma >> i & 1),
                frozenset(v for i, v in enumerate(names) if mb >> i & 1),
            )
        va, vb = vs
        if keep_regions:
            covering = covering_of(idx)
            got = sides_of(covering)
            comp.regions.append((cut_box(boxes, idx, cuts), got[0], got[1]))
        if differences_only and (not va or not vb or len(va) > 1 and len(vb) > 1):
            continue
        if len(va) == 1 and va == vb:
            continue  # the same verdict
        # (most regions end above: their box and covering set are built from here on)
        box = cut_box(boxes, idx, cuts)
        covering = covering_of(idx)
        if not vb:
            sa, _, ka, _ = sides_of(covering)
            a_only.append((("a", ka), box, sa))
            continue
        if not va:
            _, sb, _, kb = sides_of(covering)
            b_only.append((("b", kb), box, sb))
            continue
        if len(va) > 1 and len(vb) > 1:
            if va == vb:
                # the very same rules (e.g. before/after)? (asked of thousands of a router's
                # regions: only the answer is kept)
                same = same_known.get(covering)
                if same is None:
                    if not shared and any(cites[g] for g in covering):
                        same = False  # (the sides cite no rule in common: IPv4 and IPv6)
                    else:
                        ua, ub = united(covering)
                        # (two walks may cut a chain's rules into different runs: then rule by rule)
                        same = ua == ub or (ua.keys() == ub.keys() and any(has_runs(s[v]) for s in (ua, ub) for v in s)
                                            and all(same_rules(ua[v], ub[v]) for v in ua))
                    same_known[covering] = same
                if same:
                    continue
            # not comparable: regions are merged by their verdict sets, rules united
            nc_entries.append(((va, vb), box, covering))
        else:
            sa, sb, ka, kb = sides_of(covering)
            diff_entries.append(((ka, kb), box, (sa, sb)))
    comp.differences = [Region(hook, bx, p[0], p[1]) for bx, p in _group_merge(diff_entries)]
    comp.not_comparable = [
        Region(hook, bx, *sides_of(covering)[:2]) for bx, covering in _group_merge(nc_entries, _union_coverings)
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


def family_roles(ctx) -> AddressRoles:
    host, known = host_addresses(ctx)
    return AddressRoles(ctx.family, host, known)


def evaluate_family(ctx, hooks: Sequence[str], roles_filter: Dict[str, Tuple[FrozenSet[int], FrozenSet[int]]],
                    owns_rules: bool = False) -> Dict[str, List[Tuple[Box, str, FrozenSet]]]:
    """Walk every hook path of one family; projected outcomes per hook. ``owns_rules``: the
    context's rulesets were parsed for this walk alone (the walk may let go of what it read).

    Input and forward share one PREROUTING walk: after it, the routing decision sends packets
    still addressed to the host (their current destination role) to INPUT and the others to
    FORWARD and POSTROUTING, as the kernel does (a DNAT to another host is forwarded)."""
    roles = family_roles(ctx)
    walker = RoleWalker(ctx.rulesets, roles, ctx.universe, ctx.local, owns_rules)
    iface_all = ctx.universe.all_mask
    raw: Dict[str, List[Outcome]] = {h: [] for h in hooks}
    pre = [h for h in ("input", "forward") if h in hooks]
    if pre:
        src = frozenset().union(*[roles_filter[h][0] for h in pre])
        dst = frozenset().union(*[roles_filter[h][1] for h in pre])
        box = start_box(ctx.family, src, dst, iface_all)
        # routing decision on the current destination; the source as it was sent
        paths: Dict[str, Tuple[Tuple[tuple, tuple], Sequence[str]]] = {
            h: ((role_set(roles_filter[h][0]), role_set(roles_filter[h][1])), HOOK_PATHS[h][1:]) for h in pre
        }
        raw.update(walker.run_routed(box, paths))
    if "output" in hooks:
        s_roles, d_roles = roles_filter["output"]
        box = start_box(ctx.family, s_roles, d_roles, iface_all)
        raw["output"] = walker.run(HOOK_PATHS["output"], [box])
    # merged per (verdict, rules) here, in the worker, so the comparison has less to do
    return {hook: project_outcomes(raw[hook], ctx.family) for hook in hooks}


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


def rule_count(contexts) -> int:
    return sum(rs.rule_count() for c in contexts for rs in c.rulesets)


def evaluate_sides(contexts: Sequence, hooks: Sequence[str], roles_filter,
                   parallel: Optional[bool] = None) -> List[Dict[str, List]]:
    if parallel is None:
        parallel = rule_count(contexts) >= FORK_MIN_RULES
    jobs: List[Callable[[], Any]] = [partial(evaluate_family, c, hooks, roles_filter) for c in contexts]
    if parallel:
        # every walk in a child of its own: what a walk allocates (the compiled rules, its
        # flows) stays out of this process, which the comparison forks from next (the router
        # audit: 31 -> 22 MiB at that fork)
        return run_jobs([_nothing] + jobs, parallel)[1:]
    return run_jobs(jobs, parallel)


def _nothing() -> None:
    return None


# ---------------------------------------------------------------------------------------------
# the diff


@dataclass
class DiffResult:
    hooks: List[str]
    comparisons: Dict[str, Comparison]
    universe: InterfaceUniverse
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

    def to_json(self, verbose: bool = False) -> Dict:
        """The diff document (docs/diff.md): ``twinwall.diff/2``, each rule or run of consecutive
        rules cited once in ``citations`` and by index in the regions; ``verbose``: the
        ``twinwall.diff/1`` form, every rule cited in full where it decided."""
        a, b = self.side_names
        v = verbose
        cited = None if verbose else Citations()
        doc: Dict = {
            "schema": DIFF_SCHEMA_VERBOSE if verbose else DIFF_SCHEMA,
            "differences": [region_json(r, self, a, b, v, cited) for r in self.differences],
            "not_comparable": [not_comparable_json(r, self, a, b, v, cited) for r in self.not_comparable],
            f"{b}_only": [d for h in self.hooks for o in self.comparisons[h].b_only for d in only_json(o, self, b, v, cited)],
            f"{a}_only": [d for h in self.hooks for o in self.comparisons[h].a_only for d in only_json(o, self, a, v, cited)],
            "notes": self.notes,
        }
        if cited is not None:
            doc["citations"] = cited.entries
            doc["sources"] = cited.sources
        return doc


def contains_point(box: Box, point: Box) -> bool:
    for d in range(NDIMS):
        v = box[d]
        p = point[d]
        if d in MASK_DIMS:
            if not v & p:
                return False
        elif not iv_contains(v, p[0][0]):
            return False
    return True


def diff_contexts(contexts: Mapping[str, FamilyContext], hooks: Sequence[str] = HOOKS, keep_regions: bool = False,
                  parallel: Optional[bool] = None) -> DiffResult:
    """Compare IPv4 with IPv6 on the given hooks. ``contexts``: build_contexts() output."""
    sides = [contexts[IPV4], contexts[IPV6]]
    if parallel is None:
        parallel = rule_count(sides) >= FORK_MIN_RULES
    with gc_paused():
        roles_filter, notes, results = _walk_sides(sides, hooks, parallel)
        comps = compare_hooks(hooks, results[0], results[1], keep_regions, parallel)
    return DiffResult(list(hooks), comps, sides[0].universe, roles_filter, notes)


def _walk_sides(sides: Sequence[FamilyContext], hooks: Sequence[str], parallel: bool
                ) -> Tuple[Dict[str, Tuple[FrozenSet[int], FrozenSet[int]]], List[str], List[Dict[str, List]]]:
    """What diff_contexts compares: (the roles evaluated per hook, the notes, each side's
    outcomes per hook: evaluate_sides)."""
    roles_filter, notes = common_roles(sides, hooks)
    notes += [note for c in sides for note in _unread_notes(c.family, c.rulesets)]
    return roles_filter, notes, evaluate_sides(sides, hooks, roles_filter, parallel)


def _unread_notes(family: str, rulesets) -> List[str]:
    return [unread_table_note(family, label) for _, label in unread_tables(family, rulesets)]


def diff_snapshot(snapshot, hooks: Sequence[str] = HOOKS, parallel: Optional[bool] = None,
                  keep_text: bool = True, meanwhile: Optional[Callable[[], object]] = None) -> DiffResult:
    """Compare IPv4 with IPv6 on a host snapshot (what ``twinwall diff`` runs).

    Each family is parsed and walked in its own process on a large host: the walks need only
    the host's addresses from the other side, not its rules. Interface masks are then read in
    the universe of both families' interface names before the comparison. ``keep_text=False``
    empties the snapshot's dumps as they are parsed (a caller that needs them no more: the
    texts of a 100k-rule pair are 36 MB, held by each walk otherwise). ``meanwhile``: what the
    caller does with the result needs first (importing its writer), done while the forked
    family's walk is still at work (run_jobs)."""
    # an empty dump is a ruleset (no tables: nothing filters); no dump at all is not
    missing = [f for f in (IPV4, IPV6) if not snapshot.rulesets_for(f)]
    if missing:
        raise _missing_rules(missing)
    if parallel is None:
        parallel = worth_forking(snapshot, DIFF_FORK_MIN_RULES)
    # (run_jobs forks the other family's walk before this process starts its own)
    forking = parallel and can_fork()
    if forking:
        import_parsers(snapshot)
    bare = build_contexts(snapshot, {})  # addresses and interfaces: all the roles need

    def walk(family: str):
        if keep_text:
            # the parse frees the texts of what it reads: of copies, so the caller's snapshot keeps them
            own = replace(snapshot, rulesets=[replace(r) for r in snapshot.rulesets])
        else:
            own = snapshot
            if forking:  # each walk has a process (and a snapshot) of its own: the other family's text is not read here
                for text in own.rulesets:
                    if text.family not in (family, "inet"):
                        text.text = ""
        # (a blocklist's stretches of drops, rejects or accepts are lifted from their values,
        # their Rules not made: role_walk._lift_collapsed)
        rulesets = load_rulesets(own, keep_text=False, families=(family,), stretches=LIFTED_STRETCHES)
        ctx = build_contexts(snapshot, rulesets)[family]
        if not ctx.rules_known:
            raise _missing_rules([family])
        outcomes = evaluate_family(ctx, hooks, roles_filter, owns_rules=True)
        return outcomes, ctx.universe, _unread_notes(family, ctx.rulesets)

    with gc_paused():
        roles_filter, notes = common_roles([bare[IPV4], bare[IPV6]], hooks)
        (out4, u4, unread4), (out6, u6, unread6) = run_jobs([lambda: walk(IPV4), lambda: walk(IPV6)], parallel, meanwhile)
        notes += unread4 + unread6
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


# projected outcomes (both sides together) that each part of the comparison, the hook compared
# in a worker and the others, must have for the worker to be worth a fork
COMPARE_FORK_MIN = 2_000


def compare_hooks(hooks: Sequence[str], a: Dict[str, List], b: Dict[str, List], keep_regions: bool = False,
                  parallel: bool = False, differences_only: bool = False) -> Dict[str, Comparison]:
    """compare_outcomes for every hook; with ``parallel``, the first of input or forward is
    compared in a worker while this process compares the other hooks."""
    def compare(h: str) -> Comparison:
        return compare_outcomes(h, a[h], b[h], keep_regions, differences_only)

    alone = next((h for h in ("input", "forward") if h in hooks), None)
    if not parallel or len(hooks) < 2 or alone is None:
        return {h: compare(h) for h in hooks}
    rest = [h for h in hooks if h != alone]
    if min(len(a[alone]) + len(b[alone]), sum(len(a[h]) + len(b[h]) for h in rest)) < COMPARE_FORK_MIN:
        # one side of the split is next to nothing: the worker would overlap nothing and cost
        # a fork of this (large) process (blocklist 100k: ~0.1 s for a 3 ms comparison; the
        # chains shape's 33,000 input outcomes against 8, the router's forward 600 against 80)
        return {h: compare(h) for h in hooks}
    mine: Any
    theirs: Any
    mine, theirs = run_jobs([lambda: {h: compare(h) for h in rest}, lambda: compare(alone)])
    mine[alone] = theirs
    return {h: mine[h] for h in hooks}


# ---------------------------------------------------------------------------------------------
# example packets


def example_packet(ctx, box: Box, rnd=None) -> Optional[Box]:
    """One concrete packet of ``ctx.family`` inside a neutral region (every dimension a single
    value), for checking a region against the evaluator; None when the family has no packet
    there (an ICMP type without a twin)."""
    if rnd is None:
        import random  # (checking regions against the evaluator: the tests, not a diff)

        rnd = random.Random(0)
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


# (both families together) from 2k rules per family: below that the two children cost more
# than they overlap (kube and blocklist 1k: 35-48 ms slower forked on two loaded cores, the
# parent's peak memory within 1 MiB either way)
EGRESS_FORK_MIN_RULES = 4_000


def egress_forward_differences(contexts: Mapping[str, FamilyContext],
                               hooks: Sequence[str] = ("forward", "output"),
                               alongside: Optional[Callable[[], object]] = None,
                               meanwhile: Optional[Callable[[], object]] = None) -> List[str]:
    """One line per hook (of forward, output) whose IPv4 and IPv6 verdicts differ somewhere,
    with the number of regions and one example; [] when they agree or a family's rules are
    unknown.

    For the audit's finding that points at ``twinwall diff``. ``alongside``: the audit's other
    work, done in this process while a forked child compares the walks (which take both cores
    while they last; the comparison, one) - before the comparison when nothing is forked, and
    in any case. ``meanwhile``: as run_jobs's."""
    if not all(getattr(contexts.get(f), "rules_known", False) for f in (IPV4, IPV6)):
        if alongside is not None:
            alongside()
        return []
    # a process per family's walk (and one for the comparison, with work alongside) from a few
    # thousand rules on: on a small host this comparison is most of the audit's time
    sides = [contexts[IPV4], contexts[IPV6]]
    parallel = rule_count(sides) >= EGRESS_FORK_MIN_RULES
    with gc_paused():
        roles_filter, notes, results = _walk_sides(sides, hooks, parallel)

        def lines() -> List[str]:
            # the differences alone, the hooks one after the other (a router's forward
            # comparison is 0.15 s, its output one nothing, a kube node's both ~10 ms: a process
            # for one of them would cost more than it overlaps)
            comps = compare_hooks(hooks, results[0], results[1], differences_only=True)
            return _difference_lines(DiffResult(list(hooks), comps, sides[0].universe, roles_filter, notes))

        if alongside is None:
            return lines()
        # (the lines alone come back: a few strings, not the regions)
        return cast(List[str], run_jobs([alongside, lines], parallel, meanwhile)[1])


def _difference_lines(result: DiffResult) -> List[str]:
    """egress_forward_differences's lines of a comparison."""
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
