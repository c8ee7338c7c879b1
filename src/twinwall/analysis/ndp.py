"""IPv6 neighbour discovery, and the other ICMPv6 messages a host must not drop (RFC 4890).

An IPv6 client on the link finds the host's link-layer address with a neighbour solicitation
(ICMPv6 135) and the host answers with a neighbour advertisement (136); the host resolves the
client the same way for its replies, and probes it again later (neighbour unreachability
detection). A firewall that drops those messages on input or on output does not protect a
service: no IPv6 connection over that interface gets as far as the service's own rules. So an
IPv6 service is reachable from a client over an interface only where all four messages pass:

* in:  NS and NA from the client's address, arriving on the interface, to the host's addresses
  (an NS goes to the host's solicited-node multicast group ff02::1:ffXX:XXXX);
* out: NS and NA from the host's addresses to the client (or its solicited-node group), leaving
  by the interface.

Only neighbours on the link take part: a client on one of the host's own prefixes resolves the
host itself, one farther away comes through a router the host reaches by its link-local address.
So NDP dropped for link-local neighbours cuts the interface off for every client; dropped for an
address of an on-link prefix, it cuts off that client; dropped for other addresses (a rule against
bogon destinations), it cuts off nobody.

Kernel facts modelled (net/netfilter/nf_conntrack_proto_icmpv6.c, ``noct_valid_new``):
neighbour discovery and MLD are never tracked, so these packets are UNTRACKED - ``ct state
new``/``--ctstate NEW``/``INVALID`` rules never match them, ``--ctstate UNTRACKED`` does, and nat
chains never see them. RFC 4861 makes every node drop NDP whose hop limit is not 255, so the
packets carry 255 (``-m hl --hl-eq 255``, ``ip6 hoplimit 255`` match them).

The questions are asked of the audit's evaluator (four small walks); a region denied by a match
twinwall cannot decide is not counted as dropped (the audit reports the wider outcome) but its
match is named. :func:`neighbour_discovery` answers them once per host; :meth:`NeighbourReach.cut`
cuts a service's accepted regions down to the (client, interface) pairs whose NDP passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from twinwall.analysis.context import FamilyContext
from twinwall.analysis.evaluator import V_ACCEPT, Outcome
from twinwall.netfilter.packetset import (
    CT_RELATED,
    CT_UNTRACKED,
    DST,
    IIF,
    OIF,
    SRC,
    Box,
    box_and,
    box_sub,
    iv_and,
    iv_meets,
    iv_normalize,
    iv_or,
    make_box,
    prefix_interval,
    prefix_set,
    remote_sources,
)
from twinwall.model import IPV6, HostSnapshot
from twinwall.netfilter.ruleset import Decision

ICMPV6 = ((58, 58),)
NS, NA = 135, 136
NDP_HOPLIMIT = ((255, 255),)
LINK_LOCAL = prefix_set(("fe80::/10",), IPV6)
SOLICITED_NODE = prefix_set(("ff02::1:ff00:0/104",), IPV6)
ALL_NODES = prefix_set(("ff02::1/128",), IPV6)
IN_PATH = ("prerouting", "input")
OUT_PATH = ("output", "postrouting")
MAX_EVIDENCE = 8


def icmp_type(t: int, codes: Optional[Tuple[int, int]] = None) -> tuple:
    lo, hi = codes or (0, 255)
    return (((t << 8) | lo, (t << 8) | hi),)


@dataclass
class _Message:
    """One NDP message in one direction, and what the firewall does with it."""

    name: str  # "neighbour solicitations in"
    outgoing: bool
    denied: List[Outcome] = field(default_factory=list)
    uncertain: List[str] = field(default_factory=list)


@dataclass
class NeighbourReach:
    """Where IPv6 neighbour discovery passes: (client address, interface) regions."""

    ok: List[Box]  # boxes whose SRC (the client) and IIF (the interface) dimensions count
    blocked: List[Tuple[tuple, int]]  # (clients, interface mask) that some dropped message cuts off
    messages: List[_Message]
    universe: object
    remote_ifaces: int
    narrowed: List[str] = field(default_factory=list)  # services a verdict narrowed

    @property
    def restricts(self) -> bool:
        return bool(self.blocked)

    def decisions(self) -> List[Decision]:
        seen: Dict[Decision, None] = {}
        for m in self.messages:
            for o in m.denied:
                for d in o.decided_by:
                    seen.setdefault(d, None)
        return list(seen)

    def uncertain(self) -> List[str]:
        return sorted({u for m in self.messages for u in m.uncertain})

    def cut(self, box: Box) -> List[Box]:
        """The part of an accepted region (a client's connection) whose NDP passes."""
        out = []
        for ok in self.ok:
            b = box_and(box, ((SRC, ok[SRC]), (IIF, ok[IIF])))
            if b is not None:
                out.append(b)
        return out

    def reason(self) -> str:
        """"neighbour solicitations in, neighbour advertisements out are dropped on eth0"."""
        dropped = [m.name for m in self.messages if m.denied]
        ifaces = 0
        for _, mask in self.blocked:
            ifaces |= mask
        labels = ",".join(self.universe.label_list(ifaces & self.remote_ifaces)) or "every interface"
        return f"IPv6 neighbour discovery is dropped ({', '.join(dropped)}) on {labels}"

    def breaks_the_link(self) -> bool:
        """Whether NDP with link-local neighbours (routers, every host's first resort) is
        dropped on some interface: IPv6 on that link is broken whatever the services."""
        return any(iv_meets(src, LINK_LOCAL) for src, _ in self.blocked)


def on_link_prefixes(snapshot: HostSnapshot) -> tuple:
    """The host's own global IPv6 prefixes: the clients that are its neighbours themselves."""
    return iv_normalize(
        prefix_interval(f"{a.address.split('%')[0]}/{a.prefixlen}", IPV6)
        for a in snapshot.addresses
        if a.family == IPV6 and a.scope == "global"
    )


def neighbour_discovery(ctx: FamilyContext, on_link: tuple = ()) -> Optional[NeighbourReach]:
    """The NDP question for one family's context (None for IPv4, or with nothing to ask).
    ``on_link``: the host's own prefixes (:func:`on_link_prefixes`)."""
    if ctx.family != IPV6 or not ctx.rules_known or not ctx.remote_targets or not ctx.remote_ifaces:
        return None
    clients = remote_sources(IPV6)
    host = ctx.remote_targets
    every = ctx.universe.all_mask
    ev = ctx.evaluator()
    messages = []
    blocked: List[Tuple[tuple, int]] = []
    for name, t, outgoing in (
        ("neighbour solicitations in", NS, False),
        ("neighbour advertisements in", NA, False),
        ("neighbour solicitations out", NS, True),
        ("neighbour advertisements out", NA, True),
    ):
        if outgoing:
            dst = iv_or(clients, SOLICITED_NODE) if t == NS else clients
            box = make_box(host, dst, every, ctx.remote_ifaces, proto=ICMPV6, icmp=icmp_type(t, (0, 0)),
                           state=CT_UNTRACKED, hoplimit=NDP_HOPLIMIT)
            walked = ev.hook_path(OUT_PATH, [box])
        else:
            dst = iv_or(host, SOLICITED_NODE) if t == NS else iv_or(host, ALL_NODES)
            box = make_box(clients, dst, ctx.remote_ifaces, every, proto=ICMPV6, icmp=icmp_type(t, (0, 0)),
                           state=CT_UNTRACKED, hoplimit=NDP_HOPLIMIT)
            walked = ev.hook_path(IN_PATH, [box])
        msg = _Message(name, outgoing)
        for o in walked:
            if o.verdict == V_ACCEPT:
                msg.uncertain.extend(o.uncertain)
                continue
            if o.uncertain:
                msg.uncertain.extend(o.uncertain)  # may not match: the wider outcome stands
                continue
            cut, mask = _clients_of(o.origin, outgoing, clients)
            # link-local neighbours lost: the router too, so every client on that interface
            cut = clients if iv_meets(cut, LINK_LOCAL) else iv_and(cut, on_link)
            if cut:
                msg.denied.append(o)
                blocked.append((cut, mask))
        messages.append(msg)
    ok = [make_box(clients, host, ctx.remote_ifaces, every)]
    for src, mask in _grouped(blocked):
        ok = [piece for b in ok for piece in box_sub(b, ((SRC, src), (IIF, mask)))]
    return NeighbourReach(ok, blocked, messages, ctx.universe, ctx.remote_ifaces)


def _clients_of(origin: Box, outgoing: bool, clients: tuple) -> Tuple[tuple, int]:
    """(client addresses, interfaces) a dropped region cuts off. Outgoing, the client is the
    destination: a solicitation to the solicited-node groups reaches out to every client."""
    if not outgoing:
        return origin[SRC], origin[IIF]
    dst = origin[DST]
    cut = clients if iv_meets(dst, SOLICITED_NODE) else iv_and(dst, clients)
    return cut, origin[OIF]


def _grouped(blocked: Sequence[Tuple[tuple, int]]) -> List[Tuple[tuple, int]]:
    """Blocked regions with the same interfaces joined (a blocklist drops NDP from many
    sources: one subtraction instead of thousands)."""
    by_mask: Dict[int, List] = {}
    for src, mask in blocked:
        if src:
            by_mask.setdefault(mask, []).extend(src)
    return [(iv_normalize(v), m) for m, v in by_mask.items()]


# ---------------------------------------------------------------------------------------------
# RFC 4890 section 4.4.1: ICMPv6 a host must not drop (besides NDP itself)


@dataclass(frozen=True)
class Essential:
    name: str
    icmp: tuple
    state: int
    sources: tuple
    hoplimit: tuple


# Errors about the host's own connections are RELATED to them in conntrack; router
# advertisements and MLD queries are untracked like NDP (and carry hop limit 255 / 1). Echo
# (also listed) is left out: dropping ping is a policy choice, not a breakage.
ESSENTIALS = (
    Essential("destination unreachable (1)", icmp_type(1), CT_RELATED, (), ((1, 255),)),
    Essential("packet too big (2)", icmp_type(2), CT_RELATED, (), ((1, 255),)),
    Essential("time exceeded (3, codes 0-1)", icmp_type(3, (0, 1)), CT_RELATED, (), ((1, 255),)),
    Essential("parameter problem (4, codes 1-2)", icmp_type(4, (1, 2)), CT_RELATED, (), ((1, 255),)),
    Essential("router advertisement (134)", icmp_type(134, (0, 0)), CT_UNTRACKED, LINK_LOCAL, NDP_HOPLIMIT),
    Essential("multicast listener query (130)", icmp_type(130, (0, 0)), CT_UNTRACKED, LINK_LOCAL, ((1, 1),)),
)


def essential_icmpv6_dropped(ctx: FamilyContext) -> List[Tuple[str, List[Decision]]]:
    """[(message, the rules that drop it)] for the RFC 4890 essentials some remote neighbour's
    copy of is dropped on input (None of IPv4)."""
    if ctx.family != IPV6 or not ctx.rules_known or not ctx.remote_targets or not ctx.remote_ifaces:
        return []
    ev = ctx.evaluator()
    found = []
    for e in ESSENTIALS:
        src = e.sources or remote_sources(IPV6)
        dst = ctx.remote_targets if e.state == CT_RELATED else iv_or(ctx.remote_targets, ALL_NODES)
        box = make_box(src, dst, ctx.remote_ifaces, ctx.universe.all_mask, proto=ICMPV6, icmp=e.icmp,
                       state=e.state, hoplimit=e.hoplimit)
        denied = [o for o in ev.hook_path(IN_PATH, [box]) if o.verdict != V_ACCEPT and not o.uncertain]
        if denied:
            seen: Dict[Decision, None] = {}
            for o in denied:
                for d in o.decided_by:
                    seen.setdefault(d, None)
            found.append((e.name, list(seen)))
    return found

