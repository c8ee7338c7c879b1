"""egress: the seed 002 story (an OUTPUT block on tcp/25 in IPv4 only): give the wider family
the twin of the narrower family's OUTPUT (or FORWARD) rules.

``twinwall diff`` says which family accepts where the other denies; the narrower family's rules
of that chain that the wider one lacks are translated (addresses by role or ``--map``, ICMP via
twins, ``ttl`` as ``hl``) and put at the top of the wider family's chain, in their order; its
policy is copied when it is DROP (for IPv6 with neighbour discovery out accepted first). When
each family is wider somewhere, there is no one direction to twin: refused.

On a native nft host the narrower family's rules of the hook's base chain are translated the
same way (translate_nft_rule) into twinwall's own ``table inet twinwall``; ufw and firewalld
write their output rules for both families from one command, and are refused with that reason.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from twinwall.analysis.audit import Finding
from twinwall.analysis.evaluator import V_ACCEPT
from twinwall.fix.iptables_text import SaveText
from twinwall.fix.model import TOP, Change, Refused, RuleSpec
from twinwall.fix.strategies import FixContext, Strategy, other
from twinwall.fix.strategies.baseline import icmpv6_output
from twinwall.fix.owners import owner_of
from twinwall.fix.translate import split_rule, translate_iptables_args, translate_nft_rule
from twinwall.netfilter.ruleset import CONTINUE
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
            who = owner_of(ctx.snapshot, ctx.report, wide, chain)
            if who in ("ufw", "firewalld"):
                raise Refused(f"{who} writes its {chain} rules for both families itself (its commands cannot "
                              f"name one family's {hook} rule): twin them in its {narrow}/{wide} rule files by hand")
            if who == "nft":
                out.append(nft_twin(f, ctx, hook, wide))
                continue
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
                              expected=carried(ctx, narrow, wide),
                              note=f"{wide} {chain} gets the twin of {narrow}'s {len(narrow_table.chain(chain))} rules"))
        return out


def carried(ctx: FixContext, narrow: str, wide: str) -> Tuple[Tuple[str, Optional[str]], ...]:
    """The narrower family's own findings: the twin carries them into the wider family."""
    return tuple((g.id, wide) for g in ctx.report.findings if g.family == narrow)


def nft_twin(f: Finding, ctx: FixContext, hook: str, wide: str) -> Change:
    """The narrower family's native nft rules on ``hook``, in their order, written for the wider
    family into twinwall's own base chain (which runs first and can only take away: an accept
    there ends only its chain, every other base chain on the hook still decides; a rule both
    families share is written too, so the order of the narrower family's decisions is kept);
    the chain's drop policy as a last drop of the family, neighbour discovery out accepted first."""
    from twinwall.loader import load_rulesets

    narrow = other(wide)
    sets = load_rulesets(ctx.snapshot)
    bases = [(rs, b) for rs in sets[narrow] if rs.kind != "iptables" for b in rs.base_chains
             if b.hook == hook and b.kind == "filter" and b.table != "inet twinwall"]
    with_rules = [(rs, b) for rs, b in bases if rs.tables[b.table].chains[b.chain].rules]
    if len(with_rules) != 1:
        raise Refused(f"{hook}: {len(with_rules)} nft base chains of {narrow} hold rules on the hook: "
                      "twin them by hand")
    rs, base = with_rules[0]
    chain = hook.upper()
    rules: List[RuleSpec] = []
    for r in rs.tables[base.table].chains[base.chain].rules:
        if r.action == CONTINUE and not r.logs:
            continue  # (a counter, or a rule of the other family)
        if r.action not in ("ACCEPT", "DROP", "REJECT") and not r.logs:
            raise Refused(f"{narrow} nft rule '{r.text}' ({r.action}) is not twinned automatically")
        text = translate_nft_rule(r.text, narrow, wide, ctx.amap)
        rules.append(RuleSpec(wide, chain, r.action, nft_text=text, rank=4))
    policies = {}
    if base.chain in rs.tables[base.table].chains and rs.tables[base.table].chains[base.chain].policy == "DROP":
        policies[chain] = "DROP"
        if wide == IPV6 and chain == "OUTPUT":
            rules = icmpv6_output() + rules
    if not rules and not policies:
        raise Refused(f"{chain}: the {narrow} nft rules are already in {wide}")
    return Change(f.id, wide, "egress", rules, place=TOP, chain=chain, policies=policies,
                  decided_by=list(f.evidence), expected=carried(ctx, narrow, wide), note=f"{wide} {hook} gets the twin of {narrow}'s nft rules of "
                  f"{base.table} {base.chain}, in twinwall's own table")


STRATEGY = Egress()
