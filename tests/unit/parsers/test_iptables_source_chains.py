"""A short chain of source jumps read at once (_Compiler._source_chain, _SOURCE_CHAINS) gives
exactly the Rules of the rule-by-rule path, on random chains mixing the lines it reads with
lines it must leave to that path."""

import random
from dataclasses import asdict

import pytest

import twinwall.parsers.iptables_save as parser
from twinwall.errors import InputError
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import SRC
from twinwall.parsers.iptables_save import parse_iptables_save

SOURCES = {
    "ipv4": ["192.0.2.1", "192.0.2.1/32", "198.51.100.0/24", "10.0.0.0/8,10.1.0.0/16", "10/8", "0/0",
             "192.0.2.300", "!192.0.2.1", "-x", "192.0.2.1\x0b", "203.0.113.7/32",
             # (the prefixes _one_prefix reads itself, and the lengths it leaves to the general path)
             "198.51.100.77/28", "203.0.113.9/024", "192.0.2.0/33", "192.0.2.0/", "192.0.2.0/\u0662\u0664",
             "10.1/16", "192.0.2.1/0"],
    "ipv6": ["2001:db8::1", "2001:db8::1/128", "2001:db8::/56", "2001:db8::/64,2001:db8:1::/64", "::/0",
             "2001:db8::g", "!2001:db8::1", "2001:db8::5/128",
             "2001:db8:4:5::77/60", "2001:db8::/129", "::ffff:192.0.2.1/120", "2001:db8::1/0128", "2001:db8::/"],
}
TARGETS = ["ACCEPT", "DROP", "REJECT", "RETURN", "LOG", "y", "z", "MARK", "NOPE", '"ACCEPT"', "DNAT", "!x"]
ODD = [
    "-A {c} -j ACCEPT   ",
    "-A {c} -m comment --comment \"hi\" -j ACCEPT",
    "-A {c} -p tcp -m tcp --dport 22 -j ACCEPT",
    "-A {c}  -s 192.0.2.1 -j ACCEPT",
    "-A {c} ! -s 192.0.2.1 -j ACCEPT",
    "-A {c} -s 192.0.2.1 -d 192.0.2.2 -j ACCEPT",
    "-A {c} -s 192.0.2.1 -j\u00a0ACCEPT",
    "-A {c} -j",
]


def _dump(rng, family, n_chains):
    chains = [f"c{i}" for i in range(n_chains)]
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":y - [0:0]",
             ":z - [0:0]"] + [f":{c} - [0:0]" for c in chains]
    lines += [f"-A INPUT -j {c}" for c in chains]
    for c in chains:
        # (mostly short chains, and some longer than _SOURCE_CHAIN_SPLIT: their first line is
        # matched before the block is split)
        for _ in range(rng.randint(1, 7) if rng.random() < 0.75 else rng.randint(15, 24)):
            if rng.random() < 0.08:
                lines.append(rng.choice(ODD).format(c=c))
            elif rng.random() < 0.3:
                lines.append(f"-A {c} -j {rng.choice(TARGETS)}")
            else:
                lines.append(f"-A {c} -s {rng.choice(SOURCES[family])} -j {rng.choice(TARGETS)}")
    # (a quote in a chain's name: the rule-by-rule path reads such a line its own way)
    lines[5:5] = [':q"q - [0:0]']
    lines += ['-A q"q -s 192.0.2.1 -j ACCEPT', '-A q"q -j RETURN', "-A y -j RETURN", "COMMIT", ""]
    return "\n".join(lines)


def _compiled(text, family):
    try:
        rs = parse_iptables_save(text, family)
        rs.universe = InterfaceUniverse(["eth0", "lo"])
        out = {}
        for name, chain in rs.tables["filter"].chains.items():
            try:
                out[name] = [asdict(r) for r in chain.rules]
            except InputError as exc:
                out[name] = str(exc)
        return out
    except InputError as exc:
        return str(exc)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_source_chains_compile_as_the_rule_by_rule_path(family, monkeypatch):
    rng = random.Random(12)
    taken = 0
    real = parser._Compiler._source_chain

    def counting(self, chain, piece):
        nonlocal taken
        got = real(self, chain, piece)
        taken += got is not None
        return got

    monkeypatch.setattr(parser._Compiler, "_source_chain", counting)
    for _ in range(40):
        text = _dump(rng, family, rng.randint(1, 12))
        fast = _compiled(text, family)
        monkeypatch.setattr(parser, "_SOURCE_CHAINS", False)
        slow = _compiled(text, family)
        monkeypatch.setattr(parser, "_SOURCE_CHAINS", True)
        assert fast == slow, text
    assert taken >= 40  # the fast path was taken, and refused often too (odd lines, unknown targets)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_a_source_jumps_prefix_is_what_the_general_reading_makes_of_it(family, monkeypatch):
    # (both paths above read a "-s" through _new_source_alternatives: here its values, and its
    # errors, against parse_addresses, which reads an address through prefix_interval alone)
    quick = []
    real = parser._Compiler._source_chain
    monkeypatch.setattr(parser._Compiler, "_source_chain",
                        lambda self, chain, piece: quick.append(chain.name) or real(self, chain, piece))
    for src in SOURCES[family]:
        if src.startswith(("!", "-")):
            continue
        text = "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":w - [0:0]", ":c - [0:0]", "-A INPUT -j w",
                          "-A INPUT -j c", "-A w -j ACCEPT", f"-A c -s {src} -j ACCEPT", "-A c -j RETURN",
                          "COMMIT", ""])
        rs = parse_iptables_save(text, family)
        assert rs.tables["filter"].chains["w"].rules  # (its rule teaches the compiler ACCEPT: c's is then read at once)
        try:
            expected = parser._Compiler(rs).parse_addresses(src)
        except ValueError as exc:
            expected = exc
        try:
            got = rs.tables["filter"].chains["c"].rules[0].alternatives
        except InputError as exc:
            assert isinstance(expected, ValueError), (src, exc)
            assert f"rule 1: {expected}" in str(exc), (src, exc)
            continue
        assert got == (((SRC, expected),),), src
    assert quick.count("c") == sum(not src.startswith(("!", "-")) for src in SOURCES[family])
