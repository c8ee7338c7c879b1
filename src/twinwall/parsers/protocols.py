"""IP protocol numbers by name (IANA, as /etc/protocols and the firewall tools spell them),
shared by every rule syntax. ICMP type names are not shared: iptables and nft spell them
differently (see each parser)."""

IP_PROTOCOLS = {
    "tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "udplite": 136,
    "dccp": 33, "gre": 47, "esp": 50, "ah": 51, "igmp": 2, "ipv6": 41, "ipip": 4, "ospf": 89,
    "pim": 103, "vrrp": 112, "l2tp": 115, "mh": 135, "ipv6-mh": 135, "comp": 108, "ipcomp": 108,
    "encap": 98, "ipencap": 4, "ipv6-frag": 44, "ipv6-route": 43, "ipv6-opts": 60,
    "ipv6-nonxt": 59, "hopopt": 0, "egp": 8, "pup": 12, "idp": 22, "rsvp": 46, "etherip": 97,
}

# protocols whose packets carry source and destination ports
PORT_PROTOCOLS = {name: IP_PROTOCOLS[name] for name in ("tcp", "udp", "sctp", "dccp", "udplite")}
