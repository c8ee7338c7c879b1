"""`policy check` on a long policy (the shape of adopt's output of a big router's FORWARD: per
interface pair, accepts by source, destination and port, then a drop per interface) takes the
piecewise proof (one interface class at a time, the chain walked in parts): it proves the
compiled rules, and it still finds a compiled rule that decides otherwise than the file."""

from __future__ import annotations

from twinwall.parsers.iptables_save import parse_iptables_save
from twinwall.policy.check import PART_RULES, PIECEWISE_RULES, CheckResult, check_policy, compiled_texts, prove
from twinwall.policy.lower import lower
from twinwall.policy.model import FAMILIES, parse_policy

IFACES = [f"eth1.{n}" for n in range(10, 18)]


def long_policy() -> str:
    out = ['[defaults]\ninput = "drop"\nforward = "accept"\noutput = "accept"\nlog_dropped = false\n']
    for i, iif in enumerate(IFACES):
        for j, oif in enumerate(IFACES):
            if i == j:
                continue
            for k in range(4):
                out.append(f'[[rule]]\ndirection = "forward"\nin_interface = ["{iif}"]\nout_interface = ["{oif}"]\n'
                           f'proto = "tcp"\nports = [{22 + k}, "{8000 + 10 * k}-{8005 + 10 * k}"]\n'
                           f'from = "198.51.100.{16 * i + k}/32"\nto = "203.0.113.{16 * j}/28"\naction = "accept"\n'
                           f'family = "ipv4"\n')
        out.append(f'[[rule]]\ndirection = "forward"\nin_interface = ["{iif}"]\nnot_from = ["198.51.100.0/24"]\n'
                   f'action = "drop"\nfamily = "ipv4"\n')
        out.append(f'[[rule]]\ndirection = "forward"\nin_interface = ["{iif}"]\nproto = "udp"\nports = [53]\n'
                   f'action = "drop"\nfamily = "ipv4"\n')
    return "\n".join(out)


def proved(texts) -> CheckResult:
    lowered = lower(parse_policy(long_policy()))
    result = CheckResult(lowered)
    rulesets = {f: [parse_iptables_save(texts[f], f, "tampered")] for f in FAMILIES}
    prove(lowered, "iptables", rulesets, result, "as written")
    return result


def test_long_policy_is_proved_piecewise():
    texts = compiled_texts(lower(parse_policy(long_policy())), "iptables")
    forward = [line for line in texts["ipv4"].splitlines() if line.startswith("-A FORWARD")]
    assert len(forward) >= max(PIECEWISE_RULES, 2 * PART_RULES)  # (the piecewise proof is the one taken)
    result = check_policy(parse_policy(long_policy()), ("iptables",), scratch=False)
    assert not result.mismatches, "\n".join(map(str, result.mismatches))
    assert any("IPv4 forward" in p and "agree" in p for p in result.proved)


def test_long_policy_wrong_compiled_rules_are_found():
    texts = compiled_texts(lower(parse_policy(long_policy())), "iptables")
    lines = texts["ipv4"].splitlines()
    accepts = [n for n, line in enumerate(lines) if line.startswith("-A FORWARD") and line.endswith("-j ACCEPT")
               and "eth1.13" in line]
    # one accept in the middle of the chain turned into a drop
    flipped = list(lines)
    flipped[accepts[len(accepts) // 2]] = flipped[accepts[len(accepts) // 2]][:-len("ACCEPT")] + "DROP"
    result = proved(dict(texts, ipv4="\n".join(flipped) + "\n"))
    assert result.mismatches and all(m.hook == "forward" and m.intended == "accept" for m in result.mismatches)
    # an interface's final drop left out: what it drops is accepted
    drops = [n for n, line in enumerate(lines) if line.startswith("-A FORWARD -i eth1.14") and line.endswith("-j DROP")
             and "! -s" in line]
    result = proved(dict(texts, ipv4="\n".join(lines[:drops[0]] + lines[drops[0] + 1:]) + "\n"))
    assert result.mismatches and all(m.intended == "drop" and m.actual == "accept" for m in result.mismatches)
