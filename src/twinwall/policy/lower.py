"""A policy, per family: the ordered rules each hook of one family gets (baseline first), with
every address, ICMP type and reject answer in that family's terms, and the notes that say
what one family leaves out.

Both generators and the meaning (``policy.meaning``) read this, so they agree on *what* each
family's rules are; the generators decide only how to spell them. The fail-open cases the
other translators have live here, each handled once:

* a positive address match with no member in a family: the rule is left out of that family,
  and a note says so (not an unrestricted rule);
* a negated match with no member in a family is always true there: the rule stays, without it
  (ferm drops the whole rule: SSH open to every IPv6 source);
* ICMP types are mapped with ``twinwall.twins``; a type with no twin leaves the rule out of
  that family (Aerleon turns an ICMPv6-only term in an IPv4 table into a bare accept);
* ICMP is protocol 1 in IPv4 and 58 (ipv6-icmp) in IPv6, never ``-p icmp`` in ip6tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from twinwall.policy.model import (
    FAMILIES,
    FAMILY_LABEL,
    HOOKS,
    IPV4,
    IPV6,
    OTHER_PROTOCOLS,
    Policy,
    Rule,
    icmp_type_in,
)
from twinwall.twins import ICMP4_TYPE, ICMP6_TYPE, REJECT4_TO_6

PROTO_NUMBER = {"tcp": 6, "udp": 17, **OTHER_PROTOCOLS}
LOOPBACK_NET = {IPV4: "127.0.0.0/8", IPV6: "::1/128"}
LINK_LOCAL_NET = {IPV4: "169.254.0.0/16", IPV6: "fe80::/10"}

# RFC 4890 (4.4.1) ICMPv6 a host must not drop, and what neighbour discovery needs
NDP_TYPES = ("router-solicitation", "router-advertisement", "neighbour-solicitation", "neighbour-advertisement")
MLD_TYPES = ("mld-listener-query", "mld-listener-report", "mld-listener-done", "mld2-listener-report")
ICMP6_ERRORS = ("destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem")
ICMP4_ERRORS = ("destination-unreachable", "time-exceeded", "parameter-problem")  # 3 holds frag-needed

# the file's reject_with -> iptables IPv4 --reject-with (IPv6: twins.REJECT4_TO_6)
REJECT4 = {
    "": "icmp-port-unreachable",
    "port-unreachable": "icmp-port-unreachable",
    "admin-prohibited": "icmp-admin-prohibited",
    "host-unreachable": "icmp-host-unreachable",
    "net-unreachable": "icmp-net-unreachable",
    "tcp-reset": "tcp-reset",
}


@dataclass
class FamilyRule:
    """One rule of one family, as both generators emit it and the meaning reads it."""

    hook: str
    action: str  # accept | drop | reject
    label: str  # "rule #3 (line 12)" or "baseline: loopback"
    proto: Optional[int] = None  # None: any protocol
    dports: Tuple[Tuple[int, int], ...] = ()
    sports: Tuple[Tuple[int, int], ...] = ()
    sources: Tuple[str, ...] = ()  # empty: any
    destinations: Tuple[str, ...] = ()
    not_sources: Tuple[str, ...] = ()
    not_destinations: Tuple[str, ...] = ()
    iif: Tuple[str, ...] = ()
    oif: Tuple[str, ...] = ()
    not_iif: Tuple[str, ...] = ()
    not_oif: Tuple[str, ...] = ()
    # (family's name, type, code or None for every code)
    icmp: Tuple[Tuple[str, int, Optional[int]], ...] = ()
    hop_limit: Optional[int] = None
    uid: Optional[str] = None
    states: Tuple[str, ...] = ()  # conntrack states (baseline only); empty: any
    reject_with: str = ""  # the file's spelling ("" = port-unreachable)
    log: bool = False  # log what it matches before the verdict
    rule: Optional[Rule] = None  # the policy rule it comes from (None: baseline)
    log_prefix: str = ""

    def has_negation_list(self) -> bool:
        return any(len(x) > 1 for x in (self.not_sources, self.not_destinations, self.not_iif, self.not_oif))


@dataclass
class Note:
    """Something a family leaves out or changes, said on stderr and in check."""

    rule: Optional[Rule]
    family: str
    text: str
    kind: str = "left-out"  # left-out | always-true | partial

    def __str__(self) -> str:
        where = f"{self.rule.label()}: " if self.rule else ""
        return f"{where}{self.text}"


@dataclass
class Lowered:
    """The policy for each family: ``rules[family][hook]`` in order, the default verdicts, and
    the notes."""

    policy: Policy
    rules: Dict[str, Dict[str, List[FamilyRule]]]  # the governed families only
    default: Dict[str, Dict[str, str]]
    notes: List[Note] = field(default_factory=list)
    # the rules of the file that exist in one family only, and why
    family_only: List[Tuple[Rule, str, str]] = field(default_factory=list)

    @property
    def families(self) -> Tuple[str, ...]:
        """The families the file governs: only these are compiled, proved and applied."""
        return self.policy.families


def lower(policy: Policy, uid_numbers: Optional[Dict[str, str]] = None) -> Lowered:
    """``uid_numbers``: user names replaced by numbers (check, where a name may be unknown)."""
    governed = policy.families
    out = Lowered(policy, {f: {h: [] for h in HOOKS} for f in governed},
                  {f: {h: policy.defaults.of(h, f) for h in HOOKS} for f in governed})
    d = policy.defaults
    for family in governed:
        for hook in HOOKS:
            out.rules[family][hook].extend(baseline(policy, family, hook))
    for rule in policy.rules:
        present = []
        for family in policy.rule_families(rule):
            fr = lower_rule(rule, family, out.notes)
            if fr is None:
                continue
            if uid_numbers and fr.uid in uid_numbers:
                fr.uid = uid_numbers[fr.uid]
            present.append(family)
            target = out.rules[family][rule.hook]
            if fr.action != "accept" and (d.log_dropped or rule.log):
                fr.log = True
                fr.log_prefix = f"twinwall r{rule.number} {fr.action.upper()}: "
            elif rule.log:
                fr.log = True
                fr.log_prefix = f"twinwall r{rule.number} {fr.action.upper()}: "
            target.append(fr)
        if len(present) == 1 and len(governed) > 1:
            why = (f"family = \"{rule.family}\"" if rule.family != "both"
                   else f"no {FAMILY_LABEL[[f for f in FAMILIES if f not in present][0]]} member")
            out.family_only.append((rule, present[0], why))
    for family in governed:
        for hook in HOOKS:
            verdict = out.default[family][hook]
            if verdict != "accept" and d.log_dropped:
                guard = _loopback_guard(hook) if not d.loopback else {}
                out.rules[family][hook].append(FamilyRule(
                    hook, "log", f"default {verdict} of {hook}", log=True,
                    log_prefix=f"twinwall {hook.upper()} {verdict.upper()}: ", **guard))
            if verdict == "reject":
                # the chain's policy stays DROP: a policy cannot reject
                out.rules[family][hook].append(FamilyRule(hook, "reject", f"default reject of {hook}"))
    return out


def _loopback_guard(hook: str) -> Dict:
    """Log rules never see loopback traffic (seed 001): where the file turned the loopback
    accept off, they say so themselves."""
    if hook == "input":
        return {"not_iif": ("lo",)}
    if hook == "output":
        return {"not_oif": ("lo",)}
    return {"not_iif": ("lo",), "not_oif": ("lo",)}


def baseline(policy: Policy, family: str, hook: str) -> List[FamilyRule]:
    d = policy.defaults
    out: List[FamilyRule] = []
    if d.loopback and hook in ("input", "output"):
        side: Dict[str, Any] = {"iif": ("lo",)} if hook == "input" else {"oif": ("lo",)}
        out.append(FamilyRule(hook, "accept", "baseline: loopback", **side))
    if d.spoofed_loopback and hook in ("input", "forward"):
        out.append(FamilyRule(hook, "drop", "baseline: spoofed loopback", sources=(LOOPBACK_NET[family],),
                              not_iif=("lo",)))
    if d.essential_icmp:
        proto = 1 if family == IPV4 else 58
        if family == IPV6:
            if hook in ("input", "output"):
                # neighbour discovery is untracked: no conntrack-state rule ever matches it
                out.append(FamilyRule(hook, "accept", "baseline: neighbour discovery (RFC 4861, hop limit 255)",
                                      proto=proto, icmp=_icmp(NDP_TYPES, family), hop_limit=255))
                mld: Dict[str, Any] = {"sources": (LINK_LOCAL_NET[IPV6],)} if hook == "input" else {}
                out.append(FamilyRule(hook, "accept", "baseline: multicast listener discovery (RFC 4890)",
                                      proto=proto, icmp=_icmp(MLD_TYPES, family), **mld))
            out.append(FamilyRule(hook, "accept", "baseline: ICMPv6 errors, packet too big (RFC 4890)",
                                  proto=proto, icmp=_icmp(ICMP6_ERRORS, family)))
        else:
            out.append(FamilyRule(hook, "accept", "baseline: ICMP errors, fragmentation needed (twins of RFC 4890's)",
                                  proto=proto, icmp=_icmp(ICMP4_ERRORS, family)))
    if d.established:
        out.append(FamilyRule(hook, "accept", "baseline: established, related", states=("ESTABLISHED", "RELATED")))
    if d.drop_invalid:
        out.append(FamilyRule(hook, "drop", "baseline: invalid", states=("INVALID",)))
    return out


def _icmp(names, family: str) -> Tuple[Tuple[str, int, Optional[int]], ...]:
    table = ICMP4_TYPE if family == IPV4 else ICMP6_TYPE
    return tuple((n, table[n], None) for n in names)


def lower_rule(rule: Rule, family: str, notes: List[Note]) -> Optional[FamilyRule]:
    fl = FAMILY_LABEL[family]
    other = FAMILY_LABEL[IPV6 if family == IPV4 else IPV4]
    fr = FamilyRule(rule.hook, rule.action, rule.label(), rule=rule, dports=rule.ports, sports=rule.source_ports,
                    iif=rule.in_interfaces, oif=rule.out_interfaces, not_iif=rule.not_in_interfaces,
                    not_oif=rule.not_out_interfaces, hop_limit=rule.hop_limit, uid=rule.uid,
                    reject_with=rule.reject_with)
    if rule.proto == "icmp":
        fr.proto = 1 if family == IPV4 else 58
    elif rule.proto != "any":
        fr.proto = PROTO_NUMBER.get(rule.proto, None) if not rule.proto.isdigit() else int(rule.proto)
    for key, attr, members in (("from", "sources", rule.sources), ("to", "destinations", rule.destinations)):
        if members is None:
            continue
        mine = members.of(family)
        if not mine:
            notes.append(Note(rule, family, f"left out of {fl}: {key} = {members.describe()} has no {fl} member "
                                             f"(the rule exists in {other} only)"))
            return None
        setattr(fr, attr, mine)
    for key, attr, members in (("not_from", "not_sources", rule.not_sources),
                               ("not_to", "not_destinations", rule.not_destinations)):
        if members is None:
            continue
        mine = members.of(family)
        if not mine:
            notes.append(Note(rule, family, f"{key} = {members.describe()} has no {fl} member: always true in {fl}, "
                                             f"so the rule applies there to every address", "always-true"))
            continue
        setattr(fr, attr, mine)
    if rule.icmp_types:
        mapped = []
        for name in rule.icmp_types:
            m = icmp_type_in(name, family)
            if m is None:
                notes.append(Note(rule, family, f"ICMP type {name} has no {fl} twin: left out of {fl}", "partial"))
            else:
                mapped.append(m)
        if not mapped:
            notes.append(Note(rule, family, f"left out of {fl}: none of its ICMP types exists in {fl} "
                                             f"(never a rule on every ICMP type)"))
            return None
        fr.icmp = tuple(dict.fromkeys(mapped))
    return fr


def reject_with(fr: FamilyRule, family: str) -> str:
    """The iptables --reject-with value of a reject rule in a family."""
    v4 = REJECT4[fr.reject_with]
    return v4 if family == IPV4 else REJECT4_TO_6[v4]

