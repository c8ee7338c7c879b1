"""IPv6 disabled on some interfaces only (net.ipv6.conf.IFACE.disable_ipv6=1): the kernel drops
IPv6 arriving there, whatever the firewall says. The audit reads the per-interface state from
/proc/sys and says so (status `disabled`, the sysctl named), instead of `filtered` blaming the
firewall (the old verdict)."""

from __future__ import annotations

from harness import IPV6, ListenerSpec, Topology, sysctl_set

OPEN_V6 = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def _ssh6(report):
    return next(s for s in report["services"] if s["port"] == 22 and s["address"] == "::")["ipv6"]


def test_ipv6_off_on_one_interface_then_on_both() -> None:
    with Topology() as topo:
        topo.load_iptables(v6_text=OPEN_V6)
        sysctl_set(topo.server, {"net.ipv6.conf.eth-b.disable_ipv6": 1})
        topo.start_listeners([ListenerSpec("tcp", "::", 22, v6only=True)])
        inside = topo.probe("inside", topo.server_address("inside", IPV6), 22, "tcp", timeout=4.0)
        outside = topo.probe("outside", topo.server_address("outside", IPV6), 22, "tcp", timeout=4.0)
        report = topo.audit_json()
        assert inside.reachable and not outside.reachable, (inside, outside)
        assert report["ipv6"]["enabled"] is True
        v = _ssh6(report)
        # open to every client on the interfaces that have IPv6; eth-b is not the firewall's doing
        assert v["status"] == "open", v

        sysctl_set(topo.server, {"net.ipv6.conf.eth-a.disable_ipv6": 1})
        inside = topo.probe("inside", topo.server_address("inside", IPV6), 22, "tcp", timeout=4.0)
        report = topo.audit_json()
    assert not inside.reachable, inside
    v = _ssh6(report)
    assert v["status"] == "disabled" and "disable_ipv6" in v["reason"], v
    assert "eth-a" in v["reason"] and "eth-b" in v["reason"], v
