"""What one family's ICMP means in the other: the table the fixer's ``mirror`` and the policy
compiler share, so that no rule is ever translated into ``ip6tables -p icmp`` (accepted by the
tool and never matched) or an ICMPv6-only term turned into a bare accept.

Names are the iptables/nft spellings. ``None`` means the message has no twin in that family:
a rule on it is left out of the other family, and the caller must say so.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

# ICMP (IPv4) type name -> ICMPv6 type name with the same job (RFC 4443 / RFC 4890)
ICMP4_TO_6: Dict[str, Optional[str]] = {
    "echo-request": "echo-request",  # 8 -> 128
    "echo-reply": "echo-reply",  # 0 -> 129
    "destination-unreachable": "destination-unreachable",  # 3 -> 1
    "fragmentation-needed": "packet-too-big",  # 3/4 -> 2: path MTU discovery
    "time-exceeded": "time-exceeded",  # 11 -> 3
    "parameter-problem": "parameter-problem",  # 12 -> 4
    "router-solicitation": "router-solicitation",  # 10 -> 133
    "router-advertisement": "router-advertisement",  # 9 -> 134
    "redirect": "redirect",  # 5 -> 137
    "source-quench": None,  # deprecated, no IPv6 twin
    "timestamp-request": None,
    "timestamp-reply": None,
    "address-mask-request": None,
    "address-mask-reply": None,
}

ICMP6_TO_4: Dict[str, Optional[str]] = {v: k for k, v in ICMP4_TO_6.items() if v is not None}
ICMP6_TO_4.update({
    # neighbour discovery and multicast listener messages: IPv4 does this with ARP/IGMP, which
    # iptables never sees
    "neighbour-solicitation": None,
    "neighbour-advertisement": None,
    "mld-listener-query": None,
    "mld-listener-report": None,
    "mld-listener-done": None,
    "mld2-listener-report": None,
})

# numeric types, for the forms the tools print back
ICMP4_TYPE = {"echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
              "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10,
              "time-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
              "timestamp-reply": 14, "address-mask-request": 17, "address-mask-reply": 18}
ICMP6_TYPE = {"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
              "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
              "mld-listener-query": 130, "mld-listener-report": 131, "mld-listener-done": 132,
              "router-solicitation": 133, "router-advertisement": 134,
              "neighbour-solicitation": 135, "neighbour-advertisement": 136, "redirect": 137,
              "mld2-listener-report": 143}

# iptables REJECT --reject-with: IPv4 value -> ip6tables value
REJECT4_TO_6: Dict[str, str] = {
    "icmp-port-unreachable": "icmp6-port-unreachable",
    "icmp-net-unreachable": "icmp6-no-route",
    "icmp-host-unreachable": "icmp6-addr-unreachable",
    "icmp-proto-unreachable": "icmp6-port-unreachable",  # no IPv6 equivalent; closest denial
    "icmp-net-prohibited": "icmp6-adm-prohibited",
    "icmp-host-prohibited": "icmp6-adm-prohibited",
    "icmp-admin-prohibited": "icmp6-adm-prohibited",
    "tcp-reset": "tcp-reset",
}
REJECT6_TO_4: Dict[str, str] = {
    "icmp6-port-unreachable": "icmp-port-unreachable",
    "icmp6-no-route": "icmp-net-unreachable",
    "icmp6-addr-unreachable": "icmp-host-unreachable",
    "icmp6-adm-prohibited": "icmp-admin-prohibited",
    "adm-prohibited": "icmp-admin-prohibited",
    "icmp6-policy-fail": "icmp-admin-prohibited",
    "icmp6-reject-route": "icmp-admin-prohibited",
    "tcp-reset": "tcp-reset",
}

# iptables --reject-with value <-> nft's "reject with ..." (firewalld's rich-rule reject types
# are the iptables names)
NFT_REJECT: Dict[str, str] = {
    "icmp-port-unreachable": "icmp type port-unreachable",
    "icmp-net-unreachable": "icmp type net-unreachable",
    "icmp-host-unreachable": "icmp type host-unreachable",
    "icmp-proto-unreachable": "icmp type prot-unreachable",
    "icmp-net-prohibited": "icmp type net-prohibited",
    "icmp-host-prohibited": "icmp type host-prohibited",
    "icmp-admin-prohibited": "icmp type admin-prohibited",
    "icmp6-port-unreachable": "icmpv6 type port-unreachable",
    "icmp6-no-route": "icmpv6 type no-route",
    "icmp6-addr-unreachable": "icmpv6 type addr-unreachable",
    "icmp6-adm-prohibited": "icmpv6 type admin-prohibited",
    "icmp6-policy-fail": "icmpv6 type policy-fail",
    "icmp6-reject-route": "icmpv6 type reject-route",
    "tcp-reset": "tcp reset",
}
# nft's family-neutral icmpx codes, per family
NFT_ICMPX: Dict[str, Dict[str, str]] = {
    "port-unreachable": {"ipv4": "icmp-port-unreachable", "ipv6": "icmp6-port-unreachable"},
    "admin-prohibited": {"ipv4": "icmp-admin-prohibited", "ipv6": "icmp6-adm-prohibited"},
    "no-route": {"ipv4": "icmp-net-unreachable", "ipv6": "icmp6-no-route"},
    "host-unreachable": {"ipv4": "icmp-host-unreachable", "ipv6": "icmp6-addr-unreachable"},
}


def reject_with_of(rule_text: str, family: str) -> Optional[str]:
    """The iptables --reject-with value a REJECT rule's text names (iptables-save's
    ``--reject-with X`` or nft's ``reject with icmp|icmpv6 type X`` / ``icmpx X`` / ``tcp reset``),
    in ``family``'s spelling for icmpx; None when the text names none (the default)."""
    m = re.search(r"--reject-with (\S+)", rule_text)
    if m:
        return m.group(1)
    m = re.search(r"\breject with (icmpx|icmpv6|icmp)(?: type| code)? (\S+)|\breject with (tcp reset)", rule_text)
    if not m:
        return None
    if m.group(3):
        return "tcp-reset"
    kind, code = m.group(1), m.group(2)
    if kind == "icmpx":
        return NFT_ICMPX.get(code, {}).get(family)
    want = f"{kind} type {code}"
    return next((k for k, v in NFT_REJECT.items() if v == want), None)


# the protocol name each family's tools use for its ICMP
ICMP_PROTO = {"ipv4": "icmp", "ipv6": "ipv6-icmp"}
NFT_ICMP_PROTO = {"ipv4": "icmp", "ipv6": "icmpv6"}
