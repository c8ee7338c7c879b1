"""`twinwall policy adopt`: dumps -> a policy file, proved equivalent; both-family rules merged;
front-end chains referenced, not copied; what cannot be said listed; --twin proposals."""

from __future__ import annotations

from twinwall.cli import main
from twinwall.policy.check import check_policy
from twinwall.policy.model import parse_policy

V4 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:LOGDROP - [0:0]
:ufw-user-input - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT
-A INPUT -s 198.51.100.7/32 -j LOGDROP
-A INPUT -j ufw-user-input
-A INPUT -p udp --dport 53 -m limit --limit 5/s -j ACCEPT
-A LOGDROP -j LOG
-A LOGDROP -j DROP
-A OUTPUT -p tcp --dport 25 -m owner --uid-owner 0 -j ACCEPT
-A OUTPUT -p tcp --dport 25 -j REJECT --reject-with tcp-reset
COMMIT
"""
V6 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p ipv6-icmp -j ACCEPT
-A INPUT -s 2001:db8:1::/64 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT
COMMIT
"""


def adopt(tmp_path, capsys, v4=V4, v6=V6, *extra):
    (tmp_path / "v4").write_text(v4)
    (tmp_path / "v6").write_text(v6)
    out = tmp_path / "adopted.toml"
    rc = main(["policy", "adopt", "--iptables", str(tmp_path / "v4"), "--ip6tables", str(tmp_path / "v6"),
               "-o", str(out), *extra])
    return rc, out.read_text(), capsys.readouterr().err


def test_adopt_merges_lists_and_references(tmp_path, capsys):
    rc, text, err = adopt(tmp_path, capsys, V4, V6, "--twin")
    assert rc == 1  # the limit rule cannot be said: not equivalent, and the file says where
    policy = parse_policy(text)
    both = [r for r in policy.rules if r.family == "both"]
    assert any(r.ports == ((22, 22),) and r.sources.ipv4 == ("192.0.2.0/24",) and r.sources.ipv6 == ("2001:db8:1::/64",)
               for r in both)
    assert any(r.ports == ((80, 80), (443, 443)) for r in both)
    assert any(r.reject_with == "tcp-reset" and r.family == "ipv4" for r in policy.rules)
    assert "chain ufw-user-input belongs to ufw: not copied" in text
    assert "# not expressible, not adopted: IPv4 filter INPUT #7" in text and "limit" in text
    assert "# proposed twin for IPv6" in text
    assert "NOT equivalent" in text and "limit" in err + text
    assert not check_policy(policy, ("iptables",), scratch=False).mismatches


def test_adopt_equivalent_without_undecidable_rules(tmp_path, capsys):
    v4 = V4.replace("-A INPUT -p udp --dport 53 -m limit --limit 5/s -j ACCEPT\n", "").replace(
        "-A INPUT -j ufw-user-input\n", "")
    rc, text, err = adopt(tmp_path, capsys, v4, V6)
    assert rc == 0, text
    assert "proof: every new connection" in text
    assert "proved equivalent" in err


def test_adopt_finds_a_difference_when_one_exists(tmp_path, capsys):
    # the proof can fail: an undecidable rule the policy cannot copy changes some packets
    rc, text, _ = adopt(tmp_path, capsys)
    assert rc == 1 and "IPv4 input: proto 17" in text


def test_adopt_without_ruleset_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").write_text("")
    assert main(["policy", "adopt", "--iptables", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith("twinwall: ")


MANGLE_AND_FILTER = """*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A INPUT -s 192.0.2.66/32 -j DROP
-A INPUT -p tcp --dport 8080 -j ACCEPT
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A INPUT -p tcp --dport 22 -j ACCEPT
COMMIT
"""

RAW_DROP = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p tcp --dport 25 -j DROP
COMMIT
"""


def test_adopt_stacks_mangle_and_filter_chains(tmp_path, capsys):
    # mangle INPUT drops first; its accept of tcp/8080 only hands the packet on to filter INPUT,
    # which drops it: adopting filter alone would let 192.0.2.66 reach tcp/22
    rc, text, err = adopt(tmp_path, capsys, MANGLE_AND_FILTER, MANGLE_AND_FILTER.replace("192.0.2.66/32", "2001:db8::66/128"))
    assert rc == 0, text
    policy = parse_policy(text)
    assert any(r.action == "drop" and r.sources.ipv4 == ("192.0.2.66/32",) for r in policy.rules), text
    assert not any(r.action == "accept" and r.ports == ((8080, 8080),) for r in policy.rules), text
    assert not check_policy(policy, ("iptables",), scratch=False).mismatches


def test_adopt_refuses_a_raw_drop(tmp_path, capsys):
    rc, text, err = adopt(tmp_path, capsys, RAW_DROP + MANGLE_AND_FILTER, MANGLE_AND_FILTER.replace("192.0.2.66/32", "2001:db8::66/128"))
    assert "raw OUTPUT (hook output, priority -300) may drop packets" in text and "before conntrack" in text
    assert "cannot be written in a policy" in err
