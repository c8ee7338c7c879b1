"""xt_addrtype as the kernel reads it (issue 10): over IPv4 the host's own addresses are LOCAL,
not UNICAST (inet_dev_addr_type reads the local table); over IPv6 UNICAST includes them
(addrtype_mt6 checks ipv6_addr_type). --limit-iface-in/out read the type on that interface's
routes: an address held by another interface is UNICAST there, not LOCAL."""

import pytest

from twinwall.analysis.context import local_routes
from twinwall.analysis.evaluator import Evaluator
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import CT_NEW, ICMP_ALL, ID_ALL, iv_contains, iv_normalize, loopback_addresses, prefix_interval
from twinwall.errors import InputError
from twinwall.model import InterfaceAddress
from twinwall.parsers.iptables_save import parse_iptables_save

ADDRS = {
    "ipv4": [("lo", "127.0.0.1", 8), ("eth0", "192.0.2.1", 24), ("eth1", "198.51.100.1", 24)],
    "ipv6": [("lo", "::1", 128), ("eth0", "2001:db8:a::1", 64), ("eth1", "2001:db8:b::1", 64)],
}


def ruleset(body, family="ipv4", policy="DROP"):
    text = f"*filter\n:INPUT {policy} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{body}\nCOMMIT\n"
    rs = parse_iptables_save(text, family)
    own = [InterfaceAddress(i, family, a, n) for i, a, n in ADDRS[family]]
    universe = InterfaceUniverse(["lo", "eth0", "eth1"] + list(rs.interface_specs))
    local = iv_normalize([prefix_interval(a, family) for _, a, _ in ADDRS[family]] + list(loopback_addresses(family)))
    ev = Evaluator([rs], family, universe, local)
    rs.local_routes = local_routes(own, family)
    return ev, universe


def verdict(body, dst, src, iif="eth0", family="ipv4", policy="DROP"):
    ev, u = ruleset(body, family, policy)
    s, d = prefix_interval(src, family), prefix_interval(dst, family)
    box = ((s,), (d,), ((6, 6),), ((40000, 40000),), ((22, 22),), ICMP_ALL, ID_ALL, ID_ALL, u.mask(iif), u.all_mask, CT_NEW)
    verdicts = {o.verdict for o in ev.local_input([box])}
    assert len(verdicts) == 1, verdicts
    return verdicts.pop()


def test_ipv4_host_address_is_local_not_unicast():
    drop_unicast = "-A INPUT -m addrtype --dst-type UNICAST -j DROP\n-A INPUT -j ACCEPT"
    assert verdict(drop_unicast, "192.0.2.1", "203.0.113.5") == "accept"
    assert verdict("-A INPUT -m addrtype ! --dst-type LOCAL -j DROP\n-A INPUT -j ACCEPT", "192.0.2.1", "203.0.113.5") == "accept"
    # the source is a remote unicast address: --src-type UNICAST matches, LOCAL does not
    assert verdict("-A INPUT -m addrtype --src-type UNICAST -j ACCEPT", "192.0.2.1", "203.0.113.5") == "accept"
    assert verdict("-A INPUT -m addrtype --src-type LOCAL -j ACCEPT", "192.0.2.1", "203.0.113.5") == "drop"
    assert verdict("-A INPUT -m addrtype ! --src-type LOCAL -j ACCEPT", "192.0.2.1", "203.0.113.5") == "accept"


def test_ipv6_unicast_includes_the_host_addresses():
    body = "-A INPUT -m addrtype --dst-type UNICAST -j DROP\n-A INPUT -j ACCEPT"
    assert verdict(body, "2001:db8:a::1", "2001:db8:c::5", family="ipv6") == "drop"
    assert verdict("-A INPUT -m addrtype --dst-type LOCAL -j ACCEPT", "2001:db8:a::1", "2001:db8:c::5", family="ipv6") == "accept"


def test_limit_iface_in_reads_the_incoming_interface():
    body = "-A INPUT -m addrtype --dst-type LOCAL --limit-iface-in -j ACCEPT"
    assert verdict(body, "192.0.2.1", "203.0.113.5", iif="eth0") == "accept"
    # eth0's address arriving on eth1 (or over lo): UNICAST on that interface's routes
    assert verdict(body, "192.0.2.1", "203.0.113.5", iif="eth1") == "drop"
    assert verdict(body, "192.0.2.1", "127.0.0.1", iif="lo") == "drop"
    assert verdict(body, "127.0.0.1", "127.0.0.1", iif="lo") == "accept"
    neg = "-A INPUT -m addrtype ! --dst-type LOCAL --limit-iface-in -j DROP\n-A INPUT -j ACCEPT"
    assert verdict(neg, "192.0.2.1", "203.0.113.5", iif="eth0") == "accept"
    assert verdict(neg, "192.0.2.1", "203.0.113.5", iif="eth1") == "drop"
    uni = "-A INPUT -m addrtype --dst-type UNICAST --limit-iface-in -j ACCEPT"
    assert verdict(uni, "192.0.2.1", "203.0.113.5", iif="eth1") == "accept"
    assert verdict(uni, "192.0.2.1", "203.0.113.5", iif="eth0") == "drop"
    v6 = "-A INPUT -m addrtype --dst-type LOCAL --limit-iface-in -j ACCEPT"
    assert verdict(v6, "2001:db8:a::1", "2001:db8:c::5", iif="eth0", family="ipv6") == "accept"
    assert verdict(v6, "2001:db8:a::1", "2001:db8:c::5", iif="eth1", family="ipv6") == "drop"


def test_limit_iface_out_and_multiport_together():
    ev, u = ruleset("-A INPUT -p tcp -m multiport --ports 22 -m addrtype --src-type LOCAL --limit-iface-out -j ACCEPT")
    rule = ev.rulesets[0].chain("filter", "INPUT").rules[0]
    # (sport 22 or dport 22) and, per outgoing interface, a source held by it
    assert len(rule.alternatives) == 2 * 3  # lo, eth0, eth1 (other interfaces: no address)


def test_broadcast_types():
    ev, _ = ruleset("-A INPUT -m addrtype --dst-type BROADCAST -j DROP")
    (alt,) = ev.rulesets[0].chain("filter", "INPUT").rules[0].alternatives
    value = dict(alt)[1]
    for a in ("192.0.2.255", "198.51.100.255", "255.255.255.255", "0.0.0.0"):
        assert iv_contains(value, prefix_interval(a, "ipv4")[0]), a
    assert not iv_contains(value, prefix_interval("192.0.2.1", "ipv4")[0])


def test_ipv6_refuses_ipv4_only_types():
    ev, _ = ruleset("-A INPUT -m addrtype --dst-type BROADCAST -j DROP", family="ipv6")
    with pytest.raises(InputError, match="does not exist for IPv6"):
        _ = ev.rulesets[0].chain("filter", "INPUT").rules


def test_offline_limit_iface_is_uncertain():
    rs = parse_iptables_save("*filter\n:INPUT DROP [0:0]\n-A INPUT -m addrtype --dst-type LOCAL --limit-iface-in -j ACCEPT\nCOMMIT\n", "ipv4")
    Evaluator([rs], "ipv4", InterfaceUniverse(["lo"]), loopback_addresses("ipv4"))
    assert any("limit-iface-in" in u for u in rs.chain("filter", "INPUT").rules[0].unknown)
