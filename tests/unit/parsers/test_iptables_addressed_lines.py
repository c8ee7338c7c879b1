"""The compiler's shortcut for "-A CHAIN -s A -d B WORDS" lines (a router's per-host rules): the
words compiled once and the addresses joined to them, against the general path of each line
(same rule, or the same refusal), in dumps where many lines share their words."""

from __future__ import annotations

import random

import pytest

from twinwall.errors import InputError
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.parsers import iptables_save
from twinwall.parsers.iptables_save import parse_iptables_save

ADDRESSES = {
    "ipv4": ["192.0.2.7/32", "192.0.2.7", "198.51.100.0/24", "10/8", "0/0", "203.0.113.9/32",
             "192.0.2.1,192.0.2.9", "300.1.1.1/32", "x/32"],
    "ipv6": ["2001:db8::1/128", "2001:db8::/32", "2001:db8:1::/64", "::/0", "2001:db8::7",
             "2001:db8::1,2001:db8::2", "2001:db8::1/129", "zz/128"],
}
# the words after the addresses: matches of every kind the compiler reads, ones it cannot decide,
# ones that constrain an address themselves (which must not take the shortcut), typos, targets
WORDS = [
    "-p tcp -m state --state NEW -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
    "-p tcp -m state --state NEW -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m multiport --dports 80,443 -j ACCEPT",
    "-p udp -m state --state NEW -m udp --dport 53 -j ACCEPT",
    "-p udp -m state --state NEW -m multiport --dports 500,4500 -j ACCEPT",
    "-m mac --mac-source 00:00:5e:00:53:01 -j ACCEPT",
    "-m mac --mac-source 00:00:5e:00:53:02 -j BLOCK",
    "-i eth0 -j DROP",
    "-i eth+ -p tcp -m tcp --sport 1024:65535 -j RETURN",
    "-p gre -m state --state NEW -j ACCEPT",
    "-p esp -j ACCEPT",
    "-m multiport --ports 25,587 -p tcp -j REJECT --reject-with tcp-reset",
    "-p tcp -m multiport --ports 25,587 -j REJECT --reject-with tcp-reset",
    "-m recent --update --seconds 60 --name DEFAULT --rsource -j DROP",
    "-m limit --limit 5/min -j LOG --log-prefix \"dropped: \"",
    "-m comment --comment \"a -m state rule\" -p tcp -m tcp --dport 25 -j DROP",
    "-p tcp -m tcp --dport 80 -j DNAT --to-destination 192.0.2.80:8080",
    "-p tcp -m tcp --dport 80 -j REDIRECT --to-ports 3128",
    "-m addrtype --src-type LOCAL -j ACCEPT",
    "-m addrtype --dst-type LOCAL -j ACCEPT",
    "-s 192.0.2.0/24 -j ACCEPT",
    "! -d 198.51.100.0/24 -j ACCEPT",
    "-d 2001:db8::/32 -j ACCEPT",
    "-m iprange --src-range 192.0.2.1-192.0.2.9 -j ACCEPT",
    "-f -j DROP",
    "! -f -j DROP",
    "-p tcp -m tcp --dpot 22 -j ACCEPT",
    "-p tcp -m tcp --dpo 22 -j ACCEPT",
    "-p tcp --syn -m state --state ESTABLISHED -j ACCEPT",
    "-p icmp -m icmp --icmp-type 8 -j ACCEPT",
    "-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT",
    "-m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT",
    "-m state --state INVALID -j DROP",
    "-p nosuch -j ACCEPT",
    "-j",
    "-j BLOCK",
    "-g BLOCK",
    "-m rpfilter --invert -j DROP",
    "-m frag -j DROP",
]


# (one interface universe for every compilation, whatever interfaces its dump names)
SPECS = ["eth0", "eth+", "lo"]


def _dump(lines) -> str:
    return "*filter\n:INPUT DROP [0:0]\n:BLOCK - [0:0]\n" + "".join(line + "\n" for line in lines) + "COMMIT\n"


def _compiled(text: str, family: str):
    rs = parse_iptables_save(text, family, "t")
    rs.universe = InterfaceUniverse(["eth0", "eth1", "lo"], SPECS)
    return rs, rs.chain("filter", "INPUT").rules


def _general(line: str, family: str):
    """The general path's rule of the line, on a compiler of its own (or its refusal)."""
    rs = parse_iptables_save(_dump([]), family, "t")
    rs.universe = InterfaceUniverse(["eth0", "eth1", "lo"], SPECS)
    return iptables_save._Compiler(rs).compile_general(rs.chain("filter", "INPUT"), 1, line)


def _lines(family: str, rng: random.Random, count: int):
    addresses = ADDRESSES[family]
    out = []
    for _ in range(count):
        src = rng.choice(addresses) if rng.random() < 0.8 else None
        dst = rng.choice(addresses) if src is None or rng.random() < 0.5 else None
        parts = ["-A INPUT"]
        if src is not None:
            parts.append(f"-s {src}")
        if dst is not None:
            parts.append(f"-d {dst}")
        parts.append(rng.choice(WORDS))
        out.append(" ".join(parts))
    return out


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("seed", range(6))
def test_addressed_lines_compile_as_the_general_path_compiles_each(family: str, seed: int) -> None:
    rng = random.Random(seed)
    accepted, general_rules = [], []
    for line in _lines(family, rng, 120):
        try:
            general = _general(line, family)
        except (InputError, ValueError):
            # refused by the general path: refused alone in a dump too
            with pytest.raises(InputError):
                _compiled(_dump([line]), family)
            continue
        accepted.append(line)
        general_rules.append(general)
    assert len(accepted) > 40
    # the accepted lines in one dump, where many share their words (compiled once)
    _, rules = _compiled(_dump(accepted), family)
    for line, got, general in zip(accepted, rules, general_rules):
        assert (got.alternatives, got.unknown, got.action, got.target, got.nat_to, got.text) == (
            general.alternatives, general.unknown, general.action, general.target, general.nat_to, general.text), line


def test_the_shortcut_is_taken_and_shares_the_words_compilation() -> None:
    """(So the comparison above compares the shortcut: the words of 40 lines compiled twice.)"""
    calls = []
    original = iptables_save._Compiler.compile_general

    def counted(self, chain, number, line):
        calls.append(line)
        return original(self, chain, number, line)

    lines = [f"-A INPUT -s 192.0.2.{i}/32 -d 198.51.100.{i}/32 -p tcp -m state --state NEW -m tcp --dport {22 + i % 2} "
             "--tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT" for i in range(40)]
    iptables_save._Compiler.compile_general = counted
    try:
        _, rules = _compiled(_dump(lines), "ipv4")
    finally:
        iptables_save._Compiler.compile_general = original
    assert len(rules) == 40
    assert len(calls) == 2
    assert all(line.startswith("-A INPUT -p tcp") for line in calls)
