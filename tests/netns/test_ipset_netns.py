"""`-m set --match-set` against a real ipset in the namespace host: `twinwall collect` saves the
sets (`ipset save`) and the audit decides the match from them (it was an undecidable `?`)."""

from __future__ import annotations

from harness import IPV4, ListenerSpec, Topology, netns_exec

V4 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m set --match-set tw_allow src -j ACCEPT
COMMIT
"""


def test_set_match_is_decided_from_the_collected_sets() -> None:
    with Topology() as topo:
        inside = topo.client_address("inside", IPV4)
        netns_exec(topo.server, "ipset", "create", "tw_allow", "hash:net")
        netns_exec(topo.server, "ipset", "add", "tw_allow", f"{inside}/32")
        topo.load_iptables(v4_text=V4)
        topo.start_listeners([ListenerSpec("tcp", "0.0.0.0", 22)])
        real = {r.request.client_ns: r for r in topo.probe_many(
            [topo.request(c, topo.server_address(c, IPV4), 22, "tcp", timeout=3.0) for c in ("inside", "outside")])}
        report = topo.audit_json()
    assert real[topo.clients["inside"].ns].reachable and not real[topo.clients["outside"].ns].reachable, real
    v = next(s for s in report["services"] if s["port"] == 22)["ipv4"]
    assert v["status"] == "restricted" and not v["uncertain"], v
    assert v["allowed_sources"] == [f"{inside}/32"], v
