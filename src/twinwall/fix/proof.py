"""The proof: the candidate host audited and diffed by twinwall's own analysis, before anything
is touched. A plan is proved when

* every finding it targets is gone from the candidate's audit,
* no service is cut that no change means to close (mirror and close name theirs, block-ipv6
  closes IPv6), so a default deny keeps what its clients reach,
* nothing that was closed is opened: no service's status widens, and no traffic class of any
  hook (input, forward, output) that was dropped is accepted - except what a change opens on
  purpose and says so (loopback, established replies, ICMPv6 that must pass),
* its full audit (services, host-level checks and the comparison of the families' output and
  forward hooks) raises no new finding of medium severity or worse it does not expect
  (block-ipv6 expects IPv4 to become the wider family).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from twinwall.analysis.audit import AuditReport, Finding, audit_snapshot
from twinwall.analysis.diff.change import compare_snapshots
from twinwall.analysis.diff.describe import region_json
from twinwall.findings import SEVERITIES
from twinwall.fix.model import Change
from twinwall.model import HostSnapshot


@dataclass
class Proof:
    ok: bool
    reason: str = ""
    closed: List[Dict] = field(default_factory=list)
    opened: List[Dict] = field(default_factory=list)
    findings_after: List[Dict] = field(default_factory=list)
    services: List[Dict] = field(default_factory=list)  # before/after, every service and family
    gone: List[str] = field(default_factory=list)
    after: Optional[AuditReport] = None

    def to_json(self) -> Dict:
        return {"ok": self.ok, "reason": self.reason, "closed": self.closed, "opened": self.opened,
                "findings_after": self.findings_after, "targeted_gone": self.gone, "services": self.services}


def _names(f: Finding) -> Set[str]:
    named = {str(s["service"]) for s in f.services if s.get("service")}
    return named or ({f.service} if f.service else set())


def finding_keys(f: Finding) -> Set[Tuple[str, Optional[str], str, Optional[str]]]:
    """What a finding is about, one key per subject: (kind, family, hook, service)."""
    names: Set[Optional[str]] = set(_names(f)) or {None}
    return {(f.id, f.family, f.hook or "", name) for name in names}


def still_raised(f: Finding, after: AuditReport) -> Optional[Finding]:
    """The candidate's finding that is ``f`` again: same kind, family and hook, and (for a
    finding about services) one of the same services."""
    mine = _names(f)
    for g in after.findings:
        if g.id != f.id or g.family != f.family or (g.hook or "") != (f.hook or ""):
            continue
        if not mine or mine & _names(g):
            return g
    return None


def region_class(d: Dict) -> Set[str]:
    """What an opened traffic class is, in the words changes use for what they open on purpose."""
    out = set()
    if (d.get("hook") == "input" and d.get("iif") == ["lo"]) or (d.get("hook") == "output" and d.get("oif") == ["lo"]):
        out.add("loopback")
    states = set(d.get("state") or [])
    if states and states <= {"established", "related", "untracked"}:
        out.add("established")
    if d.get("protocol") in ("ipv6-icmp", "icmpv6") or (d.get("family") == "ipv6" and d.get("protocol") == "icmp"):
        out.add("icmpv6")
    return out


def _meant_to_close(report: AuditReport, changes: Sequence[Change]) -> Set[Tuple]:
    """(protocol, address, port, family) of each service a change closes on purpose (mirror and
    close name theirs); (None, family) when a change closes the whole family (block-ipv6)."""
    labels: Dict[str, Set[str]] = {}
    out: Set[Tuple] = set()
    for ch in changes:
        if ch.strategy == "block-ipv6":
            out.add((None, ch.family))
        labels.setdefault(ch.family, set()).update(ch.services)
    for svc in report.services:
        s = svc.socket
        for fam, names in labels.items():
            if svc.label() in names:
                out.add((s.protocol, s.address, s.port, fam))
    return out


def prove(before: HostSnapshot, before_report: AuditReport, after_snap: HostSnapshot,
          targeted: Sequence[Finding], changes: Sequence[Change]) -> Proof:
    after = audit_snapshot(after_snap)
    cmp = compare_snapshots(before, after_snap)
    proof = Proof(True, after=after)
    proof.findings_after = [f.to_json() for f in after.findings]
    statuses = {}
    for svc in before_report.services:
        s = svc.socket
        for fam, v in svc.verdicts.items():
            statuses[(s.protocol, s.address, s.port, fam)] = {"service": svc.label(), "family": fam,
                                                               "before": v.summary(), "after": v.summary()}
    for svc in after.services:
        s = svc.socket
        for fam, v in svc.verdicts.items():
            row = statuses.setdefault((s.protocol, s.address, s.port, fam),
                                      {"service": svc.label(), "family": fam, "before": "absent"})
            row["after"] = v.summary()
    proof.services = list(statuses.values())
    problems: List[str] = []
    for f in targeted:
        g = still_raised(f, after)
        if g is not None:
            problems.append(f"{f.id} ({f.family or f.hook}) is still raised on the candidate: {g.message}")
        else:
            # one id raised for two services is one line per service, not the same line twice
            what = " ".join(x for x in (f.id, f.family, f.hook, f.service) if x)
            if what not in proof.gone:
                proof.gone.append(what)
    meant = _meant_to_close(before_report, changes)
    for sc in cmp.services:
        d = sc.to_json()
        if sc.change == "closed":
            proof.closed.append(d)
            if (sc.protocol, sc.address, sc.port, sc.family) not in meant and (None, sc.family) not in meant:
                # e.g. a default deny in a table of twinwall's own, where the admin's accepts
                # in another table do not count: the service's clients would lose it
                problems.append(f"{sc.protocol}/{sc.port} over {sc.family} would be cut ({sc.before} -> {sc.after}), "
                                "and no change means to close it")
        elif sc.change == "opened":
            proof.opened.append(d)
            problems.append(f"{sc.protocol}/{sc.port} over {sc.family} would be opened ({sc.before} -> {sc.after})")
    purposes: Dict[str, Set[str]] = {}
    for ch in changes:
        purposes.setdefault(ch.family, set()).update(ch.may_open)
    for fam, res in cmp.families.items():
        for r in res.differences + res.not_comparable:
            if cmp.region_change(r) != "opened":
                continue
            d = region_json(r, res, "before", "after")
            d["family"] = fam
            if region_class(d) & purposes.get(fam, set()):
                continue
            proof.opened.append(d)
            problems.append(f"{fam} {d['hook']} {d['protocol']} traffic would be accepted that was not "
                            f"(by {d.get('after_rule') or 'the candidate'})")
    # every finding of the candidate's full audit (the egress/forward comparison of the families
    # included) against the current ones, by kind, family, hook and service: a plan may not add
    # one of medium severity or worse it does not expect
    before_keys = {k for f in before_report.findings for k in finding_keys(f)}
    expected = {e for ch in changes for e in ch.expected}
    for g in after.findings:
        if SEVERITIES.index(g.severity) < SEVERITIES.index("medium") or (g.id, g.family) in expected:
            continue
        if finding_keys(g) <= before_keys:
            continue
        where = " ".join(x for x in (g.family, g.hook) if x)
        problems.append(f"the candidate raises a new {g.severity} {g.id} ({where}): {g.message}")
    if problems:
        proof.ok = False
        proof.reason = "; ".join(dict.fromkeys(problems))
    return proof
