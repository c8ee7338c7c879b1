"""Path MTU discovery through a compiled policy, with real traffic.

client -- router -- host: every interface has MTU 1500, but the router's route to the client's
network carries MTU 1280, so the host's full-size segments to the client cannot be forwarded:
the router answers with ICMP fragmentation needed (IPv4, DF set by Linux TCP) or ICMPv6 packet
too big, and the transfer completes only if the host's rules let that error in. The seed 002
policy (input drop; tcp/22 from the office, which the client is in) is compiled for each target
and loaded on the host; a 200 KB transfer host -> client, then 200 KB client -> host, must
complete over IPv4 and over IPv6, and the host must have learnt the 1280-byte path MTU.

No static neighbour entries anywhere: the host resolves the router by neighbour discovery
through its rules. The control turns the essential ICMP off in the policy file itself
(``essential_icmp = false``): IPv6 then stalls (neighbour discovery and the ICMPv6 the
conntrack state rule does not cover are dropped), so the test can fail.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from harness import HarnessError, _run, ip_batch, load_iptables, load_nft, netns_exec, sysctl_set
from test_policy_netns import POLICY, compile_policy

SIZE = 200_000
PORT = 22  # the seed 002 policy lets the office reach tcp/22

CLIENT = {"ipv4": "192.0.2.10", "ipv6": "2001:db8:a::10"}  # in the policy's office group
ROUTER_C = {"ipv4": "192.0.2.1", "ipv6": "2001:db8:a::1"}
ROUTER_H = {"ipv4": "198.51.100.1", "ipv6": "2001:db8:b::1"}
HOST = {"ipv4": "198.51.100.20", "ipv6": "2001:db8:b::20"}
NETS = {"ipv4": ("192.0.2.0/24", 24, "198.51.100.0/24", 24), "ipv6": ("2001:db8:a::/64", 64, "2001:db8:b::/64", 64)}

SERVER = f"""
import socket
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", {PORT}))
s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(8)
    try:
        c.sendall(b"h" * {SIZE})
        got = 0
        while got < {SIZE}:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        c.sendall(b"ok" if got == {SIZE} else b"short")
    except OSError:
        pass
    c.close()
"""

CLIENT_SCRIPT = f"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], {PORT}), timeout=4)
    s.settimeout(4)
    got = 0
    while got < {SIZE}:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    s.sendall(b"c" * {SIZE})
    s.shutdown(socket.SHUT_WR)
    print("done" if got == {SIZE} and s.recv(16) == b"ok" else f"short {{got}}")
except OSError as exc:
    print("stalled", exc)
"""


def compile_text(tmp_path: Path, target: str, text: str):
    src = tmp_path / "policy.toml"
    src.write_text(text)
    out = tmp_path / target
    out.mkdir()
    return compile_policy(out, target, src)


class PathMtuHosts:
    """Three namespaces: client, router (a 1280-byte route to the client), host."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.client, self.router, self.host = (f"tw-pmtu-{r}-{tag}" for r in ("c", "r", "h"))
        self.server = None

    def __enter__(self):
        try:
            for ns in (self.client, self.router, self.host):
                _run(["ip", "netns", "add", ns])
                sysctl_set(ns, {"net.ipv6.conf.all.disable_ipv6": 0, "net.ipv6.conf.default.disable_ipv6": 0,
                                "net.ipv6.conf.all.accept_ra": 0, "net.ipv6.conf.default.accept_ra": 0})
            sysctl_set(self.router, {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1,
                                     "net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0})
            c4, c4len, h4, h4len = NETS["ipv4"]
            c6, c6len, h6, h6len = NETS["ipv6"]
            ip_batch(self.router, [
                "link set lo up",
                f"link add rc type veth peer name cr netns {self.client}",
                f"link add rh type veth peer name hr netns {self.host}",
                f"addr add {ROUTER_C['ipv4']}/{c4len} dev rc", f"addr add {ROUTER_C['ipv6']}/{c6len} dev rc nodad",
                f"addr add {ROUTER_H['ipv4']}/{h4len} dev rh", f"addr add {ROUTER_H['ipv6']}/{h6len} dev rh nodad",
                "link set rc up", "link set rh up",
                # the bottleneck: forwarded packets to the client's network take at most 1280 bytes
                f"route del {c4} dev rc", f"route add {c4} dev rc mtu 1280",
                f"route del {c6} dev rc", f"route add {c6} dev rc mtu 1280",
            ])
            for ns, dev, own, gw, plen in ((self.client, "cr", CLIENT, ROUTER_C, (c4len, c6len)),
                                           (self.host, "hr", HOST, ROUTER_H, (h4len, h6len))):
                ip_batch(ns, [
                    "link set lo up",
                    f"addr add {own['ipv4']}/{plen[0]} dev {dev}", f"addr add {own['ipv6']}/{plen[1]} dev {dev} nodad",
                    f"link set {dev} up",
                    f"route add default via {gw['ipv4']} dev {dev}", f"route add ::/0 via {gw['ipv6']} dev {dev}",
                ])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def start_server(self) -> None:
        self.server = subprocess.Popen(["ip", "netns", "exec", self.host, sys.executable, "-c", SERVER],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.server.stdout.readline()
        if line.strip() != "ready":
            raise HarnessError(f"transfer server did not start: {self.server.stderr.read()}")

    def transfer(self, family: str) -> str:
        res = netns_exec(self.client, sys.executable, "-c", CLIENT_SCRIPT, HOST[family], timeout=30)
        return res.stdout.strip()

    def host_path_mtu(self, family: str) -> str:
        return netns_exec(self.host, "ip", "-6" if family == "ipv6" else "-4", "route", "get", CLIENT[family]).stdout

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()  # (the one process this test started, by its handle)
            self.server.communicate(timeout=10)
            self.server = None
        for ns in (self.client, self.router, self.host):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _load(hosts: PathMtuHosts, target: str, compiled) -> None:
    if target == "iptables":
        load_iptables(hosts.host, *compiled)
    else:
        load_nft(hosts.host, compiled)


@pytest.mark.parametrize("target", ["iptables", "nft"])
def test_path_mtu_through_the_policy(tmp_path, target):
    compiled = compile_text(tmp_path, target, POLICY.read_text())
    with PathMtuHosts() as hosts:
        _load(hosts, target, compiled)
        hosts.start_server()
        for family in ("ipv4", "ipv6"):
            assert hosts.transfer(family) == "done", (target, family)
            # the router's error reached the host: it now sends the client 1280-byte packets
            assert "mtu 1280" in hosts.host_path_mtu(family), (target, family, hosts.host_path_mtu(family))
        neigh = netns_exec(hosts.host, "ip", "-6", "neigh", "show", "dev", "hr").stdout
        assert ROUTER_H["ipv6"] in neigh and "PERMANENT" not in neigh, neigh


@pytest.mark.parametrize("target", ["iptables", "nft"])
def test_path_mtu_control_without_essential_icmp(tmp_path, target):
    text = POLICY.read_text().replace('log_dropped = true\n', 'log_dropped = true\nessential_icmp = false\n', 1)
    assert "essential_icmp = false" in text
    compiled = compile_text(tmp_path, target, text)
    with PathMtuHosts() as hosts:
        _load(hosts, target, compiled)
        hosts.start_server()
        assert hosts.transfer("ipv6").startswith("stalled"), target
