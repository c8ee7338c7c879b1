"""Before / after: what a change between two snapshots of one host opened or closed, per
service and, per family, per region of traffic (``twinwall diff --before --after``).

Each family's before and after rulesets are walked and compared as ``twinwall diff`` compares
IPv4 with IPv6 (``analysis.diff.compare``), over one interface universe; the services' statuses
come from the audit of each snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from twinwall.analysis.audit import audit_snapshot
from twinwall.analysis.context import build_contexts
from twinwall.analysis.diff.compare import (
    HOOKS,
    DiffResult,
    Region,
    common_roles,
    compare_outcomes,
    evaluate_sides,
)
from twinwall.analysis.diff.describe import region_json
from twinwall.analysis.evaluator import V_ACCEPT
from twinwall.analysis.verdicts import reach_rank
from twinwall.gc_pause import gc_paused
from twinwall.loader import load_rulesets
from twinwall.model import IPV4, IPV6

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
        rb, ra = reach_rank(self.before), reach_rank(self.after)
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
            entries: Dict[str, List[Dict]] = {"opened": [], "closed": [], "changed": []}
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
    def specs(snap, rulesets) -> set:
        return set(snap.interfaces).union(*[rs.interface_specs for rss in rulesets.values() for rs in rss])

    # each side's universe holds the other's names too: the same classes, the same masks
    return (
        build_contexts(before_snap, before_rs, specs(after_snap, after_rs)),
        build_contexts(after_snap, after_rs, specs(before_snap, before_rs)),
    )


def compare_snapshots(before_snap, after_snap, hooks: Sequence[str] = HOOKS) -> ChangeResult:
    """What a change between two snapshots of one host opened or closed, per family."""
    notes: List[str] = []
    rep_b = audit_snapshot(before_snap, compare_egress=False)
    rep_a = audit_snapshot(after_snap, compare_egress=False)
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
        with gc_paused():
            results = evaluate_sides(sides, hooks, roles_filter)
            comps = {h: compare_outcomes(h, results[0][h], results[1][h]) for h in hooks}
        families[fam] = DiffResult(list(hooks), comps, ctx_b[fam].universe, roles_filter, [], ("before", "after"))
    return ChangeResult(services, families, list(dict.fromkeys(notes)))

