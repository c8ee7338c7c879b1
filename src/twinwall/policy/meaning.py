"""What a policy says about every packet of one family at one hook: its rules as packet-set
constraints, read first match wins, straight from the lowered policy (never from a generator's
output). ``policy.check`` holds the compiled, parsed rules against this with the evaluator.

This is the specification, not a netfilter model: no chains, tables or hooks, just an ordered
list of (constraint, verdict). The packet-set algebra is ``analysis.packetset``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import (
    CT_ALL,
    CT_NAMES,
    DPORT,
    DST,
    HOPLIMIT,
    ICMP,
    IIF,
    OIF,
    PROTO,
    SPORT,
    SRC,
    STATE,
    UID,
    Box,
    address_space,
    box_meets,
    iv_normalize,
    iv_sub,
    make_box,
    merge_boxes,
    prefix_set,
    split,
)
from twinwall.errors import InputError
from twinwall.policy.lower import FamilyRule, Lowered


@dataclass
class Entry:
    constraint: Tuple  # ((dim, value), ...)
    verdict: str  # accept | drop | reject
    fr: FamilyRule

    @property
    def alternatives(self) -> Tuple:  # (what analysis.chain_index reads of a rule)
        return (self.constraint,)


@dataclass
class Region:
    box: Box
    verdict: str
    fr: Optional[FamilyRule]  # None: the chain's default


def uid_interval(uid: str) -> Tuple:
    lo, _, hi = uid.partition("-")
    if not lo.isdigit():
        import pwd

        try:
            n = pwd.getpwnam(uid).pw_uid
        except KeyError:
            raise InputError(f"user {uid!r} does not exist on this machine") from None
        return ((n, n),)
    return ((int(lo), int(hi or lo)),)


def interface_names(lowered: Lowered) -> List[str]:
    names: set = set()
    for fam in lowered.rules.values():
        for rules in fam.values():
            for fr in rules:
                names.update(fr.iif + fr.oif + fr.not_iif + fr.not_oif)
    return sorted(names)


def constraint(fr: FamilyRule, family: str, universe: InterfaceUniverse) -> Optional[Tuple]:
    """The packets a family rule matches, as one constraint (None: no packet)."""
    c: Dict[int, object] = {}
    space = address_space(family)
    for dim, pos, neg in ((SRC, fr.sources, fr.not_sources), (DST, fr.destinations, fr.not_destinations)):
        value = prefix_set(pos, family) if pos else space
        if neg:
            value = iv_sub(value, prefix_set(neg, family))
        if value != space:
            c[dim] = value
    for dim, pos, neg in ((IIF, fr.iif, fr.not_iif), (OIF, fr.oif, fr.not_oif)):
        mask = universe.of_names(pos) if pos else universe.all_mask
        if neg:
            mask &= ~universe.of_names(neg)
        if mask != universe.all_mask:
            c[dim] = mask
    if fr.proto is not None:
        c[PROTO] = ((fr.proto, fr.proto),)
    if fr.dports:
        c[DPORT] = iv_normalize(fr.dports)
    if fr.sports:
        c[SPORT] = iv_normalize(fr.sports)
    if fr.icmp:
        c[ICMP] = iv_normalize(((t << 8 | code, t << 8 | code) if code is not None else (t << 8, t << 8 | 0xFF))
                               for _, t, code in fr.icmp)
    if fr.hop_limit is not None:
        c[HOPLIMIT] = ((fr.hop_limit, fr.hop_limit),)
    if fr.uid is not None:
        c[UID] = uid_interval(fr.uid)
    if fr.states:
        mask = 0
        for s in fr.states:
            mask |= CT_NAMES[s]
        c[STATE] = mask
    if not all(c.values()):
        return None
    return tuple(sorted(c.items()))


def whole_box(family: str, universe: InterfaceUniverse, state: int = CT_ALL) -> Box:
    space = address_space(family)
    return make_box(space, space, universe.all_mask, universe.all_mask, state=state)


def entries(lowered: Lowered, family: str, hook: str, universe: InterfaceUniverse) -> List[Entry]:
    out = []
    for fr in lowered.rules[family][hook]:
        if fr.action == "log":
            continue  # logging decides nothing
        c = constraint(fr, family, universe)
        if c is not None:
            out.append(Entry(c, fr.action, fr))
    return out


def meaning(lowered: Lowered, family: str, hook: str, universe: InterfaceUniverse,
            start: Sequence[Box]) -> List[Region]:
    """The policy's verdict for every packet of ``start``: disjoint regions, each with the rule
    of the file (or baseline entry) that decides it, or the hook's default."""
    todo: List[Box] = list(start)
    out: List[Region] = []
    for e in entries(lowered, family, hook, universe):
        nxt: List[Box] = []
        for box in todo:
            matched, rest = split(box, (e.constraint,))
            out.extend(Region(m, e.verdict, e.fr) for m in matched)
            nxt.extend(rest)
        # the rules of a long file each cut the packets left over: merging the pieces that
        # differ in one dimension only keeps them few
        todo = merge_boxes(nxt) if len(nxt) > 32 else nxt
        if not todo:
            break
    default = lowered.default[family][hook]
    # a reject default is a final rule (the chain's policy cannot reject): what reaches here drops
    out.extend(Region(b, "accept" if default == "accept" else "drop", None) for b in todo)
    return out


class Meaning:
    """The policy of one family and hook, asked about some packets at a time: a long file's
    entries are indexed (``analysis.chain_index``) so that a question meets only the entries
    its packets can match."""

    def __init__(self, lowered: Lowered, family: str, hook: str, universe: InterfaceUniverse):
        default = lowered.default[family][hook]
        self._set(entries(lowered, family, hook, universe), "accept" if default == "accept" else "drop")

    def _set(self, es: List[Entry], default: str) -> None:
        from twinwall.analysis.chain_index import ChainIndex

        self.entries = es
        self.index = ChainIndex.build(self.entries)
        self.default = default

    def within(self, box: Box) -> "Meaning":
        """The same policy asked only about packets of ``box``: the entries whose interface
        matches meet it (the others can match none of its packets)."""
        iif, oif = box[IIF], box[OIF]
        kept = [e for e in self.entries
                if all(value & (iif if dim == IIF else oif) for dim, value in e.constraint if dim == IIF or dim == OIF)]
        out = Meaning.__new__(Meaning)
        out._set(kept, self.default)
        return out

    def regions(self, boxes: Sequence[Box]) -> List[Region]:
        picked = self.index.candidates(boxes) if self.index else None
        es = self.entries if picked is None else [self.entries[i] for i in picked]
        todo: List[Box] = list(boxes)
        out: List[Region] = []
        for e in es:
            nxt: List[Box] = []
            for box in todo:
                matched, rest = split(box, (e.constraint,))
                out.extend(Region(m, e.verdict, e.fr) for m in matched)
                nxt.extend(rest)
            todo = nxt
            if not todo:
                break
        out.extend(Region(b, self.default, None) for b in todo)
        return out

    def disagreeing(self, boxes: Sequence[Box], verdict: str, part: int = 24) -> List[Region]:
        """The packets of ``boxes`` the policy gives another verdict than ``verdict`` (empty:
        it gives them all ``verdict``), first match wins as in ``regions``. The packets no entry
        has matched yet are merged every ``part`` entries: asked of the many pieces the
        evaluator leaves of a long chain, they would otherwise multiply with every entry."""
        picked = self.index.candidates(boxes) if self.index else None
        es = self.entries if picked is None else [self.entries[i] for i in picked]
        todo: List[Box] = merge_boxes(boxes) if len(boxes) > 1 else list(boxes)
        out: List[Region] = []
        for n, e in enumerate(es, 1):
            nxt: List[Box] = []
            for box in todo:
                if not box_meets(box, e.constraint):
                    nxt.append(box)
                    continue
                matched, rest = split(box, (e.constraint,))
                if e.verdict != verdict:
                    out.extend(Region(m, e.verdict, e.fr) for m in matched)
                nxt.extend(rest)
            todo = nxt
            if not todo:
                break
            if n % part == 0 and len(todo) > 1:
                todo = merge_boxes(todo)
        if self.default != verdict:
            out.extend(Region(b, self.default, None) for b in todo)
        return out
