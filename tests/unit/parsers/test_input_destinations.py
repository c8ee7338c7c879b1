"""Ruleset.input_destinations: the single addresses the input base chains' rules name as their
destination, read by the parsers without compiling the rules (analysis.context takes them as
the host's offline). What counts: one unicast address, not negated, in an input base chain
(not nat's, not a user chain, not another hook)."""

from __future__ import annotations

import json

from twinwall.netfilter.ruleset import NAMED_DESTINATIONS
from twinwall.parsers.iptables_save import parse_iptables_save
from twinwall.parsers.nft_json import parse_nft_json

V4 = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A INPUT -d 203.0.113.9/32 -j ACCEPT
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:SVC - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT ! -d 198.51.100.77/32 -j SVC
-A INPUT -d 192.0.2.0/24 -p tcp -m tcp --dport 80 -j ACCEPT
-A INPUT -s 198.51.100.0/24 -d 192.0.2.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -d 224.0.0.251/32 -p udp -m udp --dport 5353 -j ACCEPT
-A INPUT -p tcp -m comment --comment "x" -d 192.0.2.1/32 --dport 443 -j ACCEPT
-A INPUT -p tcp -m comment --comment "not -d 203.0.113.8 here" -j ACCEPT
-A INPUT --destination 192.0.2.2,192.0.2.3 -p udp -j DROP
-A INPUT -d 255.255.255.255/32 -j DROP
-A INPUT -s 192.0.2.0/24 -d 192.0.2.255/32 -p udp -j ACCEPT
-A FORWARD -d 203.0.113.5/32 -j ACCEPT
-A OUTPUT -d 203.0.113.6/32 -j ACCEPT
-A SVC -d 203.0.113.7/32 -j ACCEPT
COMMIT
"""


def test_iptables_input_destinations():
    rs = parse_iptables_save(V4, "ipv4", "v4.rules")
    got = [(d.address, d.table, d.chain, d.rule_number, d.line) for d in rs.input_destinations]
    # first naming only; not the negated one, the /24, multicast, broadcasts, a comment, nat's
    # INPUT, FORWARD, OUTPUT or a user chain
    assert got == [
        ("192.0.2.1", "filter", "INPUT", 4, 16),
        ("192.0.2.2", "filter", "INPUT", 8, 20),
        ("192.0.2.3", "filter", "INPUT", 8, 20),
    ]
    assert rs.input_destinations[0].rule.startswith("-A INPUT -s 198.51.100.0/24 -d 192.0.2.1/32")


def test_iptables_input_destinations_ipv6_and_the_bound():
    lines = [f"-A INPUT -d 2001:db8::{k:x}/128 -p tcp -m tcp --dport 22 -j ACCEPT" for k in range(1, 200)]
    text = "*filter\n:INPUT DROP [0:0]\n-A INPUT -d 2001:db8::/64 -j ACCEPT\n" + "\n".join(lines) + "\nCOMMIT\n"
    rs = parse_iptables_save(text, "ipv6", "v6.rules")
    assert len(rs.input_destinations) == NAMED_DESTINATIONS
    assert rs.input_destinations[0].address == "2001:db8::1" and rs.input_destinations[0].rule_number == 2
    # an IPv4 address in an IPv6 dump is no address of it
    rs = parse_iptables_save("*filter\n:INPUT DROP [0:0]\n-A INPUT -d 192.0.2.1/32 -j ACCEPT\nCOMMIT\n", "ipv6", "x")
    assert rs.input_destinations == []


def _nft(rules):
    items = [{"metainfo": {"version": "1.0.6", "release_name": "x", "json_schema_version": 1}},
             {"table": {"family": "inet", "name": "f", "handle": 1}},
             {"chain": {"family": "inet", "table": "f", "name": "input", "handle": 1, "type": "filter",
                        "hook": "input", "prio": 0, "policy": "drop"}},
             {"chain": {"family": "inet", "table": "f", "name": "fwd", "handle": 2, "type": "filter",
                        "hook": "forward", "prio": 0, "policy": "drop"}}]
    for handle, (chain, expr) in enumerate(rules, 10):
        items.append({"rule": {"family": "inet", "table": "f", "chain": chain, "handle": handle, "expr": expr}})
    return json.dumps({"nftables": items})


def _daddr(proto, right, op="=="):
    return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": "daddr"}}, "right": right}}


def test_nft_input_destinations():
    text = _nft([
        ("input", [_daddr("ip", "192.0.2.1"), {"accept": None}]),
        ("input", [_daddr("ip", "192.0.2.9", "!="), {"accept": None}]),
        ("input", [_daddr("ip", {"set": ["192.0.2.2", {"prefix": {"addr": "192.0.2.128", "len": 25}}]}), {"drop": None}]),
        ("input", [_daddr("ip6", {"prefix": {"addr": "2001:db8::5", "len": 128}}), {"accept": None}]),
        ("input", [_daddr("ip6", "ff02::fb"), {"accept": None}]),
        ("fwd", [_daddr("ip", "203.0.113.5"), {"accept": None}]),
    ])
    by = {rs.family: rs for rs in parse_nft_json(text, "t.json")}
    assert [(d.address, d.chain, d.rule_number) for d in by["ipv4"].input_destinations] == [
        ("192.0.2.1", "input", 1), ("192.0.2.2", "input", 3)]
    assert [(d.address, d.handle) for d in by["ipv6"].input_destinations] == [("2001:db8::5", 13)]
    assert "192.0.2.1" in by["ipv4"].input_destinations[0].rule
