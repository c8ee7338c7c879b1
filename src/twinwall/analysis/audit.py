"""Per listening socket and per family: can a new connection from elsewhere reach it?

One evaluator walk per family answers it for every socket at once: the packet set is "a NEW
tcp (or udp) packet from any remote source, on any non-loopback interface, to any of the host's
addresses, on any of the listening ports"; the walk splits it into regions with verdicts, and
each socket reads its own slice. Findings (CIS controls, family gaps...) are derived from those
verdicts and from a few more walks (loopback, spoofed loopback, default deny).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from twinwall.analysis.address_sets import AUDIT_SCHEMA, AUDIT_SCHEMA_VERBOSE, AddressSets
from twinwall.analysis.connection import ConnectionLegs, legs_decisions
from twinwall.analysis.frontends import combine_frontends, frontends_of
from twinwall.analysis.ndp import NeighbourReach, essential_icmpv6_dropped, neighbour_discovery, on_link_prefixes
from twinwall.analysis.published import family_rows, merge_published
from twinwall.analysis.verdicts import (
    CLIENT_PORTS,
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
    VerdictsWritten,
    cite,
    decisions,
    decided_fields,
    display_address,
    intern_verdicts,
)
from twinwall.analysis.context import FamilyContext, build_contexts, socket_destinations
from twinwall.analysis.evaluator import V_ACCEPT, V_DROP, V_REJECT, Outcome, accepted_by_policy
from twinwall.analysis.netfilter_walk import hook_stages
from twinwall.analysis.parallel import job_alone, run_jobs, worth_forking
from twinwall.netfilter.packetset import (
    Box,
    CT_ESTABLISHED,
    CT_NEW,
    DPORT,
    DST,
    IIF,
    NDIMS,
    PROTO,
    PROTO_ALL,
    SPORT,
    SRC,
    box_and,
    box_meets,
    covers,
    format_address,
    iv_contains,
    loopback_addresses,
    make_box,
    remote_sources,
)
from twinwall.findings import CATALOGUE, SEVERITIES, fix_line, kind
from twinwall.loader import import_parsers, load_rulesets, ruleset_label, unread_table_note, unread_tables
from twinwall.model import (
    FAMILIES,
    FAMILY_LABEL,
    FORWARDING_SYSCTL,
    IPV4,
    IPV6,
    PROTO_NUM,
    HostSnapshot,
    WILDCARD_ADDRESSES,
    ListeningSocket,
    is_loopback_address,
    merge_same_sockets,
)

from twinwall.netfilter.ruleset import ACCEPT, DROP, NO_TABLE, REJECT, Decision, Rule, Ruleset


# a subject's decisions: (family, the decision), as the finding cites them
Cited = Tuple[str, Decision]

# how many services a grouped finding's message names (JSON lists every one)
MESSAGE_SERVICES = 12


@dataclass
class Finding:
    """One finding: a catalogued kind (``id``) about one cause, with its subjects.

    ``service``/``row`` name the single service it is about; a finding grouped by cause lists
    every service it covers in ``services`` (and their table rows in ``rows``). ``decided_by``
    holds the decisions as objects (the rule, its table, chain, number and line), ``evidence``
    the same cited as text (plus facts that are not rules)."""

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
    services: List[Dict] = field(default_factory=list)
    rows: List[int] = field(default_factory=list)
    hook: Optional[str] = None  # "input", "forward", "output": where the packets meet it
    decided_by: List[Cited] = field(default_factory=list)
    fix: str = ""

    def table_rows(self) -> List[int]:
        return self.rows or ([] if self.row is None else [self.row])

    def to_json(self, files: Optional[Dict[str, str]] = None) -> Dict:
        """``files``: ruleset label -> the file (or command) it was read from."""
        k = CATALOGUE.get(self.id)
        return {
            "frontend": self.frontend,
            "id": self.id,
            "severity": self.severity,
            "title": k.title if k else None,
            "family": self.family,
            "hook": self.hook,
            "service": self.service,
            "services": self.services,
            "message": self.message,
            "cis": self.cis,
            "evidence": self.evidence,
            "decided_by": [decision_json(fam, d, files or {}) for fam, d in self.decided_by],
            "fix": self.fix,
            "remedy": k.remedy if k else None,
        }


def decision_json(family: str, d: Decision, files: Dict[str, str]) -> Dict:
    """A decision as a finding cites it: where the rule is (file, line, nft handle) as well as
    what it says."""
    out = d.to_dict()
    out["family"] = family
    out["action"] = d.action or None
    out["file"] = files.get(d.source)
    out["line"] = d.line
    if d.handle is not None:
        out["handle"] = d.handle
    return out


def finding(
    finding_id: str,
    family: Optional[str],
    message: str,
    *,
    severity: Optional[str] = None,
    decided: Sequence[Cited] = (),
    evidence: Optional[List[str]] = None,
    subject: Optional[Dict[str, str]] = None,
    **more,
) -> Finding:
    """A Finding of a catalogued kind: default severity, CIS reference and fix line from the
    catalogue (``severity`` only where the kind's ``severity_rule`` changes it); ``evidence``
    defaults to the cited decisions; ``subject`` fills the fix template."""
    k = kind(finding_id)
    if evidence is None:
        evidence = cite_families(decided)
    return Finding(
        finding_id,
        severity or k.severity,
        family,
        message,
        cis=k.cis(family),
        evidence=evidence,
        decided_by=list(decided),
        fix=fix_line(finding_id, family, **(subject or {})),
        **more,
    )


def cite_families(decided: Sequence[Cited]) -> List[str]:
    """Evidence lines of (family, decision) pairs, each led by its family when both appear."""
    families = list(dict.fromkeys(f for f, _ in decided))
    if len(families) < 2:
        return cite([d for _, d in decided])
    return [f"{FAMILY_LABEL[f]}: {line}" for f in families for line in cite([d for g, d in decided if g == f])]


@dataclass
class AuditReport:
    snapshot: HostSnapshot
    services: List[ServiceReport]
    findings: List[Finding]
    rulesets: List[Dict]
    frontends: Dict[str, List[str]] = field(default_factory=dict)

    def to_json(self, verbose: bool = False, stream: bool = False) -> Dict:
        """The audit document: ``twinwall.audit/2``, each distinct address list once in
        ``address_sets`` and cited by index (``analysis.address_sets``); ``verbose``: the
        ``twinwall.audit/1`` form, every list inline. ``stream``: its services an iterator
        that converts each as it is read (the writer of the document, report.json_out, reads
        it in order: the services, then ``address_sets``, which they fill); 2,000 services'
        verdicts are megabytes of dicts otherwise built all at once."""
        snap = self.snapshot
        files = {ruleset_label(t): t.source for t in snap.rulesets}
        sets = None if verbose else AddressSets()
        written = VerdictsWritten(self.services)  # (each shared verdict's JSON made once)
        doc: Dict[str, Any] = {
            "schema": AUDIT_SCHEMA_VERBOSE if verbose else AUDIT_SCHEMA,
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
            "services": (s.to_json(sets, written) for s in self.services) if stream else [s.to_json(sets, written) for s in self.services],
            "findings": [f.to_json(files) for f in self.findings],
        }
        if sets is not None:
            doc["address_sets"] = sets.lists
        return doc


# ---------------------------------------------------------------------------------------------


def audit_snapshot(
    snapshot: HostSnapshot, keep_text: bool = True, jobs: Optional[int] = None, compare_egress: bool = True,
    meanwhile: Optional[Callable[[], object]] = None,
) -> AuditReport:
    """Audit a host.

    ``keep_text=False`` lets the snapshot's ruleset texts go once parsed. The two families are
    independent questions; on a large ruleset (``jobs`` None: decided from the input size) the
    IPv6 half runs in a forked process while this one does IPv4. ``compare_egress=False`` skips
    comparing the families' output and forward rules (a second parse and a diff walk), for callers
    that only want the services' statuses. ``meanwhile``: what the caller does with the report
    needs first (importing its writer), done while a forked half is still working (run_jobs)."""
    sockets = _dedupe(snapshot.sockets)
    early = _legacy_and_nft_findings(snapshot)  # reads the texts before parsing frees them
    parallel = worth_forking(snapshot) if jobs is None else jobs > 1
    if parallel:
        import_parsers(snapshot)
    audits = [partial(audit_family, snapshot, fam, sockets, keep_text) for fam in FAMILIES]
    # a host too small to fork for: its egress comparison, most of its audit, is walked first
    # and compared in a child while this process audits the families
    egress_rules = _egress_rulesets(snapshot, keep_text) if compare_egress and not parallel else None
    egress: Optional[List[str]] = None
    if egress_rules is not None:
        halves: List[FamilyAudit] = []
        egress = _egress_lines(snapshot, egress_rules, lambda: halves.extend(run_jobs(audits, False)), meanwhile)
    else:
        halves = run_jobs(audits, parallel, meanwhile)
    results = dict(zip(FAMILIES, halves))
    services = [
        ServiceReport(sock, {f: results[f].verdicts[i] for f in FAMILIES}) for i, sock in enumerate(sockets)
    ]
    services += merge_published([results[f].published for f in FAMILIES])
    findings = _service_findings(services, snapshot) + early
    for f in FAMILIES:
        findings += results[f].findings
    if compare_egress:
        findings += _egress_forward_findings(snapshot, results, keep_text, egress)
    frontends = combine_frontends(
        {f: results[f].frontends for f in FAMILIES}, {f: bool(results[f].summary) for f in FAMILIES}
    )
    for fnd in findings:
        if fnd.family and frontends.get(fnd.family) and not fnd.frontend:
            fnd.frontend = ", ".join(frontends[fnd.family])
    findings.sort(key=lambda fnd: (-SEVERITIES.index(fnd.severity), fnd.id, fnd.service or "", fnd.family or ""))
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
    logs = may_log(snapshot, family)  # (before parsing frees the texts)
    if not keep_text and job_alone():
        # the other family's dumps are the other process's to read: this one's copy goes (a
        # blocklist's other dump is megabytes, held for nothing through this family's walk)
        for text in snapshot.rulesets:
            if text.family not in (family, "inet"):
                text.text = ""
    # (the walk reads a blocklist's stretch of rules as one run: see parse_iptables_save)
    rulesets = load_rulesets(snapshot, keep_text=keep_text, families=(family,), stretches=True)
    contexts = build_contexts(snapshot, rulesets, assume_named=True)
    ctx = contexts[family]
    disabled = family == IPV6 and snapshot.ipv6.enabled is False
    # one walk answers every socket, the published ports and the default-deny check
    # the rules that log are seen only by a trace of the walk: only when a dump holds one
    logged = _LogSeen() if logs else None
    outcomes = (
        ctx.evaluator(logged, compact=True).local_input([remote_new_connections(ctx)])
        if ctx.rules_known and ctx.remote_targets and ctx.remote_ifaces and not disabled
        else []
    )
    # IPv6: a service is reachable only where neighbour discovery passes too (analysis.ndp)
    ndp = neighbour_discovery(ctx, on_link_prefixes(snapshot)) if outcomes else None
    # and only where the connection's further packets pass too (analysis.connection)
    legs = ConnectionLegs.of(ctx) if outcomes else None
    verdicts = _family_verdicts(ctx, sockets, disabled, outcomes, ndp, snapshot.ipv6.disabled_interfaces, legs)
    # joined with the other family's later; a DNAT elsewhere needs the host to forward
    published = family_rows(contexts, family, outcomes, snapshot.forwarding(family))
    findings = _host_findings(ctx, snapshot, outcomes, logged) + _unread_table_findings(family, rulesets[family])
    if outcomes:
        findings += _icmpv6_findings(ctx, ndp)
    mine = rulesets[family]
    summary = [
        {"family": rs.family, "source": rs.source, "rules": rs.rule_count(), "tables": sorted(rs.tables),
         **_assumed_addresses(ctx, rs)}
        for rs in mine
        # an empty source beside a non-empty one (nft with only iptables-nft tables) is noise
        if rs.tables or not any(other.tables for other in mine)
    ]
    # (the family's rulesets and walk are freed here even in a process of its own: kept until
    # its exit they saved ~70 ms on many small chains' 100k audit, but stayed beside the result's
    # pickle and raised a blocklist's peak by 6-7 MiB, over the restore tools')
    return FamilyAudit(family, verdicts, published, findings, summary, frontends_of(mine))


def _assumed_addresses(ctx: FamilyContext, rs: Ruleset) -> Dict[str, Any]:
    """A ruleset's summary's account of the addresses taken as the host's because its input
    rules name them (context.assumed_from_rules): none, or each with the rule that names it."""
    mine = [d for d in ctx.assumed if d in rs.input_destinations]
    if not mine:
        return {}
    out: Dict[str, Any] = {"assumed_addresses": [
        {"address": d.address, "table": d.table, "chain": d.chain, "rule_number": d.rule_number,
         **({"line": d.line} if d.line is not None else {}),
         **({"handle": d.handle} if d.handle is not None else {}), "rule": d.rule}
        for d in mine
    ]}
    if ctx.assumed_more:
        out["assumed_more"] = True
    return out


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
    legs: Optional[ConnectionLegs] = None,
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
        # sockets whose ports meet the same regions (and the same later-packet denials) get the
        # same verdict: the port only narrows each region to itself (a kube node's 2,000 sockets
        # meet ~140 distinct sets of regions per family, a blocklisted host's 7)
        verdict_memo: Dict[tuple, Tuple[FamilyVerdict, bool]] = {}
        leg_ports = legs.port_constraints() if legs is not None else ()
        for i, sock, dsts in todo:
            candidates = index.candidates(sock.port)
            runs = index.denied_runs(sock.port)
            key = _verdict_memo_key(sock, dsts, candidates, runs, leg_ports)
            known = verdict_memo.get(key) if key is not None else None
            if known is None:
                known = _socket_verdict(ctx, sock, dsts, candidates, reach_memo, ndp, legs, runs)
                if key is not None:
                    verdict_memo[key] = known
            verdict, ndp_cut = known
            if ndp_cut and ndp is not None:
                ndp.narrowed.append(f"{sock.protocol}/{sock.port}")
            out[i] = verdict
    return intern_verdicts(out)  # type: ignore[arg-type]


def _verdict_memo_key(sock: ListeningSocket, dsts: tuple, candidates: Sequence[Outcome],
                      runs: Sequence[Tuple[tuple, List[Outcome], FrozenSet[str]]],
                      leg_ports: Sequence[Optional[tuple]]) -> Optional[tuple]:
    """What a socket's verdict depends on beyond its port: its protocol, addresses and device,
    the regions its port meets (_PortIndex: each holds the port whole) and which of the later
    packets' denials hold the port (ConnectionLegs.port_constraints). None where a region was
    rewritten by NAT: its origin's port maps to the socket's through the rewrite, which is
    worked out per socket."""
    for o in candidates:
        if o.origin is not o.box and o.verdict == V_ACCEPT:
            return None
    port = sock.port
    return (sock.protocol, dsts, sock.interface, tuple(map(id, candidates)), tuple([id(r[1]) for r in runs]),
            tuple([v is None or iv_contains(v, port) for v in leg_ports]))


class _PortIndex:
    """Outcomes by destination port, so each socket looks only at the regions that can hold it.

    Accepted regions are indexed by the port the packets reached (after NAT), denied ones by the
    port they were sent to."""

    SMALL = 64  # outcomes covering at most this many ports are indexed port by port

    def __init__(self, outcomes: Sequence[Outcome]):
        self.by_port: Dict[int, List[Outcome]] = {}
        self.wide: List[Tuple[tuple, Outcome]] = []
        small: Dict[int, Tuple[tuple, bool]] = {}  # id(ports) -> (ports, few enough)
        for o in outcomes:
            ports = (o.box if o.verdict == V_ACCEPT else o.origin)[DPORT]
            # (a blocklist's 100,000 regions share one port set: sized once, by identity)
            known = small.get(id(ports))
            if known is None or known[0] is not ports:
                known = small[id(ports)] = (ports, sum(hi - lo + 1 for lo, hi in ports) <= self.SMALL)
            if known[1]:
                for lo, hi in ports:
                    for p in range(lo, hi + 1):
                        self.by_port.setdefault(p, []).append(o)
            else:
                self.wide.append((ports, o))

        # consecutive wide denied regions that differ only where no socket looks (a blocklist's
        # 100,000 sources): a socket tests each run once, not each region (rules x sockets)
        runs: List[Tuple[Optional[tuple], List[Outcome]]] = []  # None: an accepted region ends a run
        narrow: List[Tuple[tuple, Outcome]] = []
        proto, dport, dst, iif = _SOCKET_DIMS
        for ports, o in self.wide:
            last_origin = runs[-1][0] if runs else None
            if o.verdict != V_ACCEPT and last_origin is not None:
                origin = o.origin  # (the dimensions of _SOCKET_DIMS, spelled out: per region)
                if (origin[proto] is last_origin[proto] and origin[dport] is last_origin[dport]
                        and origin[dst] is last_origin[dst] and origin[iif] is last_origin[iif]):
                    runs[-1][1].append(o)
                    continue
            if o.verdict == V_ACCEPT:
                narrow.append((ports, o))
                runs.append((None, []))
            else:
                runs.append((o.origin, [o]))
        # (with the undecidable matches of each run's members, gathered once: not per socket)
        self.runs: List[Tuple[tuple, List[Outcome], FrozenSet[str]]] = [
            (origin, members, frozenset(u for o in members for u in o.uncertain))
            for origin, members in runs if origin is not None
        ]
        self.wide = narrow

    def candidates(self, port: int) -> List[Outcome]:
        """The accepted and the port-indexed denied regions that may hold ``port``, in order."""
        found = list(self.by_port.get(port, ()))
        for ports, o in self.wide:
            if iv_contains(ports, port):
                found.append(o)
        return found

    def denied_runs(self, port: int) -> List[Tuple[tuple, List[Outcome], FrozenSet[str]]]:
        """The runs of wide denied regions that may hold ``port``: (a member's origin, members,
        their undecidable matches)."""
        return [r for r in self.runs if iv_contains(r[0][DPORT], port)]


_SOCKET_DIMS = (PROTO, DPORT, DST, IIF)  # the dimensions a socket's selector tests


def _socket_verdict(
    ctx: FamilyContext,
    sock: ListeningSocket,
    dsts: tuple,
    outcomes: Sequence[Outcome],
    memo: Dict[tuple, Reach],
    ndp: Optional[NeighbourReach] = None,
    legs: Optional[ConnectionLegs] = None,
    denied_runs: Sequence[Tuple[tuple, List[Outcome], FrozenSet[str]]] = (),
) -> Tuple[FamilyVerdict, bool]:
    """A socket's verdict in one family, from the regions its port meets (``outcomes``) and
    the runs of denied ones (``denied_runs``); and whether neighbour discovery cut it (the
    caller names the service in ``ndp.narrowed``)."""
    num = PROTO_NUM[sock.protocol]
    selector: List[Tuple[int, Any]] = [(PROTO, ((num, num),)), (DPORT, ((sock.port, sock.port),)), (DST, dsts)]
    if sock.interface:
        selector.append((IIF, ctx.universe.mask(sock.interface)))
    selector_t = tuple(selector)
    accepted: List[Tuple[Box, Outcome]] = []
    denied: List[Outcome] = []
    for o in outcomes:
        if o.verdict == V_ACCEPT:
            if o.origin is not o.box and not iv_contains(o.origin[DPORT], sock.port):
                continue  # sent to another port, NAT brought it here: that port's own row
            b = box_and(o.box, selector_t)
            if b is not None:
                accepted.append((b, o))
        elif box_meets(o.origin, selector_t):
            denied.append(o)
    undecided = {u for _, o in accepted for u in o.uncertain} | {u for o in denied if o.uncertain for u in o.uncertain}
    for origin, members, members_undecided in denied_runs:
        if box_meets(origin, selector_t):
            denied.extend(members)
            undecided |= members_undecided
    uncertain = sorted(undecided)
    later_cut: List[Outcome] = []
    if accepted and legs is not None:
        kept_legs: List[Tuple[Box, Outcome]] = []
        for b, o in accepted:
            pieces, cutters, unsure = legs.cut(b, o)
            kept_legs.extend((p, o) for p in pieces)
            later_cut.extend(cutters)
            if unsure:
                uncertain = sorted(set(uncertain) | set(unsure))
        if not kept_legs:
            return FamilyVerdict(
                FILTERED,
                decided_by=decisions([o for _, o in accepted])[:MAX_NDP_CITED] + legs_decisions(later_cut, MAX_NDP_CITED),
                denied_sources=["any"],
                uncertain=uncertain,
                reason=f"the firewall accepts the connection's first packet, but {legs.reason(later_cut)}",
            ), False
        accepted = kept_legs
    ndp_cut = False
    if accepted and ndp is not None and ndp.cuts_connections:
        kept = [(piece, o) for b, o in accepted for piece in ndp.cut_outcome(b, o)]
        if len(kept) != len(accepted) or any(p != b for (p, _), (b, _) in zip(kept, accepted)):
            ndp_cut = True
            uncertain = sorted(set(uncertain) | set(ndp.uncertain()))
        if not kept:
            return FamilyVerdict(
                FILTERED,
                decided_by=ndp.decisions(fresh=True)[:MAX_NDP_CITED],
                denied_sources=["any"],
                uncertain=uncertain,
                reason=f"the firewall accepts the connection, but {ndp.reason(fresh=True)}: no IPv6 client on the "
                "link can reach the host",
            ), ndp_cut
        accepted = kept
    if not accepted:
        return FamilyVerdict(
            FILTERED,
            **decided_fields(denied),
            denied_sources=["any"],
            uncertain=uncertain,
            reason="every new connection is dropped or rejected",
        ), ndp_cut
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
    if verdict.status == OPEN:
        _open_at_some_addresses_only(ctx, verdict, boxes, dsts, denied)
    if ndp_cut and ndp is not None:
        verdict.decided_by += [d for d in ndp.decisions(fresh=True)[:MAX_NDP_CITED] if d not in verdict.decided_by]
        verdict.reason += f"; {ndp.reason(fresh=True)} for the others"
    if later_cut and legs is not None:
        verdict.decided_by += [d for d in legs_decisions(later_cut, MAX_NDP_CITED) if d not in verdict.decided_by]
        verdict.reason += f"; {legs.reason(later_cut)} for the others"
    return verdict, ndp_cut


MAX_ADDRESSES_NAMED = 64  # host addresses checked one by one for a per-address restriction


def _open_at_some_addresses_only(ctx: FamilyContext, verdict: FamilyVerdict, boxes: List[Box], dsts: tuple,
                                 denied: Sequence[Outcome]) -> None:
    """An "open" socket must take every remote source at every address it listens on: a rule
    with ``-d`` (``ip daddr``) that drops it at one of the host's addresses makes it restricted,
    with the addresses that take everyone (``allowed_addresses``). Over some interface: a rule
    that takes each address only from its own interface (``addrtype --limit-iface-in``, the
    strong host model) still lets every client in at the address of its own link."""
    target = list(boxes[0])
    target[SRC] = remote_sources(ctx.family)
    target[SPORT] = CLIENT_PORTS
    target[DST] = dsts
    dims = (SRC, SPORT, DST)
    if covers(boxes, tuple(target), dims):
        return
    everyone: List[str] = []
    others: List[str] = []
    if sum(hi - lo + 1 for lo, hi in dsts) <= MAX_ADDRESSES_NAMED:
        for lo, hi in dsts:
            for a in range(lo, hi + 1):
                target[DST] = ((a, a),)
                (everyone if covers(boxes, tuple(target), dims) else others).append(format_address(a, ctx.family))
    verdict.status = RESTRICTED
    verdict.allowed_addresses = everyone
    # the rules that accept it and those that turn it away at the other addresses
    cut = decided_fields(denied)
    verdict.decided_by = list(dict.fromkeys(verdict.decided_by + cut["decided_by"]))
    verdict.decided_by_more = verdict.decided_by_more or cut["decided_by_more"]
    if everyone:
        verdict.reason = (f"accepted from every remote source at {', '.join(everyone)}; at "
                          f"{', '.join(others[:4]) + (',...' if len(others) > 4 else '')} only from some or none")
    else:
        verdict.reason = "accepted from every remote source at none of the host's addresses by itself: each address turns some away"


MAX_NDP_CITED = 6  # rules cited for dropping neighbour discovery, per verdict


# ---------------------------------------------------------------------------------------------
# findings


def _service_findings(services: Sequence[ServiceReport], snapshot: HostSnapshot) -> List[Finding]:
    """Family gaps, services no rule covers and undecidable matches: one finding per cause,
    listing the services it affects (a host whose ip6tables was never configured gets one
    family gap for all its services, not one per socket and kind)."""
    gaps = [g for g in _gap_subjects(services) if _forwards(snapshot, services, g.rows[g.wide], g.wide)]
    findings = _group_gaps(gaps, services)
    said = {(g.rows[g.wide], g.wide) for g in gaps}  # a gap already says "no rule, only the policy"
    no_rule: Dict[tuple, List[int]] = {}
    uncertain: Dict[tuple, List[int]] = {}
    for row, svc in enumerate(services):
        for family in FAMILIES:
            v = svc.verdicts[family]
            if v.status in (OPEN, RESTRICTED) and v.by_policy and (row, family) not in said:
                if _forwards(snapshot, services, row, family):
                    policies = tuple(d for d in v.decided_by if d.policy)
                    no_rule.setdefault((family, policies), []).append(row)
            if v.uncertain and v.status in (OPEN, RESTRICTED, FILTERED):
                for u in v.uncertain:
                    uncertain.setdefault((family, u), []).append(row)
    for (family, policies), rows in no_rule.items():
        label = FAMILY_LABEL[family]
        names = _service_names(services, rows)
        if len(rows) == 1:
            message = (f"{services[rows[0]].label()} is reachable over {label} only because a chain "
                       "policy is ACCEPT: no rule covers it")
        else:
            message = (f"{label} {_cause_text(policies)}: {len(rows)} services are reachable over {label} only "
                       f"because the chain policy is ACCEPT (no rule covers them): {_labels(services, rows)}")
        findings.append(_about(services, rows, finding(
            "TW-NO-RULE", family, message, decided=[(family, d) for d in policies],
            subject={"services": names}, hook=_hook(services, rows))))
    # rules that make the very same services uncertain are one cause (kube-proxy's statistic
    # rules of one service's endpoints): one finding names them all
    causes: Dict[tuple, List[str]] = {}
    for (family, entry), rows in uncertain.items():
        causes.setdefault((family, tuple(rows)), []).append(entry)
    for (family, rows_t), entries in causes.items():
        rows = list(rows_t)
        label = FAMILY_LABEL[family]
        if len(rows) == 1:
            message = (f"{services[rows[0]].label()} over {label}: the verdict assumes matches twinwall "
                       "cannot decide may go either way")
        else:
            message = (f"{_listed(entries)}: the {label} verdicts of {len(rows)} services assume "
                       f"{'it' if len(entries) == 1 else 'they'} may go either way: {_labels(services, rows)}")
        verdict = services[rows[0]].verdicts[family]
        rules = [(family, d) for e in entries[:MAX_CITED] for d in _decisions_named(verdict, e)]
        findings.append(_about(services, rows, finding(
            "TW-UNCERTAIN", family, message, decided=rules, evidence=entries[:8], hook=_hook(services, rows))))
    return findings


@dataclass
class _Gap:
    """One service (or one pair of twin sockets) reached more widely over ``wide``."""

    label: str
    verdicts: Dict[str, FamilyVerdict]
    rows: Dict[str, int]  # per family, the row whose verdict is compared
    wide: str
    narrow: str

    @property
    def statuses(self) -> Tuple[str, str]:
        return self.verdicts[self.wide].status, self.verdicts[self.narrow].status

    def cause(self) -> Tuple[Decision, ...]:
        """What lets the wider family in: its accepting rules, or the ACCEPT policies."""
        v = self.verdicts[self.wide]
        accepts = tuple(d for d in v.decided_by if d.policy is None and d.action == ACCEPT)
        return accepts or tuple(d for d in v.decided_by if d.policy == "ACCEPT")


def _gap_subjects(services: Sequence[ServiceReport]) -> List[_Gap]:
    gaps = []
    for row, svc in enumerate(services):
        gap = _family_gap(svc.label(), svc.verdicts, {IPV4: row, IPV6: row})
        if gap is not None:
            gaps.append(gap)
    return gaps + _twin_socket_gaps(services)


def _family_gap(label: str, verdicts: Dict[str, FamilyVerdict], rows: Dict[str, int]) -> Optional[_Gap]:
    """A gap when one family reaches the service more widely than the other; it belongs to the
    row (``rows``: per family) of the wider one."""
    v4, v6 = verdicts[IPV4], verdicts[IPV6]
    if not (v4.status in REACH_RANK and v6.status in REACH_RANK and v4.status != v6.status):
        return None
    wide, narrow = (IPV4, IPV6) if REACH_RANK[v4.status] > REACH_RANK[v6.status] else (IPV6, IPV4)
    return _Gap(label, verdicts, rows, wide, narrow)


def _group_gaps(gaps: Sequence[_Gap], services: Sequence[ServiceReport]) -> List[Finding]:
    groups: Dict[tuple, List[_Gap]] = {}
    for g in gaps:
        groups.setdefault((g.wide, g.statuses, g.cause()), []).append(g)
    findings = []
    for (wide, (ws, ns), cause), members in groups.items():
        narrow = members[0].narrow
        wl, nl = FAMILY_LABEL[wide], FAMILY_LABEL[narrow]
        rows = [g.rows[wide] for g in members]
        if len(members) == 1:
            only = members[0].verdicts
            message = (f"{members[0].label} is {only[wide].summary()} over {wl} but {only[narrow].summary()} "
                       f"over {nl}: the {wl} firewall does not match its twin")
        else:
            message = (f"{wl} {_cause_text(cause)}: {len(members)} services are {ws} over {wl} but {ns} over "
                       f"{nl}: {_listed([g.label for g in members])}")
        f = finding(
            "TW-FAMILY-GAP",
            wide,
            message,
            # open over one family and filtered over the other is the seeds' bypass
            severity=None if (ws, ns) == (OPEN, FILTERED) else "medium",
            decided=_differing(members),
            subject={"services": _service_names(services, rows)},
            hook=_hook(services, rows),
        )
        findings.append(_about(services, rows, f, [_subject(services[g.rows[wide]], g.verdicts) for g in members]))
    return findings


def _differing(members: Sequence[_Gap]) -> List[Cited]:
    """The decisions that make the families differ: what accepts in the wider family and what
    drops in the narrower one, leaving out what both walk through alike (an inet table's
    shared vmap jump). Falls back to the first steps of each trail."""
    out: Dict[Cited, None] = {}
    for g in members:
        shared = {_same(d) for d in g.verdicts[g.wide].decided_by} & {_same(d) for d in g.verdicts[g.narrow].decided_by}
        # a restricted twin's accept rules say what to mirror, its drops what it turns away
        narrow_ends = (DROP, REJECT, ACCEPT) if g.verdicts[g.narrow].status == RESTRICTED else (DROP, REJECT)
        for family, ends in ((g.wide, (ACCEPT,)), (g.narrow, narrow_ends)):
            trail = g.verdicts[family].decided_by
            picked = [d for d in trail if (d.policy or d.action) in ends and _same(d) not in shared]
            for d in picked or trail[:3]:
                out.setdefault((family, d), None)
    wide = members[0].wide
    return sorted(out, key=lambda c: c[0] != wide)[:2 * MAX_CITED]


MAX_CITED = 6


def _same(d: Decision) -> tuple:
    """A decision as both families can share it (one inet table is one rule for both)."""
    return (d.source, d.table, d.chain, d.rule_number, d.rule, d.policy)


def _cause_text(cause: Sequence[Decision]) -> str:
    if not cause:
        return "rules"
    if cause[0].table == NO_TABLE:
        # (not its description, "no table hooks INPUT: nothing filters it", after the family)
        return f"has no table on {cause[0].chain} (nothing filters it)"
    return cause[0].describe() + (f" (and {len(cause) - 1} more)" if len(cause) > 1 else "")


def _listed(texts: Sequence[str]) -> str:
    """``"a, b, c and 4 more"``: at most MESSAGE_SERVICES of them named."""
    more = len(texts) - MESSAGE_SERVICES
    return ", ".join(texts[:MESSAGE_SERVICES]) + (f" and {more} more" if more > 0 else "")


def _service_names(services: Sequence[ServiceReport], rows: Sequence[int]) -> str:
    return _listed(list(dict.fromkeys(services[r].name for r in rows)))


def _labels(services: Sequence[ServiceReport], rows: Sequence[int]) -> str:
    return _listed([services[r].label() for r in rows])


def _hook(services: Sequence[ServiceReport], rows: Sequence[int]) -> str:
    """Published services (DNAT to elsewhere) are decided in FORWARD, the others in INPUT."""
    return "forward" if all(services[r].dnat is not None for r in rows) else "input"


def _subject(svc: ServiceReport, verdicts: Optional[Dict[str, FamilyVerdict]] = None) -> Dict:
    s = svc.socket
    v = verdicts or svc.verdicts
    return {
        "service": svc.name,
        "protocol": s.protocol,
        "address": s.address,
        "port": s.port,
        "interface": s.interface,
        "process": s.process,
        "ipv4": v[IPV4].status,
        "ipv6": v[IPV6].status,
    }


def _about(services: Sequence[ServiceReport], rows: List[int], f: Finding, subjects: Optional[List[Dict]] = None) -> Finding:
    """Give a finding its services (``service`` too when there is one; ``row`` the first)."""
    f.rows = rows
    f.row = rows[0]
    f.services = subjects if subjects is not None else [_subject(services[r]) for r in rows]
    f.service = services[rows[0]].name if len(rows) == 1 else None
    return f


def _decisions_named(v: FamilyVerdict, entry: str) -> List[Decision]:
    """The rule an uncertain-match entry names ("limit (filter INPUT #3)"), from the trail."""
    return [d for d in v.decided_by if d.rule_number is not None and entry.endswith(f"({d.table} {d.chain} #{d.rule_number})")][:1]


def _forwards(snapshot: HostSnapshot, services: Sequence[ServiceReport], row: int, family: str) -> bool:
    """A published service (DNAT elsewhere) is reached only where the family forwards: not
    when the host's sysctl says forwarding is off (unknown offline: taken as on)."""
    return services[row].dnat is None or snapshot.forwarding(family) is not False


def _twin_socket_gaps(services: Sequence[ServiceReport]) -> List[_Gap]:
    """Family gaps between the two sockets of one service.

    Most daemons listen once per family (nginx's ``listen 80; listen [::]:80``, sshd, mysqld):
    an IPv4 socket and an IPv6-only one on the same port. Each is not-bound in the other family,
    so comparing a socket with itself never sees the gap; the pair is compared instead. Two
    sockets are twins when they share protocol, port and bound interface and are both bound to
    the wildcard address, or name the same process."""
    found: List[_Gap] = []
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
                gap = _family_gap(label, verdicts, {IPV4: r4, IPV6: r6})
                if gap is not None:
                    found.append(gap)
    return found


def _host_findings(
    ctx: FamilyContext, snapshot: HostSnapshot, outcomes: Sequence[Outcome], logged: Optional["_LogSeen"] = None
) -> List[Finding]:
    family = ctx.family
    label = FAMILY_LABEL[family]
    if family == IPV6 and snapshot.ipv6.enabled is False:
        return [
            Finding(
                "TW-IPV6-DISABLED",
                kind("TW-IPV6-DISABLED").severity,
                IPV6,
                "IPv6 is disabled on this host: the ip6tables controls do not apply",
                cis="CIS 4.4.3.x not applicable",
                evidence=list(snapshot.ipv6.evidence),
                fix=fix_line("TW-IPV6-DISABLED", IPV6),
            )
        ]
    if not ctx.rules_known:
        return [
            finding(
                "TW-NO-RULESET", family, f"no {label} ruleset was read: {label} verdicts are unknown",
                severity=None if snapshot.rulesets else "info",
            )
        ]
    return _policy_findings(ctx, snapshot, outcomes, logged)


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
                fix=fix_line("TW-ICMPV6-NDP-BLOCKED", IPV6),
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
                fix=fix_line("TW-ICMPV6-ESSENTIAL-BLOCKED", IPV6),
            )
        )
    return findings


# Comparing the families' output and forward hooks walks their whole packet space: on rulesets
# above this size (rules per family) the audit leaves it to `twinwall diff` and says so.
EGRESS_COMPARE_LIMIT = 20_000


def _egress_forward_findings(snapshot: HostSnapshot, results: Dict[str, FamilyAudit], texts_kept: bool,
                             lines: Optional[List[str]] = None) -> List[Finding]:
    """Where OUTPUT or FORWARD treat IPv4 and IPv6 differently (an egress block on tcp/25 that
    only IPv4 has): listening sockets cannot show it, so the audit points at `twinwall diff`,
    one finding per hook. FORWARD differences count only where a family forwards.
    The rules are parsed again for it: only possible while the snapshot's texts are kept.
    ``lines``: the comparison's, made before the families' audits were (_egress_rulesets)."""
    if snapshot.ipv6.enabled is False or not all(results[f].summary for f in FAMILIES):
        return []
    size = max(sum(row["rules"] for row in results[f].summary) for f in FAMILIES)
    if size > EGRESS_COMPARE_LIMIT or not texts_kept:
        return [
            finding(
                "TW-EGRESS-FORWARD-NOT-COMPARED", None,
                f"output and forward rules were not compared between the families ({size} rules): "
                "run 'twinwall diff' for that",
            )
        ]
    if lines is None:
        lines = _egress_lines(snapshot, load_rulesets(snapshot))
    findings = []
    for line in lines:
        hook = line.split(" ", 1)[0].split(",", 1)[0]
        evidence = [line]
        if hook == "forward":
            evidence.append(_forwarding_fact(snapshot))
        what = "forwarded" if hook == "forward" else "outgoing"
        findings.append(
            finding(
                "TW-EGRESS-FORWARD-DIFFER", None,
                f"IPv4 and IPv6 treat {what} traffic differently in {hook.upper()} (an egress block that only "
                "one family has, as in the tcp/25 story): see 'twinwall diff'",
                evidence=evidence, hook=hook, subject={"chain": hook.upper()},
            )
        )
    return findings


def _egress_rulesets(snapshot: HostSnapshot, texts_kept: bool) -> Optional[Dict[str, List[Ruleset]]]:
    """The rulesets _egress_forward_findings compares, read before the families are audited
    where it will compare them; None where it will not. (It decides again from the families'
    results, and compares them itself if this said no.)"""
    if snapshot.ipv6.enabled is False or not texts_kept or not all(snapshot.rulesets_for(f) for f in FAMILIES):
        return None
    rulesets = load_rulesets(snapshot)
    if max(sum(rs.rule_count() for rs in rulesets.get(f, ())) for f in FAMILIES) > EGRESS_COMPARE_LIMIT:
        return None
    return rulesets


def _egress_lines(snapshot: HostSnapshot, rulesets: Dict[str, List[Ruleset]],
                  alongside: Optional[Callable[[], object]] = None,
                  meanwhile: Optional[Callable[[], object]] = None) -> List[str]:
    """egress_forward_differences of the rulesets (``alongside``, ``meanwhile``: see there)."""
    # imported here, not at the top: the diff's walker and its tables cost ~40 ms of imports an
    # audit that skips the comparison (a large ruleset) does not need
    from twinwall.analysis.diff.compare import egress_forward_differences

    # neither family forwards (both sysctls 0; unknown counts as on): FORWARD rules decide
    # nothing, and are not compared (a router's or a Docker host's FORWARD chains are most of
    # the comparison's time)
    forwards = any(snapshot.forwarding(f) is not False for f in FAMILIES)
    return egress_forward_differences(build_contexts(snapshot, rulesets),
                                      ("forward", "output") if forwards else ("output",), alongside, meanwhile)


def _forwarding_fact(snapshot: HostSnapshot) -> str:
    """What the snapshot says of forwarding, one line (unknown offline)."""
    if not snapshot.sysctls:
        return "forwarding: unknown (no sysctls in the input): FORWARD reported as if forwarding were on"
    return ", ".join(f"{name} = {snapshot.sysctls.get(name, 'unknown')}" for name in FORWARDING_SYSCTL.values())


def _legacy_and_nft_findings(snapshot: HostSnapshot) -> List[Finding]:
    findings = []
    backends: Dict[str, Dict[str, List[str]]] = {}  # family -> backend -> the dumps holding rules
    for text in snapshot.rulesets:
        if text.format == "iptables-save" and (text.text.startswith("-A ") or "\n-A " in text.text):
            backends.setdefault(text.family, {}).setdefault(text.backend, []).append(ruleset_label(text))
        elif text.format == "nft-json":  # native nftables rules are nf_tables rules too
            from twinwall.parsers.nft_json import rule_families

            for family in rule_families(text.text):
                backends.setdefault(family, {}).setdefault("nft", []).append(ruleset_label(text))
    for family, b in backends.items():
        if {"legacy", "nft"} <= set(b):
            findings.append(
                finding(
                    "TW-LEGACY-AND-NFT", family,
                    f"both legacy (x_tables) and nf_tables {FAMILY_LABEL[family]} rules are loaded: a packet "
                    "must pass both, and each tool shows only its own half",
                    # the two halves, so the finding cites where each one was read
                    evidence=[f"{src}: legacy rules" for src in b["legacy"]]
                    + [f"{src}: nf_tables rules" for src in b["nft"]],
                )
            )
    return findings


def _unread_table_findings(family: str, rulesets: Sequence) -> List[Finding]:
    return [
        finding("TW-TABLE-NOT-READ", family, unread_table_note(family, label), evidence=[f"{source}: table {label}"])
        for source, label in unread_tables(family, rulesets)
    ]


def _probe(
    ctx: FamilyContext, src: tuple, ifaces: int, state: int, dst: Optional[tuple] = None, proto: tuple = PROTO_ALL,
    trace=None,
) -> List[Outcome]:
    """A host-level check (loopback, anti-spoofing, established): these are about the filter
    rules, so nat chains (whose decision for such traffic is made elsewhere) are skipped."""
    box = make_box(
        src, dst if dst is not None else ctx.remote_targets, ifaces, ctx.universe.all_mask, proto=proto, state=state
    )
    return ctx.evaluator(trace, compact=True).local_input([box], nat=False)


def may_log(snapshot: HostSnapshot, family: str) -> bool:
    """Whether any of the family's dumps can hold a logging rule (a text search, made before the
    texts are parsed and freed): the walks record what LOG rules see only then."""
    for text in snapshot.rulesets_for(family):
        body = text.text
        if text.format == "nft-json":
            if '"log"' in body:
                return True
        elif "LOG" in body and ("-j LOG" in body or "-j NFLOG" in body or "-j ULOG" in body):
            return True  # (one search of a dump without any: a blocklist's 60 MB, not three)
    return False


class _LogSeen:
    """An evaluator trace that keeps the packets logging rules see (LOG/NFLOG do not end
    evaluation, so the walk's outcomes do not name them)."""

    # what only logging rules see is all it keeps: the walk may take runs of rules that do not
    # log (analysis.chain_index.Run) at once, without telling it of each
    logging_only = True

    def __init__(self):
        self.boxes: List[Box] = []
        self.rules: Dict[int, Rule] = {}

    def __call__(self, event: str, depth: int, obj, flows) -> None:
        if event == "match" and isinstance(obj, Rule) and obj.rule_logs():
            self.boxes.extend(f.box for f in flows)
            self.rules.setdefault(id(obj), obj)

    def covers(self, box: Box) -> bool:
        return bool(self.boxes) and covers(self.boxes, box, range(NDIMS))

    def decisions(self, ctx: FamilyContext) -> List[Decision]:
        out = []
        for rule in self.rules.values():
            source = next((rs.source for rs in ctx.rulesets if rule in _chain_rules(rs, rule)), "")
            out.append(Decision(rule.table, rule.chain, rule.number, rule.text, None, source, rule.action,
                                rule.line, rule.handle))
        return out


def _chain_rules(rs, rule: Rule) -> List[Rule]:
    chain = rs.chain(rule.table, rule.chain)
    return [r for r in chain.rules if r is rule] if chain is not None else []


# how many dropped regions the drop-logging check looks at (a blocklist makes thousands)
LOG_CHECK_LIMIT = 2000


def _policy_findings(
    ctx: FamilyContext, snapshot: HostSnapshot, new: Sequence[Outcome], logged: Optional[_LogSeen]
) -> List[Finding]:
    family = ctx.family
    findings: List[Finding] = []
    if not ctx.remote_targets:
        return findings
    # default deny: does any new connection reach the end of INPUT and get accepted by the policy?
    by_policy = [o for o in new if o.verdict == V_ACCEPT and accepted_by_policy(o.decided_by)]
    if by_policy:
        policies = list(dict.fromkeys(d for o in by_policy for d in o.decided_by if d.policy))
        findings.append(
            finding(
                "TW-NO-DEFAULT-DENY", family, "new connections not matched by any rule are accepted (no default deny)",
                decided=[(family, d) for d in policies], evidence=sorted(set(cite(policies))), hook="input",
            )
        )
    forwarding = snapshot.forwarding(family)
    for rs in ctx.rulesets:
        for base in rs.base_chains:
            if base.table == "filter" and base.chain in ("FORWARD", "OUTPUT"):
                chain = rs.chain(base.table, base.chain)
                if chain is None or chain.policy != "ACCEPT" or len(chain) != 0:
                    continue
                evidence = [f"{rs.source}: filter {base.chain} policy ACCEPT"]
                if base.chain == "FORWARD":
                    if forwarding is False:
                        continue  # the host does not forward this family: FORWARD decides nothing
                    evidence.append(_forwarding_fact(snapshot))
                policy = Decision(base.table, base.chain, None, None, "ACCEPT", rs.source, "ACCEPT", chain.line)
                findings.append(
                    finding(
                        "TW-NO-DEFAULT-DENY", family, f"{base.chain} has policy ACCEPT and no rules",
                        severity="low", decided=[(family, policy)], evidence=evidence, hook=base.chain.lower(),
                        subject={"chain": base.chain},
                    )
                )
    for hook in ("forward", "output"):
        # nothing on the hook at all (no tables: an ip6tables nobody wrote) filters even less
        # than a filter chain with policy ACCEPT and no rules, found above
        if not ctx.rules_known or any(base.kind == "filter" for _, base in hook_stages(ctx.rulesets, hook)):
            continue
        name = hook.upper()
        evidence = [f"{FAMILY_LABEL[family]}: no table hooks {name}"]
        if hook == "forward":
            if forwarding is False:
                continue
            evidence.append(_forwarding_fact(snapshot))
        unfiltered = Decision(NO_TABLE, name, None, None, "ACCEPT", f"no table hooks {name}: nothing filters it", "ACCEPT")
        findings.append(
            finding(
                "TW-NO-DEFAULT-DENY", family, f"no table hooks {name}: nothing filters it",
                severity="low", decided=[(family, unfiltered)], evidence=evidence, hook=hook, subject={"chain": name},
            )
        )
    # loopback: traffic on lo between loopback addresses must be accepted, in INPUT and OUTPUT,
    # and no LOG rule should see it
    lo_mask = ctx.universe.mask("lo")
    loop = loopback_addresses(family)
    lo_logged = _LogSeen()
    lo_in = _probe(ctx, loop, lo_mask, CT_NEW, dst=loop, trace=lo_logged)
    lo_out = ctx.evaluator(lo_logged).hook_path(
        ("output",), [make_box(loop, loop, ctx.universe.all_mask, lo_mask, state=CT_NEW)], nat=False
    )
    for lo_chain, outcomes, where in (("INPUT", lo_in, "on"), ("OUTPUT", lo_out, "out of")):
        dropped = list(dict.fromkeys(d for o in outcomes if o.verdict != V_ACCEPT for d in o.decided_by))
        if dropped:
            findings.append(
                finding(
                    "TW-LOOPBACK-NOT-ACCEPTED", family,
                    f"some new connections {where} the loopback interface are dropped ({lo_chain})",
                    decided=[(family, d) for d in dropped[:MAX_CITED]], evidence=sorted(set(cite(dropped)))[:5],
                    hook=lo_chain.lower(), subject={"chain": lo_chain},
                )
            )
    if lo_logged.rules:
        rules = lo_logged.decisions(ctx)
        lo_chain = rules[0].chain if rules[0].chain in ("INPUT", "OUTPUT") else "INPUT"
        findings.append(
            finding(
                "TW-LOOPBACK-LOGGED", family,
                "loopback traffic is logged: local chatter floods the log and hides traffic from the network",
                decided=[(family, d) for d in rules[:MAX_CITED]], hook=lo_chain.lower(), subject={"chain": lo_chain},
            )
        )
    # (tcp stands for every protocol here: anti-spoofing rules do not name one)
    spoof = _probe(ctx, loop, ctx.remote_ifaces, CT_NEW, proto=((6, 6),))
    if ctx.remote_ifaces and any(o.verdict == V_ACCEPT for o in spoof):
        localnet = sorted(k for k, v in snapshot.sysctls.items()
                          if k.endswith(".route_localnet") and v == "1" and ".lo." not in k)
        evidence = [f"{k} = 1: the kernel lets 127.0.0.0/8 sources in there" for k in localnet] if family == IPV4 else []
        findings.append(
            finding(
                "TW-SPOOFED-LOOPBACK", family,
                "packets from a loopback source arriving on other interfaces are not dropped by a rule"
                + (" and route_localnet=1 stops the kernel dropping them as martians" if evidence else
                   " (the kernel drops them as martians, but the CIS control asks for the rule)"),
                severity="medium" if evidence else None, evidence=evidence, hook="input",
            )
        )
    est = _probe(ctx, remote_sources(family), ctx.remote_ifaces, CT_ESTABLISHED)
    if not any(o.verdict == V_ACCEPT for o in est):
        dropped = list(dict.fromkeys(d for o in est for d in o.decided_by))
        findings.append(
            finding(
                "TW-ESTABLISHED-DROPPED", family,
                "packets of established connections are dropped: replies to this host's "
                "own outbound connections cannot come back",
                decided=[(family, d) for d in dropped[:MAX_CITED]], evidence=[], hook="input",
            )
        )
    findings += _drop_logging_findings(ctx, new, logged)
    return findings


def _drop_logging_findings(ctx: FamilyContext, new: Sequence[Outcome], logged: Optional[_LogSeen]) -> List[Finding]:
    """TW-DROP-NOT-LOGGED: new connections from elsewhere that are dropped without a logging
    rule seeing them first (``logged``: what the main walk's LOG rules saw; None when the
    dumps hold no logging rule at all)."""
    family = ctx.family
    unlogged: Dict[Decision, None] = {}
    more = False  # another rule beyond the MAX_CITED named drops unlogged too
    # (by the part each decision ended: one outcome of a compact walk is a run of rules)
    ends = (end for o in new if o.verdict in (V_DROP, V_REJECT) for end in o.ends())
    for box, last in islice(ends, LOG_CHECK_LIMIT):
        if last is None or last in unlogged or logged is not None and logged.covers(box):
            continue
        if len(unlogged) >= MAX_CITED:
            more = True
            break
        unlogged[last] = None
    if not unlogged:
        return []
    decided = list(unlogged)
    chain = decided[0].chain if decided[0].chain in ("INPUT", "FORWARD") else "INPUT"
    return [
        finding(
            "TW-DROP-NOT-LOGGED", family,
            "new connections from elsewhere are dropped without being logged"
            + ("" if logged is not None else " (no LOG or NFLOG rule at all)")
            + (f"; the first {MAX_CITED} such rules are named (twinwall explain shows the others)" if more else ""),
            decided=[(family, d) for d in decided], hook="input", subject={"chain": chain},
        )
    ]
