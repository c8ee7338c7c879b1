"""Findings an admin can act on (issue 10) and the findings catalogue (issue 11): one finding per
cause, the rules that make the families differ, forwarding sysctls, logging and loopback checks,
structured subjects and decisions with their dump lines, README and catalogue in step."""

import json
import re
from pathlib import Path

import pytest

from _snapshots import dump_snapshot
from twinwall.analysis.audit import audit_snapshot
from twinwall.errors import InputError
from twinwall.findings import CATALOGUE
from twinwall.model import HostSnapshot, RulesetText
from twinwall.sources.host import read_sysctls
from twinwall.sources.snapshot import snapshot_from_json, snapshot_to_json

ROOT = Path(__file__).resolve().parents[2]

V4 = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m limit --limit 3/min -m tcp --dport 8443 -j ACCEPT
-A INPUT -p tcp -m limit --limit 3/min -m tcp --dport 8444 -j ACCEPT
COMMIT
"""
NEVER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
SS = "".join(
    f'{p} {"LISTEN" if p == "tcp" else "UNCONN"} 0 128 *:{port} *:* users:(("d{port}",pid={port},fd=3)) v6only:0\n'
    for p, port in [("tcp", 22), ("tcp", 25), ("tcp", 80), ("tcp", 3306), ("udp", 53), ("udp", 123), ("tcp", 8443)]
)


def by_id(report, fid, family=None):
    return [f for f in report.findings if f.id == fid and (family is None or f.family == family)]


def test_ip6tables_never_configured_is_one_finding_per_cause():
    """Today: a FAMILY-GAP and a NO-RULE per socket. One cause (the IPv6 policy ACCEPT) gives one
    gap per severity class, listing the services; no NO-RULE repeats a gap."""
    report = audit_snapshot(dump_snapshot(V4, NEVER, SS))
    high = [f for f in by_id(report, "TW-FAMILY-GAP") if f.severity == "high"]
    assert len(high) == 1
    gap = high[0]
    assert gap.family == "ipv6" and gap.service is None and gap.hook == "input"
    assert sorted(s["service"] for s in gap.services) == ["tcp/25", "tcp/3306", "tcp/80", "udp/123", "udp/53"]
    assert gap.message.startswith("IPv6 filter INPUT policy ACCEPT: 5 services are open over IPv6 but filtered")
    assert "ip6tables INPUT" in gap.fix and "--strategy mirror" in gap.fix
    # ssh is restricted over IPv4 and open over IPv6: the same cause, a medium of its own
    medium = [f for f in by_id(report, "TW-FAMILY-GAP") if f.severity == "medium"]
    assert [(f.service, [s["service"] for s in f.services]) for f in medium] == [("tcp/22", ["tcp/22"])]
    # 8443 is open in both families (by a rule over IPv4): the one service NO-RULE is left for
    assert [[s["service"] for s in f.services] for f in by_id(report, "TW-NO-RULE")] == [["tcp/8443"]]
    # every row of the table still shows the finding that concerns it
    rows = sorted(r for f in by_id(report, "TW-FAMILY-GAP") for r in f.table_rows())
    assert [report.services[r].name for r in rows] == ["tcp/22", "tcp/25", "tcp/80", "tcp/3306", "udp/53", "udp/123"]


def test_one_uncertain_finding_per_undecidable_rule():
    ss = SS + 'tcp LISTEN 0 128 0.0.0.0:8444 0.0.0.0:* users:(("x",pid=9,fd=3))\n'
    v4 = V4.replace("--dport 8444", "-m multiport --dports 8443,8444")
    report = audit_snapshot(dump_snapshot(v4, NEVER, ss))
    uncertain = by_id(report, "TW-UNCERTAIN", "ipv4")
    # two sockets behind one limit rule: one finding naming both; the 8443 rule is another
    entries = sorted((f.evidence[0], sorted(s["service"] for s in f.services)) for f in uncertain)
    assert entries == [("limit (filter INPUT #4)", ["tcp/8443"]), ("limit (filter INPUT #5)", ["tcp/8443", "tcp/8444"])]
    rule = next(f for f in uncertain if f.evidence[0].endswith("#5)")).decided_by
    assert [(fam, d.rule_number, d.line) for fam, d in rule] == [("ipv4", 5, 9)]


def test_findings_json_carries_subjects_and_decisions_with_their_lines(tmp_path):
    snap = dump_snapshot(V4, NEVER, SS)
    snap.rulesets[0].source = "/etc/iptables/rules.v4"
    doc = audit_snapshot(snap).to_json()
    json.dumps(doc)
    for f in doc["findings"]:
        # the old fields stay; the structured ones are added
        assert {"id", "severity", "family", "service", "message", "cis", "evidence", "frontend"} <= set(f)
        assert {"title", "hook", "services", "decided_by", "fix", "remedy"} <= set(f)
        assert f["title"] == CATALOGUE[f["id"]].title and f["fix"]
    ssh = next(f for f in doc["findings"] if f["id"] == "TW-FAMILY-GAP" and f["service"] == "tcp/22")
    v4_rule = next(d for d in ssh["decided_by"] if d["family"] == "ipv4" and d.get("rule_number"))
    assert v4_rule == {
        "table": "filter", "chain": "INPUT", "rule_number": 3,
        "rule": "-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT",
        "source": "/etc/iptables/rules.v4 (nft)", "family": "ipv4", "action": "ACCEPT",
        "file": "/etc/iptables/rules.v4", "line": 7,
    }


def test_rule_lines_survive_blocks_interleaving_and_counters():
    from twinwall.parsers.iptables_save import parse_iptables_save

    text = ("# c\n*filter\n:INPUT DROP [0:0]\n:x - [0:0]\n-A INPUT -i lo -j ACCEPT\n"
            "-A INPUT -p tcp --dport 22 -j ACCEPT\n-A x -j RETURN\n\n[3:180] -A INPUT -j x\nCOMMIT\n"
            "*filter\n-A INPUT -p udp --dport 53 -j ACCEPT\nCOMMIT\n")
    from twinwall.netfilter.interfaces import InterfaceUniverse

    rs = parse_iptables_save(text, "ipv4")
    rs.universe = InterfaceUniverse(["lo"])
    got = [(r.number, r.line) for r in rs.chain("filter", "INPUT").rules]
    assert got == [(1, 5), (2, 6), (3, 9), (4, 12)]
    assert [r.line for r in rs.chain("filter", "x").rules] == [7]
    assert (rs.chain("filter", "INPUT").line, rs.chain("filter", "x").line) == (3, 4)


def test_nft_rules_carry_their_handle_and_whether_they_log():
    from twinwall.parsers.nft_json import parse_nft_json

    doc = {"nftables": [
        {"table": {"family": "inet", "name": "f", "handle": 1}},
        {"chain": {"family": "inet", "table": "f", "name": "input", "handle": 1, "type": "filter",
                   "hook": "input", "prio": 0, "policy": "drop"}},
        {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 7,
                  "expr": [{"log": {"prefix": "in "}}, {"drop": None}]}},
        {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 9, "expr": [{"accept": None}]}},
    ]}
    rules = parse_nft_json(json.dumps(doc))[0].chain("inet f", "input").rules
    assert [(r.handle, r.rule_logs()) for r in rules] == [(7, True), (9, False)]


INET_BLOCKLIST = {"nftables": [
    {"table": {"family": "inet", "name": "fw", "handle": 1}},
    {"set": {"family": "inet", "table": "fw", "name": "blocked6", "type": "ipv6_addr", "handle": 2,
             "elem": [{"prefix": {"addr": "2001:db8:b::", "len": 64}}]}},
    {"chain": {"family": "inet", "table": "fw", "name": "input", "handle": 3, "type": "filter",
               "hook": "input", "prio": 0, "policy": "accept"}},
    {"chain": {"family": "inet", "table": "fw", "name": "v4", "handle": 4}},
    {"chain": {"family": "inet", "table": "fw", "name": "v6", "handle": 5}},
    {"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 6, "expr": [
        {"vmap": {"key": {"meta": {"key": "nfproto"}},
                  "data": {"set": [["ipv4", {"jump": {"target": "v4"}}], ["ipv6", {"jump": {"target": "v6"}}]]}}}]}},
    {"rule": {"family": "inet", "table": "fw", "chain": "v6", "handle": 7, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "@blocked6"}},
        {"drop": None}]}},
]}


def test_gap_cites_the_rule_that_differs_not_the_shared_vmap():
    snap = HostSnapshot(hostname="t", sockets=dump_snapshot(None, None, "tcp LISTEN 0 1 *:80 *:* v6only:0\n").sockets)
    snap.rulesets.append(RulesetText("inet", "nft-json", "nft", "ruleset.json", json.dumps(INET_BLOCKLIST)))
    snap.ipv6.enabled = True
    report = audit_snapshot(snap)
    gap = by_id(report, "TW-FAMILY-GAP")[0]
    assert (gap.family, gap.severity) == ("ipv4", "medium")  # open over IPv4, IPv6 blocks a /64
    cited = [(fam, d.rule or d.policy) for fam, d in gap.decided_by]
    assert ("ipv6", "ip6 saddr @blocked6 drop # handle 7") in cited
    assert not any("vmap" in (text or "") for _, text in cited), cited
    assert next(d.handle for fam, d in gap.decided_by if fam == "ipv6") == 7


FORWARD_OPEN = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\n-A OUTPUT -o lo -j ACCEPT\nCOMMIT\n"


@pytest.mark.parametrize("ip_forward, raised, unknown", [(None, True, True), ("1", True, False), ("0", False, False)])
def test_forward_findings_only_when_the_host_forwards(ip_forward, raised, unknown):
    snap = dump_snapshot(FORWARD_OPEN, FORWARD_OPEN, "")
    if ip_forward is not None:
        snap.sysctls = {"net.ipv4.ip_forward": ip_forward, "net.ipv6.conf.all.forwarding": ip_forward}
    found = [f for f in by_id(audit_snapshot(snap), "TW-NO-DEFAULT-DENY", "ipv4") if f.hook == "forward"]
    assert bool(found) is raised
    if found:
        assert any("unknown" in e for e in found[0].evidence) is unknown
        assert "iptables FORWARD policy to DROP" in found[0].fix


def test_egress_and_forward_differences_are_one_finding_per_hook_and_forward_needs_forwarding():
    v4 = FORWARD_OPEN.replace(":FORWARD ACCEPT", ":FORWARD DROP").replace(
        "COMMIT", "-A OUTPUT -p tcp --dport 25 -j DROP\n-A OUTPUT -j ACCEPT\nCOMMIT")
    v6 = FORWARD_OPEN.replace("COMMIT", "-A OUTPUT -j ACCEPT\nCOMMIT")
    snap = dump_snapshot(v4, v6, "")
    hooks = sorted(f.hook for f in by_id(audit_snapshot(snap), "TW-EGRESS-FORWARD-DIFFER"))
    assert hooks == ["forward", "output"]
    snap.sysctls = {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"}
    assert [f.hook for f in by_id(audit_snapshot(snap), "TW-EGRESS-FORWARD-DIFFER")] == ["output"]


def test_loopback_must_be_accepted_in_output_too():
    no_out = FORWARD_OPEN.replace("-A OUTPUT -o lo -j ACCEPT\n", "")
    found = by_id(audit_snapshot(dump_snapshot(no_out, FORWARD_OPEN, "")), "TW-LOOPBACK-NOT-ACCEPTED")
    assert [(f.family, f.hook) for f in found] == [("ipv4", "output")]
    assert "iptables -I OUTPUT 1 -o lo -j ACCEPT" in found[0].fix
    # the policy is cited where it is written (":OUTPUT DROP" is line 4 of the dump)
    assert [(d.policy, d.line) for _, d in found[0].decided_by if d.chain == "OUTPUT"] == [("DROP", 4)]


LOGGED = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -m limit --limit 5/min -j LOG --log-prefix "drop: "
COMMIT
"""


def test_drops_must_be_logged_and_loopback_never():
    def ids(v4):
        return {(f.id, f.family) for f in audit_snapshot(dump_snapshot(v4, LOGGED, "")).findings}

    assert ("TW-DROP-NOT-LOGGED", "ipv4") not in ids(LOGGED)
    assert ("TW-LOOPBACK-LOGGED", "ipv4") not in ids(LOGGED)
    # no LOG rule: the drops leave no trace
    unlogged = LOGGED.replace('-A INPUT -m limit --limit 5/min -j LOG --log-prefix "drop: "\n', "")
    assert ("TW-DROP-NOT-LOGGED", "ipv4") in ids(unlogged)
    # a LOG rule that sees only tcp: udp drops are not logged
    assert ("TW-DROP-NOT-LOGGED", "ipv4") in ids(LOGGED.replace("-m limit", "-p tcp -m limit"))
    # more unlogged drop rules than are named: the message says so
    many = unlogged.replace("COMMIT", "".join(f"-A INPUT -s 203.0.113.{k}/32 -j DROP\n" for k in range(1, 11)) + "COMMIT")
    found = by_id(audit_snapshot(dump_snapshot(many, LOGGED, "")), "TW-DROP-NOT-LOGGED", "ipv4")
    assert found and len(found[0].decided_by) == 6
    assert found[0].message.endswith("; the first 6 such rules are named (twinwall explain shows the others)"), found[0].message
    few = unlogged.replace("COMMIT", "-A INPUT -s 203.0.113.1/32 -j DROP\nCOMMIT")
    found = by_id(audit_snapshot(dump_snapshot(few, LOGGED, "")), "TW-DROP-NOT-LOGGED", "ipv4")
    assert found and "the first" not in found[0].message
    # the LOG rule before the loopback accept: loopback traffic is logged
    lo_first = LOGGED.replace("-A INPUT -i lo -j ACCEPT\n", "").replace("COMMIT", "-A INPUT -i lo -j ACCEPT\nCOMMIT")
    report = audit_snapshot(dump_snapshot(lo_first, LOGGED, ""))
    found = by_id(report, "TW-LOOPBACK-LOGGED", "ipv4")
    assert found and found[0].decided_by[0][1].rule.endswith('-j LOG --log-prefix "drop: "')
    assert found[0].decided_by[0][1].line == 6


def test_nft_log_drop_counts_as_logged():
    def v6_ids(expr):
        doc = json.loads(json.dumps(INET_BLOCKLIST))
        doc["nftables"][2]["chain"]["policy"] = "drop"
        doc["nftables"][6]["rule"]["expr"] = expr
        snap = HostSnapshot(hostname="t")
        snap.rulesets.append(RulesetText("inet", "nft-json", "nft", "r.json", json.dumps(doc)))
        snap.ipv6.enabled = True
        return {f.id for f in audit_snapshot(snap).findings if f.family == "ipv6"}

    blocked = INET_BLOCKLIST["nftables"][6]["rule"]["expr"][0]
    # the blocklist logs and drops its /64; every other source falls to the unlogged policy drop
    assert "TW-DROP-NOT-LOGGED" in v6_ids([blocked, {"log": {"prefix": "x"}}, {"drop": None}])
    # one 'log drop' for everything the v6 chain sees: every drop is logged, loopback too
    ids = v6_ids([{"log": {"prefix": "x"}}, {"drop": None}])
    assert "TW-DROP-NOT-LOGGED" not in ids and "TW-LOOPBACK-LOGGED" in ids


def test_route_localnet_makes_spoofed_loopback_medium():
    web = LOGGED.replace("COMMIT", "-A INPUT -p tcp --dport 80 -j ACCEPT\nCOMMIT")
    snap = dump_snapshot(web, web, "")
    assert {f.severity for f in by_id(audit_snapshot(snap), "TW-SPOOFED-LOOPBACK", "ipv4")} == {"low"}
    snap.sysctls = {"net.ipv4.conf.eth0.route_localnet": "1"}
    f = by_id(audit_snapshot(snap), "TW-SPOOFED-LOOPBACK", "ipv4")[0]
    assert f.severity == "medium" and "route_localnet" in f.evidence[0]


def test_sysctls_are_read_from_proc_and_round_trip_the_snapshot(tmp_path):
    sys_net = tmp_path / "sys" / "net"
    (sys_net / "ipv4").mkdir(parents=True)
    (sys_net / "ipv4" / "ip_forward").write_text("1\n")
    for conf, value in (("all", "0"), ("eth0.100", "1")):
        (sys_net / "ipv6" / "conf" / conf).mkdir(parents=True)
        (sys_net / "ipv6" / "conf" / conf / "forwarding").write_text(value + "\n")
        (sys_net / "ipv4" / "conf" / conf).mkdir(parents=True)
        (sys_net / "ipv4" / "conf" / conf / "rp_filter").write_text("2\n")
    got = read_sysctls(str(tmp_path))
    assert got == {
        "net.ipv4.ip_forward": "1",
        "net.ipv6.conf.all.forwarding": "0",
        "net.ipv6.conf.eth0/100.forwarding": "1",
        "net.ipv4.conf.all.rp_filter": "2",
        "net.ipv4.conf.eth0/100.rp_filter": "2",
    }
    snap = HostSnapshot(hostname="h", sysctls=got)
    back = snapshot_from_json(snapshot_to_json(snap))
    assert back.sysctls == got and back.forwarding("ipv4") is True and back.forwarding("ipv6") is False
    # older snapshots have no sysctls: forwarding unknown
    doc = snapshot_to_json(snap)
    del doc["sysctls"]
    assert snapshot_from_json(doc).forwarding("ipv4") is None
    doc["sysctls"] = {"net.ipv4.ip_forward": 1}
    with pytest.raises(InputError, match="sysctls.net.ipv4.ip_forward"):
        snapshot_from_json(doc)


def _readme_findings_table():
    text = (ROOT / "README.md").read_text()
    section = text.split("### Findings", 1)[1]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| (TW-[A-Z0-9-]+) \| ([a-z]+)", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_readme_findings_table_is_the_catalogue():
    rows = _readme_findings_table()
    assert set(rows) == set(CATALOGUE)
    assert {k: v for k, v in rows.items()} == {k: CATALOGUE[k].severity for k in rows}


def test_every_id_the_audit_can_raise_is_catalogued():
    sources = [ROOT / "src" / "twinwall" / "analysis" / "audit.py"]
    sources += list((ROOT / "src" / "twinwall" / "analysis").glob("*.py"))
    raised = {m for p in sources for m in re.findall(r'"(TW-[A-Z0-9-]+)"', p.read_text())}
    assert raised and raised <= set(CATALOGUE), raised - set(CATALOGUE)
    for k in CATALOGUE.values():
        assert k.fix, f"{k.id} has no fix line"


def test_table_names_each_finding_fix_and_marks_every_grouped_row():
    from twinwall.report.text import render_audit

    out = render_audit(audit_snapshot(dump_snapshot(V4, NEVER, SS)))
    assert "      fix: add ip6tables INPUT rules restricting tcp/25, tcp/80, tcp/3306, udp/53, udp/123 like IPv4's" in out
    rows = [line for line in out.splitlines() if line.startswith(("tcp ", "udp "))]
    assert sum("high: TW-FAMILY-GAP" in r for r in rows) == 5
