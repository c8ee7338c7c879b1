"""IPv6 neighbour discovery on real hosts: the firewall must pass NS/NA (ICMPv6 135/136, hop
limit 255) in and out, or every IPv6 connection times out before it meets a service rule.

Each case loads a ruleset into the server namespace (no static neighbour entries anywhere: the
client must resolve the server with NDP), starts a listener on [::]:22 (v6only), connects from
the "inside" client over IPv6 and compares with `twinwall audit`. The conntrack cases check the
kernel fact twinwall models: NDP is never tracked (UNTRACKED), so `--ctstate NEW` / `ct state
new` rules do not match it and `--ctstate UNTRACKED` does.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import pytest

from harness import IPV6, ListenerSpec, Topology

PORT = 22


def ip6(filter_rules: str, output: str = "ACCEPT") -> str:
    rules = "\n".join(line.strip() for line in filter_rules.strip().splitlines() if line.strip())
    return (
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n"
        f":OUTPUT {output} [0:0]\n" + (rules + "\n" if rules else "") + "COMMIT\n"
    )


IPTABLES_CASES = {
    # the bug: INPUT DROP, the service accepted, no ICMPv6 accept at all
    "input_drop_without_icmpv6": (ip6("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
    """), "filtered"),
    "ndp_accepted_with_hop_limit_255": (ip6("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT
        -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
    """), "open"),
    # a hop-limit rule that NDP (always 255) never meets
    "ndp_accept_for_the_wrong_hop_limit": (ip6("""
        -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-lt 255 -j ACCEPT
        -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-lt 255 -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
    """), "filtered"),
    # NDP is UNTRACKED: an ICMPv6 accept for NEW packets never sees it, an INVALID drop neither
    "icmpv6_accepted_only_when_new": (ip6("""
        -A INPUT -m conntrack --ctstate INVALID -j DROP
        -A INPUT -p ipv6-icmp -m conntrack --ctstate NEW -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
    """), "filtered"),
    "icmpv6_accepted_when_untracked": (ip6("""
        -A INPUT -m conntrack --ctstate INVALID -j DROP
        -A INPUT -p ipv6-icmp -m conntrack --ctstate UNTRACKED -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
    """), "open"),
    # input passes, but the server's own advertisements cannot leave
    "advertisements_dropped_on_output": (ip6("""
        -A INPUT -p ipv6-icmp -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
        -A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j DROP
    """), "filtered"),
}

NFT_CASES = {
    "nft_input_drop_without_icmpv6": ("""
        table inet tw {
            chain input {
                type filter hook input priority 0; policy drop;
                ct state established,related accept
                iifname "lo" accept
                tcp dport 22 accept
            }
        }
    """, "filtered"),
    "nft_ndp_accepted": ("""
        table inet tw {
            chain input {
                type filter hook input priority 0; policy drop;
                ct state established,related accept
                iifname "lo" accept
                icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
                tcp dport 22 accept
            }
        }
    """, "open"),
    "nft_icmpv6_accepted_only_when_new": ("""
        table inet tw {
            chain input {
                type filter hook input priority 0; policy drop;
                ct state established,related accept
                ct state new meta l4proto ipv6-icmp accept
                tcp dport 22 accept
            }
        }
    """, "filtered"),
}


def _service(report: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    for s in report.get("services", []):
        if s["protocol"] == "tcp" and s["port"] == PORT and s["address"] == "::":
            return s
    return None


def _run(load, want: str) -> None:
    with Topology() as topo:
        load(topo)
        topo.start_listeners([ListenerSpec("tcp", "::", PORT, v6only=True)])
        addr = topo.server_address("inside", IPV6)
        # generous timeout: neighbour resolution plus a loaded machine; a dropped NS never answers
        real = topo.probe("inside", addr, PORT, "tcp", timeout=4.0)
        report = topo.audit_json()
    reachable = "open" if want == "open" else "not reachable"
    assert (real.result == "open") == (want == "open"), f"the real client disagrees with the case ({reachable}): {real}"
    svc = _service(report)
    assert svc is not None, report.get("services")
    v6 = svc["ipv6"]
    assert v6["status"] == want, (v6, real)
    ids = {f["id"] for f in report["findings"]}
    if want == "filtered":
        assert "neighbour discovery" in v6["reason"], v6
        assert v6["decided_by"], v6
        assert "TW-ICMPV6-NDP-BLOCKED" in ids, ids
    else:
        assert "TW-ICMPV6-NDP-BLOCKED" not in ids, report["findings"]


@pytest.mark.parametrize("name", sorted(IPTABLES_CASES))
def test_ndp_ip6tables(name: str) -> None:
    rules, want = IPTABLES_CASES[name]
    _run(lambda topo: topo.load_iptables(v6_text=rules), want)


@pytest.mark.parametrize("name", sorted(NFT_CASES))
def test_ndp_nft(name: str) -> None:
    text, want = NFT_CASES[name]
    _run(lambda topo: topo.load_nft(text), want)
