"""A port published by Docker is reachable even when INPUT drops it: real rules, real clients.

No Docker engine runs here, so the test builds what one leaves behind, exactly as the kernel sees
it: the iptables-save output of a Docker 28 daemon after ``docker run -p 8080:80`` on the default
bridge (tests/fixtures/frontends/docker28-portmap.v4.rules / .v6.rules, see the README there),
loaded with iptables-restore / ip6tables-restore into the server namespace, with:

* a "container" namespace behind a bridge named ``docker0`` in the server namespace (its port
  named ``veth`` + suffix, as Docker names them). Docker's 172.17.0.0/16 is not a documentation
  range: the container network is 203.0.113.0/24 here (bridge 203.0.113.1, container
  203.0.113.2) and the rules' addresses are rewritten to match;
* forwarding switched on inside the server namespace only;
* the administrator's own INPUT chain on top: policy DROP, loopback and established accepted,
  tcp/22 accepted - and nothing for 8080.

A listener on port 80 runs in the container namespace. The real clients ("inside" on eth-a,
"outside" on eth-b) connect to the server's own address on port 8080: DNAT sends the connection
through FORWARD to the container. twinwall's audit, run in the server namespace, must report the
published service tcp/8080 as reachable over IPv4 (decided_by naming the DNAT rule and the FORWARD
accept), not reachable over IPv6 (no ip6tables DNAT), with findings naming the "docker" front-end.

A second case adds the usual hardening in DOCKER-USER (drop 198.51.100.0/24) and an IPv6 network
for the container with ip6tables DNAT (what Docker does for ``--ipv6`` networks with ip6tables
on): the port is then restricted over IPv4 and open over IPv6, a family gap twinwall must report.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import subprocess
from pathlib import Path
from typing import Dict, List, Optional


from harness import IPV4, IPV6, Listener, ListenerSpec, Topology, ip_batch, netns_exec

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "frontends"
INSIDE, OUTSIDE = "inside", "outside"

# The container network: Docker's 172.17.0.0/16 moved into a documentation range.
BRIDGE_V4, CONTAINER_V4, NET_V4 = "203.0.113.1", "203.0.113.2", "203.0.113.0/24"
BRIDGE_V6, CONTAINER_V6, NET_V6 = "2001:db8:d::1", "2001:db8:d::2", "2001:db8:d::/64"
BRIDGE_MAC, CONTAINER_MAC = "02:74:77:dd:00:01", "02:74:77:dd:00:02"

ADMIN_INPUT_V4 = [
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
]
ADMIN_INPUT_V6 = ADMIN_INPUT_V4 + ["-A INPUT -p ipv6-icmp -j ACCEPT"]


def docker_v4_rules(docker_user: Optional[List[str]] = None) -> str:
    """The Docker 28 fixture in the test's addresses, with the administrator's INPUT rules."""
    text = (FIXTURES / "docker28-portmap.v4.rules").read_text()
    text = text.replace("172.17.0.0/16", NET_V4).replace("172.17.0.2", CONTAINER_V4)
    assert "172.17." not in text
    return _with_admin(text, ADMIN_INPUT_V4, docker_user)


def docker_v6_rules(ipv6_network: bool) -> str:
    """The Docker 28 ip6tables fixture; with ``ipv6_network`` the rules Docker adds for a
    container on an IPv6-enabled default bridge publishing 8080:80 (the same shape as IPv4)."""
    text = (FIXTURES / "docker28-portmap.v6.rules").read_text()
    if ipv6_network:
        text = _add_rules(text, "raw", [
            f"-A PREROUTING -d {CONTAINER_V6}/128 ! -i docker0 -p tcp -m tcp --dport 80 -j DROP"])
        text = _add_rules(text, "filter", [
            f"-A DOCKER -d {CONTAINER_V6}/128 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
            "-A DOCKER ! -i docker0 -o docker0 -j DROP",
            "-A DOCKER-BRIDGE -o docker0 -j DOCKER",
            "-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A DOCKER-FORWARD -i docker0 -j ACCEPT",
            "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
            "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
        ])
        text = _add_rules(text, "nat", [
            f"-A POSTROUTING -s {NET_V6} ! -o docker0 -j MASQUERADE",
            "-A DOCKER -i docker0 -j RETURN",
            f"-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [{CONTAINER_V6}]:80",
        ])
    return _with_admin(text, ADMIN_INPUT_V6, None)


def _with_admin(text: str, input_rules: List[str], docker_user: Optional[List[str]]) -> str:
    text = text.replace(":INPUT ACCEPT [0:0]", ":INPUT DROP [0:0]", 1)
    text = _add_rules(text, "filter", input_rules)
    if docker_user:
        # administrators insert their own rules above Docker's RETURN
        text = text.replace("-A DOCKER-USER -j RETURN", "\n".join(docker_user + ["-A DOCKER-USER -j RETURN"]))
    return text


def _add_rules(text: str, table: str, rules: List[str]) -> str:
    """Append rules to a table of an iptables-save text (creating the table if needed)."""
    m = re.search(rf"^\*{table}\n(.*?)^COMMIT$", text, re.S | re.M)
    if m is None:
        builtin = {"raw": ("PREROUTING", "OUTPUT")}[table]
        head = "".join(f":{c} ACCEPT [0:0]\n" for c in builtin)
        return f"*{table}\n{head}" + "\n".join(rules) + "\nCOMMIT\n" + text
    body = m.group(1) + "\n".join(rules) + "\n"
    return text[: m.start(1)] + body + text[m.end(1):]


class Container:
    """A namespace behind a ``docker0`` bridge in the server namespace."""

    def __init__(self, topo: Topology, ipv6: bool):
        self.topo = topo
        self.ipv6 = ipv6
        self.ns = f"tw-ctr-{topo.suffix}{secrets.token_hex(1)}"
        self.veth = f"veth{secrets.token_hex(3)}"
        self._created = False

    def __enter__(self) -> "Container":
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True, timeout=20)
        self._created = True
        try:
            srv = self.topo.server
            cmds = [
                f"link add docker0 address {BRIDGE_MAC} type bridge",
                f"addr add {BRIDGE_V4}/24 dev docker0",
                f"link add {self.veth} type veth peer name eth0 address {CONTAINER_MAC} netns {self.ns}",
                f"link set {self.veth} master docker0",
                f"link set {self.veth} up",
                "link set docker0 up",
            ]
            if self.ipv6:
                cmds += [f"addr add {BRIDGE_V6}/64 dev docker0 nodad"]
            ip_batch(srv, cmds)
            netns_exec(srv, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                       "net.ipv6.conf.all.forwarding=1")
            netns_exec(self.ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_ra=0",
                       "net.ipv6.conf.default.accept_ra=0")
            # no static neighbour entries: ARP and neighbour discovery resolve the container as
            # on a real Docker host, so a ruleset that drops NDP fails here as it would there
            ctr = [
                "link set lo up",
                f"addr add {CONTAINER_V4}/24 dev eth0",
                "link set eth0 up",
                f"route add default via {BRIDGE_V4} dev eth0",
            ]
            if self.ipv6:
                ctr += [f"addr add {CONTAINER_V6}/64 dev eth0 nodad",
                        f"route add ::/0 via {BRIDGE_V6} dev eth0"]
            ip_batch(self.ns, ctr)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._created:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)
            self._created = False

    def __exit__(self, *exc: object) -> None:
        self.close()


def _published(report: Dict, port: int) -> Optional[Dict]:
    for s in report["services"]:
        if s["protocol"] == "tcp" and s["port"] == port and "dnat" in (s["process"] or ""):
            return s
    return None


def _rules(v: Dict) -> List[str]:
    return [d.get("rule") or "" for d in v["decided_by"]]


def _covered(cidrs: List[str], address: str) -> bool:
    a = ipaddress.ip_address(address)
    return any(a in ipaddress.ip_network(c, strict=False) for c in cidrs if "/" in c)


def _run(topo: Topology, v4: str, v6: str, ipv6_net: bool):
    with Container(topo, ipv6=ipv6_net) as ctr, \
            Listener(ctr.ns, [ListenerSpec("tcp", "::", 80, v6only=False)], name="tw-ctr-web"):
        topo.load_iptables(v4_text=v4, v6_text=v6)
        topo.start_listeners([ListenerSpec("tcp", "::", 22, v6only=False)], name="tw-sshd")
        # nothing listens on 8080 in the server itself: a connection there can only be the DNAT
        assert not netns_exec(topo.server, "ss", "-H", "-tln", "sport = :8080").stdout.strip()
        reqs, keys = [], []
        for family in (IPV4, IPV6):
            for client in (INSIDE, OUTSIDE):
                for port in (8080, 22):
                    # neighbour discovery runs first on every link (no static entries): a generous timeout
                    reqs.append(topo.request(client, topo.server_address(client, family), port, "tcp", timeout=4.0))
                    keys.append((family, client, port))
        real = {k: r for k, r in zip(keys, topo.probe_many(reqs))}
        report = topo.audit_json()
    return real, report


def test_docker_published_port_bypasses_input(topology: Topology) -> None:
    topo = topology
    real, report = _run(topo, docker_v4_rules(), docker_v6_rules(ipv6_network=False), ipv6_net=False)

    # real clients: 8080 reaches the container over IPv4 from both clients, never over IPv6
    for client in (INSIDE, OUTSIDE):
        assert real[(IPV4, client, 8080)].reachable, real[(IPV4, client, 8080)]
        assert not real[(IPV6, client, 8080)].reachable, real[(IPV6, client, 8080)]
        assert real[(IPV4, client, 22)].reachable and real[(IPV6, client, 22)].reachable

    assert report["host"]["frontends"] == {IPV4: ["docker"], IPV6: ["docker"]}
    svc = _published(report, 8080)
    assert svc is not None, [(s["protocol"], s["port"], s["process"]) for s in report["services"]]
    assert svc["family"] == IPV4 and svc["address"] == "0.0.0.0"
    assert f"{CONTAINER_V4}:80" in svc["process"] and svc["process"].startswith("docker:")
    v4, v6 = svc[IPV4], svc[IPV6]
    assert v4["status"] == "open", v4
    rules = _rules(v4)
    assert any("-j DNAT --to-destination 203.0.113.2:80" in r and "--dport 8080" in r for r in rules), rules
    assert any(r.startswith("-A DOCKER -d 203.0.113.2/32") and r.endswith("-j ACCEPT") for r in rules), rules
    assert not any(d["chain"] == "INPUT" for d in v4["decided_by"]), "INPUT has no say in a DNATed port"
    assert v6["status"] == "not-bound", v6
    assert not v4["uncertain"]

    # the ordinary socket audit is untouched: sshd on 22 open over both families
    ssh = next(s for s in report["services"] if s["port"] == 22 and s["address"] == "::")
    assert ssh[IPV4]["status"] == "open" and ssh[IPV6]["status"] == "open"

    docker_findings = [f for f in report["findings"] if f["family"] == IPV4]
    assert docker_findings, report["findings"]
    assert all(f["frontend"] == "docker" for f in docker_findings), docker_findings


def test_docker_user_restriction_and_ipv6_dnat(topology: Topology) -> None:
    topo = topology
    v4 = docker_v4_rules(docker_user=["-A DOCKER-USER -s 198.51.100.0/24 -j DROP"])
    real, report = _run(topo, v4, docker_v6_rules(ipv6_network=True), ipv6_net=True)

    assert real[(IPV4, INSIDE, 8080)].reachable, real[(IPV4, INSIDE, 8080)]
    assert not real[(IPV4, OUTSIDE, 8080)].reachable, real[(IPV4, OUTSIDE, 8080)]
    assert real[(IPV6, INSIDE, 8080)].reachable, real[(IPV6, INSIDE, 8080)]
    assert real[(IPV6, OUTSIDE, 8080)].reachable, real[(IPV6, OUTSIDE, 8080)]

    svc = _published(report, 8080)
    assert svc is not None
    # published over both families: one record, dual-stack like
    assert svc["family"] == IPV6 and svc["address"] == "::" and svc["v6only"] is False
    assert f"[{CONTAINER_V6}]:80" in svc["process"] and f"{CONTAINER_V4}:80" in svc["process"]
    v4, v6 = svc[IPV4], svc[IPV6]
    assert v4["status"] == "restricted", v4
    assert _covered(v4["allowed_sources"], topo.client_address(INSIDE, IPV4)), v4["allowed_sources"]
    assert not _covered(v4["allowed_sources"], topo.client_address(OUTSIDE, IPV4)), v4["allowed_sources"]
    assert any("DOCKER-USER -s 198.51.100.0/24 -j DROP" in r for r in _rules(v4)), _rules(v4)
    assert v6["status"] == "open", v6
    assert any(f"--to-destination [{CONTAINER_V6}]:80" in r for r in _rules(v6)), _rules(v6)

    gaps = [f for f in report["findings"] if f["id"] == "TW-FAMILY-GAP" and f["service"] == "tcp/8080"]
    assert gaps and gaps[0]["family"] == IPV6 and gaps[0]["frontend"] == "docker", report["findings"]
