"""Plain iptables (iptables-nft or legacy): the family's whole iptables-restore text, as
iptables-save printed it, with the new rules inserted where they decide correctly.

Top-of-chain rules go first (loopback, spoofed loopback, ICMPv6, established, in that order);
a rule that must precede the one that decided a finding goes just before it; bottom rules go at
the end of the chain, where only packets no rule took arrive - never after a DROP that would
shadow them (ComplianceAsCode's failure). Only the filter table is edited; every other table is
given back unchanged, so one ``iptables-restore`` per family replaces the ruleset atomically.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

from twinwall.apply.candidate import Candidate
from twinwall.fix.iptables_text import BUILTIN, SaveText
from twinwall.fix.model import BEFORE, TOP, Change, Refused, RuleSpec, TOOL
from twinwall.fix.owners import variant
from twinwall.fix.shadow import dead_rules
from twinwall.fix.translate import join_args
from twinwall.model import FAMILIES, HostSnapshot


def rule_line(rule: RuleSpec, chain: Optional[str] = None) -> str:
    chain = chain or rule.chain
    if rule.raw:
        return f"-A {chain} " + join_args(rule.raw)
    return " ".join(["-A", chain] + rule.iptables_args())


def family_text(snapshot: HostSnapshot, family: str) -> Optional[str]:
    texts = [t for t in snapshot.rulesets if t.format == "iptables-save" and t.family == family]
    if len(texts) > 1:
        raise Refused(f"{family}: legacy and nf_tables rules are both loaded: move them to one backend first")
    return texts[0].text if texts else None


class _Slot:
    """A rule line in a chain being edited; ``change`` is the index of the change that added it."""

    __slots__ = ("line", "change")

    def __init__(self, line: str, change: Optional[int] = None):
        self.line, self.change = line, change


def edit_family(text: Optional[str], changes: Sequence[Change]) -> Tuple[str, Dict[int, List[Tuple[int, str]]]]:
    """The family's new restore text, and per change (by index) the commands that make it."""
    st = SaveText.parse(text or "")
    table = st.table("filter")
    commands: Dict[int, List[Tuple[int, str]]] = {i: [] for i in range(len(changes))}
    if any(c.replace_table for c in changes):
        table.policies = {c: "ACCEPT" for c in BUILTIN["filter"]}
        table.rules = {c: [] for c in BUILTIN["filter"]}
    chains: Dict[str, List[_Slot]] = {c: [_Slot(l) for l in lines] for c, lines in table.rules.items()}
    tops: Dict[str, List[Tuple[int, int, str]]] = {}
    bottoms: Dict[str, List[Tuple[int, int, str]]] = {}
    befores: Dict[Tuple[str, int], List[Tuple[int, str]]] = {}
    for i, ch in enumerate(changes):
        for rule in ch.rules:
            chain = rule.chain or ch.chain
            table.chain(chain)
            chains.setdefault(chain, [])
            line = rule_line(rule, chain)
            if ch.place == BEFORE and ch.anchor and chain == ch.chain:
                if ch.anchor > len(chains[chain]):
                    raise Refused(f"{ch.chain} has no rule {ch.anchor}")
                befores.setdefault((chain, ch.anchor), []).append((i, line))
            elif ch.place == TOP and rule.rank < 5:
                tops.setdefault(chain, []).append((rule.rank, i, line))
            else:
                bottoms.setdefault(chain, []).append((rule.rank, i, line))
        for chain, policy in ch.policies.items():
            table.chain(chain)
            table.policies[chain] = policy
    for chain, slots in chains.items():
        new: List[_Slot] = []
        seen: Set[str] = set()

        def add(i: int, line: str, seen: set = seen, new: List[_Slot] = new) -> None:
            if line not in seen:
                seen.add(line)
                new.append(_Slot(line, i))

        for _, i, line in sorted(tops.get(chain, []), key=lambda t: t[0]):
            add(i, line)
        for n, slot in enumerate(slots, 1):
            for i, line in befores.get((chain, n), []):
                add(i, line)
            new.append(slot)
        for _, i, line in sorted(bottoms.get(chain, []), key=lambda t: t[0]):
            add(i, line)
        new = _live(new, changes)
        table.rules[chain] = [s.line for s in new]
        for pos, s in enumerate(new, 1):
            if s.change is not None:
                commands[s.change].append((pos, s.line))
    return st.render(), commands


def _live(slots: List[_Slot], changes: Sequence[Change]) -> List[_Slot]:
    """The chain without the plan's dead rules (an earlier rule decides all they match): left
    out, and the change that asked for one says so."""
    dead = dead_rules([s.line for s in slots], [s.change is not None for s in slots])
    out = []
    for s, by in zip(slots, dead):
        if by is None or s.change is None:
            out.append(s)
            continue
        changes[s.change].left_out.append(f"{s.line} (dead: {slots[by].line} before it decides all it matches)")
    return out


class IptablesOwner:
    name = "iptables"

    def render(self, snapshot: HostSnapshot, changes: Sequence[Change]) -> Candidate:
        texts: Dict[str, str] = {}
        for family in FAMILIES:
            mine = [c for c in changes if c.family == family]
            if not mine:
                continue
            for c in mine:
                c.left_out = []
            text, placed = edit_family(family_text(snapshot, family), mine)
            texts[family] = text
            tool = TOOL[family]
            for i, ch in enumerate(mine):
                lines = [line for _, line in placed[i]]
                cmds = []
                if ch.replace_table:
                    cmds += [f"{tool} -F", f"{tool} -X"]
                cmds += [f"{tool} -P {c} {p}" for c, p in ch.policies.items()]
                cmds += [f"{tool} -I {line.split()[1]} {pos} {line.split(' ', 2)[2]}" for pos, line in placed[i]]
                ch.owner, ch.commands, ch.rules_text = self.name, cmds, "\n".join(lines)
        return Candidate("iptables", variant=variant(snapshot, list(texts)), ipv4=texts.get("ipv4"),
                         ipv6=texts.get("ipv6"), summary=summary(changes))


def summary(changes: Sequence[Change]) -> str:
    return "twinwall fix: " + ", ".join(dict.fromkeys(f"{c.strategy} {c.finding} {c.family}" for c in changes))


OWNER = IptablesOwner()
