"""IPv6 neighbour discovery in the audit (analysis/ndp.py): a service is reachable over IPv6 only
where NS/NA (135/136, hop limit 255, UNTRACKED) pass in and out. Each case failed on the code
before the model: the services read `open` while every real IPv6 client timed out (see
tests/netns/test_ndp_netns.py for the same against the kernel)."""

from __future__ import annotations

from twinwall.analysis.audit import audit_snapshot

from test_audit import V4, snapshot

HEAD = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT {out} [0:0]\n"
NDP = ("-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT\n"
       "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -j ACCEPT\n")
SSH = "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"


def v6(rules: str, out: str = "ACCEPT") -> str:
    return HEAD.format(out=out) + rules + "COMMIT\n"


def ssh6(report):
    svc = next(s for s in report.services if s.socket.port == 22 and s.socket.address == "::")
    return svc.verdicts["ipv6"]


def ids(report):
    return {f.id for f in report.findings}


def test_input_drop_without_icmpv6_is_filtered_with_the_reason():
    report = audit_snapshot(snapshot(V4, v6(SSH)))
    v = ssh6(report)
    assert v.status == "filtered" and "neighbour discovery" in v.reason, v
    assert any(d.policy == "DROP" for d in v.decided_by), v.decided_by
    assert "TW-ICMPV6-NDP-BLOCKED" in ids(report) and "TW-ICMPV6-ESSENTIAL-BLOCKED" in ids(report)
    f = next(f for f in report.findings if f.id == "TW-ICMPV6-NDP-BLOCKED")
    assert f.severity == "high" and f.family == "ipv6" and "tcp/22" in f.message and f.evidence


def test_ndp_accepted_with_hop_limit_255_is_open():
    report = audit_snapshot(snapshot(V4, v6(NDP + SSH)))
    assert ssh6(report).status == "open"
    assert "TW-ICMPV6-NDP-BLOCKED" not in ids(report)
    assert not ssh6(report).uncertain  # -m hl is decided, not a "may match"


def test_wrong_hop_limit_does_not_pass_ndp():
    rules = NDP.replace("--hl-eq 255", "--hl-lt 255") + SSH
    assert ssh6(audit_snapshot(snapshot(V4, v6(rules)))).status == "filtered"


def test_ndp_is_untracked_not_new():
    new_only = "-A INPUT -p ipv6-icmp -m conntrack --ctstate NEW -j ACCEPT\n"
    untracked = "-A INPUT -p ipv6-icmp -m conntrack --ctstate UNTRACKED -j ACCEPT\n"
    invalid = "-A INPUT -m conntrack --ctstate INVALID -j DROP\n"
    assert ssh6(audit_snapshot(snapshot(V4, v6(invalid + new_only + SSH)))).status == "filtered"
    assert ssh6(audit_snapshot(snapshot(V4, v6(invalid + untracked + SSH)))).status == "open"


def test_advertisements_dropped_on_output():
    rules = "-A INPUT -p ipv6-icmp -j ACCEPT\n" + SSH + "-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j DROP\n"
    v = ssh6(audit_snapshot(snapshot(V4, v6(rules))))
    assert v.status == "filtered" and "advertisements out" in v.reason, v


def test_essentials_accepted_by_related_and_icmpv6():
    rules = "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p ipv6-icmp -j ACCEPT\n" + SSH
    report = audit_snapshot(snapshot(V4, v6(rules)))
    assert not {"TW-ICMPV6-NDP-BLOCKED", "TW-ICMPV6-ESSENTIAL-BLOCKED"} & ids(report)


def test_a_source_blocklist_is_not_an_ndp_finding():
    """Policy ACCEPT and a DROP for one remote network: NDP from it is dropped too, but those
    clients are off-link (not the host's prefixes) and link-local neighbours pass."""
    rules = "-A INPUT -s 2001:db8:bad::/48 -j DROP\n"
    report = audit_snapshot(snapshot(V4, v6(rules).replace(":INPUT DROP", ":INPUT ACCEPT")))
    assert "TW-ICMPV6-NDP-BLOCKED" not in ids(report)
    assert ssh6(report).status in ("open", "restricted")




# -- exact per host address and per leg (a client's new connection needs its NS in, to the
# solicited-node group of the address it connects to, and the host's NA out; not the host's own
# NS out / NA in)

from _snapshots import dump_snapshot  # noqa: E402
from twinwall.model import InterfaceAddress  # noqa: E402

SS_TWO = """\
Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   LISTEN 0      128             [::]:22            [::]:*     users:(("sshd",pid=812,fd=3)) v6only:1
tcp   LISTEN 0      128  [2001:db8:a::1]:80            [::]:*     users:(("web",pid=813,fd=3)) v6only:1
"""
TWO_ADDRS = [InterfaceAddress("eth0", "ipv6", "2001:db8:a::1", 64, "global"),
             InterfaceAddress("eth0", "ipv6", "2001:db8:a::2", 64, "global"),
             InterfaceAddress("eth0", "ipv6", "fe80::1", 64, "link")]


def two_addresses(rules: str):
    text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" + rules + "COMMIT\n"
    report = audit_snapshot(dump_snapshot(None, text, SS_TWO, addresses=TWO_ADDRS))
    return {s.socket.port: s.verdicts["ipv6"] for s in report.services}, ids(report)


def test_ndp_dropped_for_one_host_address_leaves_the_others():
    # differential seed 4: NDP to 2001:db8:a::1 dropped, clients still connect to a::2
    got, _ = two_addresses("-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -d ff02::1:ff00:1 -j DROP\n")
    # (a wildcard socket reachable at some of the host's addresses only reads restricted, with them)
    assert got[22].status == "restricted" and got[22].allowed_addresses == ["2001:db8:a::2"], got[22]
    assert got[80].status == "filtered" and "neighbour solicitations in" in got[80].reason, got[80]


def test_advertisements_in_to_one_address_cut_no_new_connection():
    # a unicast NA to a::1 (the answer to the host's own NS) is not what a client needs first
    got, _ = two_addresses("-A INPUT -d 2001:db8:a::1/128 -p ipv6-icmp -j DROP\n")
    assert got[22].status == "open" and got[80].status == "open", got


def test_the_hosts_own_solicitations_dropped_is_reported_but_cuts_no_service():
    got, found = two_addresses("-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j DROP\n")
    assert got[22].status == "open" and got[80].status == "open", got
    assert "TW-ICMPV6-NDP-BLOCKED" in found
