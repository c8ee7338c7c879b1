"""A connection's further packets: what the verdict on its first packet leaves out.

A new connection is more than its first packet. A TCP client's SYN must be accepted, then the
host's SYN-ACK must leave (OUTPUT, POSTROUTING) and the client's ACK and the rest of its packets
must arrive (PREROUTING, INPUT); a UDP exchange needs the host's reply out. A ruleset that accepts
only ``--ctstate NEW`` under a DROP policy, with no ESTABLISHED accept, lets every SYN in and
every ACK die: no connection opens, whatever the first packet's verdict says. So a service is
reachable from a client only where all of its connection's legs pass.

Kernel facts modelled:

* Every packet after the first is ESTABLISHED, in both directions (the SYN-ACK already is:
  conntrack's reply direction).
* nat chains see only the first packet; conntrack rewrites the later ones as the nat chains
  rewrote the first (``Evaluator.local_input(later=True)`` walks them that way).
* The reply leaves from the socket's own address and port (a DNAT is undone only at the nat
  hook of POSTROUTING) to the client's address and port; twinwall assumes it leaves by the
  interface the client's packets came in on (symmetric routing) with the default hop limit 64.
* A UDP exchange has no later client packet that matters: only its reply leg is asked.
* Replies to IPv6 addresses no client has are not asked about: IPv4-compatible and IPv4-mapped
  addresses (never on the wire: tcp_v6_conn_request drops a v4-mapped SYN) and 6to4 addresses
  of IPv4 space no 6to4 relay serves (RFC 3964 5.3.1) - firewalld's default OUTPUT rejects them,
  which cuts off no real client.

Two walks per family answer it for every socket (:meth:`ConnectionLegs.of`): the client's later
TCP packets in, and every reply out. :meth:`ConnectionLegs.cut` narrows a socket's accepted
first-packet region to the clients whose later packets pass. A region denied only behind a match
twinwall cannot decide is not cut (the audit reports the wider outcome) but the match is named.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from twinwall.analysis.context import FamilyContext
from twinwall.analysis.evaluator import V_DROP, V_REJECT, Outcome, after_nat, narrow_origin
from twinwall.netfilter.packetset import (
    CT_ESTABLISHED,
    DPORT,
    DST,
    GID,
    ID_ALL,
    IIF,
    NDIMS,
    OIF,
    PROTO,
    SPORT,
    SRC,
    STATE,
    UID,
    Box,
    box_and,
    box_meets,
    box_sub,
    iv_meets,
    iv_sub,
    make_box,
    prefix_set,
    remote_sources,
)
from twinwall.analysis.verdicts import decisions
from twinwall.model import IPV6
from twinwall.netfilter.ruleset import Decision

TCP = ((6, 6),)
NO_CLIENT_V6 = ("::/96", "::ffff:0:0/96", "2002::/24", "2002:a00::/24", "2002:7f00::/24", "2002:a9fe::/32",
                "2002:ac10::/28", "2002:c0a8::/32", "2002:e000::/19")
REPLY_HOPLIMIT = ((64, 64),)  # the kernel's default TTL / hop limit for what the host sends
OUT_PATH = ("output", "postrouting")
_DENIED = (V_DROP, V_REJECT)
# a later packet's denial in the first packet's terms: every dimension but the state
_ORIGIN_DIMS = tuple(d for d in range(NDIMS) if d != STATE)
# a reply's dimensions and the first packet's they stand for
_REPLY_DIMS = ((SRC, DST), (DST, SRC), (SPORT, DPORT), (DPORT, SPORT), (PROTO, PROTO), (OIF, IIF))


class ConnectionLegs:
    """Where a connection's later packets are dropped: the client's ones in (``inbound``, TCP
    only), the host's replies out (``reply``), each as first-packet constraints."""

    __slots__ = ("inbound", "reply", "uncertain_in", "uncertain_reply")

    def __init__(self, inbound: List[Tuple[tuple, Outcome]], reply: List[Tuple[tuple, Outcome]],
                 uncertain_in: List[Tuple[tuple, Outcome]], uncertain_reply: List[Tuple[tuple, Outcome]]):
        self.inbound = inbound  # (constraint on the first packet's origin, the later outcome)
        self.reply = reply  # (constraint on the first packet after NAT, the reply's outcome)
        self.uncertain_in = uncertain_in
        self.uncertain_reply = uncertain_reply

    def reason(self, cutters: Sequence[Outcome]) -> str:
        """What ``cut``'s cutters drop, in a few words for a verdict's reason."""
        inbound = {id(o) for _, o in self.inbound}
        legs = []
        if any(id(o) in inbound for o in cutters):
            legs.append("the client's later (ESTABLISHED) packets in")
        if any(id(o) not in inbound for o in cutters):
            legs.append("the host's replies out")
        return f"the connection's further packets are dropped ({' and '.join(legs) or 'later packets'})"

    @property
    def restricts(self) -> bool:
        return bool(self.inbound or self.reply or self.uncertain_in or self.uncertain_reply)

    @classmethod
    def of(cls, ctx: FamilyContext) -> Optional["ConnectionLegs"]:
        """The two walks for one family's context (None with nothing to ask)."""
        if not ctx.rules_known or not ctx.remote_targets or not ctx.remote_ifaces:
            return None
        ev = ctx.evaluator()
        clients = remote_sources(ctx.family)
        every = ctx.universe.all_mask
        box = make_box(clients, ctx.remote_targets, ctx.remote_ifaces, every, proto=TCP, state=CT_ESTABLISHED)
        # Without the nat chains first (cheap: a big host's nat table is its biggest): where that
        # walk denies nothing, no rewrite can lead a later packet to a denial either (a rewrite
        # to the host keeps it inside the box: REDIRECT, DNAT to one of its remote addresses)
        later = ev.local_input([box], nat=False)
        if any(o.verdict in _DENIED for o in later):
            later = ev.local_input([box], later=True)
        answered = iv_sub(clients, prefix_set(NO_CLIENT_V6, IPV6)) if ctx.family == IPV6 else clients
        replies = ev.hook_path(
            OUT_PATH,
            [make_box(ctx.local, answered, every, ctx.remote_ifaces, state=CT_ESTABLISHED, hoplimit=REPLY_HOPLIMIT)],
            nat=False)
        inbound: List[Tuple[tuple, Outcome]] = []
        unsure_in: List[Tuple[tuple, Outcome]] = []
        reply: List[Tuple[tuple, Outcome]] = []
        unsure_reply: List[Tuple[tuple, Outcome]] = []
        for o in later:
            if o.verdict in _DENIED:
                c = tuple((d, o.origin[d]) for d in _ORIGIN_DIMS)
                (unsure_in if o.uncertain else inbound).append((c, o))
        for o in replies:
            if o.verdict in _DENIED:
                c = tuple((first, o.box[dim]) for dim, first in _REPLY_DIMS)
                # a reply denied for some socket owners only: whose the socket is is not known
                partial = o.box[UID] != ID_ALL or o.box[GID] != ID_ALL
                (unsure_reply if o.uncertain or partial else reply).append((c, o))
        if not (inbound or reply or unsure_in or unsure_reply):
            return None
        return cls(inbound, reply, unsure_in, unsure_reply)

    def port_constraints(self) -> List[Optional[tuple]]:
        """The first packet's destination ports each denial (of every kind) constrains, None
        where it constrains none: :meth:`cut` of regions that differ in that port only, each
        one port, meets the same denials wherever the same of these hold the port (the audit
        shares one verdict between such sockets)."""
        out: List[Optional[tuple]] = []
        for denials in (self.inbound, self.uncertain_in, self.reply, self.uncertain_reply):
            for c, _ in denials:
                out.append(next((v for d, v in c if d == DPORT), None))
        return out

    def cut(self, box: Box, outcome: Outcome) -> Tuple[List[Box], List[Outcome], List[str]]:
        """The parts of an accepted first-packet region ``box`` (part of ``outcome.box``) whose
        later packets pass; the later outcomes that cut the rest; the undecidable matches met."""
        cutters: List[Outcome] = []
        unsure: List[str] = []
        pieces = [box]
        if self.inbound or self.uncertain_in:
            if iv_meets(box[PROTO], TCP):
                rewritten = outcome.origin is not outcome.box
                first = narrow_origin(outcome.origin, outcome.box, box) if rewritten else box
                for c, o in self.uncertain_in:
                    if box_meets(first, c):
                        unsure.extend(o.uncertain)
                origins = _subtract([first], self.inbound, cutters)
                if rewritten:
                    pieces = [after_nat(outcome.origin, outcome.box, box, p) for p in origins]
                else:
                    pieces = origins
        if pieces and (self.reply or self.uncertain_reply):
            for c, o in self.uncertain_reply:
                if any(box_meets(p, c) for p in pieces):
                    unsure.extend(o.uncertain or (_owner_note(o),))
            pieces = _subtract(pieces, self.reply, cutters)
        return pieces, cutters, unsure


def _subtract(pieces: List[Box], denials: Sequence[Tuple[tuple, Outcome]], cutters: List[Outcome]) -> List[Box]:
    """``pieces`` less every denial's constraint; the denials that took something are added to
    ``cutters``."""
    for c, o in denials:
        if not pieces:
            break
        nxt: List[Box] = []
        hit = False
        for p in pieces:
            if box_and(p, c) is None:
                nxt.append(p)
                continue
            hit = True
            nxt.extend(box_sub(p, c))
        if hit:
            cutters.append(o)
        pieces = nxt
    return pieces


def _owner_note(o: Outcome) -> str:
    last = o.decided_by[-1] if o.decided_by else None
    where = f" ({last.table} {last.chain} #{last.rule_number})" if last and last.rule_number else ""
    return f"owner match on the replies{where}"


def legs_decisions(cutters: Sequence[Outcome], limit: int) -> List[Decision]:
    """The rules that dropped the further packets (each once, at most ``limit``)."""
    return decisions(cutters)[:limit]
