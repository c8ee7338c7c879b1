"""--syn / --tcp-flags as iptables-save prints them (issue 10): a new connection's first packet
carries SYN alone, so "--tcp-flags FIN,SYN,RST,ACK SYN" (iptables-save's --syn) matches it and
its negation does not. These canonical forms were read back from iptables-save 1.8.9."""

import pytest

from twinwall.netfilter.packetset import CT_ESTABLISHED, CT_NEW

from test_evaluator import table, verdict

HARDENING = "-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP\n-A INPUT -j ACCEPT"


def test_not_syn_new_drop_leaves_new_connections_alone():
    # most hardening guides: "! --syn -m conntrack --ctstate NEW -j DROP"; was read as dropping
    # every new connection
    assert verdict(table(HARDENING)).verdict == "accept"


def test_syn_drop_drops_new_connections():
    t = table("-A INPUT -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -j DROP\n-A INPUT -j ACCEPT")
    assert verdict(t, dport=443).verdict == "drop"
    assert verdict(t, dport=443, state=CT_ESTABLISHED).verdict == "accept"  # an ACK: not --syn
    assert verdict(t, dport=444).verdict == "accept"


@pytest.mark.parametrize("flags, new_matches", [
    ("FIN,SYN,RST,PSH,ACK,URG NONE", False),  # the NULL scan
    ("FIN,SYN,RST,PSH,ACK,URG FIN,SYN,RST,PSH,ACK,URG", False),  # XMAS
    ("SYN,ACK SYN,ACK", False),
    ("SYN,RST,ACK SYN", True),
    ("SYN SYN", True),
    ("FIN,SYN FIN,SYN", False),
    ("ACK NONE", True),
])
def test_tcp_flags_on_a_new_connection(flags, new_matches):
    for neg in (False, True):
        t = table(f"-A INPUT -p tcp -m tcp {'! ' if neg else ''}--tcp-flags {flags} -j DROP\n-A INPUT -j ACCEPT")
        want = "drop" if new_matches != neg else "accept"
        assert verdict(t).verdict == want, (flags, neg)


def test_hand_syn_and_canonical_form_agree_with_notrack():
    # raw NOTRACK makes the SYN untracked: still a SYN, so --syn matches it
    raw = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p tcp -j CT --notrack\nCOMMIT\n"
    for form in ("--syn", "-m tcp --tcp-flags FIN,SYN,RST,ACK SYN"):
        t = raw + table(f"-A INPUT -p tcp {form} -j ACCEPT")
        assert verdict(t, state=CT_NEW).verdict == "accept", form
