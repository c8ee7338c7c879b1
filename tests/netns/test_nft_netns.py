"""End-to-end proof of the native nftables support (issue 3): real `nft -f` rulesets (plus
iptables-nft and iptables-legacy tables where the case says so) in the server namespace, real
client connections, and `twinwall audit --format json` run live in that namespace.

Every case asserts what tests/netns/test_audit_scenarios.py asserts, with its helpers:

1. the real clients ("inside" 192.0.2.10 / 2001:db8:a::10 on eth-a, "outside" 198.51.100.10 /
   2001:db8:b::10 on eth-b) agree with the expected status of every (service, family): ``open``
   both connect, ``restricted`` only inside connects, ``filtered`` neither does;
2. twinwall prints the same status, with ``allowed_sources``/``allowed_interfaces`` that hold the
   inside client and not the outside one for ``restricted``, a ``decided_by`` naming the nft
   table/chain/rule or policy given in the case, and no ``uncertain`` entry.

Some cases check more (which dump was authoritative for which table, that an iptables-nft table
is counted once). If (1) fails, the case or the harness is wrong; if (2) fails, twinwall is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import pytest

from harness import Topology, netns_exec
from test_audit_scenarios import (
    FILTERED,
    OPEN,
    RESTRICTED,
    Case,
    W,
    check_real_clients,
    check_twinwall,
    dual,
)

pytestmark = pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed (apt install nftables)")


@dataclass
class NftCase:
    name: str
    doc: str
    services: list
    nft: str = ""  # an nft -f script for the server namespace
    iptables_nft: Optional[str] = None  # iptables-nft-restore input (IPv4)
    ip6tables_nft: Optional[str] = None
    iptables_legacy: Optional[str] = None  # iptables-legacy-restore input (IPv4)
    ip6tables_legacy: Optional[str] = None  # ip6tables-legacy-restore input
    # extra checks on (report, collected snapshot) -> list of problems
    extra: Optional[Callable[[Dict[str, Any], Dict[str, Any]], List[str]]] = None
    findings: list = field(default_factory=list)

    def as_case(self) -> Case:
        # a non-None v4/v6 tells check_twinwall that a ruleset is loaded for the family
        return Case(self.name, self.doc, self.services, v4="nft", v6="nft", findings=self.findings)


CASES: List[NftCase] = []

CASES.append(NftCase(
    "inet_table_alone",
    "one inet table serves both families; `ip saddr` restricts IPv4 only, `meta nfproto ipv6` "
    "opens IPv6 only",
    services=[
        dual("tcp", 22, ipv4=W(OPEN, "table=inet filter", "tcp dport 22"),
             ipv6=W(OPEN, "table=inet filter", "tcp dport 22")),
        # IPv4: only 192.0.2.0/24; IPv6: the ip saddr rule does not apply, policy drop
        dual("tcp", 80, ipv4=W(RESTRICTED, "ip saddr 192.0.2.0/24"),
             ipv6=W(FILTERED, "policy=DROP")),
        dual("tcp", 8080, ipv4=W(FILTERED, "policy=DROP"), ipv6=W(OPEN, "nfproto ipv6")),
        dual("udp", 53, ipv4=OPEN, ipv6=OPEN),
        dual("tcp", 25, ipv4=FILTERED, ipv6=FILTERED),
    ],
    nft="""
        table inet filter {
            chain input {
                type filter hook input priority filter; policy drop;
                ct state established,related accept
                ct state invalid drop
                iifname "lo" accept
                meta l4proto ipv6-icmp accept
                tcp dport 22 accept
                ip saddr 192.0.2.0/24 tcp dport 80 accept
                meta nfproto ipv6 tcp dport 8080 accept
                udp dport 53 accept
            }
        }
    """,
))

CASES.append(NftCase(
    "inet_reject_icmp_applies_to_ipv4_only",
    "policy accept: `reject with icmp type` in an inet table rejects IPv4 only (nft adds a hidden "
    "meta nfproto ipv4 dependency), icmpv6 only IPv6, icmpx both",
    services=[
        dual("tcp", 9998, ipv4=W(FILTERED, "reject with icmp host-prohibited"),
             ipv6=W(OPEN, "policy=ACCEPT")),
        dual("tcp", 9997, ipv4=W(OPEN, "policy=ACCEPT"),
             ipv6=W(FILTERED, "reject with icmpv6 admin-prohibited")),
        dual("tcp", 9996, ipv4=W(FILTERED, "icmpx"), ipv6=W(FILTERED, "icmpx")),
        dual("tcp", 9995, ipv4=W(FILTERED, "tcp reset"), ipv6=W(FILTERED, "tcp reset")),
        dual("tcp", 9000, ipv4=OPEN, ipv6=OPEN),
    ],
    nft="""
        table inet t {
            chain input {
                type filter hook input priority 0; policy accept;
                tcp dport 9998 counter reject with icmp type host-prohibited
                tcp dport 9997 reject with icmpv6 type admin-prohibited
                tcp dport 9996 reject with icmpx type admin-prohibited
                tcp dport 9995 reject with tcp reset
            }
        }
    """,
))

CASES.append(NftCase(
    "inet_hidden_nfproto",
    "nft 1.0.6 lists `meta nfproto ipv6 tcp dport 3000 reject with tcp reset` without the nfproto "
    "(list and -j); the collector's netlink dump restores it: IPv6 only",
    services=[
        dual("tcp", 3000, ipv4=W(OPEN, "policy=ACCEPT"), ipv6=W(FILTERED, "tcp reset")),
        dual("tcp", 3001, ipv4=W(FILTERED, "tcp reset"), ipv6=W(OPEN, "policy=ACCEPT")),
        dual("tcp", 3002, ipv4=W(FILTERED, "tcp reset"), ipv6=W(FILTERED, "tcp reset")),
    ],
    nft="""
        table inet t {
            chain input {
                type filter hook input priority 0; policy accept;
                meta nfproto ipv6 tcp dport 3000 reject with tcp reset
                meta nfproto ipv4 tcp dport 3001 reject with tcp reset
                tcp dport 3002 reject with tcp reset
            }
        }
    """,
))

CASES.append(NftCase(
    "ip_and_ip6_tables_disagree",
    "a native ip table and a native ip6 table with different rules: each family meets only its own",
    services=[
        dual("tcp", 22, ipv4=W(OPEN, "table=ip filter"), ipv6=W(OPEN, "table=ip6 filter")),
        dual("tcp", 80, ipv4=W(OPEN, "tcp dport { 22, 80 }"), ipv6=W(FILTERED, "table=ip6 filter", "policy=DROP")),
        dual("udp", 53, ipv4=W(FILTERED, "table=ip filter", "policy=DROP"), ipv6=W(OPEN, "udp dport 53")),
        dual("tcp", 443, ipv4=W(RESTRICTED, "198.51.100.0/24"),
             ipv6=W(RESTRICTED, "2001:db8:a::/64")),
    ],
    nft="""
        table ip filter {
            chain input {
                type filter hook input priority 0; policy drop;
                ct state established,related accept
                tcp dport { 22, 80 } accept
                ip saddr != 198.51.100.0/24 tcp dport 443 accept
            }
        }
        table ip6 filter {
            chain input {
                type filter hook input priority 0; policy drop;
                ct state established,related accept
                icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
                tcp dport 22 accept
                udp dport 53 accept
                ip6 saddr 2001:db8:a::/64 tcp dport 443 accept
            }
        }
    """,
))

CASES.append(NftCase(
    "two_base_chains_on_input",
    "several base chains on input run in priority order: an accept ends only its own chain, the "
    "next one can still drop; a drop anywhere wins",
    services=[
        dual("tcp", 22, ipv4=W(OPEN, "table=inet first", "tcp dport"), ipv6=W(OPEN, "table=inet first")),
        # first accepts, second drops
        dual("tcp", 80, ipv4=W(FILTERED, "table=inet second", "tcp dport 80 drop"),
             ipv6=W(FILTERED, "table=inet second")),
        # second drops only the outside IPv6 network
        dual("tcp", 443, ipv4=W(OPEN, "table=inet first"), ipv6=W(RESTRICTED, "2001:db8:b::/64")),
        # accepted by the early chain (-10), dropped by the policy of first (0)
        dual("tcp", 8080, ipv4=W(FILTERED, "table=inet first", "policy=DROP"),
             ipv6=W(FILTERED, "policy=DROP")),
        # dropped by the early chain: first never sees it
        dual("tcp", 8081, ipv4=W(FILTERED, "table=inet early", "drop"), ipv6=FILTERED),
    ],
    nft="""
        table inet early {
            chain input {
                type filter hook input priority -10; policy accept;
                tcp dport 8080 accept
                tcp dport 8081 drop
            }
        }
        table inet first {
            chain input {
                type filter hook input priority 0; policy drop;
                ct state established,related accept
                meta l4proto ipv6-icmp accept
                tcp dport { 22, 80, 443 } accept
            }
        }
        table inet second {
            chain input {
                type filter hook input priority 10; policy accept;
                tcp dport 80 drop
                ip6 saddr 2001:db8:b::/64 tcp dport 443 drop
            }
        }
    """,
))

CASES.append(NftCase(
    "named_sets_interval_sets_concatenations_verdict_maps",
    "named and anonymous sets, interval sets, a concatenation set and verdict maps (named and "
    "anonymous, with jump)",
    services=[
        dual("tcp", 22, ipv4=W(OPEN, "vmap @ports"), ipv6=W(OPEN, "vmap @ports")),
        dual("tcp", 2222, ipv4=W(FILTERED, "vmap @ports"), ipv6=W(FILTERED, "vmap @ports")),
        dual("tcp", 8080, ipv4=W(RESTRICTED, "chain=web", "@allowed4"),
             ipv6=W(RESTRICTED, "chain=web", "@allowed6")),
        dual("tcp", 3005, ipv4=W(OPEN, "3000-3010"), ipv6=OPEN),
        dual("tcp", 3011, ipv4=FILTERED, ipv6=FILTERED),
        dual("udp", 53, ipv4=W(OPEN, "udp dport vmap"), ipv6=OPEN),
        dual("udp", 123, ipv4=W(FILTERED, "udp dport vmap"), ipv6=FILTERED),
        dual("tcp", 8443, ipv4=W(RESTRICTED, "@svc"), ipv6=W(FILTERED, "policy=DROP")),
    ],
    nft="""
        table inet fw {
            set allowed4 { type ipv4_addr; flags interval; elements = { 192.0.2.0/25, 203.0.113.7-203.0.113.9 }; }
            set allowed6 { type ipv6_addr; flags interval; elements = { 2001:db8:a::/64 }; }
            set svc { type ipv4_addr . inet_service; flags interval; elements = { 192.0.2.0/24 . 8443 }; }
            map ports { type inet_service : verdict; elements = { 22 : accept, 2222 : drop, 8080 : jump web }; }
            chain web {
                ip saddr @allowed4 accept
                ip6 saddr @allowed6 accept
            }
            chain input {
                type filter hook input priority 0; policy drop;
                ct state vmap { established : accept, related : accept, invalid : drop }
                iifname "lo" accept
                icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
                tcp dport vmap @ports
                tcp dport { 3000-3010, 4000 } accept
                udp dport vmap { 53 : accept, 123 : drop }
                ip saddr . tcp dport @svc accept
            }
        }
    """,
))

_IPT_NFT_V4 = """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443,8000,8002 -j ACCEPT
-A INPUT -s 192.0.2.0/24 -p tcp -m conntrack --ctstate NEW -m tcp --dport 22 -j ACCEPT
COMMIT
"""
# no xt expression at all: nft -j shows it completely, yet it is iptables-nft's table
_IPT_NFT_V6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 22 -j DROP
-A INPUT -p tcp --dport 8000 -j DROP
COMMIT
"""


def _check_authority(report: Dict[str, Any], snap: Dict[str, Any]) -> List[str]:
    problems = []
    sources = {t["table"]: t["source"] for t in snap.get("table_sources", [])}
    # xt content or only what iptables-nft writes: iptables-save; native rules: nft -j
    want = {"ip filter": "iptables-save", "ip6 filter": "ip6tables-save",
            "inet native": "nft -j list ruleset", "ip mangle": "nft -j list ruleset"}
    for table, source in want.items():
        if sources.get(table) != source:
            problems.append(f"table_sources: {table} should come from {source}, got {sources.get(table)!r}"
                            f" (all: {snap.get('table_sources')})")
    dumps = {r.get("source"): r for r in snap.get("rulesets", [])}
    nft = dumps.get("nft -j list ruleset")
    if nft is None:
        problems.append(f"no nft -j dump in {sorted(dumps)}")
    else:
        kept = {(o[k]["family"], o[k].get("name") if k == "table" else o[k]["table"])
                for o in json.loads(nft["text"])["nftables"] for k in o if k != "metainfo"}
        if kept != {("inet", "native"), ("ip", "mangle")}:
            problems.append(f"the nft-json dump should hold inet native and ip mangle; it holds {sorted(kept)}")
    v6 = dumps.get("ip6tables-save", {}).get("text", "")
    if "*filter" not in v6:
        problems.append(f"ip6tables-save should hold its filter table:\n{v6}")
    v4 = dumps.get("iptables-save", {}).get("text", "")
    if "*filter" not in v4 or "*mangle" in v4:
        problems.append(f"iptables-save should hold filter (xt) and not mangle (native rules):\n{v4}")
    # every table is evaluated once: no table comes from two sources
    summary = report["host"]["rulesets"]
    per_family: Dict[str, List[str]] = {}
    for r in summary:
        for t in r["tables"]:
            per_family.setdefault(r["family"], []).append(t.split()[-1])
    for fam, names in per_family.items():
        if len(names) != len(set(names)):
            problems.append(f"{fam}: a table is evaluated twice: {summary}")
    return problems


CASES.append(NftCase(
    "iptables_nft_table_plus_native_table",
    "iptables-nft tables (IPv4 with xt matches, IPv6 without) are read from iptables-nft-save, "
    "native tables from nft -j - also ip mangle, whose set lookup iptables-nft-save misprints; "
    "all evaluated, each counted once",
    services=[
        dual("tcp", 80, ipv4=W(OPEN, "multiport"), ipv6=W(OPEN, "policy=ACCEPT")),
        # iptables-nft accepts 443; the native table (priority 10) drops it
        dual("tcp", 443, ipv4=W(FILTERED, "table=inet native"), ipv6=W(FILTERED, "table=inet native")),
        dual("tcp", 22, ipv4=W(RESTRICTED, "--dport 22"), ipv6=W(FILTERED, "table=filter", "-j DROP")),
        dual("tcp", 8000, ipv4=W(OPEN, "multiport"), ipv6=W(FILTERED, "table=filter", "--dport 8000")),
        dual("tcp", 8001, ipv4=W(FILTERED, "policy=DROP"), ipv6=W(OPEN)),
        dual("tcp", 8002, ipv4=W(FILTERED, "table=ip mangle", "@closed"), ipv6=W(OPEN)),
    ],
    iptables_nft=_IPT_NFT_V4,
    ip6tables_nft=_IPT_NFT_V6,
    # ip mangle: an iptables table name with a native set lookup, which iptables-nft-save 1.8.9
    # prints as a bare "-A INPUT -j DROP": read from nft -j, it drops only tcp/8002
    nft="""
        table inet native {
            chain input {
                type filter hook input priority 10; policy accept;
                tcp dport 443 drop
            }
        }
        table ip mangle {
            set closed { type inet_service; elements = { 8002 }; }
            chain INPUT {
                type filter hook input priority mangle; policy accept;
                tcp dport @closed drop
            }
        }
    """,
    extra=_check_authority,
))


def _check_legacy(report: Dict[str, Any], snap: Dict[str, Any]) -> List[str]:
    sources = [r.get("source") for r in snap.get("rulesets", [])]
    problems = []
    if "iptables-legacy-save" not in sources:
        problems.append(f"the legacy IPv4 table was not collected (rulesets: {sources})")
    if "nft -j list ruleset" not in sources:
        problems.append(f"the nft ruleset was not collected (rulesets: {sources})")
    return problems


CASES.append(NftCase(
    "legacy_tables_plus_native_nft",
    "iptables-legacy (x_tables) and native nftables loaded at once: a packet must pass both",
    services=[
        dual("tcp", 8000, ipv4=W(FILTERED, "--dport 8000"), ipv6=W(OPEN)),
        dual("tcp", 8001, ipv4=W(FILTERED, "table=inet native"), ipv6=W(FILTERED, "table=inet native")),
        dual("tcp", 8002, ipv4=OPEN, ipv6=OPEN),
        dual("tcp", 8003, ipv4=W(RESTRICTED, "192.0.2.0/24"), ipv6=W(RESTRICTED, "2001:db8:a::/64")),
    ],
    iptables_legacy="""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 8000 -j DROP
-A INPUT -p tcp -m tcp --dport 8003 ! -s 192.0.2.0/24 -j DROP
COMMIT
""",
    nft="""
        table inet native {
            chain input {
                type filter hook input priority 0; policy accept;
                tcp dport 8001 drop
                meta nfproto ipv6 ip6 saddr != 2001:db8:a::/64 tcp dport 8003 drop
            }
        }
    """,
    extra=_check_legacy,
))


def _check_legacy6_and_nft(report: Dict[str, Any], snap: Dict[str, Any]) -> List[str]:
    sources = [r.get("source") for r in snap.get("rulesets", [])]
    problems = []
    if "ip6tables-legacy-save" not in sources:
        problems.append(f"the legacy IPv6 table was not collected (rulesets: {sources})")
    both = sorted(f["family"] for f in report["findings"] if f["id"] == "TW-LEGACY-AND-NFT")
    if both != ["ipv6"]:
        problems.append(f"TW-LEGACY-AND-NFT should be raised for IPv6 only (legacy ip6tables + native "
                        f"nft), got {both}")
    return problems


CASES.append(NftCase(
    "ip6tables_legacy_plus_native_nft",
    "ip6tables-legacy (x_tables) and a native inet table at once: an IPv6 packet must pass both, "
    "and TW-LEGACY-AND-NFT says so",
    services=[
        dual("tcp", 8010, ipv4=W(OPEN), ipv6=W(FILTERED, "--dport 8010")),
        dual("tcp", 8011, ipv4=W(FILTERED, "table=inet native"), ipv6=W(FILTERED, "table=inet native")),
        dual("tcp", 8012, ipv4=OPEN, ipv6=OPEN),
    ],
    ip6tables_legacy="""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 8010 -j DROP
COMMIT
""",
    nft="""
        table inet native {
            chain input {
                type filter hook input priority 0; policy accept;
                tcp dport 8011 drop
            }
        }
    """,
    extra=_check_legacy6_and_nft,
))


def _legacy_unavailable() -> Optional[str]:
    if shutil.which("iptables-legacy-restore") is None:
        return "iptables-legacy-restore is not installed"
    name = f"tw-legchk-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=20)
    try:
        res = subprocess.run(["ip", "netns", "exec", name, "iptables-legacy-restore"],
                             input="*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", capture_output=True,
                             text=True, timeout=20)
        if res.returncode != 0:
            return f"iptables-legacy-restore does not work in a namespace: {res.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
    return None


def _load(topo: Topology, case: NftCase) -> None:
    ns = topo.server
    if case.iptables_legacy is not None:
        netns_exec(ns, "iptables-legacy-restore", input=case.iptables_legacy)
    if case.ip6tables_legacy is not None:
        netns_exec(ns, "ip6tables-legacy-restore", input=case.ip6tables_legacy)
    if case.iptables_nft is not None:
        netns_exec(ns, "iptables-nft-restore", input=case.iptables_nft)
    if case.ip6tables_nft is not None:
        netns_exec(ns, "ip6tables-nft-restore", input=case.ip6tables_nft)
    if case.nft.strip():
        topo.load_nft(_dedent(case.nft))


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip() + "\n"


def test_cases_are_well_formed() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 6


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_nft_scenario(case: NftCase) -> None:
    if case.iptables_legacy is not None or case.ip6tables_legacy is not None:
        reason = _legacy_unavailable()
        if reason:
            pytest.skip(reason)
    if (case.iptables_nft or case.ip6tables_nft) and shutil.which("iptables-nft-restore") is None:
        pytest.skip("iptables-nft-restore is not installed")
    with Topology() as topo:
        _load(topo, case)
        topo.start_listeners([s.spec for s in case.services])
        out: Dict[str, Any] = {}

        def run_twinwall() -> None:
            try:
                out["report"] = topo.audit_json()
                rc, text, err = topo.run_twinwall("collect", "-o", "-")
                if rc != 0:
                    out["error"] = f"twinwall collect exited {rc}: {err}"
                else:
                    out["snapshot"] = json.loads(text)
            except AssertionError as exc:
                out["error"] = str(exc)

        worker = threading.Thread(target=run_twinwall)
        worker.start()
        try:
            problems, table = check_real_clients(topo, case.as_case())
        finally:
            worker.join()
        assert not problems, (
            f"real clients disagree with the expected statuses of case {case.name} ({case.doc}) - "
            "the case or the harness is wrong, not twinwall:\n" + "\n".join(problems)
            + "\nall probes:\n" + "\n".join(table))
        assert "error" not in out, out.get("error")
        report = out["report"]
        problems = check_twinwall(topo, case.as_case(), report)
        if case.extra:
            problems += case.extra(report, out["snapshot"])
        assert not problems, (
            f"twinwall disagrees with netfilter (the real clients confirmed every expected status) "
            f"in case {case.name}:\n  " + "\n  ".join(problems))
