"""Property tests of twinwall diff against the evaluator, on random rulesets.

* diff(x, x) is empty: the same policy written for both families has no difference;
* a rule added to one side shows up as exactly its region, with its verdict and its text;
* every region agrees with the evaluator run packet by packet: a concrete packet's verdict is
  the region's verdict, or one of them where the region is mixed (and the region is single
  wherever no rule names a prefix or an undecidable match).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from twinwall.analysis import neutral_space as NS
from twinwall.analysis.diff import compare as D
from twinwall.analysis.diff.describe import describe_region
from twinwall.analysis.context import build_contexts
from twinwall.netfilter.packetset import CT_NAMES, CT_NEW, ICMP, NDIMS, PROTO, STATE, prefix_interval
from twinwall.netfilter.ruleset import Rule
from twinwall.loader import load_rulesets
from twinwall.model import HostSnapshot, RulesetText

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# twinned addresses by role: loopback and link-local are exact roles, the prefix is part of
# the global role (a "may" match)
ADDR = {
    "loopback": ("127.0.0.0/8", "::1/128"),
    "link-local": ("169.254.0.0/16", "fe80::/10"),
    "prefix": ("198.51.100.0/24", "2001:db8:b::/64"),
    # all of loopback and part of global (neither the stand-in host address nor link-local):
    # a rule both "must" and "may" match
    "wide": ("0.0.0.0/1", "::/8"),
}
# ICMP types whose IPv4 and IPv6 names match exactly (destination-unreachable does not: the
# IPv4 type includes fragmentation-needed, whose IPv6 twin is packet-too-big)
ICMP_TWINS = ["echo-request", "echo-reply", "time-exceeded", "parameter-problem"]
ICMP_V4 = {"echo-request": 8, "echo-reply": 0, "time-exceeded": 11, "parameter-problem": 12}
ICMP_V6 = {"echo-request": 128, "echo-reply": 129, "time-exceeded": 3, "parameter-problem": 4}
PORT_EDGES = [0, 22, 25, 53, 80, 443, 1023, 1024, 8080, 65535]
STATES = list(CT_NAMES)
IFACES = ["eth0", "eth1", "lo"]


@dataclass(frozen=True)
class R:
    chain: str
    proto: Optional[str] = None
    dport: Optional[Tuple[int, int]] = None
    sport: Optional[Tuple[int, int]] = None
    icmp: Optional[str] = None
    state: Optional[Tuple[str, ...]] = None
    iif: Optional[str] = None
    oif: Optional[str] = None
    uid: Optional[Tuple[int, int]] = None
    src: Optional[str] = None
    dst: Optional[str] = None
    negate_src: bool = False
    target: str = "ACCEPT"

    def text(self, family: str) -> str:
        v = 0 if family == "ipv4" else 1
        parts = [f"-A {self.chain}"]
        if self.src:
            parts.append(("! " if self.negate_src else "") + f"-s {ADDR[self.src][v]}")
        if self.dst:
            parts.append(f"-d {ADDR[self.dst][v]}")
        if self.iif:
            parts.append(f"-i {self.iif}")
        if self.oif:
            parts.append(f"-o {self.oif}")
        if self.proto == "icmp":
            if family == "ipv4":
                parts.append("-p icmp")
                if self.icmp:
                    parts.append(f"-m icmp --icmp-type {self.icmp}")
            else:
                parts.append("-p ipv6-icmp")
                if self.icmp:
                    parts.append(f"-m icmp6 --icmpv6-type {self.icmp}")
        elif self.proto:
            parts.append(f"-p {self.proto}")
            if self.dport:
                parts.append(f"--dport {self.dport[0]}:{self.dport[1]}")
            if self.sport:
                parts.append(f"--sport {self.sport[0]}:{self.sport[1]}")
        if self.state:
            parts.append(f"-m conntrack --ctstate {','.join(self.state)}")
        if self.uid:
            parts.append(f"-m owner --uid-owner {self.uid[0]}-{self.uid[1]}")
        if self.target.startswith("goto:"):
            parts.append(f"-g {self.target[5:]}")
        else:
            parts.append(f"-j {self.target}")
        return " ".join(parts)


def port_range():
    return st.tuples(st.sampled_from(PORT_EDGES), st.sampled_from(PORT_EDGES)).map(lambda t: (min(t), max(t)))


@st.composite
def rules(draw, chain: str, exact: bool, terminal_only: bool = False) -> R:
    proto = draw(st.sampled_from([None, "tcp", "udp", "icmp"]))
    kw: Dict = {"chain": chain, "proto": proto}
    if proto in ("tcp", "udp"):
        kw["dport"] = draw(st.none() | port_range())
        kw["sport"] = draw(st.none() | port_range())
    if proto == "icmp":
        kw["icmp"] = draw(st.none() | st.sampled_from(ICMP_TWINS))
    if draw(st.booleans()):
        kw["state"] = tuple(sorted(draw(st.sets(st.sampled_from(STATES), min_size=1, max_size=3))))
    hook_chain = chain if chain in ("INPUT", "OUTPUT", "FORWARD") else "FORWARD"
    if hook_chain in ("INPUT", "FORWARD") and draw(st.booleans()):
        kw["iif"] = draw(st.sampled_from(IFACES))
    if hook_chain in ("OUTPUT", "FORWARD") and draw(st.booleans()):
        kw["oif"] = draw(st.sampled_from(IFACES))
    if hook_chain == "OUTPUT" and draw(st.booleans()):
        lo = draw(st.sampled_from([0, 33, 1000, 1001]))
        kw["uid"] = (lo, lo + draw(st.sampled_from([0, 1, 999])))
    roles = ["loopback", "link-local"] + ([] if exact else ["prefix", "wide"])
    if draw(st.integers(0, 3)) == 0:
        kw["src"] = draw(st.sampled_from(roles))
        kw["negate_src"] = draw(st.booleans())
    if draw(st.integers(0, 4)) == 0:
        kw["dst"] = draw(st.sampled_from(roles))
    targets = ["ACCEPT", "DROP", "REJECT"]
    if not terminal_only:
        targets += ["RETURN", "RETURN"] if chain == "U1" else ["U1", "U1", "goto:U1"]
    kw["target"] = draw(st.sampled_from(targets))
    return R(**kw)


@st.composite
def policies(draw, exact: bool = True):
    out: List[R] = []
    for chain in ("INPUT", "FORWARD", "OUTPUT", "U1"):
        out += draw(st.lists(rules(chain, exact), max_size=6 if chain == "U1" else 4))
    pol = {c: draw(st.sampled_from(["ACCEPT", "DROP"])) for c in ("INPUT", "FORWARD", "OUTPUT")}
    return out, pol


def render(rs: Sequence[R], pol: Dict[str, str], family: str) -> str:
    lines = ["*filter"] + [f":{c} {pol[c]} [0:0]" for c in ("INPUT", "FORWARD", "OUTPUT")] + [":U1 - [0:0]"]
    lines += [r.text(family) for r in rs]
    return "\n".join(lines + ["COMMIT", ""])


def contexts(v4: str, v6: str):
    snap = HostSnapshot(sockets_known=False, interfaces=["lo", "eth0", "eth1"])
    snap.rulesets = [
        RulesetText("ipv4", "iptables-save", "unknown", "v4", v4),
        RulesetText("ipv6", "iptables-save", "unknown", "v6", v6),
    ]
    return build_contexts(snap, load_rulesets(snap))


# ---------------------------------------------------------------------------------------------
# concrete packets for a neutral point


def concrete(ctx, point: tuple, rnd: random.Random) -> Optional[tuple]:
    """A packet of ``ctx.family`` for a neutral point: addresses drawn from the point's roles,
    protocol and ICMP type mapped back. None when the family has no such packet."""
    roles = D.family_roles(ctx)
    box = list(point)
    v = 0 if ctx.family == "ipv4" else 1
    for dim in (0, 1):  # SRC, DST
        ivs = roles.sets[point[dim][0][0]]
        # the role's edges, any address of it, and the addresses rules name (often)
        named = [prefix_interval(ADDR[k][v], ctx.family) for k in ADDR]
        candidates = [x for lo, hi in named for x in (lo, hi, (lo + hi) // 2) if any(a <= x <= b for a, b in ivs)]
        lo, hi = ivs[rnd.randrange(len(ivs))]
        a = rnd.choice([lo, hi, rnd.randint(lo, hi)] + candidates * 2)
        box[dim] = ((a, a),)
    proto = point[2][0][0]
    if proto == 1:
        c = point[ICMP][0][0]
        if ctx.family == "ipv6":
            box[2] = ((58, 58),)
            six = [t for t, v in NS.ICMP6_TO_4.items() if v == c]
            if c >= NS.V6_ONLY_BASE:
                six = [c - NS.V6_ONLY_BASE]
            if not six:
                return None
            t, code = six[0], rnd.choice([0, 1, 4])
        else:
            if c >= NS.V6_ONLY_BASE:
                return None
            t, code = (3, 4) if c == NS.PTB else (c, rnd.choice([0, 1, 5]) if c != 3 else rnd.choice([0, 3, 13]))
        v = (t << 8) | code
        box[ICMP] = ((v, v),)
    return tuple(box)


def evaluator_verdicts(ctx, hook: str, packet: tuple) -> set:
    outs = ctx.evaluator().hook_path(D.HOOK_PATHS[hook], [packet])
    return {o.verdict for o in outs}


def random_point(result: D.DiffResult, hook: str, rnd: random.Random, interesting: Sequence[int]) -> tuple:
    src_roles, dst_roles = result.roles_filter[hook]
    proto = rnd.choice([6, 17, 1, 47])
    icmp = rnd.choice([0, 3, 8, 11, 12, NS.PTB, NS.V6_ONLY_BASE + 135, 13])
    uni = result.universe
    bit = lambda: 1 << rnd.randrange(len(uni.labels))  # noqa: E731
    port = lambda: rnd.choice(list(interesting) + [rnd.randint(0, 65535)])  # noqa: E731
    uid = rnd.choice([0, 33, 999, 1000, 1001, 1999, 2000, 65534])
    state = 1 << rnd.randrange(5)
    values = [
        ((rnd.choice(sorted(src_roles)),) * 2,),
        ((rnd.choice(sorted(dst_roles)),) * 2,),
        ((proto, proto),),
        ((port(),) * 2,),
        ((port(),) * 2,),
        ((icmp, icmp),),
        ((uid, uid),),
        ((0, 0),),
        bit(),
        bit(),
        state,
        ((64, 64),),  # hop limit: what a remote host's first packet carries
    ]
    if proto != 1:
        values[ICMP] = ((NS.TWINNED[0][0],) * 2,)
    return tuple(values)


def check_against_evaluator(ctxs, result: D.DiffResult, rnd: random.Random, n: int, exact: bool) -> None:
    interesting = [p for e in PORT_EDGES for p in (e - 1, e, e + 1) if 0 <= p <= 65535]
    for _ in range(n):
        hook = rnd.choice(result.hooks)
        point = random_point(result, hook, rnd, interesting)
        sa, sb = result.lookup(hook, point)
        for ctx, side in ((ctxs["ipv4"], sa), (ctxs["ipv6"], sb)):
            packet = concrete(ctx, point, rnd)
            if packet is None:
                assert not side, (hook, point, side)
                continue
            got = evaluator_verdicts(ctx, hook, packet)
            assert got <= set(side), (ctx.family, hook, packet, got, side)
            if exact:
                assert set(side) == got, (ctx.family, hook, packet, got, side)


# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(policies(exact=False))
def test_same_policy_both_families_has_no_difference(pol):
    rs, p = pol
    ctxs = contexts(render(rs, p, "ipv4"), render(rs, p, "ipv6"))
    result = D.diff_contexts(ctxs)
    assert result.differences == [], [describe_region(r.box, r.hook, result) for r in result.differences]
    if not any(r.src in ("prefix", "wide") or r.dst in ("prefix", "wide") for r in rs):
        assert result.not_comparable == []


@SETTINGS
@given(policies(exact=False))
def test_before_after_same_snapshot_is_empty(pol):
    rs, p = pol
    ctxs = contexts(render(rs, p, "ipv4"), render(rs, p, "ipv4"))
    # the before/after machinery compares one family with itself
    sides = [ctxs["ipv4"], ctxs["ipv4"]]
    roles_filter, _ = D.common_roles(sides, D.HOOKS)
    results = D.evaluate_sides(sides, D.HOOKS, roles_filter)
    for hook in D.HOOKS:
        comp = D.compare_outcomes(hook, results[0][hook], results[1][hook])
        assert comp.differences == [] and comp.not_comparable == []


@SETTINGS
@given(policies(exact=True), st.sampled_from(["INPUT", "FORWARD", "OUTPUT"]), st.data())
def test_a_rule_added_to_one_side_shows_as_its_region(pol, chain, data):
    rs, p = pol
    extra = data.draw(rules(chain, exact=True, terminal_only=True))
    v4_rules = [extra] + list(rs)
    ctxs = contexts(render(v4_rules, p, "ipv4"), render(rs, p, "ipv6"))
    result = D.diff_contexts(ctxs, keep_regions=True)
    hook = chain.lower()
    verdict = extra.target.lower()
    for r in result.differences:
        assert r.hook == hook
        assert r.a_verdict == verdict
        assert [d.rule for d in r.a[verdict]] == [extra.text("ipv4")]
    assert result.not_comparable == []
    # and every packet of the rule's region that IPv6 treats otherwise is in a difference
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    interesting = [p for e in PORT_EDGES for p in (e - 1, e, e + 1) if 0 <= p <= 65535]
    for _ in range(40):
        point = random_point(result, hook, rnd, interesting)
        sa, sb = result.lookup(hook, point)
        if not sa or not sb:
            continue
        if sa.keys() != sb.keys():
            assert any(D.contains_point(r.box, point) for r in result.differences), (point, sa, sb)
            assert sa == {verdict: frozenset(sa[verdict])} and extra.text("ipv4") in {d.rule for d in sa[verdict]}


# user chains with RETURN and goto, where walking them wrong changes verdicts
CHAINS = (
    [
        R("INPUT", target="U1"),
        R("INPUT", "udp", target="goto:U1"),
        R("INPUT", "tcp", dport=(22, 22), target="DROP"),
        R("U1", "tcp", target="RETURN"),
        R("U1", state=("NEW",), target="REJECT"),
        R("OUTPUT", "tcp", target="U1"),
        R("OUTPUT", "udp", uid=(1000, 1000), target="DROP"),
        R("FORWARD", iif="eth0", target="goto:U1"),
        R("FORWARD", oif="eth1", target="ACCEPT"),
    ],
    {"INPUT": "ACCEPT", "FORWARD": "DROP", "OUTPUT": "ACCEPT"},
)


@SETTINGS
@given(policies(exact=True), policies(exact=True), st.integers(0, 2**32))
@example(CHAINS, ([], {"INPUT": "DROP", "FORWARD": "ACCEPT", "OUTPUT": "DROP"}), 1)
@example(([], {"INPUT": "ACCEPT", "FORWARD": "ACCEPT", "OUTPUT": "ACCEPT"}), CHAINS, 2)
def test_exact_rulesets_agree_with_the_evaluator(pol4, pol6, seed):
    ctxs = contexts(render(*pol4, "ipv4"), render(*pol6, "ipv6"))
    result = D.diff_contexts(ctxs, keep_regions=True)
    check_against_evaluator(ctxs, result, random.Random(seed), 30, exact=True)


@SETTINGS
@given(policies(exact=False), policies(exact=False), st.integers(0, 2**32))
def test_prefix_rulesets_contain_the_evaluator_verdict(pol4, pol6, seed):
    ctxs = contexts(render(*pol4, "ipv4"), render(*pol6, "ipv6"))
    result = D.diff_contexts(ctxs, keep_regions=True)
    check_against_evaluator(ctxs, result, random.Random(seed), 30, exact=False)


def test_regions_cover_the_packet_space_once():
    """The overlay is a partition: every neutral point is in exactly one region."""
    rs = [
        R("INPUT", "tcp", dport=(22, 22), src="prefix", target="ACCEPT"),
        R("INPUT", "tcp", dport=(0, 1023), target="REJECT"),
        R("OUTPUT", "udp", uid=(1000, 1000), target="DROP"),
        R("FORWARD", "icmp", icmp="echo-request", iif="eth0", target="ACCEPT"),
    ]
    p = {"INPUT": "DROP", "FORWARD": "DROP", "OUTPUT": "ACCEPT"}
    ctxs = contexts(render(rs, p, "ipv4"), render(rs[1:], p, "ipv6"))
    result = D.diff_contexts(ctxs, keep_regions=True)
    rnd = random.Random(7)
    interesting = [p for e in PORT_EDGES for p in (e - 1, e, e + 1) if 0 <= p <= 65535]
    for _ in range(300):
        hook = rnd.choice(result.hooks)
        point = random_point(result, hook, rnd, interesting)
        hits = [b for b, _, _ in result.comparisons[hook].regions if D.contains_point(b, point)]
        assert len(hits) == 1, (hook, point, len(hits))
    assert len(NDIMS * [0]) == 12


# ---------------------------------------------------------------------------------------------
# the role walk's fast path for single-match rules lifts them as the general path does


PREFIXES = ["0.0.0.0/0", "192.0.2.0/24", "192.0.2.1", "127.0.0.0/8", "127.0.0.1", "169.254.0.0/16",
            "224.0.0.0/4", "198.51.100.0/23", "10.0.0.0/8", "240.0.0.0/4"]


@given(st.sampled_from(PREFIXES), st.sampled_from([0, 1]), st.booleans(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_single_match_fast_path_lifts_as_the_general_path(prefix, dim, unknown, known_host):
    from twinwall.analysis import role_walk as RW
    from twinwall.analysis.roles import AddressRoles

    roles = AddressRoles("ipv4", (prefix_interval("192.0.2.1", "ipv4"),), known_host)
    address_match = (((dim, (prefix_interval(prefix, "ipv4"),)),),)
    port_match = (((4, ((22, 22),)),),)
    for alts in (address_match, port_match):
        rule = Rule("filter", "INPUT", 1, "-A INPUT ...", alts, ("limit",) if unknown else (), "ACCEPT")
        lifted = RW._lift_rule(rule, "rules.v4", roles, {})
        assert (lifted.must, lifted.may) == RW._lift_alts(alts, unknown, roles), (alts, unknown)


# ---------------------------------------------------------------------------------------------
# NAT: the diff's regions for rewritten flows agree with the evaluator packet by packet. The
# role walk narrows a rewritten flow's origin by what the rules after NAT see; a region wider or
# narrower than the packets NAT really sent on would show here as a packet whose verdict is not
# the region's.

# a host behind this one (a DNAT target): in the global role, so a "may" address over there;
# the rewritten ports, so that filter rules after NAT can tell rewritten packets apart
NAT_HOST = ("198.51.100.7", "2001:db8:b::7")
NAT_PORTS = [22, 25, 80, 443, 8080]


@dataclass(frozen=True)
class N:
    """A nat PREROUTING (or OUTPUT) rule."""

    chain: str
    proto: str
    dport: Tuple[int, int]
    target: str  # DNAT, REDIRECT, RETURN, ACCEPT
    to_port: Optional[int] = None
    iif: Optional[str] = None

    def text(self, family: str) -> str:
        parts = [f"-A {self.chain}", f"-p {self.proto}", f"--dport {self.dport[0]}:{self.dport[1]}"]
        if self.iif:
            parts.insert(1, f"-i {self.iif}")
        if self.target == "DNAT":
            host = NAT_HOST[0] if family == "ipv4" else f"[{NAT_HOST[1]}]"
            parts.append(f"-j DNAT --to-destination {host}" + (f":{self.to_port}" if self.to_port else ""))
        elif self.target == "REDIRECT":
            parts.append(f"-j REDIRECT --to-ports {self.to_port}")
        else:
            parts.append(f"-j {self.target}")
        return " ".join(parts)


@st.composite
def nat_rules(draw, chain: str) -> N:
    proto = draw(st.sampled_from(["tcp", "udp"]))
    lo = draw(st.sampled_from(NAT_PORTS))
    hi = draw(st.sampled_from([lo, lo, min(65535, lo + 100)]))
    target = draw(st.sampled_from(["DNAT", "DNAT", "REDIRECT", "RETURN", "ACCEPT"]))
    to_port = draw(st.sampled_from(NAT_PORTS)) if target == "REDIRECT" else draw(st.none() | st.sampled_from(NAT_PORTS))
    iif = draw(st.none() | st.sampled_from(["eth0", "eth1"])) if chain == "PREROUTING" else None
    return N(chain, proto, (lo, hi), target, to_port if target in ("DNAT", "REDIRECT") else None, iif)


@st.composite
def filter_after_nat(draw, chain: str, exact: bool) -> R:
    """Filter rules that look at what NAT rewrote: the rewritten port and (not ``exact``) the
    NAT host, a "may" address."""
    proto = draw(st.sampled_from(["tcp", "udp"]))
    port = draw(st.sampled_from(NAT_PORTS))
    dst = draw(st.sampled_from([None, "prefix"])) if chain == "FORWARD" and not exact else None
    state = draw(st.none() | st.just(("NEW",)))
    return R(chain, proto, dport=(port, port), dst=dst, state=state, target=draw(st.sampled_from(["ACCEPT", "DROP", "REJECT"])))


@st.composite
def nat_policies(draw, exact: bool = False):
    nat = draw(st.lists(nat_rules("PREROUTING"), max_size=4)) + draw(st.lists(nat_rules("OUTPUT"), max_size=2))
    filt: List[R] = []
    for chain in ("INPUT", "FORWARD", "OUTPUT"):
        filt += draw(st.lists(filter_after_nat(chain, exact), max_size=3))
    pol = {c: draw(st.sampled_from(["ACCEPT", "DROP"])) for c in ("INPUT", "FORWARD", "OUTPUT")}
    return nat, filt, pol


def render_nat(nat: Sequence[N], filt: Sequence[R], pol: Dict[str, str], family: str) -> str:
    lines = ["*nat"] + [f":{c} ACCEPT [0:0]" for c in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")]
    lines += [r.text(family) for r in nat] + ["COMMIT"]
    return "\n".join(lines) + "\n" + render(filt, pol, family)


NAT_EXAMPLE = (
    [N("PREROUTING", "tcp", (8080, 8080), "DNAT", 80), N("PREROUTING", "tcp", (22, 122), "REDIRECT", 22),
     N("OUTPUT", "udp", (25, 25), "DNAT", None)],
    [R("FORWARD", "tcp", dport=(80, 80), dst="prefix", target="ACCEPT"), R("INPUT", "tcp", dport=(22, 22), target="ACCEPT"),
     R("OUTPUT", "udp", dport=(25, 25), target="REJECT")],
    {"INPUT": "DROP", "FORWARD": "DROP", "OUTPUT": "ACCEPT"},
)


@SETTINGS
@given(nat_policies(), nat_policies(), st.integers(0, 2**32))
@example(NAT_EXAMPLE, ([], [], {"INPUT": "DROP", "FORWARD": "DROP", "OUTPUT": "ACCEPT"}), 3)
@example(NAT_EXAMPLE, (NAT_EXAMPLE[0][:1], NAT_EXAMPLE[1], NAT_EXAMPLE[2]), 4)
def test_nat_regions_contain_the_evaluator_verdict(pol4, pol6, seed):
    ctxs = contexts(render_nat(*pol4, "ipv4"), render_nat(*pol6, "ipv6"))
    result = D.diff_contexts(ctxs, keep_regions=True)
    rnd = random.Random(seed)
    check_against_evaluator(ctxs, result, rnd, 40, exact=False)
    # and the packets NAT rewrote: every rule's own port, from each side's point of view
    ports = sorted({p for n in pol4[0] + pol6[0] for p in (n.dport[0], n.dport[1], n.to_port or 0)})
    for _ in range(20 if ports else 0):
        hook = rnd.choice(result.hooks)
        point = list(random_point(result, hook, rnd, ports))
        point[PROTO] = ((rnd.choice([6, 17]),) * 2,)
        point[ICMP] = ((NS.TWINNED[0][0],) * 2,)
        point[STATE] = CT_NEW  # what nat sees
        point = tuple(point)
        sa, sb = result.lookup(hook, point)
        for ctx, side in ((ctxs["ipv4"], sa), (ctxs["ipv6"], sb)):
            packet = concrete(ctx, point, rnd)
            if packet is None:
                continue
            got = evaluator_verdicts(ctx, hook, packet)
            assert got <= set(side), (ctx.family, hook, packet, got, side)


@SETTINGS
@given(nat_policies(exact=True), nat_policies(exact=True), st.integers(0, 2**32))
@example((NAT_EXAMPLE[0], NAT_EXAMPLE[1][1:], NAT_EXAMPLE[2]), ([], [], {"INPUT": "DROP", "FORWARD": "DROP", "OUTPUT": "ACCEPT"}), 5)
def test_nat_regions_are_exact_where_no_rule_names_an_address(pol4, pol6, seed):
    """The DNAT target is one address, the filter rules after NAT name none: every region of a
    rewritten flow is single-verdict where the evaluator says so (narrow_origin keeps no wider
    origin than the packets NAT really rewrote)."""
    ctxs = contexts(render_nat(*pol4, "ipv4"), render_nat(*pol6, "ipv6"))
    result = D.diff_contexts(ctxs, keep_regions=True)
    check_against_evaluator(ctxs, result, random.Random(seed), 40, exact=True)
