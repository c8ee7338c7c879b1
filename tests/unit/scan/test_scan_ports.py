from __future__ import annotations

import pytest

from twinwall.errors import InputError
from twinwall.model import HostSnapshot, ListeningSocket
from twinwall.scan.ports import TOP_TCP, TOP_UDP, parse_port_spec, snapshot_ports


def test_single_ports_lists_and_ranges_are_tcp_by_default():
    assert parse_port_spec("22,80,8000-8002") == [
        ("tcp", 22), ("tcp", 80), ("tcp", 8000), ("tcp", 8001), ("tcp", 8002)
    ]


def test_udp_flag_adds_udp_for_unprefixed_items_only():
    assert parse_port_spec("53,tcp/22", udp=True) == [("tcp", 22), ("tcp", 53), ("udp", 53)]


def test_protocol_prefixes():
    assert parse_port_spec("tcp/22, udp/53,UDP/123") == [("tcp", 22), ("udp", 53), ("udp", 123)]


def test_full_range_and_duplicates():
    probes = parse_port_spec("1-65535,22")
    assert len(probes) == 65535 and probes[0] == ("tcp", 1) and probes[-1] == ("tcp", 65535)


def test_top_lists():
    assert 90 <= len(TOP_TCP) <= 110 and len(set(TOP_TCP)) == len(TOP_TCP)
    assert {22, 80, 443, 3389} <= set(TOP_TCP)
    assert {53, 123, 161} <= set(TOP_UDP)
    assert parse_port_spec("top") == [("tcp", p) for p in sorted(TOP_TCP)]
    with_udp = parse_port_spec("top", udp=True)
    assert ("udp", 53) in with_udp and ("tcp", 22) in with_udp
    assert all(proto == "udp" for proto, _ in parse_port_spec("udp/top"))


def test_from_snapshot_takes_the_exact_pairs():
    snap = HostSnapshot(sockets=[
        ListeningSocket("tcp", "ipv4", "0.0.0.0", 22),
        ListeningSocket("tcp", "ipv6", "::", 22, v6only=True),
        ListeningSocket("udp", "ipv6", "::", 53, v6only=False),
    ])
    pairs = snapshot_ports(snap)
    assert pairs == [("tcp", 22), ("udp", 53)]
    assert parse_port_spec("from-snapshot", snapshot_ports=pairs) == [("tcp", 22), ("udp", 53)]
    assert parse_port_spec("tcp/from-snapshot", snapshot_ports=pairs) == [("tcp", 22)]
    assert parse_port_spec("from-snapshot,80", snapshot_ports=pairs) == [
        ("tcp", 22), ("tcp", 80), ("udp", 53)
    ]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty"),
        ("0", "outside 1-65535"),
        ("65536", "outside 1-65535"),
        ("100-10", "backwards"),
        ("22,,80", "empty item"),
        ("http", "not a port number"),
        ("sctp/22", "tcp or udp"),
        ("-5", "not a port number"),
        ("from-snapshot", "needs --snapshot"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(InputError, match=message):
        parse_port_spec(spec)


def test_from_snapshot_with_no_sockets_selects_nothing():
    with pytest.raises(InputError, match="selects no ports"):
        parse_port_spec("from-snapshot", snapshot_ports=[])
