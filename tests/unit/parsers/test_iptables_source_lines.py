"""The compiler's fast path for "-A CHAIN -s ADDRESS -j TARGET" lines (a blocklist's), against
the general path of the same line: same rule, or the same refusal."""

from __future__ import annotations

import random

import pytest

from twinwall.errors import InputError
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.parsers.iptables_save import parse_iptables_save

SOURCES = {
    "ipv4": ["192.0.2.7/32", "192.0.2.7", "10/32", "10.1/32", "192.0.2.0/24", "0/0", "300.1.1.1/32",
             "192.0.2.7/33", "192.0.02.7/32", "1.2.3.4/8/32", "192.0.2.7/255.255.255.255", "::1/128", "x/32"],
    "ipv6": ["2001:db8::1/128", "2001:db8::1", "::ffff:192.0.2.1/128", "::/128", "2001:db8::/32",
             "2001:DB8::A/128", "2001:db8::1/129", "192.0.2.1/32", "::1/0128", "fe80::1%eth0/128", "zz/128"],
}
TARGETS = ["DROP", "ACCEPT", "REJECT", "RETURN", "BLOCK", "LOG", "NOSUCH"]


def _dump(lines) -> str:
    return "*filter\n:INPUT DROP [0:0]\n:BLOCK - [0:0]\n" + "".join(line + "\n" for line in lines) + "COMMIT\n"


def _rules(text: str, family: str):
    rs = parse_iptables_save(text, family, "t")
    rs.universe = InterfaceUniverse(["eth0", "lo"], rs.interface_specs)
    return rs, rs.chain("filter", "INPUT").rules


def _same_rule(a, b) -> None:
    assert (a.alternatives, a.unknown, a.action, a.target, a.nat_to, a.text) == (
        b.alternatives, b.unknown, b.action, b.target, b.nat_to, b.text)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_a_source_jump_line_compiles_as_the_general_path_compiles_it(family: str) -> None:
    rng = random.Random(1)
    lines = []
    for src in SOURCES[family]:
        for target in TARGETS:
            lines.append(f"-A INPUT -s {src} -j {target}")
    for _ in range(200):
        v = rng.randrange(0, 1 << (32 if family == "ipv4" else 128))
        address = (".".join(str(v >> s & 255) for s in (24, 16, 8, 0)) if family == "ipv4"
                   else ":".join(f"{v >> s & 0xFFFF:x}" for s in range(112, -1, -16)))
        lines.append(f"-A INPUT -s {address}/{32 if family == 'ipv4' else 128} -j {rng.choice(TARGETS)}")
    for line in lines:
        try:
            rs, (rule,) = _rules(_dump([line]), family)
        except InputError as exc:
            fast_error = str(exc)
        else:
            fast_error = None
        # the general path of the same line (the one the regexes take no shortcut on)
        try:
            rs2 = parse_iptables_save(_dump([]), family, "t")
            rs2.universe = InterfaceUniverse(["eth0", "lo"], rs2.interface_specs)
            general = _compiler_of(rs2).compile_general(rs2.chain("filter", "INPUT"), 1, line)
        except (InputError, ValueError) as exc:
            assert fast_error is not None, (line, exc)
            continue
        assert fast_error is None, (line, fast_error)
        _same_rule(rule, general)
        assert rule.line == 4


def _compiler_of(rs):
    from twinwall.parsers import iptables_save

    return iptables_save._Compiler(rs)


@pytest.mark.parametrize("line", [
    "-A INPUT -s 192.0.2.7/32  -j DROP",  # (two spaces: not the fast form)
    "-A INPUT -s 192.0.2.7/32\t-j DROP",
    "-A INPUT -s !192.0.2.7/32 -j DROP",
    "-A INPUT -s -192.0.2.7/32 -j DROP",
    '-A INPUT -s "192.0.2.7/32" -j DROP',
    "-A INPUT ! -s 192.0.2.7/32 -j DROP",
    "-A INPUT -s 192.0.2.7/32 -j !DROP",
])
def test_lines_out_of_the_fast_form_are_read_as_before(line: str) -> None:
    try:
        _, rules = _rules(_dump([line]), "ipv4")
    except InputError:
        return  # (refused, as the general path refuses it)
    rs2 = parse_iptables_save(_dump([]), "ipv4", "t")
    rs2.universe = InterfaceUniverse(["eth0", "lo"], rs2.interface_specs)
    general = _compiler_of(rs2).compile_general(rs2.chain("filter", "INPUT"), 1, line)
    _same_rule(rules[0], general)


def test_rule_positions_share_the_line_numbers_ints_and_equal_enumerate() -> None:
    from twinwall.parsers.iptables_save import _positions

    rng = random.Random(2)
    for _ in range(300):
        count = rng.randint(0, 40)
        first = rng.randint(-2, 60)
        numbers = [first + k for k in range(count)]
        if count and rng.random() < 0.3:  # (not numbered on one by one)
            k = rng.randrange(count)
            numbers[k] += rng.choice((-1, 1, 5))
        got = _positions(numbers)
        assert got == list(range(1, count + 1))
    big = list(range(6, 100006))
    got = _positions(big)
    assert got == list(range(1, 100001)) and got[10] is big[5]
    _, rules = _rules(_dump([f"-A INPUT -s 192.0.2.{k}/32 -j DROP" for k in range(200)]), "ipv4")
    assert [r.number for r in rules] == list(range(1, 201)) and [r.line for r in rules] == list(range(4, 204))
