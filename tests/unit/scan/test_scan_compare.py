from __future__ import annotations

import pytest

from twinwall.scan.compare import (
    agrees, build_rows, is_gap, join_audit, pair_addresses, predict, service_covers,
)
from twinwall.scan.engine import ProbeResult
from twinwall.scan.targets import Target, TargetAddress

A4, A6 = "192.0.2.1", "2001:db8:5::1"


def res(proto, port, family, state, reason="x"):
    return ProbeResult(proto, port, family, A4 if family == "ipv4" else A6, state, reason)


@pytest.mark.parametrize(
    "proto, s4, r4, s6, r6, gap",
    [
        ("tcp", "open", "syn-ack", "open", "syn-ack", False),
        ("tcp", "open", "syn-ack", "filtered", "no-response", True),
        ("tcp", "filtered", "no-response", "open", "syn-ack", True),
        ("tcp", "open", "syn-ack", "closed", "conn-refused", True),
        ("tcp", "filtered", "no-response", "closed", "conn-refused", True),
        # an ICMP port unreachable for TCP comes from a REJECT: blocked, like filtered
        ("tcp", "closed", "port-unreach", "filtered", "no-response", False),
        ("tcp", "closed", "port-unreach", "closed", "conn-refused", True),
        ("udp", "open", "udp-response", "open|filtered", "no-response", True),
        ("udp", "closed", "port-unreach", "open|filtered", "no-response", False),
        ("udp", "open|filtered", "no-response", "filtered", "admin-prohibited", False),
        ("udp", "closed", "port-unreach", "filtered", "admin-prohibited", True),
        ("tcp", "open", "syn-ack", "unreachable", "no-route", False),
    ],
)
def test_gap_rules(proto, s4, r4, s6, r6, gap):
    assert is_gap(res(proto, 1, "ipv4", s4, r4), res(proto, 1, "ipv6", s6, r6)) is gap


def test_gap_needs_both_families():
    assert is_gap(res("tcp", 1, "ipv4", "open"), None) is False


def ta(family, address, interface=None):
    return TargetAddress(family, address, "snapshot", interface)


def test_pairing_by_interface_then_order():
    v4 = [ta("ipv4", "192.0.2.1", "eth1"), ta("ipv4", "192.0.2.2", "eth0")]
    v6 = [ta("ipv6", "2001:db8::2", "eth0"), ta("ipv6", "2001:db8::9", None),
          ta("ipv6", "2001:db8::3", "eth2")]
    pairs = [(a.address if a else None, b.address if b else None)
             for a, b in pair_addresses(v4, v6)]
    assert pairs == [("192.0.2.2", "2001:db8::2"), ("192.0.2.1", "2001:db8::9"),
                     (None, "2001:db8::3")]


def test_rows_side_by_side():
    t = Target("h", [ta("ipv4", A4), ta("ipv6", A6)])
    results = [res("tcp", 22, "ipv4", "open", "syn-ack"), res("tcp", 22, "ipv6", "filtered"),
               res("tcp", 80, "ipv4", "open", "syn-ack"), res("tcp", 80, "ipv6", "open", "syn-ack")]
    rows = build_rows([t], [("tcp", 22), ("tcp", 80)], results)
    assert [(r.port, r.ipv4.state, r.ipv6.state, r.gap, r.exposed) for r in rows] == [
        (22, "open", "filtered", True, True), (80, "open", "open", False, False)
    ]
    d = rows[0].to_dict()
    assert d == {"host": "h", "protocol": "tcp", "port": 22,
                 "ipv4": {"address": A4, "state": "open", "reason": "syn-ack"},
                 "ipv6": {"address": A6, "state": "filtered", "reason": "x"},
                 "gap": True, "exposed": True}


def test_single_family_target_has_null_other_family():
    t = Target("h", [ta("ipv6", A6)])
    (row,) = build_rows([t], [("tcp", 22)], [res("tcp", 22, "ipv6", "open")])
    assert row.ipv4 is None and row.to_dict()["ipv4"] is None and not row.gap


def svc(proto, address, port, s4, s6, **extra4):
    return {"protocol": proto, "address": address, "port": port,
            "ipv4": dict({"status": s4}, **extra4), "ipv6": {"status": s6}}


def test_service_covers():
    assert service_covers("0.0.0.0", A4) and service_covers("::", A6) and service_covers("*", A4)
    assert service_covers(A4, A4) and service_covers("::ffff:192.0.2.1", A4)
    assert not service_covers("192.0.2.99", A4)
    assert not service_covers("127.0.0.1", A4)


def test_prediction_takes_the_widest_covering_service():
    # sshd twice: 0.0.0.0:22 and [::]:22 v6only, as ss shows a default Debian sshd
    services = [svc("tcp", "0.0.0.0", 22, "open", "not-bound"),
                svc("tcp", "::", 22, "not-bound", "filtered"),
                svc("tcp", "127.0.0.1", 25, "local-only", "not-bound"),
                svc("udp", "::", 22, "open", "open")]
    assert predict(services, "ipv4", A4, "tcp", 22)[0] == "open"
    assert predict(services, "ipv6", A6, "tcp", 22)[0] == "filtered"
    assert predict(services, "ipv4", A4, "tcp", 25) == ("not-bound", None)
    assert predict(services, "ipv4", A4, "tcp", 80) == ("not-bound", None)
    assert predict(services, "ipv4", A4, "tcp", 80, sockets_known=False) == (None, None)


@pytest.mark.parametrize(
    "proto, status, state, ok",
    [
        ("tcp", "open", "open", True),
        ("tcp", "open", "filtered", False),
        ("tcp", "open", "closed", False),
        ("udp", "open", "open|filtered", True),
        ("udp", "open", "closed", False),
        ("tcp", "filtered", "open", False),
        ("tcp", "filtered", "filtered", True),
        ("tcp", "filtered", "closed", True),  # REJECT
        ("tcp", "not-bound", "open", False),
        ("tcp", "not-bound", "closed", True),
        ("tcp", "local-only", "open", False),
        ("tcp", "disabled", "filtered", True),
        ("tcp", "restricted", "open", True),
        ("tcp", "restricted", "filtered", True),
        ("tcp", "restricted", "closed", True),
        ("tcp", "open", "unreachable", None),
    ],
)
def test_agreement(proto, status, state, ok):
    assert agrees(proto, status, state) is ok


def test_join_lists_every_disagreement_with_the_audit_identity():
    t = Target("web1", [ta("ipv4", A4), ta("ipv6", A6)])
    audit = {"services": [
        svc("tcp", "::", 8080, "filtered", "filtered"),  # audit thinks both are filtered
        svc("tcp", "0.0.0.0", 22, "open", "not-bound"),
        svc("tcp", "::", 443, "restricted", "open", allowed_sources=["198.51.100.0/24"]),
    ]}
    results = [
        res("tcp", 8080, "ipv4", "filtered"), res("tcp", 8080, "ipv6", "open", "syn-ack"),
        res("tcp", 22, "ipv4", "open", "syn-ack"), res("tcp", 22, "ipv6", "closed"),
        res("tcp", 443, "ipv4", "filtered"), res("tcp", 443, "ipv6", "open", "syn-ack"),
        res("tcp", 9999, "ipv4", "open", "syn-ack"), res("tcp", 9999, "ipv6", "open", "syn-ack"),
    ]
    rows = build_rows([t], [("tcp", 8080), ("tcp", 22), ("tcp", 443), ("tcp", 9999)], results)
    dis = join_audit(rows, audit)
    assert [(d["port"], d["family"], d["address"], d["audit"], d["scan"]) for d in dis] == [
        (8080, "ipv6", "::", "filtered", "open"),
        (9999, "ipv4", None, "not-bound", "open"),
        (9999, "ipv6", None, "not-bound", "open"),
    ]
    assert dis[0]["message"] == f"audit said filtered, scan saw open over IPv6 ({A6})"
    assert dis[0]["host"] == "web1" and dis[0]["target"] == A6 and dis[0]["protocol"] == "tcp"
    by_port = {r.port: r for r in rows}
    restricted = by_port[443].audit["ipv4"]
    assert restricted["status"] == "restricted" and restricted["agrees"] is True
    assert restricted["note"] == "restricted (depends on source)"
    assert restricted["allowed_sources"] == ["198.51.100.0/24"]
    # 0.0.0.0:22 takes no IPv6: open over IPv4 and closed over IPv6 is where it listens, not a
    # firewall letting one family through
    assert by_port[22].audit["ipv6"] == {"status": "not-bound", "address": "0.0.0.0", "agrees": True,
                                         "note": "not a family gap: no socket listens over this family"}
    assert by_port[22].gap is False and by_port[22].exposed is False
    assert by_port[443].gap is True  # filtered over IPv4, open over IPv6: a real gap
    assert by_port[8080].to_dict()["ipv6"]["audit"]["agrees"] is False


def test_join_with_the_real_audit_report():
    from twinwall.analysis import audit as audit_mod
    from twinwall.model import HostSnapshot, Ipv6State, ListeningSocket, RulesetText

    rules6 = ("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
              "-A INPUT -i lo -j ACCEPT\n-A INPUT -p ipv6-icmp -j ACCEPT\n-A INPUT -p tcp --dport 80 -j ACCEPT\nCOMMIT\n")
    rules4 = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
              "COMMIT\n")
    snap = HostSnapshot(
        hostname="web1",
        sockets=[ListeningSocket("tcp", "ipv6", "::", 22, v6only=False),
                 ListeningSocket("tcp", "ipv6", "::", 80, v6only=False)],
        ipv6=Ipv6State(enabled=True),
        rulesets=[RulesetText("ipv4", "iptables-save", "nft", "t", rules4),
                  RulesetText("ipv6", "iptables-save", "nft", "t", rules6)],
    )
    audit = audit_mod.audit_snapshot(snap).to_json()
    t = Target("web1", [ta("ipv4", A4), ta("ipv6", A6)])
    # what a scan of that host would see, and one surprise: 22 open over IPv6
    results = [res("tcp", 22, "ipv4", "open", "syn-ack"), res("tcp", 22, "ipv6", "open", "syn-ack"),
               res("tcp", 80, "ipv4", "open", "syn-ack"), res("tcp", 80, "ipv6", "open", "syn-ack")]
    rows = build_rows([t], [("tcp", 22), ("tcp", 80)], results)
    dis = join_audit(rows, audit)
    assert [(d["port"], d["family"], d["audit"], d["scan"], d["address"]) for d in dis] == [
        (22, "ipv6", "filtered", "open", "::")
    ]


def test_loopback_only_and_unbound_sockets_are_not_family_gaps():
    t = Target("web1", [ta("ipv4", A4), ta("ipv6", A6)])
    audit = {"services": [
        svc("tcp", "0.0.0.0", 25, "open", "not-bound"),
        svc("tcp", "::1", 25, "not-bound", "local-only"),
        svc("tcp", "::", 53, "open", "open"),
    ]}
    results = [res("tcp", 25, "ipv4", "open", "syn-ack"), res("tcp", 25, "ipv6", "closed", "conn-refused"),
               res("tcp", 53, "ipv4", "open", "syn-ack"), res("tcp", 53, "ipv6", "filtered", "no-response")]
    rows = build_rows([t], [("tcp", 25), ("tcp", 53)], results)
    assert [r.gap for r in rows] == [True, True]  # the scan alone cannot tell
    join_audit(rows, audit)
    smtp, dns = rows
    assert (smtp.gap, smtp.exposed) == (False, False)
    # ([::1]:25 does not take connections for the scanned address: the 0.0.0.0 socket decides)
    assert smtp.audit["ipv6"]["status"] == "not-bound"
    assert smtp.audit["ipv6"]["note"] == "not a family gap: no socket listens over this family"
    # the audit expected 53 open over IPv6 and the scan saw it filtered: still a gap
    assert dns.gap is True
