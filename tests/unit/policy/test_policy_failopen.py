"""Each way the other translators fail open when writing both families, as a test that
twinwall's compiler gets it right: proved on the parsed output with the evaluator (not by
looking for strings alone)."""

from __future__ import annotations

import os
import shutil

import pytest

from twinwall.analysis.evaluator import Evaluator
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import (
    CT_NEW,
    CT_UNTRACKED,
    address_space,
    loopback_addresses,
    make_box,
    prefix_interval,
)
from twinwall.policy.check import check_policy, compiled_texts
from twinwall.policy.lower import lower
from twinwall.policy.model import parse_policy

UNIVERSE = InterfaceUniverse(["eth0"])


def compiled(text: str):
    lowered = lower(parse_policy(text))
    return lowered, compiled_texts(lowered, "iptables"), compiled_texts(lowered, "nft")


def verdicts(ruleset_text: str, family: str, hook: str, **box) -> set:
    from twinwall.parsers.iptables_save import parse_iptables_save

    rs = parse_iptables_save(ruleset_text, family)
    ev = Evaluator([rs], family, UNIVERSE, loopback_addresses(family))
    space = address_space(family)
    remote = one("192.0.2.5" if family == "ipv4" else "2001:db8::5", family)  # not a spoofed loopback
    b = make_box(box.pop("src", remote), box.pop("dst", space), UNIVERSE.mask("eth0"), UNIVERSE.mask("eth0"), **box)
    return {o.verdict for o in ev.hook_path((hook,), [b])}


def one(addr: str, family: str):
    return (prefix_interval(addr, family),)


SSH_NOT_FROM_V4_SET = """
[groups]
trusted = ["10.0.0.0/8"]
[[rule]]
direction = "in"
proto = "tcp"
ports = [22]
not_from = "trusted"
action = "drop"
[[rule]]
direction = "in"
proto = "tcp"
ports = [22]
action = "accept"
"""


def test_ferm_negated_ipv4_only_set_still_drops_ssh_over_ipv6():
    # ferm: saddr ! @ipfilter((10.0.0.0/8)) ... DROP vanishes from the IPv6 rules: SSH open to all
    lowered, ipt, nft = compiled(SSH_NOT_FROM_V4_SET)
    ssh = dict(proto=((6, 6),), dport=((22, 22),), state=CT_NEW)
    assert verdicts(ipt["ipv6"], "ipv6", "input", src=one("2001:db8::5", "ipv6"), **ssh) == {"drop"}
    assert verdicts(ipt["ipv4"], "ipv4", "input", src=one("192.0.2.5", "ipv4"), **ssh) == {"drop"}
    assert verdicts(ipt["ipv4"], "ipv4", "input", src=one("10.1.2.3", "ipv4"), **ssh) == {"accept"}
    assert any(n.kind == "always-true" and n.family == "ipv6" for n in lowered.notes)
    assert "meta nfproto ipv6" in nft or "tcp dport 22 drop" in nft
    assert not check_policy(parse_policy(SSH_NOT_FROM_V4_SET), ("iptables",), scratch=False).mismatches


ICMPV6_ONLY = """
[defaults]
input = "drop"
essential_icmp = false
[[rule]]
direction = "in"
proto = "icmp"
icmp_types = ["neighbour-solicitation"]
action = "accept"
"""


def test_icmpv6_only_type_is_left_out_of_ipv4_never_a_bare_accept():
    # Aerleon (PR #499): an icmpv6-only term in an IPv4 table becomes 'ct state new accept'
    lowered, ipt, nft = compiled(ICMPV6_ONLY)
    for proto in ((6, 6), (17, 17), (1, 1)):
        assert verdicts(ipt["ipv4"], "ipv4", "input", proto=proto, state=CT_NEW) == {"drop"}
    assert "icmp" not in "".join(line for line in ipt["ipv4"].splitlines() if line.startswith("-A INPUT")
                                 and "rule #1" in line)
    assert any(n.family == "ipv4" and n.kind == "left-out" for n in lowered.notes)
    assert any(r.number == 1 and fam == "ipv6" for r, fam, _ in lowered.family_only)
    nft_rule = [line for line in nft.splitlines() if "rule #1" in line]
    assert nft_rule and all("meta nfproto ipv6" in line and "nd-neighbor-solicit" in line for line in nft_rule)


def test_ipv6_icmp_rule_is_an_icmpv6_rule_and_ip6tables_never_gets_p_icmp():
    # Capirca's inet6 ignores 'icmp'; 'ip6tables -p icmp' is accepted and never matches
    text = """
[defaults]
input = "drop"
[[rule]]
direction = "in"
proto = "icmp"
icmp_types = ["echo-request"]
action = "accept"
family = "ipv6"
[[rule]]
direction = "in"
proto = "icmp"
action = "drop"
"""
    _, ipt, _ = compiled(text)
    assert " -p icmp " not in ipt["ipv6"]
    echo = dict(proto=((58, 58),), icmp=((128 << 8, 128 << 8 | 255),), state=CT_NEW)
    assert verdicts(ipt["ipv6"], "ipv6", "input", **echo) == {"accept"}
    assert verdicts(ipt["ipv4"], "ipv4", "input", proto=((1, 1),), icmp=((8 << 8, 8 << 8 | 255),),
                    state=CT_NEW) == {"drop"}


@pytest.mark.parametrize("proto", ["tcp", "udp", "any", "esp"])
def test_nft_inet_table_never_uses_ip_protocol(proto):
    # 'ip protocol' in an inet table touches IPv4 only: IPv6 would skip the rule
    text = f"""
[[rule]]
direction = "in"
proto = "{proto}"
action = "accept"
"""
    _, _, nft = compiled(text)
    assert "ip protocol" not in nft and "ip6 nexthdr" not in nft
    if proto != "any":
        assert f"meta l4proto {proto}" in nft


STATEFUL = """
[defaults]
input = "drop"
output = "drop"
[[rule]]
direction = "in"
proto = "tcp"
ports = [22]
action = "accept"
"""


@pytest.mark.parametrize("hook", ["input", "output"])
def test_stateful_drop_policy_keeps_neighbour_discovery(hook):
    # NDP is untracked: a v4-style 'ESTABLISHED accept, policy DROP' ruleset copied to IPv6
    # kills it; the baseline accepts it (hop limit 255) before any conntrack-state rule
    _, ipt, _ = compiled(STATEFUL)
    ns = dict(proto=((58, 58),), icmp=((135 << 8, 135 << 8 | 255),), hoplimit=((255, 255),), state=CT_UNTRACKED)
    assert verdicts(ipt["ipv6"], "ipv6", hook, **ns) == {"accept"}
    # a forged one from off-link (hop limit below 255) is not
    ns["hoplimit"] = ((64, 64),)
    assert verdicts(ipt["ipv6"], "ipv6", hook, **ns) == {"drop"}
    ptb = dict(proto=((58, 58),), icmp=((2 << 8, 2 << 8 | 255),), state=CT_UNTRACKED)
    assert verdicts(ipt["ipv6"], "ipv6", hook, **ptb) == {"accept"}
    lines = [line for line in ipt["ipv6"].splitlines() if line.startswith(f"-A {hook.upper()}")]
    ndp = next(i for i, line in enumerate(lines) if "neighbour-solicitation" in line)
    state = next(i for i, line in enumerate(lines) if "--ctstate" in line)
    assert ndp < state


def test_baseline_switched_off_is_off():
    _, ipt, _ = compiled(STATEFUL.replace('output = "drop"', 'output = "drop"\nessential_icmp = false'))
    ns = dict(proto=((58, 58),), icmp=((135 << 8, 135 << 8 | 255),), hoplimit=((255, 255),), state=CT_UNTRACKED)
    assert verdicts(ipt["ipv6"], "ipv6", "input", **ns) == {"drop"}


def test_log_before_drop_never_loopback():
    text = """
[defaults]
input = "drop"
log_dropped = true
loopback = false
[[rule]]
direction = "in"
proto = "tcp"
ports = [23]
action = "drop"
"""
    _, ipt, nft = compiled(text)
    for fam in ("ipv4", "ipv6"):
        lines = [line for line in ipt[fam].splitlines() if line.startswith("-A INPUT")]
        log = [i for i, line in enumerate(lines) if "-j LOG" in line]
        drop = [i for i, line in enumerate(lines) if "rule #1" in line and "-j DROP" in line]
        assert log and drop and log[0] < drop[0]
        default_log = [line for line in lines if "default drop" in line]
        assert default_log and all("! -i lo" in line for line in default_log)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root for a scratch namespace")
def test_a_tcp_reset_behind_a_negated_list_loads_into_the_kernel():
    """A reject with tcp-reset whose rule has a negated list goes into a chain of its own; the
    kernel takes REJECT --reject-with tcp-reset only in a rule that says -p tcp itself, and
    iptables-restore --test does not check it (found by the property test: the real load failed)."""
    import subprocess

    _, texts, _nft = compiled('''
[groups]
office = ["192.0.2.0/24", "2001:db8:1::/64"]
v4only = ["198.51.100.0/25", "203.0.113.7"]
[[rule]]
direction = "in"
proto = "tcp"
from = "office"
to = "!v4only"
action = "reject"
reject_with = "tcp-reset"
''')
    for family, tool in (("ipv4", "iptables-restore"), ("ipv6", "ip6tables-restore")):
        res = subprocess.run(["unshare", "--net", tool], input=texts[family], text=True, capture_output=True, timeout=60)
        assert res.returncode == 0, (family, res.stderr)
