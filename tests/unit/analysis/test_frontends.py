"""Front-end detection (ufw, firewalld, Docker, kube-proxy, fail2ban...) from chain and table names.

The ufw, Docker and firewalld rulesets are the fixtures in tests/fixtures/frontends (see the README
there for how each was made: ufw's by the real ufw in a namespace)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from twinwall.analysis.frontends import combine_frontends, detect_frontends, frontends_of
from twinwall.analysis.audit import audit_snapshot
from twinwall.model import HostSnapshot, Ipv6State, RulesetText
from twinwall.parsers.iptables_save import parse_iptables_save
from twinwall.sources.sockets import parse_ss

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "frontends"
HAVE_NFT_JSON = importlib.util.find_spec("twinwall.parsers.nft_json") is not None


def load(name: str, family: str):
    return parse_iptables_save((FIX / name).read_text(), family, name)


def rules(family: str, *chains: str, table: str = "filter"):
    """A minimal ruleset declaring the given user chains (each with one RETURN rule)."""
    builtin = {"filter": ":INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
               "nat": ":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                      ":POSTROUTING ACCEPT [0:0]\n"}[table]
    text = f"*{table}\n{builtin}" + "".join(f":{c} - [0:0]\n" for c in chains)
    text += "".join(f"-A {c} -j RETURN\n" for c in chains) + "COMMIT\n"
    return parse_iptables_save(text, family, "test")


PLAIN = rules("ipv4")


def test_ufw_with_ipv6_yes() -> None:
    got = detect_frontends({"ipv4": [load("ufw-ipv6-yes.v4.rules", "ipv4")],
                            "ipv6": [load("ufw-ipv6-yes.v6.rules", "ipv6")]})
    assert got == {"ipv4": ["ufw"], "ipv6": ["ufw"]}


def test_ufw_with_ipv6_no_is_ipv4_only() -> None:
    v4 = load("ufw-ipv6-no.v4.rules", "ipv4")
    v6 = load("ufw-ipv6-no.v6.rules", "ipv6")
    assert frontends_of([v6]) == []  # ip6tables: DROP policies and a loopback accept, no ufw6 chain
    got = detect_frontends({"ipv4": [v4], "ipv6": [v6]})
    assert got == {"ipv4": ["ufw (IPv4 only)"], "ipv6": ["ufw (IPv4 only)"]}


def test_ufw_ipv4_only_needs_an_ipv6_ruleset() -> None:
    # no IPv6 ruleset read at all: nothing can be said about ufw's IPV6 setting
    got = detect_frontends({"ipv4": [load("ufw-ipv6-no.v4.rules", "ipv4")], "ipv6": []})
    assert got == {"ipv4": ["ufw"], "ipv6": []}


def test_combine_frontends_per_family_lists() -> None:
    # what an audit that loads one family at a time has: each family's own names
    assert combine_frontends({"ipv4": ["ufw", "docker"], "ipv6": ["docker"]}, {"ipv4": True, "ipv6": True}) == {
        "ipv4": ["ufw (IPv4 only)", "docker"],
        "ipv6": ["ufw (IPv4 only)", "docker"],
    }
    assert combine_frontends({"ipv4": ["ufw"], "ipv6": []}, {"ipv4": True, "ipv6": False}) == {
        "ipv4": ["ufw"], "ipv6": []}
    assert combine_frontends({"ipv4": ["ufw"], "ipv6": ["ufw"]}, {"ipv4": True, "ipv6": True}) == {
        "ipv4": ["ufw"], "ipv6": ["ufw"]}


@pytest.mark.parametrize("name,family", [
    ("docker28-portmap.v4.rules", "ipv4"),
    ("docker28-portmap.v6.rules", "ipv6"),
    ("docker24-portmap.v4.rules", "ipv4"),
])
def test_docker(name: str, family: str) -> None:
    assert frontends_of([load(name, family)]) == ["docker"]


@pytest.mark.parametrize("chains,table,want", [
    (("INPUT_direct", "INPUT_ZONES", "IN_public", "IN_public_allow"), "filter", ["firewalld"]),
    (("FWDI_home_deny",), "filter", ["firewalld"]),
    (("KUBE-SERVICES", "KUBE-NODEPORTS"), "nat", ["kube-proxy"]),
    (("KUBE-FORWARD",), "filter", ["kube-proxy"]),
    (("f2b-sshd",), "filter", ["fail2ban"]),
    (("LOCALINPUT", "LOCALOUTPUT", "ALLOWIN", "DENYIN"), "filter", ["csf"]),
    (("shorewall", "net-fw", "fw-net"), "filter", ["shorewall"]),
    (("LIBVIRT_INP", "LIBVIRT_FWI"), "filter", ["libvirt"]),
    (("NETAVARK_FORWARD",), "filter", ["podman"]),
    (("DOCKER-USER", "f2b-sshd", "ufw-user-input"), "filter", ["ufw", "docker", "fail2ban"]),
    (("MY-CHAIN", "IN_ACCEPT", "ALLOWIN"), "filter", []),  # look-alikes an admin may write
])
def test_chain_names(chains, table, want) -> None:
    assert frontends_of([rules("ipv4", *chains, table=table)]) == want


def test_plain_ruleset_has_no_frontend() -> None:
    assert detect_frontends({"ipv4": [PLAIN], "ipv6": [rules("ipv6")]}) == {"ipv4": [], "ipv6": []}


def test_frontends_named_by_a_parser_are_kept() -> None:
    rs = rules("ipv4")
    rs.frontends = ["custom"]
    assert frontends_of([rs]) == ["custom"]


# ---------------------------------------------------------------------------------------------
# firewalld: its real nftables ruleset (fixture made with nft -f / nft -j, see the README)

SS_SSH = """\
Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   LISTEN 0      128          0.0.0.0:22         0.0.0.0:*     users:(("sshd",pid=812,fd=3))
tcp   LISTEN 0      128             [::]:22            [::]:*     users:(("sshd",pid=812,fd=4)) v6only:1
tcp   LISTEN 0      128                *:9090             *:*     users:(("cockpit",pid=900,fd=3)) v6only:0
"""


def firewalld_snapshot() -> HostSnapshot:
    snap = HostSnapshot(hostname="fw", sockets=parse_ss(SS_SSH))
    snap.rulesets.append(RulesetText("inet", "nft-json", "nft", "firewalld-public.nft.json",
                                     (FIX / "firewalld-public.nft.json").read_text()))
    snap.ipv6 = Ipv6State(True, ["test"])
    return snap


@pytest.mark.skipif(not HAVE_NFT_JSON, reason="twinwall.parsers.nft_json is not available")
def test_firewalld_detected_and_ssh_open_on_both_families() -> None:
    from twinwall.loader import load_rulesets

    snap = firewalld_snapshot()
    assert detect_frontends(load_rulesets(snap)) == {"ipv4": ["firewalld"], "ipv6": ["firewalld"]}
    report = audit_snapshot(snap)
    assert report.frontends == {"ipv4": ["firewalld"], "ipv6": ["firewalld"]}
    by = {(s.socket.address, s.socket.port): s for s in report.services}
    for addr, family in (("0.0.0.0", "ipv4"), ("::", "ipv6")):
        v = by[(addr, 22)].verdicts[family]
        assert v.status == "open", (family, v)
        # accepted by the public zone's ssh service rule
        assert any(d.chain == "filter_IN_public_allow" and d.rule and "dport 22" in d.rule
                   for d in v.decided_by), v.decided_by
    # the default public zone (ssh, dhcpv6-client) does not allow 9090: rejected on both
    cockpit = by[("::", 9090)]
    assert cockpit.verdicts["ipv4"].status == "filtered"
    assert cockpit.verdicts["ipv6"].status == "filtered"
    assert any("reject" in (d.rule or "") for d in cockpit.verdicts["ipv4"].decided_by)
    for f in report.findings:
        if f.family:
            assert f.frontend == "firewalld", f
