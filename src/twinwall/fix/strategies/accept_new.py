"""accept-new: the CIS remediation (4.4.2.4 / 4.4.3.4, seed 000) for services meant to be open:
an explicit rule accepting their new connections where only a chain's ACCEPT policy does, so a
later default-deny policy does not cut them. It never opens a service that was closed."""

from __future__ import annotations

from typing import List, Sequence

from twinwall.analysis.audit import Finding
from twinwall.analysis.verdicts import OPEN
from twinwall.fix.model import BOTTOM, Change, Refused
from twinwall.fix.strategies import FixContext, Strategy, service_rule
from twinwall.netfilter.ruleset import NO_TABLE


class AcceptNew(Strategy):
    name = "accept-new"
    help = "an explicit accept for services reachable only through an ACCEPT policy (CIS)"
    addresses = frozenset({"TW-NO-RULE"})

    def plan(self, findings: Sequence[Finding], ctx: FixContext) -> List[Change]:
        out = []
        for f in findings:
            family = f.family
            if family is None:
                raise Refused("the finding names no family")
            for row in f.table_rows():
                svc = ctx.report.services[row]
                v = svc.verdicts[family]
                if v.status != OPEN:
                    raise Refused(f"{svc.label()} is {v.summary()} over {family}: an accept for every "
                                  "source would open it wider")
                policy = next((d for d in v.decided_by if d.policy == "ACCEPT" or d.table == NO_TABLE), None)
                if policy is None or policy.table not in ("filter", NO_TABLE):
                    raise Refused(f"{svc.label()}: no filter chain policy accepts it")
                # no table at all (ip6tables never loaded): the rule starts the filter table
                chain = policy.chain if policy.table == "filter" else "INPUT"
                rule = service_rule(svc, family, "ACCEPT", chain=chain)
                out.append(Change(f.id, family, self.name, [rule], place=BOTTOM, chain=chain,
                                  services=[svc.label()], decided_by=list(f.evidence),
                                  note=f"{svc.label()}: accepted by rule instead of by the {chain} policy"))
        return out


STRATEGY = AcceptNew()
