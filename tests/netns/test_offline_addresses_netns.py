"""Offline audit of a host whose INPUT rules name its own address (``-d 192.0.2.1/32``), from
the dumps the host's own tools print back, without ``--address``: the audit must read the rule
as the admin meant it, as a real client finds it, and not as a rule for some other host.

The server namespace has 192.0.2.1 (eth-a) and 198.51.100.1 (eth-b). IPv4 accepts tcp/PORT only
from 192.0.2.0/24 to 192.0.2.1; IPv6 accepts everything. A dual-stack listener on ``::``. Before
the input chains' destinations were taken as the host's, the audit asked about an unnamed
address no rule names, found IPv4 "filtered" and reported a HIGH family gap that a client on
eth-a disproves by connecting.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

from harness import IPV4, IPV6, ListenerSpec, Topology, _twinwall_env, netns_exec

PORT = 2222

V4 = f"""*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 192.0.2.0/24 -d 192.0.2.1/32 -p tcp --dport {PORT} -j ACCEPT
COMMIT
"""
V6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"""


def _offline(tmp_path, *args: str):
    """``twinwall ARGS`` on the saved files, outside any namespace (offline: it reads files)."""
    return subprocess.run([sys.executable, "-m", "twinwall", *args], capture_output=True, text=True,
                          env=_twinwall_env(), timeout=120, cwd=tmp_path)


def test_offline_audit_takes_the_address_input_names_as_the_hosts(tmp_path) -> None:
    with Topology() as topo:
        topo.load_iptables(V4, V6)
        topo.start_listeners([ListenerSpec("tcp", "::", PORT, v6only=False)])
        inside_v4 = topo.server_address("inside", IPV4)
        assert inside_v4 == "192.0.2.1"
        outside_v4 = topo.server_address("outside", IPV4)
        reach = {
            (who, fam): topo.probe(who, topo.server_address(who, fam), PORT, "tcp").reachable
            for who in ("inside", "outside") for fam in (IPV4, IPV6)
        }
        # what the kernel does: IPv4 only from the inside client, IPv6 from both
        assert reach == {("inside", IPV4): True, ("outside", IPV4): False,
                         ("inside", IPV6): True, ("outside", IPV6): True}, reach
        # the dumps as the host's tools print them back
        (tmp_path / "v4.rules").write_text(netns_exec(topo.server, "iptables-save").stdout)
        (tmp_path / "v6.rules").write_text(netns_exec(topo.server, "ip6tables-save").stdout)
        (tmp_path / "ss.txt").write_text(netns_exec(topo.server, "ss", "-tuln").stdout)
        inside_client = topo.client_address("inside", IPV4)
        outside_client = topo.client_address("outside", IPV4)

    files = ["--iptables", "v4.rules", "--ip6tables", "v6.rules", "--sockets", "ss.txt"]
    res = _offline(tmp_path, "audit", *files, "--format", "json", "--verbose")
    assert res.returncode in (0, 1), res.stderr
    doc = json.loads(res.stdout)
    (svc,) = [s for s in doc["services"] if s["port"] == PORT]
    v4, v6 = svc["ipv4"], svc["ipv6"]
    assert v4["status"] == "restricted", v4
    assert v6["status"] == "open", v6
    # the sources it names hold the client that connected and not the one that did not
    allowed = [ipaddress.ip_network(c) for c in v4["allowed_sources"]]
    assert any(ipaddress.ip_address(inside_client) in n for n in allowed), allowed
    assert not any(ipaddress.ip_address(outside_client) in n for n in allowed), allowed
    assert any(d.get("rule_number") == 3 and d.get("chain") == "INPUT" for d in v4["decided_by"]), v4
    # and it says which address it took as the host's, with the rule that names it
    (row,) = [r for r in doc["host"]["rulesets"] if r["family"] == "ipv4"]
    assert [(a["address"], a["chain"], a["rule_number"]) for a in row["assumed_addresses"]] == [
        ("192.0.2.1", "INPUT", 3)]
    # no HIGH family gap: IPv4 is restricted, not filtered
    gaps = [f for f in doc["findings"] if f["id"] == "TW-FAMILY-GAP"]
    assert gaps and all(f["severity"] != "high" for f in gaps), gaps

    # explain agrees, and names the destination the accept is for
    res = _offline(tmp_path, "explain", f"tcp/{PORT}", "--family", "ipv4", *files)
    assert res.returncode == 0, res.stderr
    assert "is restricted over IPv4" in res.stdout, res.stdout
    assert "to 192.0.2.1/32" in res.stdout, res.stdout

    # --address naming the host's addresses gives the same verdict; naming only the other one
    # says what the kernel would do for a host that had only it: filtered
    res = _offline(tmp_path, "audit", *files, "--format", "json", "--verbose",
                   "--address", inside_v4, "--address", outside_v4)
    (svc,) = [s for s in json.loads(res.stdout)["services"] if s["port"] == PORT]
    assert svc["ipv4"]["status"] == "restricted", svc["ipv4"]
    res = _offline(tmp_path, "audit", *files, "--format", "json", "--verbose", "--address", outside_v4)
    (svc,) = [s for s in json.loads(res.stdout)["services"] if s["port"] == PORT]
    assert svc["ipv4"]["status"] == "filtered", svc["ipv4"]
