#!/usr/bin/env python3
"""Benchmark: `twinwall audit --nft FILE` offline on a large native nftables ruleset, against
`nft -j list ruleset` of the same ruleset loaded in a throw-away network namespace, measured in
the same run.

Target (issue 3): twinwall's wall time <= 0.5x the reference's.

    sudo .venv/bin/python bench/bench_nft.py                 # generate (cached), load, measure
    sudo .venv/bin/python bench/bench_nft.py --json          # machine-readable result on stdout
    .venv/bin/python bench/bench_nft.py --data DIR --twinwall-only   # only time twinwall on DIR/nft.json

The ruleset has the shape of the foundation benchmark (bench/gen_kube.py: the same kube services,
endpoints and socket list), written the way kube-proxy's nftables mode and a host firewall write
it: per family a `kube-proxy` table (nat/filter base chains, verdict maps keyed on
`ip daddr . meta l4proto . th dport`, one chain per service, endpoint and load-balancer
firewall, `numgen random mod N vmap` endpoint selection) and one `inet host-firewall` table with
two blocklist sets of 100k elements each (IPv4 and IPv6 interval sets), a verdict map of the
host's ports and a management chain. Defaults: ~10k chains and ~100k rules in total.

Steps: generate `ruleset.nft` + `sockets.txt` (cached per parameters), `nft -f` it into a fresh
namespace `tw-bench-<hex>`, then round-robin `repeat` times: `nft -j list ruleset` in the
namespace (its output is the `nft.json` twinwall reads) and `twinwall audit --nft nft.json
--sockets sockets.txt --format json` (offline, outside the namespace). The namespace is deleted
at the end, also on failure. Exit: 0 target met, 1 missed, 2 error.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _measure as M  # noqa: E402
import bench_audit as BA  # noqa: E402
import gen_kube  # noqa: E402

V4, V6 = gen_kube.V4, gen_kube.V6
NFT_FAMILY = {V4: "ip", V6: "ip6"}
ADDR = {V4: "ip", V6: "ip6"}
LOOPBACK = {V4: "127.0.0.0/8", V6: "::1"}
MGMT = {V4: "198.51.100.0/24", V6: "2001:db8:100::/48"}
NODES = {V4: "192.0.2.0/24", V6: "2001:db8:1::/64"}


# --------------------------------------------------------------------------------------------
# generation


class NftWriter:
    """Collects one table's chains and maps and renders them as an nft -f script."""

    def __init__(self, family: str, name: str):
        self.family = family
        self.name = name
        self.chains: Dict[str, List[str]] = {}
        self.heads: Dict[str, str] = {}
        self.maps: List[str] = []

    def chain(self, name: str, head: str = "") -> List[str]:
        if name not in self.chains:
            self.chains[name] = []
            if head:
                self.heads[name] = head
        return self.chains[name]

    def render(self, out: List[str]) -> None:
        out.append(f"table {self.family} {self.name} {{")
        out.extend(self.maps)
        for name, rules in self.chains.items():
            out.append(f"\tchain {name} {{")
            if name in self.heads:
                out.append(f"\t\t{self.heads[name]}")
            out.extend(f"\t\t{r}" for r in rules)
            out.append("\t}")
        out.append("}")

    def n_rules(self) -> int:
        return sum(len(r) for r in self.chains.values())


def _elements(items: List[str], per_line: int = 64) -> str:
    lines = []
    for i in range(0, len(items), per_line):
        lines.append(", ".join(items[i:i + per_line]))
    return ",\n\t\t\t".join(lines)


def _map(name: str, type_: str, items: List[str], flags: str = "") -> str:
    seen = set()
    unique = []
    for item in items:  # a key may come twice (shared LB/external IPs): the first one wins
        key = item.split(" : ")[0]
        if key not in seen:
            seen.add(key)
            unique.append(item)
    items = unique
    body = f"\tmap {name} {{\n\t\ttype {type_}\n"
    if flags:
        body += f"\t\tflags {flags}\n"
    if items:
        body += f"\t\telements = {{ {_elements(items)} }}\n"
    return body + "\t}"


def _set(name: str, type_: str, items: List[str], flags: str = "") -> str:
    return _map(name, type_, items, flags).replace("\tmap ", "\tset ", 1)


def _cname(prefix: str, sp, extra: str = "") -> str:
    return f"{prefix}-{gen_kube.kube_hash(sp.spn + sp.protocol + extra)[:8]}-{sp.ns}-{sp.name}-{sp.port_name}"


def kube_table(gen: "gen_kube.Generator", family: str, fw_rule_budget: int) -> NftWriter:
    """kube-proxy's nftables-mode table for one family (chain and map layout of kube-proxy)."""
    t = NftWriter(NFT_FAMILY[family], "kube-proxy")
    ip = ADDR[family]
    pod = gen_kube.POD_CIDR[family]
    t.chain("nat-prerouting", "type nat hook prerouting priority dstnat; policy accept;").append("jump services")
    t.chain("nat-output", "type nat hook output priority -100; policy accept;").append(
        f"{ip} daddr != {LOOPBACK[family]} jump services")
    t.chain("nat-postrouting", "type nat hook postrouting priority srcnat; policy accept;").append("jump masquerading")
    t.chain("masquerading").extend([
        "meta mark & 0x00004000 == 0x00000000 return",
        "meta mark set meta mark ^ 0x00004000",
        "masquerade fully-random",
    ])
    t.chain("mark-for-masquerade").append("meta mark set meta mark | 0x00004000")
    t.chain("filter-prerouting", "type filter hook prerouting priority -110; policy accept;").append(
        "ct state new jump firewall-check")
    t.chain("filter-input", "type filter hook input priority -110; policy accept;").extend([
        "ct state new jump nodeport-endpoints-check",
        "ct state new jump service-endpoints-check",
    ])
    t.chain("filter-forward", "type filter hook forward priority -110; policy accept;").extend([
        "ct state new jump service-endpoints-check",
        "ct state new jump cluster-ips-check",
    ])
    t.chain("filter-output", "type filter hook output priority -110; policy accept;").extend([
        "ct state new jump service-endpoints-check",
        "ct state new jump firewall-check",
    ])
    t.chain("firewall-check").append(f"{ip} daddr . meta l4proto . th dport vmap @firewall-ips")
    t.chain("service-endpoints-check").append(f"{ip} daddr . meta l4proto . th dport vmap @no-endpoint-services")
    t.chain("nodeport-endpoints-check").append(
        "fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports")
    t.chain("cluster-ips-check").extend([
        f"{ip} daddr @cluster-ips reject",
        f"{ip} daddr {gen_kube.CLUSTER_NET[family]} drop",
    ])
    t.chain("reject-chain").append("reject")
    t.chain("services").extend([
        f"{ip} daddr . meta l4proto . th dport vmap @service-ips",
        f"fib daddr type local {ip} daddr != {LOOPBACK[family]} jump nodeports",
    ])
    t.chain("nodeports").append("meta l4proto . th dport vmap @service-nodeports")

    svc_ips, nodeports, fw_ips, no_ep, no_ep_np, cluster = [], [], [], [], [], set()
    fw_chains: List[Tuple[str, object]] = []
    for sp in gen.services:
        if family not in sp.families:
            continue
        cip = sp.cluster_ip[family]
        cluster.add(cip)
        key = f"{cip} . {sp.protocol} . {sp.port}"
        if not sp.endpoints:
            no_ep.append(f"{key} : goto reject-chain")
            if sp.node_port:
                no_ep_np.append(f"{sp.protocol} . {sp.node_port} : goto reject-chain")
            continue
        svc = _cname("service", sp)
        rules = t.chain(svc)
        rules.append(f"{ip} daddr {cip} {sp.protocol} dport {sp.port} {ip} saddr != {pod} jump mark-for-masquerade")
        eps = []
        for ep in sp.endpoints:
            addr = ep.ip[family]
            epc = _cname("endpoint", sp, addr)
            eps.append(epc)
            target = f"[{addr}]:{sp.target_port}" if family == V6 else f"{addr}:{sp.target_port}"
            t.chain(epc).extend([
                f"{ip} saddr {addr} jump mark-for-masquerade",
                f"meta l4proto {sp.protocol} dnat to {target}",
            ])
        if len(eps) == 1:
            rules.append(f"goto {eps[0]}")
        else:
            vm = ", ".join(f"{i} : goto {c}" for i, c in enumerate(eps))
            rules.append(f"numgen random mod {len(eps)} vmap {{ {vm} }}")
        svc_ips.append(f"{key} : goto {svc}")
        if sp.svc_type != "ClusterIP":
            ext = _cname("external", sp)
            t.chain(ext).extend(["jump mark-for-masquerade", f"goto {svc}"])
            if sp.node_port:
                nodeports.append(f"{sp.protocol} . {sp.node_port} : goto {ext}")
            for lb in ([sp.lb_ip[family]] if sp.lb_ip.get(family) else []) + sp.external_ips.get(family, []):
                svc_ips.append(f"{lb} . {sp.protocol} . {sp.port} : goto {ext}")
                if sp.source_ranges:
                    fw = _cname("firewall", sp)
                    if fw not in t.chains:
                        t.chain(fw)
                        fw_chains.append((fw, sp))
                    fw_ips.append(f"{lb} . {sp.protocol} . {sp.port} : goto {fw}")
    # loadBalancerSourceRanges: spread the rule budget over the firewall chains
    if fw_chains:
        per = max(1, fw_rule_budget // len(fw_chains))
        extra = max(0, fw_rule_budget - per * len(fw_chains))
        for i, (fw, _sp) in enumerate(fw_chains):
            rules = t.chain(fw)
            for _ in range(per + (extra if i == 0 else 0)):
                rules.append(f"{ip} saddr {gen._source_range(family)} return")
            rules.append("drop")
    t.maps += [
        _map("service-ips", f"{'ipv4_addr' if family == V4 else 'ipv6_addr'} . inet_proto . inet_service : verdict",
             svc_ips),
        _map("service-nodeports", "inet_proto . inet_service : verdict", nodeports),
        _map("firewall-ips", f"{'ipv4_addr' if family == V4 else 'ipv6_addr'} . inet_proto . inet_service : verdict",
             fw_ips),
        _map("no-endpoint-services",
             f"{'ipv4_addr' if family == V4 else 'ipv6_addr'} . inet_proto . inet_service : verdict", no_ep),
        _map("no-endpoint-nodeports", "inet_proto . inet_service : verdict", no_ep_np),
        _set("cluster-ips", "ipv4_addr" if family == V4 else "ipv6_addr", sorted(cluster)),
    ]
    return t


def blocklist(family: str, n: int, seed: int) -> List[str]:
    """n distinct addresses and prefixes in a range the rest of the ruleset does not use."""
    rng = random.Random(f"block-{family}-{seed}")
    out = set()
    if family == V4:
        base, bits = int(ipaddress.IPv4Address("100.64.0.0")), 22  # 100.64.0.0/10 (no traffic sent)
        while len(out) < n:
            off = rng.getrandbits(bits) & ~0xF  # aligned /28 blocks: no overlaps
            if rng.random() < 0.1:
                out.add(f"{ipaddress.IPv4Address(base + off)}/28")
            else:
                out.add(str(ipaddress.IPv4Address(base + off + rng.randrange(16))))
        # drop single addresses inside chosen /28s (nft refuses overlapping intervals)
        blocks = {a.split("/")[0] for a in out if "/" in a}
        out = {a for a in out if "/" in a or str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(a)) & ~0xF)) not in blocks}
    else:
        base = int(ipaddress.IPv6Address("2001:db8:f000::"))
        while len(out) < n:
            off = rng.getrandbits(80) << 8
            if rng.random() < 0.1:
                out.add(f"{ipaddress.IPv6Address(base + off)}/120")
            else:
                out.add(str(ipaddress.IPv6Address(base + off + rng.randrange(1, 255))))
    return sorted(out)


def host_table(family_ports: Dict[str, List[int]], set_elements: int, seed: int) -> NftWriter:
    t = NftWriter("inet", "host-firewall")
    t.maps += [
        _set("blocklist4", "ipv4_addr", blocklist(V4, set_elements, seed), "interval"),
        _set("blocklist6", "ipv6_addr", blocklist(V6, set_elements, seed), "interval"),
        _set("mgmt4", "ipv4_addr", [MGMT[V4]], "interval"),
        _set("mgmt6", "ipv6_addr", [MGMT[V6]], "interval"),
    ]
    tcp = sorted(set(family_ports["tcp"]))
    rng = random.Random(f"host-{seed}")
    verdicts = []
    for p in tcp:
        r = rng.random()
        v = "accept" if r < 0.55 else ("jump mgmt-only" if r < 0.9 else "drop")
        verdicts.append(f"{p} : {v}")
    t.maps.append(_map("tcp-services", "inet_service : verdict", verdicts))
    udp = sorted(set(family_ports["udp"]))[:40]
    inp = t.chain("input", "type filter hook input priority filter; policy drop;")
    inp.extend([
        "ct state vmap { established : accept, related : accept, invalid : drop }",
        'iifname "lo" accept',
        "ip saddr 127.0.0.0/8 drop",
        "ip6 saddr ::1 drop",
        "ip saddr @blocklist4 counter drop",
        "ip6 saddr @blocklist6 counter drop",
        "icmp type { echo-request, destination-unreachable, time-exceeded } accept",
        "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, "
        "echo-request, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept",
        f"ip saddr {NODES[V4]} tcp dport {{ 10250, 2379-2380 }} accept",
        f"ip6 saddr {NODES[V6]} tcp dport {{ 10250, 2379-2380 }} accept",
        "tcp dport vmap @tcp-services",
        f"udp dport {{ {', '.join(str(p) for p in udp)} }} accept" if udp else "udp dport 53 accept",
        "limit rate 5/second log prefix \"host-firewall drop \"",
    ])
    t.chain("mgmt-only").extend([
        "ip saddr @mgmt4 accept",
        "ip6 saddr @mgmt6 accept",
        "ip saddr 203.0.113.0/26 tcp dport 9100 accept",
    ])
    fwd = t.chain("forward", "type filter hook forward priority filter; policy drop;")
    fwd.extend([
        "ct state established,related accept",
        f"ip saddr {gen_kube.POD_CIDR[V4]} accept",
        f"ip daddr {gen_kube.POD_CIDR[V4]} accept",
        f"ip6 saddr {gen_kube.POD_CIDR[V6]} accept",
        f"ip6 daddr {gen_kube.POD_CIDR[V6]} accept",
    ])
    return t


def socket_ports(sockets_text: str) -> Dict[str, List[int]]:
    out: Dict[str, List[int]] = {"tcp": [], "udp": []}
    for line in sockets_text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5 or parts[0] not in out:
            continue
        port = parts[4].rsplit(":", 1)[-1]
        if port.isdigit():
            out[parts[0]].append(int(port))
    return out


def generate(out_dir: str, chains: int, rules: int, sockets: int, set_elements: int, seed: int) -> Dict[str, object]:
    # per family half of the chain target; gen_kube counts iptables chains, which match
    # kube-proxy nftables mode's per-service chains closely
    gen = gen_kube.Generator(seed, max(20, chains // 2), rules, sockets)
    gen.make_services()
    sockets_text = gen.render_sockets()
    host = host_table(socket_ports(sockets_text), set_elements, seed)
    base = {}
    for family in (V4, V6):
        base[family] = kube_table(gen, family, 0)
    fixed = host.n_rules() + sum(t.n_rules() for t in base.values())
    budget = max(0, rules - fixed)
    tables = [kube_table(gen, V4, budget // 2), kube_table(gen, V6, budget - budget // 2), host]
    lines: List[str] = ["flush ruleset"]
    for t in tables:
        t.render(lines)
    text = "\n".join(lines) + "\n"
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "ruleset.nft"), "w", encoding="ascii") as fh:
        fh.write(text)
    with open(os.path.join(out_dir, "sockets.txt"), "w", encoding="ascii") as fh:
        fh.write(sockets_text)
    info = {
        "chains": sum(len(t.chains) for t in tables),
        "rules": sum(t.n_rules() for t in tables),
        "set_elements": set_elements,
        "sockets": sockets_text.count("\n") - 1,
        "services": len(gen.services),
    }
    with open(os.path.join(out_dir, "info.json"), "w", encoding="ascii") as fh:
        json.dump(info, fh, indent=1)
    return info


def ensure_data(args, log) -> Tuple[str, Dict[str, object]]:
    d = args.data or os.path.join(
        HERE, "out", f"nft-s{args.seed}-c{args.chains}-r{args.rules}-e{args.set_elements}-k{args.sockets}")
    info_path = os.path.join(d, "info.json")
    if args.data or (os.path.isfile(info_path) and not args.regen):
        if not os.path.isfile(info_path):
            raise M.MeasureError(f"--data {d}: no info.json (generate with bench_nft.py --out {d})")
        with open(info_path, encoding="ascii") as fh:
            return d, json.load(fh)
    log(f"generating {d} ...")
    return d, generate(d, args.chains, args.rules, args.sockets, args.set_elements, args.seed)


# --------------------------------------------------------------------------------------------
# measuring


def twinwall_argv(python: str, nft_json: str, sockets: str) -> List[str]:
    return [python, "-m", "twinwall", "audit", "--nft", nft_json, "--sockets", sockets, "--format", "json"]


def measure(args, d: str, log) -> Tuple[Optional[M.Measurement], Optional[M.Measurement]]:
    nft_json = os.path.join(d, "nft.json")
    sockets = os.path.join(d, "sockets.txt")
    out_json = os.path.join(d, "twinwall-audit.out")
    cand = M.Command("twinwall audit --nft", twinwall_argv(args.python, nft_json, sockets), ok_codes=(0, 1),
                     stdout_path=out_json, env=BA.twinwall_env(args.src), timeout_s=args.timeout)
    M.byte_compile(args.python, os.path.join(args.src or os.path.join(REPO, "src"), "twinwall"))
    if args.twinwall_only:
        if not os.path.isfile(nft_json):
            raise M.MeasureError(f"{nft_json} is missing: run once without --twinwall-only (root)")
        return None, M.measure([cand], args.repeat, log)[cand.name]
    if shutil.which("nft") is None:
        raise M.MeasureError("nft is not installed (apt-get install nftables)")
    ref = M.Command("nft -j list ruleset", ["nft", "-j", "list", "ruleset"], netns=True, stdout_path=nft_json,
                    timeout_s=args.timeout)
    cmds = [ref] if args.reference_only else [ref, cand]
    with M.NetNamespace() as ns:
        log(f"loading {os.path.join(d, 'ruleset.nft')} into {ns.name} (nft -f) ...")
        res = subprocess.run(ns.wrap(["nft", "-f", os.path.join(d, "ruleset.nft")]), capture_output=True, text=True)
        if res.returncode != 0:
            raise M.MeasureError(f"nft -f failed: {res.stderr.strip()[-2000:]}")
        ms = M.measure(cmds, args.repeat, log, ns=ns)
    return ms[ref.name], ms.get(cand.name)


def check_output(path: str) -> str:
    doc = M.load_json_output(path, "twinwall audit")
    services = doc.get("services")
    if not isinstance(services, list):
        raise M.MeasureError("twinwall audit JSON has no 'services' list")
    statuses: Dict[str, int] = {}
    for s in services:
        for fam in ("ipv4", "ipv6"):
            st = (s.get(fam) or {}).get("status", "?")
            statuses[st] = statuses.get(st, 0) + 1
    tables = sorted({t for r in doc.get("host", {}).get("rulesets", []) for t in r.get("tables", [])})
    return f"{len(services)} services, statuses {statuses}, tables {tables}"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", metavar="DIR", help="use DIR/ruleset.nft, sockets.txt, info.json")
    ap.add_argument("--regen", action="store_true", help="generate again even if cached")
    ap.add_argument("--chains", type=int, default=10000, help="chains in total (default 10000)")
    ap.add_argument("--rules", type=int, default=100000, help="rules in total (default 100000)")
    ap.add_argument("--set-elements", type=int, default=100000, help="elements of each blocklist set (default 100000)")
    ap.add_argument("--sockets", type=int, default=2000, help="listening sockets (default 2000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per command (default 3)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs twinwall")
    ap.add_argument("--src", metavar="DIR", help="twinwall source tree to measure (default: this repository's src/)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--target", type=float, default=0.5, help="time ratio target (default 0.5)")
    ap.add_argument("--reference-only", action="store_true")
    ap.add_argument("--twinwall-only", action="store_true", help="no namespace: time twinwall on an existing nft.json")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    log = M.progress_log(args.quiet)

    try:
        d, info = ensure_data(args, log)
        ref, cand = measure(args, d, log)
        note = check_output(os.path.join(d, "twinwall-audit.out")) if cand else ""
    except M.MeasureError as exc:
        print(f"bench_nft: error: {exc}", file=sys.stderr)
        return 2
    ratio = cand.wall_s / ref.wall_s if (cand and ref and ref.wall_s > 0) else None
    passed = None if ratio is None else ratio <= args.target
    size = os.path.getsize(os.path.join(d, "nft.json")) if os.path.isfile(os.path.join(d, "nft.json")) else 0
    if args.json:
        print(json.dumps({
            "schema": "twinwall-bench/1", "benchmark": "nft", "repeat": args.repeat, "data": dict(info, dir=d, nft_json_bytes=size),
            "reference": ref.to_dict() if ref else None, "candidate": cand.to_dict() if cand else None,
            "time_ratio": None if ratio is None else round(ratio, 3), "target": args.target, "pass": passed,
            "output_check": note or None,
        }, indent=2))
    else:
        print(f"twinwall nft benchmark ({args.repeat} runs each: median time, max peak RSS)")
        print(f"  data: {d}: {info['chains']} chains, {info['rules']} rules, 2 sets of {info['set_elements']} elements, "
              f"{info['sockets']} sockets; nft.json {size / 1e6:.1f} MB")
        rows = [["", "time", "peak RSS"]]
        if ref:
            rows.append([ref.name + " (netns)", f"{ref.wall_s:.3f} s", M.fmt_kib(ref.maxrss_kib)])
        if cand:
            rows.append([cand.name, f"{cand.wall_s:.3f} s", M.fmt_kib(cand.maxrss_kib)])
        if ratio is not None:
            rows.append(["ratio twinwall/reference", f"{ratio:.2f}x", ""])
            rows.append(["target", f"<= {args.target:.2f}x", ""])
            rows.append(["verdict", M.verdict_text(passed), ""])
        print(M.table(rows))
        if note:
            print(f"  twinwall output: {note}")
    return 2 if passed is None and not (args.reference_only or args.twinwall_only) else (0 if passed in (None, True) else 1)


if __name__ == "__main__":
    sys.exit(main())
