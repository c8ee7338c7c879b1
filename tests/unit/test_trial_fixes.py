"""Defects the new-user trial (tests/netns/test_trial_hosts.py) found, checked offline on what
the real tools printed there (each test fails on the code before its fix)."""

from __future__ import annotations

from pathlib import Path

from twinwall.analysis.audit import audit_snapshot
from twinwall.model import HostSnapshot, Ipv6State, RulesetText
from twinwall.sources.sockets import parse_ss

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "frontends"

SS = """\
Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   LISTEN 0      128          0.0.0.0:22         0.0.0.0:*     users:(("sshd",pid=812,fd=3))
tcp   LISTEN 0      128             [::]:22            [::]:*     users:(("sshd",pid=812,fd=4)) v6only:1
tcp   LISTEN 0      128          0.0.0.0:3000       0.0.0.0:*     users:(("app",pid=900,fd=3))
"""


def _firewalld13() -> HostSnapshot:
    snap = HostSnapshot(hostname="fw", sockets=parse_ss(SS))
    snap.rulesets.append(RulesetText("inet", "nft-json", "nft", "firewalld13-trial.nft.json",
                                     (FIX / "firewalld13-trial.nft.json").read_text()))
    snap.ipv6 = Ipv6State(True, ["test"])
    return snap


def _rows(report):
    return {(s.socket.address, s.socket.port, s.dnat is not None): s for s in report.services}


def test_firewalld13_ct_status_dnat_and_rpfilter_are_decided() -> None:
    """firewalld 1.3's `ct status dnat accept` (filter_INPUT) and its IPv6 reverse-path check
    `fib saddr . mark . iif oif missing drop` made every verdict on a firewalld host uncertain."""
    report = audit_snapshot(_firewalld13())
    rows = _rows(report)
    for key, family in (((("0.0.0.0", 22, False)), "ipv4"), ((("::", 22, False)), "ipv6"),
                        ((("0.0.0.0", 3000, False)), "ipv4")):
        v = rows[key].verdicts[family]
        assert not v.uncertain, (key, v.uncertain)
    # ssh over IPv4: the rich rule drops 192.0.2.11; over IPv6 the public zone's ssh is open
    v4 = rows[("0.0.0.0", 22, False)].verdicts["ipv4"]
    assert v4.status == "restricted" and "192.0.2.11/32" not in v4.allowed_sources, v4
    assert rows[("::", 22, False)].verdicts["ipv6"].status == "open"
    assert rows[("0.0.0.0", 3000, False)].verdicts["ipv4"].status == "restricted"
    # the forward-port 2222 -> 22 (public zone: every interface but vb0, which is internal's):
    # accepted by `ct status dnat accept`, before the zone's deny
    nat = next(s for s in report.services if s.dnat is not None and s.socket.port == 2222)
    v = nat.verdicts["ipv4"]
    assert v.status == "restricted" and not v.uncertain, v
    assert "vb0" not in v.allowed_interfaces and v.allowed_sources == ["0.0.0.0/0"], v
    assert any("ct status dnat accept" in (d.rule or "") for d in v.decided_by), v.decided_by


def test_a_socket_row_does_not_count_connections_nat_brought_from_another_port() -> None:
    """The 2222 -> 22 forward-port reaches sshd from 192.0.2.11 too, but a connection to
    port 22 from there is dropped: the socket's row is about its own port (2222 has its row)."""
    v4 = _rows(audit_snapshot(_firewalld13()))[("0.0.0.0", 22, False)].verdicts["ipv4"]
    assert v4.status == "restricted", v4


DOCKER_SS = """\
Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   LISTEN 0      128          0.0.0.0:22         0.0.0.0:*     users:(("sshd",pid=812,fd=3))
"""


def _docker(forward: str) -> HostSnapshot:
    snap = HostSnapshot(hostname="d", sockets=parse_ss(DOCKER_SS))
    snap.rulesets.append(RulesetText("ipv4", "iptables-save", "iptables-nft", "docker28.v4",
                                     (FIX / "docker28-portmap.v4.rules").read_text()))
    snap.ipv6 = Ipv6State(False, ["test"])
    snap.sysctls = {"net.ipv4.ip_forward": forward, "net.ipv6.conf.all.forwarding": "0"}
    return snap


def test_dnat_to_another_host_is_filtered_when_the_host_does_not_forward() -> None:
    def published(forward: str):
        report = audit_snapshot(_docker(forward))
        return next(s for s in report.services if s.dnat is not None and s.socket.port == 8080).verdicts["ipv4"]

    assert published("1").status == "open"
    v = published("0")
    assert v.status == "filtered", v
    assert "net.ipv4.ip_forward=0" in v.reason, v.reason
    assert any("DNAT" in (d.rule or "") for d in v.decided_by), v.decided_by


def _cli(*args: str):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "twinwall", *args], capture_output=True, text=True, timeout=120)
    return res.returncode, res.stdout, res.stderr


def test_nft_netlink_option_recovers_the_hidden_nfproto(tmp_path) -> None:
    """`--nft-netlink FILE` pairs a saved `nft --debug=netlink list ruleset` with `--nft FILE`:
    the rule nft prints as `tcp dport 3000 reject with tcp reset` (kernel: meta nfproto ipv6)
    then rejects over IPv6 only, instead of making both families uncertain."""
    import json

    from test_nft_json import HIDDEN_NFPROTO_JSON, HIDDEN_NFPROTO_NETLINK

    nft = tmp_path / "ruleset.json"
    nft.write_text(HIDDEN_NFPROTO_JSON)
    netlink = tmp_path / "ruleset.netlink"
    netlink.write_text(HIDDEN_NFPROTO_NETLINK)
    ss = tmp_path / "ss.txt"
    ss.write_text("Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port\n"
                  "tcp LISTEN 0 128 *:3000 *:* v6only:0\n")
    rc, out, err = _cli("audit", "--nft", str(nft), "--nft-netlink", str(netlink), "--sockets", str(ss),
                        "--format", "json")
    assert rc in (0, 1), err
    svc = next(s for s in json.loads(out)["services"] if s["port"] == 3000)
    assert svc["ipv4"]["status"] == "open" and not svc["ipv4"]["uncertain"], svc["ipv4"]
    assert svc["ipv6"]["status"] == "filtered" and not svc["ipv6"]["uncertain"], svc["ipv6"]

    rc, out, err = _cli("audit", "--nft", str(nft), "--sockets", str(ss), "--format", "json")
    svc = next(s for s in json.loads(out)["services"] if s["port"] == 3000)
    assert svc["ipv4"]["uncertain"], "without the netlink dump the rule's family is unknown"

    # alone, empty or not a netlink dump: one line, exit 2
    for argv, word in ((["--nft-netlink", str(netlink), "--sockets", str(ss)], "--nft FILE"),
                       (["--nft", str(nft), "--nft-netlink", str(ss)], "not 'nft --debug=netlink"),
                       (["--nft", str(nft), "--nft-netlink", str(tmp_path / "missing")], "not found")):
        rc, out, err = _cli("audit", *argv)
        assert rc == 2 and err.startswith("twinwall: ") and word in err and "Traceback" not in err, (argv, err)
    (tmp_path / "empty").write_text("")
    rc, _, err = _cli("audit", "--nft", str(nft), "--nft-netlink", str(tmp_path / "empty"))
    assert rc == 2 and "empty" in err, err


def test_wildcard_socket_dropped_at_one_host_address_is_restricted() -> None:
    """`-d 192.0.2.2 ... -j DROP` before the accept: a client reaches 0.0.0.0:80 at 192.0.2.1
    but not at 192.0.2.2 - "open" said nothing of it; restricted, naming the address."""
    from twinwall.model import InterfaceAddress
    from twinwall.parsers.iptables_save import parse_iptables_save  # noqa: F401  (the dump is read by the audit)

    v4 = ("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
          "-A INPUT -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j DROP\n"
          "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n")
    ss = ("Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port\n"
          "tcp LISTEN 0 128 0.0.0.0:80 0.0.0.0:*\ntcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n")
    snap = HostSnapshot(hostname="w", sockets=parse_ss(ss), addresses_known=True,
                        addresses=[InterfaceAddress("eth0", "ipv4", "192.0.2.1", 24),
                                   InterfaceAddress("eth1", "ipv4", "192.0.2.2", 24)],
                        interfaces=["lo", "eth0", "eth1"])
    snap.rulesets.append(RulesetText("ipv4", "iptables-save", "nft", "v4", v4))
    snap.ipv6 = Ipv6State(False, ["test"])
    by = {s.socket.port: s.verdicts["ipv4"] for s in audit_snapshot(snap).services}
    v = by[80]
    assert v.status == "restricted", v
    assert v.allowed_addresses == ["192.0.2.1"], v
    assert "192.0.2.2" in v.reason and v.summary() == "restricted (only at 192.0.2.1)"
    assert any("-d 192.0.2.2/32" in (d.rule or "") for d in v.decided_by), v.decided_by
    assert v.to_json()["allowed_addresses"] == ["192.0.2.1"]
    assert by[22].status == "open" and by[22].allowed_addresses == []
