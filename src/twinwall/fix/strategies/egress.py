"""egress: the seed 002 story (an OUTPUT block on tcp/25 in IPv4 only): give the wider family
the twin of the narrower family's OUTPUT (or FORWARD) rules.

``twinwall diff`` says which family accepts where the other denies; the narrower family's rules
of that chain that the wider one lacks are translated (addresses by role or ``--map``, ICMP via
twins, ``ttl`` as ``hl``) and put at the top of the wider family's chain, in their order; its
policy is copied when it is DROP (for IPv6 with neighbour discovery out accepted first). When
each family is wider somewhere, there is no one direction to twin: refused.
"""

from __future__ import annotations

from typing import List, Sequence

from twinwall.analysis.audit import Finding
from twinwall.analysis.evaluator import V_ACCEPT
from twinwall.fix.iptables_text import SaveText
from twinwall.fix.model import TOP, Change, Refused, RuleSpec
from twinwall.fix.strategies import FixContext, Strategy, other
from twinwall.fix.strategies.baseline import icmpv6_output
from twinwall.fix.translate import split_rule, translate_iptables_args
from twinwall.model import IPV4, IPV6


def wider_family(ctx: FixContext, hook: str) -> str:
    from twinwall.analysis.diff.compare import diff_snapshot

    result = diff_snapshot(ctx.snapshot, hooks=(hook,), parallel=False)
    wider = set()
    for r in result.comparisons[hook].differences:
        a, b = V_ACCEPT in r.a, V_ACCEPT in r.b
        if b and not a:
            wider.add(IPV6)
        elif a and not b:
            wider.add(IPV4)
    if len(wider) != 1:
        raise Refused(f"{hook.upper()}: " + ("each family accepts something the other denies: twin the rules by hand"
                                             if wider else "no region where one family accepts and the other denies"))
    return wider.pop()


def iptables_text(ctx: FixContext, family: str) -> str:
    texts = [t for t in ctx.snapshot.rulesets if t.family == family and t.format == "iptables-save"]
    if len(texts) != 1:
        raise Refused(f"the {family} rules are not one iptables-save dump (native nft, or legacy beside "
                      "nf_tables): twin them by hand")
    return texts[0].text


class Egress(Strategy):
    name = "egress"
    help = "twin the narrower family's OUTPUT/FORWARD rules into the wider family (seed 002)"
    addresses = frozenset({"TW-EGRESS-FORWARD-DIFFER"})

    def plan(self, findings: Sequence[Finding], ctx: FixContext) -> List[Change]:
        out = []
        for f in findings:
            hook = f.hook or "output"
            chain = hook.upper()
            wide = wider_family(ctx, hook)
            narrow = other(wide)
            narrow_table = SaveText.parse(iptables_text(ctx, narrow)).table("filter")
            wide_lines = set()
            if any(t.family == wide and t.format == "iptables-save" for t in ctx.snapshot.rulesets):
                wide_lines = set(SaveText.parse(iptables_text(ctx, wide)).table("filter").chain(chain))
            rules: List[RuleSpec] = []
            for line in narrow_table.chain(chain):
                _, args = split_rule(line)
                if "-j" in args and args[args.index("-j") + 1] not in ("ACCEPT", "DROP", "REJECT", "LOG", "RETURN"):
                    raise Refused(f"{narrow} {line} jumps to a chain of its own: twin it by hand")
                twin = translate_iptables_args(args, narrow, wide, ctx.amap)
                if " ".join(["-A", chain] + twin) not in wide_lines:
                    rules.append(RuleSpec(wide, chain, "RAW", raw=tuple(twin), rank=4))
            policies = {}
            if narrow_table.policies.get(chain) == "DROP":
                policies[chain] = "DROP"
                if wide == IPV6 and chain == "OUTPUT":
                    rules = icmpv6_output() + rules
            if not rules and not policies:
                raise Refused(f"{chain}: the {narrow} rules are already in {wide}")
            out.append(Change(f.id, wide, self.name, rules, place=TOP, chain=chain, policies=policies,
                              decided_by=list(f.evidence),
                              # the twin carries the narrower family's own findings with it
                              expected=tuple((g.id, wide) for g in ctx.report.findings if g.family == narrow),
                              note=f"{wide} {chain} gets the twin of {narrow}'s {len(narrow_table.chain(chain))} rules"))
        return out


STRATEGY = Egress()
