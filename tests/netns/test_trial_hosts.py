"""Issue 10's new-user trial: ten hosts as admins build them, audited as a new user would.

Each case is one host (a fresh namespace host of tests/netns/trialhost.py: the differential's
two clients on separate links and its listeners, TCP and UDP, on 0.0.0.0, ::, specific addresses
and loopback). The case sets the host up with the real tools - ufw, firewalld, iptables-restore,
iptables-legacy-restore, iptables commands, nft -f, sysctls - then ``twinwall collect`` and
``twinwall audit`` run inside it while both clients probe every socket (TCP connect, UDP
exchange, several source addresses and ports, no static neighbour entries). Every (socket,
family) status and every probe's packet must agree with the kernel, and so must the rows of the
ports the host publishes through NAT.

firewalld is Debian's real daemon (apt-get install firewalld), run in the host namespace on a
private D-Bus (see TrialHost.firewalld); Docker is the iptables rules dockerd 28 installs
(tests/fixtures/frontends/docker28-portmap.*.rules, as test_docker_netns.py uses them) with a
container namespace behind a docker0 bridge.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

import trialhost
from trialhost import Case, NatPort, TrialHost
from diffhost import IPV4, IPV6
from harness import ListenerSpec

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "frontends"

# the differential host's listeners (diffhost.LISTENERS): tcp 22 (0.0.0.0, [::] v6only),
# 80 (dual-stack), 443 (192.0.2.1, 2001:db8:b::1), 8080 ([::] v6only), 3000 (0.0.0.0),
# 3306 (127.0.0.1); udp 53 (0.0.0.0, [::] v6only), 123 (dual-stack), 5353 (198.51.100.1).
# Server interfaces: eth-a (192.0.2.1 .2, 2001:db8:a::1 ::2; client c1) and vb0 (198.51.100.1,
# 2001:db8:b::1; client c2).


# --------------------------------------------------------------------------------------------
# ufw


UFW_COMMANDS = [
    ("allow", "22/tcp"),
    ("allow", "from", "192.0.2.0/24", "to", "any", "port", "3000", "proto", "tcp"),
    ("allow", "from", "2001:db8:b::/64", "to", "any", "port", "8080", "proto", "tcp"),
    ("allow", "in", "on", "eth-a", "to", "any", "port", "443", "proto", "tcp"),
    ("allow", "53/udp"),
    ("deny", "from", "198.51.100.77", "to", "any", "port", "80", "proto", "tcp"),
    ("allow", "80/tcp"),
    ("allow", "proto", "udp", "from", "any", "port", "33000", "to", "any", "port", "123"),
]


def _ufw(ipv6: bool):
    def setup(h: TrialHost) -> None:
        from test_ufw_netns import PrivateUfw, _skip_reason

        reason = _skip_reason()
        if reason:
            pytest.skip(reason)
        ufw = PrivateUfw(h.server, ipv6=ipv6).__enter__()
        h.cleanups.append(lambda: ufw.__exit__(None, None, None))
        ufw("--force", "enable")
        for cmd in UFW_COMMANDS:
            if ipv6 or not any(":" in word for word in cmd):  # IPV6=no refuses IPv6 sources
                ufw(*cmd)
    return setup


# --------------------------------------------------------------------------------------------
# firewalld


def _firewalld(h: TrialHost) -> None:
    reason = trialhost.firewalld_unavailable()
    if reason:
        pytest.skip(reason)
    h.firewalld(
        ("--add-service=http",),
        ("--add-port=53/udp",),
        ("--add-rich-rule=rule family=ipv4 source address=192.0.2.0/24 port port=3000 protocol=tcp accept",),
        ("--add-rich-rule=rule family=ipv6 source address=2001:db8:b::/64 port port=8080 protocol=tcp accept",),
        ("--add-rich-rule=rule family=ipv4 source address=192.0.2.11 drop",),
        ("--add-forward-port=port=2222:proto=tcp:toport=22",),
        ("--zone=internal", "--change-interface=vb0"),
        ("--zone=internal", "--add-port=443/tcp"),
    )


# --------------------------------------------------------------------------------------------
# Docker


DOCKER_V4_NET, DOCKER_V6_NET = "203.0.113.240/28", "2001:db8:d::/64"
DOCKER_V4, DOCKER_V6 = "203.0.113.242", "2001:db8:d::2"


def _add_rules(text: str, table: str, rules: List[str]) -> str:
    m = re.search(rf"^\*{table}\n(.*?)^COMMIT$", text, re.S | re.M)
    assert m is not None, table
    return text[: m.end(1)] + "".join(r + "\n" for r in rules) + text[m.end(1):]


def _docker_rules(family: str) -> str:
    """dockerd 28's rules for ``-p 8088:80 -p 5300:53/udp`` on the default bridge (IPv6 network
    on, ip6tables on), DOCKER-USER hardened by the admin, INPUT the admin's own (policy DROP)."""
    if family == IPV4:
        text = (FIXTURES / "docker28-portmap.v4.rules").read_text()
        text = text.replace("172.17.0.0/16", DOCKER_V4_NET).replace("172.17.0.2", DOCKER_V4).replace("8080", "8088")
        assert "172.17." not in text
        ctr, net = f"{DOCKER_V4}/32", DOCKER_V4_NET
        dnat = DOCKER_V4
    else:
        text = (FIXTURES / "docker28-portmap.v6.rules").read_text()
        ctr, net = f"{DOCKER_V6}/128", DOCKER_V6_NET
        dnat = f"[{DOCKER_V6}]"
        raw_drop = f"-A PREROUTING -d {ctr} ! -i docker0 -p tcp -m tcp --dport 80 -j DROP"
        text = _add_rules(text, "raw", [raw_drop]) if "*raw" in text \
            else f"*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{raw_drop}\nCOMMIT\n" + text
        text = _add_rules(text, "filter", [
            f"-A DOCKER -d {ctr} ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
            "-A DOCKER ! -i docker0 -o docker0 -j DROP",
            "-A DOCKER-BRIDGE -o docker0 -j DOCKER",
            "-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A DOCKER-FORWARD -i docker0 -j ACCEPT",
            "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
            "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP"])
        text = _add_rules(text, "nat", [
            f"-A POSTROUTING -s {net} ! -o docker0 -j MASQUERADE",
            "-A DOCKER -i docker0 -j RETURN",
            f"-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8088 -j DNAT --to-destination {dnat}:80"])
    # the udp port Docker publishes the same way as the tcp one
    text = _add_rules(text, "raw", [f"-A PREROUTING -d {ctr} ! -i docker0 -p udp -m udp --dport 53 -j DROP"])
    text = text.replace("-A DOCKER ! -i docker0 -o docker0 -j DROP",
                        f"-A DOCKER -d {ctr} ! -i docker0 -o docker0 -p udp -m udp --dport 53 -j ACCEPT\n"
                        "-A DOCKER ! -i docker0 -o docker0 -j DROP")
    text = _add_rules(text, "nat", [f"-A DOCKER ! -i docker0 -p udp -m udp --dport 5300 -j DNAT --to-destination {dnat}:53"])
    # the admin's part: INPUT policy DROP with ssh and dns; DOCKER-USER drops one client address
    admin = ["-A INPUT -i lo -j ACCEPT", "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
             "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT", "-A INPUT -p udp -m udp --dport 53 -j ACCEPT"]
    if family == IPV6:
        admin.append("-A INPUT -p ipv6-icmp -j ACCEPT")
    text = text.replace(":INPUT ACCEPT [0:0]", ":INPUT DROP [0:0]", 1)
    text = _add_rules(text, "filter", admin)
    blocked = "192.0.2.11/32" if family == IPV4 else "2001:db8:b::99/128"
    return text.replace("-A DOCKER-USER -j RETURN", f"-A DOCKER-USER -s {blocked} -j DROP\n-A DOCKER-USER -j RETURN")


def _docker(forwarding: bool):
    def setup(h: TrialHost) -> None:
        h.container(DOCKER_V4_NET, DOCKER_V6_NET,
                    [ListenerSpec("tcp", "::", 80, v6only=False), ListenerSpec("udp", "::", 53, v6only=False)])
        h.restore(_docker_rules(IPV4), _docker_rules(IPV6))
        on = int(forwarding)
        h.sysctl(**{"net.ipv4.ip_forward": on, "net.ipv6.conf.all.forwarding": on})
    return setup


# --------------------------------------------------------------------------------------------
# iptables rulesets


def _filter(family: str, accepts: List[str], head: List[str] = ()) -> str:
    rules = ["-A INPUT -i lo -j ACCEPT", "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", *head]
    if family == IPV6:
        rules.append("-A INPUT -p ipv6-icmp -j ACCEPT")
    rules += [f"-A INPUT {a} -j ACCEPT" for a in accepts]
    return "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" + "\n".join(rules) + "\nCOMMIT\n"


SERVICES = ["-p tcp -m tcp --dport 22", "-p tcp -m tcp --dport 80", "-p tcp -m tcp --dport 443",
            "-p tcp -m tcp --dport 8080", "-p tcp -m tcp --dport 3000", "-p udp -m udp --dport 53",
            "-p udp -m udp --dport 123", "-p udp -m udp --dport 5353"]

LEGACY_NFT = """table inet extra {
    chain input {
        type filter hook input priority 10; policy accept;
        tcp dport 3000 drop
        ip6 saddr 2001:db8:b::99 drop
        ip saddr 192.0.2.0/24 udp dport 123 drop
        ip daddr 192.0.2.2 tcp dport 80 drop
    }
}
"""


def _legacy_and_nft(h: TrialHost) -> None:
    h.restore(_filter(IPV4, SERVICES), _filter(IPV6, SERVICES), legacy=True)
    h.nft(LEGACY_NFT)


def _raw_mangle_nat(h: TrialHost) -> None:
    def rules(family: str) -> str:
        me = "192.0.2.11/32" if family == IPV4 else "2001:db8:a::11/128"
        second = "192.0.2.2/32" if family == IPV4 else "2001:db8:a::2/128"
        return (
            "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A PREROUTING -p udp -m udp --dport 53 -j CT --notrack\n"
            "-A OUTPUT -p udp -m udp --sport 53 -j CT --notrack\nCOMMIT\n"
            "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
            ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            f"-A PREROUTING -s {me} -j DROP\n"
            "-A PREROUTING -i vb0 -p tcp -m tcp --dport 3000 -j DROP\nCOMMIT\n"
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A PREROUTING -p tcp -m tcp --dport 2222 -j REDIRECT --to-ports 22\nCOMMIT\n"
            + _filter(family, [s for s in SERVICES if "dport 53" not in s] + ["-p udp -m conntrack --ctstate UNTRACKED"],
                      head=[f"-A INPUT -d {second} -p tcp -m tcp --dport 80 -j DROP"])
        )
    h.restore(rules(IPV4), rules(IPV6))


def _cis(h: TrialHost) -> None:
    """CIS Debian/Ubuntu 3.5.3 (iptables) and 3.5.3.3 (ip6tables), as the benchmark's remediation
    commands give them, with the hardening guides' `! --syn NEW` drop on top; iptables-nft."""
    cmds = []
    for tool, lo_net in (("iptables", "127.0.0.0/8"), ("ip6tables", "::1")):
        cmds += [
            [tool, "-F"], [tool, "-P", "INPUT", "DROP"], [tool, "-P", "OUTPUT", "DROP"], [tool, "-P", "FORWARD", "DROP"],
            [tool, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"], [tool, "-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"],
            [tool, "-A", "INPUT", "-s", lo_net, "-j", "DROP"],
            [tool, "-A", "INPUT", "-p", "tcp", "!", "--syn", "-m", "state", "--state", "NEW", "-j", "DROP"],
        ]
        for proto in ("tcp", "udp", "icmp"):
            cmds.append([tool, "-A", "OUTPUT", "-p", proto, "-m", "state", "--state", "NEW,ESTABLISHED", "-j", "ACCEPT"])
            cmds.append([tool, "-A", "INPUT", "-p", proto, "-m", "state", "--state", "ESTABLISHED", "-j", "ACCEPT"])
        cmds += [[tool, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-m", "state", "--state", "NEW", "-j", "ACCEPT"],
                 [tool, "-A", "INPUT", "-p", "udp", "--dport", "53", "-m", "state", "--state", "NEW", "-j", "ACCEPT"]]
    h.commands(*cmds)


NFT_SETS = """flush ruleset
table inet filter {
    set allow4 { type ipv4_addr; flags interval; elements = { 192.0.2.0/25, 203.0.113.128/25 } }
    set allow6 { type ipv6_addr; flags interval; elements = { 2001:db8:b::/64 } }
    set blocked6 { type ipv6_addr; elements = { 2001:db8:a::11 } }
    set tcpsvc { type inet_service; elements = { 22, 80 } }
    set pair4 { type ipv4_addr . inet_service; elements = { 192.0.2.10 . 443, 198.51.100.77 . 443 } }
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iif lo accept
        meta l4proto ipv6-icmp accept
        ip6 saddr @blocked6 drop
        tcp dport @tcpsvc accept
        ip saddr @allow4 tcp dport 3000 accept
        ip6 saddr @allow6 tcp dport 8080 accept
        ip saddr . tcp dport @pair4 accept
        meta nfproto ipv6 tcp dport 443 accept
        udp dport { 53, 123 } accept
        ip saddr 198.51.100.0/24 udp dport 5353 accept
    }
}
"""


def _ipv6_off_on_one_interface(h: TrialHost) -> None:
    h.restore(_filter(IPV4, SERVICES), _filter(IPV6, SERVICES))
    h.sysctl(**{"net.ipv6.conf.vb0.disable_ipv6": 1})


def _nat_to_self_on_one_interface(h: TrialHost) -> None:
    def rules(family: str) -> str:
        nat = ["-A PREROUTING -i eth-a -p tcp -m tcp --dport 2222 -j REDIRECT --to-ports 22"]
        if family == IPV4:
            nat.append("-A PREROUTING -i vb0 -p udp -m udp --dport 5300 -j DNAT --to-destination 198.51.100.1:53")
        return ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
                + "\n".join(nat) + "\nCOMMIT\n" + _filter(family, ["-p tcp -m tcp --dport 22", "-p udp -m udp --dport 53"]))
    h.restore(rules(IPV4), rules(IPV6))


CASES = [
    Case("ufw-ipv6-yes", _ufw(True), note="real ufw, IPV6=yes"),
    Case("ufw-ipv6-no", _ufw(False), note="real ufw, IPV6=no"),
    Case("firewalld", _firewalld, (NatPort("tcp", 2222),), note="real firewalld (nftables) on a private bus"),
    Case("docker", _docker(True), (NatPort("tcp", 8088), NatPort("udp", 5300)), note="dockerd 28's rules, container netns"),
    Case("docker-no-forwarding", _docker(False), (NatPort("tcp", 8088), NatPort("udp", 5300)),
         note="the same with ip_forward=0"),
    Case("legacy-and-nft", _legacy_and_nft, note="iptables-legacy + a native inet table"),
    Case("raw-mangle-nat", _raw_mangle_nat, (NatPort("tcp", 2222),), note="NOTRACK, mangle DROP, REDIRECT"),
    Case("cis-iptables-nft", _cis, note="CIS remediation commands, iptables-nft"),
    Case("nft-inet-sets", lambda h: h.nft(NFT_SETS), note="native nft inet table with sets"),
    Case("ipv6-off-on-one-interface", _ipv6_off_on_one_interface, note="disable_ipv6=1 on vb0"),
    Case("nat-to-self-on-one-interface", _nat_to_self_on_one_interface, (NatPort("tcp", 2222), NatPort("udp", 5300)),
         note="REDIRECT/DNAT to the host on one interface"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_trial_host_agrees_with_real_clients(case: Case) -> None:
    with TrialHost() as h:
        result = h.run_case(case)
    print(f"{case.name}: {result.verdicts} statuses compared {dict(sorted(result.compared.items()))}, "
          f"{result.probes} probes, {len(result.disagreements)} disagreements, skipped {result.skipped}")
    assert result.verdicts >= 10, result.verdicts
    assert not result.disagreements, "\n".join(str(d) for d in result.disagreements[:12]) + \
        f"\n({len(result.disagreements)} disagreements)"
