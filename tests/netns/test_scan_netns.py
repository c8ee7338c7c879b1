"""`twinwall scan` against a real target namespace, checked port by port against nmap.

Two namespaces joined by a veth pair: the target (192.0.2.1, 2001:db8:5::1) runs real listeners
and loads real rules with iptables-restore / ip6tables-restore; the scanner (192.0.2.2,
2001:db8:5::2) runs `python -m twinwall scan` and nmap on the same ports. Every TCP state must
equal nmap -sT's, every UDP state nmap -sU's, and both must equal what the listener and rule
setup below implies. This file has its own namespace fixture so it does not depend on the
shared harness.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

T4, T6 = "192.0.2.1", "2001:db8:5::1"
S4, S6 = "192.0.2.2", "2001:db8:5::2"
TARGET_NAME = "tw-scan-target.test"

# The target: what listens where, and what the rules do to it.
LISTENERS = textwrap.dedent(
    """
    import select, socket, sys
    tcp = []
    def listen(family, addr, port, v6only=None):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        s.bind((addr, port)); s.listen(128); tcp.append(s)
    listen(socket.AF_INET6, "::", 7001, False)   # dual-stack
    listen(socket.AF_INET, "0.0.0.0", 7002)      # IPv4 only
    listen(socket.AF_INET6, "::", 7003, True)    # IPv6 only (v6only)
    listen(socket.AF_INET6, "::", 7004, False)   # dual-stack, ip6tables DROP
    listen(socket.AF_INET6, "::", 7005, False)   # dual-stack, REJECT (port unreachable)
    listen(socket.AF_INET6, "::", 7006, False)   # dual-stack, REJECT admin-prohibited
    listen(socket.AF_INET6, "::", 7009, False)   # dual-stack, iptables REJECT tcp-reset
    udp = []
    for port in (53, 5301):
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        u.bind(("::", port)); udp.append(u)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select(tcp + udp, [], [])
        for s in ready:
            if s in tcp:
                conn, _ = s.accept(); conn.close()
                continue
            data, peer = s.recvfrom(4096)
            if s.getsockname()[1] == 53:
                if len(data) >= 12:   # DNS-ish: echo the query back as a response (QR=1)
                    s.sendto(data[:2] + bytes([data[2] | 0x80, 0x80]) + data[4:], peer)
            else:
                s.sendto(b"pong", peer)
    """
)

READY_CHECK = (
    "import socket\n"
    f"socket.create_connection(('{T4}', 7001), timeout=1).close()\n"
    f"socket.create_connection(('{T6}', 7001), timeout=1).close()\n"
)

RULES4 = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 7005 -j REJECT
-A INPUT -p tcp --dport 7006 -j REJECT --reject-with icmp-admin-prohibited
-A INPUT -p tcp --dport 7008 -j DROP
-A INPUT -p tcp --dport 7009 -j REJECT --reject-with tcp-reset
-A INPUT -p udp --dport 5303 -j DROP
COMMIT
"""

RULES6 = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 7004 -j DROP
-A INPUT -p tcp --dport 7005 -j REJECT
-A INPUT -p tcp --dport 7006 -j REJECT --reject-with icmp6-adm-prohibited
-A INPUT -p udp --dport 5301 -j DROP
-A INPUT -p udp --dport 5303 -j DROP
COMMIT
"""

# (protocol, port) -> (IPv4 state, IPv6 state) implied by LISTENERS + RULES4/RULES6.
EXPECTED = {
    ("tcp", 7001): ("open", "open"),
    ("tcp", 7002): ("open", "closed"),
    ("tcp", 7003): ("closed", "open"),
    ("tcp", 7004): ("open", "filtered"),
    ("tcp", 7005): ("closed", "closed"),  # REJECT icmp-port-unreachable: nmap -sT says closed
    ("tcp", 7006): ("filtered", "filtered"),
    ("tcp", 7007): ("closed", "closed"),
    ("tcp", 7008): ("filtered", "closed"),
    ("tcp", 7009): ("closed", "open"),
    ("udp", 53): ("open", "open"),
    ("udp", 5301): ("open", "open|filtered"),
    ("udp", 5302): ("closed", "closed"),
    ("udp", 5303): ("open|filtered", "open|filtered"),
}
GAPS = {("tcp", 7002), ("tcp", 7003), ("tcp", 7004), ("tcp", 7008), ("tcp", 7009), ("udp", 5301)}
TCP_PORTS = sorted(p for proto, p in EXPECTED if proto == "tcp")
UDP_PORTS = sorted(p for proto, p in EXPECTED if proto == "udp")
PORT_SPEC = ",".join([f"tcp/{p}" for p in TCP_PORTS] + [f"udp/{p}" for p in UDP_PORTS])


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed")
    return path


def _run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    return subprocess.run(cmd, **kw)


def _scan_cmd():
    return [sys.executable, "-m", "twinwall", "scan"]


class Lab:
    def __init__(self, target: str, scanner: str):
        self.target, self.scanner = target, scanner

    def in_target(self, *cmd, **kw):
        return _run(["ip", "netns", "exec", self.target, *cmd], **kw)

    def in_scanner(self, *cmd, **kw):
        return _run(["ip", "netns", "exec", self.scanner, *cmd], **kw)

    def twinwall(self, *args, timeout=60):
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2] / "src")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("NO_COLOR", None)
        return self.in_scanner(*_scan_cmd(), *args, check=False, timeout=timeout, env=env)

    def nmap(self, family: str, proto: str, ports):
        addr = T4 if family == "ipv4" else T6
        cmd = ["nmap", "-sT" if proto == "tcp" else "-sU", "-Pn", "-n", "--max-retries", "1",
               "--host-timeout", "60s", "-p", ",".join(str(p) for p in ports), "-oX", "-"]
        if proto == "tcp":
            # Over a veth the target's ICMP error comes back while connect() still holds the
            # socket lock, and the kernel keeps it only as a soft error (TcpExtLockDroppedIcmps).
            # nmap -sT does not ask for the error queue, so it learns of the refusal only when
            # the SYN is retransmitted one second later; with nmap's LAN-sized timeout it would
            # sometimes give up first and call a REJECTed port filtered. (twinwall's probes set
            # IP(V6)_RECVERR, which wakes them at once.)
            cmd += ["--min-rtt-timeout", "1500ms"]
        if family == "ipv6":
            cmd.append("-6")
        cmd.append(addr)
        return parse_nmap_xml(self.in_scanner(*cmd, timeout=90).stdout)


def parse_nmap_xml(text: str):
    """{(protocol, port): state} from nmap -oX, including ports folded into <extraports>."""
    states = {}
    root = ET.fromstring(text)
    for host in root.iter("host"):
        for port in host.iter("port"):
            states[(port.get("protocol"), int(port.get("portid")))] = port.find("state").get("state")
        for extra in host.iter("extraports"):
            for reasons in extra.iter("extrareasons"):
                for part in (reasons.get("ports") or "").split(","):
                    if not part:
                        continue
                    lo, _, hi = part.partition("-")
                    for p in range(int(lo), int(hi or lo) + 1):
                        states[(reasons.get("proto"), p)] = extra.get("state")
    return states


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    for tool in ("ip", "iptables-restore", "ip6tables-restore", "nmap"):
        _need(tool)
    tag = uuid.uuid4().hex[:8]
    target, scanner = f"tw-scan-t-{tag}", f"tw-scan-s-{tag}"
    netns_etc = Path("/etc/netns")
    etc_existed = netns_etc.exists()
    hosts_dir = netns_etc / scanner
    made = []
    listener = None
    try:
        for ns in (target, scanner):
            _run(["ip", "netns", "add", ns])
            made.append(ns)
        lab = Lab(target, scanner)
        lab.in_target("ip", "link", "add", "tw0", "type", "veth", "peer", "name", "tw1",
                      "netns", scanner)
        for ns, dev, a4, a6 in ((target, "tw0", T4, T6), (scanner, "tw1", S4, S6)):
            ex = ["ip", "netns", "exec", ns, "ip"]
            _run(ex + ["link", "set", "lo", "up"])
            _run(ex + ["addr", "add", f"{a4}/24", "dev", dev])
            _run(ex + ["addr", "add", f"{a6}/64", "dev", dev, "nodad"])
            _run(ex + ["link", "set", dev, "up"])
        # The kernel rate-limits the ICMP errors that REJECT and closed UDP ports send (per
        # peer, about one a second for ICMPv6); twinwall and nmap probe the same ports back to
        # back, so a limited error would turn "closed" into "filtered" for whichever came second.
        lab.in_target("sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0",
                      "net.ipv6.icmp.ratelimit=0")
        lab.in_target("iptables-restore", input=RULES4)
        lab.in_target("ip6tables-restore", input=RULES6)
        # A name with an A and an AAAA record, seen only inside the scanner namespace.
        hosts_dir.mkdir(parents=True)
        (hosts_dir / "hosts").write_text(
            f"127.0.0.1 localhost\n{T4} {TARGET_NAME}\n{T6} {TARGET_NAME}\n"
        )
        script = tmp_path_factory.mktemp("scan") / "listeners.py"
        script.write_text(LISTENERS)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", target, sys.executable, str(script)],
            stdout=subprocess.PIPE, text=True,
        )
        assert listener.stdout.readline().strip() == "ready"
        # The veth must pass traffic both ways before anything is measured.
        deadline = time.monotonic() + 10
        while lab.in_scanner(sys.executable, "-c", READY_CHECK, check=False).returncode != 0:
            assert time.monotonic() < deadline, "the veth never passed traffic"
            time.sleep(0.2)
        yield lab
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=10)
        if hosts_dir.exists():
            shutil.rmtree(hosts_dir)
        if not etc_existed and netns_etc.exists() and not any(netns_etc.iterdir()):
            netns_etc.rmdir()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture(scope="module")
def scan(lab):
    proc = lab.twinwall(f"{T4},{T6}", "--ports", PORT_SPEC, "--timeout", "0.5", "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    return proc, doc


def _states(doc):
    out = {}
    for row in doc["results"]:
        out[(row["protocol"], row["port"])] = (
            row["ipv4"]["state"] if row["ipv4"] else None,
            row["ipv6"]["state"] if row["ipv6"] else None,
        )
    return out


def test_scan_sees_the_listener_and_rule_setup(scan):
    proc, doc = scan
    assert doc["schema"] == "twinwall.scan/1"
    assert _states(doc) == EXPECTED
    assert {(r["protocol"], r["port"]) for r in doc["results"] if r["gap"]} == GAPS
    assert proc.returncode == 1  # there are gaps
    assert doc["disagreements"] == []
    reasons = {(r["protocol"], r["port"]): (r["ipv4"]["reason"], r["ipv6"]["reason"])
               for r in doc["results"]}
    assert reasons[("tcp", 7005)] == ("port-unreach", "port-unreach")  # told from a RST
    assert reasons[("tcp", 7007)] == ("conn-refused", "conn-refused")
    assert reasons[("tcp", 7006)] == ("admin-prohibited", "admin-prohibited")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tcp_states_equal_nmap(lab, scan, family):
    _proc, doc = scan
    ours = {k: v[0 if family == "ipv4" else 1] for k, v in _states(doc).items() if k[0] == "tcp"}
    theirs = lab.nmap(family, "tcp", TCP_PORTS)
    assert ours == theirs


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_udp_states_equal_nmap(lab, scan, family):
    _proc, doc = scan
    ours = {k: v[0 if family == "ipv4" else 1] for k, v in _states(doc).items() if k[0] == "udp"}
    theirs = lab.nmap(family, "udp", UDP_PORTS)
    assert ours == theirs


def test_name_resolves_to_both_families_and_table_shows_gaps(lab):
    proc = lab.twinwall(TARGET_NAME, "--ports", "7001-7004", "--timeout", "0.5")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert f"IPv4 {T4}" in out and f"IPv6 {T6}" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  tcp/")}
    assert "GAP" in lines["tcp/7004"] and "filtered" in lines["tcp/7004"]
    assert "GAP" not in lines["tcp/7001"]
    assert "\033[" not in out  # not a TTY: no colours


def test_no_gap_exits_0_and_family_filter(lab):
    proc = lab.twinwall(f"{T4},{T6}", "--ports", "7001,7007", "--timeout", "0.5", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    proc = lab.twinwall(TARGET_NAME, "--family", "ipv6", "--ports", "7003", "--format", "json")
    doc = json.loads(proc.stdout)
    assert [(r["ipv4"], r["ipv6"]["state"]) for r in doc["results"]] == [(None, "open")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["192.0.2.0/24"], "CIDR"),
        (["192.0.2.1-9"], "ranges"),
        (["no-such-host.invalid"], "cannot resolve"),
        ([T4, "--ports", "22,70000"], "outside 1-65535"),
        ([T4, "--syn"], "not implemented"),
    ],
)
def test_errors_are_one_line_exit_2(lab, args, message):
    proc = lab.twinwall(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_snapshot_is_compared_with_the_audit(lab, tmp_path):
    from twinwall.model import (HostSnapshot, InterfaceAddress, Ipv6State, ListeningSocket,
                                RulesetText)
    from twinwall.sources.snapshot import write_snapshot

    def sock(proto, family, addr, port, v6only=None):
        return ListeningSocket(proto, family, addr, port, v6only=v6only)

    snapshot = HostSnapshot(
        hostname="target",
        sockets=[
            sock("tcp", "ipv6", "::", 7001, False),
            sock("tcp", "ipv4", "0.0.0.0", 7002),
            sock("tcp", "ipv6", "::", 7003, True),
            sock("tcp", "ipv6", "::", 7004, False),
            sock("tcp", "ipv6", "::", 7005, False),
            sock("tcp", "ipv6", "::", 7006, False),
            sock("tcp", "ipv6", "::", 7009, False),
            sock("udp", "ipv6", "::", 53, False),
            sock("udp", "ipv6", "::", 5301, False),
        ],
        addresses=[
            InterfaceAddress("tw0", "ipv4", T4, 24),
            InterfaceAddress("tw0", "ipv6", T6, 64),
        ],
        addresses_known=True,
        interfaces=["lo", "tw0"],
        ipv6=Ipv6State(enabled=True),
        rulesets=[
            RulesetText("ipv4", "iptables-save", "nft", "test", RULES4),
            RulesetText("ipv6", "iptables-save", "nft", "test", RULES6),
        ],
    )
    path = tmp_path / "host.json"
    write_snapshot(snapshot, str(path))
    proc = lab.twinwall("--snapshot", str(path), "--timeout", "0.5", "--format", "json")
    assert proc.returncode == 1, proc.stderr  # the family gaps remain
    doc = json.loads(proc.stdout)
    assert doc["disagreements"] == []
    scanned = {(r["protocol"], r["port"]) for r in doc["results"]}
    assert scanned == {(s.protocol, s.port) for s in snapshot.sockets}  # from-snapshot
    row = next(r for r in doc["results"] if (r["protocol"], r["port"]) == ("tcp", 7004))
    assert row["ipv4"]["audit"]["status"] == "open"
    assert row["ipv6"]["audit"]["status"] == "filtered"
