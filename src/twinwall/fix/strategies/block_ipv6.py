"""block-ipv6: seed 001's answer for a host that does not use IPv6: the ip6tables filter table
becomes INPUT/FORWARD/OUTPUT policy DROP with loopback accepted and what is dropped logged
(loopback never logged). IPv4 becomes the wider family on purpose: the family gaps that leaves
are expected, and so is neighbour discovery being dropped."""

from __future__ import annotations

from typing import List, Sequence

from twinwall.analysis.audit import Finding
from twinwall.fix.model import TOP, Change, RuleSpec
from twinwall.fix.strategies import FixContext, Strategy
from twinwall.fix.strategies.baseline import log_rule, loopback_accept
from twinwall.model import IPV6


class BlockIpv6(Strategy):
    name = "block-ipv6"
    help = "ip6tables INPUT/FORWARD/OUTPUT policy DROP, loopback accepted, drops logged"
    grouped = True
    # what it removes; the ICMPv6 and established findings it raises instead are expected
    addresses = frozenset({"TW-FAMILY-GAP", "TW-NO-RULE", "TW-NO-DEFAULT-DENY", "TW-SPOOFED-LOOPBACK",
                           "TW-DROP-NOT-LOGGED", "TW-LOOPBACK-LOGGED", "TW-LOOPBACK-NOT-ACCEPTED"})

    def applies(self, finding: Finding) -> bool:
        return finding.family == IPV6 and finding.id in self.addresses

    def plan(self, findings: Sequence[Finding], ctx: FixContext) -> List[Change]:
        rules = [loopback_accept(IPV6, "INPUT"), log_rule(IPV6, "INPUT"),
                 RuleSpec(IPV6, "FORWARD", "LOG", log_prefix="twinwall6 drop: ", rank=8),
                 loopback_accept(IPV6, "OUTPUT"), log_rule(IPV6, "OUTPUT")]
        ids = list(dict.fromkeys(f.id for f in findings))
        expected = (("TW-FAMILY-GAP", "ipv4"), ("TW-ICMPV6-NDP-BLOCKED", IPV6), ("TW-ICMPV6-ESSENTIAL-BLOCKED", IPV6),
                    ("TW-ESTABLISHED-DROPPED", IPV6), ("TW-EGRESS-FORWARD-DIFFER", None))
        return [Change(ids[0] if ids else "TW-FAMILY-GAP", IPV6, self.name, rules, place=TOP, replace_table=True,
                       policies={"INPUT": "DROP", "FORWARD": "DROP", "OUTPUT": "DROP"},
                       services=[], decided_by=[e for f in findings for e in f.evidence][:12],
                       note="IPv6 blocked altogether (covers " + ", ".join(ids) + ")",
                       expected=expected, may_open=("loopback",))]


STRATEGY = BlockIpv6()
