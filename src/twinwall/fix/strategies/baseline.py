"""baseline: the host-level controls (CIS 4.4.2.x / 4.4.3.x, seed 001) for one family.

Rules that go at the top of a chain, in this order: loopback accepted, loopback sources on
other interfaces dropped, for IPv6 the ICMPv6 RFC 4890 says must pass (neighbour and router
discovery with hop limit 255, packet too big and the other errors, MLD queries from link-local)
- written before any rule that looks at conntrack state, since the kernel leaves NDP
untracked - then established/related. At the bottom: an explicit accept for every service only
the ACCEPT policy let in (so default deny does not cut it: the CIS sequence that set policy DROP
without an IPv6 SSH accept), a rate-limited LOG that never sees loopback, and policy DROP. Where the rules go into a table of
twinwall's own (native nft: every base chain on a hook must accept), the admin's accepts in
the other tables do not count there, so every service reachable now gets its accepts written
in twinwall's table as well: open ones one accept, restricted ones what their clients reach.
Default deny of OUTPUT or FORWARD is done to both families (ICMPv6 neighbour discovery out
accepted first for IPv6), so the families stay twins: one family's OUTPUT denied alone would be
a new TW-EGRESS-FORWARD-DIFFER, which the proof refuses.
"""

from __future__ import annotations

import shlex
from typing import List, Sequence

from twinwall.analysis.audit import Finding
from twinwall.analysis.verdicts import OPEN, RESTRICTED, FamilyVerdict, ServiceReport
from twinwall.fix.model import BEFORE, BOTTOM, LOOPBACK, TOP, Change, Refused, RuleSpec
from twinwall.fix.strategies import LOG_PREFIX, FixContext, Strategy, iptables_filter, other, service_rule
from twinwall.fix.translate import AddressMap
from twinwall.model import IPV4, IPV6



def loopback_accept(family: str, chain: str) -> RuleSpec:
    if chain == "OUTPUT":
        return RuleSpec(family, "OUTPUT", "ACCEPT", oif="lo", rank=0)
    return RuleSpec(family, chain, "ACCEPT", iif="lo", rank=0)


def spoof_drop(family: str) -> RuleSpec:
    return RuleSpec(family, "INPUT", "DROP", source=LOOPBACK[family], not_iif="lo", rank=1)


def established(family: str, chain: str) -> RuleSpec:
    return RuleSpec(family, chain, "ACCEPT", state="RELATED,ESTABLISHED", rank=3)


def icmpv6_input() -> List[RuleSpec]:
    """RFC 4890 4.4.1 on input: untracked NDP/RA with hop limit 255, the errors, MLD queries."""
    out = [RuleSpec(IPV6, "INPUT", "ACCEPT", protocol="ipv6-icmp", icmp_type=t, hop_limit=255, rank=2)
           for t in ("neighbour-solicitation", "neighbour-advertisement", "router-advertisement")]
    out += [RuleSpec(IPV6, "INPUT", "ACCEPT", protocol="ipv6-icmp", icmp_type=t, rank=2)
            for t in ("packet-too-big", "destination-unreachable", "time-exceeded", "parameter-problem")]
    out.append(RuleSpec(IPV6, "INPUT", "ACCEPT", protocol="ipv6-icmp", icmp_type="mld-listener-query",
                        source="fe80::/10", rank=2))
    return out


def icmpv6_output() -> List[RuleSpec]:
    out = [RuleSpec(IPV6, "OUTPUT", "ACCEPT", protocol="ipv6-icmp", icmp_type=t, hop_limit=255, rank=2)
           for t in ("neighbour-solicitation", "neighbour-advertisement", "router-solicitation")]
    out += [RuleSpec(IPV6, "OUTPUT", "ACCEPT", protocol="ipv6-icmp", icmp_type=t, rank=2)
            for t in ("mld-listener-report", "mld2-listener-report")]
    return out


def log_rule(family: str, chain: str) -> RuleSpec:
    if chain == "OUTPUT":
        return RuleSpec(family, chain, "LOG", log_prefix=LOG_PREFIX[family], rank=8, not_oif="lo")
    return RuleSpec(family, chain, "LOG", log_prefix=LOG_PREFIX[family], rank=8, not_iif="lo")


def default_deny(f: Finding, ctx: FixContext) -> List[Change]:
    """Policy DROP for the finding's chain, with what must keep passing accepted first; for
    OUTPUT and FORWARD the other family's chain gets the same (its own ICMPv6 for IPv6) unless
    it already denies by default, so the families stay twins."""
    family = f.family or IPV4
    chain = (f.hook or "input").upper()
    out = [_deny_change(f, family, chain, ctx)]
    twin = other(family)
    if chain != "INPUT" and not _denies_by_default(ctx, twin, chain):
        change = _deny_change(f, twin, chain, ctx)
        change.note += f" (the twin of {family}'s: the families stay twins)"
        out.append(change)
    return out


def _denies_by_default(ctx: FixContext, family: str, chain: str) -> bool:
    """The family's filter ``chain`` has policy DROP already (in its iptables-save dump)."""
    table = iptables_filter(ctx, family)
    return table is not None and table.policies.get(chain) == "DROP"


def _deny_change(f: Finding, family: str, chain: str, ctx: FixContext) -> Change:
    top: List[RuleSpec] = [loopback_accept(family, chain)] if chain != "FORWARD" else []
    if family == IPV6 and chain in ("INPUT", "OUTPUT"):
        top += icmpv6_input() if chain == "INPUT" else icmpv6_output()
    top.append(established(family, chain))
    bottom: List[RuleSpec] = []
    kept = []
    own_table = chain == "INPUT" and _own_table(ctx, family)
    if chain == "INPUT":
        for svc in ctx.report.services:
            v = svc.verdicts[family]
            if (own_table and not v.by_policy and v.status in (OPEN, RESTRICTED) and svc.dnat is None
                    and svc.socket.protocol in ("tcp", "udp")):
                for rule in _keep_rules(svc, family, v):
                    if rule not in bottom:
                        bottom.append(rule)
                kept.append(svc.label())
            elif v.by_policy and v.status == OPEN and svc.dnat is None and svc.socket.protocol in ("tcp", "udp"):
                rule = service_rule(svc, family, "ACCEPT")
                if rule not in bottom:
                    bottom.append(rule)
                    kept.append(svc.label())
            elif v.by_policy and v.status != OPEN and svc.dnat is None and v.status in ("restricted",):
                raise Refused(f"{svc.label()} is {v.summary()} over {family} through the policy: "
                              "default deny would change who reaches it; write its accept by hand")
    elif chain == "OUTPUT":
        bottom.append(RuleSpec(family, "OUTPUT", "ACCEPT", state="NEW", rank=6))
    bottom.append(log_rule(family, chain))
    note = f"{family} {chain} policy DROP"
    if kept:
        note += f"; explicit accepts keep {', '.join(kept)} reachable"
    return Change(f.id, family, "baseline", top + bottom, place=TOP, chain=chain, policies={chain: "DROP"},
                  decided_by=list(f.evidence), note=note, may_open=("loopback", "established", "icmpv6"))


def _own_table(ctx: FixContext, family: str) -> bool:
    """The family's changes go into a table of twinwall's own (native nft), not the chain that
    holds the admin's accepts."""
    from twinwall.fix.owners import owner_of

    return owner_of(ctx.snapshot, ctx.report, family) == "nft"


def _keep_rules(svc: ServiceReport, family: str, v: FamilyVerdict) -> List[RuleSpec]:
    """Accepts that keep what the service's clients reach now, for a table of twinwall's own."""
    if v.status == OPEN:
        return [service_rule(svc, family, "ACCEPT")]
    from twinwall.fix.strategies.mirror import twin_rules

    rules = twin_rules(svc, family, v, AddressMap())  # the family's own restriction, untranslated
    rules.pop()  # its last rule denies everyone else: the default deny below does that here
    if all(r.action != "ACCEPT" for r in rules):  # "all except X": X's drops, then everyone else in
        rules.append(service_rule(svc, family, "ACCEPT"))
    return rules


def drop_logging(f: Finding, ctx: FixContext) -> List[Change]:
    """A LOG rule just before each unlogged drop: the drop rule's own matches (never loopback),
    or at the end of the chain for a DROP policy."""
    out = []
    family = f.family or IPV4
    for _, d in f.decided_by:
        if d.table != "filter":
            continue
        if d.policy is not None:
            out.append(Change(f.id, family, "baseline", [log_rule(family, d.chain)], place=BOTTOM, chain=d.chain,
                              decided_by=list(f.evidence), note=f"log what the {d.chain} policy drops, never loopback"))
        elif d.rule:
            out.append(_log_before(f, d))
    if not out:
        raise Refused("no filter rule or policy to log before")
    return out


def _log_before(f: Finding, d) -> Change:
    family = f.family or IPV4
    toks = shlex.split(d.rule)
    if len(toks) < 4 or toks[0] != "-A" or "-j" not in toks:
        raise Refused(f"cannot read the drop rule {d.rule!r}")
    j = toks.index("-j")
    matches = toks[2:j]
    if "-i" not in matches:
        matches = ["!", "-i", "lo"] + matches
    raw = tuple(matches + ["-m", "limit", "--limit", "5/min", "-j", "LOG", "--log-prefix", LOG_PREFIX[family]])
    rule = RuleSpec(family, d.chain, "LOG", raw=raw)
    return Change(f.id, family, "baseline", [rule], place=BEFORE, chain=d.chain, anchor=d.rule_number,
                  decided_by=list(f.evidence), note=f"log before {d.describe()}")


class Baseline(Strategy):
    name = "baseline"
    help = "loopback, spoofed loopback, established, ICMPv6 (RFC 4890), logging, default deny"
    addresses = frozenset({"TW-NO-DEFAULT-DENY", "TW-LOOPBACK-NOT-ACCEPTED", "TW-SPOOFED-LOOPBACK",
                           "TW-ESTABLISHED-DROPPED", "TW-DROP-NOT-LOGGED", "TW-LOOPBACK-LOGGED",
                           "TW-ICMPV6-NDP-BLOCKED", "TW-ICMPV6-ESSENTIAL-BLOCKED"})

    def plan(self, findings: Sequence[Finding], ctx: FixContext) -> List[Change]:
        out = []
        for f in findings:
            family = f.family
            if family is None:
                raise Refused("the finding names no family")
            chain = (f.hook or "input").upper()
            ev = list(f.evidence)
            if f.id == "TW-NO-DEFAULT-DENY":
                out += default_deny(f, ctx)
            elif f.id in ("TW-LOOPBACK-NOT-ACCEPTED", "TW-LOOPBACK-LOGGED"):
                out.append(Change(f.id, family, self.name, [loopback_accept(family, chain)], place=TOP, chain=chain,
                                  decided_by=ev, note=f"accept loopback first in {chain}", may_open=("loopback",)))
            elif f.id == "TW-SPOOFED-LOOPBACK":
                out.append(Change(f.id, family, self.name, [spoof_drop(family)], place=TOP, decided_by=ev,
                                  note=f"drop {LOOPBACK[family]} sources arriving on other interfaces"))
            elif f.id == "TW-ESTABLISHED-DROPPED":
                rules = (icmpv6_input() if family == IPV6 else []) + [established(family, "INPUT")]
                out.append(Change(f.id, family, self.name, rules, place=TOP, decided_by=ev,
                                  note="accept replies (RELATED,ESTABLISHED)", may_open=("established", "icmpv6")))
            elif f.id == "TW-DROP-NOT-LOGGED":
                out += drop_logging(f, ctx)
            elif f.id in ("TW-ICMPV6-NDP-BLOCKED", "TW-ICMPV6-ESSENTIAL-BLOCKED"):
                rules = icmpv6_input() + (icmpv6_output() if f.id == "TW-ICMPV6-NDP-BLOCKED" else [])
                ins = [r for r in rules if r.chain == "INPUT"]
                outs = [r for r in rules if r.chain == "OUTPUT"]
                out.append(Change(f.id, IPV6, self.name, ins, place=TOP, chain="INPUT", decided_by=ev,
                                  note="ICMPv6 RFC 4890 says must pass, before any conntrack-state rule",
                                  may_open=("icmpv6",)))
                if outs:
                    out.append(Change(f.id, IPV6, self.name, outs, place=TOP, chain="OUTPUT", decided_by=ev,
                                      note="neighbour discovery out", may_open=("icmpv6",)))
        return out


STRATEGY = Baseline()
