"""The audit on saved dumps: statuses, findings, the JSON contract, the CLI's exit codes."""

import json
import subprocess
import sys

import pytest

from _snapshots import dump_snapshot
from twinwall.analysis.audit import audit_snapshot
from twinwall.model import ListeningSocket

SS = """\
Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   LISTEN 0      128                *:22               *:*     users:(("sshd",pid=812,fd=3)) v6only:0
tcp   LISTEN 0      128          0.0.0.0:2222       0.0.0.0:*     users:(("sshd2",pid=813,fd=3))
tcp   LISTEN 0      128             [::]:8080          [::]:*     users:(("web",pid=900,fd=3)) v6only:1
udp   UNCONN 0      0                  *:123              *:*     users:(("ntpd",pid=700,fd=3)) v6only:0
tcp   LISTEN 0      20             [::1]:25            [::]:*     users:(("exim",pid=600,fd=3)) v6only:1
"""

V4 = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -s 127.0.0.0/8 -j DROP
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT
COMMIT
"""

# The CIS seed: ip6tables with policy DROP, loopback accept, spoofed ::1 drop, tcp/22 NEW accept
# (and neighbour discovery accepted, without which no IPv6 connection works: see test_ndp.py;
# and the connection's later packets: see test_connection.py).
V6 = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -s ::1/128 -j DROP
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT
-A INPUT -p tcp -m state --state ESTABLISHED -j ACCEPT
COMMIT
"""


def snapshot(v4=V4, v6=V6, ss=SS, ipv6=True):
    return dump_snapshot(v4, v6, ss, ipv6=ipv6)


def statuses(report):
    return {
        (s.socket.protocol, s.socket.address, s.socket.port): (s.verdicts["ipv4"].status, s.verdicts["ipv6"].status)
        for s in report.services
    }


def test_statuses_per_family():
    got = statuses(audit_snapshot(snapshot()))
    assert got[("tcp", "::", 22)] == ("restricted", "open")  # the IPv6 bypass of the seeds
    assert got[("tcp", "0.0.0.0", 2222)] == ("open", "not-bound")
    assert got[("tcp", "::", 8080)] == ("not-bound", "filtered")  # v6only=1
    assert got[("udp", "::", 123)] == ("filtered", "filtered")  # no udp rule anywhere
    assert got[("tcp", "::1", 25)] == ("not-bound", "local-only")


def test_restricted_lists_sources_and_decisions():
    report = audit_snapshot(snapshot())
    ssh = next(s for s in report.services if s.socket.port == 22)
    v4 = ssh.verdicts["ipv4"]
    assert v4.allowed_sources == ["192.0.2.0/24"]
    assert any(d.rule_number == 4 for d in v4.decided_by)
    assert any(d.policy == "DROP" for d in v4.decided_by)


def test_family_gap_is_the_headline():
    report = audit_snapshot(snapshot())
    gaps = [f for f in report.findings if f.id == "TW-FAMILY-GAP"]
    # open over IPv6, admin-only over IPv4: a gap, medium as the README says (was high)
    assert [(g.service, g.family, g.severity) for g in gaps] == [("tcp/22", "ipv6", "medium")]
    assert gaps[0].cis.startswith("CIS 4.4.3.4")
    # open over IPv6, filtered over IPv4: the bypass of the seeds, high
    v4_closed = V4.replace("-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT\n", "")
    gaps = [f for f in audit_snapshot(snapshot(v4=v4_closed)).findings if f.id == "TW-FAMILY-GAP"]
    assert [(g.service, g.family, g.severity) for g in gaps] == [("tcp/22", "ipv6", "high")]
    # restricted over IPv6 while filtered over IPv4: still a gap, less severe
    v6_narrow = V6.replace("-A INPUT -p tcp", "-A INPUT -s 2001:db8::/32 -p tcp")
    v4_closed = V4.replace("-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT\n", "")
    gaps = [f for f in audit_snapshot(snapshot(v4=v4_closed, v6=v6_narrow)).findings if f.id == "TW-FAMILY-GAP"]
    assert [(g.family, g.severity) for g in gaps] == [("ipv6", "medium")]


def test_policy_accept_is_not_a_rule():
    empty6 = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    report = audit_snapshot(snapshot(v6=empty6))
    ids = {(f.id, f.family, f.severity) for f in report.findings}
    assert ("TW-NO-RULE", "ipv6", "medium") in ids
    assert ("TW-NO-DEFAULT-DENY", "ipv6", "medium") in ids
    # IPv4 INPUT denies by default; only its empty OUTPUT with policy ACCEPT is noted (low)
    assert ("TW-NO-DEFAULT-DENY", "ipv4", "medium") not in ids
    assert ("TW-NO-DEFAULT-DENY", "ipv4", "low") in ids


def test_no_tables_at_all_filter_nothing_on_forward_and_output():
    # an ip6tables nobody wrote: no tables at all filters even less than empty chains with
    # policy ACCEPT, and is said so per hook (a new user's forwarding router had no finding)
    report = audit_snapshot(snapshot(v6="# no tables\n"))
    found = {(f.family, f.hook): f for f in report.findings if f.id == "TW-NO-DEFAULT-DENY" and f.severity == "low"}
    for hook in ("forward", "output"):
        f = found[("ipv6", hook)]
        assert f.message == f"no table hooks {hook.upper()}: nothing filters it"
    assert ("ipv4", "forward") not in found  # IPv4's FORWARD policy is DROP
    # two services open over IPv6 for the same reason, filtered over IPv4: one finding says why
    v4_closed = V4.replace("-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT\n", "")
    gaps = [f for f in audit_snapshot(snapshot(v4=v4_closed, v6="# no tables\n")).findings if f.id == "TW-FAMILY-GAP"]
    assert [g.message.split(": tcp")[0] for g in gaps] == [
        "IPv6 has no table on INPUT (nothing filters it): 2 services are open over IPv6 but filtered over IPv4"
    ]
    # a host that does not forward IPv6: FORWARD decides nothing
    off = snapshot(v6="# no tables\n")
    off.sysctls = {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"}
    hooks = {f.hook for f in audit_snapshot(off).findings if f.id == "TW-NO-DEFAULT-DENY" and f.family == "ipv6"}
    assert "forward" not in hooks and "output" in hooks


def test_egress_forward_differences_per_hook_and_forwarding():
    # the tcp/25 story twice: IPv4 drops tcp/25 in OUTPUT and in FORWARD, IPv6 in neither
    v4 = V4.replace("COMMIT", "-A FORWARD -p tcp -m tcp --dport 25 -j DROP\n-A FORWARD -j ACCEPT\n"
                              "-A OUTPUT -p tcp -m tcp --dport 25 -j DROP\nCOMMIT")
    v6 = V6.replace(":FORWARD DROP", ":FORWARD ACCEPT")

    def egress(sysctls):
        snap = snapshot(v4=v4, v6=v6)
        snap.sysctls = sysctls
        return {f.hook: f for f in audit_snapshot(snap).findings if f.id == "TW-EGRESS-FORWARD-DIFFER"}

    # forwarding unknown (offline, no sysctls): both hooks, FORWARD's finding says it is unknown
    unknown = egress({})
    assert set(unknown) == {"forward", "output"}
    assert "forwarding: unknown" in unknown["forward"].evidence[-1]
    assert unknown["output"].evidence[0].startswith("output")
    assert "IPv4 drop (filter OUTPUT #1" in unknown["output"].evidence[0], unknown["output"].evidence
    # IPv6 forwards: both hooks
    on = egress({"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "1"})
    assert set(on) == {"forward", "output"}
    # neither family forwards: FORWARD decides nothing (and is not compared); OUTPUT still is
    off = egress({"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"})
    assert set(off) == {"output"}
    assert off["output"].evidence == unknown["output"].evidence


def test_table_shows_each_finding_on_the_row_of_its_own_socket():
    from twinwall.report.text import render_audit

    # 0.0.0.0:22 is open by a rule; [::]:22 (v6only) only by the IPv6 policy: both are "tcp/22"
    v4 = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n"
    v6 = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
    ss = "tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\ntcp LISTEN 0 128 [::]:22 [::]:* v6only:1\n"
    report = audit_snapshot(snapshot(v4=v4, v6=v6, ss=ss))
    assert [(f.id, f.family, f.service) for f in report.findings if f.id == "TW-NO-RULE"] == [
        ("TW-NO-RULE", "ipv6", "tcp/22")
    ]
    rows = {line.split()[1]: line for line in render_audit(report).splitlines() if line.startswith("tcp ")}
    assert "TW-NO-RULE" not in rows["0.0.0.0:22"]
    assert "TW-NO-RULE" in rows["[::]:22"]


def test_ipv6_disabled_makes_ipv6_controls_not_applicable():
    report = audit_snapshot(snapshot(v6=None, ipv6=False))
    assert all(s.verdicts["ipv6"].status == "disabled" for s in report.services)
    f = next(f for f in report.findings if f.id == "TW-IPV6-DISABLED")
    assert f.evidence == ["test"]


def test_missing_ruleset_is_unknown_not_open():
    report = audit_snapshot(snapshot(v6=None))
    ssh = next(s for s in report.services if s.socket.port == 22)
    assert ssh.verdicts["ipv6"].status == "unknown"


def test_json_contract_names():
    data = audit_snapshot(snapshot()).to_json()
    assert set(data) >= {"schema", "host", "ipv6", "services", "findings"}
    assert set(data["ipv6"]) == {"enabled", "evidence"}
    svc = data["services"][0]
    for key in ("protocol", "address", "port", "v6only", "process", "pid", "ipv4", "ipv6"):
        assert key in svc
    assert set(svc["ipv4"]) >= {"status", "decided_by", "allowed_sources"}
    f = data["findings"][0]
    assert set(f) >= {"id", "severity", "family", "service", "message", "cis"}
    json.dumps(data)


def test_forked_ipv6_half_gives_the_same_report():
    # enough rules for the work to be worth a fork, and a gap to find
    rules = "".join(f"-A INPUT -s 198.51.{i // 256}.{i % 256} -p tcp --dport {1000 + i} -j ACCEPT\n" for i in range(300))
    v4 = V4.replace("COMMIT", rules + "COMMIT")
    seq = audit_snapshot(snapshot(v4=v4), jobs=1).to_json()
    par = audit_snapshot(snapshot(v4=v4), jobs=2).to_json()
    assert seq == par


def test_egress_compared_in_a_child_beside_the_families_gives_the_same_report(monkeypatch):
    # a host too small for the audit to fork, big enough for the egress comparison to: its
    # walks forked first, then its comparison in a child while this process audits the families
    fill = "".join(f"-A INPUT -s {{net}}{i // 256}.{i % 256} -p tcp --dport {1000 + i} -j ACCEPT\n" for i in range(2100))
    v4 = V4.replace("COMMIT", fill.format(net="198.51.") + "-A OUTPUT -p tcp -m tcp --dport 25 -j DROP\nCOMMIT")
    v6 = V6.replace("COMMIT", fill.replace(".", ":").format(net="2001:db8::") + "COMMIT")
    forked = audit_snapshot(snapshot(v4=v4, v6=v6)).to_json()
    egress = [f for f in forked["findings"] if f["id"] == "TW-EGRESS-FORWARD-DIFFER"]
    assert [f["hook"] for f in egress] == ["output"] and "dport 25" in egress[0]["evidence"][0]
    monkeypatch.setenv("TWINWALL_JOBS", "1")  # nothing forked: the comparison after the families
    assert audit_snapshot(snapshot(v4=v4, v6=v6)).to_json() == forked


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "twinwall", *args], capture_output=True, text=True, input=stdin)


def test_cli_exit_codes_and_errors(tmp_path):
    (tmp_path / "v4").write_text(V4)
    (tmp_path / "v6").write_text(V6)
    (tmp_path / "ss").write_text(SS)
    ok = run_cli("audit", "--iptables", str(tmp_path / "v4"), "--ip6tables", str(tmp_path / "v6"), "--sockets", str(tmp_path / "ss"))
    assert ok.returncode == 1 and "TW-FAMILY-GAP" in ok.stdout
    never = run_cli("audit", "--iptables", str(tmp_path / "v4"), "--sockets", str(tmp_path / "ss"), "--fail-on", "never")
    assert never.returncode == 0
    (tmp_path / "bad").write_text("*filter\n-A INPUT -p tcp --dport nope -j ACCEPT\nCOMMIT\n")
    bad = run_cli("audit", "--iptables", str(tmp_path / "bad"), "--sockets", str(tmp_path / "ss"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("twinwall: ") and len(bad.stderr.strip().splitlines()) == 1
    missing = run_cli("audit", "--iptables", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not found" in missing.stderr


@pytest.mark.parametrize("args", [["explain", "tcp/22"], ["explain", "tcp/22", "--family", "ipv6"]])
def test_explain_walks_the_chains(tmp_path, args):
    (tmp_path / "v4").write_text(V4)
    (tmp_path / "v6").write_text(V6)
    out = run_cli(*args, "--iptables", str(tmp_path / "v4"), "--ip6tables", str(tmp_path / "v6"))
    # tcp/22 is restricted over IPv4 and open over IPv6: exit 1, as audit does for a family gap
    assert out.returncode == (0 if "--family" in args else 1), out.stderr
    assert "filter INPUT #" in out.stdout and "verdict:" in out.stdout
    if "--family" in args:
        assert "IPv4" not in out.stdout and "ACCEPT  any remote source" in out.stdout


def test_egress_difference_points_at_diff():
    """The Rackspace story: tcp/25 blocked on OUTPUT for IPv4 only."""
    v4 = V4.replace("COMMIT", "-A OUTPUT -p tcp --dport 25 -m owner --uid-owner 107 -j ACCEPT\n-A OUTPUT -p tcp --dport 25 -j DROP\nCOMMIT")
    report = audit_snapshot(snapshot(v4=v4))
    f = next(f for f in report.findings if f.id == "TW-EGRESS-FORWARD-DIFFER")
    assert any("output" in line and "25" in line for line in f.evidence), f.evidence
    assert not [f for f in audit_snapshot(snapshot()).findings if f.id == "TW-EGRESS-FORWARD-DIFFER"]
    # an empty ip6tables dump (nothing loaded) is compared too: its FORWARD lets everything by
    ids = [f.id for f in audit_snapshot(snapshot(v6="")).findings]
    assert "TW-EGRESS-FORWARD-DIFFER" in ids and "TW-EGRESS-FORWARD-NOT-COMPARED" not in ids
    # a caller that only wants statuses can skip the comparison
    assert not [f for f in audit_snapshot(snapshot(v4=v4), compare_egress=False).findings if "EGRESS" in f.id]


def test_explain_an_interface_no_rule_names(tmp_path):
    (tmp_path / "v4").write_text("*filter\n:INPUT DROP [0:0]\n-A INPUT -i eth+ -p tcp --dport 22 -j ACCEPT\nCOMMIT\n")
    wlan = run_cli("explain", "tcp/22", "--family", "ipv4", "--iptables", str(tmp_path / "v4"), "--iface", "wlan0")
    eth = run_cli("explain", "tcp/22", "--family", "ipv4", "--iptables", str(tmp_path / "v4"), "--iface", "eth7")
    assert "is filtered over IPv4" in wlan.stdout
    assert "ACCEPT  any remote source" in eth.stdout


def test_a_socket_listed_twice_keeps_its_richest_details():
    """A snapshot may list one socket twice (hand-made, or joined from two collections): the
    audit shows it once, with the details the fuller row has."""
    snap = snapshot()
    bare = ListeningSocket("tcp", "ipv6", "::", 22, v6only=False)
    full = next(s for s in snap.sockets if s.port == 22)
    snap.sockets = [bare] + [s for s in snap.sockets if s is not full] + [full]
    rows = [s for s in audit_snapshot(snap).services if s.socket.port == 22]
    assert len(rows) == 1
    assert (rows[0].socket.process, rows[0].socket.pid) == ("sshd", 812)


TWIN_SS = """\
Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   LISTEN 0      128          0.0.0.0:3306       0.0.0.0:*     users:(("mysqld",pid=812,fd=3))
tcp   LISTEN 0      128             [::]:3306          [::]:*     users:(("mysqld",pid=812,fd=4)) v6only:1
tcp   LISTEN 0      128          0.0.0.0:2222       0.0.0.0:*     users:(("sshd2",pid=813,fd=3))
tcp   LISTEN 0      128             [::]:2222          [::]:*     users:(("sshd2",pid=813,fd=4)) v6only:1
tcp   LISTEN 0      128      192.0.2.7:8080          0.0.0.0:*     users:(("a",pid=1,fd=3))
tcp   LISTEN 0      128   [2001:db8::7]:8080             [::]:*     users:(("b",pid=2,fd=3))
"""


def test_family_gap_between_the_two_sockets_of_one_service():
    """sshd, nginx and mysqld listen once per family: 0.0.0.0:P and [::]:P with v6only. Each is
    not-bound in the other family, so the gap is only seen by comparing the pair."""
    v6 = V6.replace("COMMIT", "-A INPUT -p tcp --dport 3306 -j ACCEPT\n-A INPUT -p tcp --dport 8080 -j ACCEPT\nCOMMIT")
    report = audit_snapshot(snapshot(v4=V4, v6=v6, ss=TWIN_SS))
    gaps = [f for f in report.findings if f.id == "TW-FAMILY-GAP"]
    by_service = {f.service: f for f in gaps}
    # mysqld: IPv6 accepts 3306, IPv4 has no rule for it
    gap = by_service["tcp/3306"]
    assert (gap.family, gap.severity) == ("ipv6", "high")
    assert "mysqld on 0.0.0.0 and [::]" in gap.message and "filtered over IPv4" in gap.message
    assert report.services[gap.row].socket.family == "ipv6"  # the row that is open
    # V4 accepts 2222 from everywhere, V6 not at all
    assert by_service["tcp/2222"].family == "ipv4"
    # 8080 is open over IPv6 only too, but two processes on specific addresses are not twins
    assert {s.socket.port: s.verdicts["ipv6"].status for s in report.services if s.socket.family == "ipv6"}[8080] == "open"
    assert "tcp/8080" not in by_service


ACCEPT_ALL = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def _json_statuses(proc):
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    return {(s["address"], s["interface"], s["port"]): (s["ipv4"]["status"], s["ipv6"]["status"]) for s in doc["services"]}


def test_address_naming_one_family_leaves_the_other_as_assumed(tmp_path):
    """--address 192.0.2.10 says nothing of IPv6: the IPv6 services must not become filtered
    for want of an address."""
    (tmp_path / "acc").write_text(ACCEPT_ALL)
    (tmp_path / "ss").write_text(SS)
    base = ["audit", "--iptables", str(tmp_path / "acc"), "--ip6tables", str(tmp_path / "acc"),
            "--sockets", str(tmp_path / "ss"), "--format", "json"]
    without = _json_statuses(run_cli(*base))
    with_v4 = _json_statuses(run_cli(*base, "--address", "192.0.2.10"))
    assert with_v4 == without
    assert with_v4[("::", None, 8080)] == ("not-bound", "open")
    refused = run_cli(*base, "--address", "::")
    assert refused.returncode == 2 and "--address" in refused.stderr


def test_offline_sockets_bound_to_a_device_link_local_or_mapped_address(tmp_path):
    """Offline, with every policy ACCEPT, each of these is open in the family it takes."""
    (tmp_path / "acc").write_text(ACCEPT_ALL)
    (tmp_path / "ss").write_text(
        "Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n"
        "udp   UNCONN 0      0       0.0.0.0%eth0:68         0.0.0.0:*\n"
        "tcp   LISTEN 0      128 [2001:db8::5]%eth0:8443        [::]:*  v6only:1\n"
        "tcp   LISTEN 0      128 [fe80::1]%eth1:8080        [::]:*  v6only:1\n"
        "tcp   LISTEN 0      128 [::ffff:192.0.2.10]:80        [::]:*  v6only:0\n"
    )
    got = _json_statuses(run_cli("audit", "--iptables", str(tmp_path / "acc"), "--ip6tables", str(tmp_path / "acc"),
                                 "--sockets", str(tmp_path / "ss"), "--format", "json"))
    assert got == {
        ("0.0.0.0", "eth0", 68): ("open", "not-bound"),
        ("2001:db8::5", "eth0", 8443): ("not-bound", "open"),
        ("fe80::1", "eth1", 8080): ("not-bound", "open"),
        ("::ffff:192.0.2.10", None, 80): ("open", "not-bound"),
    }


def test_offline_legacy_beside_nft_dump_is_reported_and_cited_by_file(tmp_path):
    (tmp_path / "v4").write_text("# Generated by iptables-nft-save v1.8.9 (nf_tables)\n"
                                 + ACCEPT_ALL.replace("COMMIT", "-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT"))
    (tmp_path / "legacy").write_text(ACCEPT_ALL.replace("COMMIT", "-A INPUT -p tcp --dport 80 -j DROP\nCOMMIT"))
    (tmp_path / "ss").write_text(SS)
    proc = run_cli("audit", "--iptables", str(tmp_path / "v4"), "--iptables-legacy", str(tmp_path / "legacy"),
                   "--sockets", str(tmp_path / "ss"), "--format", "json")
    findings = {f["id"]: f for f in json.loads(proc.stdout)["findings"]}
    assert findings["TW-LEGACY-AND-NFT"]["family"] == "ipv4"
    assert any(line.startswith(str(tmp_path / "legacy") + " (legacy): filter INPUT #1")
               for line in findings["TW-LOOPBACK-NOT-ACCEPTED"]["evidence"])


def test_offline_ip6tables_legacy_beside_native_nft_is_reported(tmp_path):
    from pathlib import Path

    nft_json = Path(__file__).resolve().parents[2] / "fixtures" / "nft" / "inet_filter.json"
    (tmp_path / "legacy6").write_text(ACCEPT_ALL.replace("COMMIT", "-A INPUT -p tcp --dport 80 -j DROP\nCOMMIT"))
    (tmp_path / "ss").write_text(SS)
    proc = run_cli("audit", "--ip6tables-legacy", str(tmp_path / "legacy6"), "--nft", str(nft_json),
                   "--sockets", str(tmp_path / "ss"), "--format", "json")
    found = [f for f in json.loads(proc.stdout)["findings"] if f["id"] == "TW-LEGACY-AND-NFT"]
    assert [f["family"] for f in found] == ["ipv6"]  # no legacy IPv4 table: nothing to say for IPv4
    # the finding cites both halves, where each was read
    assert found[0]["evidence"] == [f"{tmp_path / 'legacy6'} (legacy): legacy rules", f"{nft_json} (nft): nf_tables rules"]


def test_two_inputs_cannot_both_read_stdin(tmp_path):
    proc = run_cli("audit", "--iptables", "-", "--ip6tables", "-", stdin=V4)
    assert proc.returncode == 2 and "standard input" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["audit"], ["explain", "tcp/22"]])
def test_snapshot_collected_without_root_says_collect_again(tmp_path, command):
    from twinwall.sources.snapshot import write_snapshot

    snap = dump_snapshot(None, None, SS)
    snap.missing = ["iptables-save: Permission denied (you need to be root?)"]
    path = tmp_path / "host.json"
    write_snapshot(snap, str(path))
    proc = run_cli(*command, "--snapshot", str(path))
    assert proc.returncode == 2, proc.stdout
    assert "collect it again as root" in proc.stderr and "Traceback" not in proc.stderr


def test_explain_refuses_port_zero():
    proc = run_cli("explain", "tcp/0")
    assert proc.returncode == 2 and "the port must be 1-65535" in proc.stderr
    # and a port out of range, or no port, in one line each
    proc = run_cli("explain", "tcp/99999")
    assert proc.returncode == 2 and proc.stderr == "twinwall: 'tcp/99999': the port must be 1-65535\n"
    proc = run_cli("explain", "tcp")
    assert proc.returncode == 2 and "tcp/22" in proc.stderr


def test_nft_dump_alone_names_the_iptables_nft_tables_it_cannot_show(tmp_path):
    """nft -j prints iptables-nft's xt matches without their arguments: those tables are left
    out of the nft ruleset, and the audit must say so unless iptables-save supplies them."""
    from pathlib import Path

    fixtures = Path(__file__).resolve().parents[2] / "fixtures" / "nft"
    (tmp_path / "ss").write_text(SS)
    base = ["audit", "--nft", str(fixtures / "iptables_nft.json"), "--sockets", str(tmp_path / "ss"), "--format", "json"]
    alone = json.loads(run_cli(*base).stdout)
    unread = sorted(f["message"].split(" holds")[0] for f in alone["findings"] if f["id"] == "TW-TABLE-NOT-READ")
    assert unread == ["table ip filter", "table ip nat"]
    both = json.loads(run_cli(*base, "--iptables", str(fixtures / "iptables_nft.v4.save")).stdout)
    assert not [f for f in both["findings"] if f["id"] == "TW-TABLE-NOT-READ"]


def test_diff_and_explain_name_the_iptables_nft_tables_an_nft_dump_cannot_show():
    from pathlib import Path

    fixtures = Path(__file__).resolve().parents[2] / "fixtures" / "nft"
    nft = ["--nft", str(fixtures / "iptables_nft.json")]
    notes = json.loads(run_cli("diff", *nft, "--format", "json").stdout)["notes"]
    assert sum("table ip filter holds iptables-nft rules" in n for n in notes) == 1
    explained = run_cli("explain", "tcp/22", "--family", "ipv4", *nft).stdout
    assert "NOTE: table ip nat holds iptables-nft rules" in explained
    both = run_cli("diff", *nft, "--iptables", str(fixtures / "iptables_nft.v4.save"), "--format", "json")
    assert not [n for n in json.loads(both.stdout)["notes"] if "iptables-nft rules" in n]


def test_a_cut_decided_by_says_so(tmp_path):
    # a service decided by more rules than decided_by names (MAX_DECIDED_BY): "decided_by_more"
    # is set; a verdict whose list is whole has no such key
    drops = "".join(f"-A INPUT -s 203.0.113.{n}/32 -j DROP\n" for n in range(1, 21))
    head = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    (tmp_path / "v4").write_text(head + drops + "-A INPUT -p tcp --dport 8080 -j ACCEPT\nCOMMIT\n")
    (tmp_path / "v6").write_text(head + "-A INPUT -p tcp --dport 8080 -j ACCEPT\nCOMMIT\n")
    (tmp_path / "ss").write_text("Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n"
                                 'tcp   LISTEN 0      128  *:8080  *:*  users:(("web",pid=9,fd=3)) v6only:0\n')
    proc = run_cli("audit", "--iptables", str(tmp_path / "v4"), "--ip6tables", str(tmp_path / "v6"),
                   "--sockets", str(tmp_path / "ss"), "--format", "json")
    doc = json.loads(proc.stdout)
    service = doc["services"][0]
    assert service["ipv4"]["status"] == "restricted" and len(service["ipv4"]["decided_by"]) == 12
    assert service["ipv4"]["decided_by_more"] is True
    assert "decided_by_more" not in service["ipv6"]  # (filtered: no NDP accepted; one rule cited)
    # the text names the first 4 of a finding's evidence and counts the others
    drop = next(f for f in doc["findings"] if f["id"] == "TW-DROP-NOT-LOGGED" and f["family"] == "ipv4")
    assert len(drop["evidence"]) > 4
    text = run_cli("audit", "--iptables", str(tmp_path / "v4"), "--ip6tables", str(tmp_path / "v6"),
                   "--sockets", str(tmp_path / "ss")).stdout
    assert f"      - ... {len(drop['evidence']) - 4} more (--format json)" in text


ROUTER_V4 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -s 192.0.2.0/24 -d 192.0.2.1/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -d 198.51.100.1/32 -p tcp -m tcp --dport 443 -j DROP
COMMIT
"""
ROUTER_SS = "tcp LISTEN 0 128 *:22 *:*\ntcp LISTEN 0 128 *:443 *:*\n"


def test_offline_the_addresses_input_names_are_the_hosts():
    """INPUT sees only the host's packets: offline, without --address, a '-d ADDR' of its rules
    names one of the host's addresses, and the verdicts answer for it (not "filtered" for an
    address no rule names). Known addresses (a collected snapshot) take no such assumption."""
    from twinwall.model import InterfaceAddress

    report = audit_snapshot(dump_snapshot(ROUTER_V4, V6, ROUTER_SS))
    got = statuses(report)
    assert got[("tcp", "::", 22)][0] == "restricted"
    # the DROP names the host's address, where the unnamed address falls to the policy: the
    # verdict is that of every address (the policy drops for the others too)
    assert got[("tcp", "::", 443)][0] == "filtered"
    (row,) = [r for r in report.rulesets if r["family"] == "ipv4"]
    assert [a["address"] for a in row["assumed_addresses"]] == ["192.0.2.1", "198.51.100.1"]
    known = dump_snapshot(ROUTER_V4, V6, ROUTER_SS, addresses=[
        InterfaceAddress("eth0", "ipv4", "203.0.113.1", 24), InterfaceAddress("eth0", "ipv6", "2001:db8::1", 64)])
    report = audit_snapshot(known)
    assert statuses(report)[("tcp", "::", 22)][0] == "filtered"  # this host is not 192.0.2.1
    assert all("assumed_addresses" not in r for r in report.rulesets)


def test_equal_verdicts_are_one_object_and_written_as_each_alone():
    """Sockets whose verdicts are equal share one verdict object (it crosses the pipe from a
    forked family and is converted to JSON once); the document is what each verdict's own
    conversion gives, and unequal verdicts stay apart."""
    rules = ("-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 3000:3009 -j ACCEPT\n"
             "-A INPUT -p tcp -m tcp --dport 3010:3014 -j ACCEPT\nCOMMIT")
    v4 = V4.replace("COMMIT", rules)
    rows = "".join(f'tcp   LISTEN 0      128          0.0.0.0:{p}       0.0.0.0:*     users:(("svc{p}",pid={p},fd=3))\n'
                   for p in range(3000, 3030))
    report = audit_snapshot(snapshot(v4=v4, ss=SS + rows))
    for family in ("ipv4", "ipv6"):
        groups: dict = {}
        for s in report.services:
            v = s.verdicts[family]
            groups.setdefault(json.dumps(v.to_json(), sort_keys=True), set()).add(id(v))
        assert all(len(ids) == 1 for ids in groups.values())  # equal: one object; unequal: apart
    ipv4 = {s.socket.port: s.verdicts["ipv4"] for s in report.services}
    assert ipv4[3000] is ipv4[3009] and ipv4[3010] is ipv4[3014] and ipv4[3020] is ipv4[3029]
    assert len({id(ipv4[p]) for p in (3000, 3010, 3020)}) == 3
    assert report.to_json(verbose=True)["services"] == [s.to_json() for s in report.services]
    written = {s["port"]: s["ipv4"] for s in report.to_json()["services"]}
    assert written[3020] == written[3029] and written[3020] != written[3010]


def test_interning_keys_a_long_list_by_its_object():
    from twinwall.analysis.verdicts import FamilyVerdict, intern_verdicts

    many = [f"192.0.2.{i}/32" for i in range(100)]
    a, b = FamilyVerdict("restricted", denied_sources=many), FamilyVerdict("restricted", denied_sources=list(many))
    c, d = FamilyVerdict("restricted", denied_sources=many), FamilyVerdict("restricted", denied_sources=many, reason="x")
    got = intern_verdicts([a, b, c, d])
    assert got[0] is a and got[1] is b and got[2] is a and got[3] is d  # (an equal copy only goes unshared)
