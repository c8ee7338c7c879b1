"""Human-readable `twinwall diff` output: regions grouped by hook, one line per region."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, FrozenSet, List

from twinwall.analysis.diff.compare import DiffResult, Region
from twinwall.analysis.diff.describe import cited_runs, describe_region, only_classes, verdict_of
from twinwall.analysis.labels import label_size
from twinwall.netfilter.ruleset import describe_run

if TYPE_CHECKING:  # (a diff of one snapshot does not load the change's audit machinery)
    from twinwall.analysis.diff.change import ChangeResult

MAX_RULES = 3  # rules, or runs of rules of one chain, named per verdict in one line; the JSON has them all


def _rules(decs: FrozenSet) -> str:
    """The rules that decided a verdict: the first MAX_RULES, a run of rules of one chain (a
    blocklist's 100,000 drops) as one 'table chain #first-#last (count rules ...)' entry."""
    if not decs:
        return "no rule"
    runs = sorted(cited_runs(decs), key=lambda r: _order(r[0]))
    shown = runs[:MAX_RULES]
    texts = [describe_run(first, last, count) for first, last, count in shown]
    rest = label_size(decs) - sum(count for _, _, count in shown)
    if rest > 0:
        texts.append(f"... {rest} more")
    return "; ".join(texts)


def _order(d) -> tuple:
    return (d.table, d.chain, d.rule_number if d.rule_number is not None else 1 << 30)


def side_text(label: str, side: Dict[str, FrozenSet]) -> str:
    v = verdict_of(side)
    if len(side) == 1:
        return f"{label}: {v} ({_rules(next(iter(side.values())))})"
    inner = "; ".join(f"{k} by {_rules(side[k])}" for k in sorted(side))
    return f"{label}: mixed ({inner})"


def _region_line(r: Region, result: DiffResult, la: str, lb: str) -> str:
    """One line: the region, then each side's verdict and the rule that decided it."""
    return f"  {describe_region(r.box, r.hook, result)}  {side_text(la, r.a)}  {side_text(lb, r.b)}"


def render_diff(result: DiffResult) -> str:
    out: List[str] = []
    nd, nn = len(result.differences), len(result.not_comparable)
    hooks = ", ".join(result.hooks)
    out.append(f"twinwall diff: IPv4 vs IPv6 ({hooks}): {nd} region(s) differ, {nn} not comparable")
    for note in result.notes:
        out.append(f"  note: {note}")
    for hook in result.hooks:
        comp = result.comparisons[hook]
        if not comp.differences:
            continue
        out.append("")
        out.append(f"{hook}:")
        for r in comp.differences:
            out.append(_region_line(r, result, "IPv4", "IPv6"))
    if nn:
        out.append("")
        out.append("not comparable (the verdict depends on addresses or undecidable matches in both families):")
        for r in result.not_comparable:
            out.append(f"  {r.hook} " + _region_line(r, result, "IPv4", "IPv6").lstrip())
    only_lines = []
    for hook in result.hooks:
        comp = result.comparisons[hook]
        summary: Dict[str, set] = {}
        for label, entries in (("IPv6", comp.b_only), ("IPv4", comp.a_only)):
            for o in entries:
                for cls, _box in only_classes(o.box):
                    name = f"{label} {cls.upper() if cls in ('ndp', 'mld') else label + '-only types'}"
                    if cls == "no twin":
                        name = f"other {label}-only types"
                    summary.setdefault(name, set()).add(verdict_of(o.side))
        if summary:
            cells = [f"{k}: {'/'.join(sorted(v))}" for k, v in summary.items()]
            only_lines.append(f"  {hook:<8} " + "   ".join(cells))
    if only_lines:
        out.append("")
        out.append("ICMP types without a twin in the other family (classified, not gaps; see --format json):")
        out.extend(only_lines)
    if not nd and not nn:
        out.append("")
        out.append("IPv4 and IPv6 treat every traffic class alike.")
    return "\n".join(out) + "\n"


def render_change(result: ChangeResult, before: str, after: str) -> str:
    out: List[str] = [f"twinwall diff: {before} -> {after}"]
    for note in result.notes:
        out.append(f"  note: {note}")
    if result.services:
        out.append("")
        out.append("services:")
        for s in result.services:
            fam = "IPv4" if s.family == "ipv4" else "IPv6"
            addr = f"[{s.address}]" if ":" in s.address else s.address
            out.append(f"  {s.protocol} {addr}:{s.port} over {fam}: {s.before} -> {s.after} ({s.change})")
    for fam, res in result.families.items():
        regions = res.differences + res.not_comparable
        if not regions:
            continue
        out.append("")
        out.append(f"{'IPv4' if fam == 'ipv4' else 'IPv6'} rules:")
        for r in regions:
            out.append(f"  {result.region_change(r)}: {r.hook} " + _region_line(r, res, "before", "after").lstrip())
    if not result.has_changes():
        out.append("")
        out.append("nothing changed: every service and traffic class is treated as before.")
    return "\n".join(out) + "\n"
