"""`twinwall fix --apply` with the admin's sessions open: seed 000 as a new user ran it, and an
established TCP connection over IPv4, IPv6 and IPv4-mapped that must keep passing data through
every strategy (a plan that would cut it is refused).

The server gets real rules and real listeners (apply_helper.py's echo standing in for sshd);
twinwall runs inside the server namespace with its state and persistence under the test's
temporary directory. Every watchdog a transaction arms is ended by its PID at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set, Tuple

import pytest

import harness
from harness import IPV4, IPV6, ListenerSpec, Topology
from test_fix_apply_netns import HELPER, Host, ping
from test_fix_netns import agree, rules, status_of

# the new user's host: IPv4 done by hand, IPv6 never configured
STORY_V4 = rules("""
    -A INPUT -i lo -j ACCEPT
    -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
    -A INPUT -p icmp -j ACCEPT
""")


class SessionHost(Host):
    def watchdogs_end(self) -> None:
        from twinwall.apply.watchdog import is_our_watchdog

        for path in (self.tmp / "state").glob("tx/*/transaction.json"):
            how, _, pid = json.loads(path.read_text()).get("rollback_by", "").partition(":")
            if how == "watchdog" and pid.isdigit() and is_our_watchdog(int(pid), path.parent.name):
                os.kill(int(pid), signal.SIGKILL)

    def echo(self, address: str, v6only: bool) -> None:
        p = self._popen(["ip", "netns", "exec", self.topo.server, sys.executable, str(HELPER), "echo", address, "22",
                         "1" if v6only else "0"], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "READY"

    def hold(self, client: str, address: str) -> subprocess.Popen:
        p = self._popen(["ip", "netns", "exec", self.topo.client(client).ns, sys.executable, str(HELPER), "hold",
                         address, "22"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert p.stdout is not None and p.stdout.readline().startswith("CONNECTED")
        return p


@pytest.fixture
def shost(topology: Topology, tmp_path: Path):
    h = SessionHost(topology, tmp_path)
    try:
        yield h
    finally:
        h.close()
        h.watchdogs_end()


def keys(audit: Dict) -> Set[Tuple]:
    """Every finding, one key per subject: (kind, family, hook, service)."""
    out = set()
    for f in audit["findings"]:
        names = [s.get("service") for s in f.get("services") or [] if s.get("service")] or [f.get("service")]
        out |= {(f["id"], f["family"], f.get("hook") or "", n) for n in names}
    return out


def test_seed_000_new_user_default_fix_leaves_no_new_finding(shost: SessionHost) -> None:
    topo = shost.topo
    topo.load_iptables(STORY_V4)
    shost.echo("::", v6only=False)  # sshd on [::]:22
    topo.start_listeners([ListenerSpec("tcp", "::", 8080, v6only=False)])
    hold = shost.hold("inside", topo.server_address("inside", IPV6))
    before = json.loads(shost.twinwall("audit", "--format", "json")[1])
    rc, out, err = shost.twinwall("fix", "--format", "json")
    plan = json.loads(out)
    assert rc == 1 and plan["proof"]["ok"], (plan["proof"], plan["refused"])
    targeted = {(c["finding"], c["family"]) for c in plan["changes"]}
    rc, out, err = shost.twinwall("fix", "--apply", "--confirm-timeout", "120")
    assert rc == 1, err
    assert ping(hold, "applied") == "ECHO applied"
    rc, out, err = shost.twinwall("confirm")
    assert rc == 0, err
    after = json.loads(shost.twinwall("audit", "--format", "json")[1])
    st = agree(topo, after, [("tcp", 8080)])  # (the echo standing in for sshd never closes: probed below)
    assert st[("tcp", 8080, IPV6)] == "filtered" and st[("tcp", 8080, IPV4)] == "filtered"
    for fam in (IPV4, IPV6):
        assert status_of(after, "tcp", 22, fam) == "open"
        for client in ("inside", "outside"):
            fresh = shost.hold(client, topo.server_address(client, fam))
            assert ping(fresh, "new") == "ECHO new", f"a new {fam} ssh from {client} after the fix"
    new = keys(after) - keys(before)
    assert not new, f"the fix raised new findings: {sorted(map(str, new))}"
    assert not targeted & {(f["id"], f["family"]) for f in after["findings"] if f["hook"] == "input"}
    assert ping(hold, "confirmed") == "ECHO confirmed"


EGRESS_V4 = rules("""
    -A INPUT -i lo -j ACCEPT
    -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
    -A OUTPUT -p tcp -m tcp --dport 25 -j REJECT --reject-with icmp-port-unreachable
""", input_policy="DROP")

# (strategy, IPv4 rules, fix arguments, confirm or roll back)
STRATEGIES = [
    ("mirror", STORY_V4, ("--strategy", "mirror", "--finding", "TW-FAMILY-GAP"), "rollback"),
    ("accept-new", STORY_V4, ("--strategy", "accept-new", "--finding", "TW-NO-RULE"), "rollback"),
    ("close", STORY_V4, ("--strategy", "close", "--finding", "TW-FAMILY-GAP"), "rollback"),
    ("baseline", STORY_V4, ("--strategy", "baseline"), "confirm"),
    ("egress", EGRESS_V4, ("--finding", "TW-EGRESS-FORWARD-DIFFER"), "rollback"),
]


def test_admin_sessions_pass_through_every_strategy(shost: SessionHost) -> None:
    topo = shost.topo
    v4_in, v4_out = topo.server_address("inside", IPV4), topo.server_address("outside", IPV4)
    v6_in = topo.server_address("inside", IPV6)
    # sshd three ways: IPv4-mapped on an IPv6 socket, plain IPv4, plain IPv6
    shost.echo(f"::ffff:{v4_in}", v6only=False)
    shost.echo(v4_out, v6only=False)
    shost.echo(v6_in, v6only=True)
    topo.start_listeners([ListenerSpec("tcp", "::", 8080, v6only=False)])
    sessions = {"ipv4-mapped": shost.hold("inside", v4_in), "ipv4": shost.hold("outside", v4_out),
                "ipv6": shost.hold("inside", v6_in)}

    def alive(word: str) -> None:
        for name, hold in sessions.items():
            assert ping(hold, word) == f"ECHO {word}", f"the {name} session stopped: {word}"

    for name, v4, args, end in STRATEGIES:
        topo.load_iptables(v4, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
        before = shost.saves()
        rc, out, err = shost.twinwall("fix", *args, "--apply", "--confirm-timeout", "120")
        assert rc == 1, f"{name}: {err}"
        assert before != shost.saves(), f"{name} changed nothing"
        alive(f"{name}-applied")
        rc, out, err = shost.twinwall(end)
        assert rc == 0, f"{name} {end}: {err}"
        if end == "rollback":
            assert shost.saves() == before, f"{name}: rollback left the rules changed"
        alive(f"{name}-{end}")
    # block-ipv6 would cut the IPv6 session: refused, nothing changed
    before = shost.saves()
    rc, out, err = shost.twinwall("fix", "--strategy", "block-ipv6", "--apply", "--confirm-timeout", "120")
    assert rc == 2 and "cut" in err, err
    assert shost.saves() == before
    alive("block-ipv6-refused")
    # without it, block-ipv6 goes through and the IPv4 sessions (mapped or not) keep passing
    ipv6 = sessions.pop("ipv6")
    assert ipv6.stdin is not None
    ipv6.stdin.close()
    harness.netns_exec(topo.server, "ss", "-K", "dst", topo.client_address("inside", IPV6), check=False)
    rc, out, err = shost.twinwall("fix", "--strategy", "block-ipv6", "--apply", "--confirm-timeout", "120")
    assert rc == 1, err
    alive("block-ipv6-applied")
    assert shost.twinwall("rollback")[0] == 0
    assert shost.saves() == before
    alive("block-ipv6-rollback")
