#!/usr/bin/env python3
"""Generate a kube-proxy-like (iptables mode) dual-stack ruleset pair and a socket list.

Writes into the output directory:

* ``iptables.rules``  - IPv4 ruleset in iptables-save format (raw, mangle, filter, nat)
* ``ip6tables.rules`` - IPv6 ruleset of the same shape
* ``sockets.txt``     - listening sockets in ``ss -tulnpe`` format

The output is fully determined by the flags (``--seed`` included): same flags, same bytes.
The shape follows what kube-proxy (iptables mode), kubelet, flannel and NodeLocal DNSCache write
on a node, plus a host firewall section in filter INPUT (loopback and established accepts,
tcp/udp accepts, some restricted by source, policy DROP) so an audit has real decisions to make.
The IPv6 host firewall differs from the IPv4 one on purpose (a few family gaps).

Per family, services are added until the number of user chains reaches ``--chains``; the rules
still missing to reach ``--rules`` are spread over the ``KUBE-FW-*`` chains of LoadBalancer
services as ``loadBalancerSourceRanges`` (one rule per allowed source range).

Addresses: host and load-balancer addresses come from the documentation ranges (192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32); cluster and pod addresses use 10.96.0.0/12,
10.244.0.0/16, 2001:db8:96::/108 and 2001:db8:244::/64. The files are text only: nothing is sent.

Usage: python3 bench/gen_kube.py -o bench/out/kube [--chains 10000] [--rules 120000]
       [--sockets 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

V4 = "ipv4"
V6 = "ipv6"

HEADER_DATE = "Mon Jan  6 12:00:00 2025"

# Fixed host facts (per family).
NODE_IP = {V4: "192.0.2.10", V6: "2001:db8:1::10"}
NODE_IP2 = {V4: "198.51.100.10", V6: "2001:db8:2::10"}
POD_CIDR = {V4: "10.244.0.0/16", V6: "2001:db8:244::/64"}
NODELOCAL_DNS = {V4: "169.254.20.10", V6: "2001:db8:53::a"}
LOOPBACK_NET = {V4: "127.0.0.0/8", V6: "::1/128"}

CLUSTER_NET = {V4: ipaddress.ip_network("10.96.0.0/12"), V6: ipaddress.ip_network("2001:db8:96::/108")}
POD_NET = {V4: ipaddress.ip_network("10.244.0.0/16"), V6: ipaddress.ip_network("2001:db8:244::/64")}
LB_NETS = {
    V4: [ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("198.51.100.128/25")],
    V6: [ipaddress.ip_network("2001:db8:5ca1::/64")],
}
EXTERNAL_IPS = {V4: ["192.0.2.10", "192.0.2.11", "192.0.2.12"], V6: ["2001:db8:1::10", "2001:db8:1::11"]}

NAMESPACES = [
    "default", "kube-system", "monitoring", "ingress-nginx", "payments", "shop", "search", "auth",
    "logging", "data", "ml", "billing", "cache", "edge", "mail", "ci", "registry", "analytics",
]
APP_WORDS = [
    "api", "web", "frontend", "backend", "worker", "gateway", "db", "redis", "kafka", "zk",
    "postgres", "mysql", "mongo", "elastic", "grafana", "prometheus", "alertmanager", "loki",
    "jaeger", "minio", "nats", "rabbitmq", "memcached", "keycloak", "vault", "consul", "etcd",
    "orders", "users", "catalog", "cart", "checkout", "invoice", "ledger", "report", "notify",
]
PORT_CHOICES = [
    ("http", "tcp", 80, 8080), ("https", "tcp", 443, 8443), ("grpc", "tcp", 9090, 9090),
    ("metrics", "tcp", 9100, 9100), ("dns", "udp", 53, 53), ("dns-tcp", "tcp", 53, 53),
    ("redis", "tcp", 6379, 6379), ("pg", "tcp", 5432, 5432), ("mysql", "tcp", 3306, 3306),
    ("amqp", "tcp", 5672, 5672), ("kafka", "tcp", 9092, 9092), ("web", "tcp", 8080, 8080),
    ("syslog", "udp", 514, 5514), ("statsd", "udp", 8125, 8125), ("admin", "tcp", 8081, 8081),
    ("mongo", "tcp", 27017, 27017), ("es", "tcp", 9200, 9200), ("nats", "tcp", 4222, 4222),
    ("quic", "udp", 443, 8443), ("ntp", "udp", 123, 123),
]

PODS_PER_NODE = 100
MASQ_MARK = "0x4000/0x4000"
DROP_MARK = "0x8000/0x8000"


def kube_hash(text: str) -> str:
    """kube-proxy's chain-name hash: base32(sha256(text))[:16]."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def probability_text(p: float) -> str:
    """How iptables-save prints ``--probability`` (xt_statistic stores a 31-bit fraction)."""
    stored = int(round(0x80000000 * p))
    return "%.11f" % (stored / 0x80000000)


@dataclass
class Endpoint:
    ip: Dict[str, str]  # family -> address
    local: bool


@dataclass
class ServicePort:
    ns: str
    name: str
    port_name: str
    protocol: str
    port: int
    target_port: int
    families: Tuple[str, ...]
    cluster_ip: Dict[str, str]
    svc_type: str  # ClusterIP | NodePort | LoadBalancer
    node_port: Optional[int] = None
    etp_local: bool = False
    health_port: Optional[int] = None
    lb_ip: Dict[str, str] = field(default_factory=dict)
    source_ranges: bool = False
    external_ips: Dict[str, List[str]] = field(default_factory=dict)
    endpoints: List[Endpoint] = field(default_factory=list)

    @property
    def spn(self) -> str:
        return f"{self.ns}/{self.name}:{self.port_name}"

    def chain(self, prefix: str) -> str:
        return prefix + kube_hash(self.spn + self.protocol)

    def sep_chain(self, family: str, ep: Endpoint) -> str:
        return "KUBE-SEP-" + kube_hash(self.spn + self.protocol + self.ep_text(family, ep))

    def ep_text(self, family: str, ep: Endpoint) -> str:
        addr = ep.ip[family]
        if family == V6:
            return f"[{addr}]:{self.target_port}"
        return f"{addr}:{self.target_port}"

    def chain_cost(self) -> int:
        """User chains this service port adds to one family's nat table."""
        if not self.endpoints:
            return 0
        n = 1 + len(self.endpoints)  # SVC + SEPs
        if self.svc_type != "ClusterIP":
            n += 1  # EXT
            if self.etp_local:
                n += 1  # SVL
        if self.source_ranges:
            n += 1  # FW
        return n


class Table:
    """One table of an iptables-save dump: builtin chains with policies, user chains, rules."""

    def __init__(self, name: str, builtins: Sequence[Tuple[str, str]]):
        self.name = name
        self.builtins = list(builtins)
        self.user: List[str] = []
        self._user_set: Set[str] = set()
        self.rules: Dict[str, List[str]] = {c: [] for c, _ in builtins}

    def chain(self, name: str) -> None:
        if name not in self._user_set and name not in self.rules:
            self._user_set.add(name)
            self.user.append(name)
            self.rules[name] = []

    def add(self, chain: str, rule: str) -> None:
        if chain not in self.rules:
            self.chain(chain)
        self.rules[chain].append(rule)

    def n_rules(self) -> int:
        return sum(len(r) for r in self.rules.values())

    def render(self, out: List[str]) -> None:
        out.append(f"*{self.name}")
        order = [c for c, _ in self.builtins] + sorted(self.user)
        for c, policy in self.builtins:
            out.append(f":{c} {policy} [0:0]")
        for c in sorted(self.user):
            out.append(f":{c} - [0:0]")
        for c in order:
            for r in self.rules[c]:
                out.append(f"-A {c} {r}")
        out.append("COMMIT")


class Generator:
    def __init__(self, seed: int, chains: int, rules: int, sockets: int, dispatch: str = "addr"):
        # dispatch "addr": KUBE-SERVICES matches -d CLUSTER-IP -p P --dport N (kube-proxy's);
        # "port": by protocol and port only, so every service chain is reachable (bench/gen_shapes.py)
        self.dispatch = dispatch
        self.rng = random.Random(seed)
        self.target_chains = chains
        self.target_rules = rules
        self.n_sockets = sockets
        self.services: List[ServicePort] = []
        self._cluster_used: Dict[str, Set[int]] = {V4: set(), V6: set()}
        self._other_nodes = [n for n in range(0, 200) if n != 3]
        self._nodeports_free = list(range(30000, 32768))
        self.rng.shuffle(self._nodeports_free)
        self._lb_next = 0
        self._names: Set[Tuple[str, str]] = set()

    # ---- address helpers -------------------------------------------------------------------
    def _unique_in(self, net, used: Set[int], lo: int = 2) -> str:
        size = net.num_addresses
        while True:
            off = self.rng.randrange(lo, size - 1)
            if off not in used:
                used.add(off)
                return str(net.network_address + off)

    def _pod_ip(self, local: bool) -> Dict[str, str]:
        """A pod address on this node (node 3) or on another node; a pod may back several
        services, so addresses repeat across services (never within one service)."""
        node = 3 if local else self.rng.choice(self._other_nodes)
        key = node * 256 + self.rng.randrange(2, 2 + PODS_PER_NODE)
        v4 = str(POD_NET[V4].network_address + key)
        v6 = str(POD_NET[V6].network_address + (node << 16) + (key % 256))
        return {V4: v4, V6: v6}

    def _lb_ip(self) -> Dict[str, str]:
        i = self._lb_next
        self._lb_next += 1
        v4_hosts = [h for net in LB_NETS[V4] for h in (net.network_address + k for k in range(1, net.num_addresses - 1))]
        return {V4: str(v4_hosts[i % len(v4_hosts)]), V6: str(LB_NETS[V6][0].network_address + 0x100 + i)}

    # ---- services ---------------------------------------------------------------------------
    def _new_service(self) -> List[ServicePort]:
        rng = self.rng
        while True:
            ns = rng.choice(NAMESPACES)
            name = "-".join(rng.sample(APP_WORDS, 2)) + "-" + str(rng.randrange(1, 400))
            if (ns, name) not in self._names:
                self._names.add((ns, name))
                break
        r = rng.random()
        families: Tuple[str, ...] = (V4, V6) if r < 0.85 else ((V4,) if r < 0.925 else (V6,))
        cluster_ip = {f: self._unique_in(CLUSTER_NET[f], self._cluster_used[f]) for f in families}
        t = rng.random()
        svc_type = "ClusterIP" if t < 0.62 else ("NodePort" if t < 0.85 else "LoadBalancer")
        etp_local = svc_type == "LoadBalancer" and rng.random() < 0.4
        source_ranges = svc_type == "LoadBalancer" and rng.random() < 0.6
        lb_ip = self._lb_ip() if svc_type == "LoadBalancer" else {}
        ext_ips: Dict[str, List[str]] = {}
        if svc_type != "ClusterIP" and rng.random() < 0.05:
            ext_ips = {f: [rng.choice(EXTERNAL_IPS[f])] for f in families}
        # endpoints: 3% none, otherwise mostly 1..5 with a tail up to 12
        if rng.random() < 0.03:
            n_ep = 0
        else:
            n_ep = min(12, 1 + int(rng.expovariate(0.6)))
        endpoints: List[Endpoint] = []
        while len(endpoints) < n_ep:
            local = rng.random() < 0.08
            ip = self._pod_ip(local)
            if all(ep.ip[V4] != ip[V4] for ep in endpoints):
                endpoints.append(Endpoint(ip, local))
        n_ports = 1 if rng.random() < 0.7 else rng.choice((2, 2, 3))
        chosen = rng.sample(PORT_CHOICES, n_ports)
        ports = []
        health = None
        if etp_local and len(self._nodeports_free) > n_ports:
            health = self._nodeports_free.pop()
        for pname, proto, port, target in chosen:
            node_port = None
            this_type = svc_type
            if svc_type != "ClusterIP":
                if self._nodeports_free:
                    node_port = self._nodeports_free.pop()
                else:
                    this_type = "ClusterIP"
            ports.append(
                ServicePort(
                    ns=ns, name=name, port_name=pname, protocol=proto, port=port,
                    target_port=target, families=families, cluster_ip=cluster_ip,
                    svc_type=this_type, node_port=node_port,
                    etp_local=etp_local and this_type != "ClusterIP",
                    health_port=health if this_type != "ClusterIP" else None,
                    lb_ip=lb_ip if this_type == "LoadBalancer" else {},
                    source_ranges=source_ranges and this_type == "LoadBalancer",
                    external_ips=ext_ips if this_type != "ClusterIP" else {},
                    endpoints=endpoints,
                )
            )
        return ports

    def make_services(self) -> None:
        fixed_chains = 18  # non-service user chains per family (mangle 3, filter 9, nat 6)
        # the kube-dns service is always there
        dns = self._kube_dns()
        self.services.extend(dns)
        chains = {f: fixed_chains + sum(sp.chain_cost() for sp in dns) for f in (V4, V6)}
        while min(chains.values()) < self.target_chains:
            sps = self._new_service()
            self.services.extend(sps)
            for f in sps[0].families:
                chains[f] += sum(sp.chain_cost() for sp in sps)

    def _kube_dns(self) -> List[ServicePort]:
        self._names.add(("kube-system", "kube-dns"))
        cluster_ip = {V4: "10.96.0.10", V6: "2001:db8:96::a"}
        self._cluster_used[V4].add(10)
        self._cluster_used[V6].add(10)
        eps = [Endpoint(self._pod_ip(False), False), Endpoint(self._pod_ip(True), True)]
        eps[1].ip = {V4: "10.244.3.2", V6: "2001:db8:244::3:2"}
        out = []
        for pname, proto, port in (("dns", "udp", 53), ("dns-tcp", "tcp", 53), ("metrics", "tcp", 9153)):
            out.append(
                ServicePort(
                    ns="kube-system", name="kube-dns", port_name=pname, protocol=proto, port=port,
                    target_port=port, families=(V4, V6), cluster_ip=cluster_ip, svc_type="ClusterIP",
                    endpoints=eps,
                )
            )
        return out

    # ---- rendering --------------------------------------------------------------------------
    def render_family(self, family: str) -> Tuple[str, int, int]:
        v6 = family == V6
        slash = "/128" if v6 else "/32"
        reject = "icmp6-port-unreachable" if v6 else "icmp-port-unreachable"
        icmp = "-p ipv6-icmp -m icmp6 --icmpv6-type" if v6 else "-p icmp -m icmp --icmp-type"

        raw = Table("raw", [("PREROUTING", "ACCEPT"), ("OUTPUT", "ACCEPT")])
        mangle = Table(
            "mangle",
            [("PREROUTING", "ACCEPT"), ("INPUT", "ACCEPT"), ("FORWARD", "ACCEPT"), ("OUTPUT", "ACCEPT"), ("POSTROUTING", "ACCEPT")],
        )
        filt = Table("filter", [("INPUT", "DROP"), ("FORWARD", "DROP"), ("OUTPUT", "ACCEPT")])
        nat = Table("nat", [("PREROUTING", "ACCEPT"), ("INPUT", "ACCEPT"), ("OUTPUT", "ACCEPT"), ("POSTROUTING", "ACCEPT")])

        # raw: NodeLocal DNSCache skips conntrack for its address
        dns = NODELOCAL_DNS[family]
        for p in ("udp", "tcp"):
            raw.add("PREROUTING", f"-d {dns}{slash} -p {p} -m {p} --dport 53 -j CT --notrack")
        for p in ("udp", "tcp"):
            raw.add("OUTPUT", f"-s {dns}{slash} -p {p} -m {p} --sport 53 -j CT --notrack")

        # mangle: kubelet/kube-proxy canaries and MSS clamping on forwarded SYNs
        for c in ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY"):
            mangle.chain(c)
        mangle.add("FORWARD", "-p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu")

        # filter: NodeLocal DNS accepts, host basics, kube-proxy hooks, host firewall
        for c in (
            "KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-KUBELET-CANARY",
            "KUBE-NODEPORTS", "KUBE-PROXY-CANARY", "KUBE-PROXY-FIREWALL", "KUBE-SERVICES",
            "HOST-ETCD",
        ):
            filt.chain(c)
        for p in ("udp", "tcp"):
            filt.add("INPUT", f"-d {dns}{slash} -p {p} -m {p} --dport 53 -j ACCEPT")
        filt.add("INPUT", "-i lo -j ACCEPT")
        if v6:
            filt.add("INPUT", "-s ::1/128 ! -i lo -j DROP")
        else:
            filt.add("INPUT", "-s 127.0.0.0/8 ! -i lo -j DROP")
        filt.add("INPUT", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        filt.add("INPUT", "-m conntrack --ctstate INVALID -j DROP")
        filt.add("INPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL')
        filt.add("INPUT", '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS')
        filt.add("INPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES')
        filt.add("INPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
        filt.add("INPUT", "-j KUBE-FIREWALL")
        self._host_firewall(family, filt, icmp)

        filt.add("FORWARD", '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL')
        filt.add("FORWARD", '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD')
        filt.add("FORWARD", '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
        filt.add("FORWARD", '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES')
        filt.add("FORWARD", f'-s {POD_CIDR[family]} -m comment --comment "flanneld forward" -j ACCEPT')
        filt.add("FORWARD", f'-d {POD_CIDR[family]} -m comment --comment "flanneld forward" -j ACCEPT')
        filt.add("OUTPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL')
        filt.add("OUTPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
        filt.add("OUTPUT", "-j KUBE-FIREWALL")
        if not v6:
            filt.add(
                "KUBE-FIREWALL",
                '! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" '
                "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
            )
        filt.add("KUBE-FORWARD", "-m conntrack --ctstate INVALID -j DROP")
        filt.add("KUBE-FORWARD", f'-m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_MARK} -j ACCEPT')
        filt.add(
            "KUBE-FORWARD",
            '-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        )

        # nat: kube-proxy
        for c in ("KUBE-MARK-DROP", "KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-SERVICES", "FLANNEL-POSTRTG"):
            nat.chain(c)
        nat.add("PREROUTING", '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
        nat.add("OUTPUT", '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
        nat.add("POSTROUTING", '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING')
        nat.add("POSTROUTING", '-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG')
        nat.add("KUBE-MARK-DROP", f"-j MARK --set-xmark {DROP_MARK}")
        nat.add("KUBE-MARK-MASQ", f"-j MARK --set-xmark {MASQ_MARK}")
        nat.add("KUBE-POSTROUTING", f"-m mark ! --mark {MASQ_MARK} -j RETURN")
        nat.add("KUBE-POSTROUTING", "-j MARK --set-xmark 0x4000/0x0")
        nat.add("KUBE-POSTROUTING", '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully')
        pc = POD_CIDR[family]
        nat.add("FLANNEL-POSTRTG", '-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN')
        nat.add("FLANNEL-POSTRTG", f'-s {pc} -d {pc} -m comment --comment "flanneld masq" -j RETURN')
        nat.add("FLANNEL-POSTRTG", f'-s {pc} ! -d {"224.0.0.0/4" if not v6 else "ff00::/8"} -m comment --comment "flanneld masq" -j MASQUERADE --random-fully')

        fw_chains: List[Tuple[str, str, str]] = []  # (chain, service port name, EXT chain)
        nodeport_rules: List[str] = []
        for sp in self.services:
            if family not in sp.families:
                continue
            self._render_service(family, sp, filt, nat, fw_chains, nodeport_rules, slash, reject)
        for r in nodeport_rules:
            nat.add("KUBE-NODEPORTS", r)
        nat.add(
            "KUBE-SERVICES",
            '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
            "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        )

        # fill up to the rule target with loadBalancerSourceRanges in the KUBE-FW chains
        tables = (raw, mangle, filt, nat)
        total = sum(t.n_rules() for t in tables)
        deficit = self.target_rules - total
        self._fill_source_ranges(family, nat, fw_chains, deficit)

        out: List[str] = []
        tool = "ip6tables-save" if v6 else "iptables-save"
        for t in tables:
            out.append(f"# Generated by {tool} v1.8.9 (nf_tables) on {HEADER_DATE}")
            t.render(out)
            out.append(f"# Completed on {HEADER_DATE}")
        n_rules = sum(t.n_rules() for t in tables)
        n_chains = sum(len(t.user) for t in tables)
        return "\n".join(out) + "\n", n_rules, n_chains

    def _host_firewall(self, family: str, filt: Table, icmp: str) -> None:
        v6 = family == V6
        adm = "2001:db8:100::/48" if v6 else "198.51.100.0/24"
        nodes = "2001:db8:1::/64" if v6 else "192.0.2.0/24"
        mon = "2001:db8:300::/56" if v6 else "203.0.113.0/26"
        if v6:
            for t in ("destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem",
                      "echo-request", "router-advertisement", "neighbour-solicitation", "neighbour-advertisement"):
                filt.add("INPUT", f"{icmp} {t} -j ACCEPT")
        else:
            for t in ("echo-request", "destination-unreachable", "time-exceeded"):
                filt.add("INPUT", f"{icmp} {t} -j ACCEPT")
        filt.add("INPUT", f'-s {adm} -p tcp -m tcp --dport 22 -m comment --comment "ssh from admin net" -j ACCEPT')
        filt.add("INPUT", "-p tcp -m multiport --dports 80,443 -m comment --comment \"ingress\" -j ACCEPT")
        filt.add("INPUT", "-p udp -m udp --dport 443 -m comment --comment \"ingress quic\" -j ACCEPT")
        filt.add("INPUT", f"-s {nodes} -p tcp -m tcp --dport 6443 -j ACCEPT")
        filt.add("INPUT", f"-s {adm} -p tcp -m tcp --dport 6443 -j ACCEPT")
        if not v6:
            # kubelet API only from the node network over IPv4; nothing for IPv6 (policy DROP)
            filt.add("INPUT", f"-s {nodes} -p tcp -m tcp --dport 10250 -j ACCEPT")
        filt.add("INPUT", "-p tcp -m tcp --dport 10256 -m comment --comment \"kube-proxy healthz\" -j ACCEPT")
        filt.add("INPUT", "-p tcp -m multiport --dports 2379:2380 -j HOST-ETCD")
        filt.add("INPUT", f"-s {nodes} -p udp -m udp --dport 8472 -m comment --comment \"flannel vxlan\" -j ACCEPT")
        if v6:
            # the IPv6 bypass: node-exporter open to the world over IPv6
            filt.add("INPUT", "-p tcp -m tcp --dport 9100 -j ACCEPT")
        else:
            filt.add("INPUT", f"-s {mon} -p tcp -m tcp --dport 9100 -j ACCEPT")
        filt.add("INPUT", "-p tcp -m tcp --dport 30000:32767 -m comment --comment \"nodeports\" -j ACCEPT")
        filt.add("INPUT", "-p udp -m udp --dport 30000:32767 -m comment --comment \"nodeports\" -j ACCEPT")
        filt.add("INPUT", "-p tcp -m tcp --dport 2222 -j ACCEPT")
        filt.add("INPUT", "-p tcp -m tcp --dport 111 -j REJECT --reject-with tcp-reset")
        filt.add("INPUT", "-p udp -m udp --dport 111 -j DROP")
        filt.add("INPUT", "-m limit --limit 5/min -j LOG --log-prefix \"input drop: \"")
        filt.add("HOST-ETCD", f"-s {nodes} -j ACCEPT")
        filt.add("HOST-ETCD", f"-s {NODE_IP2[family]}{'/128' if v6 else '/32'} -j ACCEPT")
        filt.add("HOST-ETCD", "-j RETURN")

    def _render_service(self, family, sp: ServicePort, filt, nat, fw_chains, nodeport_rules, slash, reject) -> None:
        proto = sp.protocol
        spn = sp.spn
        cip = sp.cluster_ip[family]
        if not sp.endpoints:
            filt.add(
                "KUBE-SERVICES",
                f'-d {cip}{slash} -p {proto} -m comment --comment "{spn} has no endpoints" -m {proto} --dport {sp.port} '
                f"-j REJECT --reject-with {reject}",
            )
            if sp.node_port:
                filt.add(
                    "KUBE-EXTERNAL-SERVICES",
                    f'-p {proto} -m comment --comment "{spn} has no endpoints" -m addrtype --dst-type LOCAL '
                    f"-m {proto} --dport {sp.node_port} -j REJECT --reject-with {reject}",
                )
            return
        svc = sp.chain("KUBE-SVC-")
        ext = sp.chain("KUBE-EXT-")
        nat.chain(svc)
        dst = f"-d {cip}{slash} " if self.dispatch == "addr" else ""
        nat.add("KUBE-SERVICES", f'{dst}-p {proto} -m comment --comment "{spn} cluster IP" -m {proto} --dport {sp.port} -j {svc}')
        nat.add(svc, f'! -s {POD_CIDR[family]} -d {cip}{slash} -p {proto} -m comment --comment "{spn} cluster IP" -m {proto} --dport {sp.port} -j KUBE-MARK-MASQ')
        n = len(sp.endpoints)
        for i, ep in enumerate(sp.endpoints):
            sep = sp.sep_chain(family, ep)
            epx = sp.ep_text(family, ep)
            if i < n - 1:
                prob = probability_text(1.0 / (n - i))
                nat.add(svc, f'-m comment --comment "{spn} -> {epx}" -m statistic --mode random --probability {prob} -j {sep}')
            else:
                nat.add(svc, f'-m comment --comment "{spn} -> {epx}" -j {sep}')
            nat.chain(sep)
            nat.add(sep, f'-s {ep.ip[family]}{slash} -m comment --comment "{spn}" -j KUBE-MARK-MASQ')
            nat.add(sep, f'-p {proto} -m comment --comment "{spn}" -m {proto} -j DNAT --to-destination {epx}')
        if sp.svc_type == "ClusterIP":
            return
        nat.chain(ext)
        if sp.etp_local:
            svl = sp.chain("KUBE-SVL-")
            nat.chain(svl)
            nat.add(ext, f'-s {POD_CIDR[family]} -m comment --comment "pod traffic for {spn} external destinations" -j {svc}')
            nat.add(ext, f'-m comment --comment "masquerade LOCAL traffic for {spn} external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ')
            nat.add(ext, f'-m comment --comment "route LOCAL traffic for {spn} external destinations" -m addrtype --src-type LOCAL -j {svc}')
            nat.add(ext, f"-j {svl}")
            local = [ep for ep in sp.endpoints if ep.local]
            if not local:
                nat.add(svl, f'-m comment --comment "{spn} has no local endpoints" -j KUBE-MARK-DROP')
            for i, ep in enumerate(local):
                sep = sp.sep_chain(family, ep)
                epx = sp.ep_text(family, ep)
                if i < len(local) - 1:
                    prob = probability_text(1.0 / (len(local) - i))
                    nat.add(svl, f'-m comment --comment "{spn} -> {epx}" -m statistic --mode random --probability {prob} -j {sep}')
                else:
                    nat.add(svl, f'-m comment --comment "{spn} -> {epx}" -j {sep}')
            if sp.health_port:
                filt.add(
                    "KUBE-NODEPORTS",
                    f'-p tcp -m comment --comment "{spn} health check node port" -m tcp --dport {sp.health_port} -j ACCEPT',
                )
        else:
            nat.add(ext, f'-m comment --comment "masquerade traffic for {spn} external destinations" -j KUBE-MARK-MASQ')
            nat.add(ext, f"-j {svc}")
        nodeport_rules.append(f'-p {proto} -m comment --comment "{spn}" -m {proto} --dport {sp.node_port} -j {ext}')
        for eip in sp.external_ips.get(family, []):
            nat.add("KUBE-SERVICES", f'-d {eip}{slash} -p {proto} -m comment --comment "{spn} external IP" -m {proto} --dport {sp.port} -j {ext}')
        if sp.svc_type == "LoadBalancer":
            lb = sp.lb_ip[family]
            target = ext
            if sp.source_ranges:
                fw = sp.chain("KUBE-FW-")
                nat.chain(fw)
                fw_chains.append((fw, spn, ext))
                target = fw
                filt.add(
                    "KUBE-PROXY-FIREWALL",
                    f'-d {lb}{slash} -p {proto} -m comment --comment "{spn} traffic not accepted by {fw}" -m {proto} --dport {sp.port} -j DROP',
                )
            nat.add("KUBE-SERVICES", f'-d {lb}{slash} -p {proto} -m comment --comment "{spn} loadbalancer IP" -m {proto} --dport {sp.port} -j {target}')

    def _fill_source_ranges(self, family: str, nat: Table, fw_chains: List[Tuple[str, str, str]], deficit: int) -> None:
        """Give each KUBE-FW chain its allowed source ranges (at least one), sized so the family
        reaches the rule target, then the final drop of everything else."""
        if not fw_chains:
            return
        rng = self.rng
        # each FW chain gets >= 1 range rule and 1 final KUBE-MARK-DROP rule
        spare = max(0, deficit - 2 * len(fw_chains))
        weights = [rng.uniform(0.3, 1.7) for _ in fw_chains]
        total_w = sum(weights)
        counts = [1 + int(spare * w / total_w) for w in weights]
        counts[0] += max(0, deficit - 2 * len(fw_chains) - sum(c - 1 for c in counts))
        for (fw, spn, ext), count in zip(fw_chains, counts):
            for _ in range(count):
                nat.add(fw, f'-s {self._source_range(family)} -m comment --comment "{spn} loadbalancer IP" -j {ext}')
            nat.add(fw, f'-m comment --comment "{spn} loadbalancer IP" -j KUBE-MARK-DROP')

    def _source_range(self, family: str) -> str:
        rng = self.rng
        if family == V4:
            plen = rng.choice((16, 20, 22, 24, 24, 24, 27, 28, 32, 32))
            addr = (10 << 24) | (rng.randrange(128, 256) << 16) | (rng.randrange(0, 256) << 8) | rng.randrange(0, 256)
            net = ipaddress.ip_network((addr, plen), strict=False)
            return str(net)
        plen = rng.choice((48, 56, 64, 64, 64, 128))
        addr = (0x20010DB8 << 96) | (0xF << 92) | (rng.getrandbits(60) << 32) | rng.getrandbits(32)
        return str(ipaddress.ip_network((addr, plen), strict=False))

    # ---- sockets ----------------------------------------------------------------------------
    def render_sockets(self) -> str:
        rng = random.Random(self.rng.random())
        rows: List[Tuple[str, str, str, str, str, str, str]] = []
        seen: Set[Tuple[str, str, int]] = set()
        ino = [40000]
        sk = [0x1000]

        # process name -> (systemd unit or "kubepods" for containers, uid)
        procs = {
            "sshd": ("ssh.service", 0), "kubelet": ("kubelet.service", 0), "kube-proxy": ("kubepods", 0),
            "etcd": ("etcd.service", 0), "kube-apiserver": ("kubepods", 0), "containerd": ("containerd.service", 0),
            "node_exporter": ("node-exporter.service", 65534), "chronyd": ("chrony.service", 105),
            "systemd-resolve": ("systemd-resolved.service", 101), "node-cache": ("kubepods", 0),
            "nginx": ("kubepods", 101), "rpcbind": ("rpcbind.service", 0),
            "envoy": ("kubepods", 1000), "java": ("kubepods", 1000), "python3": ("kubepods", 1000),
            "node": ("kubepods", 1000), "redis-server": ("kubepods", 999), "postgres": ("kubepods", 999),
            "dnsmasq": ("dnsmasq.service", 0), "haproxy": ("haproxy.service", 99),
        }
        # (name, instance) -> [pid, cgroup, next fd]
        instances: Dict[Tuple[str, int], List] = {}

        def proc_info(proc: str, inst: int) -> Tuple[int, int, str]:
            key = (proc, inst)
            if key not in instances:
                unit, _uid = procs[proc]
                if unit == "kubepods":
                    cg = (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{rng.getrandbits(32):08x}"
                          f".slice/cri-containerd-{rng.getrandbits(64):016x}.scope")
                else:
                    cg = f"/system.slice/{unit}"
                instances[key] = [rng.randrange(300, 4_000_000), cg, 3 + rng.randrange(0, 20)]
            info = instances[key]
            info[2] += 1
            return info[0], info[2], info[1]

        def add(proto: str, addr: str, port: int, proc: Optional[str], v6only: Optional[int] = None,
                iface: str = "", inst: int = 0) -> bool:
            key = (proto, addr, port)
            if key in seen:
                return False
            seen.add(key)
            if addr == "*":
                local, peer = "*", "*"
            elif ":" in addr:
                local, peer = f"[{addr}]{iface}", "[::]"
            else:
                local, peer = f"{addr}{iface}", "0.0.0.0"
            state = "LISTEN" if proto == "tcp" else "UNCONN"
            sendq = rng.choice(("128", "4096", "511", "1024")) if proto == "tcp" else "0"
            extra = []
            if proc is not None:
                pid, fd, cg = proc_info(proc, inst)
                extra.append(f'users:(("{proc}",pid={pid},fd={fd}))')
                uid = procs[proc][1]
                if uid:
                    extra.append(f"uid:{uid}")
            else:
                cg = "/"  # kernel sockets (vxlan) have no process
            ino[0] += rng.randrange(1, 40)
            sk[0] += 1
            extra.append(f"ino:{ino[0]} sk:{sk[0]:x} cgroup:{cg}")
            if v6only is not None:
                extra.append(f"v6only:{v6only}")
            extra.append("<->")
            rows.append((proto, state, sendq, local, str(port), peer, " ".join(extra)))
            return True

        n4, n6 = NODE_IP[V4], NODE_IP[V6]
        # well-known host services
        add("tcp", "0.0.0.0", 22, "sshd"); add("tcp", "::", 22, "sshd", 1)
        add("tcp", "*", 2222, "sshd", 0, inst=1)
        add("tcp", "*", 10250, "kubelet", 0); add("tcp", "127.0.0.1", 10248, "kubelet")
        add("tcp", "*", 10256, "kube-proxy", 0); add("tcp", "127.0.0.1", 10249, "kube-proxy")
        add("tcp", "*", 6443, "kube-apiserver", 0)
        add("tcp", n4, 2379, "etcd"); add("tcp", "127.0.0.1", 2379, "etcd"); add("tcp", n4, 2380, "etcd")
        add("tcp", n6, 2379, "etcd", 1); add("tcp", n6, 2380, "etcd", 1)
        add("tcp", "127.0.0.1", 41235, "containerd")
        add("tcp", "*", 9100, "node_exporter", 0)
        add("udp", "127.0.0.1", 323, "chronyd"); add("udp", "::1", 323, "chronyd", 1)
        add("udp", "0.0.0.0", 123, "chronyd"); add("udp", "::", 123, "chronyd", 1)
        add("udp", "127.0.0.53", 53, "systemd-resolve", iface="%lo"); add("tcp", "127.0.0.53", 53, "systemd-resolve", iface="%lo")
        add("udp", NODELOCAL_DNS[V4], 53, "node-cache"); add("tcp", NODELOCAL_DNS[V4], 53, "node-cache")
        add("udp", NODELOCAL_DNS[V6], 53, "node-cache", 1); add("tcp", NODELOCAL_DNS[V6], 53, "node-cache", 1)
        add("udp", "0.0.0.0", 8472, None)
        add("tcp", "*", 80, "nginx", 0); add("tcp", "*", 443, "nginx", 0); add("udp", "*", 443, "nginx", 0)
        add("tcp", "0.0.0.0", 111, "rpcbind"); add("udp", "0.0.0.0", 111, "rpcbind")
        add("tcp", "::", 111, "rpcbind", 1); add("udp", "::", 111, "rpcbind", 1)

        # ports the rules talk about: node ports (held by kube-proxy on the wildcard), health
        # check node ports, the services' ports and target ports (host-network pods)
        node_ports = sorted({(sp.protocol, sp.node_port) for sp in self.services if sp.node_port})
        health = sorted({sp.health_port for sp in self.services if sp.health_port})
        svc_ports = sorted({(p[1], p[2]) for p in PORT_CHOICES} | {(p[1], p[3]) for p in PORT_CHOICES})
        for hp in health:
            if len(rows) >= self.n_sockets * 0.1:
                break
            add("tcp", "*", hp, "kube-proxy", 0)
        apps = ["envoy", "java", "python3", "node", "redis-server", "postgres", "haproxy", "dnsmasq", "nginx"]
        bind_choices = [
            ("0.0.0.0", None, 25), ("*", 0, 25), ("::", 1, 10), ("127.0.0.1", None, 12), ("::1", 1, 5),
            (n4, None, 10), (NODE_IP2[V4], None, 5), (n6, 1, 6), (NODE_IP2[V6], 1, 2),
        ]
        bind_pop = [b for b in bind_choices for _ in range(b[2])]
        nodeport_binds = [("*", 0), ("*", 0), ("0.0.0.0", None), ("::", 1)]
        attempts = 0
        while len(rows) < self.n_sockets and attempts < self.n_sockets * 50:
            attempts += 1
            r = rng.random()
            if r < 0.3 and node_ports:
                proto, port = rng.choice(node_ports)
                addr, v6only = rng.choice(nodeport_binds)
                add(proto, addr, port, "kube-proxy", v6only)
                continue
            if r < 0.6:
                proto, port = rng.choice(svc_ports)
            else:
                proto = "tcp" if rng.random() < 0.75 else "udp"
                port = rng.choice((rng.randrange(1024, 30000), rng.randrange(32768, 65536), rng.randrange(8000, 9999)))
            addr, v6only, _w = rng.choice(bind_pop)
            add(proto, addr, port, rng.choice(apps), v6only, inst=rng.randrange(0, 40))

        # ss prints udp before tcp
        rows.sort(key=lambda r: 0 if r[0] == "udp" else 1)
        wa = max(len(r[3]) for r in rows)
        wp = max(len(r[4]) for r in rows) + 1
        wpa = max(len(r[5]) for r in rows)
        lines = [f"Netid State  Recv-Q Send-Q {'Local Address'.rjust(wa)}:{'Port'.ljust(wp)} {'Peer Address'.rjust(wpa)}:PortProcess"]
        for proto, state, sendq, local, port, peer, rest in rows:
            lines.append(f"{proto:<5} {state:<6} {'0':<6} {sendq:<6} {local:>{wa}}:{port:<{wp}} {peer:>{wpa}}:*    {rest}")
        return "\n".join(lines) + "\n"


def count_ruleset(text: str) -> Tuple[int, int]:
    """(rules, user chains) of an iptables-save text."""
    rules = chains = 0
    for line in text.splitlines():
        if line.startswith("-A "):
            rules += 1
        elif line.startswith(":") and line.split()[1:2] == ["-"]:
            chains += 1
    return rules, chains


def generate(out_dir: str, chains: int = 10000, rules: int = 120000, sockets: int = 2000, seed: int = 1) -> Dict[str, object]:
    """Write the three files into out_dir; return their paths and sizes."""
    gen = Generator(seed, chains, rules, sockets)
    gen.make_services()
    os.makedirs(out_dir, exist_ok=True)
    info: Dict[str, object] = {"seed": seed, "services": len(gen.services)}
    for family, fname in ((V4, "iptables.rules"), (V6, "ip6tables.rules")):
        text, n_rules, n_chains = gen.render_family(family)
        path = os.path.join(out_dir, fname)
        with open(path, "w", encoding="ascii") as fh:
            fh.write(text)
        info[family] = {"path": path, "rules": n_rules, "chains": n_chains, "bytes": len(text)}
    text = gen.render_sockets()
    path = os.path.join(out_dir, "sockets.txt")
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)
    info["sockets"] = {"path": path, "count": text.count("\n") - 1}
    return info


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "kube"),
                    help="output directory (default: bench/out/kube)")
    ap.add_argument("--chains", type=int, default=10000, help="user chains per family (default 10000)")
    ap.add_argument("--rules", type=int, default=120000, help="rules per family (default 120000)")
    ap.add_argument("--sockets", type=int, default=2000, help="listening sockets (default 2000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = ap.parse_args(argv)
    if args.chains < 20 or args.rules < 100 or args.sockets < 40:
        ap.error("need at least --chains 20, --rules 100, --sockets 40")
    info = generate(args.out, args.chains, args.rules, args.sockets, args.seed)
    for family in (V4, V6):
        fi = info[family]
        print(f"{fi['path']}: {fi['rules']} rules, {fi['chains']} user chains, {fi['bytes']} bytes")
    print(f"{info['sockets']['path']}: {info['sockets']['count']} sockets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
