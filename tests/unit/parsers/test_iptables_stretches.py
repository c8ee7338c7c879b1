"""A long chain's stretches of source jumps (ruleset.RuleList, RuleStretch) against the same
chain compiled rule by rule: the same Rules, whatever order they are read in, the same runs
(analysis.chain_index.find_runs) and run actions, found without making the stretches' Rules."""

from __future__ import annotations

import random
from dataclasses import fields

import pytest

from twinwall.analysis.chain_index import find_runs
from twinwall.analysis.evaluator import run_action
from twinwall.errors import InputError
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.ruleset import Rule, RuleList
from twinwall.parsers import iptables_save
from twinwall.parsers.iptables_save import parse_iptables_save

TERMINAL = frozenset(("ACCEPT", "DROP", "REJECT"))
TARGETS = ["DROP", "DROP", "DROP", "ACCEPT", "REJECT", "BLOCK", "LOG", "RETURN"]
OTHER_LINES = ["-p tcp -m tcp --dport 22 -j ACCEPT", "-i lo -j ACCEPT", "-m conntrack --ctstate INVALID -j DROP",
               "-p udp -j DROP", "-j LOG", "-m comment --comment \"x\" -j DROP"]


# single addresses a long span may hold that the rule-by-rule path reads its own way (or refuses)
ODD_SOURCES = {"ipv4": ["300.1.1.1/32", "1.2.3.04/32", "1.2.3/32", "1.2.3.4/32\t", "1.2.3.4/32 ", "1.2.3.4\x7f/32"],
               "ipv6": ["2001:db8::g/128", "2001:db8::1/128 ", "::ffff:1.2.3.4/128", "2001:DB8::1/128", "1.2.3.4/128"]}


def _source(rng: random.Random, family: str, pure: bool = False, odd: float = 0.002) -> str:
    if pure:  # (one address in the form inet_ntop spells, or a rare odd one)
        if rng.random() < odd:
            return rng.choice(ODD_SOURCES[family])
        v = rng.randrange(1 << (32 if family == "ipv4" else 128))
        if family == "ipv4":
            return ".".join(str(v >> s & 255) for s in (24, 16, 8, 0)) + "/32"
        return ":".join(f"{v >> s & 0xFFFF:x}" for s in range(112, -1, -16)) + "/128"
    if family == "ipv4":
        v = rng.randrange(1 << 32)
        address = ".".join(str(v >> s & 255) for s in (24, 16, 8, 0))
        return rng.choice([f"{address}/32", f"{address}/32", f"{address}/32", "198.51.100.0/24", "203.0.113.9/32", address])
    v = rng.randrange(1 << 128)
    address = ":".join(f"{v >> s & 0xFFFF:x}" for s in range(112, -1, -16))
    return rng.choice([f"{address}/128", f"{address}/128", "2001:db8::/32", "2001:db8::9/128", address])


def _dump(rng: random.Random, family: str, rules: int, pure: bool = False) -> str:
    """A filter table whose INPUT chain holds ``rules`` rules, in two blocks (a line of another
    chain between them): stretches of source jumps, long and short, among other lines
    (``pure``: of single addresses, nearly all of them)."""
    lines = []
    while len(lines) < rules:
        kind = rng.random()
        if kind < 0.2:
            lines.append(f"-A INPUT {rng.choice(OTHER_LINES)}")
        else:
            target = rng.choice(TARGETS)
            for _ in range(rng.choice((1, 3, 70, 300, 1500)) if kind < 0.9 else 1):
                lines.append(f"-A INPUT -s {_source(rng, family, pure)} -j {target}")
    lines = lines[:rules]
    cut = rng.randrange(len(lines))
    lines[cut:cut] = ["-A BLOCK -j DROP"]
    return ("*filter\n:INPUT DROP [0:0]\n:BLOCK - [0:0]\n" + "".join(line + "\n" for line in lines)
            + "COMMIT\n")


def _chain_rules(text: str, family: str, stretches: bool = True):
    rs = parse_iptables_save(text, family, "t", stretches)
    rs.universe = InterfaceUniverse(["eth0", "lo"], rs.interface_specs)
    return rs.chain("filter", "INPUT").rules


def _state(rule: Rule) -> tuple:
    return tuple(getattr(rule, f.name) if f.name != "spelling" else rule.text for f in fields(rule))


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("seed", range(8))
def test_a_long_chains_stretches_read_as_the_rules_compiled_one_by_one(family: str, seed: int, monkeypatch) -> None:
    rng = random.Random(seed)
    read_whole = []  # the spans the compiler read as a whole (_single_addresses gave values)
    single_addresses = iptables_save._single_addresses
    monkeypatch.setattr(iptables_save, "_single_addresses",
                        lambda *a: read_whole.append(single_addresses(*a)) or read_whole[-1])
    try:
        text = _dump(rng, family, rng.choice((1100, 2500, 6000)), pure=seed % 2 == 1)
        stretched = _chain_rules(text, family)
    except InputError as exc:  # (an odd source the rule-by-rule path refuses as well)
        with monkeypatch.context() as m:
            m.setattr(iptables_save, "STRETCH_MIN_CHAIN", 1 << 30)
            with pytest.raises(InputError) as again:
                _chain_rules(text, family)
        assert str(again.value) == str(exc)
        return
    with monkeypatch.context() as m:
        m.setattr(iptables_save, "STRETCH_MIN_CHAIN", 1 << 30)  # (every rule compiled by itself)
        plain = _chain_rules(text, family)
    assert isinstance(stretched, RuleList) and stretched.stretches and isinstance(plain, list)
    assert seed % 2 == 0 or any(v is not None for v in read_whole)
    assert len(stretched) == len(plain)
    # runs and their actions first: found without making a stretch's Rules
    got, want = find_runs(stretched, TERMINAL), find_runs(plain, TERMINAL)
    assert sorted(got) == sorted(want)
    for start, run in got.items():
        other = want[start]
        assert (run.start, run.end, run.dim, run.los, run.his, list(run.owner), run.union, run.values) == (
            other.start, other.end, other.dim, other.los, other.his, list(other.owner), other.union, other.values)
        assert run_action(stretched, run) == run_action(plain, other)
    made = sum(r is not None for r in stretched._rules)
    assert made <= len(plain) - sum(s.end - s.start for s in stretched.stretches) + len(got)
    # read in any order (one by one, from the end, in slices), then whole: the same Rules, each
    # made once (the same object every time it is read)
    seen = {}
    for i in rng.sample(range(len(plain)), 200):
        seen[i] = stretched[i]
        assert _state(seen[i]) == _state(plain[i])
    assert _state(stretched[-1]) == _state(plain[-1])
    k = rng.randrange(len(plain))
    assert [_state(r) for r in stretched[k:k + 50]] == [_state(r) for r in plain[k:k + 50]]
    every = list(stretched)
    assert [_state(r) for r in every] == [_state(r) for r in plain]
    assert all(every[i] is r for i, r in seen.items())
    assert all(stretched[i] is every[i] for i in range(len(every)))


def test_a_short_chain_is_a_list_of_rules_and_so_is_any_chain_unless_stretches_are_asked_for() -> None:
    assert isinstance(_chain_rules(_dump(random.Random(9), "ipv4", 500), "ipv4"), list)
    assert isinstance(_chain_rules(_dump(random.Random(9), "ipv4", 2500, pure=True), "ipv4", stretches=False), list)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_spans_of_single_addresses_are_read_whole(family: str) -> None:
    from twinwall.parsers.iptables_save import _segments

    rng = random.Random(5)
    lines = ([f"-A INPUT {OTHER_LINES[0]}"] + [f"-A INPUT -s {_source(rng, family, True, 0)} -j DROP" for _ in range(3000)]
             + [f"-A INPUT -s {_source(rng, family, True, 0)} -j ACCEPT" for _ in range(2000)] + [f"-A INPUT {OTHER_LINES[1]}"])
    def block(lines):
        return [(1, "".join(line + "\n" for line in lines))]

    assert _segments(block(lines), 5002, "INPUT", True) == [(0, 1, None), (1, 3001, "DROP"), (3001, 5001, "ACCEPT"), (5001, 5002, None)]
    assert _segments(block(lines), 5002, "INPUT", False) == [(0, 5002, None)]
    assert _segments(block(lines[1:2000]), 1999, "INPUT", True) == [(0, 1999, "DROP")]
    # (a line of its own among blocks; trailing whitespace: not a span's, read line by line)
    pieces = [(1, lines[0]), (2, "".join(line + "\n" for line in lines[1:100])), (101, lines[100] + " \n"),
              (102, "".join(line + "\n" for line in lines[101:3001]))]
    assert _segments(pieces, 3001, "INPUT", True) == [(0, 1, None), (1, 100, "DROP"), (100, 101, None), (101, 3001, "DROP")]


def test_a_chain_longer_than_one_block_match_keeps_every_line_and_its_number():
    lines = [f"-A INPUT -s 198.51.{k // 250}.{k % 250}/32 -j DROP" if k % 7 else f"-A INPUT -p tcp -m tcp --dport {k % 60000 + 1} -j ACCEPT"
             for k in range(10_000)]
    text = "*filter\n:INPUT DROP [0:0]\n" + "".join(line + "\n" for line in lines) + "COMMIT\n"
    for stretches in (False, True):
        rs = parse_iptables_save(text, "ipv4", "t", stretches)
        rs.universe = InterfaceUniverse(["lo"], rs.interface_specs)
        chain = rs.chain("filter", "INPUT")
        assert len(chain) == 10_000 and len(chain.source) > 1  # (in pieces)
        rules = list(chain.rules)
        assert [r.text for r in rules] == lines
        assert [r.line for r in rules] == list(range(3, 10_003)) and [r.number for r in rules] == list(range(1, 10_001))
