"""mirror: give the wider family the twin of the narrower family's restriction.

The narrower family's verdict says exactly who gets in (its ``allowed`` combinations of sources,
interfaces and source ports); the wider family gets an accept for each, addresses translated by
role or ``--map``, then a drop (or the twin of the narrower family's reject) for every other new
connection to the service. They go just before the rule that let the wider family in (or at the
end of the chain whose ACCEPT policy did), so that no rule of the wider family is bypassed; when
that decision is not in a filter chain, before the first rule of the chain that could decide the
service's new connections (or at its end, before the policy). Each drop is logged first, the
way the family logs its drops (never loopback).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple

from twinwall.analysis.audit import Finding
from twinwall.analysis.verdicts import FILTERED, RESTRICTED, FamilyVerdict, ServiceReport
from twinwall.fix.model import BEFORE, BOTTOM, TOP, Change, Refused, RuleSpec
from twinwall.fix.shadow import TERMINAL, Match, parse
from twinwall.fix.strategies import (DOCKER_USER, FixContext, Strategy, accepting_anchor, gap_services,
                                     iptables_filter, logged, narrow_verdict, other, service_rule)
from twinwall.fix.translate import AddressMap, reject_twin
from twinwall.twins import reject_with_of
from twinwall.netfilter.ruleset import NO_TABLE

MAX_RULES = 32


def deny_action(narrow: FamilyVerdict, wide: str) -> dict:
    """DROP, or REJECT with the twin of the narrower family's --reject-with."""
    for d in narrow.decided_by:
        if d.policy is None and d.action == "REJECT" and d.rule:
            value = reject_with_of(d.rule, other(wide))  # iptables-save's or nft's spelling
            return {"action": "REJECT", "reject_with": reject_twin(value, wide) if value else None}
    return {"action": "DROP"}


def twin_rules(svc: ServiceReport, wide: str, narrow: Optional[FamilyVerdict], amap: AddressMap) -> List[RuleSpec]:
    """Accept what ``narrow`` accepts (None or filtered: nothing), drop the rest."""
    rules: List[RuleSpec] = []
    if narrow is not None and narrow.status == RESTRICTED and _all_except(narrow):
        # "all except 198.51.100.0/24": the twin drops the exceptions, the rest stays as it is
        for cidr in narrow.denied_sources:
            rules.append(service_rule(svc, wide, source=amap.translate(cidr, wide), **deny_action(narrow, wide)))
        return rules
    if narrow is not None and narrow.status == RESTRICTED:
        if not narrow.allowed:
            raise Refused(f"{svc.label()}: the {other(wide)} restriction cannot be written as combinations")
        for combo in narrow.allowed:
            if combo.sources_except:  # everyone but more than a few: as many rules as CIDRs
                raise Refused(f"{svc.label()}: the {other(wide)} restriction takes more than {MAX_RULES} rules to twin")
            sources = [None] if combo.sources_text == "all" else [amap.translate(c, wide) for c in combo.sources]
            ifaces = [None] if combo.interfaces == ("*",) else list(combo.interfaces)
            ports = [None] if combo.source_ports == ("*",) else [p.replace("-", ":") for p in combo.source_ports]
            for i in ifaces:
                if i is not None and not re.fullmatch(r"[A-Za-z0-9_.@:+-]+", i):
                    raise Refused(f"{svc.label()}: interface class {i!r} cannot be named in a rule")
                for s in sources:
                    for p in ports:
                        rules.append(service_rule(svc, wide, "ACCEPT", source=s, iif=i or svc.socket.interface, sport=p))
        if len(rules) > MAX_RULES:
            raise Refused(f"{svc.label()}: the {other(wide)} restriction takes {len(rules)} rules to twin")
    deny = deny_action(narrow, wide) if narrow is not None else {"action": "DROP"}
    rules.append(service_rule(svc, wide, not_iif="lo", **deny))
    return rules


def _all_except(v: FamilyVerdict) -> bool:
    """Restricted only by a few denied sources, on every interface and source port."""
    return (0 < len(v.denied_sources) <= 8 and bool(v.allowed)
            and all(a.interfaces == ("*",) and a.source_ports == ("*",) for a in v.allowed)
            and any(a.sources_text.startswith("all except") for a in v.allowed))


def placed(finding: Finding, svc: ServiceReport, wide: str, rules: List[RuleSpec], strategy: str,
           ctx: FixContext) -> Change:
    """The change holding ``rules``: just before the rule that let the wider family in, at the end
    of the chain whose policy did, or (that decision not located in a filter chain) before the
    first rule of the wider family that could decide the service's new connections; the drops
    logged the way the family logs them."""
    rules[:] = logged(rules, ctx)
    anchor = accepting_anchor(svc.verdicts[wide])
    change = Change(finding.id, wide, strategy, rules, services=[svc.label()], decided_by=list(finding.evidence))
    if rules and rules[0].chain == DOCKER_USER:
        # published through Docker: at the top of DOCKER-USER, before its RETURN
        change.place, change.chain = TOP, DOCKER_USER
        rules[:] = [replace(r, rank=4) for r in rules]
        return change
    if anchor is not None and anchor.table == "filter":
        change.chain = anchor.chain
        if anchor.policy is None and anchor.rule_number:
            change.place, change.anchor = BEFORE, anchor.rule_number
        else:
            change.place = BOTTOM
        rules[:] = [replace(r, chain=anchor.chain) for r in rules]
        return change
    change.chain = rules[0].chain if rules else "INPUT"
    if anchor is not None and anchor.table == NO_TABLE:
        return change  # no rules at all in the family: the chain's end is its start
    found = first_deciding(ctx, wide, change.chain, svc)
    if found is not None:
        change.place, change.anchor = BEFORE, found[0]
        change.fallback = f"the rule that let {wide} in was not located: placed before {found[1]}"
    else:
        change.place = BOTTOM
        change.fallback = f"the rule that let {wide} in was not located: placed at the end of {change.chain}"
    return change


def first_deciding(ctx: FixContext, family: str, chain: str, svc: ServiceReport) -> Optional[Tuple[int, str]]:
    """(number, line) of the first rule of the family's filter ``chain`` that could decide a new
    connection to ``svc`` from elsewhere (a rule it cannot read counts); None: no rule does."""
    table = iptables_filter(ctx, family)
    s = svc.socket
    for n, line in enumerate(table.rules.get(chain, []) if table is not None else [], 1):
        m = parse(line)
        if m is not None and not _may_decide(m, s.protocol, s.port):
            continue
        return n, line
    return None


def _may_decide(m: Match, protocol: str, port: int) -> bool:
    if m.target not in TERMINAL and m.target in ("LOG", "NFLOG", "MARK", "CONNMARK"):
        return False  # (it lets the packet go on)
    if m.iif == "lo" or (m.states is not None and "NEW" not in m.states) or m.icmp is not None:
        return False
    if m.protocol is not None and m.protocol != protocol:
        return False
    if m.dport is not None:
        low, _, high = m.dport.partition(":")
        if not (int(low or 0) <= port <= int(high or low or 65535)):
            return False
    return True


class Mirror(Strategy):
    name = "mirror"
    help = "give the wider family the twin of the narrower family's restriction (default for family gaps)"
    addresses = frozenset({"TW-FAMILY-GAP"})

    def plan(self, findings: Sequence[Finding], ctx: FixContext) -> List[Change]:
        out = []
        for f, wide, row, svc in gap_services(findings, ctx):
            nv = narrow_verdict(ctx.report, row, other(wide))
            if nv.status == FILTERED:
                rules = [service_rule(svc, wide, not_iif="lo", **deny_action(nv, wide))]
            else:
                rules = twin_rules(svc, wide, nv, ctx.amap)
            change = placed(f, svc, wide, rules, self.name, ctx)
            change.note = f"{svc.label()}: {other(wide)} is {nv.summary()}; {wide} gets its twin"
            out.append(change)
        return out


STRATEGY = Mirror()
