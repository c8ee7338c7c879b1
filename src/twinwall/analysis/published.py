"""Services published through NAT (Docker -p, kube NodePorts...): reachable even when INPUT
drops the port, because DNAT sends them through FORWARD instead.

The audit walks every new remote connection to the host's addresses through PREROUTING once per
family. Where a nat PREROUTING rule rewrote the destination to an address that is not the host's,
that region ends with the verdict "forward". Each such (protocol, original port) is a *published
service*; this module follows its packets on through FORWARD and POSTROUTING (the path after the
routing decision) and reports, per family, whether a new connection from elsewhere gets through:

* ``open``: the DNAT rule rewrites it and FORWARD accepts it, for every remote source;
* ``restricted``: only some sources (or interfaces, or client source ports) get through;
* ``filtered``: FORWARD (or POSTROUTING) drops or rejects every rewritten connection;
* ``not-bound``: the other family has no DNAT for that port (Docker publishes over IPv4 only
  unless ip6tables and an IPv6 network are in play). A ``docker-proxy`` listening on ``::`` is a
  real socket and is audited as one, separately.

The output interface of a forwarded packet is decided by routing, which twinwall does not read.
The forward path is walked with every output interface, and the verdict reads the one the packets
most likely leave by: the single interface a DNAT rule leaves out (Docker's ``! -i docker0``: the
bridge its containers sit behind), else the output interface the forward rules accept; when they
do not look at it, it does not matter. Connections arriving on that same interface (the
containers' own network) are not counted as "from elsewhere".

All published services of a family walk the forward path together, once: it cannot see the port
a packet was sent to before DNAT, so each service then takes back its own part of the outcomes.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from twinwall.analysis.evaluator import V_ACCEPT, V_FORWARD, Outcome, accepted_by_policy
from twinwall.analysis.frontends import frontend_of_chain
from twinwall.netfilter.ruleset import DNAT, REDIRECT
from twinwall.netfilter.packetset import (
    DPORT,
    DST,
    IIF,
    NDIMS,
    OIF,
    PROTO,
    SPORT,
    SRC,
    IntervalSet,
    box_and,
    format_address,
    iv_contains,
    iv_normalize,
    iv_size,
    iv_sub,
    merge_boxes,
    ranges_text,
    to_cidrs,
)
from twinwall.analysis.verdicts import (
    FILTERED,
    NOT_BOUND,
    DnatLabel,
    FamilyVerdict,
    Reach,
    ServiceReport,
    decided_fields,
)
from twinwall.model import FAMILIES, FAMILY_LABEL, FORWARDING_SYSCTL, IPV4, IPV6, PROTO_NUM, ListeningSocket

# Ports of one DNAT region up to this many are reported one by one; a wider range (a DNAT rule
# without --dport) becomes one service named by its first port.
MAX_PORTS_EACH = 64
MAX_TARGETS_SHOWN = 3
FORWARD_PATH = ("forward", "postrouting")
WILDCARD = {IPV4: "0.0.0.0", IPV6: "::"}


@dataclass
class _Slice:
    """One DNAT region narrowed to one published (protocol, port range)."""

    origin: tuple  # the packets as they arrived
    box: tuple  # the same packets after DNAT
    outcome: Outcome  # the audit's PREROUTING outcome it came from


@dataclass
class _Published:
    family: str
    protocol: str
    ports: Tuple[int, int]
    slices: List[_Slice] = field(default_factory=list)
    targets: Optional[str] = None  # the DNAT targets as text, once computed


def published_services(contexts: Dict, outcomes: Dict[str, Sequence]) -> List[ServiceReport]:
    """ServiceReports for ports that nat PREROUTING rewrites to other addresses.

    ``contexts``: ``{family: FamilyContext}``; ``outcomes``: ``{family: [Outcome]}`` from the
    audit's one PREROUTING+INPUT walk per family over every new remote connection. A family
    given no outcomes publishes nothing: the audit may call this once per family (each call
    with one family's outcomes) and join the rows with :func:`merge_published`."""
    return merge_published([family_rows(contexts, f, outcomes.get(f, ())) for f in FAMILIES])


def family_rows(
    contexts: Dict, family: str, outcomes: Sequence[Outcome], forwarding: Optional[bool] = None
) -> List[ServiceReport]:
    """One family's published services: that family's verdict from its forward path, the other
    family's verdict "not-bound" (until :func:`merge_published` joins the other family's row).

    ``forwarding``: the host's forwarding sysctl for the family (None: unknown, taken as on).
    Off, a DNAT to another host goes nowhere - the kernel drops what it would have to forward -
    so those rows are filtered; a REDIRECT or DNAT to the host itself needs no forwarding."""
    ctx = contexts.get(family)
    if ctx is None:
        return []
    found = {
        key: _Published(family, key[0], key[1:], slices)
        for key, slices in _port_slices(o for o in outcomes if o.verdict == V_FORWARD and o.box[DST] != o.origin[DST]).items()
    }
    items = sorted(found.items())
    if forwarding is False:
        rows = [_row(ctx, pub, _targets_text(pub), _not_forwarded(pub)) for _, pub in items]
        return rows + _local_rows(ctx, family, outcomes)
    forward = _forward_walk(ctx, [pub for _, pub in items])
    reaches: Dict[tuple, Reach] = {}  # see _forward_verdict
    rows = [
        _row(ctx, pub, _targets_text(pub), _forward_verdict(ctx, pub, forward.get(gi, ([], [])), reaches))
        for gi, (_, pub) in enumerate(items)
    ]
    return rows + _local_rows(ctx, family, outcomes)


def _not_forwarded(pub: _Published) -> FamilyVerdict:
    """A DNAT to another host on a host that does not forward the family."""
    sysctl = FORWARDING_SYSCTL[pub.family]
    return FamilyVerdict(
        FILTERED,
        **decided_fields([s.outcome for s in pub.slices]),
        denied_sources=["any"],
        uncertain=sorted({u for s in pub.slices for u in s.outcome.uncertain}),
        reason=f"DNAT sends it to {_targets_text(pub)}, but the host does not forward "
        f"{FAMILY_LABEL[pub.family]} ({sysctl}=0): the kernel drops every such connection",
    )


LOCAL_TARGET = "this host"


def _local_rows(ctx, family: str, outcomes: Sequence[Outcome]) -> List[ServiceReport]:
    """Ports nat PREROUTING sends to another port of the host itself (``REDIRECT --to-ports 22``,
    a DNAT to one of its own addresses): the port is open to clients although nothing listens on
    it, so it gets a row of its own. Its verdict is INPUT's, for the packets as NAT made them."""
    # (not NATed, or to the same port: the socket's own row answers it)
    found = _port_slices(o for o in outcomes if o.verdict != V_FORWARD and o.box[DPORT] != o.origin[DPORT])
    rows = []
    for (proto, lo, hi), slices in sorted(found.items()):
        pub = _Published(family, proto, (lo, hi), slices)
        target = f"{LOCAL_TARGET} :{ranges_text(iv_normalize(p for sl in slices for p in sl.box[DPORT]))}"
        accepted = [sl for sl in slices if sl.outcome.verdict == V_ACCEPT]
        denied = [sl.outcome for sl in slices if sl.outcome.verdict != V_ACCEPT]
        uncertain = sorted({u for sl in slices for u in sl.outcome.uncertain})
        if not accepted:
            verdict = FamilyVerdict(
                FILTERED,
                **decided_fields(denied),
                denied_sources=["any"],
                uncertain=uncertain,
                reason=f"NAT sends it to {target}, but every new connection is dropped or rejected",
            )
        else:
            by_policy = any(accepted_by_policy(sl.outcome.decided_by) for sl in accepted)
            verdict = Reach(ctx, [sl.origin for sl in accepted]).verdict(
                ctx.universe,
                [sl.outcome for sl in accepted],
                denied,
                uncertain,
                by_policy,
                f"NAT sends it to {target}: accepted from every remote source",
                f"NAT sends it to {target}: accepted only from some sources or interfaces",
            )
        rows.append(_row(ctx, pub, target, verdict))
    return rows


def _row(ctx, pub: _Published, target: str, verdict: FamilyVerdict) -> ServiceReport:
    """A published service's row: its family's verdict, the other family not-bound (until
    :func:`merge_published` joins that family's row)."""
    family, proto, (lo, hi) = pub.family, pub.protocol, pub.ports
    other = IPV6 if family == IPV4 else IPV4
    label = DnatLabel(_frontend_of(pub), (target,), (lo, hi))
    sock = ListeningSocket(
        protocol=proto,
        family=family,
        address=_address(ctx, pub),
        port=lo,
        v6only=True if family == IPV6 else None,
        process=label.text(),
    )
    return ServiceReport(sock, {family: verdict, other: _absent_verdict(other, proto, lo, hi)}, label)


def merge_published(per_family: Sequence[Sequence[ServiceReport]]) -> List[ServiceReport]:
    """Join the rows of both families (``[ipv4 rows, ipv6 rows]``) into one list.

    A port both families publish on all of the host's addresses is one service, like a
    dual-stack socket: one row, address "::" with v6only off, each family's verdict from its own
    walk and both DNAT targets in the label - so a difference between them is a family gap."""
    rows: Dict[tuple, ServiceReport] = {}
    order: List[tuple] = []
    for family, reports in zip(FAMILIES, per_family):
        for rep in reports:
            s = rep.socket
            key = _merge_key(rep)
            have = rows.get(key)
            if have is None:
                rows[key] = ServiceReport(s, dict(rep.verdicts), rep.dnat)
                order.append(key)
                continue
            verdicts = dict(have.verdicts)
            verdicts[family] = rep.verdicts[family]
            first, second = (have.dnat, rep.dnat) if have.socket.family == IPV4 else (rep.dnat, have.dnat)
            # only DNAT rows have a key both families share (_merge_key's "*" key)
            assert first is not None and second is not None
            # the key holds frontend and ports equal; the targets read IPv4 first
            label = DnatLabel(first.frontend, first.targets + second.targets, first.ports)
            sock = ListeningSocket(
                protocol=s.protocol,
                family=IPV6,
                address=WILDCARD[IPV6],
                port=s.port,
                v6only=False,
                process=label.text(),
            )
            rows[key] = ServiceReport(sock, verdicts, label)
    out = [rows[k] for k in order]
    out.sort(key=lambda r: (r.socket.protocol, r.socket.port, r.socket.family, r.socket.address))
    return out


def _merge_key(rep: ServiceReport) -> tuple:
    s, label = rep.socket, rep.dnat
    if label is not None and s.address == WILDCARD[s.family]:
        return (s.protocol, s.port, label.frontend, label.ports, "*")
    return (s.protocol, s.port, label, s.family, s.address, s.process)


def _port_slices(outcomes) -> Dict[Tuple[str, int, int], List[_Slice]]:
    """NATed outcomes cut by (protocol, original port): one port each, or one range for a
    rule over more than MAX_PORTS_EACH ports."""
    found: Dict[Tuple[str, int, int], List[_Slice]] = {}
    for o in outcomes:
        for proto, num in PROTO_NUM.items():
            if not iv_contains(o.origin[PROTO], num):
                continue
            for lo, hi in o.origin[DPORT]:
                spans = [(p, p) for p in range(lo, hi + 1)] if hi - lo < MAX_PORTS_EACH else [(lo, hi)]
                for span in spans:
                    sl = _slice(o, num, span)
                    if sl is not None:
                        found.setdefault((proto, span[0], span[1]), []).append(sl)
    return found


def _slice(o: Outcome, proto_num: int, span: Tuple[int, int]) -> Optional[_Slice]:
    """The part of a DNAT outcome that arrived for one protocol and port range."""
    origin = box_and(o.origin, ((PROTO, ((proto_num, proto_num),)), (DPORT, (span,))))
    if origin is None:
        return None
    box = list(o.box)
    for d in range(NDIMS):
        # dimensions DNAT did not rewrite follow the origin's narrowing
        if o.box[d] == o.origin[d]:
            box[d] = origin[d]
    box[PROTO] = origin[PROTO]
    return _Slice(origin, tuple(box), o)


# ---------------------------------------------------------------------------------------------
# verdicts


MAX_DNAT_STEPS = 6  # DNAT explanation steps cited per service, before the forward path's


class _Part:
    """The part of one forward-path outcome that belongs to one published service."""

    __slots__ = ("box", "f", "head", "by_policy")

    def __init__(self, box: tuple, f: Outcome, head: List, by_policy: bool):
        self.box = box
        self.f = f
        self.head = head  # the DNAT steps that sent the service's packets here
        # accepted by a chain policy on the forward path (not by the chains before DNAT)
        self.by_policy = by_policy

    @property
    def verdict(self) -> str:
        return self.f.verdict

    @property
    def decided_by(self) -> List:
        return self.head + self.f.decided_by


def _forward_walk(ctx, pubs: Sequence[_Published]) -> Dict[int, Tuple[List[_Part], List[str]]]:
    """{service index: (its parts of the forward-path outcomes, uncertain matches met)}.

    The forward path cannot see the port a packet was sent to before DNAT, so every published
    service's rewritten packets walk it together, in one walk (regions of different services
    merge as they go); each service then takes back the part of every outcome that is its own."""
    out: Dict[int, Tuple[List[_Part], List[str]]] = {}
    if not pubs:
        return out
    own: List[List[tuple]] = []
    every: Dict[tuple, None] = {}
    for pub in pubs:
        boxes = merge_boxes([s.box for s in pub.slices])
        own.append(boxes)
        every.update(dict.fromkeys(boxes))
    walked = ctx.evaluator().hook_path(FORWARD_PATH, merge_boxes(list(every)))
    index = _OutcomeIndex(walked)
    policy = {id(f): accepted_by_policy(f.decided_by) for f in walked}
    # a dimension every service's boxes share cannot tell them apart: no need to intersect it
    varying = [d for d in _ATTRIBUTION_ORDER if len({b[d] for b in every}) > 1]
    for gi, pub in enumerate(pubs):
        steps: Dict = {}
        uncertain: Dict[str, None] = {}
        for s in pub.slices:
            for d in s.outcome.decided_by:
                if len(steps) < MAX_DNAT_STEPS or d in steps:
                    steps.setdefault(d, None)
            uncertain.update(dict.fromkeys(s.outcome.uncertain))
        head = list(steps)
        parts: List[_Part] = []
        met: Dict[int, Outcome] = {}
        for box in own[gi]:
            # the dimensions that tell services apart first, so that most misses fail fast
            constraint = tuple((d, box[d]) for d in varying)
            for f in index.candidates(box):
                part = box_and(f.origin, constraint)
                if part is not None:
                    parts.append(_Part(part, f, head, policy[id(f)]))
                    met[id(f)] = f
        for f in met.values():
            uncertain.update(dict.fromkeys(f.uncertain))
        out[gi] = (parts, list(uncertain))
    return out


_ATTRIBUTION_ORDER = (DST, DPORT, PROTO, IIF, SPORT, SRC) + tuple(
    d for d in range(NDIMS) if d not in (DST, DPORT, PROTO, IIF, SPORT, SRC)
)


class _OutcomeIndex:
    """Forward-path outcomes by destination port and address, to find those a box may meet."""

    SMALL_PORTS = 64
    # address intervals narrower than this are indexed address by address (pod and container
    # addresses: single addresses packed close together); wider ones are checked each time
    NARROW = 256

    def __init__(self, outcomes: Sequence[Outcome]):
        self.outcomes = list(outcomes)
        self.by_port: Dict[int, Set[int]] = {}
        self.wide_port: Set[int] = set()
        self.by_addr: Dict[int, Set[int]] = {}
        self.wide_dst: Set[int] = set()
        for i, o in enumerate(self.outcomes):
            ports = o.origin[DPORT]
            if sum(hi - lo + 1 for lo, hi in ports) <= self.SMALL_PORTS:
                for lo, hi in ports:
                    for p in range(lo, hi + 1):
                        self.by_port.setdefault(p, set()).add(i)
            else:
                self.wide_port.add(i)
            for lo, hi in o.origin[DST]:
                if hi - lo < self.NARROW:
                    for a in range(lo, hi + 1):
                        self.by_addr.setdefault(a, set()).add(i)
                else:
                    self.wide_dst.add(i)
        self.addrs = sorted(self.by_addr)

    def _ports(self, ports: IntervalSet) -> Set[int]:
        if sum(hi - lo + 1 for lo, hi in ports) > self.SMALL_PORTS:
            return set(range(len(self.outcomes)))
        found = set(self.wide_port)
        for lo, hi in ports:
            for p in range(lo, hi + 1):
                found |= self.by_port.get(p, set())
        return found

    def _dsts(self, dsts: IntervalSet) -> Set[int]:
        found = set(self.wide_dst)
        for qlo, qhi in dsts:
            if qhi - qlo >= 1 << 16:
                return set(range(len(self.outcomes)))
            if qhi - qlo < self.NARROW:
                for a in range(qlo, qhi + 1):
                    hit = self.by_addr.get(a)
                    if hit:
                        found |= hit
                continue
            k = bisect_left(self.addrs, qlo)
            while k < len(self.addrs) and self.addrs[k] <= qhi:
                found |= self.by_addr[self.addrs[k]]
                k += 1
        return found

    def candidates(self, box: tuple) -> List[Outcome]:
        both = self._ports(box[DPORT]) & self._dsts(box[DST])
        return [self.outcomes[i] for i in sorted(both)]


def _forward_verdict(
    ctx, pub: _Published, walked: Tuple[List["_Part"], List[str]], reaches: Dict[tuple, Reach]
) -> FamilyVerdict:
    """``reaches`` remembers, across the services of one family, who gets through the accepted
    regions (:class:`Reach`): services behind the same forward rules ask it of the same value
    sets (keyed by value: each service's parts are sets of its own)."""

    universe = ctx.universe
    targets = _targets_text(pub)
    results, met = walked
    uncertain = sorted(met)
    accepted = [o for o in results if o.verdict == V_ACCEPT]
    oif_accepted = 0
    for o in accepted:
        oif_accepted |= o.box[OIF]
    # Which interface does the rewritten packet leave by? Routing decides; twinwall reads no
    # routes. A DNAT rule that leaves out one interface (Docker's "! -i docker0") leaves out the
    # one its target sits behind: packets from there are not sent back through it. Otherwise,
    # when the forward rules accept only some output interfaces, the one they accept is taken;
    # when they do not look at the output interface, it does not matter.
    # (only a rule that names the interface it leaves out, `! -i docker0`: a DNAT for one
    # interface, `-i eth0`, leaves out all the others and says nothing of the target's side)
    hint = ctx.remote_ifaces & _left_out_interface(ctx, pub)
    if hint and hint & (hint - 1) == 0:
        candidates = [hint]
    elif accepted and oif_accepted != universe.all_mask:
        candidates = list(_bits(oif_accepted))
        hint = 0
    else:
        candidates = [universe.all_mask]
        hint = 0
    best = None  # (rank, oif bit, accepted outcomes through it, their Reach)
    for bit in candidates:
        chosen = [o for o in accepted if o.box[OIF] & bit]
        # connections from the target's own side are not "from elsewhere"
        ref = ctx.remote_ifaces if bit == universe.all_mask else (ctx.remote_ifaces & ~bit or ctx.remote_ifaces)
        reach = None
        if not chosen:
            rank: tuple = (0,)
        else:
            boxes = [o.box for o in chosen]
            by_rule = not any(o.by_policy for o in chosen)
            key = (ref, frozenset((b[SRC], b[IIF], b[SPORT]) for b in boxes))
            reach = reaches.get(key)
            if reach is None:
                reach = reaches[key] = Reach(ctx, boxes, ref)
            if reach.covered:
                rank = (2, by_rule)
            else:
                rank = (1, by_rule, bin(reach.ifaces & ref).count("1"), iv_size(reach.src))
        if best is None or rank > best[0]:
            best = (rank, bit, chosen, reach)
    if best is None or best[0][0] == 0:
        bits = hint or universe.all_mask
        denied = [o for o in results if o.verdict != V_ACCEPT and o.box[OIF] & bits]
        return FamilyVerdict(
            FILTERED,
            **decided_fields(denied or [o for o in results if o.verdict != V_ACCEPT]),
            denied_sources=["any"],
            uncertain=uncertain,
            reason=f"DNAT sends it to {targets}, but every new connection is dropped or rejected "
            "on the forward path" + (f" (out of {_labels(universe, hint)})" if hint else ""),
        )
    rank, bit, chosen, reach = best
    assert reach is not None  # only rank 0 (nothing accepted) has none, answered above
    by_policy = any(o.by_policy for o in chosen)
    via = "" if bit == universe.all_mask else f" (forwarded out of {_labels(universe, bit)})"
    denied = [] if reach.covered else [o for o in results if o.verdict != V_ACCEPT and o.box[OIF] & bit]
    return reach.verdict(
        universe,
        chosen,
        denied,
        uncertain,
        by_policy,
        f"published by DNAT to {targets}{via}: accepted from every remote source"
        + (" by a chain policy" if by_policy else ""),
        f"published by DNAT to {targets}{via}: accepted only from some sources or interfaces",
    )


def _left_out_interface(ctx, pub: _Published) -> int:
    """The one interface the DNAT rules of a service exclude with ``! -i`` (0 if none or
    several): read from the rules themselves, since in the packets' interface set a DNAT for
    ``-i eth0`` on a host with two interfaces looks the same as one for ``! -i eth1``."""
    left = 0
    seen = set()
    for s in pub.slices:
        for d in s.outcome.decided_by:
            if d.action not in (DNAT, REDIRECT) or d.rule_number is None or d in seen:
                continue
            seen.add(d)
            rule = _rule_of(ctx, d)
            for alt in rule.alternatives if rule is not None else ():
                for dim, value in alt:
                    if dim == IIF:
                        out = ctx.universe.all_mask & ~value & ~ctx.universe.mask("lo")
                        left |= out if out & (out - 1) == 0 else 0
    return left if left & (left - 1) == 0 else 0


def _rule_of(ctx, d):
    for rs in ctx.rulesets:
        if d.source and rs.source != d.source:
            continue
        chain = rs.chain(d.table, d.chain)
        for r in chain.rules if chain is not None else ():
            if r.number == d.rule_number:
                return r
    return None


def _labels(universe, mask: int) -> str:
    return ",".join(universe.label_list(mask))


def _absent_verdict(family: str, proto: str, lo: int, hi: int) -> FamilyVerdict:
    label = FAMILY_LABEL[family]
    port = str(lo) if lo == hi else f"{lo}-{hi}"
    return FamilyVerdict(
        NOT_BOUND,
        reason=f"not published over {label}: no {label} DNAT rule rewrites {proto}/{port} (a proxy "
        f"socket listening on the port, such as docker-proxy on {WILDCARD[family]}, is audited as "
        "its own service)",
    )


def _bits(mask: int):
    i = 0
    while mask >> i:
        if mask >> i & 1:
            yield 1 << i
        i += 1


# ---------------------------------------------------------------------------------------------
# the service record


def _targets_text(pub: _Published) -> str:
    if pub.targets is not None:
        return pub.targets
    seen: List[str] = []
    for s in pub.slices:
        t = _target(s.box, pub.family)
        if t not in seen:
            seen.append(t)
    shown = ", ".join(seen[:MAX_TARGETS_SHOWN])
    if len(seen) > MAX_TARGETS_SHOWN:
        shown += f" (+{len(seen) - MAX_TARGETS_SHOWN} more)"
    pub.targets = shown
    return shown


def _target(box: tuple, family: str) -> str:
    dst = box[DST]
    if len(dst) == 1 and dst[0][0] == dst[0][1]:
        addr = format_address(dst[0][0], family)
    else:
        cidrs = to_cidrs(dst, family)
        addr = cidrs[0] + (f"+{len(cidrs) - 1}" if len(cidrs) > 1 else "")
    if family == IPV6:
        addr = f"[{addr}]"
    return f"{addr}:{ranges_text(box[DPORT])}"


def _frontend_of(pub: _Published) -> Optional[str]:
    for s in pub.slices:
        for d in s.outcome.decided_by:
            if d.rule_number is None:
                continue
            front = frontend_of_chain(d.chain)
            if front:
                return front
    return None


def _address(ctx, pub: _Published) -> str:
    dst = iv_normalize(p for s in pub.slices for p in s.origin[DST])
    if ctx is None or not iv_sub(ctx.remote_targets, dst):
        return WILDCARD[pub.family]
    return format_address(dst[0][0], pub.family)
