#!/usr/bin/env python3
"""Benchmark: `twinwall scan` against `nmap -sT` on the same 1,000-port namespace target.

Creates its own two network namespaces (target and scanner, joined by a veth pair, documentation
addresses 192.0.2.0/24 and 2001:db8:5::/64), deletes them at the end even on failure. The target
has 1,000 TCP ports (30000-30999): 50 listeners (every 20th port, dual-stack), a DROP rule on
30500-30799 in both iptables and ip6tables (300 dropped ports, 15 of them with a listener), and
everything else closed. Each round times, in the same run and alternating the order:

    nmap -4 -sT -Pn -n -p 30000-30999 192.0.2.1          (nmap's default timing, -T3)
    nmap -6 -sT -Pn -n -p 30000-30999 2001:db8:5::1
    twinwall scan 192.0.2.1 --family ipv4 ...            (options printed below)
    twinwall scan 2001:db8:5::1 --family ipv6 ...

and prints the median wall-clock times, the ratio twinwall/nmap per family (target: <= 1.0) and
the accuracy: on how many of the 1,000 ports each tool agrees with the other and with the known
setup. Needs root, iproute2, iptables and nmap.

    sudo .venv/bin/python bench/bench_scan.py [--rounds 3] [--twinwall-args "..."]
    sudo .venv/bin/python bench/bench_scan.py --full     # every port, 1-65535, against nmap -T4
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_audit import twinwall_env

T4, T6 = "192.0.2.1", "2001:db8:5::1"
S4, S6 = "192.0.2.2", "2001:db8:5::2"
FIRST, LAST = 30000, 30999
LISTEN = list(range(FIRST, LAST + 1, 20))  # 50 listeners
DROP_LO, DROP_HI = 30500, 30799  # 300 dropped ports
# twinwall's defaults: like nmap it paces by congestion control (a window that grows while
# answers come back), under its politeness caps (--concurrency 500, --rate 20000).
DEFAULT_TWINWALL_ARGS = ""

LISTENERS = f"""
import socket, time
socks = []
for port in {LISTEN!r}:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(1024); socks.append(s)
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def rules(table_comment: str) -> str:
    return (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        f"-A INPUT -p tcp --dport {DROP_LO}:{DROP_HI} -m comment --comment {table_comment} -j DROP\n"
        "COMMIT\n"
    )


def expected_state(port: int) -> str:
    if DROP_LO <= port <= DROP_HI:
        return "filtered"
    return "open" if port in LISTEN else "closed"


def run(cmd: List[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def parse_nmap_xml(text: str) -> Dict[int, str]:
    states: Dict[int, str] = {}
    root = ET.fromstring(text)
    for host in root.iter("host"):
        for port in host.iter("port"):
            states[int(port.get("portid"))] = port.find("state").get("state")
        for extra in host.iter("extraports"):
            for reasons in extra.iter("extrareasons"):
                for part in (reasons.get("ports") or "").split(","):
                    if part:
                        lo, _, hi = part.partition("-")
                        for p in range(int(lo), int(hi or lo) + 1):
                            states[p] = extra.get("state")
    return states


def parse_twinwall_json(text: str, family: str) -> Dict[int, str]:
    doc = json.loads(text)
    return {r["port"]: r[family]["state"] for r in doc["results"] if r.get(family)}


class Bench:
    def __init__(self, twinwall_args: List[str]):
        tag = uuid.uuid4().hex[:8]
        self.target, self.scanner = f"tw-bench-t-{tag}", f"tw-bench-s-{tag}"
        self.twinwall_args = twinwall_args
        self.made: List[str] = []
        self.listener = None

    def setup(self) -> None:
        for ns in (self.target, self.scanner):
            run(["ip", "netns", "add", ns])
            self.made.append(ns)
        run(["ip", "netns", "exec", self.target, "ip", "link", "add", "tw0", "type", "veth",
             "peer", "name", "tw1", "netns", self.scanner])
        for ns, dev, a4, a6 in ((self.target, "tw0", T4, T6), (self.scanner, "tw1", S4, S6)):
            ex = ["ip", "netns", "exec", ns, "ip"]
            run(ex + ["link", "set", "lo", "up"])
            run(ex + ["addr", "add", f"{a4}/24", "dev", dev])
            run(ex + ["addr", "add", f"{a6}/64", "dev", dev, "nodad"])
            run(ex + ["link", "set", dev, "up"])
        run(["ip", "netns", "exec", self.target, "iptables-restore"], input=rules("bench-v4"))
        run(["ip", "netns", "exec", self.target, "ip6tables-restore"], input=rules("bench-v6"))
        self.listener = subprocess.Popen(
            ["ip", "netns", "exec", self.target, sys.executable, "-c", LISTENERS],
            stdout=subprocess.PIPE, text=True,
        )
        if self.listener.stdout.readline().strip() != "ready":
            raise SystemExit("bench: the listeners did not start")
        probe = (
            "import socket\n"
            f"socket.create_connection(('{T4}', {LISTEN[0]}), timeout=1).close()\n"
            f"socket.create_connection(('{T6}', {LISTEN[0]}), timeout=1).close()\n"
        )
        deadline = time.monotonic() + 10
        while run(["ip", "netns", "exec", self.scanner, sys.executable, "-c", probe],
                  check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the veth never passed traffic")
            time.sleep(0.2)

    def teardown(self) -> None:
        if self.listener is not None:
            self.listener.kill()
            self.listener.wait(timeout=10)
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], check=False)

    def timed(self, cmd: List[str]) -> Tuple[float, str]:
        env = dict(os.environ, **twinwall_env())
        start = time.monotonic()
        proc = run(["ip", "netns", "exec", self.scanner] + cmd, check=False, env=env)
        elapsed = time.monotonic() - start
        if proc.returncode not in (0, 1):
            raise SystemExit(f"bench: {cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
        return elapsed, proc.stdout

    def nmap(self, family: str) -> Tuple[float, Dict[int, str]]:
        cmd = ["nmap", "-sT", "-Pn", "-n", "-p", f"{FIRST}-{LAST}", "-oX", "-"] + NMAP_TIMING
        cmd += ["-4", T4] if family == "ipv4" else ["-6", T6]
        elapsed, out = self.timed(cmd)
        return elapsed, parse_nmap_xml(out)

    def twinwall(self, family: str, extra: List[str]) -> Tuple[float, Dict[int, str]]:
        cmd = [sys.executable, "-m", "twinwall", "scan", T4 if family == "ipv4" else T6,
               "--family", family, "--ports", f"tcp/{FIRST}-{LAST}", "--format", "json"] + extra
        elapsed, out = self.timed(cmd)
        return elapsed, parse_twinwall_json(out, family)


NMAP_TIMING: List[str] = []


def accuracy(a: Dict[int, str], b: Dict[int, str]) -> int:
    return sum(1 for p in range(FIRST, LAST + 1) if a.get(p) is not None and a.get(p) == b.get(p))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median is reported)")
    parser.add_argument("--twinwall-args", default=DEFAULT_TWINWALL_ARGS,
                        help=f"options for twinwall scan (default: {DEFAULT_TWINWALL_ARGS})")
    parser.add_argument("--full", action="store_true",
                        help="scan every port (1-65535) and give nmap -T4, as 'nmap -sT -p- -T4' is run")
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args()
    global FIRST, LAST
    if args.full:
        FIRST, LAST = 1, 65535
        NMAP_TIMING[:] = ["-T4"]
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("ip", "iptables-restore", "ip6tables-restore", "nmap"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not installed", file=sys.stderr)
            return 2
    extra = shlex.split(args.twinwall_args)
    truth = {p: expected_state(p) for p in range(FIRST, LAST + 1)}
    bench = Bench(extra)
    times: Dict[Tuple[str, str], List[float]] = {}
    states: Dict[Tuple[str, str], List[Dict[int, str]]] = {}
    try:
        bench.setup()
        for rnd in range(args.rounds):
            order = [("nmap", "ipv4"), ("twinwall", "ipv4"), ("nmap", "ipv6"), ("twinwall", "ipv6")]
            if rnd % 2:
                order = [(t, f) for (t, f) in reversed(order)]
            for tool, family in order:
                if tool == "nmap":
                    elapsed, st = bench.nmap(family)
                else:
                    elapsed, st = bench.twinwall(family, extra)
                times.setdefault((tool, family), []).append(elapsed)
                states.setdefault((tool, family), []).append(st)
    finally:
        bench.teardown()

    n = LAST - FIRST + 1
    print(f"target: {n} TCP ports, {len(LISTEN)} listeners, {DROP_HI - DROP_LO + 1} dropped "
          f"(iptables and ip6tables DROP), the rest closed")
    print(f"nmap:     nmap -sT -Pn -n {' '.join(NMAP_TIMING) or '(default timing template -T3)'}, default retries")
    print(f"twinwall: twinwall scan --format json {args.twinwall_args or '(its defaults)'}")
    print(f"rounds:   {args.rounds} (median wall-clock, including process start-up)\n")
    report = {}
    worst_ratio = 0.0
    for family in ("ipv4", "ipv6"):
        tn = statistics.median(times[("nmap", family)])
        tt = statistics.median(times[("twinwall", family)])
        ratio = tt / tn
        worst_ratio = max(worst_ratio, ratio)
        nmap_st = states[("nmap", family)][-1]
        tw_st = states[("twinwall", family)][-1]
        agree = min(accuracy(a, b) for a, b in zip(states[("nmap", family)],
                                                 states[("twinwall", family)]))
        tw_truth = min(accuracy(s, truth) for s in states[("twinwall", family)])
        nmap_truth = min(accuracy(s, truth) for s in states[("nmap", family)])
        print(f"{family}: nmap {tn:6.2f}s   twinwall {tt:6.2f}s   ratio {ratio:.2f}x   "
              f"agree {agree}/{n}   vs setup: nmap {nmap_truth}/{n}, twinwall {tw_truth}/{n}")
        mismatches = [p for p in range(FIRST, LAST + 1) if nmap_st.get(p) != tw_st.get(p)]
        if mismatches:
            print("  differing ports (last round): "
                  + ", ".join(f"{p} nmap={nmap_st.get(p)} twinwall={tw_st.get(p)}"
                              for p in mismatches[:10]))
        report[family] = {
            "nmap_seconds": round(tn, 3), "twinwall_seconds": round(tt, 3),
            "ratio": round(ratio, 3), "agree": agree, "ports": n,
            "twinwall_vs_setup": tw_truth, "nmap_vs_setup": nmap_truth,
            "all_times": {"nmap": times[("nmap", family)], "twinwall": times[("twinwall", family)]},
        }
    verdict = "PASS" if worst_ratio <= 1.0 else "FAIL"
    print(f"target <= 1.0x nmap at equal accuracy: {verdict} (worst ratio {worst_ratio:.2f}x)")
    if args.json:
        print(json.dumps(report, indent=2))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
