"""parse_ss on every ss output variant twinwall accepts (texts captured from iproute2 6.1 in a
network namespace, from older iproute2 releases, and from the CIS benchmark)."""

from __future__ import annotations


import pytest

from twinwall.errors import InputError
from twinwall.model import ListeningSocket
from twinwall.sources.sockets import parse_ss, unit_from_cgroup

# ss -tulnpe, iproute2 6.1 (listeners: lst.py as root, port 7777 as uid 65534).
TULNPE = """\
Netid State  Recv-Q Send-Q                     Local Address:Port Peer Address:PortProcess
udp   UNCONN 0      0                          0.0.0.0%veth0:53        0.0.0.0:*    users:(("python3",pid=5390,fd=13)) ino:10219 sk:b cgroup:unreachable:1 <->
udp   UNCONN 0      0                                0.0.0.0:5353      0.0.0.0:*    users:(("python3",pid=5390,fd=8)) ino:10215 sk:c cgroup:unreachable:1 <->
udp   UNCONN 0      0                                      *:123             *:*    users:(("python3",pid=5390,fd=9)) ino:10216 sk:d cgroup:unreachable:1 v6only:0 <->
udp   UNCONN 0      0                                   [::]:124          [::]:*    users:(("python3",pid=5390,fd=11)) ino:10217 sk:e cgroup:unreachable:1 v6only:1 <->
udp   UNCONN 0      0      [fe80::d832:60ff:fe74:237b]%veth0:546          [::]:*    users:(("python3",pid=5390,fd=14)) ino:12092 sk:f cgroup:unreachable:1 v6only:1 <->
tcp   LISTEN 0      128                              0.0.0.0:7777      0.0.0.0:*    users:(("python3",pid=5436,fd=3)) uid:65534 ino:13532 sk:10 cgroup:/system.slice/demo.service <->
tcp   LISTEN 0      128                              0.0.0.0:22        0.0.0.0:*    users:(("sshd",pid=812,fd=3)) ino:10214 sk:11 cgroup:/system.slice/ssh.service <->
tcp   LISTEN 0      128                        0.0.0.0%veth0:53        0.0.0.0:*    users:(("python3",pid=5390,fd=12)) ino:10218 sk:12 cgroup:unreachable:1 <->
tcp   LISTEN 0      128                            192.0.2.1:8443      0.0.0.0:*    users:(("python3",pid=5390,fd=6)) ino:10213 sk:13 cgroup:unreachable:1 <->
tcp   LISTEN 0      128                                [::1]:25           [::]:*    users:(("python3",pid=5390,fd=5)) ino:10212 sk:14 cgroup:unreachable:1 v6only:1 <->
tcp   LISTEN 0      128                                    *:8080            *:*    users:(("python3",pid=5390,fd=3)) ino:10210 sk:15 cgroup:unreachable:1 v6only:0 <->
tcp   LISTEN 0      128                                 [::]:8081         [::]:*    users:(("python3",pid=5390,fd=4)) ino:10211 sk:16 cgroup:unreachable:1 v6only:1 <->
tcp   LISTEN 0      128                              *%veth0:8090            *:*    users:(("python3",pid=5390,fd=16)) ino:12094 sk:17 cgroup:unreachable:1 v6only:0 <->
tcp   LISTEN 0      128                   [::ffff:127.0.0.1]:9000            *:*    users:(("python3",pid=5390,fd=15)) ino:12093 sk:18 cgroup:unreachable:1 v6only:0 <->
"""

TULN = """\
Netid State  Recv-Q Send-Q                     Local Address:Port Peer Address:PortProcess
udp   UNCONN 0      0                          0.0.0.0%veth0:53        0.0.0.0:*          
udp   UNCONN 0      0                                0.0.0.0:5353      0.0.0.0:*          
udp   UNCONN 0      0                                      *:123             *:*          
udp   UNCONN 0      0                                   [::]:124          [::]:*          
udp   UNCONN 0      0      [fe80::d832:60ff:fe74:237b]%veth0:546          [::]:*          
tcp   LISTEN 0      128                              0.0.0.0:7777      0.0.0.0:*          
tcp   LISTEN 0      128                              0.0.0.0:22        0.0.0.0:*          
tcp   LISTEN 0      128                        0.0.0.0%veth0:53        0.0.0.0:*          
tcp   LISTEN 0      128                            192.0.2.1:8443      0.0.0.0:*          
tcp   LISTEN 0      128                                [::1]:25           [::]:*          
tcp   LISTEN 0      128                                    *:8080            *:*          
tcp   LISTEN 0      128                                 [::]:8081         [::]:*          
tcp   LISTEN 0      128                              *%veth0:8090            *:*          
tcp   LISTEN 0      128                   [::ffff:127.0.0.1]:9000            *:*          
"""

# ss -tul (no -n): service names instead of port numbers.
TUL_NAMES = """\
Netid State  Recv-Q Send-Q                     Local Address:Port          Peer Address:PortProcess
udp   UNCONN 0      0                          0.0.0.0%veth0:domain             0.0.0.0:*          
udp   UNCONN 0      0                                0.0.0.0:mdns               0.0.0.0:*          
udp   UNCONN 0      0                                      *:ntp                      *:*          
udp   UNCONN 0      0      [fe80::d832:60ff:fe74:237b]%veth0:dhcpv6-client         [::]:*          
tcp   LISTEN 0      128                              0.0.0.0:ssh                0.0.0.0:*          
tcp   LISTEN 0      128                                [::1]:smtp                  [::]:*          
tcp   LISTEN 0      128                                    *:http-alt                 *:*          
"""

H_TULNPE = """\
tcp LISTEN 0      128    0.0.0.0:7777 0.0.0.0:* users:(("python3",pid=5436,fd=3)) uid:65534 ino:13532 sk:10 cgroup:unreachable:1 <->
tcp LISTEN 0      128                                    *:8080       *:* users:(("python3",pid=5390,fd=3)) ino:10210 sk:15 cgroup:unreachable:1 v6only:0 <->
tcp LISTEN 0      128                                 [::]:8081    [::]:* users:(("python3",pid=5390,fd=4)) ino:10211 sk:16 cgroup:unreachable:1 v6only:1 <->
"""

TLNP = """\
State  Recv-Q Send-Q      Local Address:Port Peer Address:PortProcess                            
LISTEN 0      128               0.0.0.0:7777      0.0.0.0:*    users:(("python3",pid=5436,fd=3)) 
LISTEN 0      128                 [::1]:25           [::]:*    users:(("python3",pid=5390,fd=5)) 
LISTEN 0      128                     *:8080            *:*    users:(("python3",pid=5390,fd=3)) 
LISTEN 0      128                  [::]:8081         [::]:*    users:(("python3",pid=5390,fd=4)) 
"""

ULN = """\
State  Recv-Q Send-Q                     Local Address:Port Peer Address:PortProcess
UNCONN 0      0                          0.0.0.0%veth0:53        0.0.0.0:*          
UNCONN 0      0                                      *:123             *:*          
UNCONN 0      0                                   [::]:124          [::]:*          
"""

# The CIS benchmark's audit output (old ss: unbracketed IPv6, the last colon is the port).
CIS_SEED = """\
Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port
udp UNCONN 0 0 ::1:123 :::*
udp UNCONN 0 0 :::123 :::*
tcp LISTEN 0 128 :::22 :::*
tcp LISTEN 0 20 ::1:25 :::*
"""

# iproute2 3.x/4.9 (CentOS 7, Debian 9): '*' is the IPv4 wildcard, old users:(("name",pid,fd)).
OLD_IPROUTE = """\
Netid  State      Recv-Q Send-Q     Local Address:Port                    Peer Address:Port
udp    UNCONN     0      0                      *:68                                 *:*                   users:(("dhclient",1002,6))
tcp    LISTEN     0      128                    *:22                                 *:*                   users:(("sshd",pid=1400,fd=3))
tcp    LISTEN     0      128                   :::22                                :::*                   users:(("sshd",pid=1400,fd=4))
tcp    LISTEN     0      100            127.0.0.1:25                                 *:*                   users:(("master",pid=1800,fd=13))
tcp    LISTEN     0      100                  ::1:25                                :::*                   users:(("master",pid=1800,fd=14))
"""

# Old ss -tlne without any IPv6 socket: '*' with ino: but no v6only: is the IPv4 wildcard.
OLD_TLNE = """\
State      Recv-Q Send-Q     Local Address:Port   Peer Address:Port
LISTEN     0      128                    *:22                 *:*      ino:15135 sk:ffff88003b7f2000 <->
LISTEN     0      128            127.0.0.1:25                 *:*      ino:16112 sk:ffff88003b7f2800 <->
"""


def by_port(socks):
    return {(s.protocol, s.port, s.interface): s for s in socks}


def test_tulnpe_every_field():
    socks = parse_ss(TULNPE)
    assert len(socks) == 14
    d = by_port(socks)
    assert d[("tcp", 8080, None)] == ListeningSocket(
        "tcp", "ipv6", "::", 8080, v6only=False, process="python3", pid=5390, uid=0
    )
    assert d[("tcp", 8081, None)].v6only is True and d[("tcp", 8081, None)].address == "::"
    assert d[("tcp", 25, None)].address == "::1" and d[("tcp", 25, None)].v6only is True
    v4 = d[("tcp", 8443, None)]
    assert (v4.family, v4.address, v4.v6only) == ("ipv4", "192.0.2.1", None)
    nobody = d[("tcp", 7777, None)]
    assert (nobody.uid, nobody.pid, nobody.unit) == (65534, 5436, "demo.service")
    assert d[("tcp", 22, None)].process == "sshd" and d[("tcp", 22, None)].unit == "ssh.service"
    # %iface suffixes, on v4, on the dual-stack wildcard and on a link-local v6 address
    assert d[("udp", 53, "veth0")].address == "0.0.0.0"
    assert d[("tcp", 53, "veth0")].family == "ipv4"
    dual_dev = d[("tcp", 8090, "veth0")]
    assert (dual_dev.family, dual_dev.address, dual_dev.v6only) == ("ipv6", "::", False)
    ll = d[("udp", 546, "veth0")]
    assert (ll.family, ll.address, ll.v6only) == ("ipv6", "fe80::d832:60ff:fe74:237b", True)
    mapped = d[("tcp", 9000, None)]
    assert (mapped.family, mapped.address) == ("ipv6", "::ffff:127.0.0.1")
    assert d[("udp", 123, None)].v6only is False and d[("udp", 124, None)].v6only is True
    assert all(s.unit is None for s in socks if s.port not in (22, 7777))  # cgroup:unreachable


def test_all_variants_agree_on_addresses():
    full = {(s.protocol, s.family, s.address, s.port, s.interface) for s in parse_ss(TULNPE)}
    plain = parse_ss(TULN)
    assert {(s.protocol, s.family, s.address, s.port, s.interface) for s in plain} == full
    assert all(s.process is None and s.uid is None for s in plain)
    # without -e, the wildcard tells v6only: '*' is 0, '[::]' is 1; others stay unknown
    d = by_port(plain)
    assert d[("tcp", 8080, None)].v6only is False
    assert d[("tcp", 8081, None)].v6only is True
    assert d[("tcp", 25, None)].v6only is None


def test_no_header_and_brief_example():
    socks = parse_ss(H_TULNPE)
    assert [s.port for s in socks] == [7777, 8080, 8081]
    example = (
        'tcp   LISTEN 0      128                *:18080            *:*    users:(("python3",pid=2380,fd=3)) ino:5598 sk:3 cgroup:/ v6only:0 <->\n'
        'tcp   LISTEN 0      128            [::1]:18083         [::]:*    users:(("python3",pid=2380,fd=6)) ino:5601 sk:5 cgroup:/ v6only:1 <->\n'
    )
    a, b = parse_ss(example)
    assert (a.family, a.address, a.port, a.v6only, a.process, a.pid, a.unit) == (
        "ipv6", "::", 18080, False, "python3", 2380, None)
    assert (b.address, b.port, b.v6only) == ("::1", 18083, True)


def test_single_protocol_outputs_infer_protocol_from_state():
    tcp = parse_ss(TLNP)
    assert {s.protocol for s in tcp} == {"tcp"}
    assert by_port(tcp)[("tcp", 7777, None)].pid == 5436
    udp = parse_ss(ULN)
    assert {s.protocol for s in udp} == {"udp"}
    assert [s.port for s in udp] == [53, 123, 124]


def test_service_names_without_n():
    d = by_port(parse_ss(TUL_NAMES))
    assert set(d) == {("udp", 53, "veth0"), ("udp", 5353, None), ("udp", 123, None),
                      ("udp", 546, "veth0"), ("tcp", 22, None), ("tcp", 25, None),
                      ("tcp", 8080, None)}


def test_cis_seed_old_unbracketed_ipv6():
    socks = parse_ss(CIS_SEED)
    got = [(s.protocol, s.family, s.address, s.port, s.v6only) for s in socks]
    assert got == [
        ("udp", "ipv6", "::1", 123, None),
        ("udp", "ipv6", "::", 123, None),
        ("tcp", "ipv6", "::", 22, None),
        ("tcp", "ipv6", "::1", 25, None),
    ]


def test_old_iproute2_star_is_ipv4_wildcard():
    socks = parse_ss(OLD_IPROUTE)
    got = [(s.protocol, s.family, s.address, s.port, s.process, s.pid) for s in socks]
    assert got == [
        ("udp", "ipv4", "0.0.0.0", 68, "dhclient", 1002),
        ("tcp", "ipv4", "0.0.0.0", 22, "sshd", 1400),
        ("tcp", "ipv6", "::", 22, "sshd", 1400),
        ("tcp", "ipv4", "127.0.0.1", 25, "master", 1800),
        ("tcp", "ipv6", "::1", 25, "master", 1800),
    ]
    old_e = parse_ss(OLD_TLNE)
    assert [(s.family, s.address, s.port, s.uid) for s in old_e] == [
        ("ipv4", "0.0.0.0", 22, 0), ("ipv4", "127.0.0.1", 25, 0)]


def test_star_without_evidence_is_dual_stack_and_v6only_token_wins():
    (s,) = parse_ss("tcp LISTEN 0 128 *:22 *:*\n")
    assert (s.family, s.address, s.v6only) == ("ipv6", "::", False)
    assert s.accepts_family("ipv4") and s.accepts_family("ipv6")
    (s,) = parse_ss("tcp LISTEN 0 128 *:22 *:* ino:1 sk:1 v6only:1 <->\n")
    assert (s.family, s.address, s.v6only) == ("ipv6", "::", True)
    assert not s.accepts_family("ipv4")


def test_scope_id_inside_brackets_and_unbracketed():
    text = (
        "udp UNCONN 0 0 [fe80::1%eth1]:546 [::]:*\n"
        "udp UNCONN 0 0 fe80::2%eth2:547 :::*\n"
    )
    a, b = parse_ss(text)
    assert (a.address, a.interface, a.port) == ("fe80::1", "eth1", 546)
    assert (b.address, b.interface, b.port) == ("fe80::2", "eth2", 547)


def test_skips_non_listening_states_other_netids_headers_and_blank_lines():
    text = """
Netid State      Recv-Q Send-Q Local Address:Port  Peer Address:Port Process

tcp   ESTAB      0      0      192.0.2.1:22        192.0.2.9:51234
tcp   TIME-WAIT  0      0      192.0.2.1:22        192.0.2.9:51233
udp   ESTAB      0      0      192.0.2.1:40000     198.51.100.1:53
tcp   UNCONN     0      0      0.0.0.0:5000        0.0.0.0:*
u_str LISTEN     0      4096   /run/systemd/private 12345 * 0 users:(("systemd",pid=1,fd=14))
nl    UNCONN     0      0      rtnl:kernel         *
p_raw UNCONN     0      0      *:eth0              *
icmp6 UNCONN     0      0      *:58                *:*
tcp   LISTEN     0      128    0.0.0.0:22          0.0.0.0:*

"""
    socks = parse_ss(text)
    assert [(s.protocol, s.port) for s in socks] == [("tcp", 22)]
    single = "State Recv-Q Send-Q Local Address:Port Peer Address:Port\nESTAB 0 0 192.0.2.1:22 192.0.2.9:5\n"
    assert parse_ss(single) == []


def test_dedupe_keeps_richest():
    text = (
        "tcp LISTEN 0 128 0.0.0.0:80 0.0.0.0:*\n"
        'tcp LISTEN 0 511 0.0.0.0:80 0.0.0.0:* users:(("nginx",pid=101,fd=6)) ino:7 sk:1 cgroup:/system.slice/nginx.service <->\n'
        'tcp LISTEN 0 511 0.0.0.0:80 0.0.0.0:* users:(("nginx",pid=102,fd=6))\n'
        "tcp LISTEN 0 128 0.0.0.0%eth0:80 0.0.0.0:*\n"
        "udp UNCONN 0 0 0.0.0.0:80 0.0.0.0:*\n"
    )
    socks = parse_ss(text)
    assert len(socks) == 3
    first = socks[0]
    assert (first.process, first.pid, first.unit, first.uid) == ("nginx", 101, "nginx.service", 0)
    assert socks[1].interface == "eth0" and socks[2].protocol == "udp"


def test_users_variants_and_continuation_line():
    text = (
        'tcp LISTEN 0 128 0.0.0.0:631 0.0.0.0:* users:(("cups d",pid=55,fd=7),("other",pid=56,fd=3))\n'
        "tcp LISTEN 0 128 [::]:443 [::]:*\n"
        '\t users:(("caddy",pid=77,fd=9)) uid:33 ino:5 sk:2 cgroup:/system.slice/caddy.service v6only:0 <->\n'
    )
    a, b = parse_ss(text)
    assert (a.process, a.pid) == ("cups d", 55)
    assert (b.process, b.pid, b.uid, b.unit, b.v6only) == ("caddy", 77, 33, "caddy.service", False)


def test_crlf_line_endings():
    socks = parse_ss(TLNP.replace("\n", "\r\n"))
    assert len(socks) == 4


@pytest.mark.parametrize(
    "text, lineno, words",
    [
        ("hello world\n", 1, "not a line of ss output"),
        ("Netid State Recv-Q\ntcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\nrandom garbage here\n", 3, "not a line"),
        ("tcp LISTEN x y 0.0.0.0:22 0.0.0.0:*\n", 1, "Recv-Q/Send-Q"),
        ("tcp LISTEN 0 128 0.0.0.0\n", 1, "too few columns"),
        ("tcp BOGUS 0 128 0.0.0.0:22 0.0.0.0:*\n", 1, "unknown socket state"),
        ("\n\ntcp LISTEN 0 128 300.1.1.1:22 0.0.0.0:*\n", 3, "not a numeric IP address"),
        ("tcp LISTEN 0 128 myhost:22 0.0.0.0:*\n", 1, "not a numeric IP address"),
        ("tcp LISTEN 0 128 0.0.0.0:99999 0.0.0.0:*\n", 1, "port 99999 is out of range (1-65535)"),
        ("udp UNCONN 0 0 [::]:65536 [::]:*\n", 1, "port 65536 is out of range"),
        ("tcp LISTEN 0 128 0.0.0.0:0 0.0.0.0:*\n", 1, "port 0: a listening or bound socket never"),
        ("udp UNCONN 0 0 0.0.0.0:* 0.0.0.0:*\n", 1, "port '*' (port 0): a listening"),
        ("tcp LISTEN 0 128 0.0.0.0:\u00b2 0.0.0.0:*\n", 1, "unknown port"),  # int() refuses it
        ("tcp LISTEN 0 128 0.0.0.0:nosuchservicename 0.0.0.0:*\n", 1, "unknown port"),
        ("foo LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n", 1, "unknown Netid"),
        ("tcp LISTEN 0 128 [::1:22 0.0.0.0:*\n", 1, "cannot read local address"),
        ("Chain INPUT (policy DROP)\n", 1, "not a line of ss output"),
    ],
)
def test_garbage_raises_input_error_with_line_and_hint(text, lineno, words):
    with pytest.raises(InputError) as info:
        parse_ss(text, source="sockets.txt")
    msg = str(info.value)
    assert msg.startswith(f"sockets.txt: line {lineno}: ")
    assert words in msg
    if "out of range" in words or "port 0" in words:
        assert "unknown port" not in msg and "numeric ports" not in msg  # it is numeric
    assert "ss -tulnp" in msg  # the hint
    assert "\n" not in msg


def test_empty_and_blank_input():
    assert parse_ss("") == []
    assert parse_ss("\n   \n\t\n") == []
    assert parse_ss("Netid State Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n") == []


def test_unit_from_cgroup():
    assert unit_from_cgroup("/system.slice/ssh.service") == "ssh.service"
    assert unit_from_cgroup("/system.slice/system-getty.slice/getty@tty1.service") == "getty@tty1.service"
    assert unit_from_cgroup("/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope") == "app-x.scope"
    assert unit_from_cgroup("/system.slice/docker.socket") == "docker.socket"
    assert unit_from_cgroup("/system.slice/docker-1a2b.scope/init") == "docker-1a2b.scope"
    assert unit_from_cgroup("/") is None
    assert unit_from_cgroup("unreachable:1") is None


def test_2000_lines_of_every_variant():
    lines = []
    for i in range(2000):
        if i % 2:
            addr = f"[2001:db8::{i:x}]"
            tail = "v6only:1 <->"
        else:
            addr = f"198.51.100.{i % 250}"
            tail = "<->"
        lines.append(
            f"tcp   LISTEN 0      128    {addr}:{1024 + i}    0.0.0.0:*    "
            f'users:(("svc{i % 50}",pid={1000 + i},fd=3)) ino:{i} sk:{i:x} '
            f"cgroup:/system.slice/svc{i % 50}.service {tail}"
        )
    text = "\n".join(lines) + "\n"
    socks = parse_ss(text)
    assert len(socks) == 2000
    v6 = [s for s in socks if s.family == "ipv6"]
    assert len(v6) == 1000 and all(s.v6only is True for s in v6)
    assert {s.process for s in socks} == {f"svc{i}" for i in range(50)}
    assert socks[1].port == 1025 and socks[1].pid == 1001 and socks[1].unit == "svc1.service"
