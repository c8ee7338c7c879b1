"""`twinwall fix` end to end: each seed's story fixed on a namespace host.

The server namespace gets the seed's rules (iptables-restore / ip6tables-restore, or nft -f) and
real listeners; `twinwall fix` runs inside it on the live namespace (collector, audit, proof in
a scratch namespace of its own) and must change nothing there; the candidate it prints is then
loaded into the server as the admin's script would load it (the whole iptables-restore text per
family, or the nft script). Real clients from two client namespaces (inside: 192.0.2.10 /
2001:db8:a::10, outside: 198.51.100.10 / 2001:db8:b::10) must then agree with twinwall's audit of
the fixed host, the targeted finding must be gone, and planning again must find nothing to fix.
"""

from __future__ import annotations

import json
import textwrap
from typing import Callable, Dict, List, Optional, Sequence, Tuple


from harness import IPV4, IPV6, ListenerSpec, ProbeRequest, Topology, netns_exec, probe_many

INSIDE, OUTSIDE = "inside", "outside"
FAMILIES = (IPV4, IPV6)


def rules(filter_rules: str, input_policy: str = "DROP", output_policy: str = "ACCEPT",
          ndp: bool = False) -> str:
    body = textwrap.dedent(filter_rules).strip()
    if ndp:
        body = ("-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT\n"
                "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -j ACCEPT\n" + body)
    return (f"*filter\n:INPUT {input_policy} [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT {output_policy} [0:0]\n"
            + (body + "\n" if body else "") + "COMMIT\n")


def fix(topo: Topology, *args: str) -> Tuple[int, Dict]:
    rc, out, err = topo.run_twinwall("fix", "--format", "json", *args, timeout=300)
    assert rc in (0, 1), f"twinwall fix exited {rc}: {err}"
    return rc, json.loads(out)


def saved(topo: Topology) -> Tuple[str, str]:
    """Both families' rules as the kernel prints them, counters aside."""
    def clean(t: str) -> str:
        return "\n".join(l for l in t.splitlines() if not l.startswith("#"))
    return (clean(netns_exec(topo.server, "iptables-save").stdout),
            clean(netns_exec(topo.server, "ip6tables-save").stdout))


def load_candidate(topo: Topology, doc: Dict) -> None:
    cand = doc["candidate"]
    assert cand is not None, doc["refused"]
    if cand["backend"] == "nft":
        topo.load_nft(cand["nft"])
    else:
        topo.load_iptables(cand.get("ipv4"), cand.get("ipv6"))


def reach(topo: Topology, services: Sequence[Tuple[str, int]]) -> Dict[Tuple[str, int, str, str], bool]:
    """(proto, port, family, client) -> did a real connection get through."""
    keys, reqs = [], []
    for proto, port in services:
        for fam in FAMILIES:
            for client in (INSIDE, OUTSIDE):
                keys.append((proto, port, fam, client))
                reqs.append(topo.request(client, topo.server_address(client, fam), port, proto, timeout=1.5))
    return {k: r.reachable for k, r in zip(keys, probe_many(reqs))}


def status_of(doc: Dict, proto: str, port: int, fam: str) -> str:
    """The audit's status for the service's socket that takes ``fam``."""
    seen = [s[fam]["status"] for s in doc["services"] if s["protocol"] == proto and s["port"] == port
            and s[fam]["status"] not in ("not-bound",)]
    assert seen, (proto, port, fam)
    return seen[0]


def agree(topo: Topology, audit: Dict, services: Sequence[Tuple[str, int]]) -> Dict[Tuple[str, int, str], str]:
    """Assert the real clients agree with the audit; return the statuses."""
    real = reach(topo, services)
    out = {}
    for proto, port in services:
        for fam in FAMILIES:
            st = status_of(audit, proto, port, fam)
            want = {"open": (True, True), "restricted": (True, False)}.get(st, (False, False))
            got = (real[(proto, port, fam, INSIDE)], real[(proto, port, fam, OUTSIDE)])
            assert got == want, f"{proto}/{port} {fam}: audit says {st}, real clients (inside, outside) got {got}"
            out[(proto, port, fam)] = st
    return out


def finding_ids(audit: Dict) -> List[Tuple[str, Optional[str]]]:
    return [(f["id"], f["family"]) for f in audit["findings"]]


# ---------------------------------------------------------------------------------------------


def test_seed_000_forgotten_ip6tables_mirror_and_accept_new(topology: Topology) -> None:
    # CIS 4.4.3.4: iptables done, ip6tables forgotten; ntpd on :: (udp/123), sshd on ::, exim on ::1
    topology.load_iptables(rules("""
        -A INPUT -i lo -j ACCEPT
        -A INPUT -s 127.0.0.0/8 -j DROP
        -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT
    """))
    topology.start_listeners([ListenerSpec("tcp", "::", 22, v6only=False), ListenerSpec("udp", "::", 123, v6only=False),
                              ListenerSpec("tcp", "::1", 25, v6only=True)])
    services = [("tcp", 22), ("udp", 123)]
    before = topology.audit_json()
    assert ("TW-FAMILY-GAP", IPV6) in finding_ids(before) and ("TW-NO-RULE", IPV6) in finding_ids(before)
    agree(topology, before, services)
    host_before = saved(topology)
    args = ("--finding", "TW-FAMILY-GAP", "--finding", "TW-NO-RULE")
    rc, doc = fix(topology, *args)
    assert rc == 1 and not doc["refused"], doc["refused"]
    assert saved(topology) == host_before, "twinwall fix without --apply changed the host"
    strategies = {(c["finding"], c["strategy"]) for c in doc["changes"]}
    assert strategies == {("TW-FAMILY-GAP", "mirror"), ("TW-NO-RULE", "accept-new")}
    assert doc["proof"]["ok"] and not doc["proof"]["opened"]
    assert "-p icmp " not in doc["candidate"]["ipv6"]
    load_candidate(topology, doc)
    after = topology.audit_json()
    st = agree(topology, after, services)
    assert st[("udp", 123, IPV6)] == "filtered" and st[("tcp", 22, IPV6)] == "open"
    assert not {("TW-FAMILY-GAP", IPV6), ("TW-NO-RULE", IPV6)} & set(finding_ids(after))
    rc, again = fix(topology, *args)
    assert rc == 0 and not again["changes"] and not again["refused"]


from test_audit_scenarios import _RASH_V4 as RASH_V4  # noqa: E402  (seed 001's IPv4 script, as the audit tests load it)


def test_seed_001_block_ipv6(topology: Topology) -> None:
    # Michael Rash: a careful IPv4 script, IPv6 wide open: block IPv6 altogether, loopback kept
    topology.load_iptables(RASH_V4)
    topology.start_listeners([ListenerSpec("tcp", "::", p, v6only=False) for p in (22, 53, 80)])
    services = [("tcp", 22), ("tcp", 53), ("tcp", 80)]
    rc, doc = fix(topology, "--strategy", "block-ipv6")
    assert rc == 1 and doc["changes"] and doc["changes"][0]["strategy"] == "block-ipv6", doc["refused"]
    v6 = doc["candidate"]["ipv6"]
    assert all(f":{c} DROP" in v6 for c in ("INPUT", "FORWARD", "OUTPUT"))
    assert doc["candidate"]["ipv4"] is None
    load_candidate(topology, doc)
    after = topology.audit_json()
    st = agree(topology, after, services)
    assert all(st[(p, n, IPV6)] == "filtered" for p, n in services)
    assert st[("tcp", 22, IPV4)] == "restricted"
    # loopback still accepted over IPv6 (the seed's point: do not break local services)
    lo = probe_many([ProbeRequest(topology.server, "::1", 22, "tcp", 1.5)])[0]
    assert lo.reachable, lo
    assert not [f for f in after["findings"] if f["family"] == IPV6 and f["id"] in ("TW-FAMILY-GAP", "TW-NO-RULE")]
    rc, again = fix(topology, "--strategy", "block-ipv6")
    assert not again["changes"], again["changes"]


def mail_server(topology: Topology) -> Callable[[], Dict[str, bool]]:
    """A real mail server on the outside client; the function says over which family the
    server's mail gets out to it."""
    out_ns = topology.client(OUTSIDE).ns
    topology.start_listeners([ListenerSpec("tcp", "::", 25, v6only=False)], ns=out_ns, name="tw-mx")
    mx = {fam: topology.client_address(OUTSIDE, fam) for fam in FAMILIES}

    def mail_out() -> Dict[str, bool]:
        res = probe_many([ProbeRequest(topology.server, mx[f], 25, "tcp", 1.5) for f in FAMILIES])
        return {f: r.reachable for f, r in zip(FAMILIES, res)}

    return mail_out


def test_seed_002_egress_tcp25_twinned_into_ipv6(topology: Topology) -> None:
    # Rackspace: outbound tcp/25 blocked for everyone but the mail user - in IPv4 only
    topology.load_iptables(rules("""
        -A OUTPUT -p tcp -m tcp --dport 25 -m owner --uid-owner 12345 -j ACCEPT
        -A OUTPUT -p tcp -m tcp --dport 25 -j REJECT --reject-with icmp-port-unreachable
    """, input_policy="ACCEPT"))
    mail_out = mail_server(topology)
    assert mail_out() == {IPV4: False, IPV6: True}  # the story: IPv6 was in charge
    before = topology.audit_json()
    assert "TW-EGRESS-FORWARD-DIFFER" in [f["id"] for f in before["findings"]]
    rc, doc = fix(topology, "--finding", "TW-EGRESS-FORWARD-DIFFER")
    assert rc == 1 and doc["changes"] and doc["changes"][0]["strategy"] == "egress", doc["refused"]
    assert "icmp6-port-unreachable" in doc["changes"][0]["rules"]
    load_candidate(topology, doc)
    assert mail_out() == {IPV4: False, IPV6: False}
    after = topology.audit_json()
    assert "TW-EGRESS-FORWARD-DIFFER" not in [f["id"] for f in after["findings"]]
    rc, again = fix(topology, "--finding", "TW-EGRESS-FORWARD-DIFFER")
    assert rc == 0 and not again["changes"]


SSH_INSIDE_ONLY = rules("""
    -A INPUT -i lo -j ACCEPT
    -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    -A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT
""")


def test_mirror_with_map_gives_ipv6_the_twin_prefix(topology: Topology) -> None:
    topology.load_iptables(SSH_INSIDE_ONLY)
    topology.start_listeners([ListenerSpec("tcp", "::", 22, v6only=False)])
    args = ("--finding", "TW-FAMILY-GAP", "--map", "192.0.2.0/24=2001:db8:a::/64")
    rc, doc = fix(topology, *args)
    assert rc == 1 and not doc["refused"], doc["refused"]
    load_candidate(topology, doc)
    after = topology.audit_json()
    assert agree(topology, after, [("tcp", 22)])[("tcp", 22, IPV6)] == "restricted"
    ssh6 = next(s["ipv6"] for s in after["services"] if s["port"] == 22)
    assert ssh6["allowed_sources"] == ["2001:db8:a::/64"]
    assert "TW-FAMILY-GAP" not in [f["id"] for f in after["findings"]]
    rc, again = fix(topology, *args)
    assert rc == 0 and not again["changes"]


def test_unmapped_prefix_is_refused_and_nothing_changes(topology: Topology) -> None:
    topology.load_iptables(SSH_INSIDE_ONLY)
    topology.start_listeners([ListenerSpec("tcp", "::", 22, v6only=False)])
    host_before = saved(topology)
    rc, doc = fix(topology, "--finding", "TW-FAMILY-GAP")
    assert rc == 1 and not doc["changes"] and doc["candidate"] is None
    assert any("192.0.2.0/24" in r["reason"] and "--map" in r["reason"] for r in doc["refused"]), doc["refused"]
    assert saved(topology) == host_before
    # the gap is still real: IPv6 open to both clients
    assert agree(topology, topology.audit_json(), [("tcp", 22)])[("tcp", 22, IPV6)] == "open"


NFT_HOST = """
table inet filter {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "lo" accept
        ct state established,related accept
        meta nfproto ipv4 ip saddr 192.0.2.0/24 tcp dport 22 accept
        meta nfproto ipv4 meta l4proto tcp drop
    }
}
"""


def test_nft_native_host_gets_a_twinwall_table(topology: Topology) -> None:
    topology.load_nft(NFT_HOST)
    topology.start_listeners([ListenerSpec("tcp", "::", 22, v6only=False), ListenerSpec("tcp", "::", 80, v6only=False)])
    services = [("tcp", 22), ("tcp", 80)]
    before_tables = netns_exec(topology.server, "nft", "list", "table", "inet", "filter").stdout
    args = ("--finding", "TW-FAMILY-GAP", "--map", "192.0.2.0/24=2001:db8:a::/64")
    rc, doc = fix(topology, *args)
    assert rc == 1 and not doc["refused"], doc["refused"]
    assert doc["candidate"]["backend"] == "nft" and "table inet twinwall" in doc["candidate"]["nft"]
    assert {c["owner"] for c in doc["changes"]} == {"nft"}
    load_candidate(topology, doc)
    assert netns_exec(topology.server, "nft", "list", "table", "inet", "filter").stdout == before_tables
    after = topology.audit_json()
    st = agree(topology, after, services)
    assert st[("tcp", 22, IPV6)] == "restricted" and st[("tcp", 80, IPV6)] == "filtered"
    assert "TW-FAMILY-GAP" not in [f["id"] for f in after["findings"]]
    rc, again = fix(topology, *args)
    assert rc == 0 and not again["changes"]


NFT_EGRESS = """
table inet filter {
    chain output {
        type filter hook output priority filter; policy accept;
        meta nfproto ipv4 tcp dport 25 meta skuid 12345 accept
        meta nfproto ipv4 tcp dport 25 reject with icmp type port-unreachable
    }
}
"""


def test_seed_002_egress_on_a_native_nft_host(topology: Topology) -> None:
    topology.load_nft(NFT_EGRESS)
    mail_out = mail_server(topology)
    assert mail_out() == {IPV4: False, IPV6: True}
    before_filter = netns_exec(topology.server, "nft", "list", "table", "inet", "filter").stdout
    rc, doc = fix(topology, "--finding", "TW-EGRESS-FORWARD-DIFFER")
    assert rc == 1 and doc["changes"] and doc["changes"][0]["owner"] == "nft", doc["refused"]
    load_candidate(topology, doc)
    assert netns_exec(topology.server, "nft", "list", "table", "inet", "filter").stdout == before_filter
    assert mail_out() == {IPV4: False, IPV6: False}
    assert "TW-EGRESS-FORWARD-DIFFER" not in [f["id"] for f in topology.audit_json()["findings"]]
