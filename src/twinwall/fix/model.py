"""The values a fix plan is made of: abstract rules, changes, refusals.

A :class:`RuleSpec` says what a rule matches and does in terms both owners and both families
understand (no iptables or nft syntax); owners render it. A :class:`Change` is what one strategy
does about one finding in one family: rules to place (at the top or bottom of a chain, or just
before the rule that decided the finding), policies to set, or a whole table to replace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from twinwall.model import IPV4, IPV6
from twinwall.twins import ICMP6_TYPE, NFT_REJECT

IP6TABLES_ICMPV6_NAMES = frozenset((
    "destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem", "echo-request",
    "echo-reply", "router-solicitation", "router-advertisement", "neighbour-solicitation",
    "neighbour-advertisement", "redirect"))

SCHEMA = "twinwall.fix/1"

LOOPBACK = {IPV4: "127.0.0.0/8", IPV6: "::1/128"}
ANY = {IPV4: "0.0.0.0/0", IPV6: "::/0"}
TOOL = {IPV4: "iptables", IPV6: "ip6tables"}


class Refused(Exception):
    """A strategy cannot address a finding (a prefix with no mapping, nothing to twin...): the
    message is the reason the plan lists."""


@dataclass(frozen=True)
class RuleSpec:
    """One rule, owner- and syntax-neutral.

    ``chain`` is the hook-level chain (INPUT, OUTPUT, FORWARD, or a front-end chain such as
    DOCKER-USER). ``source``/``destination``: one CIDR of the rule's family. ``not_iif``/
    ``not_oif``: an interface the rule excludes ("lo"). ``icmp_type``: a name of the family's
    ICMP (ICMPv6 names for IPv6: see twinwall.twins). ``raw``: iptables arguments already
    written for the family (the egress twin of a rule), used as they are."""

    family: str
    chain: str
    action: str  # ACCEPT | DROP | REJECT | LOG
    protocol: Optional[str] = None  # tcp | udp | icmp | ipv6-icmp
    dport: Optional[int] = None
    sport: Optional[str] = None  # "3000" or "1024:2000"
    source: Optional[str] = None
    destination: Optional[str] = None
    iif: Optional[str] = None
    oif: Optional[str] = None
    not_iif: Optional[str] = None
    not_oif: Optional[str] = None
    state: Optional[str] = None  # "NEW", "ESTABLISHED,RELATED"
    icmp_type: Optional[str] = None
    hop_limit: Optional[int] = None  # IPv6 hop limit equal (NDP: 255)
    reject_with: Optional[str] = None
    log_prefix: Optional[str] = None
    raw: Tuple[str, ...] = ()
    # nft matches and verdict already written for the family (the egress twin of a native nft
    # rule), used as they are after ``meta nfproto``
    nft_text: str = ""
    # order among the rules several changes put at the top of one chain: loopback accept (0),
    # spoofed loopback drop (1), ICMPv6 that conntrack leaves untracked (2), established (3)
    rank: int = 5

    def iptables_args(self) -> List[str]:
        """The rule's matches and target as iptables-save prints them (without ``-A CHAIN``)."""
        if self.raw:
            return list(self.raw)
        if self.nft_text:
            raise Refused(f"a translated nft rule ({self.nft_text}) has no iptables form")
        a: List[str] = []
        if self.source:
            a += ["-s", _cidr(self.source)]
        if self.destination:
            a += ["-d", _cidr(self.destination)]
        if self.iif:
            a += ["-i", self.iif]
        if self.not_iif:
            a += ["!", "-i", self.not_iif]
        if self.oif:
            a += ["-o", self.oif]
        if self.not_oif:
            a += ["!", "-o", self.not_oif]
        if self.protocol:
            a += ["-p", self.protocol]
            if self.protocol in ("tcp", "udp") and (self.dport is not None or self.sport):
                a += ["-m", self.protocol]
                if self.sport:
                    a += ["--sport", self.sport]
                if self.dport is not None:
                    a += ["--dport", str(self.dport)]
            if self.icmp_type:
                if self.family == IPV6:
                    # ip6tables knows no MLD names: those go by number
                    name = self.icmp_type if self.icmp_type in IP6TABLES_ICMPV6_NAMES else str(ICMP6_TYPE[self.icmp_type])
                    a += ["-m", "icmp6", "--icmpv6-type", name]
                else:
                    a += ["-m", "icmp", "--icmp-type", self.icmp_type]
        if self.hop_limit is not None:
            a += ["-m", "hl", "--hl-eq", str(self.hop_limit)]
        if self.state:
            a += ["-m", "conntrack", "--ctstate", self.state]
        if self.action == "LOG":
            a += ["-m", "limit", "--limit", "5/min", "-j", "LOG", "--log-prefix", f'"{self.log_prefix or "twinwall drop: "}"']
        elif self.action == "REJECT":
            a += ["-j", "REJECT"] + (["--reject-with", self.reject_with] if self.reject_with else [])
        else:
            a += ["-j", self.action]
        return a

    def iptables_line(self) -> str:
        return " ".join(["-A", self.chain] + self.iptables_args())

    def nft(self) -> str:
        """The rule as an nft statement for an inet table (``meta nfproto`` pins the family)."""
        if self.raw:
            raise Refused("an nft table of twinwall's own cannot hold a translated iptables rule")
        fam = "ip" if self.family == IPV4 else "ip6"
        parts = [f"meta nfproto {'ipv4' if self.family == IPV4 else 'ipv6'}"]
        if self.nft_text:
            return " ".join(parts + [self.nft_text])
        if self.iif:
            parts.append(f'iifname "{self.iif}"')
        if self.not_iif:
            parts.append(f'iifname != "{self.not_iif}"')
        if self.oif:
            parts.append(f'oifname "{self.oif}"')
        if self.not_oif:
            parts.append(f'oifname != "{self.not_oif}"')
        if self.source:
            parts.append(f"{fam} saddr {self.source}")
        if self.destination:
            parts.append(f"{fam} daddr {self.destination}")
        if self.protocol in ("tcp", "udp"):
            parts.append(f"meta l4proto {self.protocol}")
            if self.sport:
                parts.append(f"th sport {self.sport.replace(':', '-')}")
            if self.dport is not None:
                parts.append(f"th dport {self.dport}")
        elif self.protocol in ("icmp", "ipv6-icmp"):
            proto = "icmp" if self.family == IPV4 else "icmpv6"
            name = NFT_ICMPV6.get(self.icmp_type, self.icmp_type) if (self.family == IPV6 and self.icmp_type) else self.icmp_type
            parts.append(f"{proto} type {name}" if name else f"meta l4proto {proto}")
        if self.hop_limit is not None:
            parts.append(f"ip6 hoplimit {self.hop_limit}")
        if self.state:
            parts.append("ct state " + ",".join(s.lower() for s in self.state.split(",")))
        verdict = {
            "ACCEPT": "accept",
            "DROP": "drop",
            "LOG": f'limit rate 5/minute log prefix "{self.log_prefix or "twinwall drop: "}"',
        }.get(self.action)
        if self.action == "REJECT":
            verdict = f"reject with {NFT_REJECT[self.reject_with]}" if self.reject_with in NFT_REJECT else "reject"
        parts.append(verdict or self.action.lower())
        return " ".join(parts)


# iptables ICMPv6 names -> nft's
NFT_ICMPV6 = {"neighbour-solicitation": "nd-neighbor-solicit", "neighbour-advertisement": "nd-neighbor-advert",
              "router-solicitation": "nd-router-solicit", "router-advertisement": "nd-router-advert",
              "redirect": "nd-redirect"}


def _cidr(text: str) -> str:
    """As iptables-save prints an address: always with its prefix length."""
    if "/" in text:
        return text
    return text + ("/128" if ":" in text else "/32")


# where a change's rules go, in the chain of their RuleSpec
TOP = "top"  # the start of the chain, in the order given
BOTTOM = "bottom"  # the end of the chain (just before its policy decides)
BEFORE = "before"  # just before rule ``anchor`` (table, chain, rule number) of the chain


@dataclass
class Change:
    """What one strategy does about one finding in one family."""

    finding: str  # the catalogue id
    family: str
    strategy: str
    rules: List[RuleSpec] = field(default_factory=list)
    place: str = BOTTOM
    table: str = "filter"
    chain: str = "INPUT"
    # BEFORE: the rule the new ones must precede (its 1-based number in ``chain``)
    anchor: Optional[int] = None
    # chain -> policy to set (DROP); block-ipv6 sets all three
    policies: Dict[str, str] = field(default_factory=dict)
    # block-ipv6: the filter table is replaced by exactly these rules (and policies)
    replace_table: bool = False
    # the finding's subject and the rules that decided it, as the plan cites them
    services: List[str] = field(default_factory=list)
    decided_by: List[str] = field(default_factory=list)
    note: str = ""
    # where the change went when the rule it should precede was not located (said after the
    # note; an owner whose rules do not go into the admin's chain clears it)
    fallback: str = ""
    # findings this change is expected to raise, by (id, family): block-ipv6 makes IPv4 the
    # wider family on purpose
    expected: Tuple[Tuple[str, Optional[str]], ...] = ()
    # rule classes it may open on purpose: "loopback", "established", "icmpv6"
    may_open: Tuple[str, ...] = ()
    # filled by the owner
    owner: str = ""
    commands: List[str] = field(default_factory=list)
    rules_text: str = ""
    # rules of this change the owner left out, with why (another rule of the plan before each
    # already decides all it matches)
    left_out: List[str] = field(default_factory=list)

    def full_note(self) -> str:
        return "; ".join([self.note] * bool(self.note) + [self.fallback] * bool(self.fallback)
                         + [f"left out {r}" for r in self.left_out])

    def key(self) -> Tuple[str, str, Tuple[str, ...]]:
        return (self.finding, self.family, tuple(self.services))

    def to_json(self) -> Dict:
        return {
            "finding": self.finding,
            "family": self.family,
            "strategy": self.strategy,
            "owner": self.owner,
            "commands": list(self.commands),
            "rules": self.rules_text,
            "services": list(self.services),
            "decided_by": list(self.decided_by),
            "note": self.full_note(),
            "left_out": list(self.left_out),
        }


@dataclass
class Refusal:
    finding: str
    family: Optional[str]
    reason: str
    services: List[str] = field(default_factory=list)
    hook: Optional[str] = None

    def to_json(self) -> Dict:
        return {"finding": self.finding, "family": self.family, "hook": self.hook, "reason": self.reason,
                "services": list(self.services)}
