"""Strategies: what to change about a finding, independent of who owns the rules.

Each module exposes ``STRATEGY``, a :class:`Strategy`: ``addresses`` names the finding ids it can
act on, ``plan(findings, ctx)`` returns the changes (raising ``Refused`` with the reason when it
cannot). Per-finding strategies get one finding at a time; ``grouped`` ones (block-ipv6) get
every selected finding of a family at once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Sequence

from twinwall.analysis.audit import AuditReport, Finding
from twinwall.analysis.verdicts import REACH_RANK, FamilyVerdict, ServiceReport
from twinwall.fix.model import Change, Refused, RuleSpec
from twinwall.fix.translate import AddressMap
from twinwall.model import IPV4, IPV6, HostSnapshot

MODULES: Dict[str, str] = {
    "mirror": "twinwall.fix.strategies.mirror",
    "accept-new": "twinwall.fix.strategies.accept_new",
    "close": "twinwall.fix.strategies.close",
    "block-ipv6": "twinwall.fix.strategies.block_ipv6",
    "baseline": "twinwall.fix.strategies.baseline",
    "egress": "twinwall.fix.strategies.egress",
}
NAMES = tuple(MODULES)


@dataclass
class FixContext:
    snapshot: HostSnapshot
    report: AuditReport
    amap: AddressMap = field(default_factory=AddressMap)


class Strategy:
    name = ""
    help = ""
    addresses: FrozenSet[str] = frozenset()
    grouped = False

    def applies(self, finding: Finding) -> bool:
        return finding.id in self.addresses

    def plan(self, findings: Sequence[Finding], ctx: FixContext) -> List[Change]:
        raise NotImplementedError


def strategy(name: str) -> Strategy:
    st: Strategy = importlib.import_module(MODULES[name]).STRATEGY
    return st


def other(family: str) -> str:
    return IPV6 if family == IPV4 else IPV4


def narrow_verdict(report: AuditReport, row: int, narrow: str) -> FamilyVerdict:
    """The narrower family's verdict of the service in ``row``: the row's own when its socket
    takes that family, else its twin socket's (``0.0.0.0:22`` beside ``[::]:22``)."""
    svc = report.services[row]
    v = svc.verdicts[narrow]
    if v.status in REACH_RANK:
        return v
    s = svc.socket
    for other_svc in report.services:
        o = other_svc.socket
        if (o.protocol, o.port, o.interface) == (s.protocol, s.port, s.interface) and other_svc.dnat is None:
            ov = other_svc.verdicts[narrow]
            if ov.status in REACH_RANK:
                return ov
    raise Refused(f"{svc.label()}: no {narrow} verdict to mirror")


DOCKER_USER = "DOCKER-USER"
LOG_PREFIX = {IPV4: "twinwall drop: ", IPV6: "twinwall6 drop: "}


def iptables_filter(ctx: FixContext, family: str):
    """The family's filter table as its iptables-save dump printed it (None: no such dump)."""
    from twinwall.fix.iptables_text import SaveText

    for t in ctx.snapshot.rulesets:
        if t.family == family and t.format == "iptables-save" and t.text:
            return SaveText.parse(t.text).table("filter")
    return None


def family_log_prefix(ctx: FixContext, family: str) -> str:
    """The prefix the family's own LOG rules use (twinwall's when it has none)."""
    import re

    table = iptables_filter(ctx, family)
    for lines in (table.rules.values() if table is not None else ()):
        for line in lines:
            m = re.search(r'-j LOG .*--log-prefix (?:"([^"]*)"|(\S+))', line)
            if m:
                return m.group(1) if m.group(1) is not None else m.group(2)
    return LOG_PREFIX[family]


def logged(rules: Sequence[RuleSpec], ctx: FixContext) -> List[RuleSpec]:
    """Each DROP/REJECT preceded by a rate-limited LOG of the same packets, the way the family
    logs its drops (log before drop, never loopback): a fix leaves no TW-DROP-NOT-LOGGED. A
    front-end (ufw, firewalld, Docker) logs what it drops itself: its rules stay as they are."""
    from dataclasses import replace

    from twinwall.fix.owners import owner_of

    out: List[RuleSpec] = []
    for r in rules:
        if r.action in ("DROP", "REJECT") and not r.raw and owner_of(ctx.snapshot, ctx.report, r.family,
                                                                      r.chain) in ("iptables", "nft"):
            lo = {} if (r.iif or r.chain == DOCKER_USER) else {"not_iif": "lo"}
            out.append(replace(r, action="LOG", reject_with=None,
                               log_prefix=family_log_prefix(ctx, r.family), **lo))  # type: ignore[arg-type]
        out.append(r)
    return out


def gap_services(findings: Sequence[Finding], ctx: FixContext):
    """(finding, wider family, row, service) of every service the family gaps list."""
    for f in findings:
        wide = f.family or IPV4
        for row in f.table_rows():
            yield f, wide, row, ctx.report.services[row]


def dnat_target(svc: ServiceReport, family: str):
    """(address, port) a published service's DNAT sends ``family``'s connections to."""
    import re

    for t in svc.dnat.targets if svc.dnat else ():
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)", t) if family == IPV6 else re.fullmatch(r"([0-9.]+):(\d+)", t)
        if m:
            return m.group(1), int(m.group(2))
    return None


def service_rule(svc: ServiceReport, family: str, action: str, **more) -> RuleSpec:
    """A rule about new connections to one listening service from elsewhere; a port Docker
    publishes is decided after its DNAT, in DOCKER-USER, by the container's address and port."""
    s = svc.socket
    if s.protocol not in ("tcp", "udp"):
        raise Refused(f"{svc.label()}: protocol {s.protocol} is not planned")
    fields = dict(family=family, chain="INPUT", action=action, protocol=s.protocol, dport=s.port, state="NEW")
    if svc.dnat is not None:
        if (svc.dnat.frontend or "") != "docker":
            raise Refused(f"{svc.label()} is published through DNAT by {svc.dnat.frontend or 'a rule'}: write "
                          "its FORWARD rule by hand")
        target = dnat_target(svc, family)
        if target is None:
            raise Refused(f"{svc.label()}: no {family} DNAT target to name in DOCKER-USER")
        fields.update(chain=DOCKER_USER, destination=target[0], dport=target[1])
        more.pop("not_iif", None)
    if s.interface:
        fields["iif"] = s.interface
    fields.update(more)
    return RuleSpec(**fields)  # type: ignore[arg-type]


def accepting_anchor(v: FamilyVerdict):
    """The first decision that accepted the service: a rule (insert before it) or a policy
    (append to that chain)."""
    for d in v.decided_by:
        if d.policy == "ACCEPT" or (d.policy is None and d.action == "ACCEPT"):
            return d
    return None
