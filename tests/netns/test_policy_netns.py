"""The seed 002 policy compiled by `twinwall policy compile` and loaded on a namespace host,
for both targets (iptables-restore / ip6tables-restore; nft -f), checked with real traffic:

* outgoing tcp/25 to a peer namespace: refused as root, connects as uid nobody (the policy's
  uid), over IPv4 and over IPv6 (the seed's story: the IPv4-only owner rule left IPv6 open);
* tcp/22 on the host: the office group (the "inside" client) connects over both families, the
  "outside" client does not;
* IPv6 works at all: the neighbours are resolved by neighbour discovery through the loaded
  rules (the harness adds no static neighbour entries);
* loopback connects over 127.0.0.1 and ::1;
* `twinwall audit` on the loaded rules finds neither ICMPv6 finding (NDP, RFC 4890 messages
  such as packet too big).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import IPV4, IPV6, ListenerSpec, Topology, netns_exec

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "tests" / "fixtures" / "policy" / "seed002" / "policy.toml"
NOBODY = 65534

CONNECT = """
import os, socket, sys
uid = int(sys.argv[3])
"x".encode("idna")  # the codec loaded while its files are still readable (they are root's)
if uid:
    os.setgid(65534)
    os.setuid(uid)
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4)
    s.close()
    print("connected")
except OSError as exc:
    print("failed", exc)
"""


def compile_policy(tmp_path: Path, target: str, policy: Path = POLICY):
    res = subprocess.run([sys.executable, "-m", "twinwall", "policy", "compile", str(policy), "--target", target,
                          "-o", str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert res.returncode == 0, res.stderr
    if target == "iptables":
        return (tmp_path / "rules.v4").read_text(), (tmp_path / "rules.v6").read_text()
    return (tmp_path / "twinwall.nft").read_text()


def connect(ns: str, addr: str, port: int, uid: int) -> str:
    res = netns_exec(ns, sys.executable, "-c", CONNECT, addr, str(port), str(uid), timeout=30)
    return res.stdout.strip()


@pytest.mark.parametrize("target", ["iptables", "nft"])
def test_seed002_policy_on_a_namespace_host(tmp_path, target):
    compiled = compile_policy(tmp_path, target)
    with Topology() as topo:
        if target == "iptables":
            topo.load_iptables(*compiled)
        else:
            topo.load_nft(compiled)
        inside = topo.clients["inside"]
        topo.start_listeners([ListenerSpec("tcp", "::", 25, v6only=False)], ns=inside.ns, name="tw-mx")
        topo.start_listeners([ListenerSpec("tcp", "::", 22, v6only=False)])
        for family in (IPV4, IPV6):
            peer = topo.client_address("inside", family)
            # tcp/25 out: only the mail user
            assert connect(topo.server, peer, 25, 0).startswith("failed"), (target, family)
            assert connect(topo.server, peer, 25, NOBODY) == "connected", (target, family)
            # tcp/22 in: the office group only
            assert topo.probe("inside", topo.server_address("inside", family), 22, "tcp", timeout=3).result == "open"
            assert topo.probe("outside", topo.server_address("outside", family), 22, "tcp",
                              timeout=2).result == "filtered", (target, family)
        # loopback
        for addr in ("127.0.0.1", "::1"):
            assert connect(topo.server, addr, 22, 0) == "connected"
            assert connect(topo.server, addr, 22, NOBODY) == "connected"
        # the IPv6 neighbour was learnt by neighbour discovery through the rules, not set
        neigh = netns_exec(topo.server, "ip", "-6", "neigh", "show", "dev", inside.link.server_if).stdout
        assert topo.client_address("inside", IPV6) in neigh and "PERMANENT" not in neigh
        report = topo.audit_json()
        ids = {f["id"] for f in report["findings"]}
        assert "TW-ICMPV6-NDP-BLOCKED" not in ids and "TW-ICMPV6-ESSENTIAL-BLOCKED" not in ids, ids
