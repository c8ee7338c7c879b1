"""A connection's further packets (analysis/connection.py): a service is open only where the
client's later packets (ESTABLISHED, in) and the host's replies (out) pass too."""

from __future__ import annotations

from _snapshots import dump_snapshot
from twinwall.analysis.audit import audit_snapshot
from twinwall.model import InterfaceAddress

SS = """\
Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   LISTEN 0      128          0.0.0.0:22         0.0.0.0:*     users:(("sshd",pid=812,fd=3))
udp   UNCONN 0      0            0.0.0.0:53         0.0.0.0:*     users:(("dns",pid=813,fd=3))
"""
ADDRS = [InterfaceAddress("eth0", "ipv4", "192.0.2.1", 24, "global"),
         InterfaceAddress("eth1", "ipv4", "198.51.100.1", 24, "global")]


def filter_table(input_rules: str, output_policy: str = "ACCEPT", output_rules: str = "") -> str:
    return ("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n"
            f":OUTPUT {output_policy} [0:0]\n{input_rules}{output_rules}COMMIT\n")


def verdicts(v4: str):
    report = audit_snapshot(dump_snapshot(v4, None, SS, addresses=ADDRS, ipv6=False))
    return {(s.socket.protocol, s.socket.port): s.verdicts["ipv4"] for s in report.services}


NEW_ONLY = ("-A INPUT -p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT\n"
            "-A INPUT -p udp --dport 53 -m conntrack --ctstate NEW -j ACCEPT\n")


def test_new_only_without_established_is_filtered_for_tcp():
    # the SYN is accepted, the handshake's ACK meets the DROP policy: no TCP connection opens;
    # a UDP exchange needs only its reply out, which OUTPUT accepts
    v = verdicts(filter_table(NEW_ONLY))
    tcp = v[("tcp", 22)]
    assert tcp.status == "filtered", tcp
    assert "further packets" in tcp.reason and "ESTABLISHED" in tcp.reason, tcp.reason
    assert any(d.policy == "DROP" and d.chain == "INPUT" for d in tcp.decided_by), tcp.decided_by
    assert any(d.rule and "--ctstate NEW" in d.rule for d in tcp.decided_by), tcp.decided_by
    assert v[("udp", 53)].status == "open"


def test_established_accepted_makes_it_open_and_one_interface_restricts_it():
    est = "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
    assert verdicts(filter_table(est + NEW_ONLY))[("tcp", 22)].status == "open"
    v = verdicts(filter_table("-A INPUT -i eth0 -m conntrack --ctstate ESTABLISHED -j ACCEPT\n" + NEW_ONLY))
    tcp = v[("tcp", 22)]
    assert tcp.status == "restricted" and tcp.allowed_interfaces == ["eth0"], tcp
    assert "for the others" in tcp.reason


def test_replies_dropped_on_output_filter_tcp_and_udp():
    est = "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
    v = verdicts(filter_table(est + NEW_ONLY, output_policy="DROP"))
    assert v[("tcp", 22)].status == "filtered" and "replies out" in v[("tcp", 22)].reason
    assert v[("udp", 53)].status == "filtered"
    # replies from the service's port let out: open again; to one network only: restricted
    out = "-A OUTPUT -p tcp --sport 22 -j ACCEPT\n-A OUTPUT -p udp --sport 53 -d 203.0.113.0/24 -j ACCEPT\n"
    v = verdicts(filter_table(est + NEW_ONLY, output_policy="DROP", output_rules=out))
    assert v[("tcp", 22)].status == "open"
    assert v[("udp", 53)].status == "restricted" and v[("udp", 53)].allowed_sources == ["203.0.113.0/24"]


def test_later_packets_of_a_redirected_connection_are_judged_at_the_port_they_reach():
    # nat sees only the SYN; conntrack sends the ACK to :22 as well, where filter judges it
    v4 = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
          "-A PREROUTING -p tcp --dport 2222 -j REDIRECT --to-ports 22\nCOMMIT\n")
    new22 = "-A INPUT -p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT\n"
    v = verdicts(v4 + filter_table(new22 + "-A INPUT -p tcp --dport 22 -m conntrack --ctstate ESTABLISHED -j ACCEPT\n"))
    assert v[("tcp", 22)].status == "open"
    v = verdicts(v4 + filter_table(new22 + "-A INPUT -p tcp --dport 2222 -m conntrack --ctstate ESTABLISHED -j ACCEPT\n"))
    assert v[("tcp", 22)].status == "filtered", v[("tcp", 22)]


def test_untracked_later_packets_carry_ack_not_syn():
    # differential seed 164: raw NOTRACKs everything, --syn accepts the first packet; the ACK is
    # untracked too but is no SYN, and the DROP after it takes it
    raw = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -j NOTRACK\nCOMMIT\n"
    rules = ("-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n-A INPUT -p tcp --syn -j ACCEPT\n"
             "-A INPUT ! -s 198.51.100.77/32 -j DROP\n-A INPUT -j ACCEPT\n")
    tcp = verdicts(raw + filter_table(rules))[("tcp", 22)]
    assert tcp.status == "restricted" and tcp.allowed_sources == ["198.51.100.77/32"], tcp
