"""close: drop new connections to the service in the wider family (the narrower family's
restriction is not copied: nobody gets in there)."""

from __future__ import annotations

from typing import List, Sequence

from twinwall.analysis.audit import Finding
from twinwall.fix.model import Change
from twinwall.fix.strategies import FixContext, Strategy, gap_services, other, service_rule
from twinwall.fix.strategies.mirror import placed


class Close(Strategy):
    name = "close"
    help = "drop the port in the wider family"
    addresses = frozenset({"TW-FAMILY-GAP"})

    def plan(self, findings: Sequence[Finding], ctx: FixContext) -> List[Change]:
        out = []
        for f, wide, _, svc in gap_services(findings, ctx):
            change = placed(f, svc, wide, [service_rule(svc, wide, "DROP", not_iif="lo")], self.name, ctx)
            change.note = f"{svc.label()}: closed over {wide}"
            # closing a service the narrower family restricts makes that family the wider one
            change.expected = (("TW-FAMILY-GAP", other(wide)),)
            out.append(change)
        return out


STRATEGY = Close()
