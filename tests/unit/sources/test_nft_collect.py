"""collect_nft_ruleset / nft_authority: which dump is authoritative for which table, on the real
nft -j and iptables-nft-save output of tests/fixtures/nft (see regenerate.py there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from twinwall.loader import load_rulesets
from twinwall.model import HostSnapshot, RulesetText
from twinwall.sources.host import NFT_SOURCE, CommandResult, collect_nft_ruleset

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "nft"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def runner(stdout: str = "", rc: int = 0, error=None, stderr: str = ""):
    calls: List[List[str]] = []

    def run(argv, timeout=None):
        calls.append(list(argv))
        return CommandResult(list(argv), None if error else rc, stdout, stderr, error=error)

    run.calls = calls  # type: ignore[attr-defined]
    return run


def snapshot_with_iptables_nft() -> HostSnapshot:
    snap = HostSnapshot()
    snap.rulesets = [
        RulesetText("ipv4", "iptables-save", "nft", "iptables-save", fixture("iptables_nft.v4.save")),
        RulesetText("ipv6", "iptables-save", "nft", "ip6tables-save", fixture("iptables_nft.v6.save")),
    ]
    return snap


def sources(snap: HostSnapshot) -> Dict[str, str]:
    return {t["table"]: t["source"] for t in snap.table_sources}


def test_authority_per_table() -> None:
    snap = snapshot_with_iptables_nft()
    run = runner(fixture("iptables_nft.json"))
    nft = collect_nft_ruleset(snap, run)
    # the inet table's rules: their netlink form, for the meta nfproto tests nft does not print
    # listed table by table: only the inet tables with rules, not the whole ruleset again
    assert run.calls == [["nft", "-j", "list", "ruleset"], ["nft", "--debug=netlink", "list", "table", "inet", "native"]]
    assert nft is not None and (nft.family, nft.format, nft.backend, nft.source) == ("inet", "nft-json", "nft", NFT_SOURCE)
    assert sources(snap) == {
        "ip filter": "iptables-save",  # xt matches: only iptables-nft-save has their parameters
        "ip nat": "iptables-save",
        "ip6 filter": "ip6tables-save",  # no xt, and iptables-nft-save shows every rule of it
        "ip mangle": NFT_SOURCE,  # native lookup that iptables-nft-save 1.8.9 prints as "-j DROP"
        "inet native": NFT_SOURCE,
    }
    kept = {(next(iter(o.values()))["family"], next(iter(o.values())).get("table") or next(iter(o.values()))["name"])
            for o in json.loads(nft.text)["nftables"] if "metainfo" not in o}
    assert kept == {("inet", "native"), ("ip", "mangle")}
    v4, v6 = snap.rulesets
    # counted once: the tables nft -j is authoritative for left the iptables-save texts
    assert "*mangle" not in v4.text and "*filter" in v4.text and "*nat" in v4.text
    assert v6.text == fixture("iptables_nft.v6.save")
    assert "# twinwall: table mangle left out" in v4.text
    assert snap.missing == []
    snap.rulesets.append(nft)
    loaded = load_rulesets(snap)
    tables = {fam: sorted(t for rs in loaded[fam] for t in rs.tables) for fam in loaded}
    assert tables == {"ipv4": ["filter", "inet native", "ip mangle", "nat"], "ipv6": ["filter", "inet native"]}


def test_verbatim_when_nothing_is_left_out() -> None:
    snap = HostSnapshot()
    text = fixture("inet_filter.json")
    nft = collect_nft_ruleset(snap, runner(text))
    assert nft is not None and nft.text == text
    assert sources(snap)["inet filter"] == NFT_SOURCE
    assert "not audited" in [t for t in snap.table_sources if t["table"] == "arp a"][0]["reason"]


def test_no_nft_dump_when_iptables_dumps_cover_every_table() -> None:
    items = [o for o in json.loads(fixture("iptables_nft.json"))["nftables"]
             if not any(isinstance(v, dict) and (v.get("name") in ("native", "mangle") or v.get("table") in ("native", "mangle"))
                        for v in o.values())]
    snap = snapshot_with_iptables_nft()
    assert collect_nft_ruleset(snap, runner(json.dumps({"nftables": items}))) is None
    assert sources(snap) == {"ip filter": "iptables-save", "ip nat": "iptables-save", "ip6 filter": "ip6tables-save"}
    # without iptables dumps, the (empty) nft dump still tells that nothing is loaded
    empty = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}]})
    assert collect_nft_ruleset(HostSnapshot(), runner(empty)) is not None


def test_xt_table_without_an_iptables_dump_is_missing() -> None:
    snap = HostSnapshot()  # e.g. iptables-save failed or is not installed
    nft = collect_nft_ruleset(snap, runner(fixture("iptables_nft.json")))
    assert nft is not None
    assert sources(snap)["ip filter"] == ""
    assert any("ip filter" in m and "unknown" in m for m in snap.missing)


def test_legacy_tables_are_recorded() -> None:
    snap = HostSnapshot()
    snap.rulesets = [RulesetText("ipv4", "iptables-save", "legacy", "iptables-legacy-save",
                                 "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")]
    collect_nft_ruleset(snap, runner(fixture("inet_filter.json")))
    assert sources(snap)["ip filter"] == "iptables-legacy-save"
    assert snap.rulesets[0].text.startswith("*filter")  # never touched


def test_mixed_native_rules_in_an_xt_table_are_reported() -> None:
    items = json.loads(fixture("iptables_nft.json"))["nftables"]
    items.append({"set": {"family": "ip", "name": "s2", "table": "filter", "type": "ipv4_addr", "handle": 99,
                          "elem": ["192.0.2.3"]}})
    items.append({"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 98,
                           "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                               "right": "@s2"}}, {"drop": None}]}})
    snap = snapshot_with_iptables_nft()
    collect_nft_ruleset(snap, runner(json.dumps({"nftables": items})))
    assert any("mixed with native" in m for m in snap.missing)


# ufw's logging chains as iptables-nft 1.8.9 loads them (iptables-nft-restore in a namespace) and
# nft 1.0.6 prints them back: `-m limit` is a native limit expression next to the xt matches.
UFW_LIMIT_SAVE = """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ufw-logging-deny - [0:0]
-A INPUT -j ufw-logging-deny
-A ufw-logging-deny -m conntrack --ctstate INVALID -m limit --limit 3/min --limit-burst 10 -j RETURN
-A ufw-logging-deny -m limit --limit 3/min --limit-burst 10 -j LOG --log-prefix "[UFW BLOCK] "
COMMIT
"""
UFW_LIMIT_JSON = json.dumps({"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
    {"table": {"family": "ip", "name": "filter", "handle": 4}},
    {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter",
               "hook": "input", "prio": 0, "policy": "drop"}},
    {"chain": {"family": "ip", "table": "filter", "name": "ufw-logging-deny", "handle": 2}},
    {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 3,
              "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "ufw-logging-deny"}}]}},
    {"rule": {"family": "ip", "table": "filter", "chain": "ufw-logging-deny", "handle": 4,
              "expr": [{"xt": {"type": "match", "name": "conntrack"}},
                       {"limit": {"rate": 3, "burst": 10, "per": "minute"}},
                       {"counter": {"packets": 0, "bytes": 0}}, {"return": None}]}},
    {"rule": {"family": "ip", "table": "filter", "chain": "ufw-logging-deny", "handle": 5,
              "expr": [{"limit": {"rate": 3, "burst": 10, "per": "minute"}},
                       {"counter": {"packets": 0, "bytes": 0}}, {"xt": {"type": "target", "name": "LOG"}}]}},
]})


def test_iptables_nft_limit_is_not_a_native_rule() -> None:
    snap = HostSnapshot()
    snap.rulesets = [RulesetText("ipv4", "iptables-save", "nft", "iptables-save", UFW_LIMIT_SAVE)]
    collect_nft_ruleset(snap, runner(UFW_LIMIT_JSON))
    assert sources(snap) == {"ip filter": "iptables-save"}
    assert not any("mixed with native" in m for m in snap.missing), snap.missing


def test_native_limit_forms_iptables_cannot_write_are_native() -> None:
    items = json.loads(UFW_LIMIT_JSON)["nftables"]
    items[-1]["rule"]["expr"][0] = {"limit": {"rate": 3, "burst": 10, "per": "minute", "inv": True}}
    snap = HostSnapshot()
    snap.rulesets = [RulesetText("ipv4", "iptables-save", "nft", "iptables-save", UFW_LIMIT_SAVE)]
    collect_nft_ruleset(snap, runner(json.dumps({"nftables": items})))
    assert any("mixed with native" in m for m in snap.missing)


def test_nft_failures_are_recorded_not_raised(monkeypatch) -> None:
    snap = HostSnapshot()
    assert collect_nft_ruleset(snap, runner(rc=1, stderr="Error: syntax error\n")) is None
    assert snap.missing and snap.missing[0].startswith(NFT_SOURCE)
    snap = HostSnapshot()
    assert collect_nft_ruleset(snap, runner("garbage")) is None
    assert "output not understood" in snap.missing[0]
    snap = HostSnapshot()
    monkeypatch.setattr("twinwall.sources.host.os.path.isdir", lambda p: p == "/sys/module/nf_tables")
    assert collect_nft_ruleset(snap, runner(error="not installed")) is None
    assert "nft: not installed" in snap.missing[0]


def test_table_sources_round_trip() -> None:
    snap = HostSnapshot(table_sources=[{"table": "ip filter", "source": "iptables-save", "reason": "x"}])
    again = HostSnapshot.from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again.table_sources == snap.table_sources


def test_netlink_dump_keeps_only_inet_rule_blocks() -> None:
    from twinwall.sources.host import _collect_nft_netlink

    text = (FIXTURES / "inet_filter.netlink").read_text()
    snap = HostSnapshot()
    kept = _collect_nft_netlink(snap, runner(text), ["filter"])
    assert kept and not snap.missing
    assert all(line.startswith(("inet ", "  [")) for line in kept.splitlines())
    assert "@" not in "".join(line for line in kept.splitlines() if not line.startswith(" "))
    again = HostSnapshot.from_dict(json.loads(json.dumps(
        HostSnapshot(rulesets=[RulesetText("inet", "nft-json", "nft", NFT_SOURCE, "{}", netlink=kept)]).to_dict())))
    assert again.rulesets[0].netlink == kept


# `-A INPUT -p tcp ! --syn -m conntrack --ctstate NEW -j DROP` loaded with iptables-nft-restore
# 1.8.9 and listed with `nft -j list ruleset` (nft 1.0.6): --syn becomes a native masked payload
SYN_SAVE = """# Generated by iptables-nft-save v1.8.9 (nf_tables)
*filter
:INPUT DROP [0:0]
-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP
COMMIT
"""
SYN_JSON = json.dumps({"nftables": [
    {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
    {"table": {"family": "ip", "name": "filter", "handle": 1}},
    {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter",
               "hook": "input", "prio": 0, "policy": "drop"}},
    {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 2, "expr": [
        {"match": {"op": "!=", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}},
                                              ["fin", "syn", "rst", "ack"]]}, "right": "syn"}},
        {"xt": {"type": "match", "name": "conntrack"}}, {"counter": {"packets": 0, "bytes": 0}},
        {"drop": None}]}},
]})


def test_iptables_nft_syn_is_not_a_native_rule() -> None:
    # the hardening guides' `! --syn ... NEW -j DROP` made every such host "mixed with native"
    snap = HostSnapshot()
    snap.rulesets = [RulesetText("ipv4", "iptables-save", "nft", "iptables-save", SYN_SAVE)]
    collect_nft_ruleset(snap, runner(SYN_JSON))
    assert sources(snap) == {"ip filter": "iptables-save"}
    assert not any("mixed with native" in m for m in snap.missing), snap.missing
