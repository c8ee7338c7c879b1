"""Describing the regions of a comparison (``analysis.diff.compare``): their JSON fields, the
one-line text the audit and the table print, the verdict a side is named by.

Functions here read a region's box and the comparison's role filter and interface universe; they
compute nothing about the walk.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Dict, FrozenSet, List, Optional, Tuple

from twinwall.analysis.neutral_space import (
    ICMP4_NAMES,
    ICMP6_NAMES,
    ICMP6_TO_4,
    MLD_CANONICAL,
    NDP_CANONICAL,
    PTB,
    TWINNED,
    V6_ONLY_BASE,
    canonical_icmp,
)
from twinwall.netfilter.packetset import (
    Box,
    CT_ALL,
    CT_NAMES,
    DPORT,
    DST,
    GID,
    ICMP,
    ICMP_ALL,
    ID_ALL,
    IIF,
    OIF,
    PORT_ALL,
    PROTO,
    PROTO_ALL,
    SPORT,
    SRC,
    STATE,
    UID,
    iv_and,
    iv_contains,
    iv_size,
    iv_sub,
    ranges_text,
)
from twinwall.analysis.labels import RuleRun, label_decisions, label_size
from twinwall.analysis.roles import ROLE_NAMES
from twinwall.model import IPV4
from twinwall.netfilter.ruleset import NO_TABLE, Decision, describe_run

if TYPE_CHECKING:  # annotations only: the comparison imports this module
    from twinwall.analysis.diff.compare import DiffResult, Region, SideOnly

V_MIXED = "mixed"  # a role whose addresses get different verdicts


def verdict_of(side: Dict[str, FrozenSet]) -> str:
    if not side:
        return "none"
    if len(side) == 1:
        return next(iter(side))
    return V_MIXED


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
    if len(missing) <= 3 and iv_size(missing) <= 6:
        return "any but " + ",".join(names.get(n, str(n)) for lo, hi in missing for n in range(lo, hi + 1))
    parts = []
    for lo, hi in ivs:
        parts.append(names.get(lo, str(lo)) if lo == hi else f"{lo}-{hi}")
    return ",".join(parts)


def icmp_names(ivs: tuple) -> List[str]:
    """Names of canonical ICMP types; runs of unnamed types as one 'types A-B' entry."""
    # (a diff's regions share a few ICMP sets: each spelled once, every region its own list)
    return list(_icmp_names(ivs))


@lru_cache(maxsize=1 << 10)
def _icmp_names(ivs: tuple) -> Tuple[str, ...]:
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
    return tuple(out)


def only_classes(box: Box) -> List[Tuple[str, Box]]:
    """An ICMP region one family has no twin for, cut into classes: 'ndp' and 'mld' (ICMPv6
    that IPv4 does without), 'no twin' for the rest."""
    out = []
    ndp, mld = NDP_CANONICAL, MLD_CANONICAL
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
        "icmp_type": icmp_names(box[ICMP]) if iv_contains(proto, 1) else None,
        "src": _roles(box[SRC], src_full),
        "dst": _roles(box[DST], dst_full),
    }
    return d


# A big diff cites the same rules in many regions (272,000 citations of ~11,000 rules on the
# corpus router): each rule is spelled once.
@lru_cache(maxsize=1 << 16)
def _described(dec: Decision) -> str:
    return dec.describe()


@lru_cache(maxsize=1 << 16)
def _cited(dec: Decision) -> Dict:
    return dec.to_dict()


# A region that a long chain of rules decides (kube-proxy's 90,000 ACCEPTs, a router's
# per-host chains: 272,000 citations of 6,600 rules on the corpus router) cites the rules of one
# chain as one entry: the first and the last of them and how many; ``verbose`` lists every rule.
RUN_MIN = 3  # the rules of one chain cited as one run from this many on


# (a region's rules are spelled twice, as text and as decided_by; and regions share their sets
# of rules: the comparison keeps equal sets once)
@lru_cache(maxsize=1 << 12)
def _runs(decs: FrozenSet[Decision], verbose: bool) -> Tuple[Tuple[Decision, Decision, int], ...]:
    """The decisions as (first, last, count): the ``count`` rules of one chain (and source)
    between ``first`` and ``last`` that decided (those between them that are not counted
    decided nothing there); a policy or a chain's only rules as (d, d, 1). In the order of the
    first's description. (``decs``: a label's items, its RuleRuns read as the rules they stand
    for, expanded only where single rules are cited.)"""
    if verbose or len(decs) < RUN_MIN and label_size(decs) < RUN_MIN:  # (a label holds len() rules or more)
        return tuple((d, d, 1) for d in sorted(label_decisions(decs), key=_described))
    # per chain its items: rules, and RuleRuns standing for their rules
    by_chain: Dict[tuple, List] = {}
    out: List[Tuple[Decision, Decision, int]] = []
    for d in decs:
        if type(d) is RuleRun or d.policy is None and d.rule_number is not None:
            by_chain.setdefault((d.source, d.table, d.chain), []).append(d)
        else:
            out.append((d, d, 1))
    for members in by_chain.values():
        if len(members) == 1 and type(members[0]) is RuleRun and members[0].count >= RUN_MIN:
            run = members[0]  # (a chain's one run: many small chains, each its run of accepts)
            out.append((run.first, run.last, run.count))
            continue
        count = label_size(members)
        if count < RUN_MIN:
            out.extend((d, d, 1) for d in label_decisions(members))
            continue
        out.append(_span_of(members) + (count,))
    out.sort(key=lambda r: _described(r[0]))
    return tuple(out)


def _span_of(members: List) -> Tuple[Decision, Decision]:
    """(the first rule, the last rule) of a chain's items (Decisions, RuleRuns) by rule number:
    the first item of the lowest number and the last of the highest, as a stable sort by it
    puts them (one pass, not a sort of every item: the corpus router cites chains of 3,000)."""
    first = last = None
    lo = hi = 0
    for m in members:
        if type(m) is RuleRun:
            f, la = m.first, m.last
        else:
            f = la = m
        k = f.rule_number or 0  # (never None here)
        if first is None:
            first, last, lo, hi = f, la, k, k
            continue
        if k < lo:
            first, lo = f, k
        if k >= hi:
            last, hi = la, k
    assert first is not None and last is not None  # (members is never empty)
    return first, last


def cited_runs(decs: FrozenSet[Decision]) -> Tuple[Tuple[Decision, Decision, int], ...]:
    """A label's rules as the compact citations cite them: (first, last, count) per run of
    rules of one chain (see _runs), single rules and policies as (d, d, 1)."""
    return _runs(decs, False)


# rules (or runs) of one verdict a compact *_rule names by place; the others are counted (the
# side's decided_by cites them all: a many-small-chains region named 3,300 runs, 110 KB)
PLACES_MAX = 10


def _position(dec: Decision) -> str:
    """Where a rule is, without its text: 'filter INPUT #3' (a policy: as described)."""
    if dec.policy is not None or dec.table == NO_TABLE:
        return _described(dec)
    return f"{dec.table} {dec.chain} #{dec.rule_number}"


def _run_text(first: Decision, last: Decision, count: int, texts: bool = True) -> str:
    if count == 1:
        return _described(first) if texts else _position(first)
    return describe_run(first, last, count, texts=False)  # (a run is cited by place only)


def _rule_text(decs: FrozenSet[Decision], verbose: bool = True, texts: bool = True) -> str:
    if not decs:
        return "no rule (no chain decides it)"
    if verbose:
        return "; ".join(sorted(_described(d) for d in label_decisions(decs)))
    runs = _runs(decs, False)
    if texts or len(runs) <= PLACES_MAX:
        return "; ".join(_run_text(*r, texts) for r in runs)
    return "; ".join([_run_text(*r, False) for r in runs[:PLACES_MAX]] + [f"... {len(runs) - PLACES_MAX} more"])


def side_rule(side: Dict[str, FrozenSet[Decision]], verbose: bool = True, texts: bool = True) -> str:
    """The rules that decided each verdict of a side, as text; without ``verbose`` the rules of
    one chain are one 'table chain #first-#last (count rules)' entry (the JSON's decided_by has
    the first and the last rule's text), and without ``texts`` (and ``verbose``) the rules of a
    side that more than one rule decided are named by their place only, 'table chain #number', the
    first ``PLACES_MAX`` of each verdict (the document's citations spell them all)."""
    if not texts and len(side) == 1 and len(next(iter(side.values()))) == 1 and label_size(next(iter(side.values()))) == 1:
        texts = True  # one rule (a rule against a policy, the usual difference): spelled out
    if len(side) == 1:
        return _rule_text(next(iter(side.values())), verbose, texts)
    return "; ".join(f"{v}: {_rule_text(side[v], verbose, texts)}" for v in sorted(side))


def _citation(first: Decision, last: Decision, count: int, verdict: str, remembered: bool = True) -> Dict:
    """A decided_by entry; ``remembered=False``: the first rule's fields spelled afresh, not
    through _cited (a compact document spells each citation once: the cache would only hold a
    second copy of each, 33,000 dicts for many small chains, beside the document)."""
    d = dict(_cited(first)) if remembered else first.to_dict()  # (a copy: the cached one must not change)
    if count > 1:
        d["last_rule_number"] = last.rule_number
        d["last_rule"] = last.rule
        d["count"] = count
    d["verdict"] = verdict
    return d


class Citations:
    """The shared tables of a compact diff document: ``citations``, each distinct citation - a
    rule, or a run of a chain's rules, and the verdict it decided - spelled once, a region's
    ``*_decided_by`` listing indexes into it (the corpus router's regions cite 230 distinct ones
    9,900 times: 2.2 MB of JSON spelled inline); and ``sources``, the rulesets they come from,
    which a citation's ``source`` is an index into (many small chains: 3,300 citations, 230 KB
    of the same two file names)."""

    def __init__(self) -> None:
        self.entries: List[Dict] = []
        self.sources: List[str] = []
        self._index: Dict[Tuple[Decision, Decision, int, str], int] = {}
        self._source_index: Dict[str, int] = {}

    def ref(self, first: Decision, last: Decision, count: int, verdict: str) -> int:
        key = (first, last, count, verdict)
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.entries)
            entry = _citation(first, last, count, verdict, remembered=False)
            source = entry.get("source")
            if source is not None:
                n = self._source_index.get(source)
                if n is None:
                    n = self._source_index[source] = len(self.sources)
                    self.sources.append(source)
                entry["source"] = n
            self.entries.append(entry)
        return i


def _decided_by(side: Dict[str, FrozenSet[Decision]], verbose: bool = False,
                citations: Optional[Citations] = None) -> List:
    """One entry per rule; without ``verbose`` the rules of one chain (from ``RUN_MIN`` on) are
    one entry: the first rule's fields (``rule_number``, ``rule``) plus ``last_rule_number``,
    ``last_rule`` and ``count``, how many of the chain's rules from the first to the last decided.
    With ``citations`` each entry is its index in that table instead."""
    out: List = []
    for v in sorted(side):
        for first, last, count in _runs(side[v], verbose):
            out.append(_citation(first, last, count, v) if citations is None else citations.ref(first, last, count, v))
    return out


def region_json(r: Region, result: DiffResult, a: str, b: str, verbose: bool = False,
                citations: Optional[Citations] = None) -> Dict:
    """A region's JSON; with ``citations`` (a compact document's table) its decided_by are
    indexes into the table and its ``*_rule`` texts name the rules by place only."""
    texts = citations is None
    d = region_fields(r.box, r.hook, result)
    d[a] = r.a_verdict
    d[b] = r.b_verdict
    d[f"{a}_rule"] = side_rule(r.a, verbose, texts)
    d[f"{b}_rule"] = side_rule(r.b, verbose, texts)
    d[f"{a}_verdicts"] = sorted(r.a)
    d[f"{b}_verdicts"] = sorted(r.b)
    d[f"{a}_decided_by"] = _decided_by(r.a, verbose, citations)
    d[f"{b}_decided_by"] = _decided_by(r.b, verbose, citations)
    return d


def inline_citations(document: Dict) -> Dict:
    """A compact diff document (``twinwall.diff/2``, with ``citations``) with each region's
    decided_by indexes replaced by the entries they stand for, their sources spelled (a copy,
    without ``citations`` and ``sources``; the ``*_rule`` texts stay as they are); any other
    document as it is."""
    cited = document.get("citations")
    if cited is None:
        return document
    sources = document.get("sources", [])
    table = [{k: sources[v] if k == "source" and isinstance(v, int) else v for k, v in c.items()} for c in cited]
    out = {k: v for k, v in document.items() if k not in ("citations", "sources")}
    for key in [k for k, v in out.items() if isinstance(v, list)]:
        regions = []
        for region in document[key]:
            if isinstance(region, dict):
                region = {name: [table[i] for i in value] if name.endswith("_decided_by") else value
                          for name, value in region.items()}
            regions.append(region)
        out[key] = regions
    return out


def not_comparable_json(r: Region, result: DiffResult, a: str, b: str, verbose: bool = False,
                        citations: Optional[Citations] = None) -> Dict:
    d = region_json(r, result, a, b, verbose, citations)
    d["reason"] = (
        "the verdict depends on addresses (or on matches twinwall cannot decide) in both families: "
        "the rules cannot be compared by role"
    )
    return d


def only_json(o: SideOnly, result: DiffResult, name: str, verbose: bool = False,
              citations: Optional[Citations] = None) -> List[Dict]:
    """A one-family region's JSON, per class; with ``citations`` (a compact document) its
    ``*_rule`` names the rules by place and ``*_decided_by`` cites them by index."""
    out = []
    for cls, box in only_classes(o.box):
        d = region_fields(box, o.hook, result)
        d["class"] = cls
        d[name] = verdict_of(o.side)
        d[f"{name}_rule"] = side_rule(o.side, verbose, citations is None)
        if citations is not None:
            d[f"{name}_decided_by"] = _decided_by(o.side, verbose, citations)
        out.append(d)
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
        return "!" + ranges_text(missing)
    return ranges_text(ivs)

