"""NAT to the host itself: `REDIRECT --to-ports 22` exposes the redirected port though nothing
listens on it. The audit gives it a row (it had none, so a scan disagreed with the audit), open
from everywhere, or restricted to the interface the nat rule names (`-i eth-a`). Real clients on
two links check both."""

from __future__ import annotations

from harness import IPV4, ListenerSpec, Topology

V4 = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 2222 -j REDIRECT --to-ports 22
-A PREROUTING -i eth-a -p tcp -m tcp --dport 2223 -j REDIRECT --to-ports 22
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""


def test_redirect_to_the_host_has_a_row_the_clients_agree_with() -> None:
    with Topology() as topo:
        topo.load_iptables(v4_text=V4)
        topo.start_listeners([ListenerSpec("tcp", "0.0.0.0", 22)])
        reqs = [topo.request(c, topo.server_address(c, IPV4), port, "tcp", timeout=4.0)
                for c in ("inside", "outside") for port in (2222, 2223)]
        real = {(r.request.client_ns, r.request.port): r for r in topo.probe_many(reqs)}
        report = topo.audit_json()
    inside, outside = topo.clients["inside"].ns, topo.clients["outside"].ns
    assert real[(inside, 2222)].reachable and real[(outside, 2222)].reachable, real
    assert real[(inside, 2223)].reachable and not real[(outside, 2223)].reachable, real
    rows = {s["port"]: s for s in report["services"] if s["protocol"] == "tcp"}
    assert 2222 in rows and 2223 in rows, sorted(rows)
    v = rows[2222]["ipv4"]
    assert v["status"] == "open", v
    assert any("REDIRECT --to-ports 22" in (d.get("rule") or "") for d in v["decided_by"]), v
    v = rows[2223]["ipv4"]
    assert v["status"] == "restricted" and v["allowed_interfaces"] == ["eth-a"], v
