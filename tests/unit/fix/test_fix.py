"""twinwall fix: strategies, translation and owner renderers on real iptables-save output.

The rulesets are hand-written, loaded with iptables-restore / ip6tables-restore in a throw-away
network namespace (``unshare --net``) and read back with iptables-save, so the planner sees what
the kernel prints (``-m conntrack``, ``--icmpv6-type 135``...). The proof each plan carries is
twinwall's own audit of the candidate; these tests also check the candidate texts themselves:
where the rules went, what ICMP they name, that the CIS sequences come out right.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import List, Optional

import pytest

from twinwall.analysis.audit import audit_snapshot
from twinwall.cli import main
from twinwall.fix.model import Refused, RuleSpec
from twinwall.fix.planner import make_plan
from twinwall.fix.translate import AddressMap, icmp_twin, translate_iptables_args
from twinwall.model import HostSnapshot, Ipv6State, RulesetText
from twinwall.sources.sockets import parse_ss

needs_netns = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                 reason="loading rules in a scratch namespace needs root and unshare")


def readback(family: str, text: str) -> str:
    """``text`` through the kernel: restored and saved in a new network namespace."""
    tool = "iptables" if family == "ipv4" else "ip6tables"
    res = subprocess.run(["unshare", "--net", "--", "sh", "-c", f"{tool}-restore && {tool}-save"],
                         input=text, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def table(rules: str, input_policy: str = "DROP", output: str = "", output_policy: str = "ACCEPT") -> str:
    body = "\n".join(l.strip() for l in (rules + "\n" + output).strip().splitlines() if l.strip())
    return (f"*filter\n:INPUT {input_policy} [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT {output_policy} [0:0]\n"
            + (body + "\n" if body else "") + "COMMIT\n")


V6_NDP = """
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -j ACCEPT
"""

SS = """\
tcp LISTEN 0 128 *:22 *:*
tcp LISTEN 0 128 *:80 *:*
udp UNCONN 0 0 *:123 *:*
tcp LISTEN 0 20 [::1]:25 [::]:*
"""


def host(v4: Optional[str], v6: Optional[str], ss: str = SS) -> HostSnapshot:
    snap = HostSnapshot(hostname="", sockets_known=True, sockets=parse_ss(ss))
    for fam, text in (("ipv4", v4), ("ipv6", v6)):
        if text is not None:
            snap.rulesets.append(RulesetText(fam, "iptables-save", "nft", f"{fam}.rules", readback(fam, text)))
    snap.ipv6 = Ipv6State(None, ["offline"])
    return snap


def ids(report, family=None) -> List[str]:
    return [f.id for f in report.findings if family is None or f.family == family]


def after(plan) -> HostSnapshot:
    """The host with the candidate loaded (its texts read back as the kernel prints them)."""
    snap = HostSnapshot.from_dict(plan.snapshot.to_dict())
    for fam in ("ipv4", "ipv6"):
        text = getattr(plan.candidate, fam)
        if text is not None:
            snap.rulesets = [r for r in snap.rulesets if r.family != fam]
            snap.rulesets.append(RulesetText(fam, "iptables-save", "nft", f"{fam}.fixed", readback(fam, text)))
    return snap


def chain(text: str, name: str) -> List[str]:
    return [l for l in text.splitlines() if l.startswith(f"-A {name} ")]


# ---------------------------------------------------------------------------------------------
# translation (no namespace needed)


def test_addresses_translate_by_role_and_map():
    m = AddressMap.parse(["192.0.2.0/24=2001:db8:1::/64"])
    assert m.translate("0.0.0.0/0", "ipv6") == "::/0"
    assert m.translate("127.0.0.0/8", "ipv6") == "::1/128"
    assert m.translate("169.254.0.0/16", "ipv6") == "fe80::/10"
    assert m.translate("224.0.0.0/4", "ipv6") == "ff00::/8"
    assert m.translate("192.0.2.0/24", "ipv6") == "2001:db8:1::/64"
    assert m.translate("192.0.2.5/32", "ipv6") == "2001:db8:1::5/128"
    assert m.translate("192.0.2.128/25", "ipv6") == "2001:db8:1::80/121"
    assert m.translate("2001:db8:1::/64", "ipv4") == "192.0.2.0/24"
    with pytest.raises(Refused, match="198.51.100.0/24.*--map"):
        m.translate("198.51.100.0/24", "ipv6")


def test_bad_map_is_an_input_error():
    from twinwall.errors import InputError

    for bad in ("192.0.2.0/24", "192.0.2.0/24=198.51.100.0/24", "x=y", "192.0.2.0/16=2001:db8::/120"):
        with pytest.raises(InputError):
            AddressMap.parse([bad])


def test_icmp_is_never_written_as_p_icmp_into_ip6tables():
    args = ["-p", "icmp", "-m", "icmp", "--icmp-type", "8", "-j", "ACCEPT"]
    out = translate_iptables_args(args, "ipv4", "ipv6", AddressMap())
    assert out == ["-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", "echo-request", "-j", "ACCEPT"]
    assert icmp_twin("fragmentation-needed", "ipv6") == "packet-too-big"
    with pytest.raises(Refused):
        icmp_twin("timestamp-request", "ipv6")
    rej = translate_iptables_args(["-p", "tcp", "-j", "REJECT", "--reject-with", "icmp-host-prohibited"],
                                  "ipv4", "ipv6", AddressMap())
    assert rej[-1] == "icmp6-adm-prohibited"
    with pytest.raises(Refused):
        translate_iptables_args(["-m", "set", "--match-set", "blocked", "src", "-j", "DROP"], "ipv4", "ipv6", AddressMap())
    with pytest.raises(Refused, match="10.0.0.0/8"):  # the ferm failure: never drop the address
        translate_iptables_args(["!", "-s", "10.0.0.0/8", "-p", "tcp", "--dport", "22", "-j", "DROP"],
                                "ipv4", "ipv6", AddressMap())


def test_rulespec_renders_icmpv6_names_each_tool_knows():
    r = RuleSpec("ipv6", "INPUT", "ACCEPT", protocol="ipv6-icmp", icmp_type="mld-listener-query", source="fe80::/10")
    assert "--icmpv6-type 130" in " ".join(r.iptables_args())
    assert "icmpv6 type mld-listener-query" in r.nft()
    ns = RuleSpec("ipv6", "INPUT", "ACCEPT", protocol="ipv6-icmp", icmp_type="neighbour-solicitation", hop_limit=255)
    assert "icmpv6 type nd-neighbor-solicit" in ns.nft() and "ip6 hoplimit 255" in ns.nft()


# ---------------------------------------------------------------------------------------------
# strategies on real read-back rules

V4_CAREFUL = table("""
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT
""")


@needs_netns
def test_mirror_of_forgotten_ip6tables_refuses_unmapped_prefix_and_closes_the_rest():
    snap = host(V4_CAREFUL, table("", input_policy="ACCEPT"))
    plan = make_plan(snap, findings=["TW-FAMILY-GAP"])
    refused = {tuple(r.services): r.reason for r in plan.refused}
    assert any("192.0.2.0/24" in reason and "--map" in reason for reason in refused.values()), refused
    assert plan.proof is not None and plan.proof.ok and not plan.proof.opened
    v6 = plan.candidate.ipv6
    assert any("--dport 123" in l and "-j DROP" in l for l in chain(v6, "INPUT"))
    assert not any("--dport 22" in l for l in chain(v6, "INPUT"))  # never guessed, never dropped
    rep = audit_snapshot(after(plan))
    statuses = {(s.socket.protocol, s.socket.port): s.verdicts["ipv6"].status for s in rep.services}
    assert statuses[("udp", 123)] == "filtered" and statuses[("tcp", 80)] == "open"


@needs_netns
def test_mirror_with_map_restricts_ipv6_to_the_twin_prefix():
    snap = host(V4_CAREFUL, table("", input_policy="ACCEPT"))
    plan = make_plan(snap, findings=["TW-FAMILY-GAP"], maps=["192.0.2.0/24=2001:db8:1::/64"])
    assert not plan.refused, plan.refused
    v6 = chain(plan.candidate.ipv6, "INPUT")
    accept = next(i for i, l in enumerate(v6) if "-s 2001:db8:1::/64" in l and "--dport 22" in l)
    drop = next(i for i, l in enumerate(v6) if "--dport 22" in l and "-j DROP" in l)
    assert accept < drop
    rep = audit_snapshot(after(plan))
    ssh = next(s for s in rep.services if s.socket.port == 22)
    assert ssh.verdicts["ipv6"].status == "restricted"
    assert ssh.verdicts["ipv6"].allowed_sources == ["2001:db8:1::/64"]
    assert "TW-FAMILY-GAP" not in ids(rep)
    # the proof names each finding gone once, with the service it was about
    assert plan.proof.gone and len(plan.proof.gone) == len(set(plan.proof.gone)), plan.proof.gone
    assert any("tcp/22" in g for g in plan.proof.gone), plan.proof.gone


@needs_netns
def test_mirror_goes_before_the_accept_never_after_a_drop():
    # IPv6 accepts tcp/80 by a rule, then drops everything: the twin must precede the accept
    # (appended after the DROP, as ComplianceAsCode does, it would never be reached)
    v4 = table("-A INPUT -i lo -j ACCEPT\n-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 80 -j ACCEPT")
    v6 = table(V6_NDP + "-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\n-A INPUT -j DROP",
               input_policy="ACCEPT")
    plan = make_plan(host(v4, v6, "tcp LISTEN 0 128 *:80 *:*\n"), findings=["TW-FAMILY-GAP"],
                     maps=["192.0.2.0/24=2001:db8:1::/64"])
    assert plan.proof.ok, plan.refused
    rules = chain(plan.candidate.ipv6, "INPUT")
    old_accept = rules.index("-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT")
    new = [i for i, l in enumerate(rules) if "2001:db8:1::/64" in l or ("--dport 80" in l and "DROP" in l)]
    assert new and max(new) < old_accept < rules.index("-A INPUT -j DROP")


@needs_netns
def test_close_drops_the_port_in_the_wider_family_only():
    snap = host(V4_CAREFUL, table("", input_policy="ACCEPT"))
    plan = make_plan(snap, findings=["TW-FAMILY-GAP"], strategy_name="close")
    assert plan.proof.ok and plan.candidate.ipv4 is None
    rep = audit_snapshot(after(plan))
    for s in rep.services:
        if s.socket.port in (22, 123):
            assert s.verdicts["ipv6"].status == "filtered"


@needs_netns
def test_accept_new_writes_the_cis_rule_and_keeps_the_service_open():
    # seed 000: ip6tables with policy ACCEPT, sshd open over both: an explicit NEW accept
    v4 = table("-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -p udp -m udp --dport 123 -j ACCEPT")
    v6 = table(V6_NDP, input_policy="ACCEPT")
    snap = host(v4, v6)
    assert "TW-NO-RULE" in ids(audit_snapshot(snap), "ipv6")
    plan = make_plan(snap, findings=["TW-NO-RULE"])
    assert plan.proof.ok and not plan.proof.closed and not plan.proof.opened
    assert "-A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT" in chain(plan.candidate.ipv6, "INPUT")
    assert "TW-NO-RULE" not in ids(audit_snapshot(after(plan)))


@needs_netns
def test_baseline_default_deny_keeps_ipv6_ssh_and_writes_icmpv6_before_conntrack():
    # ansible-lockdown's sequence set IPv6 policy DROP with no IPv6 SSH accept and '-p icmp':
    # baseline must keep tcp/22 reachable over IPv6 and never write -p icmp into ip6tables
    v4 = table("-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
               "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT")
    v6 = table("-A INPUT -m conntrack --ctstate INVALID -j DROP", input_policy="ACCEPT")
    snap = host(v4, v6, "tcp LISTEN 0 128 *:22 *:*\n")
    plan = make_plan(snap, strategy_name="baseline", findings=["TW-NO-DEFAULT-DENY:input"])
    assert plan.proof.ok, plan.refused
    v6c = plan.candidate.ipv6
    assert ":INPUT DROP" in v6c and "-p icmp " not in v6c
    rules = chain(v6c, "INPUT")
    first_ct = next(i for i, l in enumerate(rules) if "conntrack" in l or "state" in l)
    ndp = [i for i, l in enumerate(rules) if "--icmpv6-type neighbour-solicitation" in l or "--icmpv6-type 135" in l]
    ptb = [i for i, l in enumerate(rules) if "packet-too-big" in l or "--icmpv6-type 2 " in l]
    assert ndp and ptb and max(ndp + ptb) < first_ct
    assert any("--dport 22" in l and "ACCEPT" in l for l in rules)
    rep = audit_snapshot(after(plan))
    ssh = next(s for s in rep.services if s.socket.port == 22)
    assert ssh.verdicts["ipv6"].status == "open"
    assert "TW-NO-DEFAULT-DENY" not in [f.id for f in rep.findings if f.family == "ipv6" and f.hook == "input"]
    assert "TW-ICMPV6-NDP-BLOCKED" not in ids(rep)


@needs_netns
def test_drop_logging_goes_before_the_drop_rule_and_never_sees_loopback():
    v4 = table("-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -j DROP", input_policy="ACCEPT")
    snap = host(v4, None, "tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n")
    plan = make_plan(snap, findings=["TW-DROP-NOT-LOGGED"])
    assert plan.proof.ok, plan.refused
    rules = chain(plan.candidate.ipv4, "INPUT")
    log = next(i for i, l in enumerate(rules) if "-j LOG" in l)
    assert "! -i lo" in rules[log] and log < rules.index("-A INPUT -j DROP")
    assert "TW-DROP-NOT-LOGGED" not in ids(audit_snapshot(after(plan)))


@needs_netns
def test_block_ipv6_is_seed_001():
    snap = host(V4_CAREFUL, table("", input_policy="ACCEPT"))
    plan = make_plan(snap, strategy_name="block-ipv6")
    assert plan.proof.ok, plan.refused
    v6 = plan.candidate.ipv6
    for c in ("INPUT", "FORWARD", "OUTPUT"):
        assert f":{c} DROP" in v6
    rules = chain(v6, "INPUT")
    assert rules[0] == "-A INPUT -i lo -j ACCEPT" and "! -i lo" in rules[1] and "LOG" in rules[1]
    assert "-A OUTPUT -o lo -j ACCEPT" in v6
    rep = audit_snapshot(after(plan))
    assert all(s.verdicts["ipv6"].status in ("filtered", "not-bound", "local-only") for s in rep.services)
    assert plan.candidate.ipv4 is None  # IPv4 untouched


@needs_netns
def test_egress_twins_the_output_block_of_seed_002():
    out4 = ("-A OUTPUT -p tcp -m tcp --dport 25 -m owner --uid-owner 12345 -j ACCEPT\n"
            "-A OUTPUT -p tcp -m tcp --dport 25 -j REJECT --reject-with icmp-port-unreachable\n"
            "-A OUTPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT")
    v4 = table("", input_policy="ACCEPT", output=out4)
    v6 = table(V6_NDP, input_policy="ACCEPT")
    snap = host(v4, v6, "tcp LISTEN 0 128 *:22 *:*\n")
    assert "TW-EGRESS-FORWARD-DIFFER" in ids(audit_snapshot(snap))
    plan = make_plan(snap, findings=["TW-EGRESS-FORWARD-DIFFER"])
    assert plan.proof.ok, plan.refused
    rules = chain(plan.candidate.ipv6, "OUTPUT")
    assert any("--uid-owner 12345" in l for l in rules)
    assert any("--dport 25" in l and "icmp6-port-unreachable" in l for l in rules)
    assert not any("-p icmp " in l for l in rules)
    assert "TW-EGRESS-FORWARD-DIFFER" not in ids(audit_snapshot(after(plan)))


@needs_netns
def test_a_plan_that_would_open_something_is_refused():
    # accept-new on a service IPv4 restricts: an accept for every source would open it
    v4 = table("-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT", input_policy="ACCEPT")
    plan = make_plan(host(v4, None, "tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n"), strategy_name="mirror")
    assert not plan.changes
    plan2 = make_plan(host(table("", input_policy="ACCEPT"), None, "tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n"),
                      findings=["TW-NO-RULE"])
    assert plan2.proof is None or plan2.proof.ok  # the explicit rule opens nothing


@needs_netns
def test_planning_on_the_fixed_host_finds_nothing_to_fix():
    snap = host(V4_CAREFUL, table("", input_policy="ACCEPT"))
    opts = dict(findings=["TW-FAMILY-GAP"], maps=["192.0.2.0/24=2001:db8:1::/64"])
    plan = make_plan(snap, **opts)
    assert plan.changes
    again = make_plan(after(plan), **opts)
    assert not again.changes and not again.refused


# ---------------------------------------------------------------------------------------------
# the command


@needs_netns
def test_cli_formats_and_exit_codes(tmp_path, capsys):
    v4, v6, ss = tmp_path / "v4", tmp_path / "v6", tmp_path / "ss"
    v4.write_text(readback("ipv4", V4_CAREFUL))
    v6.write_text(readback("ipv6", table("", input_policy="ACCEPT")))
    ss.write_text(SS)
    base = ["fix", "--iptables", str(v4), "--ip6tables", str(v6), "--sockets", str(ss), "--finding", "TW-FAMILY-GAP"]
    assert main(base + ["--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "twinwall.fix/1"
    assert set(doc) >= {"changes", "proof", "refused"}
    assert set(doc["proof"]) >= {"closed", "opened", "findings_after"}
    c = doc["changes"][0]
    assert set(c) >= {"finding", "family", "strategy", "owner", "commands", "rules"}
    assert c["owner"] == "iptables" and c["commands"][0].startswith("ip6tables -I INPUT")
    assert main(base + ["--format", "script"]) == 1
    script = capsys.readouterr().out
    assert "set -eu" in script and "ip6tables-nft-restore --test <<" in script
    assert main(base + ["--map", "not-a-map"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twinwall: --map") and len(err.strip().splitlines()) == 1
    fixed = tmp_path / "v6.fixed"
    main(base + ["--map", "192.0.2.0/24=2001:db8:1::/64", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    fixed.write_text(readback("ipv6", doc["candidate"]["ipv6"]))
    again = ["fix", "--iptables", str(v4), "--ip6tables", str(fixed), "--sockets", str(ss),
             "--finding", "TW-FAMILY-GAP", "--map", "192.0.2.0/24=2001:db8:1::/64"]
    assert main(again) == 0
    assert "nothing to fix" in capsys.readouterr().out


def test_apply_refuses_offline_input(tmp_path, capsys):
    v4 = tmp_path / "v4"
    v4.write_text("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    ss = tmp_path / "ss"
    ss.write_text("tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n")
    rc = main(["fix", "--iptables", str(v4), "--sockets", str(ss), "--finding", "TW-NO-RULE", "--apply"])
    assert rc in (1, 2)


def test_ufw_and_firewalld_rules_name_their_family():
    from twinwall.fix.owners import firewalld, ufw

    r = RuleSpec("ipv6", "ufw6-user-input", "ACCEPT", protocol="tcp", dport=22, source="2001:db8:a::/64", state="NEW")
    assert ufw.rule_args(r) == ["allow", "proto", "tcp", "from", "2001:db8:a::/64", "to", "any", "port", "22"]
    deny = RuleSpec("ipv6", "INPUT", "DROP", protocol="udp", dport=123, not_iif="lo", state="NEW")
    assert ufw.rule_args(deny)[:5] == ["deny", "proto", "udp", "from", "::/0"]  # ::/0: IPv6 only
    assert ufw.ufw_spec("-A ufw6-user-input -p tcp -m tcp --dport 22 -j ACCEPT", "ipv6") == \
        ["allow", "proto", "tcp", "from", "::/0", "to", "any", "port", "22"]
    with pytest.raises(Refused):
        ufw.rule_args(RuleSpec("ipv6", "INPUT", "ACCEPT", protocol="ipv6-icmp", icmp_type="packet-too-big"))
    rich = firewalld.rich_rule(RuleSpec("ipv4", "INPUT", "ACCEPT", protocol="tcp", dport=22, source="192.0.2.0/24"))
    assert rich == 'rule family="ipv4" source address="192.0.2.0/24" port port="22" protocol="tcp" accept'
    from twinwall.fix.model import Change

    mirror = Change("TW-FAMILY-GAP", "ipv6", "mirror", [
        RuleSpec("ipv6", "INPUT", "ACCEPT", protocol="tcp", dport=22, source="2001:db8:a::/64"),
        RuleSpec("ipv6", "INPUT", "DROP", protocol="tcp", dport=22, not_iif="lo")])
    do, undo = firewalld.commands_for([mirror])
    # in order by priority (firewalld accepts lo before any zone: "not lo" needs no match)
    assert do == [["firewall-cmd", '--add-rich-rule=rule priority=-100 family="ipv6" source address="2001:db8:a::/64" '
                   'port port="22" protocol="tcp" accept',
                   '--add-rich-rule=rule priority=-99 family="ipv6" port port="22" protocol="tcp" drop']]
    assert undo == [["firewall-cmd"] + [a.replace("--add-", "--remove-") for a in reversed(do[0][1:])]]
    assert len(mirror.commands) == 2 and mirror.rules_text.count("\n") == 1
    with pytest.raises(Refused):  # a zone, not a rich rule, names the interface
        firewalld.rich_rule(RuleSpec("ipv6", "INPUT", "ACCEPT", protocol="tcp", dport=22, iif="eth0"))


NFT_RULESET = """table inet filter {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "lo" accept
        ct state established,related accept
        meta nfproto ipv4 tcp dport 22 accept
        meta nfproto ipv4 meta l4proto tcp drop
    }
}
"""


@needs_netns
def test_nft_block_ipv6_is_a_twinwall_table_with_loopback_first():
    snap = nft_host(NFT_RULESET, "tcp LISTEN 0 128 *:22 *:*\ntcp LISTEN 0 128 *:80 *:*\n")
    plan = make_plan(snap, strategy_name="block-ipv6")
    assert plan.proof is not None and plan.proof.ok, plan.refused
    script = plan.candidate.nft
    assert plan.candidate.backend == "nft" and "table inet twinwall" in script and "table inet filter" not in script
    lines = [l for l in script.splitlines() if l.startswith(("insert", "add"))]
    assert 'insert rule inet twinwall input meta nfproto ipv6 iifname "lo" accept' in lines
    assert all(l.startswith("insert") for l in lines[:2])  # loopback accepts come before everything
    assert lines[-1].endswith("meta nfproto ipv6 drop")
    after_plan = audit_snapshot(candidate_after_nft(snap, script))
    assert all(s.verdicts["ipv6"].status == "filtered" for s in after_plan.services)
    assert all(s.verdicts["ipv4"].status != "filtered" or s.socket.port == 80 for s in after_plan.services)


def candidate_after_nft(snap: HostSnapshot, script: str) -> HostSnapshot:
    return candidate_after_nft_text(snap, NFT_RULESET, script)


# ---------------------------------------------------------------------------------------------
# seed 000 as a new user ran it: the proof sees every finding, baseline twins both families, no
# dead rules, mirror's drops logged

NEW_USER_V4 = table("""
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p icmp -j ACCEPT
""")
NEW_USER_SS = "tcp LISTEN 0 128 *:22 *:*\ntcp LISTEN 0 128 *:8080 *:*\n"


def serious(findings) -> set:
    from twinwall.fix.proof import finding_keys

    return {k for f in findings if f.severity in ("medium", "high", "critical") for k in finding_keys(f)}


@needs_netns
def test_new_user_default_plan_twins_both_families_and_raises_no_new_finding():
    snap = host(NEW_USER_V4, "", NEW_USER_SS)
    plan = make_plan(snap)
    assert plan.proof is not None and plan.proof.ok, plan.proof.reason if plan.proof else plan.refused
    v4, v6 = plan.candidate.ipv4, plan.candidate.ipv6
    # whatever baseline does to one family's OUTPUT, the other gets too (its own ICMPv6 for IPv6)
    assert ":OUTPUT DROP" in v4 and ":OUTPUT DROP" in v6
    assert "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" in chain(v6, "OUTPUT")
    assert any("neighbour-solicitation" in l and "--hl-eq 255" in l for l in chain(v6, "OUTPUT"))
    rules6 = chain(v6, "INPUT")
    drop = next(i for i, l in enumerate(rules6) if "--dport 8080" in l and l.endswith("-j DROP"))
    # mirror's drop is logged first, never loopback; baseline's accept of 8080 after it is left out
    assert "-j LOG" in rules6[drop - 1] and "--dport 8080" in rules6[drop - 1] and "! -i lo" in rules6[drop - 1]
    assert not any("--dport 8080" in l and "ACCEPT" in l for l in rules6)
    assert any("--dport 8080" in r for c in plan.changes for r in c.left_out)
    rep = audit_snapshot(after(plan))
    assert not serious(rep.findings) - serious(plan.report.findings), [f.to_json() for f in rep.findings]
    assert "TW-DROP-NOT-LOGGED" not in ids(rep, "ipv6")
    assert not [f for f in rep.findings if f.id == "TW-EGRESS-FORWARD-DIFFER" and f.hook == "output"]


@needs_netns
def test_the_proof_refuses_a_plan_that_makes_the_families_differ_on_output():
    # one family's OUTPUT default deny alone (what baseline did before it twinned): the
    # candidate's egress comparison raises a new medium finding, and the proof says so
    from twinwall.apply.candidate import candidate_snapshot
    from twinwall.fix.owners import owner
    from twinwall.fix.proof import prove
    from twinwall.fix.strategies import FixContext
    from twinwall.fix.strategies.baseline import _deny_change

    snap = host(NEW_USER_V4, "", NEW_USER_SS)
    report = audit_snapshot(snap)
    f = next(f for f in report.findings if f.id == "TW-NO-DEFAULT-DENY" and f.hook == "output")
    changes = [_deny_change(f, "ipv4", "OUTPUT", FixContext(snap, report))]
    cand = owner("iptables").render(snap, changes)
    proof = prove(snap, report, candidate_snapshot(snap, cand, True), [f], changes)
    assert not proof.ok and "TW-EGRESS-FORWARD-DIFFER (output)" in proof.reason, proof.reason


def test_dead_rules_of_a_plan_are_found_and_live_ones_kept():
    from twinwall.fix.shadow import dead_rules

    lines = ["-A INPUT -i lo -j ACCEPT",
             "-A INPUT ! -i lo -p tcp -m tcp --dport 8080 -m conntrack --ctstate NEW -j DROP",
             "-A INPUT -p tcp -m tcp --dport 8080 -m conntrack --ctstate NEW -j ACCEPT",  # dead: lo above
             "-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT",
             "-A INPUT -s 192.0.2.5/32 -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j DROP",  # dead
             "-A INPUT -p tcp -m multiport --dports 22,80 -j DROP",  # unread match: never called dead
             "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",  # live: other sources
             "-A INPUT -m limit --limit 5/min -j ACCEPT",  # a limited rule decides nothing for others
             "-A INPUT -p udp -m udp --dport 53 -j ACCEPT"]
    assert dead_rules(lines, [True] * len(lines)) == [None, None, 1, None, 3, None, None, None, None]
    # without the loopback accept, the 8080 accept still takes loopback: live
    assert dead_rules(lines[1:3], [True, True]) == [None, None]
    # rules already there are never touched
    assert dead_rules(lines[:3], [False] * 3) == [None] * 3


@needs_netns
def test_mirror_falls_back_before_the_first_rule_that_decides_the_service():
    from dataclasses import replace

    from twinwall.fix.strategies import FixContext
    from twinwall.fix.strategies.mirror import placed

    v6 = table("-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
               "-A INPUT -p udp -m udp --dport 53 -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 1:1024 -j LOG\n"
               "-A INPUT -p tcp -m multiport --dports 80,8080 -j ACCEPT\n-A INPUT -j DROP", input_policy="ACCEPT")
    snap = host(NEW_USER_V4, v6, NEW_USER_SS)
    report = audit_snapshot(snap)
    ctx = FixContext(snap, report)
    gap = next(f for f in report.findings if f.id == "TW-FAMILY-GAP")
    svc = next(s for s in report.services if s.socket.port == 8080)
    # the decision that let IPv6 in, not located (a table or chain the fixer cannot edit)
    lost = replace(svc, verdicts={**svc.verdicts, "ipv6": replace(svc.verdicts["ipv6"], decided_by=[])})
    from twinwall.fix.strategies import service_rule

    change = placed(gap, lost, "ipv6", [service_rule(lost, "ipv6", "DROP", not_iif="lo")], "mirror", ctx)
    # before the multiport rule (rule 5: it may take tcp/8080), not after the final DROP
    assert (change.place, change.anchor) == ("before", 5), (change.place, change.anchor, change.fallback)
    assert "not located" in change.fallback
    change.note = "tcp/8080: ipv4 is filtered; ipv6 gets its twin"
    assert change.full_note().endswith("; " + change.fallback)  # the plan says where it went
    from twinwall.fix.owners.nft import NftOwner

    NftOwner().render(snap, [change])
    # in a table of twinwall's own the admin's chain does not matter: said once, without the fallback
    assert "not located" not in change.full_note() and "inet twinwall" in change.full_note()
    no_rules = host(NEW_USER_V4, table("", input_policy="ACCEPT"), NEW_USER_SS)
    change = placed(gap, lost, "ipv6", [service_rule(lost, "ipv6", "DROP", not_iif="lo")], "mirror",
                    FixContext(no_rules, audit_snapshot(no_rules)))
    assert change.place == "bottom" and "end of INPUT" in change.fallback


@needs_netns
def test_diff_snapshot_leaves_the_snapshot_it_is_given_alone():
    from twinwall.analysis.diff.compare import diff_snapshot

    snap = host(NEW_USER_V4, table(""))
    texts = [r.text for r in snap.rulesets]
    for parallel in (False, True):
        diff_snapshot(snap, parallel=parallel)
        assert [r.text for r in snap.rulesets] == texts


NFT_EGRESS = """
table inet filter {
    chain output {
        type filter hook output priority filter; policy accept;
        meta nfproto ipv4 tcp dport 25 meta skuid 12345 accept
        meta nfproto ipv4 tcp dport 25 reject with icmp type port-unreachable
    }
}
"""


def nft_host(ruleset: str, ss: str = "tcp LISTEN 0 128 *:22 *:*\n") -> HostSnapshot:
    """A host whose rules are ``ruleset`` as ``nft -j`` prints it back from a scratch namespace."""
    res = subprocess.run(["unshare", "--net", "--", "sh", "-c", "nft -f - && nft -j list ruleset"], input=ruleset,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    snap = HostSnapshot(sockets=parse_ss(ss))
    snap.rulesets.append(RulesetText("inet", "nft-json", "nft", "ruleset.json", res.stdout))
    snap.ipv6 = Ipv6State(None, ["offline"])
    return snap


@needs_netns
def test_egress_twins_native_nft_output_rules_into_the_twinwall_table():
    # seed 002 on a native nft host: the tcp/25 block (mail user excepted) is IPv4's only
    snap = nft_host(NFT_EGRESS)
    assert "TW-EGRESS-FORWARD-DIFFER" in ids(audit_snapshot(snap))
    plan = make_plan(snap, findings=["TW-EGRESS-FORWARD-DIFFER"])
    assert plan.proof is not None and plan.proof.ok, (plan.refused, plan.proof and plan.proof.reason)
    script = plan.candidate.nft
    assert "table inet filter" not in script and "chain output" in script
    res = subprocess.run(["unshare", "--net", "--", "sh", "-c", 'nft -f /dev/stdin <<EOF\n' + NFT_EGRESS + script
                          + 'EOF\nnft list chain inet twinwall output'], capture_output=True, text=True, timeout=60)
    lines = [l.strip() for l in res.stdout.splitlines()]
    # as loaded: the mail user's accept first, then the reject, both for IPv6 only
    uid = next(i for i, l in enumerate(lines) if "skuid 12345 accept" in l and "nfproto ipv6" in l)
    rej = next(i for i, l in enumerate(lines) if "dport 25 reject with icmpv6" in l)  # (the reject pins IPv6)
    assert uid < rej and not any("nfproto ipv4" in l for l in lines), res.stdout
    fixed = audit_snapshot(candidate_after_nft_text(snap, NFT_EGRESS, script))
    assert "TW-EGRESS-FORWARD-DIFFER" not in ids(fixed)


def candidate_after_nft_text(snap: HostSnapshot, ruleset: str, script: str) -> HostSnapshot:
    res = subprocess.run(["unshare", "--net", "--", "sh", "-c", 'nft -f /dev/stdin <<EOF\n' + ruleset + script
                          + 'EOF\nnft -j list ruleset'], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = HostSnapshot.from_dict(snap.to_dict())
    out.rulesets = [RulesetText("inet", "nft-json", "nft", "fixed.json", res.stdout)]
    return out


def test_ufw_undo_puts_a_replaced_rule_back_at_its_number(tmp_path, monkeypatch):
    from twinwall.fix.owners import ufw

    def tuples(chain, ports):
        return "*filter\n" + "".join(f"### tuple ### allow tcp {p} any any in\n-A {chain} -p tcp --dport {p} -j ACCEPT\n\n"
                                     for p in ports) + "### END RULES ###\n-A ufw6-after-logging-input -j LOG\nCOMMIT\n"

    (tmp_path / "user.rules").write_text(tuples("ufw-user-input", (22, 8080, 443)))
    (tmp_path / "user6.rules").write_text(tuples("ufw6-user-input", (22, 8080, 443)))
    monkeypatch.setattr(ufw, "USER_RULES", {"ipv4": str(tmp_path / "user.rules"), "ipv6": str(tmp_path / "user6.rules")})
    spec = ["allow", "proto", "tcp", "from", "::/0", "to", "any", "port", "8080"]
    order = ufw._Order()
    # IPv6 rule 2 of 3: after the 3 IPv4 rules (ufw status numbered), at 3 + 2
    assert order.take("ipv6", "ufw6-user-input", 2, spec) == ["ufw", "insert", "5", *spec]
    order.added("ipv6", ["ufw", "prepend", "deny", "proto", "tcp", "from", "::/0", "to", "any", "port", "8080"])
    # the last rule: appended again (an insert past the end is refused by ufw)
    assert order.take("ipv6", "ufw6-user-input", 3, spec) == ["ufw", *spec]
    assert order.take("ipv4", "ufw-user-input", 1, spec) == ["ufw", "insert", "1", *spec]
    with pytest.raises(Refused):
        order.take("ipv4", "ufw-user-input", 9, spec)


def test_nft_rules_translate_for_the_other_family():
    from twinwall.fix.translate import translate_nft_rule

    m = AddressMap.parse(["192.0.2.0/24=2001:db8:1::/64"])
    assert (translate_nft_rule("meta nfproto ipv4 ip daddr 192.0.2.0/24 tcp dport 587 drop # handle 4", "ipv4", "ipv6", m)
            == "ip6 daddr 2001:db8:1::/64 tcp dport 587 drop")
    assert (translate_nft_rule("tcp dport 25 reject with icmp port-unreachable", "ipv4", "ipv6", m)
            == "tcp dport 25 reject with icmpv6 type port-unreachable")
    assert translate_nft_rule("icmp type echo-request accept", "ipv4", "ipv6", m) == "icmpv6 type echo-request accept"
    for bad in ("ip saddr @blocked drop", "tcp dport 25 jump mail", "ip saddr 198.51.100.0/24 drop"):
        with pytest.raises(Refused):
            translate_nft_rule(bad, "ipv4", "ipv6", m)


@needs_netns
def test_egress_on_a_ufw_host_is_refused_with_the_reason():
    # ufw writes OUTPUT rules for both families from one command: egress names ufw and says why
    def ufw_table(chain: str, rules: str) -> str:
        return (f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:{chain} - [0:0]\n"
                f"-A OUTPUT -j {chain}\n{rules}COMMIT\n")

    v4 = ufw_table("ufw-user-output", "-A ufw-user-output -p tcp -m tcp --dport 25 -j REJECT\n")
    snap = host(v4, ufw_table("ufw6-user-output", ""), "tcp LISTEN 0 128 *:22 *:*\n")
    plan = make_plan(snap, findings=["TW-EGRESS-FORWARD-DIFFER"])
    assert not plan.changes
    assert any("ufw" in r.reason and "by hand" in r.reason for r in plan.refused), plan.refused


def test_nft_owner_writes_every_policy_drop_after_every_changes_rules():
    """Two changes on one hook: the first sets the IPv6 output policy, the second adds a rule
    there. In table inet twinwall the drop must come last, or the second change's rule is dead."""
    import subprocess

    from twinwall.fix.model import Change, RuleSpec
    from twinwall.fix.owners.nft import OWNER as NFT

    first = Change(finding="TW-NO-DEFAULT-DENY", family="ipv6", strategy="baseline", chain="OUTPUT",
                   policies={"OUTPUT": "DROP"})
    second = Change(finding="TW-EGRESS-FORWARD-DIFFER", family="ipv6", strategy="egress", chain="OUTPUT",
                    rules=[RuleSpec(family="ipv6", chain="OUTPUT", action="ACCEPT", protocol="tcp", dport=25)])
    cand = NFT.render({}, [first, second])
    lines = [line for line in cand.nft.splitlines()
             if line.startswith(("add rule inet twinwall output", "insert rule inet twinwall output"))]
    assert lines[-1].startswith("add rule") and lines[-1].endswith("meta nfproto ipv6 drop"), lines
    assert any("dport 25" in line for line in lines[:-1]), lines
    # the script is what nft itself accepts (checked without touching any ruleset)
    res = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=cand.nft, text=True, capture_output=True)
    assert res.returncode == 0, res.stderr


def test_a_reject_is_twinned_by_type_from_iptables_and_nft_text_for_every_owner():
    """mirror's reject keeps the narrower family's kind of denial, whichever tool wrote it; the
    nft owner and firewalld's rich rules write it (they used to fall back to the default type)."""
    import subprocess

    from twinwall.fix.model import RuleSpec
    from twinwall.fix.owners.firewalld import rich_rule
    from twinwall.fix.translate import reject_twin
    from twinwall.twins import reject_with_of

    assert reject_with_of("-A INPUT -p tcp -j REJECT --reject-with icmp-admin-prohibited", "ipv4") == "icmp-admin-prohibited"
    assert reject_with_of("tcp dport 8080 reject with icmpx admin-prohibited", "ipv4") == "icmp-admin-prohibited"
    assert reject_with_of("tcp dport 8080 reject with icmpx admin-prohibited", "ipv6") == "icmp6-adm-prohibited"
    assert reject_with_of("tcp dport 8080 reject with icmp type host-prohibited", "ipv4") == "icmp-host-prohibited"
    assert reject_with_of("tcp dport 8080 reject with icmpv6 type admin-prohibited", "ipv6") == "icmp6-adm-prohibited"
    assert reject_with_of("tcp dport 8080 reject with tcp reset", "ipv6") == "tcp-reset"
    assert reject_with_of("tcp dport 8080 reject", "ipv4") is None
    wide = reject_twin(reject_with_of("reject with icmp type host-prohibited", "ipv4") or "", "ipv6")
    rule = RuleSpec(family="ipv6", chain="INPUT", action="REJECT", protocol="tcp", dport=8080, reject_with=wide)
    assert rule.nft().endswith("reject with icmpv6 type admin-prohibited")
    assert rich_rule(rule, -100).endswith('reject type="icmp6-adm-prohibited"')
    four = RuleSpec(family="ipv4", chain="INPUT", action="REJECT", protocol="tcp", dport=8080, reject_with="tcp-reset")
    script = f"table inet t {{\n chain c {{\n  {rule.nft()}\n  {four.nft()}\n }}\n}}\n"
    res = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=script, text=True, capture_output=True)
    assert res.returncode == 0, res.stderr


# a native nft host whose IPv4 rules are careful and IPv6 forgotten (the new-user run of the
# fix on nft): SSH restricted to one IPv4 admin, 8080 rejected over IPv4 only
NFT_NEW_USER = """table inet filter {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "lo" accept
    ct state established,related accept
    ip saddr 192.0.2.10 tcp dport 22 accept
    meta nfproto ipv4 tcp dport 22 drop
    meta nfproto ipv4 tcp dport 8080 reject with icmpx admin-prohibited
  }
}
"""


@needs_netns
def test_nft_default_deny_keeps_what_the_other_tables_accept_and_a_second_plan_lands_first():
    """Default deny in table inet twinwall must write the accepts of every reachable service
    itself (the admin's accepts in inet filter do not count there): before, the plan cut the
    admin's IPv4 SSH (restricted -> filtered) and the proof let it through. A second plan's
    mirror then goes before the first plan's drop (it used to be appended after it)."""
    ss = "tcp LISTEN 0 128 *:22 *:*\ntcp LISTEN 0 128 *:8080 *:*\n"
    snap = nft_host(NFT_NEW_USER, ss)
    plan = make_plan(snap)
    assert plan.proof is not None and plan.proof.ok, plan.refused
    assert not [r for r in plan.refused if r.finding == "TW-NO-DEFAULT-DENY"], plan.refused
    script = plan.candidate.nft
    assert "meta nfproto ipv4 ip saddr 192.0.2.10/32 meta l4proto tcp th dport 22 ct state new accept" in script
    first = audit_snapshot(candidate_after_nft_text(snap, NFT_NEW_USER, script))
    status = {(s.socket.port, f): v.summary() for s in first.services for f, v in s.verdicts.items()}
    assert status[(22, "ipv4")] == "restricted (192.0.2.10)" and status[(8080, "ipv6")] == "filtered", status
    # the second round: the IPv6 twin of the SSH restriction, with a map, on the fixed host
    fixed = nft_host(NFT_NEW_USER + script, ss)
    second = make_plan(fixed, maps=["192.0.2.0/24=2001:db8:1::/64"])
    assert second.proof is not None and second.proof.ok, second.refused
    after = audit_snapshot(candidate_after_nft_text(fixed, NFT_NEW_USER + script, second.candidate.nft))
    status = {(s.socket.port, f): v.summary() for s in after.services for f, v in s.verdicts.items()}
    assert status[(22, "ipv6")] == "restricted (2001:db8:1::a)", status
    assert not [f for f in after.findings if f.id == "TW-FAMILY-GAP"]


def test_the_proof_refuses_a_plan_that_cuts_a_service_no_change_means_to_close():
    from twinwall.fix.model import Change
    from twinwall.fix.proof import _meant_to_close

    snap = host(table("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"), None, "tcp LISTEN 0 128 *:22 *:*\n")
    report = audit_snapshot(snap)
    label = report.services[0].label()
    mirror = Change("TW-FAMILY-GAP", "ipv6", "mirror", services=[label])
    assert ("tcp", report.services[0].socket.address, 22, "ipv6") in _meant_to_close(report, [mirror])
    assert ("tcp", report.services[0].socket.address, 22, "ipv4") not in _meant_to_close(report, [mirror])
    assert (None, "ipv6") in _meant_to_close(report, [Change("TW-FAMILY-GAP", "ipv6", "block-ipv6")])
    assert _meant_to_close(report, [Change("TW-NO-DEFAULT-DENY", "ipv4", "baseline")]) == set()
