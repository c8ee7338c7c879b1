"""From a host snapshot to a proved plan: select findings, let their strategies write changes,
render them for the rules' owner, build the candidate, prove it.

All the selected findings are tried together first; when that proof fails, one finding at a
time, keeping each whose proof passes on top of those already kept, so that one finding that
cannot be fixed safely does not sink the others. A finding whose strategy or proof fails is
listed in ``refused`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from twinwall.analysis.audit import AuditReport, Finding, audit_snapshot
from twinwall.apply.candidate import Candidate, candidate_snapshot
from twinwall.errors import InputError
from twinwall.findings import kind
from twinwall.fix.model import SCHEMA, Change, Refusal, Refused
from twinwall.fix.owners import owner, owner_of
from twinwall.fix.proof import Proof, prove
from twinwall.fix.strategies import FixContext, strategy
from twinwall.fix.translate import AddressMap
from twinwall.model import HostSnapshot

# which strategies run first: the service-level ones, then egress, then the host-level ones
ORDER = ("mirror", "close", "accept-new", "egress", "baseline", "block-ipv6")


@dataclass
class Plan:
    snapshot: HostSnapshot
    report: AuditReport
    changes: List[Change] = field(default_factory=list)
    refused: List[Refusal] = field(default_factory=list)
    proof: Optional[Proof] = None
    candidate: Optional[Candidate] = None

    def to_json(self) -> Dict:
        proof = self.proof.to_json() if self.proof else {"ok": True, "closed": [], "opened": [], "findings_after": []}
        return {
            "schema": SCHEMA,
            "host": {"hostname": self.snapshot.hostname},
            "changes": [c.to_json() for c in self.changes],
            "proof": proof,
            "refused": [r.to_json() for r in self.refused],
            "candidate": self.candidate.to_dict() if self.candidate else None,
        }


@dataclass
class _Unit:
    strategy: str
    findings: List[Finding]


def selected(findings: Sequence[Finding], wanted: Sequence[str]) -> Tuple[List[Finding], bool]:
    """The findings ``--finding`` names (ID, or ID:FAMILY), or all of them; and whether the
    selection was explicit."""
    if not wanted:
        return list(findings), False
    keys = []
    for w in wanted:
        fid, _, fam = w.partition(":")
        fid = fid.strip().upper()
        try:
            kind(fid)
        except KeyError:
            raise InputError(f"--finding {w!r}: no such finding id (see the findings table in twinwall audit --help)") from None
        keys.append((fid, fam.strip().lower() or None))
    out = [f for f in findings if any(f.id == fid and (fam is None or f.family == fam or f.hook == fam)
                                      for fid, fam in keys)]
    return out, True


def units(findings: Sequence[Finding], forced: Optional[str], explicit: bool) -> Tuple[List[_Unit], List[Refusal]]:
    refused: List[Refusal] = []
    out: List[_Unit] = []
    grouped: Dict[str, _Unit] = {}
    for f in findings:
        name = forced or kind(f.id).remedy
        if name is None:
            if explicit:
                refused.append(Refusal(f.id, f.family, f"no automatic fix: {f.fix}", _services(f), f.hook))
            continue
        st = strategy(name)
        if not st.applies(f):
            if explicit:
                refused.append(Refusal(f.id, f.family, f"strategy {name} does not address {f.id}", _services(f), f.hook))
            continue
        if st.grouped:
            grouped.setdefault(name, _Unit(name, [])).findings.append(f)
        else:
            out.append(_Unit(name, [f]))
    out += grouped.values()
    out.sort(key=lambda u: ORDER.index(u.strategy))
    return out, refused


def _unique(changes: Sequence[Change]) -> List[Change]:
    """The changes, each only once: baseline twins one family's OUTPUT default deny into the
    other, which may have its own finding asking for the same change."""
    out: List[Change] = []
    seen = set()
    for c in changes:
        sig = (c.strategy, c.family, c.chain, c.place, c.anchor, c.replace_table, tuple(c.rules),
               tuple(sorted(c.policies.items())))
        if sig not in seen:
            seen.add(sig)
            out.append(c)
    return out


def _services(f: Finding) -> List[str]:
    return [str(s["service"]) for s in f.services if s.get("service")]


class _Trial:
    def __init__(self, snapshot: HostSnapshot, report: AuditReport, scratch: Optional[bool]):
        self.snapshot, self.report, self.scratch = snapshot, report, scratch

    def owner_name(self, changes: Sequence[Change]) -> str:
        names = {owner_of(self.snapshot, self.report, c.family, c.chain) for c in changes}
        if len(names) > 1:
            raise Refused(f"the changes belong to different owners ({', '.join(sorted(names))}): plan one "
                          "family at a time (--finding ID:FAMILY)")
        return names.pop()

    def run(self, changes: List[Change], targeted: Sequence[Finding]) -> Tuple[Candidate, Proof]:
        cand = owner(self.owner_name(changes)).render(self.snapshot, changes)
        try:
            after = candidate_snapshot(self.snapshot, cand, self.scratch)
        except InputError as exc:
            raise Refused(str(exc)) from None
        return cand, prove(self.snapshot, self.report, after, targeted, changes)


def make_plan(snapshot: HostSnapshot, *, findings: Sequence[str] = (), strategy_name: Optional[str] = None,
              maps: Sequence[str] = (), scratch: Optional[bool] = None) -> Plan:
    report = audit_snapshot(snapshot)
    ctx = FixContext(snapshot, report, AddressMap.parse(maps))
    chosen, explicit = selected(report.findings, findings)
    todo, refused = units(chosen, strategy_name, explicit)
    plan = Plan(snapshot, report, refused=refused)
    planned: List[Tuple[_Unit, List[Change]]] = []
    for u in todo:
        try:
            planned.append((u, strategy(u.strategy).plan(u.findings, ctx)))
        except Refused as exc:
            plan.refused += [Refusal(f.id, f.family, str(exc), _services(f), f.hook) for f in u.findings]
    planned = [(u, c) for u, c in planned if c]
    if not planned:
        return plan
    trial = _Trial(snapshot, report, scratch)
    every = _unique([c for _, cs in planned for c in cs])
    targets = [f for u, _ in planned for f in u.findings]
    try:
        cand, proof = trial.run(every, targets)
        if proof.ok:
            plan.changes, plan.candidate, plan.proof = every, cand, proof
            return plan
    except Refused:
        pass
    kept: List[Change] = []
    kept_targets: List[Finding] = []
    best: Optional[Tuple[Candidate, Proof]] = None
    for u, cs in planned:
        try:
            cand, proof = trial.run(_unique(kept + cs), kept_targets + u.findings)
        except Refused as exc:
            plan.refused += [Refusal(f.id, f.family, str(exc), _services(f), f.hook) for f in u.findings]
            continue
        if proof.ok:
            kept, kept_targets, best = _unique(kept + cs), kept_targets + u.findings, (cand, proof)
        else:
            plan.refused += [Refusal(f.id, f.family, f"proof failed: {proof.reason}", _services(f), f.hook) for f in u.findings]
    if best is not None:
        # rendered again: a refused trial left its commands in the kept changes
        plan.changes = kept
        plan.candidate = owner(trial.owner_name(kept)).render(snapshot, kept)
        plan.proof = best[1]
    return plan
