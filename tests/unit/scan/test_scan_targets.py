from __future__ import annotations

import socket

import pytest

from twinwall.errors import InputError
from twinwall.model import HostSnapshot, InterfaceAddress
from twinwall.scan.targets import build_targets, resolve_host, sockaddr_for


def table_resolver(table):
    """A name table standing in for DNS: the code under test is the handling of its answers."""
    def resolve(name):
        if name not in table:
            raise InputError(f"cannot resolve {name}: Name or service not known")
        return table[name]
    return resolve


RESOLVE = table_resolver({
    "dual.example": [(socket.AF_INET, "192.0.2.10"), (socket.AF_INET6, "2001:db8::10"),
                     (socket.AF_INET, "192.0.2.10")],
    "v4only.example": [(socket.AF_INET, "198.51.100.7")],
})


def addrs(target):
    return [(a.family, a.address, a.source) for a in target.addresses]


def test_literals():
    assert addrs(resolve_host("192.0.2.1")) == [("ipv4", "192.0.2.1", "literal")]
    assert addrs(resolve_host("2001:DB8::1")) == [("ipv6", "2001:db8::1", "literal")]
    assert addrs(resolve_host("[2001:db8::1]")) == [("ipv6", "2001:db8::1", "literal")]
    assert addrs(resolve_host("::ffff:192.0.2.3")) == [("ipv4", "192.0.2.3", "literal")]


def test_names_resolve_to_both_families_without_duplicates():
    t = resolve_host("dual.example", RESOLVE)
    assert addrs(t) == [("ipv4", "192.0.2.10", "dns"), ("ipv6", "2001:db8::10", "dns")]


def test_comma_joined_addresses_are_one_host():
    t = resolve_host("192.0.2.1,2001:db8::1", RESOLVE)
    assert t.host == "192.0.2.1,2001:db8::1"
    assert [a.family for a in t.addresses] == ["ipv4", "ipv6"]


@pytest.mark.parametrize(
    "host, message",
    [
        ("192.0.2.0/24", "CIDR"),
        ("2001:db8::/64", "CIDR"),
        ("192.0.2.1,192.0.2.0/28", "CIDR"),
        ("192.0.2.1-20", "ranges"),
        ("192.0.2.*", "wildcards"),
        ("*.example", "wildcards"),
        ("", "empty"),
        ("192.0.2.1,", "empty address"),
        ("nowhere.example", "cannot resolve"),
    ],
)
def test_refused_hosts(host, message):
    with pytest.raises(InputError, match=message):
        build_targets([host], resolver=RESOLVE)


def test_hyphenated_names_are_names():
    t = resolve_host("v4only.example", RESOLVE)
    assert addrs(t) == [("ipv4", "198.51.100.7", "dns")]
    with pytest.raises(InputError, match="cannot resolve my-host"):
        resolve_host("my-host", RESOLVE)


def test_family_filter():
    (t,) = build_targets(["dual.example"], family="ipv6", resolver=RESOLVE)
    assert [a.address for a in t.addresses] == ["2001:db8::10"]
    with pytest.raises(InputError, match="no ipv6 address"):
        build_targets(["v4only.example"], family="ipv6", resolver=RESOLVE)


def snapshot():
    return HostSnapshot(
        hostname="web1",
        addresses=[
            InterfaceAddress("lo", "ipv4", "127.0.0.1", 8, "host"),
            InterfaceAddress("lo", "ipv6", "::1", 128, "host"),
            InterfaceAddress("eth0", "ipv4", "192.0.2.10", 24),
            InterfaceAddress("eth0", "ipv6", "fe80::1", 64, "link"),
            InterfaceAddress("eth0", "ipv6", "2001:db8::10", 64),
            InterfaceAddress("eth1", "ipv6", "2001:db8:1::10", 64),
        ],
        addresses_known=True,
    )


def test_snapshot_supplies_all_global_addresses():
    (t,) = build_targets(["v4only.example"], snapshot=snapshot(), resolver=RESOLVE)
    assert t.host == "v4only.example"
    assert [(a.address, a.source, a.interface) for a in t.addresses] == [
        ("198.51.100.7", "dns", None),
        ("192.0.2.10", "snapshot", "eth0"),
        ("2001:db8::10", "snapshot", "eth0"),
        ("2001:db8:1::10", "snapshot", "eth1"),
    ]


def test_snapshot_alone_is_a_target_and_merges_duplicates():
    (t,) = build_targets([], snapshot=snapshot())
    assert t.host == "web1" and len(t.addresses) == 3
    (t,) = build_targets(["dual.example"], snapshot=snapshot(), resolver=RESOLVE)
    assert len(t.addresses) == 3
    assert {a.interface for a in t.addresses} == {"eth0", "eth1"}


def test_snapshot_describes_one_host():
    with pytest.raises(InputError, match="at most one HOST"):
        build_targets(["192.0.2.1", "192.0.2.2"], snapshot=snapshot())


def test_nothing_to_scan():
    with pytest.raises(InputError, match="at least one HOST"):
        build_targets([])


def test_sockaddr():
    (t,) = build_targets(["192.0.2.1,2001:db8::1"])
    assert sockaddr_for(t.addresses[0], 22) == (socket.AF_INET, ("192.0.2.1", 22))
    assert sockaddr_for(t.addresses[1], 22) == (socket.AF_INET6, ("2001:db8::1", 22, 0, 0))
