"""The compiler's words-read path for "-A CHAIN -p tcp -m tcp --dport N -j TARGET" lines (a
dispatch table's, a chain per port), against the general path of the same line: same rule, or
the same refusal."""

from __future__ import annotations

import random

from twinwall.errors import InputError
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.parsers import iptables_save
from twinwall.parsers.iptables_save import parse_iptables_save

TARGETS = ["ACCEPT", "DROP", "REJECT", "RETURN", "LOG", "SVC", "SVC2", "NOSUCH"]


def _dump(lines) -> str:
    return "*filter\n:INPUT DROP [0:0]\n:SVC - [0:0]\n:SVC2 - [0:0]\n" + "".join(line + "\n" for line in lines) + "COMMIT\n"


def test_a_port_jump_line_compiles_as_the_general_path_compiles_it() -> None:
    rng = random.Random(3)
    ports = ["0", "1", "22", "080", "65535", "65536", "99999", "00443"] + [str(rng.randrange(0, 70000)) for _ in range(60)]
    lines = [f"-A INPUT -p {proto} -m {proto} --dport {port} -j {target}"
             for port in ports for proto in ("tcp", "udp") for target in rng.sample(TARGETS, 3)]
    for line in lines:
        try:
            rs = parse_iptables_save(_dump([line, line]), "ipv4", "t")  # (twice: the second a remembered port)
            rs.universe = InterfaceUniverse(["eth0", "lo"], rs.interface_specs)
            rules = rs.chain("filter", "INPUT").rules
        except InputError:
            rules = None
        rs2 = parse_iptables_save(_dump([]), "ipv4", "t")
        rs2.universe = InterfaceUniverse(["eth0", "lo"], rs2.interface_specs)
        try:
            general = iptables_save._Compiler(rs2).compile_general(rs2.chain("filter", "INPUT"), 1, line)
        except (InputError, ValueError):
            assert rules is None, line
            continue
        assert rules is not None, line
        for rule in rules:
            assert (rule.alternatives, rule.unknown, rule.action, rule.target, rule.nat_to, rule.text) == (
                general.alternatives, general.unknown, general.action, general.target, general.nat_to, general.text), line
        assert [r.line for r in rules] == [5, 6]
