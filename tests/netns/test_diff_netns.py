"""The seed story, for real: an owner-matched egress block written for IPv4 only.

In a server namespace: ``iptables -A OUTPUT -p tcp --dport 25 -m owner --uid-owner A -j ACCEPT;
iptables -A OUTPUT -p tcp --dport 25 -j DROP`` and no ip6tables rule. A mail listener (tcp/25,
both families) runs in a peer namespace. Connections made from the server namespace as user A
and as user B show which family leaks (B reaches port 25 over IPv6, not over IPv4), and
``twinwall diff`` run live in the server namespace must report exactly that region: output,
tcp, dport 25, every uid but A, IPv4 drop, IPv6 accept - and nothing for what both families
treat alike.
"""

from __future__ import annotations

import json
import sys

import pytest

import harness

UID_A = 4242  # "postfix": allowed to send mail
UID_B = 4343  # "www-data": must not

V4_RULES = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p tcp -m tcp --dport 25 -m owner --uid-owner {UID_A} -j ACCEPT
-A OUTPUT -p tcp -m tcp --dport 25 -j DROP
COMMIT
"""

# Run as root inside the namespace, drop to the given uid/gid (no supplementary groups) in this
# very process, then connect: the interpreter needs no file access after that.
CONNECT_AS = r"""
import errno, os, socket, sys
uid, addr, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
assert os.getuid() == uid and os.geteuid() == uid
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(2.0)
try:
    s.connect((addr, port))
    print("open")
except socket.timeout:
    print("filtered")
except OSError as exc:
    print("blocked:" + errno.errorcode.get(exc.errno, str(exc.errno)))
finally:
    s.close()
"""


def connect_as(ns: str, uid: int, addr: str, port: int) -> str:
    res = harness.netns_exec(ns, sys.executable, "-I", "-c", CONNECT_AS, str(uid), addr, str(port), timeout=30)
    return res.stdout.strip()


def inside(ranges, value: int) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


@pytest.fixture
def topo():
    with harness.Topology(clients=("mx",), prefix="tw-diff") as t:
        yield t


def test_seed_story_ipv6_leaks_and_diff_reports_exactly_that(topo):
    topo.load_iptables(v4_text=V4_RULES)  # nothing for IPv6: nobody wrote the twin
    mx = topo.client("mx")
    topo.start_listeners([harness.ListenerSpec("tcp", "::", 25, v6only=False)], ns=mx.ns, name="tw-diff-mx")
    v4, v6 = topo.client_address("mx", "ipv4"), topo.client_address("mx", "ipv6")

    seen = {
        (uid, fam): connect_as(topo.server, uid, addr, 25)
        for uid in (UID_A, UID_B)
        for fam, addr in (("ipv4", v4), ("ipv6", v6))
    }
    # the allowed user gets out over both families; the other one only over IPv6: the leak
    assert seen[(UID_A, "ipv4")] == "open", seen
    assert seen[(UID_A, "ipv6")] == "open", seen
    assert seen[(UID_B, "ipv4")] != "open", seen
    assert seen[(UID_B, "ipv6")] == "open", seen

    rc, out, err = topo.run_twinwall("diff", "--format", "json")
    assert rc == 1, f"exit {rc}\n{err}\n{out[:2000]}"
    doc = json.loads(out)
    diffs = doc["differences"]
    assert len(diffs) == 1, json.dumps(diffs, indent=1)[:4000]
    d = diffs[0]
    assert d["hook"] == "output"
    assert d["protocol"] == "tcp"
    assert d["dports"] == [[25, 25]]
    assert d["sports"] == [[0, 65535]]
    assert d["uid"] == [[0, UID_A - 1], [UID_A + 1, 4294967295]]
    assert d["ipv4"] == "drop" and d["ipv6"] == "accept"
    assert "--uid-owner" not in d["ipv4_rule"] and "--dport 25 -j DROP" in d["ipv4_rule"]
    assert doc["not_comparable"] == []
    # the measured leak is inside the region, the allowed traffic is not
    assert inside(d["uid"], UID_B) and not inside(d["uid"], UID_A)

    # the table says the same in one line per region
    rc, table, err = topo.run_twinwall("diff", "--hook", "output")
    assert rc == 1, err
    assert f"tcp dport 25 uid !{UID_A}" in table
    assert "IPv4: drop (filter OUTPUT #2:" in table and "IPv6: accept" in table


def test_twins_written_for_both_families_leave_no_difference(topo):
    topo.load_iptables(v4_text=V4_RULES, v6_text=V4_RULES)
    mx = topo.client("mx")
    topo.start_listeners([harness.ListenerSpec("tcp", "::", 25, v6only=False)], ns=mx.ns, name="tw-diff-mx")
    for fam in ("ipv4", "ipv6"):
        addr = topo.client_address("mx", fam)
        assert connect_as(topo.server, UID_A, addr, 25) == "open"
        assert connect_as(topo.server, UID_B, addr, 25) != "open"
    rc, out, err = topo.run_twinwall("diff", "--format", "json")
    assert rc == 0, f"exit {rc}\n{err}\n{out[:2000]}"
    doc = json.loads(out)
    assert doc["differences"] == [] and doc["not_comparable"] == []
