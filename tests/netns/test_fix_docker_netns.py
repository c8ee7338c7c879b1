"""`twinwall fix` on a Docker host (the rules a Docker 28 daemon leaves, see test_docker_netns.py):
a port published over both families, DOCKER-USER hardened in IPv4 only. The plan writes only
DOCKER-USER, in the wider family; after its commands run, real clients agree with the audit and
every chain of Docker's own is unchanged."""

from __future__ import annotations

import json
from typing import Dict, List

from harness import IPV4, IPV6, Listener, ListenerSpec, Topology, netns_exec
from test_docker_netns import Container, docker_v4_rules, docker_v6_rules

INSIDE, OUTSIDE = "inside", "outside"


def chains_but_docker_user(ns: str, tool: str) -> List[str]:
    return sorted(l for l in netns_exec(ns, tool).stdout.splitlines()
                  if l.startswith("-A ") and not l.startswith("-A DOCKER-USER"))


def test_docker_published_gap_mirrored_in_docker_user(topology: Topology) -> None:
    topo = topology
    v4 = docker_v4_rules(docker_user=["-A DOCKER-USER -s 198.51.100.0/24 -j DROP"])
    with Container(topo, ipv6=True) as ctr, Listener(ctr.ns, [ListenerSpec("tcp", "::", 80, v6only=False)], name="tw-ctr-web"):
        topo.load_iptables(v4_text=v4, v6_text=docker_v6_rules(ipv6_network=True))
        before = {t: chains_but_docker_user(topo.server, t) for t in ("iptables-save", "ip6tables-save")}
        args = ("fix", "--format", "json", "--finding", "TW-FAMILY-GAP", "--map", "198.51.100.0/24=2001:db8:b::/64")
        rc, out, err = topo.run_twinwall(*args, timeout=300)
        assert rc == 1, err
        doc = json.loads(out)
        assert not doc["refused"], doc["refused"]
        assert {c["owner"] for c in doc["changes"]} == {"docker"} and {c["family"] for c in doc["changes"]} == {IPV6}
        cmds = doc["candidate"]["commands"]
        assert cmds and all(c[:3] == ["ip6tables", "-I", "DOCKER-USER"] for c in cmds)
        assert any("2001:db8:b::/64" in c for c in cmds)
        for c in cmds:
            netns_exec(topo.server, *c)
        reqs, keys = [], []
        for fam in (IPV4, IPV6):
            for client in (INSIDE, OUTSIDE):
                reqs.append(topo.request(client, topo.server_address(client, fam), 8080, "tcp", timeout=4.0))
                keys.append((fam, client))
        real: Dict = {k: r.reachable for k, r in zip(keys, topo.probe_many(reqs))}
        assert real == {(IPV4, INSIDE): True, (IPV4, OUTSIDE): False, (IPV6, INSIDE): True, (IPV6, OUTSIDE): False}
        after = topo.audit_json()
        svc = next(s for s in after["services"] if s["port"] == 8080)
        assert svc[IPV4]["status"] == svc[IPV6]["status"] == "restricted"
        assert not [f for f in after["findings"] if f["id"] == "TW-FAMILY-GAP" and f["service"] == "tcp/8080"]
        assert {t: chains_but_docker_user(topo.server, t) for t in before} == before, "Docker's own chains changed"
        rc, out, err = topo.run_twinwall(*args, timeout=300)
        assert rc == 0 and not json.loads(out)["changes"], out
