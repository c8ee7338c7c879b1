"""Services published by DNAT (Docker -p, kube NodePorts, port forwards): audited through FORWARD.

Docker's rules are the fixtures in tests/fixtures/frontends (the exact iptables-save output of a
Docker 24-27 and a Docker 28 daemon after ``docker run -p 8080:80``, see the README there); the
real-traffic proof is tests/netns/test_docker_netns.py."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from _snapshots import dump_snapshot
from twinwall.analysis.audit import audit_snapshot, remote_new_connections
from twinwall.analysis.context import build_contexts
from twinwall.analysis.published import family_rows, merge_published, published_services
from twinwall.loader import load_rulesets
from twinwall.model import FAMILIES, HostSnapshot, InterfaceAddress

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "frontends"

SS = """\
Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   LISTEN 0      128                *:22               *:*     users:(("sshd",pid=812,fd=3)) v6only:0
"""

# the administrator's INPUT chain on a Docker host: nothing for 8080
ADMIN_V4 = [
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
]

ADDRESSES = [
    InterfaceAddress("lo", "ipv4", "127.0.0.1", 8, "host"),
    InterfaceAddress("lo", "ipv6", "::1", 128, "host"),
    InterfaceAddress("eth0", "ipv4", "192.0.2.1", 24),
    InterfaceAddress("eth0", "ipv6", "2001:db8:a::1", 64),
    InterfaceAddress("eth1", "ipv4", "198.51.100.1", 24),
    InterfaceAddress("eth1", "ipv6", "2001:db8:b::1", 64),
    InterfaceAddress("docker0", "ipv4", "172.17.0.1", 16),
    InterfaceAddress("docker0", "ipv6", "2001:db8:d::1", 64),
]
INTERFACES = ["lo", "eth0", "eth1", "docker0", "veth1a2b3c"]


def with_rules(text: str, table: str, rules: List[str], *, input_policy: Optional[str] = None,
               before: Optional[str] = None) -> str:
    """Add rules at the end of a table (or before the line ``before``) of an iptables-save text."""
    if input_policy:
        text = text.replace(":INPUT ACCEPT [0:0]", f":INPUT {input_policy} [0:0]", 1)
    start = text.index(f"*{table}\n")
    end = text.index("COMMIT", start)
    if before is not None:
        at = text.index(before, start)
        return text[:at] + "".join(r + "\n" for r in rules) + text[at:]
    return text[:end] + "".join(r + "\n" for r in rules) + text[end:]


def docker_v4(extra_filter: Optional[List[str]] = None, docker_user: Optional[List[str]] = None,
              name: str = "docker28-portmap.v4.rules") -> str:
    text = with_rules((FIX / name).read_text(), "filter", ADMIN_V4 + (extra_filter or []), input_policy="DROP")
    if docker_user:
        text = with_rules(text, "filter", docker_user, before="-A DOCKER-USER -j RETURN")
    return text


def docker_v6(ipv6_dnat: bool = False) -> str:
    text = (FIX / "docker28-portmap.v6.rules").read_text()
    text = with_rules(text, "filter", ADMIN_V4 + ["-A INPUT -p ipv6-icmp -j ACCEPT"], input_policy="DROP")
    if ipv6_dnat:
        text = with_rules(text, "filter", [
            "-A DOCKER -d 2001:db8:d::2/128 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
            "-A DOCKER ! -i docker0 -o docker0 -j DROP",
            "-A DOCKER-BRIDGE -o docker0 -j DOCKER",
            "-A DOCKER-FORWARD -i docker0 -j ACCEPT",
        ])
        text = with_rules(text, "nat", [
            "-A DOCKER -i docker0 -j RETURN",
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [2001:db8:d::2]:80",
        ])
    return text


def snapshot(v4: Optional[str], v6: Optional[str], ss: str = SS, online: bool = True) -> HostSnapshot:
    if not online:
        return dump_snapshot(v4, v6, ss)
    return dump_snapshot(v4, v6, ss, addresses=ADDRESSES, interfaces=INTERFACES)


def walk(snap: HostSnapshot):
    rulesets = load_rulesets(snap)
    contexts = build_contexts(snap, rulesets)
    outcomes = {
        f: contexts[f].evaluator().local_input([remote_new_connections(contexts[f])]) if contexts[f].rules_known else []
        for f in FAMILIES
    }
    return contexts, outcomes


def published(snap: HostSnapshot) -> Dict[Tuple[str, int], object]:
    contexts, outcomes = walk(snap)
    rows = published_services(contexts, outcomes)
    out = {}
    for r in rows:
        key = (r.socket.protocol, r.socket.port)
        assert key not in out, f"two rows for {key}"
        out[key] = r
    return out


def rules_of(v) -> List[str]:
    return [d.rule or "" for d in v.decided_by]


# ---------------------------------------------------------------------------------------------
# Docker


@pytest.mark.parametrize("fixture", ["docker28-portmap.v4.rules", "docker24-portmap.v4.rules"])
def test_docker_published_port_is_open_although_input_drops_it(fixture: str) -> None:
    snap = snapshot(docker_v4(name=fixture), docker_v6())
    svc = published(snap)[("tcp", 8080)]
    s = svc.socket
    assert (s.family, s.address, s.port, s.unit) == ("ipv4", "0.0.0.0", 8080, None)
    assert s.process == "docker: dnat \u2192 172.17.0.2:80"
    v4, v6 = svc.verdicts["ipv4"], svc.verdicts["ipv6"]
    assert v4.status == "open", v4
    rules = rules_of(v4)
    assert "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80" in rules
    assert "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT" in rules
    assert not any(d.chain == "INPUT" for d in v4.decided_by)
    assert not v4.by_policy and not v4.uncertain
    assert "docker0" in v4.reason
    assert v6.status == "not-bound" and "IPv6" in v6.reason

    # the audit: the same row, and the INPUT chain still filters the port for the host itself
    report = audit_snapshot(snap)
    rows = [r for r in report.services if r.socket.port == 8080]
    assert len(rows) == 1 and rows[0].verdicts["ipv4"].status == "open"
    assert report.frontends["ipv4"] == ["docker"]


def test_docker_offline_without_addresses() -> None:
    # offline: no interface or address list; Docker's "addrtype LOCAL" still matches the host
    svc = published(snapshot(docker_v4(), docker_v6(), online=False))[("tcp", 8080)]
    assert svc.verdicts["ipv4"].status == "open", svc.verdicts["ipv4"]


def test_forward_drops_the_published_port() -> None:
    text = docker_v4().replace(
        "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT\n", "")
    v4 = published(snapshot(text, docker_v6()))[("tcp", 8080)].verdicts["ipv4"]
    assert v4.status == "filtered", v4
    assert "-A DOCKER ! -i docker0 -o docker0 -j DROP" in rules_of(v4)
    assert any("-j DNAT" in r for r in rules_of(v4))


def test_docker_user_restricts_sources() -> None:
    snap = snapshot(docker_v4(docker_user=["-A DOCKER-USER -s 198.51.100.0/24 -j DROP"]), docker_v6())
    v4 = published(snap)[("tcp", 8080)].verdicts["ipv4"]
    assert v4.status == "restricted", v4
    assert v4.denied_sources == ["198.51.100.0/24"]
    assert v4.allowed_interfaces == ["*"]
    assert "-A DOCKER-USER -s 198.51.100.0/24 -j DROP" in rules_of(v4)


def test_docker_user_restricts_interfaces() -> None:
    snap = snapshot(docker_v4(docker_user=["-A DOCKER-USER -i eth1 -j DROP"]), docker_v6())
    v4 = published(snap)[("tcp", 8080)].verdicts["ipv4"]
    assert v4.status == "restricted", v4
    assert "eth0" in v4.allowed_interfaces and "eth1" not in v4.allowed_interfaces


def test_published_over_both_families_is_one_row_with_a_gap() -> None:
    snap = snapshot(docker_v4(docker_user=["-A DOCKER-USER -s 198.51.100.0/24 -j DROP"]), docker_v6(ipv6_dnat=True))
    svc = published(snap)[("tcp", 8080)]
    s = svc.socket
    assert (s.family, s.address, s.v6only) == ("ipv6", "::", False)
    assert s.process == "docker: dnat \u2192 172.17.0.2:80, [2001:db8:d::2]:80"
    assert svc.verdicts["ipv4"].status == "restricted"
    assert svc.verdicts["ipv6"].status == "open"
    assert "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [2001:db8:d::2]:80" in rules_of(
        svc.verdicts["ipv6"])


def test_per_family_rows_merge_to_the_same_answer() -> None:
    # an audit that walks one family at a time calls published_services once per family
    snap = snapshot(docker_v4(), docker_v6(ipv6_dnat=True))
    contexts, outcomes = walk(snap)
    per_family = [published_services(contexts, {f: (outcomes[f] if f == fam else []) for f in FAMILIES})
                  for fam in FAMILIES]
    assert [r.socket.family for r in per_family[0]] == ["ipv4"]
    assert per_family[0][0].verdicts["ipv6"].status == "not-bound"  # until merged
    merged = merge_published(per_family)
    whole = published_services(contexts, outcomes)
    assert len(merged) == len(whole) == 1
    assert merged[0].socket == whole[0].socket
    for f in FAMILIES:
        assert merged[0].verdicts[f].status == whole[0].verdicts[f].status == "open"
    assert merge_published([family_rows(contexts, f, outcomes[f]) for f in FAMILIES])[0].socket == whole[0].socket


def test_specific_addresses_are_not_merged() -> None:
    v4 = docker_v4().replace("-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080",
                             "-A DOCKER -d 192.0.2.1/32 ! -i docker0 -p tcp -m tcp --dport 8080")
    contexts, outcomes = walk(snapshot(v4, docker_v6(ipv6_dnat=True)))
    rows = published_services(contexts, outcomes)
    assert sorted((r.socket.family, r.socket.address) for r in rows) == [("ipv4", "192.0.2.1"), ("ipv6", "::")]


# ---------------------------------------------------------------------------------------------
# other DNAT shapes

NAT_HEAD = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"


def plain_v4(nat: List[str], forward: List[str], forward_policy: str = "DROP", chains: str = "") -> str:
    return (
        "*filter\n:INPUT DROP [0:0]\n"
        f":FORWARD {forward_policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        + "".join(r + "\n" for r in ADMIN_V4 + forward)
        + "COMMIT\n" + NAT_HEAD + chains + "".join(r + "\n" for r in nat) + "COMMIT\n"
    )


def test_port_forward_accepted_by_forward_policy_is_no_rule() -> None:
    # published from eth0 only, accepted by FORWARD's policy whatever the output interface
    v4 = plain_v4(["-A PREROUTING -i eth0 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 198.51.100.7:22"],
                  [], forward_policy="ACCEPT")
    snap = snapshot(v4, None)
    svc = published(snap)[("tcp", 2222)]
    v = svc.verdicts["ipv4"]
    assert v.status == "restricted" and v.by_policy, v
    assert v.allowed_interfaces == ["eth0"] and v.denied_sources == []
    assert svc.socket.process == "dnat \u2192 198.51.100.7:22"
    assert "forwarded out of" not in v.reason  # the forward rules do not look at it

    everywhere = plain_v4(["-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 198.51.100.7:22"],
                          [], forward_policy="ACCEPT")
    v = published(snapshot(everywhere, None))[("tcp", 2222)].verdicts["ipv4"]
    assert v.status == "open" and v.by_policy, v
    report = audit_snapshot(snap)
    assert any(f.id == "TW-NO-RULE" and f.service == "tcp/2222" for f in report.findings)


def test_port_forward_from_one_interface_only() -> None:
    # published on eth0 only; the target sits behind docker0 here, so eth1 is not excluded
    v4 = plain_v4(["-A PREROUTING -i eth0 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 172.17.0.9:22"],
                  ["-A FORWARD -d 172.17.0.9/32 -o docker0 -p tcp -m tcp --dport 22 -j ACCEPT"])
    v = published(snapshot(v4, None))[("tcp", 2222)].verdicts["ipv4"]
    assert v.status == "restricted", v
    assert "eth0" in v.allowed_interfaces and "eth1" not in v.allowed_interfaces


def test_kube_nodeport_with_random_endpoints() -> None:
    chains = "".join(f":{c} - [0:0]\n" for c in (
        "KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXT-WEB", "KUBE-SVC-WEB", "KUBE-SEP-A", "KUBE-SEP-B", "KUBE-MARK-MASQ"))
    nat = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        '-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web" -m tcp --dport 30080 -j KUBE-EXT-WEB',
        "-A KUBE-EXT-WEB -j KUBE-MARK-MASQ",
        "-A KUBE-EXT-WEB -j KUBE-SVC-WEB",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-SVC-WEB -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A",
        "-A KUBE-SVC-WEB -j KUBE-SEP-B",
        "-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 203.0.113.5:8080",
        "-A KUBE-SEP-B -p tcp -m tcp -j DNAT --to-destination 203.0.113.7:8080",
    ]
    forward = ["-A FORWARD -d 203.0.113.0/24 -p tcp -m tcp --dport 8080 -j ACCEPT"]
    svc = published(snapshot(plain_v4(nat, forward, chains=chains), None))[("tcp", 30080)]
    assert svc.socket.process.startswith("kube-proxy: dnat \u2192 ")
    assert "203.0.113.5:8080" in svc.socket.process and "203.0.113.7:8080" in svc.socket.process
    v = svc.verdicts["ipv4"]
    assert v.status == "open", v
    assert any("statistic" in u for u in v.uncertain), v.uncertain


def test_forward_drop_wins_over_the_dnat() -> None:
    v4 = plain_v4(["-A PREROUTING -p udp -m udp --dport 5353 -j DNAT --to-destination 203.0.113.9:53"], [])
    v = published(snapshot(v4, None))[("udp", 5353)].verdicts["ipv4"]
    assert v.status == "filtered" and any(d.policy == "DROP" for d in v.decided_by), v


def test_redirect_to_the_host_gets_a_row() -> None:
    """REDIRECT --to-ports 22 exposes tcp/2222 though nothing listens there: a row of its own,
    decided by INPUT for the port NAT made of it (there was no row: scan disagreed)."""
    v4 = plain_v4([
        "-A PREROUTING -p tcp -m tcp --dport 2222 -j REDIRECT --to-ports 22",
        "-A PREROUTING -p tcp -m tcp --dport 8081 -j REDIRECT --to-ports 80",
        "-A PREROUTING -i eth0 -p tcp -m tcp --dport 2223 -j REDIRECT --to-ports 22",
    ], [], forward_policy="ACCEPT")
    rows = published(snapshot(v4, None))
    assert sorted(rows) == [("tcp", 2222), ("tcp", 2223), ("tcp", 8081)]
    v = rows[("tcp", 2222)].verdicts["ipv4"]
    assert v.status == "open" and "this host :22" in v.reason, v
    assert any("REDIRECT --to-ports 22" in r for r in rules_of(v)) and any("--dport 22 -j ACCEPT" in r for r in rules_of(v))
    assert rows[("tcp", 2222)].verdicts["ipv6"].status == "not-bound"
    assert rows[("tcp", 8081)].verdicts["ipv4"].status == "filtered"  # INPUT drops 80
    v = rows[("tcp", 2223)].verdicts["ipv4"]
    assert v.status == "restricted" and v.allowed_interfaces == ["eth0"], v


def test_dnat_for_one_interface_is_restricted_to_it() -> None:
    """`-i eth0 ... -j DNAT` on a host with two interfaces: was `open` (the interface it leaves
    out was taken for the target's side, as Docker's `! -i docker0`)."""
    v4 = plain_v4(["-A PREROUTING -i eth0 -p tcp -m tcp --dport 2222 -j DNAT --to-destination 198.51.100.7:22"],
                  ["-A FORWARD -d 198.51.100.7/32 -p tcp -m tcp --dport 22 -j ACCEPT"])
    snap = snapshot(v4, None)
    snap.interfaces = ["lo", "eth0", "eth1"]
    v = published(snap)[("tcp", 2222)].verdicts["ipv4"]
    assert v.status == "restricted" and v.allowed_interfaces == ["eth0"], v


def test_port_ranges() -> None:
    v4 = plain_v4([
        "-A PREROUTING -p tcp -m multiport --dports 8000:8002 -j DNAT --to-destination 203.0.113.9",
        "-A PREROUTING -p tcp -m tcp --dport 9000:9100 -j DNAT --to-destination 203.0.113.9",
    ], [], forward_policy="ACCEPT")
    rows = published(snapshot(v4, None))
    assert sorted(rows) == [("tcp", 8000), ("tcp", 8001), ("tcp", 8002), ("tcp", 9000)]
    assert rows[("tcp", 8001)].socket.process == "dnat \u2192 203.0.113.9:8001"
    assert rows[("tcp", 9000)].socket.process.endswith("(ports 9000-9100)")


def test_dnat_to_one_host_address_names_it() -> None:
    v4 = plain_v4(["-A PREROUTING -d 192.0.2.1/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 203.0.113.9:443"],
                  [], forward_policy="ACCEPT")
    svc = published(snapshot(v4, None))[("tcp", 8443)]
    assert svc.socket.address == "192.0.2.1"
