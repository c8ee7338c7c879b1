"""The names nft prints that the parser must know: families, chain priorities, ICMP types and
codes, tcp flags, which statements decide and which behave like matches.
"""

from __future__ import annotations

VIEW_FAMILIES = {"ipv4": ("ip", "inet"), "ipv6": ("ip6", "inet")}
FAMILY_OF_VIEW = {"ipv4": "ip", "ipv6": "ip6"}

# nft's named chain priorities for the ip, ip6 and inet families
NAMED_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
# inet/netdev ingress runs before every prerouting chain, whatever its priority
INGRESS_OFFSET = -(1 << 31)

CHAIN_KINDS = {"nat": "nat", "route": "route"}

ICMP4_TYPES = {
    "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10, "time-exceeded": 11,
    "parameter-problem": 12, "timestamp-request": 13, "timestamp-reply": 14, "info-request": 15,
    "info-reply": 16, "address-mask-request": 17, "address-mask-reply": 18,
}
ICMP6_TYPES = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
    "parameter-problem": 4, "echo-request": 128, "echo-reply": 129, "mld-listener-query": 130,
    "mld-listener-report": 131, "mld-listener-done": 132, "mld-listener-reduction": 132,
    "nd-router-solicit": 133, "nd-router-advert": 134, "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136, "nd-redirect": 137, "router-renumbering": 138,
    "ind-neighbor-solicit": 141, "ind-neighbor-advert": 142, "mld2-listener-report": 143,
}
ICMP4_CODES = {
    "net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2, "port-unreachable": 3,
    "frag-needed": 4, "net-prohibited": 9, "host-prohibited": 10, "admin-prohibited": 13,
}
ICMP6_CODES = {
    "no-route": 0, "admin-prohibited": 1, "addr-unreachable": 3, "port-unreachable": 4,
    "policy-fail": 5, "reject-route": 6,
}
TCP_FLAGS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64, "cwr": 128}

_VERDICTS = ("accept", "drop", "return", "continue", "jump", "goto")
# statements that neither decide nor hide a decision: evaluation goes on
_CONTINUE_STATEMENTS = {
    "counter", "log", "mangle", "notrack", "set", "map", "flow", "dup", "ct helper",
    "ct timeout", "ct expectation", "secmark", "ct zone",
}
# statements that behave like a match (the rule goes on only for some packets): undecidable
_MATCH_LIKE_STATEMENTS = {"limit", "quota", "ct count", "meter", "synproxy", "last"}


class _Unknown(Exception):
    """A match or value twinwall cannot decide; the message names it."""
