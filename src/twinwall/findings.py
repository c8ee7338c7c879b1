"""The findings catalogue: every finding twinwall can raise, in one table.

Each entry says what the finding is (id, default severity, a one-line title), where a compliance
suite files it (CIS reference), what an admin should read (help) and which remedy kind `twinwall
fix` offers for it. The audit takes ids, severities and CIS texts from here; report formats
(SARIF rule metadata, JUnit, HTML) and the README's findings table are checked against it.

This module is a leaf: it imports nothing from twinwall, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

SEVERITIES: Tuple[str, ...] = ("info", "low", "medium", "high", "critical")

# CIS Benchmark (Debian/Ubuntu "iptables" section) controls, per family and topic.
CIS: Dict[Tuple[str, str], str] = {
    ("ipv4", "default-deny"): "CIS 4.4.2.1 Ensure iptables default deny firewall policy",
    ("ipv4", "loopback"): "CIS 4.4.2.2 Ensure iptables loopback traffic is configured",
    ("ipv4", "established"): "CIS 4.4.2.3 Ensure iptables outbound and established connections are configured",
    ("ipv4", "open-ports"): "CIS 4.4.2.4 Ensure iptables firewall rules exist for all open ports",
    ("ipv6", "default-deny"): "CIS 4.4.3.1 Ensure ip6tables default deny firewall policy",
    ("ipv6", "loopback"): "CIS 4.4.3.2 Ensure ip6tables loopback traffic is configured",
    ("ipv6", "established"): "CIS 4.4.3.3 Ensure ip6tables outbound and established connections are configured",
    ("ipv6", "open-ports"): "CIS 4.4.3.4 Ensure ip6tables firewall rules exist for all open ports",
}


@dataclass(frozen=True)
class FindingKind:
    """One kind of finding. ``severity`` is the default; the audit may raise or lower it for one
    instance (a family gap is high when one side is open, medium otherwise) and says why in
    ``severity_rule``. ``cis_topic`` keys :data:`CIS` with the finding's family. ``remedy`` names
    the `twinwall fix` strategy that addresses it (None: nothing to fix automatically). ``fix``
    is the one-line remedy each finding prints, a ``str.format`` template the audit fills with
    the finding's subject (see :func:`fix_line`)."""

    id: str
    severity: str
    title: str
    help: str
    cis_topic: Optional[str] = None
    remedy: Optional[str] = None
    severity_rule: str = ""
    fix: str = ""

    def cis(self, family: Optional[str]) -> Optional[str]:
        if self.cis_topic is None or family is None:
            return None
        return CIS.get((family, self.cis_topic))


def _kinds(*kinds: FindingKind) -> Dict[str, FindingKind]:
    return {k.id: k for k in kinds}


CATALOGUE: Dict[str, FindingKind] = _kinds(
    FindingKind(
        "TW-FAMILY-GAP", "high",
        "A service is reachable more widely over one IP family than the other",
        "The IPv4 and IPv6 firewalls disagree about this service: one family lets more sources in "
        "than its twin (typically ip6tables left at policy ACCEPT while iptables restricts the "
        "port). Give the wider family the twin of the narrower family's restriction, or close the "
        "port there.",
        cis_topic="open-ports", remedy="mirror",
        severity_rule="high when the wider family is open and the other filters the service; medium "
        "otherwise (open vs restricted, restricted vs filtered)",
        fix="add {tool} INPUT rules restricting {services} like {twin}'s (twinwall fix --strategy mirror)",
    ),
    FindingKind(
        "TW-NO-RULE", "medium",
        "A listening service is reachable only because a chain policy is ACCEPT",
        "No rule covers this open port: the chain's ACCEPT policy lets it in. The CIS control asks "
        "for an explicit rule for every open port, so that a later default-deny policy does not "
        "silently cut it.",
        cis_topic="open-ports", remedy="accept-new",
        fix="add an explicit {tool} INPUT rule accepting {services} (-m conntrack --ctstate NEW -j ACCEPT) "
        "(twinwall fix --strategy accept-new)",
    ),
    FindingKind(
        "TW-NO-DEFAULT-DENY", "medium",
        "New connections that no rule matches are accepted",
        "The INPUT chain (or an empty FORWARD/OUTPUT chain) ends in policy ACCEPT: whatever the "
        "rules forget is let in. Set the policy to DROP after accepting loopback, established "
        "traffic and the services meant to be reachable.",
        cis_topic="default-deny", remedy="baseline",
        severity_rule="medium for INPUT, low for an empty FORWARD or OUTPUT with policy ACCEPT",
        fix="set the {tool} {chain} policy to DROP after its accept rules (twinwall fix --strategy baseline)",
    ),
    FindingKind(
        "TW-LOOPBACK-NOT-ACCEPTED", "medium",
        "Loopback traffic is dropped",
        "Local services talk to each other over lo; dropping it breaks them. Accept -i lo in "
        "INPUT and -o lo in OUTPUT before any drop.",
        cis_topic="loopback", remedy="baseline",
        fix="insert '{tool} -I {chain} 1 {lo_option} lo -j ACCEPT' (twinwall fix --strategy baseline)",
    ),
    FindingKind(
        "TW-SPOOFED-LOOPBACK", "low",
        "No rule drops loopback source addresses arriving on other interfaces",
        "The kernel drops such martians, but the CIS control asks for an explicit rule "
        "(-s 127.0.0.0/8 / -s ::1 on interfaces other than lo -j DROP).",
        cis_topic="loopback", remedy="baseline",
        severity_rule="medium when route_localnet=1 lets loopback sources in from other interfaces",
        fix="add '{tool} -A INPUT ! -i lo -s {loopback} -j DROP' before the accept rules "
        "(twinwall fix --strategy baseline)",
    ),
    FindingKind(
        "TW-ESTABLISHED-DROPPED", "low",
        "Replies to this host's own outbound connections are dropped",
        "Without an ESTABLISHED,RELATED accept in INPUT, replies to connections this host opens "
        "cannot come back.",
        cis_topic="established", remedy="baseline",
        fix="insert '{tool} -I INPUT 1 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT' "
        "(twinwall fix --strategy baseline)",
    ),
    FindingKind(
        "TW-LEGACY-AND-NFT", "medium",
        "Legacy (x_tables) and nf_tables rules are both loaded",
        "A packet must pass both rulesets, and each tool (iptables-legacy, iptables-nft, nft) "
        "shows only its own half. Move the rules to one backend.",
        fix="move the rules to one backend ({tool}-legacy-save | {tool}-nft-restore, then flush the "
        "legacy tables); no automatic fix",
    ),
    FindingKind(
        "TW-NO-RULESET", "medium",
        "A family's ruleset could not be read",
        "Without the rules no verdict can be trusted for that family: collect as root, or give "
        "the saved dump.",
        severity_rule="medium when other rulesets were read, info when none was",
        fix="collect as root, or give the saved dump ({tool}-save > FILE; --{tool} FILE)",
    ),
    FindingKind(
        "TW-TABLE-NOT-READ", "high",
        "An iptables-nft table that nft -j cannot show was not read",
        "nft -j prints iptables-nft's xt matches without their arguments, so that table's rules "
        "are left out of the verdicts. Give the iptables-save / ip6tables-save dump as well.",
        fix="give the {tool}-save dump as well (--{tool} FILE), or audit the live host",
    ),
    FindingKind(
        "TW-IPV6-DISABLED", "info",
        "IPv6 is disabled on this host",
        "The ip6tables controls do not apply while IPv6 is off (the evidence says how it is off).",
        fix="nothing to fix while IPv6 stays off; keep the ip6tables rules twins of iptables' for the day "
        "it is turned on",
    ),
    FindingKind(
        "TW-UNCERTAIN", "info",
        "A verdict depends on a match twinwall cannot decide statically",
        "Rate limits, recent lists, marks and similar matches depend on run-time state; twinwall "
        "followed both outcomes and reports the wider one.",
        fix="check the named match by hand (twinwall explain), or express it with matches twinwall can "
        "decide; no automatic fix",
    ),
    FindingKind(
        "TW-EGRESS-FORWARD-DIFFER", "medium",
        "OUTPUT or FORWARD treat IPv4 and IPv6 differently",
        "An egress or forwarding rule exists in one family only (the tcp/25 story: IPv4 spam "
        "blocked, IPv6 not). Run 'twinwall diff' for the traffic classes.",
        remedy="egress",
        fix="give the other family the twin of the {chain} rule that differs (twinwall diff names it; "
        "twinwall fix --strategy egress)",
    ),
    FindingKind(
        "TW-EGRESS-FORWARD-NOT-COMPARED", "info",
        "Output and forward rules were not compared (very large ruleset)",
        "On very large rulesets the audit leaves the comparison of OUTPUT and FORWARD to "
        "'twinwall diff'.",
        fix="run 'twinwall diff' on this host",
    ),
    FindingKind(
        "TW-DROP-NOT-LOGGED", "low",
        "Dropped connections are not logged",
        "New connections the firewall drops or rejects pass no LOG/NFLOG rule first, so probes and "
        "blocked clients leave no trace. Log before the final drop (rate-limited), never loopback "
        "traffic.",
        remedy="baseline",
        fix="add '{tool} -A {chain} -m limit --limit 5/min -j LOG --log-prefix \"{tool} drop: \"' before "
        "the drop (twinwall fix --strategy baseline)",
    ),
    FindingKind(
        "TW-LOOPBACK-LOGGED", "low",
        "Loopback traffic is logged",
        "A LOG/NFLOG rule sees traffic on lo: local chatter floods the log and hides what comes from "
        "the network. Accept loopback before any LOG rule.",
        cis_topic="loopback", remedy="baseline",
        fix="insert '{tool} -I {chain} 1 {lo_option} lo -j ACCEPT' before the LOG rule "
        "(twinwall fix --strategy baseline)",
    ),
    FindingKind(
        "TW-ICMPV6-NDP-BLOCKED", "high",
        "IPv6 neighbour discovery is dropped: IPv6 is broken, not protected",
        "Neighbour solicitations/advertisements (ICMPv6 135/136, hop limit 255, untracked by "
        "conntrack) are dropped on input or output, so every IPv6 connection over that interface "
        "times out before any service rule is met. Accept them in INPUT and OUTPUT.",
        remedy="baseline",
        fix="accept NDP before the drops: {tool} -I INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl "
        "--hl-eq 255 -j ACCEPT, the same for 136, and in OUTPUT if it drops",
    ),
    FindingKind(
        "TW-ICMPV6-ESSENTIAL-BLOCKED", "medium",
        "ICMPv6 a host must not drop (RFC 4890 4.4.1) is dropped",
        "Packet too big, destination unreachable, time exceeded, parameter problem (RELATED to "
        "the host's connections), router advertisements or MLD queries are dropped on input: "
        "path MTU discovery and router discovery break.",
        remedy="baseline",
        fix="accept them in INPUT: {tool} -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT for the "
        "errors, -p ipv6-icmp --icmpv6-type router-advertisement -m hl --hl-eq 255 -j ACCEPT, and MLD queries",
    ),
)


TOOLS = {"ipv4": "iptables", "ipv6": "ip6tables"}
_LOOPBACK = {"ipv4": "127.0.0.0/8", "ipv6": "::1/128"}


def fix_line(finding_id: str, family: Optional[str], **subject: str) -> str:
    """The one-line remedy of a finding: its kind's ``fix`` with the family's tool, the twin
    family, the loopback range and the given subject (``services``, ``chain``...) filled in."""
    fields = {"tool": "iptables", "twin": "IPv4", "services": "the service", "chain": "INPUT",
              "lo_option": "-i", "loopback": "127.0.0.0/8 (::1/128 for ip6tables)"}
    if family in TOOLS:
        fields.update(tool=TOOLS[family], twin="IPv6" if family == "ipv4" else "IPv4",
                      loopback=_LOOPBACK[family])
    fields.update(subject)
    if fields["chain"] == "OUTPUT":
        fields["lo_option"] = "-o"
    return kind(finding_id).fix.format(**fields)


def kind(finding_id: str) -> FindingKind:
    """The catalogue entry of ``finding_id`` (KeyError for an id the catalogue lacks: every
    finding the audit raises must be catalogued, and a test checks it)."""
    return CATALOGUE[finding_id]
