"""Sockets whose ports meet the same regions share one verdict (audit._family_verdicts): each
socket's verdict in a host of many sockets must be the verdict it has on a host where it is the
only socket, whatever the later packets' denials (ConnectionLegs), neighbour discovery and NAT
make of its port."""

from __future__ import annotations

import json
import random

from _snapshots import dump_snapshot
from twinwall.analysis.audit import audit_snapshot
from twinwall.model import InterfaceAddress

ADDRS = [InterfaceAddress("eth0", "ipv4", "192.0.2.1", 24, "global"),
         InterfaceAddress("eth0", "ipv6", "2001:db8:a::1", 64, "global"),
         InterfaceAddress("eth0", "ipv6", "2001:db8:a::2", 64, "global"),
         InterfaceAddress("eth0", "ipv6", "fe80::1", 64, "link")]
HEADER = "Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n"
NDP = ["-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT",
       "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -j ACCEPT"]


def _row(proto: str, address: str, port: int, k: int) -> str:
    state, peer = ("LISTEN", "*") if proto == "tcp" else ("UNCONN", "*")
    v6only = " v6only:1" if address.startswith("[") else (" v6only:0" if address == "*" else "")
    return f'{proto}   {state} 0      128  {address}:{port}  {peer}:*     users:(("s{k}",pid={1000 + k},fd=3)){v6only}\n'


def _rules(rng: random.Random, family: str) -> str:
    src = "198.51.100.0/24" if family == "ipv4" else "2001:db8:b::/48"
    lo = rng.randrange(3000, 3008)
    pool = [
        f"-A INPUT -p tcp -m tcp --dport {lo}:{lo + rng.randrange(1, 6)} -j ACCEPT",
        f"-A INPUT -s {src} -p tcp -m tcp --dport {rng.randrange(3000, 3012)} -j ACCEPT",
        f"-A INPUT -p udp -m udp --dport {lo}:{lo + 3} -j ACCEPT",
        f"-A INPUT -p tcp -m tcp --dport {rng.randrange(3000, 3012)} -j REJECT",
        "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A INPUT -p tcp -m multiport --dports 3002,3004,3009 -j ACCEPT",
        f"-A INPUT -p tcp -m tcp --dport {rng.randrange(3000, 3012)} -m conntrack --ctstate NEW -j ACCEPT",
        f"-A OUTPUT -p tcp -m tcp --sport {rng.randrange(3000, 3012)} -j DROP",
        f"-A OUTPUT -p udp -m udp --sport {lo + 1} -j REJECT",
        f"-A INPUT -p tcp -m tcp --dport {rng.randrange(3000, 3012)} -m conntrack --ctstate ESTABLISHED -j DROP",
    ]
    if family == "ipv6":
        pool += NDP * 3 + ["-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -d ff02::1:ff00:1 -j DROP"]
    rules = rng.sample(pool, rng.randrange(2, len(pool)))
    nat = ""
    if rng.random() < 0.3:
        port = rng.randrange(3000, 3012)
        nat = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
               + rng.choice([f"-A PREROUTING -p tcp -m tcp --dport {port + 100} -j REDIRECT --to-ports {port}\n",
                             "-A PREROUTING -p tcp -m tcp --dport 3000:3011 -j REDIRECT\n",  # (the same port)
                             f"-A PREROUTING -p tcp -m tcp --dport 3000:3011 -j REDIRECT --to-ports {port}\n"])
               + "COMMIT\n")
    policy = rng.choice(["DROP", "DROP", "ACCEPT"])
    filt = [r for r in rules if r.startswith("-A INPUT")] + [r for r in rules if r.startswith("-A OUTPUT")]
    return nat + (f"*filter\n:INPUT {policy} [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                  + "".join(r + "\n" for r in filt) + "COMMIT\n")


def _verdicts(report) -> dict:
    return {(s.socket.protocol, s.socket.address, s.socket.port, s.socket.process):
            {f: json.dumps(s.verdicts[f].to_json(), sort_keys=True) for f in ("ipv4", "ipv6")}
            for s in report.services if s.dnat is None}


def test_each_socket_has_the_verdict_it_has_alone():
    rng = random.Random(12)
    for case in range(40):
        v4, v6 = _rules(rng, "ipv4"), _rules(rng, "ipv6")
        picked = {}  # (one row per socket: "*" and "[::]" are both the socket on ::)
        for _ in range(12):
            proto, address = rng.choice(("tcp", "tcp", "udp")), rng.choice(("0.0.0.0", "*", "[::]", "[2001:db8:a::1]", "192.0.2.1"))
            port = rng.randrange(3000, 3012)
            picked[(proto, "::" if address in ("*", "[::]") else address, port)] = (proto, address, port)
        rows = [_row(proto, address, port, k) for k, (proto, address, port) in enumerate(sorted(picked.values()))]
        together = _verdicts(audit_snapshot(dump_snapshot(v4, v6, HEADER + "".join(rows), addresses=ADDRS)))
        for row in rows:
            alone = _verdicts(audit_snapshot(dump_snapshot(v4, v6, HEADER + row, addresses=ADDRS)))
            for key, verdicts in alone.items():
                assert together[key] == verdicts, (case, key, v4, v6)


def test_later_packets_denied_for_one_port_of_a_shared_region():
    # one accepted region (3000-3009) for ten sockets; the replies from 3005 are dropped
    v4 = ("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
          "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
          "-A INPUT -p tcp -m tcp --dport 3000:3009 -j ACCEPT\n"
          "-A OUTPUT -p tcp -m tcp --sport 3005 -j DROP\nCOMMIT\n")
    rows = "".join(_row("tcp", "0.0.0.0", p, p) for p in range(3000, 3010))
    report = audit_snapshot(dump_snapshot(v4, None, HEADER + rows, addresses=ADDRS))
    got = {s.socket.port: s.verdicts["ipv4"] for s in report.services}
    assert got[3005].status == "filtered" and "further packets" in got[3005].reason, got[3005]
    assert all(got[p].status == "open" for p in range(3000, 3010) if p != 3005)
    assert got[3000] is got[3009]  # (the same verdict, shared)


def test_every_service_neighbour_discovery_narrows_is_named():
    # NDP to 2001:db8:a::1 dropped: every wildcard socket is reachable at a::2 only
    v6 = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
          "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -d ff02::1:ff00:1 -j DROP\nCOMMIT\n")
    rows = "".join(_row("tcp", "[::]", p, p) for p in range(3000, 3004))
    report = audit_snapshot(dump_snapshot(None, v6, HEADER + rows, addresses=ADDRS))
    finding = next(f for f in report.findings if f.id == "TW-ICMPV6-NDP-BLOCKED")
    assert "tcp/3000, tcp/3001, tcp/3002, tcp/3003 cannot be reached" in finding.message, finding.message
