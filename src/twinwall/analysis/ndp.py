"""IPv6 neighbour discovery, and the other ICMPv6 messages a host must not drop (RFC 4890).

An IPv6 client on the link finds the host's link-layer address with a neighbour solicitation
(ICMPv6 135) and the host answers with a neighbour advertisement (136); the host resolves the
client the same way for its replies, and probes it again later (neighbour unreachability
detection). What a new connection from a client needs, with the neighbour caches cold, is the
client's resolution of the host address it connects to:

* in:  the client's NS, from its own address (an on-link client) or from its router's link-local
  address (any other client), to the solicited-node group of that host address
  (ff02::1:ffXX:XXXX), arriving on the interface;
* out: the host's NA, from that host address to the NS's source, leaving by the interface.

The host learns the client's link-layer address from the NS itself, so it needs no NS of its own
before it answers. So the cut is exact per (client, host address, interface): NDP dropped for one
of the host's addresses leaves the others reachable, and NS/NA dropped only in the host's own
resolutions (NS out, NA in: its neighbour unreachability probes, connections it starts) cut off
no service, though they are reported (TW-ICMPV6-NDP-BLOCKED): IPv6 over that link is broken.
A client on one of the host's own prefixes is its own neighbour; one farther away comes through a
router, which speaks NDP from its link-local address: NDP dropped for link-local neighbours cuts
every off-link client off on that interface.

Kernel facts modelled (net/netfilter/nf_conntrack_proto_icmpv6.c, ``noct_valid_new``):
neighbour discovery and MLD are never tracked, so these packets are UNTRACKED - ``ct state
new``/``--ctstate NEW``/``INVALID`` rules never match them, ``--ctstate UNTRACKED`` does, and nat
chains never see them. RFC 4861 makes every node drop NDP whose hop limit is not 255, so the
packets carry 255 (``-m hl --hl-eq 255``, ``ip6 hoplimit 255`` match them).

The questions are asked of the audit's evaluator (four small walks); a region denied by a match
twinwall cannot decide is not counted as dropped (the audit reports the wider outcome) but its
match is named. :func:`neighbour_discovery` answers them once per host; :meth:`NeighbourReach.cut`
cuts a service's accepted regions down to the (client, host address, interface) triples whose
NDP passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from twinwall.analysis.context import FamilyContext
from twinwall.analysis.evaluator import V_ACCEPT, Outcome, after_nat, narrow_origin
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
    iv_sub,
    make_box,
    prefix_interval,
    prefix_set,
    remote_sources,
)
from twinwall.model import IPV6, HostSnapshot
from twinwall.netfilter.interfaces import InterfaceUniverse
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
    """Where IPv6 neighbour discovery passes: (client address, host address, interface) regions."""

    ok: List[Box]  # boxes whose SRC (client), DST (host address) and IIF dimensions count
    blocked: List[Tuple[tuple, int]]  # (clients, interface mask) that some dropped message cuts off
    messages: List[_Message]
    universe: InterfaceUniverse
    remote_ifaces: int
    narrowed: List[str] = field(default_factory=list)  # services a verdict narrowed
    # (clients, host addresses, interfaces) a new connection's NS in / NA out cuts off
    cuts: List[Tuple[tuple, tuple, int]] = field(default_factory=list)

    @property
    def restricts(self) -> bool:
        """Some NDP is dropped (TW-ICMPV6-NDP-BLOCKED may be due)."""
        return bool(self.blocked)

    @property
    def cuts_connections(self) -> bool:
        """Some client's new connections to some host address are cut off."""
        return bool(self.cuts)

    def decisions(self, fresh: bool = False) -> List[Decision]:
        seen: Dict[Decision, None] = {}
        for m in self.messages:
            if fresh and m.name not in FRESH:
                continue
            for o in m.denied:
                for d in o.decided_by:
                    seen.setdefault(d, None)
        return list(seen)

    def uncertain(self) -> List[str]:
        return sorted({u for m in self.messages for u in m.uncertain})

    def cut(self, box: Box) -> List[Box]:
        """The part of an accepted region (a client's connection, addressed as it arrived)
        whose NDP passes."""
        out = []
        for ok in self.ok:
            b = box_and(box, ((SRC, ok[SRC]), (DST, ok[DST]), (IIF, ok[IIF])))
            if b is not None:
                out.append(b)
        return out

    def cut_outcome(self, box: Box, outcome: Outcome) -> List[Box]:
        """``cut`` of a part ``box`` of an accepted outcome: the client resolves the address it
        connected to (the one before any DNAT), the pieces are given back in ``box``'s terms."""
        if outcome.origin is outcome.box:
            return self.cut(box)
        first = narrow_origin(outcome.origin, outcome.box, box)
        return [after_nat(outcome.origin, outcome.box, box, p) for p in self.cut(first)]

    def reason(self, fresh: bool = False) -> str:
        """"neighbour solicitations in, neighbour advertisements out are dropped on eth0"."""
        dropped = [m.name for m in self.messages if m.denied and (not fresh or m.name in FRESH)]
        ifaces = 0
        for _, mask in self.blocked:
            ifaces |= mask
        labels = ",".join(self.universe.label_list(ifaces & self.remote_ifaces)) or "every interface"
        return f"IPv6 neighbour discovery is dropped ({', '.join(dropped)}) on {labels}"

    def breaks_the_link(self) -> bool:
        """Whether NDP with link-local neighbours (routers, every host's first resort) is
        dropped on some interface: IPv6 on that link is broken whatever the services."""
        return any(iv_meets(src, LINK_LOCAL) for src, _ in self.blocked)


NS_IN, NA_IN, NS_OUT, NA_OUT = ("neighbour solicitations in", "neighbour advertisements in",
                                "neighbour solicitations out", "neighbour advertisements out")
FRESH = (NS_IN, NA_OUT)  # the legs a client's new connection needs (see the module's text)
_SN_BASE = SOLICITED_NODE[0][0]


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
    ev = ctx.evaluator(compact=True)
    messages = []
    blocked: List[Tuple[tuple, int]] = []
    cuts: List[Tuple[tuple, tuple, int]] = []
    # an off-link client's NDP is its router's, from a link-local address
    off_link = iv_sub(iv_sub(clients, on_link), LINK_LOCAL)
    own = iv_or(on_link, LINK_LOCAL)
    for name, t, outgoing in ((NS_IN, NS, False), (NA_IN, NA, False), (NS_OUT, NS, True), (NA_OUT, NA, True)):
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
        # the regions a run of rules cuts share their other dimensions' very values: what
        # depends on those alone is worked out once per value (by identity), not per region
        targets: Dict[int, Tuple[tuple, tuple]] = {}
        for o in _per_rule(walked, outgoing, own):
            if o.verdict == V_ACCEPT:
                msg.uncertain.extend(o.uncertain)
                continue
            if o.uncertain:
                msg.uncertain.extend(o.uncertain)  # may not match: the wider outcome stands
                continue
            if not outgoing and not iv_meets(o.origin[SRC], own):
                # a source neither on-link nor link-local (a blocklist's 100,000 regions) is no
                # neighbour: it cuts nothing below (its clients come through a router)
                continue
            cut, mask = _clients_of(o.origin, outgoing, clients)
            # link-local neighbours lost: the router too, so every client on that interface
            wide = clients if iv_meets(cut, LINK_LOCAL) else iv_and(cut, on_link)
            if wide:
                msg.denied.append(o)
                blocked.append((wide, mask))
            cited = bool(wide)
            if name in FRESH:
                # who, to which host address: NS in names the client (or its router) as its
                # source and the address in its solicited-node group; NA out the other way round
                peers = o.origin[DST] if outgoing else o.origin[SRC]
                who = iv_and(peers, own)
                if iv_meets(peers, LINK_LOCAL):
                    who = iv_or(who, off_link)
                if outgoing:
                    to = iv_and(o.origin[SRC], host)
                else:
                    dst = o.origin[DST]
                    hit = targets.get(id(dst))
                    if hit is None or hit[0] is not dst:
                        hit = targets[id(dst)] = (dst, _solicited_targets(dst, host))
                    to = hit[1]
                if who and to:
                    if not cited:  # (the walk's regions are disjoint: no other one equals it)
                        msg.denied.append(o)
                    cuts.append((who, to, mask))
        messages.append(msg)
        walked = []  # (let this message's regions go before the next walk makes its own)
    ok = [make_box(clients, host, ctx.remote_ifaces, every)]
    for src, dst, mask in _grouped(cuts):
        ok = [piece for b in ok for piece in box_sub(b, ((SRC, src), (DST, dst), (IIF, mask)))]
    return NeighbourReach(ok, blocked, messages, ctx.universe, ctx.remote_ifaces, cuts=cuts)


def _per_rule(walked: List[Outcome], outgoing: bool, own: tuple) -> Iterator[Outcome]:
    """The outcomes of a compact walk as a walk rule by rule gives them, where the loop above
    looks at each region: a run of drops from sources that are no neighbour (a blocklist) stays
    one outcome, skipped as a whole."""
    for o in walked:
        if o.verdict == V_ACCEPT or outgoing or o.uncertain or iv_meets(o.origin[SRC], own):
            yield from o.split()
        else:
            yield o


def _solicited_targets(dst: tuple, host: tuple) -> tuple:
    """The host addresses whose solicited-node group (the last 24 bits) lies in ``dst``."""
    groups = iv_and(dst, SOLICITED_NODE)
    if not groups:
        return ()
    out = []
    for lo, hi in host:
        if hi - lo > 64:
            out.append((lo, hi))  # a range (offline stand-ins): any group may be among them
            continue
        for a in range(lo, hi + 1):
            g = _SN_BASE | (a & 0xFFFFFF)
            if iv_meets(groups, ((g, g),)):
                out.append((a, a))
    return iv_normalize(out)


def _clients_of(origin: Box, outgoing: bool, clients: tuple) -> Tuple[tuple, int]:
    """(client addresses, interfaces) a dropped region cuts off. Outgoing, the client is the
    destination: a solicitation to the solicited-node groups reaches out to every client."""
    if not outgoing:
        return origin[SRC], origin[IIF]
    dst = origin[DST]
    cut = clients if iv_meets(dst, SOLICITED_NODE) else iv_and(dst, clients)
    return cut, origin[OIF]


def _grouped(cuts: Sequence[Tuple[tuple, tuple, int]]) -> List[Tuple[tuple, tuple, int]]:
    """Cuts to the same host addresses over the same interfaces joined (a blocklist drops NDP
    from many sources: one subtraction instead of thousands)."""
    by_key: Dict[Tuple[tuple, int], List] = {}
    for src, dst, mask in cuts:
        by_key.setdefault((dst, mask), []).extend(src)
    return [(iv_normalize(v), dst, m) for (dst, m), v in by_key.items()]


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

