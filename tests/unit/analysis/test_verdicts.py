"""Verdicts that say what they mean: who gets through (``allowed`` combinations, exact source
lists), and the table cells and findings that say it in a few words."""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import sys

import pytest

from _snapshots import dump_snapshot
from test_evaluator import HOST, concrete_walk, evaluator, random_ruleset
from twinwall.analysis.address_sets import inline_address_sets
from twinwall.analysis.audit import audit_snapshot
from twinwall.netfilter.packetset import CT_NEW, NDIMS, DPORT, DST, IIF, PROTO, SPORT, SRC, STATE
from twinwall.model import InterfaceAddress
from twinwall.report.text import render_audit

FILTER = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n{}\nCOMMIT\n"
SS = """\
Netid State  Recv-Q Send-Q Local Address:Port Peer Address:Port
tcp   LISTEN 0      128    *:22              *:*
"""
IFACES = ["lo", "eth0", "eth1", "wlan0"]
ADDRESSES = [InterfaceAddress("eth0", "ipv4", HOST, 24), InterfaceAddress("eth0", "ipv6", "2001:db8:1::1", 64),
             InterfaceAddress("lo", "ipv4", "127.0.0.1", 8, "host")]


def audit(v4_rules, v6_rules, ss=SS):
    # (IPv6 with neighbour discovery accepted: without it no IPv6 client gets anywhere)
    v6_rules = "-A INPUT -p ipv6-icmp -j ACCEPT\n" + v6_rules
    snap = dump_snapshot(FILTER.format(v4_rules), FILTER.format(v6_rules), ss, addresses=ADDRESSES, interfaces=IFACES)
    return audit_snapshot(snap)


def service(report, port=22):
    return next(s for s in report.services if s.socket.port == port)


def row(report, port=22):
    """The table line of a port, cells split on runs of two spaces."""
    text = render_audit(report)
    line = next(l for l in text.splitlines() if l.startswith(("tcp ", "udp ")) and f":{port} " in l)
    return [c.strip() for c in line.split("  ") if c.strip()]


def covered_by(cidrs, address):
    a = ipaddress.ip_address(address)
    return any(a in ipaddress.ip_network(c) for c in cidrs)


def test_everything_except_one_address_says_so():
    report = audit("-A INPUT -p tcp --dport 22 -j ACCEPT",
                   "-A INPUT -s 2001:db8::1/128 -j DROP\n-A INPUT -p tcp --dport 22 -j ACCEPT")
    v6 = service(report).verdicts["ipv6"]
    assert v6.status == "restricted"
    assert v6.summary() == "restricted (all except 2001:db8::1)"
    # (the severity is the findings' business: only the cells are checked here)
    assert row(report)[:5] == ["tcp", "*:22", "-", "open", "restricted (all except 2001:db8::1)"]
    gap = next(f for f in report.findings if f.id == "TW-FAMILY-GAP")
    assert "but restricted (all except 2001:db8::1) over IPv6" in gap.message
    doc = v6.to_json()
    assert doc["denied_sources"] == ["2001:db8::1/128"]
    # exact and usable: every CIDR, no "... N more" placeholder, and it holds every remote
    # address but the one
    sources = doc["allowed_sources"]
    assert all("/" in c for c in sources) and len(sources) == 128
    nets = [ipaddress.ip_network(c) for c in sources]
    assert sum(n.num_addresses for n in nets) == 2 ** 128 - 1
    assert not covered_by(sources, "2001:db8::1")
    for a in ("2001:db8::", "2001:db8::2", "2001:db8:ffff::1", "2a00::1", "fe80::1", "2001:db7:ffff::"):
        assert covered_by(sources, a), a
    assert doc["allowed"] == [{"sources": sources, "interfaces": ["*"], "source_ports": ["*"]}]


def test_a_source_allowed_on_one_interface_only_is_one_combination():
    report = audit("-A INPUT -i eth0 -s 192.0.2.0/24 -p tcp --dport 22 -j ACCEPT\n"
                   "-A INPUT -i eth1 -s 198.51.100.0/24 -p tcp --dport 22 -j ACCEPT", "")
    v4 = service(report).verdicts["ipv4"]
    # the old lists allow both sources over both interfaces: they cannot be combined
    assert v4.allowed_sources == ["192.0.2.0/24", "198.51.100.0/24"]
    assert v4.allowed_interfaces == ["eth0", "eth1"]
    assert v4.to_json()["allowed"] == [
        {"sources": ["192.0.2.0/24"], "interfaces": ["eth0"], "source_ports": ["*"]},
        {"sources": ["198.51.100.0/24"], "interfaces": ["eth1"], "source_ports": ["*"]},
    ]
    assert row(report)[3] == "restricted (192.0.2.0/24 via eth0; 198.51.100.0/24 via eth1)"


def test_a_restriction_by_source_port_only_names_the_port():
    report = audit("-A INPUT -p tcp -m multiport --ports 3000 -j ACCEPT", "-A INPUT -p tcp --dport 22 -j ACCEPT")
    v4 = service(report).verdicts["ipv4"]
    assert v4.status == "restricted" and v4.allowed_source_ports == ["3000"]
    assert row(report)[:5] == ["tcp", "*:22", "-", "restricted (source port 3000)", "open"]
    gap = next(f for f in report.findings if f.id == "TW-FAMILY-GAP")
    assert "is open over IPv6 but restricted (source port 3000) over IPv4" in gap.message
    assert v4.to_json()["allowed"] == [{"sources": ["0.0.0.0/0"], "interfaces": ["*"], "source_ports": ["3000"]}]


def test_combinations_are_widened_past_what_an_earlier_rule_carved():
    """The evaluator leaves later rules 'every source port but 3000': the combination of the
    eth1 accept is still every port, because 3000 is accepted anyway."""
    report = audit("-A INPUT -p tcp -m multiport --ports 3000 -j ACCEPT\n"
                   "-A INPUT -i eth0 -s 192.0.2.0/24 -p tcp --dport 22 -j ACCEPT\n"
                   "-A INPUT -i eth1 -p tcp --dport 22 -j ACCEPT", "")
    allowed = service(report).verdicts["ipv4"].to_json()["allowed"]
    assert allowed == [
        {"sources": ["0.0.0.0/0"], "interfaces": ["*"], "source_ports": ["3000"]},
        {"sources": ["0.0.0.0/0"], "interfaces": ["eth1"], "source_ports": ["*"]},
        {"sources": ["192.0.2.0/24"], "interfaces": ["eth0"], "source_ports": ["*"]},
    ]
    assert row(report)[3] == "restricted (source port 3000; via eth1; +1 more)"


def test_open_and_filtered_combinations():
    report = audit("-A INPUT -p tcp --dport 22 -j ACCEPT", "")
    svc = service(report)
    assert svc.verdicts["ipv4"].to_json()["allowed"] == [
        {"sources": ["0.0.0.0/0"], "interfaces": ["*"], "source_ports": ["*"]}]
    assert svc.verdicts["ipv6"].status == "filtered" and svc.verdicts["ipv6"].to_json()["allowed"] == []


def test_json_carries_allowed_through_the_cli(tmp_path):
    (tmp_path / "v4").write_text(FILTER.format("-A INPUT -i eth0 -s 192.0.2.0/24 -p tcp --dport 22 -j ACCEPT"))
    (tmp_path / "ss").write_text(SS)
    docs = []
    for extra in ([], ["--verbose"]):
        proc = subprocess.run([sys.executable, "-m", "twinwall", "audit", "--iptables", str(tmp_path / "v4"),
                               "--sockets", str(tmp_path / "ss"), "--format", "json"] + extra,
                              capture_output=True, text=True)
        docs.append(json.loads(proc.stdout))
    compact, verbose = docs
    v4 = verbose["services"][0]["ipv4"]
    assert v4["allowed"] == [{"sources": ["192.0.2.0/24"], "interfaces": ["eth0"], "source_ports": ["*"]}]
    # the compact document names the same list by its index in address_sets
    sources = compact["services"][0]["ipv4"]["allowed"][0]["sources"]
    assert compact["address_sets"][sources] == ["192.0.2.0/24"]
    assert inline_address_sets(compact) == verbose


def _in(combo, src, iif, sport):
    return (covered_by(combo["sources"], src)
            and (combo["interfaces"] == ["*"] or iif in combo["interfaces"])
            and (combo["source_ports"] == ["*"] or any(
                int(r.split("-")[0]) <= sport <= int(r.split("-")[-1]) for r in combo["source_ports"])))


@pytest.mark.parametrize("seed", range(40))
def test_allowed_combinations_are_exactly_the_accepted_packets(seed):
    """Against a packet-by-packet walk of random rulesets: a packet is accepted exactly when
    one combination holds its source, interface and source port."""
    rng = random.Random(seed)
    text = random_ruleset(rng)
    ev, u = evaluator(text, ifaces=tuple(IFACES))
    rs = ev.rulesets[0]
    policy = rs.chain("filter", "INPUT").policy.lower()
    ports = range(20, 31)
    ss = "Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port\n" + "".join(
        f"{p}   {state} 0 128 0.0.0.0:{port} 0.0.0.0:*\n" for p, state in (("tcp", "LISTEN"), ("udp", "UNCONN"))
        for port in ports)
    snap = dump_snapshot(text, None, ss, addresses=ADDRESSES, interfaces=IFACES)
    report = audit_snapshot(snap)
    combos = {(s.socket.protocol, s.socket.port): s.verdicts["ipv4"].to_json()["allowed"] for s in report.services}
    for _ in range(300):
        proto = rng.choice(["tcp", "udp"])
        port = rng.choice(ports)
        src = rng.choice(["198.51.100." + str(rng.randint(0, 255)), "203.0.113." + str(rng.randint(0, 3))])
        sport = rng.choice([rng.randint(20, 35), rng.randint(1024, 65535)])
        iif = rng.choice(["eth0", "eth1", "wlan0"])
        pkt = [None] * NDIMS
        pkt[SRC] = int(ipaddress.ip_address(src))
        pkt[DST] = int(ipaddress.ip_address(HOST))
        pkt[PROTO] = 6 if proto == "tcp" else 17
        pkt[SPORT], pkt[DPORT], pkt[IIF], pkt[STATE] = sport, port, u.mask(iif), CT_NEW
        want = (concrete_walk(rs, "INPUT", pkt) or policy) == "accept"
        got = any(_in(c, src, iif, sport) for c in combos[(proto, port)])
        assert got == want, (text, proto, port, src, iif, sport, combos[(proto, port)])


def test_everyone_but_a_blocklist_is_the_whole_space_except_it():
    # 12 scattered IPv6 addresses dropped: ~1,100 CIDRs of "everyone else", 12 the short way
    blocked = [f"2001:db8:{i:x}00::{i + 1}" for i in range(12)]
    drops = "\n".join(f"-A INPUT -s {a}/128 -j DROP" for a in blocked)
    report = audit("-A INPUT -p tcp --dport 22 -j ACCEPT", drops + "\n-A INPUT -p tcp --dport 22 -j ACCEPT")
    v6 = service(report).verdicts["ipv6"]
    doc = v6.to_json()
    assert v6.status == "restricted" and doc["allowed_sources"] == ["::/0"]
    assert doc["allowed_sources_except"] == [f"{ipaddress.ip_address(a)}/128" for a in blocked] == doc["denied_sources"]
    (combo,) = doc["allowed"]
    assert combo["sources"] == ["::/0"] and combo["sources_except"] == doc["allowed_sources_except"]
    assert "allowed_sources_except" not in service(report).verdicts["ipv4"].to_json()
    from twinwall.report.formats.html import _verdict_cell
    assert "all except 2001:db8::1/128, 2001:db8:100::2/128 and 10 more" in _verdict_cell(doc)
    # the table says it alike: the first addresses left out, not the first blocks let in
    assert v6.summary() == "restricted (all except 2001:db8::1,2001:db8:100::2,...)"


def test_the_compact_document_writes_a_blocklist_once():
    """twinwall.audit/2: the blocked addresses, which the verdict lists three times (denied,
    allowed except, the combination's except), are one entry of address_sets; inlined, the
    document is the /1 one --verbose writes."""
    blocked = [f"2001:db8:{i:x}00::{i + 1}" for i in range(12)]
    drops = "\n".join(f"-A INPUT -s {a}/128 -j DROP" for a in blocked)
    report = audit("-A INPUT -p tcp --dport 22 -j ACCEPT", drops + "\n-A INPUT -p tcp --dport 22 -j ACCEPT")
    compact, verbose = report.to_json(), report.to_json(verbose=True)
    assert (compact["schema"], verbose["schema"]) == ("twinwall.audit/2", "twinwall.audit/1")
    assert "address_sets" not in verbose
    v6 = service_json(compact)["ipv6"]
    refs = {v6["denied_sources"], v6["allowed_sources_except"], v6["allowed"][0]["sources_except"]}
    assert len(refs) == 1 and compact["address_sets"][refs.pop()] == [f"{ipaddress.ip_address(a)}/128" for a in blocked]
    table = compact["address_sets"]
    assert len(table) == len({tuple(x) for x in table})  # each distinct list once
    assert all(isinstance(v6[k], int) for k in ("allowed_sources", "denied_sources", "allowed_addresses"))
    assert inline_address_sets(compact) == verbose
    assert inline_address_sets(verbose) is verbose


def service_json(doc):
    return next(s for s in doc["services"] if s["port"] == 22)


def test_folding_the_martians_in_is_decided_as_the_whole_count_would():
    """_folding_shortens counts only near the martian ranges: it must answer as counting the
    whole set with and without them does."""
    import random

    from twinwall.analysis.verdicts import _folding_shortens, _martians
    from twinwall.netfilter.packetset import cidr_count, iv_normalize, iv_or

    rng = random.Random(7)
    for family, bits in (("ipv4", 32), ("ipv6", 128)):
        edges = [x for lo, hi in _martians(family) for x in (lo, hi)]
        for _ in range(300):
            pairs = []
            for _ in range(rng.randint(1, 12)):
                at = rng.choice(edges) + rng.randint(-3, 3) if rng.random() < 0.7 else rng.randrange(1 << bits)
                lo = max(0, min(at, (1 << bits) - 1))
                pairs.append((lo, min(lo + rng.choice([0, 1, 5, 255, 1 << 20]), (1 << bits) - 1)))
            a = iv_normalize(pairs)
            assert _folding_shortens(a, family) == (cidr_count(iv_or(a, _martians(family))) < cidr_count(a)), (family, a)
