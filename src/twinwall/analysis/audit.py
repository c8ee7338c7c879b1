"""Per listening socket and per family: can a new connection from elsewhere reach it?

One evaluator walk per family answers it for every socket at once: the packet set is "a NEW
tcp (or udp) packet from any remote source, on any non-loopback interface, to any of the host's
addresses, on any of the listening ports"; the walk splits it into regions with verdicts, and
each socket reads its own slice. Findings (CIS controls, family gaps...) are derived from those
verdicts and from a few more walks (loopback, spoofed loopback, default deny).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from twinwall.analysis.frontends import combine_frontends, frontends_of
from twinwall.analysis.ndp import NeighbourReach, essential_icmpv6_dropped, neighbour_discovery, on_link_prefixes
from twinwall.analysis.published import family_rows, merge_published
from twinwall.analysis.verdicts import (
    DISABLED,
    FILTERED,
    LOCAL_ONLY,
    NOT_BOUND,
    OPEN,
    REACH_RANK,
    RESTRICTED,
    UNKNOWN,
    FamilyVerdict,
    Reach,
    ServiceReport,
    cite,
    decisions,
    display_address,
)
from twinwall.analysis.context import FamilyContext, build_contexts, socket_destinations
from twinwall.analysis.evaluator import V_ACCEPT, Outcome, accepted_by_policy
from twinwall.analysis.parallel import run_jobs, worth_forking
from twinwall.analysis.packetset import (
    Box,
    CT_ESTABLISHED,
    CT_NEW,
    DPORT,
    DST,
    IIF,
    PROTO,
    PROTO_ALL,
    box_and,
    box_meets,
    iv_contains,
    loopback_addresses,
    make_box,
    remote_sources,
)
from twinwall.loader import load_rulesets, unread_table_note, unread_tables
from twinwall.model import (
    FAMILIES,
    FAMILY_LABEL,
    IPV4,
    IPV6,
    PROTO_NUM,
    HostSnapshot,
    WILDCARD_ADDRESSES,
    ListeningSocket,
    is_loopback_address,
    merge_same_sockets,
)

SCHEMA = "twinwall.audit/1"


SEVERITIES = ("info", "low", "medium", "high", "critical")

# CIS Linux benchmark controls (Ubuntu/Debian numbering: 4.4.2 iptables, 4.4.3 ip6tables).
CIS = {
    (IPV4, "default-deny"): "CIS 4.4.2.1 Ensure iptables default deny firewall policy",
    (IPV4, "loopback"): "CIS 4.4.2.2 Ensure iptables loopback traffic is configured",
    (IPV4, "established"): "CIS 4.4.2.3 Ensure iptables outbound and established connections are configured",
    (IPV4, "open-ports"): "CIS 4.4.2.4 Ensure iptables firewall rules exist for all open ports",
    (IPV6, "default-deny"): "CIS 4.4.3.1 Ensure ip6tables default deny firewall policy",
    (IPV6, "loopback"): "CIS 4.4.3.2 Ensure ip6tables loopback traffic is configured",
    (IPV6, "established"): "CIS 4.4.3.3 Ensure ip6tables outbound and established connections are configured",
    (IPV6, "open-ports"): "CIS 4.4.3.4 Ensure ip6tables firewall rules exist for all open ports",
}



@dataclass
class Finding:
    id: str
    severity: str
    family: Optional[str]
    message: str
    service: Optional[str] = None
    cis: Optional[str] = None
    evidence: List[str] = field(default_factory=list)
    frontend: Optional[str] = None  # "ufw", "firewalld", "docker"...: who wrote the rules
    # the position in AuditReport.services of the service it is about: several sockets share
    # one ``service`` name (0.0.0.0:22 and [::]:22 are both "tcp/22"); not part of the JSON
    row: Optional[int] = None

    def to_json(self) -> Dict:
        return {
            "frontend": self.frontend,
            "id": self.id,
            "severity": self.severity,
            "family": self.family,
            "service": self.service,
            "message": self.message,
            "cis": self.cis,
            "evidence": self.evidence,
        }


@dataclass
class AuditReport:
    snapshot: HostSnapshot
    services: List[ServiceReport]
    findings: List[Finding]
    rulesets: List[Dict]
    frontends: Dict[str, List[str]] = field(default_factory=dict)

    def to_json(self) -> Dict:
        snap = self.snapshot
        return {
            "schema": SCHEMA,
            "host": {
                "hostname": snap.hostname,
                "collected_at": snap.collected_at,
                "kernel": snap.kernel,
                "rulesets": self.rulesets,
                "missing": snap.missing,
                "sockets_known": snap.sockets_known,
                "addresses_known": snap.addresses_known,
                "frontends": self.frontends,
            },
            "ipv6": {"enabled": snap.ipv6.enabled, "evidence": snap.ipv6.evidence},
            "services": [s.to_json() for s in self.services],
            "findings": [f.to_json() for f in self.findings],
        }


# ---------------------------------------------------------------------------------------------


def audit_snapshot(
    snapshot: HostSnapshot, keep_text: bool = True, jobs: Optional[int] = None, compare_egress: bool = True
) -> AuditReport:
    """Audit a host.

    ``keep_text=False`` lets the snapshot's ruleset texts go once parsed. The two families are
    independent questions; on a large ruleset (``jobs`` None: decided from the input size) the
    IPv6 half runs in a forked process while this one does IPv4. ``compare_egress=False`` skips
    comparing the families' output and forward rules (a second parse and a diff walk), for callers
    that only want the services' statuses."""
    sockets = _dedupe(snapshot.sockets)
    early = _legacy_and_nft_findings(snapshot)  # reads the texts before parsing frees them
    parallel = worth_forking(snapshot) if jobs is None else jobs > 1
    halves = run_jobs([lambda fam=fam: audit_family(snapshot, fam, sockets, keep_text) for fam in FAMILIES], parallel)
    results = dict(zip(FAMILIES, halves))
    services = [
        ServiceReport(sock, {f: results[f].verdicts[i] for f in FAMILIES}) for i, sock in enumerate(sockets)
    ]
    services += merge_published([results[f].published for f in FAMILIES])
    findings = _service_findings(services) + early
    for f in FAMILIES:
        findings += results[f].findings
    if compare_egress:
        findings += _egress_forward_findings(snapshot, results, keep_text)
    frontends = combine_frontends(
        {f: results[f].frontends for f in FAMILIES}, {f: bool(results[f].summary) for f in FAMILIES}
    )
    for f in findings:
        if f.family and frontends.get(f.family) and not f.frontend:
            f.frontend = ", ".join(frontends[f.family])
    findings.sort(key=lambda f: (-SEVERITIES.index(f.severity), f.id, f.service or "", f.family or ""))
    summary = [row for f in FAMILIES for row in results[f].summary]
    return AuditReport(snapshot, services, findings, summary, frontends)


@dataclass
class FamilyAudit:
    """Everything the audit learns from one family's rulesets (picklable: it may come back
    from a forked process)."""

    family: str
    verdicts: List[FamilyVerdict]
    published: List[ServiceReport]
    findings: List[Finding]
    summary: List[Dict]
    frontends: List[str]


def audit_family(snapshot: HostSnapshot, family: str, sockets: Sequence[ListeningSocket], keep_text: bool = True) -> FamilyAudit:
    rulesets = load_rulesets(snapshot, keep_text=keep_text, families=(family,))
    contexts = build_contexts(snapshot, rulesets)
    ctx = contexts[family]
    disabled = family == IPV6 and snapshot.ipv6.enabled is False
    # one walk answers every socket, the published ports and the default-deny check
    outcomes = (
        ctx.evaluator().local_input([remote_new_connections(ctx)])
        if ctx.rules_known and ctx.remote_targets and ctx.remote_ifaces and not disabled
        else []
    )
    # IPv6: a service is reachable only where neighbour discovery passes too (analysis.ndp)
    ndp = neighbour_discovery(ctx, on_link_prefixes(snapshot)) if outcomes else None
    verdicts = _family_verdicts(ctx, sockets, disabled, outcomes, ndp, snapshot.ipv6.disabled_interfaces)
    published = family_rows(contexts, family, outcomes)  # joined with the other family's later
    findings = _host_findings(ctx, snapshot, outcomes) + _unread_table_findings(family, rulesets[family])
    if outcomes:
        findings += _icmpv6_findings(ctx, ndp)
    mine = rulesets[family]
    summary = [
        {"family": rs.family, "source": rs.source, "rules": rs.rule_count(), "tables": sorted(rs.tables)}
        for rs in mine
        # an empty source beside a non-empty one (nft with only iptables-nft tables) is noise
        if rs.tables or not any(other.tables for other in mine)
    ]
    return FamilyAudit(family, verdicts, published, findings, summary, frontends_of(mine))


def _dedupe(sockets: Sequence[ListeningSocket]) -> List[ListeningSocket]:
    return sorted(merge_same_sockets(sockets), key=lambda s: (s.protocol, s.port, s.family, s.address))


def _precheck(sock: ListeningSocket, family: str, disabled: bool) -> Optional[FamilyVerdict]:
    if disabled:
        return FamilyVerdict(DISABLED, reason="IPv6 is disabled on the host")
    if sock.protocol not in PROTO_NUM:
        return FamilyVerdict(UNKNOWN, reason=f"protocol {sock.protocol} is not audited")
    if not sock.accepts_family(family):
        why = {
            (IPV4, IPV6): "an IPv4 socket does not accept IPv6",
            (IPV6, IPV4): "IPv6-only socket (v6only=1 or a specific IPv6 address)",
        }.get((sock.family, family), "the socket does not accept this family")
        return FamilyVerdict(NOT_BOUND, reason=why)
    if is_loopback_address(sock.address):
        return FamilyVerdict(LOCAL_ONLY, reason="bound to a loopback address")
    return None


def _interfaces_without_ipv6(ctx: FamilyContext, sock: ListeningSocket, off: Sequence[str]) -> Optional[FamilyVerdict]:
    """IPv6 off on the interfaces a socket could hear over (disable_ipv6=1 there): the
    interface has no IPv6, which is no firewall verdict."""
    if ctx.family != IPV6 or not off:
        return None
    if sock.interface and sock.interface in off:
        return FamilyVerdict(DISABLED, reason=f"IPv6 is disabled on {sock.interface} (net.ipv6.conf.{sock.interface}.disable_ipv6=1)")
    if not ctx.remote_ifaces:
        names = ", ".join(off)
        return FamilyVerdict(DISABLED, reason=f"IPv6 is disabled on every interface a client can use ({names}: disable_ipv6=1)")
    return None


def remote_new_connections(ctx: FamilyContext) -> Box:
    """Every new connection from elsewhere: any protocol and port, any remote source, any
    non-loopback interface, to any of the host's addresses. Sockets read their slice of it."""
    return make_box(
        remote_sources(ctx.family), ctx.remote_targets, ctx.remote_ifaces, ctx.universe.all_mask, state=CT_NEW
    )


def _family_verdicts(
    ctx: FamilyContext,
    sockets: Sequence[ListeningSocket],
    disabled: bool,
    outcomes: Sequence[Outcome],
    ndp: Optional[NeighbourReach] = None,
    ipv6_off_interfaces: Sequence[str] = (),
) -> List[FamilyVerdict]:
    out: List[Optional[FamilyVerdict]] = []
    todo: List[Tuple[int, ListeningSocket, tuple]] = []
    off = ipv6_off_interfaces
    for i, sock in enumerate(sockets):
        pre = _precheck(sock, ctx.family, disabled)
        if pre is None:
            pre = _interfaces_without_ipv6(ctx, sock, off)
        if pre is None and not ctx.rules_known:
            pre = FamilyVerdict(UNKNOWN, reason=f"no {FAMILY_LABEL[ctx.family]} ruleset was read")
        if pre is None:
            dsts = socket_destinations(ctx, sock.address)
            if dsts is None:
                pre = FamilyVerdict(UNKNOWN, reason=f"cannot read address {sock.address!r}")
            elif not dsts:
                pre = FamilyVerdict(FILTERED, reason="the host has no address a remote client can use")
            else:
                todo.append((i, sock, dsts))
        out.append(pre)
    if todo:
        index = _PortIndex(outcomes)
        reach_memo: Dict[tuple, Reach] = {}
        for i, sock, dsts in todo:
            out[i] = _socket_verdict(ctx, sock, dsts, index.candidates(sock.port), reach_memo, ndp)
    return out  # type: ignore[return-value]


class _PortIndex:
    """Outcomes by destination port, so each socket looks only at the regions that can hold it.

    Accepted regions are indexed by the port the packets reached (after NAT), denied ones by the
    port they were sent to."""

    SMALL = 64  # outcomes covering at most this many ports are indexed port by port

    def __init__(self, outcomes: Sequence[Outcome]):
        self.by_port: Dict[int, List[Outcome]] = {}
        self.wide: List[Tuple[tuple, Outcome]] = []
        for o in outcomes:
            ports = (o.box if o.verdict == V_ACCEPT else o.origin)[DPORT]
            if sum(hi - lo + 1 for lo, hi in ports) <= self.SMALL:
                for lo, hi in ports:
                    for p in range(lo, hi + 1):
                        self.by_port.setdefault(p, []).append(o)
            else:
                self.wide.append((ports, o))

    def candidates(self, port: int) -> List[Outcome]:
        found = list(self.by_port.get(port, ()))
        for ports, o in self.wide:
            if iv_contains(ports, port):
                found.append(o)
        return found


def _socket_verdict(
    ctx: FamilyContext,
    sock: ListeningSocket,
    dsts: tuple,
    outcomes: Sequence[Outcome],
    memo: Dict[tuple, Reach],
    ndp: Optional[NeighbourReach] = None,
) -> FamilyVerdict:
    num = PROTO_NUM[sock.protocol]
    selector = [(PROTO, ((num, num),)), (DPORT, ((sock.port, sock.port),)), (DST, dsts)]
    if sock.interface:
        selector.append((IIF, ctx.universe.mask(sock.interface)))
    selector_t = tuple(selector)
    accepted: List[Tuple[Box, Outcome]] = []
    denied: List[Outcome] = []
    for o in outcomes:
        if o.verdict == V_ACCEPT:
            b = box_and(o.box, selector_t)
            if b is not None:
                accepted.append((b, o))
        elif box_meets(o.origin, selector_t):
            denied.append(o)
    uncertain = sorted({u for _, o in accepted for u in o.uncertain} | {u for o in denied for u in o.uncertain})
    ndp_cut = False
    if accepted and ndp is not None and ndp.restricts:
        kept = [(piece, o) for b, o in accepted for piece in ndp.cut(b)]
        if len(kept) != len(accepted) or any(p != b for (p, _), (b, _) in zip(kept, accepted)):
            ndp_cut = True
            ndp.narrowed.append(f"{sock.protocol}/{sock.port}")
            uncertain = sorted(set(uncertain) | set(ndp.uncertain()))
        if not kept:
            return FamilyVerdict(
                FILTERED,
                decided_by=ndp.decisions()[:MAX_NDP_CITED],
                denied_sources=["any"],
                uncertain=uncertain,
                reason=f"the firewall accepts the connection, but {ndp.reason()}: no IPv6 client on the "
                "link can reach the host",
            )
        accepted = kept
    if not accepted:
        return FamilyVerdict(
            FILTERED,
            decided_by=decisions(denied),
            denied_sources=["any"],
            uncertain=uncertain,
            reason="every new connection is dropped or rejected",
        )
    boxes = [b for b, _ in accepted]
    # a socket bound to a device hears only what arrives there: the firewall restricts it only
    # if it turns away some of that
    ref = ctx.remote_ifaces & ctx.universe.mask(sock.interface) if sock.interface else None
    key = (ref, Reach.key(boxes))
    reach = memo.get(key)
    if reach is None:
        reach = memo[key] = Reach(ctx, boxes, ref or None)
    by_policy = any(accepted_by_policy(o.decided_by) for _, o in accepted)
    verdict = reach.verdict(
        ctx.universe,
        [o for _, o in accepted],
        denied,
        uncertain,
        by_policy,
        "accepted from every remote source" + (" by the chain policy" if by_policy else ""),
        "accepted only from some sources or interfaces",
    )
    if ndp_cut and ndp is not None:
        verdict.decided_by += [d for d in ndp.decisions()[:MAX_NDP_CITED] if d not in verdict.decided_by]
        verdict.reason += f"; {ndp.reason()} for the others"
    return verdict


MAX_NDP_CITED = 6  # rules cited for dropping neighbour discovery, per verdict


# ---------------------------------------------------------------------------------------------
# findings


def _service_findings(services: Sequence[ServiceReport]) -> List[Finding]:
    findings: List[Finding] = []
    for row, svc in enumerate(services):
        v4, v6 = svc.verdicts[IPV4], svc.verdicts[IPV6]
        for family, v in ((IPV4, v4), (IPV6, v6)):
            if v.status in (OPEN, RESTRICTED) and v.by_policy:
                findings.append(
                    Finding(
                        "TW-NO-RULE",
                        "medium",
                        family,
                        f"{svc.label()} is reachable over {FAMILY_LABEL[family]} only because a chain "
                        "policy is ACCEPT: no rule covers it",
                        service=svc.name,
                        cis=CIS[(family, "open-ports")],
                        evidence=cite([d for d in v.decided_by if d.policy]),
                        row=row,
                    )
                )
            if v.uncertain and v.status in (OPEN, RESTRICTED, FILTERED):
                findings.append(
                    Finding(
                        "TW-UNCERTAIN",
                        "info",
                        family,
                        f"{svc.label()} over {FAMILY_LABEL[family]}: the verdict assumes matches twinwall "
                        "cannot decide may go either way",
                        service=svc.name,
                        evidence=v.uncertain[:8],
                        row=row,
                    )
                )
        gap = _family_gap(svc.label(), svc.name, svc.verdicts, {IPV4: row, IPV6: row})
        if gap is not None:
            findings.append(gap)
    findings += _twin_socket_gaps(services)
    return findings


def _family_gap(
    label: str, name: str, verdicts: Dict[str, FamilyVerdict], rows: Dict[str, int]
) -> Optional[Finding]:
    """TW-FAMILY-GAP when one family reaches the service more widely than the other; it belongs
    to the row (``rows``: per family) of the wider one."""
    v4, v6 = verdicts[IPV4], verdicts[IPV6]
    if not (v4.status in REACH_RANK and v6.status in REACH_RANK and v4.status != v6.status):
        return None
    wide, narrow = (IPV4, IPV6) if REACH_RANK[v4.status] > REACH_RANK[v6.status] else (IPV6, IPV4)
    ws, ns = verdicts[wide].status, verdicts[narrow].status
    # open over one family is the seeds' bypass, whatever the twin does
    severity = "high" if ws == OPEN else "medium"
    return Finding(
        "TW-FAMILY-GAP",
        severity,
        wide,
        f"{label} is {ws} over {FAMILY_LABEL[wide]} but {ns} over "
        f"{FAMILY_LABEL[narrow]}: the {FAMILY_LABEL[wide]} firewall does not match its twin",
        service=name,
        cis=CIS[(wide, "open-ports")],
        evidence=[f"{FAMILY_LABEL[f]}: {line}" for f in (wide, narrow) for line in cite(verdicts[f].decided_by[:3])],
        row=rows[wide],
    )


def _twin_socket_gaps(services: Sequence[ServiceReport]) -> List[Finding]:
    """Family gaps between the two sockets of one service.

    Most daemons listen once per family (nginx's ``listen 80; listen [::]:80``, sshd, mysqld):
    an IPv4 socket and an IPv6-only one on the same port. Each is not-bound in the other family,
    so comparing a socket with itself never sees the gap; the pair is compared instead. Two
    sockets are twins when they share protocol, port and bound interface and are both bound to
    the wildcard address, or name the same process."""
    findings: List[Finding] = []
    groups: Dict[tuple, Tuple[List[int], List[int]]] = {}
    for row, svc in enumerate(services):
        s = svc.socket
        if svc.dnat is not None or is_loopback_address(s.address):
            continue
        takes4, takes6 = s.accepts_family(IPV4), s.accepts_family(IPV6)
        if takes4 == takes6:
            continue  # dual-stack sockets are compared with themselves
        group = groups.setdefault((s.protocol, s.port, s.interface), ([], []))
        group[0 if takes4 else 1].append(row)
    for rows4, rows6 in groups.values():
        for r4 in rows4:
            for r6 in rows6:
                a, b = services[r4], services[r6]
                wildcards = a.socket.address in WILDCARD_ADDRESSES and b.socket.address in WILDCARD_ADDRESSES
                if not (wildcards or (a.socket.process and a.socket.process == b.socket.process)):
                    continue
                verdicts = {IPV4: a.verdicts[IPV4], IPV6: b.verdicts[IPV6]}
                process = a.socket.process or b.socket.process
                on = f"{display_address(a.socket.address, None)} and {display_address(b.socket.address, True)}"
                label = f"{a.name} ({process + ' on ' if process else 'on '}{on})"
                gap = _family_gap(label, a.name, verdicts, {IPV4: r4, IPV6: r6})
                if gap is not None:
                    findings.append(gap)
    return findings


def _host_findings(ctx: FamilyContext, snapshot: HostSnapshot, outcomes: Sequence[Outcome]) -> List[Finding]:
    family = ctx.family
    label = FAMILY_LABEL[family]
    if family == IPV6 and snapshot.ipv6.enabled is False:
        return [
            Finding(
                "TW-IPV6-DISABLED",
                "info",
                IPV6,
                "IPv6 is disabled on this host: the ip6tables controls do not apply",
                cis="CIS 4.4.3.x not applicable",
                evidence=list(snapshot.ipv6.evidence),
            )
        ]
    if not ctx.rules_known:
        return [
            Finding(
                "TW-NO-RULESET",
                "medium" if snapshot.rulesets else "info",
                family,
                f"no {label} ruleset was read: {label} verdicts are unknown",
            )
        ]
    return _policy_findings(ctx, outcomes)


def _icmpv6_findings(ctx: FamilyContext, ndp: Optional[NeighbourReach]) -> List[Finding]:
    """IPv6 broken rather than protected: neighbour discovery dropped (analysis.ndp), and the
    other ICMPv6 messages RFC 4890 says a host must not drop."""
    findings: List[Finding] = []
    if ndp is not None and ndp.restricts and (ndp.narrowed or ndp.breaks_the_link()):
        hit = f": {', '.join(ndp.narrowed[:8])} cannot be reached over IPv6 there" if ndp.narrowed else ""
        findings.append(
            Finding(
                "TW-ICMPV6-NDP-BLOCKED",
                "high",
                IPV6,
                f"{ndp.reason()}: IPv6 connections over it time out (IPv6 is broken, not protected)"
                + hit + "; accept ICMPv6 types 135 and 136 with hop limit 255 in INPUT and OUTPUT",
                evidence=sorted(set(cite(ndp.decisions())))[:MAX_NDP_CITED],
            )
        )
    dropped = essential_icmpv6_dropped(ctx)
    if dropped:
        findings.append(
            Finding(
                "TW-ICMPV6-ESSENTIAL-BLOCKED",
                "medium",
                IPV6,
                f"ICMPv6 that RFC 4890 (4.4.1) says a host must not drop is dropped on input: "
                f"{', '.join(name for name, _ in dropped)} (path MTU discovery, error reporting or "
                "router discovery break)",
                evidence=sorted(set(cite([d for _, rules in dropped for d in rules])))[:MAX_NDP_CITED],
            )
        )
    return findings


# Comparing the families' output and forward hooks walks their whole packet space: on rulesets
# above this size (rules per family) the audit leaves it to `twinwall diff` and says so.
EGRESS_COMPARE_LIMIT = 20_000


def _egress_forward_findings(snapshot: HostSnapshot, results: Dict[str, FamilyAudit], texts_kept: bool) -> List[Finding]:
    """Where OUTPUT or FORWARD treat IPv4 and IPv6 differently (an egress block on tcp/25 that
    only IPv4 has): listening sockets cannot show it, so the audit points at `twinwall diff`.
    The rules are parsed again for it: only possible while the snapshot's texts are kept."""
    if snapshot.ipv6.enabled is False or not all(results[f].summary for f in FAMILIES):
        return []
    size = max(sum(row["rules"] for row in results[f].summary) for f in FAMILIES)
    if size > EGRESS_COMPARE_LIMIT or not texts_kept:
        return [
            Finding(
                "TW-EGRESS-FORWARD-NOT-COMPARED",
                "info",
                None,
                f"output and forward rules were not compared between the families ({size} rules): "
                "run 'twinwall diff' for that",
            )
        ]
    from twinwall.analysis.diff import egress_forward_differences

    rulesets = load_rulesets(snapshot)
    lines = egress_forward_differences(build_contexts(snapshot, rulesets))
    if not lines:
        return []
    return [
        Finding(
            "TW-EGRESS-FORWARD-DIFFER",
            "medium",
            None,
            "IPv4 and IPv6 treat outgoing or forwarded traffic differently (an egress block that only "
            "one family has, as in the tcp/25 story): see 'twinwall diff'",
            evidence=lines,
        )
    ]


def _legacy_and_nft_findings(snapshot: HostSnapshot) -> List[Finding]:
    findings = []
    backends: Dict[str, set] = {}
    for text in snapshot.rulesets:
        if text.format == "iptables-save" and (text.text.startswith("-A ") or "\n-A " in text.text):
            backends.setdefault(text.family, set()).add(text.backend)
    for family, b in backends.items():
        if {"legacy", "nft"} <= b:
            findings.append(
                Finding(
                    "TW-LEGACY-AND-NFT",
                    "medium",
                    family,
                    f"both legacy (x_tables) and nf_tables {FAMILY_LABEL[family]} rules are loaded: a packet "
                    "must pass both, and each tool shows only its own half",
                )
            )
    return findings


def _unread_table_findings(family: str, rulesets: Sequence) -> List[Finding]:
    return [
        Finding("TW-TABLE-NOT-READ", "high", family, unread_table_note(family, label), evidence=[f"{source}: table {label}"])
        for source, label in unread_tables(family, rulesets)
    ]


def _probe(
    ctx: FamilyContext, src: tuple, ifaces: int, state: int, dst: Optional[tuple] = None, proto: tuple = PROTO_ALL
) -> List[Outcome]:
    """A host-level check (loopback, anti-spoofing, established): these are about the filter
    rules, so nat chains (whose decision for such traffic is made elsewhere) are skipped."""
    box = make_box(
        src, dst if dst is not None else ctx.remote_targets, ifaces, ctx.universe.all_mask, proto=proto, state=state
    )
    return ctx.evaluator().local_input([box], nat=False)


def _policy_findings(ctx: FamilyContext, new: Sequence[Outcome]) -> List[Finding]:
    family = ctx.family
    findings: List[Finding] = []
    if not ctx.remote_targets:
        return findings
    # default deny: does any new connection reach the end of INPUT and get accepted by the policy?
    by_policy = [o for o in new if o.verdict == V_ACCEPT and accepted_by_policy(o.decided_by)]
    if by_policy:
        findings.append(
            Finding(
                "TW-NO-DEFAULT-DENY",
                "medium",
                family,
                "new connections not matched by any rule are accepted (no default deny)",
                cis=CIS[(family, "default-deny")],
                evidence=sorted(set(cite([d for o in by_policy for d in o.decided_by if d.policy]))),
            )
        )
    for rs in ctx.rulesets:
        for base in rs.base_chains:
            if base.table == "filter" and base.chain in ("FORWARD", "OUTPUT"):
                chain = rs.chain(base.table, base.chain)
                if chain is not None and chain.policy == "ACCEPT" and len(chain) == 0:
                    findings.append(
                        Finding(
                            "TW-NO-DEFAULT-DENY",
                            "low",
                            family,
                            f"{base.chain} has policy ACCEPT and no rules",
                            cis=CIS[(family, "default-deny")],
                            evidence=[f"{rs.source}: filter {base.chain} policy ACCEPT"],
                        )
                    )
    # loopback: traffic on lo between loopback addresses must be accepted
    lo_mask = ctx.universe.mask("lo")
    loop = loopback_addresses(family)
    lo_out = _probe(ctx, loop, lo_mask, CT_NEW, dst=loop)
    if any(o.verdict != V_ACCEPT for o in lo_out):
        findings.append(
            Finding(
                "TW-LOOPBACK-NOT-ACCEPTED",
                "medium",
                family,
                "some new connections on the loopback interface are dropped",
                cis=CIS[(family, "loopback")],
                evidence=sorted(set(cite([d for o in lo_out if o.verdict != V_ACCEPT for d in o.decided_by])))[:5],
            )
        )
    # (tcp stands for every protocol here: anti-spoofing rules do not name one)
    spoof = _probe(ctx, loop, ctx.remote_ifaces, CT_NEW, proto=((6, 6),))
    if ctx.remote_ifaces and any(o.verdict == V_ACCEPT for o in spoof):
        findings.append(
            Finding(
                "TW-SPOOFED-LOOPBACK",
                "low",
                family,
                "packets from a loopback source arriving on other interfaces are not dropped "
                "by a rule (the kernel drops them as martians, but the CIS control asks for the rule)",
                cis=CIS[(family, "loopback")],
            )
        )
    est = _probe(ctx, remote_sources(family), ctx.remote_ifaces, CT_ESTABLISHED)
    if not any(o.verdict == V_ACCEPT for o in est):
        findings.append(
            Finding(
                "TW-ESTABLISHED-DROPPED",
                "low",
                family,
                "packets of established connections are dropped: replies to this host's "
                "own outbound connections cannot come back",
                cis=CIS[(family, "established")],
            )
        )
    return findings
