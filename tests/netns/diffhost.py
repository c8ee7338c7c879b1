"""The namespace host of the random-ruleset differential (tests/netns/test_differential.py,
scripts/differential.py): one topology reused for many seeds, real listeners, real probes, and
twinwall's real code path on what the namespace's own tools print back.

Layout (built once; no static neighbour entries: ARP and NDP resolve as on a real network)::

    client c1 (dk-c1-XXXX) eth0                         client c2 (dk-c2-XXXX) eth0
      192.0.2.10 .11 .200, 203.0.113.10 (routed)          198.51.100.10 .77, 203.0.113.130 (routed)
      2001:db8:a::10 ::11 ::8000:1, 2001:db8:1a::10       2001:db8:b::10 ::99, 2001:db8:1b::10
        |                                                   |
      eth-a 192.0.2.1 192.0.2.2 2001:db8:a::1 ::2         vb0 198.51.100.1 2001:db8:b::1
                              server (dk-srv-XXXX)

Per seed (:meth:`DiffHost.run_seed`): flush the ruleset and conntrack, load the seed's rules with
iptables-restore / ip6tables-restore / nft -f, then at the same time probe from both clients
(TCP connect, UDP exchange; several source addresses and ports) and run ``twinwall collect`` in
the server. The snapshot is then audited in this process (``audit_snapshot``: the statuses) and
every probe's exact packet is walked through twinwall's evaluator (``local_input``) on the same
parsed rulesets: both answers come from twinwall's own code on the real ``iptables-save`` /
``nft -j`` output. A disagreement is probed once more with a long timeout before it counts.
"""

from __future__ import annotations

import ipaddress
import json
import random
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import rulegen  # noqa: E402
from harness import Listener, ListenerSpec, ProbeRequest, ip_batch, netns_exec, probe_many, sysctl_set  # noqa: E402

from twinwall.analysis.audit import audit_snapshot  # noqa: E402
from twinwall.analysis.connection import ConnectionLegs  # noqa: E402
from twinwall.analysis.context import build_contexts, socket_destinations  # noqa: E402
from twinwall.analysis.evaluator import V_ACCEPT  # noqa: E402
from twinwall.analysis.ndp import SOLICITED_NODE, neighbour_discovery, on_link_prefixes  # noqa: E402
from twinwall.netfilter.packetset import (  # noqa: E402
    CT_NEW,
    DPORT,
    DST,
    IIF,
    OIF,
    PROTO,
    SRC,
    box_meets,
    iv_and,
    iv_contains,
    make_box,
    prefix_interval,
)
from twinwall.loader import load_rulesets  # noqa: E402
from twinwall.model import PROTO_NUM, HostSnapshot  # noqa: E402
from twinwall.sources.snapshot import snapshot_from_json  # noqa: E402

IPV4, IPV6 = "ipv4", "ipv6"


@dataclass(frozen=True)
class ClientPlan:
    name: str
    server_if: str
    server_v4: Tuple[str, ...]  # the server's addresses on this link (first: the gateway)
    server_v6: Tuple[str, ...]
    v4: Tuple[str, ...]  # the client's addresses (first: primary, on-link)
    v6: Tuple[str, ...]
    routed_v4: str  # a client prefix the server reaches through the client
    routed_v6: str  # (through the client's link-local address, as a router is reached: RFC 4861)
    link_local: str


CLIENTS = (
    ClientPlan("c1", "eth-a", ("192.0.2.1", "192.0.2.2"), ("2001:db8:a::1", "2001:db8:a::2"),
               ("192.0.2.10", "192.0.2.11", "192.0.2.200", "203.0.113.10"),
               ("2001:db8:a::10", "2001:db8:a::11", "2001:db8:a::8000:1", "2001:db8:1a::10"),
               "203.0.113.0/25", "2001:db8:1a::/64", "fe80::a:10"),
    ClientPlan("c2", "vb0", ("198.51.100.1",), ("2001:db8:b::1",),
               ("198.51.100.10", "198.51.100.77", "203.0.113.130"),
               ("2001:db8:b::10", "2001:db8:b::99", "2001:db8:1b::10"),
               "203.0.113.128/25", "2001:db8:1b::/64", "fe80::b:10"),
)

# The server's listeners: twin sockets, dual-stack, v6only, specific addresses, loopback.
LISTENERS = (
    ListenerSpec("tcp", "0.0.0.0", 22),
    ListenerSpec("tcp", "::", 22, v6only=True),
    ListenerSpec("tcp", "::", 80, v6only=False),
    ListenerSpec("tcp", "192.0.2.1", 443),
    ListenerSpec("tcp", "2001:db8:b::1", 443),
    ListenerSpec("tcp", "::", 8080, v6only=True),
    ListenerSpec("tcp", "0.0.0.0", 3000),
    ListenerSpec("tcp", "127.0.0.1", 3306),
    ListenerSpec("udp", "0.0.0.0", 53),
    ListenerSpec("udp", "::", 53, v6only=True),
    ListenerSpec("udp", "::", 123, v6only=False),
    ListenerSpec("udp", "198.51.100.1", 5353),
)
SOURCE_PORTS = (53, 1500, 33000, 50505)  # one privileged, three a client may pick

PROBE_TIMEOUT = 0.7  # local links: an answer takes milliseconds
RECHECK_TIMEOUT = 3.0  # a disagreement is probed again, slowly, before it counts


def plan() -> rulegen.Plan:
    """What the host offers, for the generator to aim its rules at."""
    ports = {"tcp": sorted({s.port for s in LISTENERS if s.proto == "tcp"}),
             "udp": sorted({s.port for s in LISTENERS if s.proto == "udp"})}
    sources = {IPV4: [a for c in CLIENTS for a in c.v4], IPV6: [a for c in CLIENTS for a in c.v6]}
    nets = {IPV4: ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/25",
                   "192.0.2.128/25", "203.0.113.0/25", "203.0.113.128/25", "198.51.100.64/26"],
            IPV6: ["2001:db8:a::/64", "2001:db8:b::/64", "2001:db8:1a::/64", "2001:db8:1b::/64",
                   "2001:db8::/32", "2001:db8:a::/120", "2001:db8:a::8000:0/97", "2001:db8:b::/120"]}
    server = {IPV4: [a for c in CLIENTS for a in c.server_v4], IPV6: [a for c in CLIENTS for a in c.server_v6]}
    return rulegen.Plan(ports=ports, sources=sources, nets=nets, server=server,
                        ifaces=[c.server_if for c in CLIENTS], sports=list(SOURCE_PORTS))


# --------------------------------------------------------------------------------------------


@dataclass
class Probe:
    client: ClientPlan
    family: str
    proto: str
    src: str
    sport: int
    dst: str
    port: int
    socket: ListenerSpec  # the socket it is aimed at

    def __str__(self) -> str:
        d = f"[{self.dst}]" if ":" in self.dst else self.dst
        s = f"[{self.src}]" if ":" in self.src else self.src
        return f"{self.client.name} {self.proto} {s}:{self.sport} -> {d}:{self.port} (via {self.client.server_if})"


@dataclass
class Disagreement:
    seed: int
    what: str  # "probe" or "status"
    detail: str
    kernel: str
    twinwall: str

    def __str__(self) -> str:
        return f"seed {self.seed} {self.what}: {self.detail}\n    kernel: {self.kernel}\n    twinwall: {self.twinwall}"


@dataclass
class SeedResult:
    seed: int
    ruleset: rulegen.GeneratedRuleset
    probes: int = 0
    verdicts: int = 0  # (socket, family) statuses compared
    skipped: List[str] = field(default_factory=list)  # uncertain verdicts, not compared
    disagreements: List[Disagreement] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.disagreements

    def report(self) -> str:
        lines = [str(d) for d in self.disagreements[:6]]
        if len(self.disagreements) > 6:
            lines.append(f"... and {len(self.disagreements) - 6} more disagreements in seed {self.seed}")
        lines.append(f"--- seed {self.seed} ruleset ({self.ruleset.kind}) ---")
        lines.append(self.ruleset.text())
        return "\n".join(lines)


def _addr_family(address: str) -> str:
    return IPV6 if ":" in address else IPV4


def socket_families(spec: ListenerSpec) -> List[str]:
    """The families a listener takes connections of (not the loopback ones: no remote probe)."""
    if spec.address in ("127.0.0.1", "::1"):
        return []
    if spec.address == "::":
        return [IPV6] if spec.v6only else [IPV4, IPV6]
    return [_addr_family(spec.address)]


def _destinations(spec: ListenerSpec, family: str, client: ClientPlan) -> List[str]:
    if spec.address not in ("0.0.0.0", "::"):
        return [spec.address]
    # every address of the host, the other link's too (the weak host model takes them all): an
    # "open" wildcard socket may be reachable through some of them only
    own = list(client.server_v4 if family == IPV4 else client.server_v6)
    return own + [a for c in CLIENTS if c is not client for a in (c.server_v4 if family == IPV4 else c.server_v6)]


def plan_probes(seed: int) -> List[Probe]:
    """Every (socket, family, client, destination), each from a few (source, source port) pairs
    picked per seed; one pair per socket and client is always on the primary address."""
    rng = random.Random(f"probes-{seed}")
    out: List[Probe] = []
    for spec in LISTENERS:
        for family in socket_families(spec):
            for client in CLIENTS:
                srcs = list(client.v4 if family == IPV4 else client.v6)
                pairs = {(srcs[0], rng.choice(SOURCE_PORTS[1:]))}
                while len(pairs) < 4:
                    pairs.add((rng.choice(srcs), rng.choice(SOURCE_PORTS)))
                for dst in _destinations(spec, family, client):
                    for src, sport in sorted(pairs):
                        out.append(Probe(client, family, spec.proto, src, sport, dst, spec.port, spec))
    # one 4-tuple once per seed (two probes sharing it would meet each other's conntrack entry)
    seen = set()
    unique = []
    for p in out:
        key = (p.proto, p.src, p.sport, p.dst, p.port)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


# --------------------------------------------------------------------------------------------


class DiffHost:
    """The topology, its listeners and the per-seed run. A context manager: the namespaces and
    the listener process (stopped by its PID) are removed on exit, also on failure."""

    def __init__(self, prefix: str = "dk"):
        suffix = secrets.token_hex(2)
        self.server = f"{prefix}-srv-{suffix}"
        self.client_ns = {c.name: f"{prefix}-{c.name}-{suffix}" for c in CLIENTS}
        self._namespaces: List[str] = []
        self.listener: Optional[Listener] = None
        self.plan = plan()

    def __enter__(self) -> "DiffHost":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True, timeout=30)
        self._namespaces.clear()

    def _build(self) -> None:
        for ns in [self.server, *self.client_ns.values()]:
            harness._run(["ip", "netns", "add", ns])
            self._namespaces.append(ns)
        common = {"net.ipv6.conf.all.disable_ipv6": 0, "net.ipv6.conf.default.disable_ipv6": 0,
                  "net.ipv6.conf.all.accept_ra": 0, "net.ipv6.conf.default.accept_ra": 0}
        sysctl_set(self.server, {**common, "net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0,
                                 "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0})
        for ns in self.client_ns.values():
            sysctl_set(ns, common)
        cmds = ["link set lo up"]
        for c in CLIENTS:
            cmds.append(f"link add {c.server_if} type veth peer name eth0 netns {self.client_ns[c.name]}")
            for a in c.server_v4:
                cmds.append(f"addr add {a}/24 dev {c.server_if}")
            for a in c.server_v6:
                cmds.append(f"addr add {a}/64 dev {c.server_if} nodad")
            cmds.append(f"link set {c.server_if} up")
        ip_batch(self.server, cmds)
        for c in CLIENTS:
            ns = self.client_ns[c.name]
            ccmds = ["link set lo up"]
            # the routed addresses sit behind the client as behind a router: on its lo, so that
            # it speaks NDP for them from its link-local address (the only one: no generated
            # one), as a router does, not from the routed address itself
            for a in c.v4:
                on_link = ipaddress.ip_address(a) in ipaddress.ip_network(f"{c.server_v4[0]}/24", strict=False)
                ccmds.append(f"addr add {a}/24 dev eth0" if on_link else f"addr add {a}/32 dev lo")
            for a in c.v6:
                on_link = ipaddress.ip_address(a) in ipaddress.ip_network(f"{c.server_v6[0]}/64", strict=False)
                ccmds.append(f"addr add {a}/64 dev eth0 nodad" if on_link else f"addr add {a}/128 dev lo")
            ccmds.append(f"addr add {c.link_local}/64 dev eth0 nodad")
            ccmds += ["link set eth0 addrgenmode none", "link set eth0 up",
                      f"route add default via {c.server_v4[0]} dev eth0",
                      f"route add ::/0 via {c.server_v6[0]} dev eth0"]
            ip_batch(ns, ccmds)
        ip_batch(self.server, [cmd for c in CLIENTS for cmd in (
            f"route add {c.routed_v4} via {c.v4[0]} dev {c.server_if}",
            f"route add {c.routed_v6} via {c.link_local} dev {c.server_if}")])
        self.listener = Listener(self.server, LISTENERS, name="tw-differential")
        self.listener.start()

    # -- one seed ------------------------------------------------------------------------------

    def load(self, rs: "rulegen.GeneratedRuleset") -> None:
        # a clean slate: no table of the previous seed, no connection it left in conntrack
        netns_exec(self.server, "nft", "flush", "ruleset")
        netns_exec(self.server, "ipset", "destroy")  # (no rule holds them any more)
        self.forget_connections()
        if rs.ipsets is not None:
            netns_exec(self.server, "ipset", "restore", input=rs.ipsets)
        if rs.v4 is not None:
            netns_exec(self.server, "iptables-restore", input=rs.v4)
        if rs.v6 is not None:
            netns_exec(self.server, "ip6tables-restore", input=rs.v6)
        if rs.nft is not None:
            netns_exec(self.server, "nft", "-f", "-", input=rs.nft)

    def forget_connections(self) -> None:
        """Empty conntrack: a probe sent again must be NEW again, not meet what the last one left;
        and the neighbour caches, so that every seed's probes resolve their neighbours under the
        seed's own rules (an entry left by the last seed would let a probe past dropped NDP)."""
        netns_exec(self.server, "sh", "-c", "conntrack -F >/dev/null 2>&1; conntrack -F -f ipv6 >/dev/null 2>&1; true")
        for ns in [self.server, *self.client_ns.values()]:
            netns_exec(ns, "ip", "-6", "neigh", "flush", "all")

    def collect(self) -> HostSnapshot:
        res = netns_exec(self.server, sys.executable, "-m", "twinwall", "collect", "-o", "-",
                         env=harness._twinwall_env(), timeout=120)
        return snapshot_from_json(json.loads(res.stdout), "twinwall collect")

    def _probe(self, probes: Sequence[Probe], timeout: float) -> List[str]:
        reqs = [ProbeRequest(self.client_ns[p.client.name], p.dst, p.port, p.proto, timeout, p.sport, p.src)
                for p in probes]
        return [r.result for r in probe_many(reqs)] if reqs else []

    def run_seed(self, seed: int, options: Optional["rulegen.Options"] = None) -> SeedResult:
        rs = rulegen.generate(seed, self.plan, options)
        self.load(rs)
        probes = plan_probes(seed)
        results: Dict[str, object] = {}

        def collect() -> None:
            try:
                results["snapshot"] = self.collect()
            except BaseException as exc:  # re-raised below, in the caller's thread
                results["error"] = exc

        t = threading.Thread(target=collect)
        t.start()
        observed = self._probe(probes, PROBE_TIMEOUT)
        t.join()
        if "error" in results:
            raise results["error"]  # type: ignore[misc]
        snapshot = results["snapshot"]
        out = SeedResult(seed, rs, probes=len(probes))
        self._compare(out, snapshot, probes, observed)
        return out

    # -- comparison ----------------------------------------------------------------------------

    def _compare(self, out: SeedResult, snapshot: HostSnapshot, probes: List[Probe], observed: List[str]) -> None:
        predicted = predict(snapshot, probes)
        # a disagreement is probed again, slowly, so that a loaded machine cannot make one up
        doubtful = [i for i, p in enumerate(probes)
                    if predicted[i][0] is not None and predicted[i][0] != (observed[i] == "open")]
        if doubtful:
            self.forget_connections()
            again = self._probe([probes[i] for i in doubtful], RECHECK_TIMEOUT)
            for i, r in zip(doubtful, again):
                observed[i] = r
        for i, p in enumerate(probes):
            reach, why, _ = predicted[i]
            if reach is None:
                out.skipped.append(f"{p}: {why}")
                continue
            if reach != (observed[i] == "open"):
                out.disagreements.append(Disagreement(
                    out.seed, "probe", f"{p.socket} {p.family}: {p}",
                    observed[i], ("reachable" if reach else "not reachable") + f" ({why})"))
        report = audit_snapshot(snapshot, compare_egress=False)
        by_socket = {}
        for svc in report.services:
            s = svc.socket
            if svc.dnat is not None:
                # a port published through DNAT to another host: the probes cannot see that host
                # (and the namespace does not forward), so its row is not compared
                continue
            by_socket[(s.protocol, s.address, s.port)] = svc
        for spec in LISTENERS:
            svc = by_socket.get((spec.proto, spec.address, spec.port))
            if svc is None:
                out.disagreements.append(Disagreement(out.seed, "status", f"{spec}: no audit row", "listening", "absent"))
                continue
            for family in socket_families(spec):
                v = svc.verdicts[family]
                # a probe NAT sent to another socket answered from that one (the reply is
                # un-NATed): it says nothing about this socket's status
                mine = [(p, observed[i]) for i, p in enumerate(probes)
                        if p.socket == spec and p.family == family and not predicted[i][2]]
                # clients with a probe that is no evidence: whether they reach it is not known
                unknown = {(p.client.name, p.src, p.sport) for i, p in enumerate(probes)
                           if p.socket == spec and p.family == family and predicted[i][2]}
                if v.uncertain:
                    out.skipped.append(f"{spec} {family}: uncertain {v.uncertain}")
                    continue
                out.verdicts += 1
                problem = status_contradiction(v, mine, unknown)
                if problem:
                    out.disagreements.append(Disagreement(
                        out.seed, "status", f"{spec} {family}", problem,
                        f"{v.status} (allowed_sources={v.allowed_sources} interfaces={v.allowed_interfaces} "
                        f"source_ports={v.allowed_source_ports}) by {[d.describe() for d in v.decided_by][:4]}"))


def status_contradiction(v, probes: Sequence[Tuple[Probe, str]], unknown=frozenset()) -> Optional[str]:
    """What the probes show that a (socket, family) status denies, or None.

    open: every probe from a port a client may choose (1024-65535) gets through; filtered: none
    does; restricted: what got through is inside the allowed sources, interfaces and source
    ports (probes outside them may be turned away: a restriction need not show in them all).
    ``unknown``: (client, source, source port) whose probes include one that is no evidence
    (NAT sent it elsewhere or onto another probe's connection): not held against "open"."""
    passed = [p for p, r in probes if r == "open"]
    blocked = [p for p, r in probes if r != "open"]
    if v.status == "open":
        # (open is about who reaches the socket: a client that reaches it through one of the
        # host's addresses and not another still reaches it)
        reached = {(p.client.name, p.src, p.sport) for p in passed} | set(unknown)
        bad = [p for p in blocked if p.sport >= 1024 and (p.client.name, p.src, p.sport) not in reached]
        return f"open, but blocked on every address: {', '.join(map(str, bad[:3]))}" if bad else None
    if v.status == "filtered":
        return f"filtered, but reached: {', '.join(map(str, passed[:3]))}" if passed else None
    if v.status == "restricted":
        bad = [p for p in passed if not _allowed(v, p)]
        if bad:
            return f"restricted, but reached from outside the allowed: {', '.join(map(str, bad[:3]))}"
        return None
    return f"status {v.status} for a socket that takes remote connections"


def _allowed(v, p: Probe) -> bool:
    fam = p.family
    if any(c.startswith("...") for c in v.allowed_sources):
        return True  # a list cut short ("... 64 more"): it cannot tell
    src_ok = any(iv_contains((prefix_interval(c, fam),), int(ipaddress.ip_address(p.src)))
                 for c in v.allowed_sources)
    if_ok = "*" in v.allowed_interfaces or any(
        i == p.client.server_if or (i.endswith("+") and p.client.server_if.startswith(i[:-1]))
        for i in v.allowed_interfaces)
    port_ok = not v.allowed_source_ports or any(_in_ranges(text, p.sport) for text in v.allowed_source_ports)
    return src_ok and if_ok and port_ok


def _in_ranges(text: str, port: int) -> bool:
    for part in text.replace(" ", "").split(","):
        lo, _, hi = part.partition("-")
        try:
            if int(lo) <= port <= int(hi or lo):
                return True
        except ValueError:
            return True  # a form this check does not read: do not call it a disagreement
    return False


def predict(snapshot: HostSnapshot, probes: Sequence[Probe]) -> List[Tuple[Optional[bool], str, bool]]:
    """twinwall's answer for each probe's exact packet: (reachable, the rules that decided it,
    whether NAT delivered it to another destination than it was sent to), or (None, why, False)
    when its walk met a match it cannot decide. The packet goes through
    ``Evaluator.local_input`` (prerouting, the routing decision, input); it reaches a socket when
    it is accepted and what NAT made of it is addressed to a listening socket of its family.
    An accepted IPv6 probe also needs neighbour discovery between its client and the server
    interface: the audit's own NDP model (analysis.ndp) cuts it off where that is dropped."""
    rulesets = load_rulesets(snapshot)
    contexts = build_contexts(snapshot, rulesets)
    ndp = neighbour_discovery(contexts[IPV6], on_link_prefixes(snapshot)) if IPV6 in contexts else None
    legs = {fam: ConnectionLegs.of(ctx) for fam, ctx in contexts.items()}
    out: List[Tuple[Optional[bool], str, bool]] = []
    sockets = list(snapshot.sockets)
    after_nat: List[tuple] = []  # each probe's connection as NAT made it (proto, src, sport, dst, dport)
    for p in probes:
        after_nat.append((p.proto, p.src, p.sport, int(ipaddress.ip_address(p.dst)), p.port))
        ctx = contexts[p.family]
        num = PROTO_NUM[p.proto]
        a = prefix_interval(p.src, p.family)
        d = prefix_interval(p.dst, p.family)
        box = make_box((a,), (d,), ctx.universe.mask(p.client.server_if), ctx.universe.all_mask,
                       proto=((num, num),), sport=((p.sport, p.sport),), dport=((p.port, p.port),), state=CT_NEW)
        outcomes = ctx.evaluator().local_input([box])
        uncertain = sorted({u for o in outcomes for u in o.uncertain})
        if uncertain:
            out.append((None, f"uncertain: {uncertain}", False))
            continue
        reach = False
        moved = False  # accepted, but NAT made it another destination (address or port)
        why = []
        unsure: List[str] = []
        for o in outcomes:
            why.append(f"{o.verdict} by {[x.describe() for x in o.decided_by][-3:]}")
            if o.verdict != V_ACCEPT:
                continue
            if legs[p.family] is not None:
                # the connection's further packets must pass too (analysis.connection)
                pieces, cutters, maybe = legs[p.family].cut(o.box, o)
                unsure += maybe
                if not pieces:
                    why.append(f"{legs[p.family].reason(cutters)} by "
                               f"{[x.describe() for c in cutters for x in c.decided_by][-3:]}")
                    continue
            for s in sockets:
                if s.protocol != p.proto or not s.accepts_family(p.family):
                    continue
                dsts = socket_destinations(ctx, s.address)
                if dsts and iv_contains(o.box[DPORT], s.port) and any(
                        True for _ in iv_and(o.box[DST], dsts)) and iv_contains(o.box[PROTO], num):
                    reach = True
                    # (delivered by NAT to the very socket it was aimed at, it still tells of it)
                    aimed = s.port == p.socket.port and s.address == p.socket.address
                    moved = moved or not aimed and (
                        not iv_contains(o.box[DPORT], p.port) or not iv_contains(o.box[DST], d[0]))
                    if o.box[DST][0][0] == o.box[DST][-1][1] and o.box[DPORT][0][0] == o.box[DPORT][-1][1]:
                        after_nat[-1] = (p.proto, p.src, p.sport, o.box[DST][0][0], o.box[DPORT][0][0])
        if unsure:
            out.append((None, f"uncertain (further packets): {sorted(set(unsure))}", False))
            continue
        if reach and p.family == IPV6 and p.client.server_if in snapshot.ipv6.disabled_interfaces:
            # net.ipv6.conf.IFACE.disable_ipv6=1: the kernel drops IPv6 arriving there, whatever
            # the rules say (the audit reads it as the interface's state, not the firewall's)
            out.append((False, f"IPv6 disabled on {p.client.server_if}", False))
            continue
        if reach and p.family == IPV6 and ndp is not None and ndp.restricts:
            fresh = bool(ndp.cut(box))
            # the probes run at once: when another source of the client resolved the address
            # first, this one's SYN goes out without an NS of its own and the server must
            # resolve the client instead (NS out, NA in); where that differs, the kernel's
            # answer depends on which went first, and the probe is no evidence either way
            if any(ndp.cut(_probe_box(ctx, q)) for q in probes if q.family == IPV6 and q.client is p.client
                   and q.dst == p.dst and q.src != p.src) and fresh != _server_resolves(ndp, snapshot, ctx, p):
                out.append((None, "depends on the order the probes resolved their neighbours in", True))
                continue
            if not fresh:
                if ndp.uncertain():
                    out.append((None, f"uncertain (NDP): {ndp.uncertain()}", False))
                    continue
                reach = False
                why.append(f"{ndp.reason(fresh=True)} by {[x.describe() for x in ndp.decisions(fresh=True)][-3:]}")
        out.append((reach, "; ".join(why), moved))
    # two probes NAT makes one connection (a DNAT to an address another probe was sent to):
    # the second meets the first's conntrack entry and is dropped as a clash; neither is
    # evidence about the ruleset
    seen: Dict[tuple, int] = {}
    for i, key in enumerate(after_nat):
        if out[i][0]:  # (only an accepted packet leaves a conntrack entry)
            seen[key] = seen.get(key, 0) + 1
    for i, key in enumerate(after_nat):
        if out[i][0] and seen[key] > 1:
            out[i] = (None, "NAT maps it onto another probe's connection", True)
    return out


SOLICITED_NODE_BASE = SOLICITED_NODE[0][0]


def _probe_box(ctx, p: Probe):
    num = PROTO_NUM[p.proto]
    a, d = prefix_interval(p.src, p.family), prefix_interval(p.dst, p.family)
    return make_box((a,), (d,), ctx.universe.mask(p.client.server_if), ctx.universe.all_mask,
                    proto=((num, num),), sport=((p.sport, p.sport),), dport=((p.port, p.port),), state=CT_NEW)


def _server_resolves(ndp, snapshot: HostSnapshot, ctx, p: Probe) -> bool:
    """Whether the server's own resolution of the probe's next hop passes: its NS out (from the
    probed address when it sits on that link, else from the link's link-local address; kernel
    ndisc_solicit) and the neighbour's NA in. The next hop is the client, or for a routed
    source the client's link-local address (its route's gateway)."""
    on_link = ipaddress.ip_address(p.src) in ipaddress.ip_network(f"{p.client.server_v6[0]}/64", strict=False)
    hop = p.src if on_link else p.client.link_local
    if p.dst in p.client.server_v6:
        own = p.dst
    else:
        own = next((a.address.split("%")[0] for a in snapshot.addresses
                    if a.interface == p.client.server_if and a.family == IPV6 and a.scope == "link"), None)
        if own is None:
            return False
    x = prefix_interval(own, IPV6)
    t = prefix_interval(hop, IPV6)
    group = SOLICITED_NODE_BASE | (t[0] & 0xFFFFFF)
    mask = ctx.universe.mask(p.client.server_if)
    legs = {"neighbour solicitations out": ((SRC, (x,)), (DST, ((group, group),)), (OIF, mask)),
            "neighbour advertisements in": ((SRC, (t,)), (DST, (x,)), (IIF, mask))}
    for m in ndp.messages:
        c = legs.get(m.name)
        if c is not None and any(box_meets(o.origin, c) for o in m.denied):
            return False
    return True
