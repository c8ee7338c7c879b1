"""What the kernel does with a connection's further packets and with ct state before conntrack,
checked against real clients (analysis/connection.py, evaluator's pre-conntrack states).

* INPUT accepting only ``--ctstate NEW`` under policy DROP: the SYN passes, the ACK does not, no
  TCP connection opens (twinwall said ``open``); the UDP exchange still works.
* raw PREROUTING runs before conntrack: ``--ctstate INVALID`` there matches every packet (no
  entry yet) and ``ct state new`` in an nft chain at priority raw matches none (twinwall read
  both as the packet's NEW state).
"""

from __future__ import annotations

from harness import IPV4, ListenerSpec, Topology

NEW_ONLY = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
-A INPUT -p udp -m udp --dport 53 -m conntrack --ctstate NEW -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT
COMMIT
"""

RAW = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 2000 -m conntrack --ctstate INVALID -j DROP
COMMIT
"""

NFT_RAW = """table ip tw_raw {
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    tcp dport 3000 ct state new drop
  }
}
"""


def _statuses(report):
    return {(s["protocol"], s["port"]): s["ipv4"] for s in report["services"] if s["address"] == "0.0.0.0"}


def test_new_only_input_lets_no_tcp_connection_open() -> None:
    with Topology() as topo:
        topo.load_iptables(v4_text=NEW_ONLY)
        topo.start_listeners([ListenerSpec("tcp", "0.0.0.0", 22), ListenerSpec("udp", "0.0.0.0", 53),
                              ListenerSpec("tcp", "0.0.0.0", 80)])
        addr = topo.server_address("inside", IPV4)
        real = {(r.request.proto, r.request.port): r for r in topo.probe_many(
            [topo.request("inside", addr, port, proto, timeout=3.0)
             for proto, port in (("tcp", 22), ("udp", 53), ("tcp", 80))])}
        report = topo.audit_json()
    assert not real[("tcp", 22)].reachable and real[("udp", 53)].reachable and real[("tcp", 80)].reachable, real
    got = _statuses(report)
    assert got[("tcp", 22)]["status"] == "filtered", got[("tcp", 22)]
    assert "further packets" in got[("tcp", 22)]["reason"]
    assert got[("udp", 53)]["status"] == "open" and got[("tcp", 80)]["status"] == "open", got


def test_state_matches_in_raw_see_every_packet_invalid() -> None:
    with Topology() as topo:
        topo.load_iptables(v4_text=RAW)
        topo.load_nft(NFT_RAW)
        topo.start_listeners([ListenerSpec("tcp", "0.0.0.0", 2000), ListenerSpec("tcp", "0.0.0.0", 3000)])
        addr = topo.server_address("inside", IPV4)
        real = {r.request.port: r for r in topo.probe_many(
            [topo.request("inside", addr, port, "tcp", timeout=3.0) for port in (2000, 3000)])}
        report = topo.audit_json()
    assert not real[2000].reachable and real[3000].reachable, real
    got = _statuses(report)
    assert got[("tcp", 2000)]["status"] == "filtered", got[("tcp", 2000)]
    assert got[("tcp", 3000)]["status"] == "open", got[("tcp", 3000)]
