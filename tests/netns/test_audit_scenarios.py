"""End-to-end proof of `twinwall audit` (issue 2): real namespaces, real rules, real connections.

Each case below is a small table: listeners in the server namespace (bound exactly as written,
v6only on/off), an iptables-save ruleset per family loaded with iptables-restore /
ip6tables-restore, and the EXPECTED status per (service, family), written from netfilter
semantics. Every case asserts two things:

1. the real clients agree with the expected status. ``open``: both clients connect over that
   family; ``restricted``: the "inside" client (192.0.2.10 / 2001:db8:a::10 on eth-a) connects and
   the "outside" client (198.51.100.10 / 2001:db8:b::10 on eth-b) does not; ``filtered``,
   ``local-only``, ``not-bound``, ``disabled``: neither connects. Refused/rejected ("closed") and
   silence ("filtered") both count as *not reachable*. Clients connect to the server's address on
   their own link (or to the socket's own address when it is bound to a specific one);
2. `twinwall audit --format json` in the server namespace prints the same status, lists
   ``allowed_sources`` / ``allowed_interfaces`` that contain the inside client and not the outside
   one for ``restricted``, a non-empty ``decided_by`` for open/restricted/filtered (plus the rule
   or policy named in the case where given), the real v6only flag, and no ``uncertain`` entries
   (every match used here is decidable).

If (1) fails the case or the harness is wrong; if (2) fails twinwall is. Set
TWINWALL_NETNS_REAL_ONLY=1 to run only the real-client half (the twinwall half is then skipped).
"""

from __future__ import annotations

import ipaddress
import json
import os
import textwrap
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pytest

from harness import IPV4, IPV6, ListenerSpec, ProbeRequest, Topology

OPEN, RESTRICTED, FILTERED = "open", "restricted", "filtered"
LOCAL_ONLY, NOT_BOUND, DISABLED = "local-only", "not-bound", "disabled"
STATUSES = {OPEN, RESTRICTED, FILTERED, LOCAL_ONLY, NOT_BOUND, DISABLED}
FAMILIES = (IPV4, IPV6)
INSIDE, OUTSIDE = "inside", "outside"
REAL_ONLY = os.environ.get("TWINWALL_NETNS_REAL_ONLY", "") not in ("", "0")


# ---------------------------------------------------------------------------------------------
# case description


@dataclass(frozen=True)
class Want:
    """Expected result for one (service, family).

    via (restricted only): "source" - allowed_sources must cover the inside client and not the
    outside one; "interface" - allowed_interfaces must match eth-a and not eth-b;
    "interface-except" - only "eth-b is not allowed" is checked (twinwall may spell "every
    interface but eth-b" as it likes); "source-port" - status only (the restriction is on the
    client's source port, which allowed_sources cannot express); "combination" - status only
    (the three lists cannot say it). Open and restricted verdicts are also checked against the
    ``allowed`` combinations: they hold each client that connects, none that does not.
    decided: substrings that must all occur in one decided_by entry, rendered as
    "table=T chain=C rule=R" or "table=T chain=C policy=P".
    source_port: the inside client binds this source port for its probe."""

    status: str
    via: Optional[str] = None
    decided: Tuple[str, ...] = ()
    source_port: Optional[int] = None

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status
        assert (self.via is not None) == (self.status == RESTRICTED), self


def W(status: str, *decided: str, via: Optional[str] = None,
      source_port: Optional[int] = None) -> Want:
    if status == RESTRICTED and via is None:
        via = "source"
    return Want(status, via, tuple(decided), source_port)


@dataclass(frozen=True)
class Svc:
    proto: str
    address: str
    port: int
    v6only: Optional[bool]
    ipv4: Want
    ipv6: Want

    @property
    def spec(self) -> ListenerSpec:
        return ListenerSpec(self.proto, self.address, self.port, self.v6only)

    def want(self, family: str) -> Want:
        return self.ipv4 if family == IPV4 else self.ipv6

    def __str__(self) -> str:
        return str(self.spec)


def S(proto: str, address: str, port: int, v6only: Optional[bool] = None, *,
      ipv4: Union[str, Want], ipv6: Union[str, Want]) -> Svc:
    def norm(w: Union[str, Want]) -> Want:
        return w if isinstance(w, Want) else W(w)

    if ":" in address and v6only is None:
        raise ValueError(f"{proto} {address}:{port}: say v6only=True/False explicitly")
    return Svc(proto, address, port, v6only, norm(ipv4), norm(ipv6))


@dataclass
class Case:
    name: str
    doc: str
    services: List[Svc]
    v4: Optional[str]  # iptables-save text, None: nothing loaded
    v6: Optional[str]
    ipv6_disabled: bool = False
    # (family, severity, service) that must appear among the findings
    findings: List[Tuple[str, str, str]] = field(default_factory=list)
    # (finding id, family) of host findings that must appear
    host_findings: List[Tuple[str, str]] = field(default_factory=list)
    # (family, severity) of the one TW-FAMILY-GAP that must list every service the clients find
    # open over that family and filtered over the other (one cause, one finding), with no
    # TW-NO-RULE repeating it
    grouped_gap: Optional[Tuple[str, str]] = None
    # (id, family) pairs that must not be among the findings
    absent: List[Tuple[str, str]] = field(default_factory=list)


BUILTIN_CHAINS = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}


def table(name: str, rules: str = "", **policies: str) -> str:
    """One iptables-save table; user chains are declared from the `-A CHAIN` lines."""
    lines = [ln.strip() for ln in textwrap.dedent(rules).splitlines() if ln.strip()]
    user: List[str] = []
    for ln in lines:
        parts = ln.split()
        if parts[0] != "-A":
            raise ValueError(f"not an append rule: {ln}")
        if parts[1] not in BUILTIN_CHAINS[name] and parts[1] not in user:
            user.append(parts[1])
    head = [f"*{name}"]
    head += [f":{c} {policies.get(c, 'ACCEPT')} [0:0]" for c in BUILTIN_CHAINS[name]]
    head += [f":{c} - [0:0]" for c in user]
    return "\n".join(head + lines + ["COMMIT"]) + "\n"


# IPv6 neighbour discovery, as a correct ruleset accepts it (RFC 4861: hop limit 255). Without
# it no IPv6 client on the link reaches the host at all, whatever the service's rules say; the
# cases below are about those rules, so every IPv6 ruleset with a DROP policy carries these
# (test_ndp_netns.py is about leaving them out).
NDP_ACCEPT = """
    -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT
    -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -j ACCEPT
"""


def ruleset(filter_rules: str = "", *, input: str = "DROP", raw: Optional[str] = None,
            mangle: Optional[str] = None, ndp: bool = False) -> str:
    if ndp:
        filter_rules = textwrap.dedent(NDP_ACCEPT) + textwrap.dedent(filter_rules)
    out = ""
    if raw is not None:
        out += table("raw", raw)
    if mangle is not None:
        out += table("mangle", mangle)
    return out + table("filter", filter_rules, INPUT=input)


def both(rules: str, **kw: Any) -> Dict[str, str]:
    """The same rules for both families; {A}/{B} become the inside/outside client networks,
    {a}/{b} the client addresses, {sa}/{sb} the server addresses, {LO} the loopback source,
    {C}N an address of other hosts (a network no test host uses, {CN})."""
    def fill(fam: str) -> str:
        if fam == IPV4:
            sub = dict(A="192.0.2.0/24", B="198.51.100.0/24", a="192.0.2.10", b="198.51.100.10",
                       sa="192.0.2.1", sb="198.51.100.1", LO="127.0.0.0/8",
                       a_lo="192.0.2.5", a_hi="192.0.2.20", ICMP="icmp", C="203.0.113.",
                       CN="203.0.113.0/24")
        else:
            sub = dict(A="2001:db8:a::/64", B="2001:db8:b::/64", a="2001:db8:a::10",
                       b="2001:db8:b::10", sa="2001:db8:a::1", sb="2001:db8:b::1", LO="::1/128",
                       a_lo="2001:db8:a::5", a_hi="2001:db8:a::20", ICMP="ipv6-icmp", C="2001:db8:c::",
                       CN="2001:db8:c::/64")
        extra = {k: (v.format(**sub) if isinstance(v, str) and k in ("raw", "mangle") else v)
                 for k, v in kw.items()}
        return ruleset(rules.format(**sub), ndp=fam == IPV6, **extra)

    return {"v4": fill(IPV4), "v6": fill(IPV6)}


def dual(proto: str, port: int, ipv4: Union[str, Want], ipv6: Union[str, Want]) -> Svc:
    """A dual-stack socket: [::]:port with v6only=0 (ss shows it as *:port)."""
    return S(proto, "::", port, False, ipv4=ipv4, ipv6=ipv6)


# ---------------------------------------------------------------------------------------------
# the cases

CASES: List[Case] = []

# Seed 000 (CIS 4.4.3.4): ip6tables policy DROP, loopback accepted, spoofed ::1 dropped, a NEW
# tcp/22 rule - and udp/123 listening on :: with no rule at all.
CASES.append(Case(
    "cis_seed_ip6tables_policy_drop",
    "CIS seed: tcp/22 open over IPv6 by its rule, udp/123 only filtered by the policy",
    services=[
        S("tcp", "0.0.0.0", 22, ipv4=W(OPEN, "--dport 22"), ipv6=NOT_BOUND),
        S("tcp", "::", 22, True, ipv4=NOT_BOUND, ipv6=W(OPEN, "--dport 22", "-j ACCEPT")),
        S("udp", "::", 123, True, ipv4=NOT_BOUND, ipv6=W(FILTERED, "policy=DROP")),
        S("udp", "::1", 123, True, ipv4=NOT_BOUND, ipv6=LOCAL_ONLY),
        S("tcp", "::1", 25, True, ipv4=NOT_BOUND, ipv6=LOCAL_ONLY),
    ],
    v4=ruleset("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -s 127.0.0.0/8 -j DROP
        -A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT
        -A INPUT -p tcp -m state --state ESTABLISHED -j ACCEPT
        -A INPUT -p udp -m state --state ESTABLISHED -j ACCEPT
    """),
    v6=ruleset(ndp=True, filter_rules="""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -s ::1/128 -j DROP
        -A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT
        -A INPUT -p tcp -m state --state ESTABLISHED -j ACCEPT
        -A INPUT -p udp -m state --state ESTABLISHED -j ACCEPT
    """),
))

# (Both CIS seeds carry the benchmark's "-p tcp|udp --state ESTABLISHED -j ACCEPT": without them
# no TCP handshake completes - its ACK meets the policy - whatever the NEW rule says.)
# The same seed as it was written: no ICMPv6 accept at all. Neighbour discovery is dropped, so an
# IPv6 client cannot even find the server's link-layer address: tcp/22 times out over IPv6 though
# its rule accepts it. IPv6 is broken, not protected.
CASES.append(Case(
    "cis_seed_without_neighbour_discovery",
    "CIS seed without ICMPv6 accepts: neighbour discovery dropped, every IPv6 connection times out",
    services=[
        S("tcp", "0.0.0.0", 22, ipv4=W(OPEN, "--dport 22"), ipv6=NOT_BOUND),
        S("tcp", "::", 22, True, ipv4=NOT_BOUND, ipv6=W(FILTERED, "policy=DROP")),
    ],
    v4=ruleset("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT
        -A INPUT -p tcp -m state --state ESTABLISHED -j ACCEPT
        -A INPUT -p udp -m state --state ESTABLISHED -j ACCEPT
    """),
    v6=ruleset("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -s ::1/128 -j DROP
        -A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT
        -A INPUT -p tcp -m state --state ESTABLISHED -j ACCEPT
        -A INPUT -p udp -m state --state ESTABLISHED -j ACCEPT
    """),
    host_findings=[("TW-ICMPV6-NDP-BLOCKED", IPV6), ("TW-ICMPV6-ESSENTIAL-BLOCKED", IPV6)],
))

# Seed 001 (Michael Rash): a careful IPv4 ruleset, ip6tables never configured (policy ACCEPT,
# no rules): sshd/named/httpd on :: are open over IPv6 - the family gap.
_RASH_V4 = ruleset("""
    -A INPUT -m state --state INVALID -j LOG --log-prefix "DROP INVALID "
    -A INPUT -m state --state INVALID -j DROP
    -A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
    -A INPUT -i lo -j ACCEPT
    -A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT
    -A INPUT ! -i lo -j LOG --log-prefix "DROP "
""")
_RASH_SERVICES = [
    S("tcp", "0.0.0.0", 22, ipv4=W(RESTRICTED, "--dport 22"), ipv6=NOT_BOUND),
    S("tcp", "::", 22, True, ipv4=NOT_BOUND, ipv6=OPEN),
    dual("tcp", 53, ipv4=W(FILTERED, "policy=DROP"), ipv6=OPEN),
    dual("udp", 53, ipv4=FILTERED, ipv6=OPEN),
    dual("tcp", 80, ipv4=FILTERED, ipv6=OPEN),
]
CASES.append(Case(
    "rash_seed_family_gap_empty_ip6tables",
    "Rash seed: IPv4 filtered, ip6tables loaded but empty (policy ACCEPT): open over IPv6",
    services=_RASH_SERVICES,
    v4=_RASH_V4,
    v6=ruleset("", input="ACCEPT"),
    findings=[(IPV6, "high", "tcp/53"), (IPV6, "high", "tcp/80")],
))
CASES.append(Case(
    "rash_seed_family_gap_no_ip6tables",
    "Rash seed: IPv4 filtered, no ip6tables table at all: open over IPv6",
    services=_RASH_SERVICES,
    v4=_RASH_V4,
    v6=None,
    findings=[(IPV6, "high", "tcp/53"), (IPV6, "high", "tcp/80")],
))

# Issue 10: a host whose ip6tables was never configured, seven services on "::". Today's audit
# gave a family gap and a "no rule" finding per socket; one cause (the IPv6 INPUT policy
# ACCEPT) must give one finding listing the services, each confirmed open over IPv6 by the real
# clients. IPv4 logs what it drops (Rash's script) and never loopback: no logging findings.
CASES.append(Case(
    "ip6tables_never_configured_one_finding_per_cause",
    "ip6tables never configured: one TW-FAMILY-GAP for all seven services, no TW-NO-RULE per socket",
    services=[
        dual("tcp", 25, ipv4=FILTERED, ipv6=OPEN),
        dual("tcp", 53, ipv4=FILTERED, ipv6=OPEN),
        dual("udp", 53, ipv4=FILTERED, ipv6=OPEN),
        dual("tcp", 80, ipv4=FILTERED, ipv6=OPEN),
        dual("tcp", 3306, ipv4=FILTERED, ipv6=OPEN),
        dual("udp", 123, ipv4=FILTERED, ipv6=OPEN),
        S("tcp", "0.0.0.0", 5432, ipv4=FILTERED, ipv6=NOT_BOUND),
        S("tcp", "::", 5432, True, ipv4=NOT_BOUND, ipv6=OPEN),
    ],
    v4=_RASH_V4,
    v6=None,
    grouped_gap=(IPV6, "high"),
    absent=[("TW-NO-RULE", IPV6), ("TW-DROP-NOT-LOGGED", IPV4), ("TW-LOOPBACK-LOGGED", IPV4)],
))

# Seed 002 (Rackspace): the story is about OUTPUT (outbound mail over IPv6). Inbound audit does
# not cover it: OUTPUT rules that leave replies alone do not change what reaches a listener.
CASES.append(Case(
    "rackspace_seed_output_rules_do_not_change_inbound",
    "OUTPUT-only rules (owner match, --dport 25 DROP) leave the inbound tcp/25 open",
    services=[dual("tcp", 25, ipv4=W(OPEN, "policy=ACCEPT"), ipv6=OPEN)],
    v4=table("filter", """
        -A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        -A OUTPUT -p tcp -m tcp --dport 25 -m owner --uid-owner 0 -j ACCEPT
        -A OUTPUT -p tcp -m tcp --dport 25 -j DROP
    """),
    v6=None,
))

CASES.append(Case(
    "port_2222_is_not_22",
    "a rule for 2222 (or 222) does not cover 22",
    services=[
        dual("tcp", 22, ipv4=W(FILTERED, "policy=DROP"), ipv6=W(FILTERED, "policy=DROP")),
        dual("tcp", 2222, ipv4=W(OPEN, "--dport 2222"), ipv6=W(OPEN, "--dport 2222")),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 222 -j ACCEPT
    """),
))

CASES.append(Case(
    "drop_rule_is_not_coverage_reject_is_deny",
    "policy ACCEPT: a DROP/REJECT rule for the port filters it; no rule leaves it open",
    services=[
        dual("tcp", 22, ipv4=W(FILTERED, "--dport 22", "-j DROP"),
             ipv6=W(FILTERED, "--dport 22", "-j DROP")),
        dual("tcp", 8443, ipv4=W(FILTERED, "--dport 8443", "REJECT"),
             ipv6=W(FILTERED, "--dport 8443", "REJECT")),
        dual("udp", 5353, ipv4=W(FILTERED, "REJECT"), ipv6=W(FILTERED, "REJECT")),
        dual("tcp", 3389, ipv4=W(FILTERED, "REJECT"), ipv6=W(FILTERED, "REJECT")),
        dual("tcp", 8000, ipv4=W(OPEN, "policy=ACCEPT"), ipv6=W(OPEN, "policy=ACCEPT")),
    ],
    v4=ruleset("""
        -A INPUT -p tcp -m tcp --dport 22 -j DROP
        -A INPUT -p tcp -m tcp --dport 8443 -j REJECT --reject-with tcp-reset
        -A INPUT -p udp -m udp --dport 5353 -j REJECT --reject-with icmp-port-unreachable
        -A INPUT -p tcp -m tcp --dport 3389 -j REJECT --reject-with icmp-host-prohibited
    """, input="ACCEPT"),
    v6=ruleset(ndp=True, filter_rules="""
        -A INPUT -p tcp -m tcp --dport 22 -j DROP
        -A INPUT -p tcp -m tcp --dport 8443 -j REJECT --reject-with tcp-reset
        -A INPUT -p udp -m udp --dport 5353 -j REJECT --reject-with icmp6-port-unreachable
        -A INPUT -p tcp -m tcp --dport 3389 -j REJECT --reject-with icmp6-adm-prohibited
    """, input="ACCEPT"),
))

CASES.append(Case(
    "dual_stack_star_8080_reachable_over_ipv4",
    "*:8080 ([::] v6only=0) takes IPv4: iptables decides it; v6only=1 does not take IPv4",
    services=[
        dual("tcp", 8080, ipv4=W(OPEN, "--dport 8080"), ipv6=W(FILTERED, "policy=DROP")),
        S("tcp", "::", 8081, True, ipv4=NOT_BOUND, ipv6=FILTERED),
        dual("udp", 8082, ipv4=OPEN, ipv6=OPEN),
    ],
    v4=ruleset("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 8081 -j ACCEPT
        -A INPUT -p udp -m udp --dport 8082 -j ACCEPT
    """),
    v6=ruleset(ndp=True, filter_rules="""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p ipv6-icmp -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
        -A INPUT -p udp -m udp --dport 8082 -j ACCEPT
    """),
))

CASES.append(Case(
    "udp_is_not_tcp",
    "a udp rule does not open tcp on the same port, nor a tcp rule udp, nor icmp either",
    services=[
        dual("tcp", 53, ipv4=W(FILTERED, "policy=DROP"), ipv6=W(FILTERED, "policy=DROP")),
        dual("udp", 53, ipv4=W(OPEN, "--dport 53"), ipv6=W(OPEN, "--dport 53")),
        dual("tcp", 5060, ipv4=OPEN, ipv6=OPEN),
        dual("udp", 5060, ipv4=FILTERED, ipv6=FILTERED),
        dual("tcp", 7, ipv4=FILTERED, ipv6=FILTERED),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p {ICMP} -j ACCEPT
        -A INPUT -p udp -m udp --dport 53 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 5060 -j ACCEPT
        -A INPUT -p udp -m udp --dport 7 -j ACCEPT
    """),
))

CASES.append(Case(
    "user_chains_and_return",
    "jumps into user chains: RETURN-ed subsets fall back to INPUT, rules after RETURN are dead",
    services=[
        # SVC returns the outside network, accepts the rest: only the inside client gets in
        dual("tcp", 8010, ipv4=W(RESTRICTED, "-j ACCEPT"), ipv6=W(RESTRICTED, "-j ACCEPT")),
        # SVC returns 9000 before jumping to TRUSTED (which would accept it): policy DROP
        dual("tcp", 9000, ipv4=W(FILTERED, "policy=DROP"), ipv6=W(FILTERED, "policy=DROP")),
        dual("tcp", 9100, ipv4=W(OPEN, "TRUSTED", "--dport 9100"), ipv6=OPEN),
        # TRUSTED returns everything before its DROP; back in INPUT, 9200 is accepted
        dual("tcp", 9200, ipv4=W(OPEN, "chain=INPUT", "--dport 9200"), ipv6=OPEN),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -j SVC
        -A INPUT -p tcp -m tcp --dport 9200 -j ACCEPT
        -A SVC -s {B} -p tcp -m tcp --dport 8000:8099 -j RETURN
        -A SVC -p tcp -m tcp --dport 8000:8099 -j ACCEPT
        -A SVC -p tcp -m tcp --dport 9000 -j RETURN
        -A SVC -j TRUSTED
        -A TRUSTED -p tcp -m tcp --dport 9000 -j ACCEPT
        -A TRUSTED -p tcp -m tcp --dport 9100 -j ACCEPT
        -A TRUSTED -j RETURN
        -A TRUSTED -p tcp -m tcp --dport 9200 -j DROP
    """),
))

CASES.append(Case(
    "goto_returns_to_the_callers_caller",
    "-g: RETURN from a chain entered by goto from INPUT hits the policy; from a jumped chain it "
    "returns past the jump",
    services=[
        dual("tcp", 7010, ipv4=W(OPEN, "chain=PORTS"), ipv6=OPEN),
        # INPUT -g PORTS, PORTS RETURNs 7050: nothing to return to -> INPUT policy DROP, even
        # though INPUT accepts 7050 right after the goto
        dual("tcp", 7050, ipv4=W(FILTERED, "policy=DROP"), ipv6=W(FILTERED, "policy=DROP")),
        dual("tcp", 7020, ipv4=FILTERED, ipv6=FILTERED),
        # the same RETURN reached with -j comes back to INPUT, which accepts 7150
        dual("tcp", 7150, ipv4=W(OPEN, "--dport 7150"), ipv6=OPEN),
        # INPUT -j OUTER, OUTER -g INNER, INNER RETURN -> back in INPUT after the jump to
        # OUTER (OUTER's DROP is skipped) -> accepted
        dual("tcp", 7200, ipv4=W(OPEN, "chain=INPUT", "--dport 7200"), ipv6=OPEN),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 7000:7099 -g PORTS
        -A INPUT -p tcp -m tcp --dport 7050 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 7100:7199 -j PORTS
        -A INPUT -p tcp -m tcp --dport 7150 -j ACCEPT
        -A INPUT -p tcp -j OUTER
        -A INPUT -p tcp -m tcp --dport 7200 -j ACCEPT
        -A PORTS -p tcp -m tcp --dport 7010 -j ACCEPT
        -A PORTS -p tcp -m tcp --dport 7050 -j RETURN
        -A PORTS -p tcp -m tcp --dport 7150 -j RETURN
        -A OUTER -p tcp -m tcp --dport 7200 -g INNER
        -A OUTER -p tcp -m tcp --dport 7200 -j DROP
        -A INNER -j RETURN
    """),
))

CASES.append(Case(
    "multiport_and_port_ranges",
    "multiport lists with ranges, --dport ranges (inclusive bounds), negated multiport",
    services=[
        dual("tcp", 999, ipv4=FILTERED, ipv6=FILTERED),
        dual("tcp", 1000, ipv4=W(OPEN, "multiport"), ipv6=W(OPEN, "multiport")),
        dual("tcp", 2000, ipv4=OPEN, ipv6=OPEN),
        dual("tcp", 2001, ipv4=FILTERED, ipv6=FILTERED),
        dual("tcp", 3000, ipv4=OPEN, ipv6=OPEN),
        dual("tcp", 4010, ipv4=W(OPEN, "4000:4010"), ipv6=OPEN),
        dual("tcp", 4011, ipv4=FILTERED, ipv6=FILTERED),
        dual("udp", 4500, ipv4=OPEN, ipv6=OPEN),
        dual("udp", 4650, ipv4=OPEN, ipv6=OPEN),
        dual("tcp", 4650, ipv4=FILTERED, ipv6=FILTERED),
        dual("tcp", 5500, ipv4=FILTERED, ipv6=FILTERED),
        dual("tcp", 6500, ipv4=W(OPEN, "! --dports"), ipv6=OPEN),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -m multiport --dports 1000:2000,3000 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 4000:4010 -j ACCEPT
        -A INPUT -p udp -m multiport --dports 4500,4600:4700 -j ACCEPT
        -A INPUT -p tcp -m multiport ! --dports 1:6000 -j ACCEPT
    """),
))

# Kept apart: a --ports rule makes *every* tcp port reachable from that source port, so it
# would turn each "filtered" tcp service of another case into "restricted".
CASES.append(Case(
    "multiport_ports_matches_the_source_port_too",
    "--ports 7001 matches source OR destination port: tcp/7001 is open, tcp/7000 is reachable "
    "only from clients whose source port is 7001 (restricted, neither open nor filtered)",
    services=[
        dual("tcp", 7000, ipv4=W(RESTRICTED, via="source-port", source_port=7001),
             ipv6=W(RESTRICTED, "--ports 7001", via="source-port", source_port=7001)),
        dual("tcp", 7001, ipv4=W(OPEN, "--ports 7001"), ipv6=W(OPEN, "--ports 7001")),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -m multiport --ports 7001 -j ACCEPT
    """),
))

# The three allowed_* lists hold the outside client's source and its interface here, yet the
# firewall drops it: only the "allowed" combinations say who gets through.
CASES.append(Case(
    "a_source_allowed_on_one_interface_only",
    "tcp/7200 accepts the inside network on eth-a, the outside network only on eth-a (where it "
    "never arrives) and other hosts on eth-b: the outside client is dropped",
    services=[
        dual("tcp", 7200, ipv4=W(RESTRICTED, via="combination"), ipv6=W(RESTRICTED, via="combination")),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -i eth-a -s {A} -p tcp --dport 7200 -j ACCEPT
        -A INPUT -i eth-a -s {B} -p tcp --dport 7200 -j ACCEPT
        -A INPUT -i eth-b -s {CN} -p tcp --dport 7200 -j ACCEPT
    """),
))

CASES.append(Case(
    "restricted_by_source_with_negation",
    "-s, ! -s, a DROP of everyone else, a /32 and an iprange make services restricted; a "
    "spoofed-loopback DROP does not",
    services=[
        dual("tcp", 22, ipv4=W(RESTRICTED, "--dport 22"), ipv6=W(RESTRICTED, "--dport 22")),
        dual("tcp", 80, ipv4=RESTRICTED, ipv6=RESTRICTED),
        dual("tcp", 443, ipv4=RESTRICTED, ipv6=RESTRICTED),
        dual("udp", 161, ipv4=RESTRICTED, ipv6=RESTRICTED),
        dual("tcp", 3306, ipv4=W(RESTRICTED, "iprange"), ipv6=RESTRICTED),
        dual("tcp", 8080, ipv4=W(OPEN, "--dport 8080"), ipv6=W(OPEN, "--dport 8080")),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -s {LO} ! -i lo -j DROP
        -A INPUT -s {A} -p tcp -m tcp --dport 22 -j ACCEPT
        -A INPUT ! -s {B} -p tcp -m tcp --dport 80 -j ACCEPT
        -A INPUT ! -s {A} -p tcp -m tcp --dport 443 -j DROP
        -A INPUT -p tcp -m tcp --dport 443 -j ACCEPT
        -A INPUT -s {a} -p udp -m udp --dport 161 -j ACCEPT
        -A INPUT -p tcp -m iprange --src-range {a_lo}-{a_hi} -m tcp --dport 3306 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT
    """),
))

CASES.append(Case(
    "restricted_by_interface",
    "-i eth-a, -i eth+ with -s, -i eth-b DROP before an ACCEPT, ! -i eth-b; -i lo alone is not "
    "remote reachability",
    services=[
        dual("tcp", 22, ipv4=W(RESTRICTED, "eth-a", via="interface"),
             ipv6=W(RESTRICTED, "eth-a", via="interface")),
        dual("tcp", 2200, ipv4=W(RESTRICTED, "eth+"), ipv6=W(RESTRICTED, "eth+")),
        dual("tcp", 2300, ipv4=W(RESTRICTED, via="interface-except"),
             ipv6=W(RESTRICTED, via="interface-except")),
        dual("tcp", 2400, ipv4=W(FILTERED, "policy=DROP"), ipv6=W(FILTERED, "policy=DROP")),
        dual("udp", 2500, ipv4=W(RESTRICTED, via="interface-except"),
             ipv6=W(RESTRICTED, via="interface-except")),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -i eth-a -p tcp -m tcp --dport 22 -j ACCEPT
        -A INPUT -s {A} -i eth+ -p tcp -m tcp --dport 2200 -j ACCEPT
        -A INPUT -i eth-b -p tcp -m tcp --dport 2300 -j DROP
        -A INPUT -p tcp -m tcp --dport 2300 -j ACCEPT
        -A INPUT -i lo -p tcp -m tcp --dport 2400 -j ACCEPT
        -A INPUT ! -i eth-b -p udp -m udp --dport 2500 -j ACCEPT
    """),
))

CASES.append(Case(
    "log_does_not_end_evaluation",
    "policy ACCEPT: LOG/NFLOG are not verdicts; the DROP/REJECT after them is",
    services=[
        dual("tcp", 22, ipv4=W(OPEN, "--dport 22", "-j ACCEPT"), ipv6=OPEN),
        dual("tcp", 23, ipv4=W(OPEN, "policy=ACCEPT"), ipv6=W(OPEN, "policy=ACCEPT")),
        dual("tcp", 25, ipv4=W(FILTERED, "--dport 25", "-j DROP"),
             ipv6=W(FILTERED, "--dport 25", "-j DROP")),
        dual("udp", 69, ipv4=W(FILTERED, "REJECT"), ipv6=W(FILTERED, "REJECT")),
    ],
    **both("""
        -A INPUT -p tcp -m tcp --dport 22 -j LOG --log-prefix "ssh "
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 23 -j LOG --log-prefix "telnet "
        -A INPUT -p tcp -m tcp --dport 25 -j LOG --log-prefix "smtp "
        -A INPUT -p tcp -m tcp --dport 25 -j DROP
        -A INPUT -p udp -m udp --dport 69 -j NFLOG --nflog-group 5
        -A INPUT -p udp -m udp --dport 69 -j REJECT
    """, input="ACCEPT"),
))

CASES.append(Case(
    "raw_and_mangle_drop_before_filter",
    "tables in hook order: raw PREROUTING and mangle PREROUTING/INPUT drop before filter accepts",
    services=[
        dual("tcp", 3306, ipv4=W(FILTERED, "table=raw"), ipv6=W(FILTERED, "table=raw")),
        dual("tcp", 5432, ipv4=W(RESTRICTED, "table=mangle"), ipv6=RESTRICTED),
        dual("udp", 514, ipv4=W(FILTERED, "table=mangle", "chain=INPUT"),
             ipv6=W(FILTERED, "table=mangle")),
        dual("tcp", 8000, ipv4=W(OPEN, "--dport 8000"), ipv6=OPEN),
    ],
    **both("""
        -A INPUT -p tcp -m tcp --dport 3306 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 5432 -j ACCEPT
        -A INPUT -p udp -m udp --dport 514 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 8000 -j ACCEPT
    """, raw="""
        -A PREROUTING -p tcp -m tcp --dport 3306 -j DROP
    """, mangle="""
        -A PREROUTING -s {B} -p tcp -m tcp --dport 5432 -j DROP
        -A INPUT -p udp -m udp --dport 514 -j DROP
    """),
))

CASES.append(Case(
    "conntrack_new_versus_established_only",
    "a new connection is NEW: rules for ESTABLISHED,RELATED (or ! NEW, or INVALID) do not open it",
    services=[
        dual("tcp", 22, ipv4=W(OPEN, "NEW"), ipv6=W(OPEN, "NEW")),
        dual("tcp", 25, ipv4=W(FILTERED, "policy=DROP"), ipv6=FILTERED),
        dual("tcp", 110, ipv4=FILTERED, ipv6=FILTERED),
        dual("tcp", 143, ipv4=FILTERED, ipv6=FILTERED),
        dual("udp", 161, ipv4=OPEN, ipv6=OPEN),
        dual("tcp", 993, ipv4=OPEN, ipv6=OPEN),
        dual("tcp", 995, ipv4=W(FILTERED, "--dport 995", "-j DROP"), ipv6=FILTERED),
    ],
    **both("""
        -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        -A INPUT -m conntrack --ctstate INVALID -j DROP
        -A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 25 -m conntrack --ctstate ESTABLISHED -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 110 -m state --state RELATED,ESTABLISHED -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 143 -m conntrack ! --ctstate NEW -j ACCEPT
        -A INPUT -p udp -m udp --dport 161 -m state --state NEW,ESTABLISHED -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 993 -m conntrack --ctstate NEW,UNTRACKED -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 995 -m conntrack --ctstate NEW -j DROP
        -A INPUT -p tcp -m tcp --dport 995 -j ACCEPT
    """),
))

CASES.append(Case(
    "bound_addresses_loopback_specific_v6only",
    "127.0.0.1/::1 are local-only even with an ACCEPT rule; specific addresses take only their "
    "family; -d for another address does not cover a specific-address socket",
    services=[
        S("tcp", "127.0.0.1", 631, ipv4=LOCAL_ONLY, ipv6=NOT_BOUND),
        S("udp", "127.0.0.1", 631, ipv4=LOCAL_ONLY, ipv6=NOT_BOUND),
        S("tcp", "::1", 632, True, ipv4=NOT_BOUND, ipv6=LOCAL_ONLY),
        S("tcp", "192.0.2.1", 8000, ipv4=W(OPEN, "8000"), ipv6=NOT_BOUND),
        S("tcp", "2001:db8:a::1", 8001, True, ipv4=NOT_BOUND, ipv6=W(OPEN, "8001")),
        S("tcp", "::", 8002, True, ipv4=NOT_BOUND, ipv6=OPEN),
        S("tcp", "0.0.0.0", 8003, ipv4=OPEN, ipv6=NOT_BOUND),
        S("tcp", "192.0.2.1", 8004, ipv4=W(FILTERED, "policy=DROP"), ipv6=NOT_BOUND),
        S("tcp", "2001:db8:a::1", 8005, True, ipv4=NOT_BOUND, ipv6=W(FILTERED, "policy=DROP")),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -m multiport --dports 631,632,8000,8001,8002,8003 -j ACCEPT
        -A INPUT -p udp -m udp --dport 631 -j ACCEPT
        -A INPUT -d {sb} -p tcp -m tcp --dport 8004 -j ACCEPT
        -A INPUT -d {sb} -p tcp -m tcp --dport 8005 -j ACCEPT
    """),
))

# A kube-proxy-like dispatch chain, long enough for the evaluator's rule index: 40 rules for
# other hosts' addresses ("cluster IPs", one of them on the very port of a listener here), a broad
# one for their network, and the few rules that name this host's address or no address at all.
_DISPATCH = "\n".join(
    [f"-A SERVICES -d {{C}}{n} -p tcp -m tcp --dport 80 -j ACCEPT" for n in range(2, 22)]
    + ["-A SERVICES -d {sa} -p tcp -m tcp --dport 8443 -j ACCEPT"]
    + [f"-A SERVICES -d {{C}}{n} -p tcp -m tcp --dport 80 -j ACCEPT" for n in range(22, 42)]
    + ["-A SERVICES -d {CN} -p tcp -m tcp --dport 8080 -j ACCEPT",
       "-A SERVICES -s {A} -d {sa} -p tcp -m tcp --dport 8445 -j ACCEPT",
       "-A SERVICES -p tcp -m tcp --dport 8446 -j ACCEPT"]
)
CASES.append(Case(
    "long_dispatch_chain",
    "a 45-rule chain keyed on destination addresses: only the rules naming this host's addresses "
    "(or none) decide; 40 rules for other hosts' port 80 and a broad one for their network open "
    "nothing here",
    services=[
        dual("tcp", 80, ipv4=W(FILTERED, "policy=DROP"), ipv6=W(FILTERED, "policy=DROP")),
        dual("tcp", 8080, ipv4=FILTERED, ipv6=FILTERED),
        S("tcp", "192.0.2.1", 8443, ipv4=W(OPEN, "chain=SERVICES", "--dport 8443"), ipv6=NOT_BOUND),
        S("tcp", "2001:db8:a::1", 8443, True, ipv4=NOT_BOUND, ipv6=W(OPEN, "chain=SERVICES", "--dport 8443")),
        S("tcp", "192.0.2.1", 8445, ipv4=W(RESTRICTED, "--dport 8445"), ipv6=NOT_BOUND),
        S("tcp", "2001:db8:a::1", 8445, True, ipv4=NOT_BOUND, ipv6=W(RESTRICTED, "--dport 8445")),
        dual("tcp", 8446, ipv4=W(OPEN, "--dport 8446"), ipv6=W(OPEN, "--dport 8446")),
    ],
    **both("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -j SERVICES
    """ + _DISPATCH),
))

CASES.append(Case(
    "ipv6_disabled_by_sysctl",
    "net.ipv6.conf.all/default.disable_ipv6=1 in the server: IPv6 status is disabled, even with "
    "an empty ip6tables (the gap that would otherwise exist is not reachable)",
    services=[
        dual("tcp", 22, ipv4=W(RESTRICTED, "--dport 22"), ipv6=DISABLED),
        dual("udp", 123, ipv4=W(OPEN, "--dport 123"), ipv6=DISABLED),
        dual("tcp", 80, ipv4=W(FILTERED, "policy=DROP"), ipv6=DISABLED),
    ],
    v4=ruleset("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT
        -A INPUT -p udp -m udp --dport 123 -j ACCEPT
    """),
    v6=ruleset("", input="ACCEPT"),
    ipv6_disabled=True,
))


# ---------------------------------------------------------------------------------------------
# half 1: real clients


@dataclass
class Expectation:
    """What one real probe must show, and which (service, family) wants it."""

    request: ProbeRequest
    reachable: bool
    why: List[str]


def _probe_target(topo: Topology, svc: Svc, family: str, client: str) -> str:
    addr = ipaddress.ip_address(svc.address)
    fam_version = 4 if family == IPV4 else 6
    if addr.version == fam_version and not addr.is_unspecified and not addr.is_loopback:
        return svc.address  # bound to one address: every client aims at that address
    return topo.server_address(client, family)


def plan_probes(topo: Topology, case: Case) -> List[Expectation]:
    """One probe per (client, proto, target, port, source port). Several sockets can map onto
    one probe (0.0.0.0:22 and [::]:22 v6only=1 both answer the IPv4 probe to 192.0.2.1:22); the
    port is reachable when any of them is expected reachable from that client."""
    plan: Dict[Tuple[Any, ...], Expectation] = {}
    for svc in case.services:
        for family in FAMILIES:
            want = svc.want(family)
            for client in (INSIDE, OUTSIDE):
                reachable = want.status == OPEN or (want.status == RESTRICTED and client == INSIDE)
                sport = want.source_port if client == INSIDE else None
                target = _probe_target(topo, svc, family, client)
                key = (client, svc.proto, target, svc.port, sport)
                exp = plan.get(key)
                if exp is None:
                    exp = plan[key] = Expectation(
                        topo.request(client, target, svc.port, svc.proto, source_port=sport),
                        False, [])
                exp.reachable = exp.reachable or reachable
                exp.why.append(f"{svc} {family}={want.status}")
    return list(plan.values())


def check_real_clients(topo: Topology, case: Case) -> Tuple[List[str], List[str]]:
    plan = plan_probes(topo, case)
    results = topo.probe_many([e.request for e in plan])
    problems, table = [], []
    for exp, res in zip(plan, results):
        verdict = "ok" if res.reachable == exp.reachable else "MISMATCH"
        want = "reachable" if exp.reachable else "not reachable"
        line = f"  [{verdict}] {res} - want {want} for {'; '.join(exp.why)}"
        table.append(line)
        if verdict != "ok":
            problems.append(line)
    return problems, table


# ---------------------------------------------------------------------------------------------
# half 2: twinwall


def _norm_addr(address: str) -> str:
    if address == "*":
        return "::"
    try:
        return str(ipaddress.ip_address(address.strip("[]").split("%")[0]))
    except ValueError:
        return address


def find_service(report: Dict[str, Any], svc: Svc) -> Tuple[Optional[Dict[str, Any]], str]:
    matches = [s for s in report.get("services", [])
               if s.get("protocol") == svc.proto and s.get("port") == svc.port
               and _norm_addr(str(s.get("address"))) == _norm_addr(svc.address)]
    if len(matches) == 1:
        return matches[0], ""
    listed = sorted(f"{s.get('protocol')} {s.get('address')}:{s.get('port')}"
                    for s in report.get("services", []))
    if not matches:
        return None, f"{svc}: not in twinwall's services (it listed: {', '.join(listed) or 'none'})"
    return None, f"{svc}: listed {len(matches)} times"


def _render_decider(d: Dict[str, Any]) -> str:
    what = f"rule={d.get('rule')}" if "rule" in d else f"policy={d.get('policy')}"
    num = f" #{d['rule_number']}" if "rule_number" in d else ""
    return f"table={d.get('table')} chain={d.get('chain')}{num} {what}"


def _covers(cidrs: Sequence[str], address: str) -> bool:
    addr = ipaddress.ip_address(address)
    for c in cidrs:
        try:
            net = ipaddress.ip_network(str(c), strict=False)
        except ValueError:
            continue
        if net.version == addr.version and addr in net:
            return True
    return False


def _iface_matches(entries: Sequence[str], ifname: str) -> bool:
    for e in entries:
        e = str(e)
        if e.startswith("!"):
            continue
        if e == ifname or (e.endswith("+") and ifname.startswith(e[:-1])):
            return True
    return False


def check_family(topo: Topology, case: Case, svc: Svc, family: str,
                 entry: Dict[str, Any]) -> List[str]:
    want = svc.want(family)
    got = entry.get(family)
    label = f"{svc} {family}"
    if not isinstance(got, dict):
        return [f"{label}: no '{family}' object in the service entry: {json.dumps(entry)}"]
    deciders = got.get("decided_by") or []
    shown = "; ".join(_render_decider(d) for d in deciders if isinstance(d, dict)) or "(empty)"
    details = (f"decided_by: {shown}; allowed_sources={got.get('allowed_sources')} "
               f"allowed_interfaces={got.get('allowed_interfaces')} "
               f"uncertain={got.get('uncertain')}")
    status = got.get("status")
    if status != want.status:
        return [f"{label}: expected {want.status}, got {status}  [{case.doc}]\n      {details}"]
    problems = []
    ruleset_loaded = (case.v4 if family == IPV4 else case.v6) is not None
    if want.status in (OPEN, RESTRICTED, FILTERED):
        if ruleset_loaded and not deciders:
            problems.append(f"{label}: status {status} but decided_by is empty")
        if want.decided and not any(all(s in _render_decider(d) for s in want.decided)
                                    for d in deciders if isinstance(d, dict)):
            problems.append(f"{label}: no decided_by entry mentions all of {list(want.decided)}"
                            f"\n      {details}")
    if got.get("uncertain"):
        problems.append(f"{label}: every match here is decidable, yet uncertain="
                        f"{got.get('uncertain')}")
    if want.status == RESTRICTED:
        sources = got.get("allowed_sources") or []
        ifaces = got.get("allowed_interfaces") or []
        inside = topo.clients[INSIDE].link
        outside = topo.clients[OUTSIDE].link
        if want.via == "source":
            if not _covers(sources, inside.client_address(family)):
                problems.append(f"{label}: allowed_sources {sources} miss the inside client "
                                f"{inside.client_address(family)} ({inside.network(family)})")
            if _covers(sources, outside.client_address(family)):
                problems.append(f"{label}: allowed_sources {sources} include the outside client "
                                f"{outside.client_address(family)}, which the firewall drops")
        elif want.via in ("interface", "interface-except"):
            if want.via == "interface" and not _iface_matches(ifaces, inside.server_if):
                problems.append(f"{label}: allowed_interfaces {ifaces} miss {inside.server_if}")
            if _iface_matches(ifaces, outside.server_if):
                problems.append(f"{label}: allowed_interfaces {ifaces} include "
                                f"{outside.server_if}, which the firewall drops")
    if want.status in (OPEN, RESTRICTED):
        problems += _check_allowed(topo, label, want, family, got)
    if problems:
        problems[-1] += f"  [{case.doc}]"
    return problems


EPHEMERAL_PORT = 40000  # stands for the port a client's kernel picks (32768-60999)


def _holds(combo: Dict[str, Any], address: str, ifname: str, sport: int) -> bool:
    ports = combo.get("source_ports") or []
    return (_covers(combo.get("sources") or [], address)
            and (combo.get("interfaces") == ["*"] or _iface_matches(combo.get("interfaces") or [], ifname))
            and (ports == ["*"] or any(int(r.split("-")[0]) <= sport <= int(r.split("-")[-1]) for r in ports)))


def _check_allowed(topo: Topology, label: str, want: Want, family: str, got: Dict[str, Any]) -> List[str]:
    """The ``allowed`` combinations hold each client that connected (its address, the server
    interface it arrives on, its source port) and none that did not."""
    combos = got.get("allowed")
    if not isinstance(combos, list) or not combos:
        return [f"{label}: status {want.status} but no 'allowed' combinations: {combos!r}"]
    problems = []
    for client in (INSIDE, OUTSIDE):
        link = topo.clients[client].link
        connects = want.status == OPEN or client == INSIDE
        sport = want.source_port if client == INSIDE and want.source_port else EPHEMERAL_PORT
        held = any(_holds(c, link.client_address(family), link.server_if, sport) for c in combos)
        if held != connects:
            problems.append(f"{label}: allowed {combos} {'miss' if connects else 'hold'} the {client} client "
                            f"{link.client_address(family)} on {link.server_if} from port {sport}, which "
                            f"{'connects' if connects else 'does not connect'}")
    return problems


def check_twinwall(topo: Topology, case: Case, report: Dict[str, Any]) -> List[str]:
    problems = []
    # (harness.audit_json checked the printed twinwall.audit/2 and inlined its address lists)
    if report.get("schema") != "twinwall.audit/1":
        problems.append(f"schema is {report.get('schema')!r}, expected the inlined 'twinwall.audit/1'")
    ipv6 = report.get("ipv6") or {}
    want_enabled = not case.ipv6_disabled
    if ipv6.get("enabled") is not want_enabled:
        problems.append(f"ipv6.enabled is {ipv6.get('enabled')!r}, expected {want_enabled} "
                        f"(evidence: {ipv6.get('evidence')})")
    if case.ipv6_disabled and not ipv6.get("evidence"):
        problems.append("IPv6 is disabled but ipv6.evidence is empty")
    for svc in case.services:
        entry, err = find_service(report, svc)
        if entry is None:
            problems.append(err)
            continue
        if ":" in svc.address and entry.get("v6only") is not svc.v6only:
            problems.append(f"{svc}: v6only is {entry.get('v6only')!r}, the socket has "
                            f"{svc.v6only}")
        for family in FAMILIES:
            problems += check_family(topo, case, svc, family, entry)
    findings = report.get("findings") or []
    for family, severity, service in case.findings:
        if not any(f.get("family") == family and f.get("severity") == severity
                   and service in [f.get("service")] + [e.get("service") for e in f.get("services") or []]
                   for f in findings):
            got = [(f.get("id"), f.get("family"), f.get("severity"), f.get("service"))
                   for f in findings]
            problems.append(f"no {severity} finding for {service} over {family} "
                            f"(the family gap); findings: {got}")
    for fid, family in case.host_findings:
        if not any(f.get("id") == fid and f.get("family") == family for f in findings):
            problems.append(f"no {fid} finding over {family}; findings: "
                            f"{[(f.get('id'), f.get('family')) for f in findings]}")
    if case.grouped_gap is not None:
        problems += _check_grouped_gap(case, findings)
    for fid, family in case.absent:
        if any(f.get("id") == fid and f.get("family") == family for f in findings):
            problems.append(f"{fid} over {family} should not be raised: {[f['message'] for f in findings if f.get('id') == fid]}")
    return problems


def _check_grouped_gap(case: Case, findings: List[Dict[str, Any]]) -> List[str]:
    """One cause, one finding: the wide family's gap lists exactly the services the real
    clients reached over it (open) and not over the other family (filtered)."""
    family, severity = case.grouped_gap  # type: ignore[misc]
    other = IPV4 if family == IPV6 else IPV6
    gaps = [f for f in findings if f.get("id") == "TW-FAMILY-GAP" and f.get("family") == family
            and f.get("severity") == severity]
    if len(gaps) != 1:
        return [f"expected one {severity} TW-FAMILY-GAP over {family}, got {[g.get('message') for g in gaps]}"]
    wide = {(s.proto, s.port) for s in case.services if s.want(family).status == OPEN}
    narrow = {(s.proto, s.port) for s in case.services
              if s.want(other).status == FILTERED or (s.want(other).status == NOT_BOUND and s.want(family).status == OPEN)}
    expected = wide & {(p, port) for p, port in narrow
                       if not any(x.proto == p and x.port == port and x.want(other).status == OPEN for x in case.services)}
    listed = {(e["protocol"], e["port"]) for e in gaps[0].get("services") or []}
    problems = []
    if listed != expected:
        problems.append(f"the grouped gap lists {sorted(listed)}, the clients found {sorted(expected)} "
                        f"open over {family} only")
    if gaps[0].get("service") is not None:
        problems.append(f"a gap of {len(listed)} services names one service: {gaps[0].get('service')}")
    if not gaps[0].get("fix") or not gaps[0].get("decided_by"):
        problems.append(f"the grouped gap has no fix or no decided_by: {gaps[0]}")
    return problems


# ---------------------------------------------------------------------------------------------
# the test


def test_cases_are_well_formed() -> None:
    assert len(CASES) >= 14
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        keys = [(s.proto, _norm_addr(s.address), s.port) for s in case.services]
        assert len(keys) == len(set(keys)), f"{case.name}: a service is listed twice"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_audit_scenario(case: Case) -> None:
    with Topology() as topo:
        if case.ipv6_disabled:
            topo.disable_ipv6()
        topo.load_iptables(case.v4, case.v6)
        listener = topo.start_listeners([s.spec for s in case.services])
        for svc, bound in zip(case.services, listener.bound):
            if ":" in svc.address:
                assert bound["v6only"] is svc.v6only, f"{svc}: kernel says {bound}"

        # The audit only reads state, so it runs while the clients probe.
        audit: Dict[str, Any] = {}

        def run_audit() -> None:
            try:
                audit["report"] = topo.audit_json()
            except AssertionError as exc:
                audit["error"] = str(exc)

        worker = None if REAL_ONLY else threading.Thread(target=run_audit)
        if worker:
            worker.start()
        try:
            problems, table = check_real_clients(topo, case)
        finally:
            if worker:
                worker.join()

        assert not problems, (
            f"real clients disagree with the expected statuses of case {case.name} "
            f"({case.doc}) - the case or the harness is wrong, not twinwall:\n"
            + "\n".join(problems) + "\nall probes:\n" + "\n".join(table))
        if REAL_ONLY:
            pytest.skip("real-client half passed; twinwall half skipped (TWINWALL_NETNS_REAL_ONLY)")

        assert "error" not in audit, audit.get("error")
        problems = check_twinwall(topo, case, audit["report"])
        assert not problems, (
            f"twinwall audit disagrees with netfilter (the real clients confirmed every expected "
            f"status) in case {case.name}:\n  " + "\n  ".join(problems))
