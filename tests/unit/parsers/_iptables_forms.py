"""The round-trip table (issue 10): rules as people write them (hand forms) and as iptables-save
prints them back (canonical forms, pinned from iptables-nft-save 1.8.9), for
every match and option the iptables parser accepts, with the comparison both tests use: twinwall
must give a hand form and its canonical form the same meaning.

Each case is loaded, in the netns test, into a user chain of its own ("-A C<n> ..."); one hand
rule may come back as several (iptables-restore splits "-s A,B" into one rule per address).
"Same meaning" is judged by the evaluator, not by comparing parser output: the case's rules are
reached from a base chain of the table, their targets (action, jump target, NAT destination)
compared, and every rule then made a DROP, so that the dropped region of the whole packet space
is exactly what the rules match; both forms must drop the same region, with the same undecidable
matches named.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple

from twinwall.analysis.context import local_routes
from twinwall.analysis.evaluator import Evaluator
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import (
    NDIMS,
    address_space,
    covers,
    iv_normalize,
    loopback_addresses,
    make_box,
    prefix_interval,
)
from twinwall.model import InterfaceAddress
from twinwall.parsers.iptables_save import BUILTIN_CHAINS, parse_iptables_save
from twinwall.netfilter.ruleset import DROP


class Form(NamedTuple):
    family: str
    table: str
    base: str  # the base chain the case's chain is reached from
    hand: str  # the rule after "-A CHAIN"
    canonical: Tuple[str, ...]  # what iptables-save prints back, after "-A CHAIN"


def F(family: str, hand: str, *canonical: str, table: str = "filter", base: str = "INPUT") -> Form:
    return Form(family, table, base, hand, canonical or (hand,))


V4, V6 = "ipv4", "ipv6"
FORMS: List[Form] = [
    # tcp: --syn, --tcp-flags and their negations, ports and ranges
    F(V4, "-p tcp --syn -j DROP", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j DROP"),
    F(V4, "-p tcp ! --syn -m conntrack --ctstate NEW -j DROP",
      "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP"),
    F(V4, "-p tcp --dport 443 --syn -j DROP", "-p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -j DROP"),
    F(V4, "-p tcp --tcp-flags ALL NONE -j DROP", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j DROP"),
    F(V4, "-p tcp --tcp-flags SYN,ACK SYN,ACK -j DROP", "-p tcp -m tcp --tcp-flags SYN,ACK SYN,ACK -j DROP"),
    F(V4, "-p tcp ! --tcp-flags SYN,RST,ACK SYN -j DROP", "-p tcp -m tcp ! --tcp-flags SYN,RST,ACK SYN -j DROP"),
    F(V4, "-p 6 --dport 22 -j ACCEPT", "-p tcp -m tcp --dport 22 -j ACCEPT"),
    F(V4, "-p tcp --dport ssh -j ACCEPT", "-p tcp -m tcp --dport 22 -j ACCEPT"),
    F(V4, "-p tcp --dport 1024: -j ACCEPT", "-p tcp -m tcp --dport 1024:65535 -j ACCEPT"),
    F(V4, "-p tcp ! --sport :1023 -j ACCEPT", "-p tcp -m tcp --sport 1024:65535 -j ACCEPT"),
    F(V4, "-p udp --dport 53 -j ACCEPT", "-p udp -m udp --dport 53 -j ACCEPT"),
    F(V4, "-p sctp --dport 9 -j ACCEPT", "-p sctp -m sctp --dport 9 -j ACCEPT"),
    F(V4, "-p udplite -j ACCEPT"),
    F(V4, "-p 50 -j ACCEPT", "-p esp -j ACCEPT"),
    F(V4, "-p all -j NFLOG --nflog-group 5", "-j NFLOG --nflog-group 5"),
    # addresses and interfaces
    F(V4, "-s 192.0.2.5 -d 192.0.2.0/24,198.51.100.0/24 -j ACCEPT",
      "-s 192.0.2.5/32 -d 192.0.2.0/24 -j ACCEPT", "-s 192.0.2.5/32 -d 198.51.100.0/24 -j ACCEPT"),
    F(V4, "! -s 192.0.2.5 ! -i eth+ -j ACCEPT", "! -s 192.0.2.5/32 ! -i eth+ -j ACCEPT"),
    F(V4, "-s 192.0.2.0/255.255.255.0 -j ACCEPT", "-s 192.0.2.0/24 -j ACCEPT"),
    F(V4, "-s 0/0 -i eth0 -j ACCEPT", "-i eth0 -j ACCEPT"),
    F(V4, "-o eth1 -j DROP", base="FORWARD"),
    F(V4, "-f -j DROP"),
    F(V4, "! -f -j ACCEPT"),
    # icmp by name and number
    F(V4, "-p icmp --icmp-type echo-request -j ACCEPT", "-p icmp -m icmp --icmp-type 8 -j ACCEPT"),
    F(V4, "-p icmp --icmp-type port-unreachable -j ACCEPT", "-p icmp -m icmp --icmp-type 3/3 -j ACCEPT"),
    F(V4, "-p icmp --icmp-type any -j ACCEPT", "-p icmp -m icmp --icmp-type any -j ACCEPT"),
    F(V4, "-p icmp ! --icmp-type 8 -j ACCEPT", "-p icmp -m icmp ! --icmp-type 8 -j ACCEPT"),
    # multiport
    F(V4, "-p tcp -m multiport --dports 22,80,1000:2000 -j ACCEPT"),
    F(V4, "-p udp -m multiport ! --sports 53,123 -j ACCEPT"),
    F(V4, "-p tcp -m multiport --ports 3000:3001 -j ACCEPT"),
    # conntrack / state
    F(V4, "-m state --state NEW,ESTABLISHED -j ACCEPT"),
    F(V4, "-m conntrack ! --ctstate INVALID -j ACCEPT"),
    F(V4, "-m conntrack --ctstatus ASSURED -j ACCEPT"),
    # iprange, addrtype, pkttype, owner, comment
    F(V4, "-m iprange --src-range 192.0.2.1-192.0.2.9 ! --dst-range 198.51.100.1-198.51.100.3 -j ACCEPT"),
    F(V4, "-m addrtype --dst-type LOCAL,BROADCAST -j ACCEPT"),
    F(V4, "-m addrtype --dst-type UNICAST -j DROP"),
    F(V4, "-m addrtype ! --src-type UNICAST --dst-type LOCAL --limit-iface-in -j ACCEPT"),
    F(V4, "-m addrtype --src-type LOCAL --limit-iface-out -j ACCEPT", base="OUTPUT"),
    F(V4, "-m addrtype --dst-type MULTICAST -j DROP"),
    F(V4, "-m pkttype --pkt-type broadcast -j DROP"),
    F(V4, "-m pkttype ! --pkt-type unicast -j DROP"),
    F(V4, "-m state --state new -j ACCEPT", "-m state --state NEW -j ACCEPT"),
    F(V4, "-p tcp -m multiport --dports ssh,http -j ACCEPT", "-p tcp -m multiport --dports 22,80 -j ACCEPT"),
    F(V4, "-p tcp --tcp-option 2 -j ACCEPT", "-p tcp -m tcp --tcp-option 2 -j ACCEPT"),
    F(V4, "-p icmp --icmp-type 8/0 -j ACCEPT", "-p icmp -m icmp --icmp-type 8/0 -j ACCEPT"),
    F(V4, "-m owner --uid-owner root --gid-owner 0 -j ACCEPT", "-m owner --uid-owner 0 --gid-owner 0 -j ACCEPT", base="OUTPUT"),
    F(V4, "-m owner --uid-owner 0 -j ACCEPT", base="OUTPUT"),
    F(V4, '-m comment --comment "a b" -j ACCEPT'),
    # undecidable matches, kept by name
    F(V4, '-m limit --limit 5/min -j LOG --log-prefix "dropped: "'),
    F(V4, "-m hashlimit --hashlimit-upto 10/sec --hashlimit-name foo --hashlimit-mode srcip -j ACCEPT",
      "-m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name foo -j ACCEPT"),
    F(V4, "-m recent --set --name SSH", "-m recent --set --name SSH --mask 255.255.255.255 --rsource"),
    F(V4, "-m recent --rcheck --seconds 60 --hitcount 4 --name SSH -j DROP",
      "-m recent --rcheck --seconds 60 --hitcount 4 --name SSH --mask 255.255.255.255 --rsource -j DROP"),
    F(V4, "-m mark --mark 1 -j ACCEPT", "-m mark --mark 0x1 -j ACCEPT"),
    F(V4, "-m connmark ! --mark 0x2/0xff -j ACCEPT"),
    F(V4, "-m length --length 0:100 -j ACCEPT"),
    # hop limit / TTL: decided (a packet dimension; neighbour discovery carries 255)
    F(V4, "-m ttl --ttl-gt 5 -j ACCEPT"),
    F(V6, "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT"),
    F(V6, "-m hl ! --hl-eq 255 -j DROP"),
    F(V6, "-m hl --hl-lt 2 -j DROP"),
    # targets
    F(V4, "-j REJECT", "-j REJECT --reject-with icmp-port-unreachable"),
    F(V4, "-p tcp -j REJECT --reject-with tcp-reset"),
    F(V4, "-j REJECT --reject-with icmp-host-prohibited"),
    F(V4, "-j RETURN"),
    F(V4, "-g T2"),
    F(V4, "-j T2"),
    F(V4, "-p udp --dport 53 -j NOTRACK", "-p udp -m udp --dport 53 -j NOTRACK", table="raw", base="PREROUTING"),
    F(V4, "-p udp --dport 54 -j CT --notrack", "-p udp -m udp --dport 54 -j CT --notrack", table="raw", base="PREROUTING"),
    F(V4, "-m rpfilter --invert -j DROP", table="raw", base="PREROUTING"),
    F(V4, "-p tcp --dport 2222 -j REDIRECT --to-ports 22", "-p tcp -m tcp --dport 2222 -j REDIRECT --to-ports 22",
      table="nat", base="PREROUTING"),
    F(V4, "-p tcp --dport 2223 -j REDIRECT --to-port 22", "-p tcp -m tcp --dport 2223 -j REDIRECT --to-ports 22",
      table="nat", base="PREROUTING"),
    F(V4, "-p tcp --dport 80 -j DNAT --to-destination 192.0.2.5:8080",
      "-p tcp -m tcp --dport 80 -j DNAT --to-destination 192.0.2.5:8080", table="nat", base="PREROUTING"),
    F(V4, "-p tcp --dport 81 -j DNAT --to 192.0.2.5", "-p tcp -m tcp --dport 81 -j DNAT --to-destination 192.0.2.5",
      table="nat", base="PREROUTING"),
    F(V4, "-p tcp --dport 82 -j DNAT --to-destination 192.0.2.5-192.0.2.6:8080-8081",
      "-p tcp -m tcp --dport 82 -j DNAT --to-destination 192.0.2.5-192.0.2.6:8080-8081", table="nat", base="PREROUTING"),
    F(V4, "-j SNAT --to-source 192.0.2.1", table="nat", base="POSTROUTING"),
    F(V4, "-p tcp -j MASQUERADE --to-ports 1024-2048", table="nat", base="POSTROUTING"),
    # IPv6
    F(V6, "-p tcp --syn -j DROP", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j DROP"),
    F(V6, "-p tcp ! --syn -m conntrack --ctstate NEW -j DROP",
      "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP"),
    F(V6, "-s 2001:db8::5 -d 2001:db8:a::/64 -j ACCEPT", "-s 2001:db8::5/128 -d 2001:db8:a::/64 -j ACCEPT"),
    F(V6, "-p icmpv6 --icmpv6-type neighbour-solicitation -j ACCEPT", "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT"),
    F(V6, "-p ipv6-icmp --icmpv6-type port-unreachable -j ACCEPT", "-p ipv6-icmp -m icmp6 --icmpv6-type 1/4 -j ACCEPT"),
    F(V6, "-p 58 --icmpv6-type 128 -j ACCEPT", "-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"),
    F(V6, "-m addrtype --dst-type UNICAST -j DROP"),
    F(V6, "-m addrtype --dst-type LOCAL --limit-iface-in -j ACCEPT"),
    F(V6, "-m frag --fragmore -j DROP"),
    F(V6, "-m rt --rt-type 0 -j DROP"),
    F(V6, "-j REJECT", "-j REJECT --reject-with icmp6-port-unreachable"),
    F(V6, "-j REJECT --reject-with icmp6-adm-prohibited"),
    F(V6, "-p tcp -j REJECT --reject-with tcp-reset"),
    F(V6, "-p tcp --dport 80 -j DNAT --to-destination [2001:db8::5]:8080",
      "-p tcp -m tcp --dport 80 -j DNAT --to-destination [2001:db8::5]:8080", table="nat", base="PREROUTING"),
]

EXTRA_CHAINS = ("T2",)  # jump and goto targets

HOST = {
    V4: [("lo", "127.0.0.1", 8), ("eth0", "192.0.2.1", 24), ("eth1", "198.51.100.1", 24)],
    V6: [("lo", "::1", 128), ("eth0", "2001:db8:a::1", 64), ("eth1", "2001:db8:b::1", 64)],
}


def restore_text(family: str, forms: List[Tuple[int, Form]]) -> str:
    """One iptables-restore input holding each form in its own chain C<n>, by table."""
    out = []
    for table in ("raw", "nat", "filter"):
        mine = [(n, f) for n, f in forms if f.table == table]
        if not mine:
            continue
        out.append(f"*{table}")
        out.extend(f":{c} ACCEPT [0:0]" for c in BUILTIN_CHAINS[table])
        out.extend(f":C{n} - [0:0]" for n, _ in mine)
        out.extend(f":{c} - [0:0]" for c in EXTRA_CHAINS)
        out.extend(f"-A C{n} {f.hand}" for n, f in mine)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def saved_rules(text: str) -> Dict[int, List[str]]:
    """Chain number -> the rules iptables-save printed in C<n>, after "-A C<n> "."""
    out: Dict[int, List[str]] = {}
    for line in text.splitlines():
        if line.startswith("-A C"):
            head, _, rest = line[3:].partition(" ")
            out.setdefault(int(head[1:]), []).append(rest)
    return out


def meaning(form: Form, rules: Tuple[str, ...]):
    """What twinwall makes of ``rules`` in ``form``'s place: the targets, and per (verdict,
    undecidable matches) the region of the whole packet space, every rule made a DROP."""
    family, table, base = form.family, form.table, form.base
    decl = "".join(f":{c} ACCEPT [0:0]\n" for c in BUILTIN_CHAINS[table])
    decl += "".join(f":{c} - [0:0]\n" for c in ("C",) + EXTRA_CHAINS)
    body = "".join(f"-A C {r}\n" for r in rules)
    rs = parse_iptables_save(f"*{table}\n{decl}-A {base} -j C\n{body}COMMIT\n", family)
    own = [InterfaceAddress(i, family, a, n) for i, a, n in HOST[family]]
    universe = InterfaceUniverse(["lo", "eth0", "eth1", "eth2"] + list(rs.interface_specs))
    local = iv_normalize([prefix_interval(a, family) for _, a, _ in HOST[family]] + list(loopback_addresses(family)))
    rs.local_routes = local_routes(own, family)
    ev = Evaluator([rs], family, universe, local)
    compiled = rs.chain(table, "C").rules
    targets = sorted({(r.action, r.target, repr(r.nat_to)) for r in compiled})
    for r in compiled:
        r.action, r.target = DROP, DROP
    space = make_box(address_space(family), address_space(family), universe.all_mask, universe.all_mask)
    hook = BUILTIN_CHAINS[table][base][0]
    regions: Dict[tuple, list] = {}
    for o in ev.hook_path([hook], [space]):
        regions.setdefault((o.verdict, frozenset(o.uncertain)), []).append(o.origin)
    return targets, regions


def difference(form: Form, a: Tuple[str, ...], b: Tuple[str, ...]) -> str:
    """"" when twinwall gives rules ``a`` and ``b`` the same meaning, else what differs."""
    ta, ra = meaning(form, a)
    tb, rb = meaning(form, b)
    if ta != tb:
        return f"targets {ta} != {tb}"
    if set(ra) != set(rb):
        return f"outcomes {sorted(map(str, ra))} != {sorted(map(str, rb))}"
    dims = range(NDIMS)
    for key in ra:
        if not all(covers(rb[key], box, dims) for box in ra[key]) or not all(covers(ra[key], box, dims) for box in rb[key]):
            return f"region of {key[0]} {sorted(key[1])} differs"
    return ""
