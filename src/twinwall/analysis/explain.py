"""The walk of one question through the chains, as text an admin can follow or as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional

from twinwall.analysis.context import OFFLINE_STAND_IN, build_contexts
from twinwall.analysis.evaluator import V_ACCEPT
from twinwall.netfilter.packetset import (
    CT_NEW,
    DPORT,
    IIF,
    PORT_ALL,
    DST,
    SPORT,
    SRC,
    covers,
    iv_and,
    iv_normalize,
    make_box,
    iv_sub,
    iv_union,
    prefix_interval,
    ranges_text,
    remote_sources,
    to_cidrs,
)
from twinwall.analysis.verdicts import CLIENT_PORTS, FILTERED, OPEN, RESTRICTED, cidrs
from twinwall.netfilter.ruleset import describe_run
from twinwall.errors import InputError
from twinwall.loader import load_rulesets, unread_table_note, unread_tables
from twinwall.model import FAMILY_LABEL, PROTO_NUM, HostSnapshot

DISABLED, NO_RULESET = "disabled", "unknown"


@lru_cache(maxsize=256)
def _sources_text(src, family: str) -> str:
    # (remembered: a walk names the same sets line after line, and a set cut by a 100k-entry
    # blocklist takes a second to write as CIDRs)
    remote = remote_sources(family)
    if src == remote:
        return "any remote source"
    cidrs = to_cidrs(src, family)
    others = to_cidrs(iv_sub(remote, src), family)
    if len(others) < len(cidrs):
        return "any remote source except " + ", ".join(others[:4]) + (f" (+{len(others) - 4} more)" if len(others) > 4 else "")
    return ", ".join(cidrs[:4]) + (f" (+{len(cidrs) - 4} more)" if len(cidrs) > 4 else "")


@dataclass
class Step:
    """One rule the question matched, or one chain it fell off (``policy``)."""

    depth: int
    table: str
    chain: str
    sources: str
    rule_number: Optional[int] = None
    rule: str = ""
    policy: Optional[str] = None
    may_match: List[str] = field(default_factory=list)

    def to_json(self) -> Dict:
        d: Dict = {"depth": self.depth, "table": self.table, "chain": self.chain}
        if self.policy is not None:
            d["policy"] = self.policy
        else:
            d.update(rule_number=self.rule_number, rule=self.rule, may_match=self.may_match)
        d["sources"] = self.sources
        return d


@dataclass
class Region:
    """Where one group of the question's packets ended."""

    verdict: str
    sources: str
    source_cidrs: List[str]
    interfaces: List[str]  # ["*"]: every interface asked about
    source_ports: str  # "*" or "3000,7001-7002"
    port: str  # the destination port it reached (after a redirect: the new one)
    decided_by: List
    uncertain: List[str]
    src: tuple = ()  # the sources as an interval set (for the text's runs; not in the JSON)
    # the destinations, when only some of those asked about (the host has several addresses
    # and a rule names one): their CIDRs; empty: every one asked about
    destinations: List[str] = field(default_factory=list)

    def to_json(self) -> Dict:
        return {"verdict": self.verdict, "sources": self.source_cidrs, "interfaces": self.interfaces,
                "source_ports": self.source_ports, "port": self.port,
                **({"destinations": self.destinations} if self.destinations else {}),
                "decided_by": [d.to_dict() for d in self.decided_by], "uncertain": self.uncertain}


@dataclass
class FamilyExplanation:
    family: str
    status: str  # open / restricted / filtered for the question asked; disabled; unknown
    question: str = ""
    note: str = ""  # why there is no walk (disabled, no ruleset)
    rulesets: List[str] = field(default_factory=list)
    unread: List[str] = field(default_factory=list)
    steps: List[Step] = field(default_factory=list)
    regions: List[Region] = field(default_factory=list)
    proto: str = ""
    port: int = 0

    def to_json(self) -> Dict:
        return {"status": self.status, "question": self.question, "note": self.note, "rulesets": self.rulesets,
                "unread_tables": self.unread, "steps": [s.to_json() for s in self.steps],
                "verdicts": [r.to_json() for r in self.regions]}

    def text(self) -> str:
        label = FAMILY_LABEL[self.family]
        if self.note:
            return f"{label}: {self.note}\n"
        out = [f"{label}: {self.question}"]
        out += [f"  ruleset: {r}" for r in self.rulesets]
        out += [f"  NOTE: {n}" for n in self.unread]
        for s in self.steps:
            pad = "    " + "  " * s.depth
            if s.policy is None:
                out.append(f"{pad}{s.table} {s.chain} #{s.rule_number}: {s.rule}")
                extra = f"  [may match: {', '.join(s.may_match)}]" if s.may_match else ""
                out.append(f"{pad}    matches {s.sources}{extra}")
            else:
                out.append(f"{pad}{s.table} {s.chain}: end of chain, policy {s.policy} ({s.sources})")
        out.append("  verdict:")
        for run in _verdict_runs(self.regions):
            r = run[0]
            via = "" if r.interfaces == ["*"] else f" via {','.join(r.interfaces)}"
            sport = "" if r.source_ports == "*" else f" from source port {r.source_ports}"
            to = f" (redirected to port {r.port})" if r.port != str(self.port) else ""
            if r.destinations:
                to = f" to {', '.join(r.destinations[:4])}" + (f" (+{len(r.destinations) - 4} more)" if len(r.destinations) > 4 else "") + to
            if len(run) == 1:
                out.append(f"    {r.verdict.upper():7} {r.sources}{sport}{via}{to}")
                out += [f"             by {d.describe()}" for d in r.decided_by]
            else:
                first, last = r.decided_by[0], run[-1].decided_by[0]
                srcs = _run_sources_text(iv_union([g.src for g in run]), self.family, len(run))
                out.append(f"    {r.verdict.upper():7} {srcs}{sport}{via}{to}")
                out.append(f"             by {describe_run(first, last, len(run))}")
            out += [f"             ? assumes may match: {u}" for u in r.uncertain]
        out.append(f"  => {self.proto}/{self.port} is {self.status} over {label}"
                   + (" for the packets asked about" if self.status != FILTERED else ""))
        return "\n".join(out) + "\n"


RUN_MIN = 3  # verdict groups read as one run from this many on (as the diff's rules are cited)


def _verdict_runs(regions: List[Region]) -> List[List[Region]]:
    """The verdict groups, those next to each other that differ only by source and were decided
    by consecutive rules of one chain (a blocklist's drops) as one run of RUN_MIN or more."""
    runs: List[List[Region]] = []
    for r in regions:
        prev = runs[-1][-1] if runs else None
        if prev is not None and _continues(prev, r):
            runs[-1].append(r)
        else:
            runs.append([r])
    out: List[List[Region]] = []
    for run in runs:
        out.extend([run] if len(run) >= RUN_MIN else [[r] for r in run])
    return out


def _continues(prev: Region, r: Region) -> bool:
    """Whether ``r`` is the group the rule after ``prev``'s deciding rule decided, alike but for the source."""
    if len(prev.decided_by) != 1 or len(r.decided_by) != 1 or not prev.src or not r.src:
        return False
    a, b = prev.decided_by[0], r.decided_by[0]
    if a.policy is not None or b.policy is not None or a.rule_number is None or b.rule_number is None:
        return False
    return ((a.source, a.table, a.chain) == (b.source, b.table, b.chain) and b.rule_number == a.rule_number + 1
            and (prev.verdict, prev.interfaces, prev.source_ports, prev.port, prev.uncertain, prev.destinations)
            == (r.verdict, r.interfaces, r.source_ports, r.port, r.uncertain, r.destinations))


def _run_sources_text(src, family: str, count: int) -> str:
    """A run's sources: '198.51.100.10/32, 203.0.113.1/32, ... (21 sources)'."""
    text = _sources_text(src, family)
    head, _, _more = text.partition(" (+")
    return head + (", ..." if _more else "") + f" ({count} sources)"


def _destinations(dst, family: str) -> List[str]:
    """A verdict group's destinations as CIDRs, offline's stand-in for the host's unnamed
    addresses (context.OFFLINE_STAND_IN) by what it stands for."""
    stand_in = prefix_interval(OFFLINE_STAND_IN[family], family)
    out = cidrs(iv_sub(dst, (stand_in,)), family)
    return out + ["the host's other addresses"] if iv_and(dst, (stand_in,)) else out


def explain_port(*args, **kwargs) -> str:
    """The walk as text: ``explain(...)`` with the same arguments, rendered."""
    return explain(*args, **kwargs).text()


def explain(
    snapshot: HostSnapshot,
    family: str,
    proto: str,
    port: int,
    source: Optional[str] = None,
    iface: Optional[str] = None,
    dest: Optional[str] = None,
    sport: Optional[int] = None,
) -> FamilyExplanation:
    """The walk of new ``proto``/``port`` connections (from ``source``, arriving over
    ``iface``, to ``dest``, from source port ``sport``: default any) through ``family``'s rules."""
    rulesets = load_rulesets(snapshot)
    # the interface asked about must have its own class in the universe
    ctx = build_contexts(snapshot, rulesets, [iface] if iface else (), assume_named=True)[family]
    result = FamilyExplanation(family, NO_RULESET, proto=proto, port=port)
    if family == "ipv6" and snapshot.ipv6.enabled is False:
        result.status, result.note = DISABLED, f"disabled on this host ({'; '.join(snapshot.ipv6.evidence)})"
        return result
    if not ctx.rules_known:
        result.note = "no ruleset was read"
        return result
    try:
        src = iv_and(remote_sources(family), (prefix_interval(source, family),)) if source else remote_sources(family)
        dst = (prefix_interval(dest, family),) if dest else ctx.remote_targets
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if not src:
        raise InputError(f"{source} is not a remote source (loopback, multicast or unspecified)")
    ifaces = ctx.universe.mask(iface) if iface else ctx.remote_ifaces
    num = PROTO_NUM[proto]
    sports = ((sport, sport),) if sport is not None else PORT_ALL
    box = make_box(src, dst, ifaces, ctx.universe.all_mask, proto=((num, num),), sport=sports,
                   dport=((port, port),), state=CT_NEW)
    result.question = (f"new {proto} connection to port {port} from {_sources_text(src, family)}"
                       + (f", source port {sport}" if sport is not None else "") + (f" on {iface}" if iface else ""))
    result.rulesets = [rs.source for rs in ctx.rulesets]
    result.unread = [unread_table_note(family, table) for _, table in unread_tables(family, ctx.rulesets)]

    def trace(kind, depth, item, flows):
        srcs = _sources_text(_union_src(flows), family)
        if kind == "match":
            result.steps.append(Step(depth, item.table, item.chain, srcs, item.number, item.text,
                                     may_match=list(item.unknown or ())))
        else:
            result.steps.append(Step(depth, item.table, item.chain, srcs, policy=item.policy))

    outcomes = ctx.evaluator(trace=trace).local_input([box])
    for o in outcomes:
        result.regions.append(Region(
            o.verdict,
            _sources_text(o.box[SRC], family),
            cidrs(o.box[SRC], family),
            ["*"] if o.box[IIF] == ifaces else ctx.universe.label_list(o.box[IIF]),
            "*" if o.box[SPORT] == sports else ranges_text(o.box[SPORT]),
            ranges_text(o.box[DPORT]),
            list(o.decided_by),
            list(o.uncertain),
            o.box[SRC],
            [] if o.box[DST] == dst else _destinations(o.box[DST], family),
        ))
    accepted = [o.box for o in outcomes if o.verdict == V_ACCEPT]
    if not accepted:
        result.status = FILTERED
    else:
        # as the audit says it: "open" must not depend on a source port the client cannot pick
        target = box if sport is not None else box[:SPORT] + (CLIENT_PORTS,) + box[SPORT + 1:]
        result.status = OPEN if covers(accepted, target, (SRC, IIF, SPORT)) else RESTRICTED
    return result


def _union_src(flows):
    return iv_normalize(p for f in flows for p in f.box[SRC])
