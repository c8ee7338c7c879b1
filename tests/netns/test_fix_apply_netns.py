"""`twinwall fix --apply` end to end, through helper apply's transaction: the plan is loaded as
one guarded transaction, confirmed with `twinwall confirm` (or rolled back), with an
established TCP session from the "inside" client standing in for the admin's SSH session.

State and persistence go under the test's temporary directory (TWINWALL_STATE_DIR,
TWINWALL_ROOT), never the machine's /var/lib or /etc.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

import harness
from harness import IPV4, IPV6, ListenerSpec, Topology
from test_fix_netns import agree, finding_ids, rules

HELPER = Path(__file__).resolve().parent / "apply_helper.py"

SEED_000_V4 = rules("""
    -A INPUT -i lo -j ACCEPT
    -A INPUT -s 127.0.0.0/8 -j DROP
    -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    -A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT
""")


class Host:
    def __init__(self, topo: Topology, tmp: Path):
        self.topo, self.tmp = topo, tmp
        self.env = harness._twinwall_env()
        self.env.update(TWINWALL_STATE_DIR=str(tmp / "state"), TWINWALL_ROOT=str(tmp / "root"))
        self.env.pop("SSH_CONNECTION", None)
        self.procs: List[subprocess.Popen] = []

    def twinwall(self, *args: str):
        res = harness.netns_exec(self.topo.server, sys.executable, "-m", "twinwall", *args, check=False,
                                 env=self.env, timeout=300)
        return res.returncode, res.stdout, res.stderr

    def saves(self) -> Dict[str, List[str]]:
        out = {}
        for fam, tool in ((IPV4, "iptables-save"), (IPV6, "ip6tables-save")):
            text = harness.netns_exec(self.topo.server, tool).stdout
            out[fam] = [re.sub(r"\[\d+:\d+\]", "[0:0]", l) for l in text.splitlines() if l.startswith(("-A", ":", "*"))]
        return out

    def session(self, family: str):
        """A real echo service on [::]:22 (dual-stack) and an established session to it."""
        echo = self._popen(["ip", "netns", "exec", self.topo.server, sys.executable, str(HELPER), "echo", "::", "22", "0"],
                           stdout=subprocess.PIPE, text=True)
        assert echo.stdout.readline().strip() == "READY"
        target = self.topo.server_address("inside", family)
        hold = self._popen(["ip", "netns", "exec", self.topo.client("inside").ns, sys.executable, str(HELPER), "hold",
                            target, "22"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert hold.stdout.readline().startswith("CONNECTED")
        return hold

    def _popen(self, argv, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, env=self.env, **kw)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:  # only what this test started, by its own handle
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def ping(hold: subprocess.Popen, word: str) -> str:
    hold.stdin.write(word + "\n")
    hold.stdin.flush()
    return hold.stdout.readline().strip()


@pytest.fixture
def host(topology: Topology, tmp_path: Path):
    h = Host(topology, tmp_path)
    try:
        yield h
    finally:
        h.close()


def test_seed_000_fixed_through_apply_and_confirm(host: Host) -> None:
    topo = host.topo
    topo.load_iptables(SEED_000_V4)
    topo.start_listeners([ListenerSpec("udp", "::", 123, v6only=False), ListenerSpec("tcp", "::1", 25, v6only=True)])
    hold = host.session(IPV6)
    assert ping(hold, "one") == "ECHO one"
    args = ("fix", "--finding", "TW-FAMILY-GAP", "--finding", "TW-NO-RULE")
    rc, out, err = host.twinwall(*args, "--apply", "--confirm-timeout", "120")
    assert rc == 1, err
    assert "transaction" in err and "twinwall confirm" in err
    assert ping(hold, "two") == "ECHO two", "the admin's IPv6 session stopped under the applied plan"
    rc, out, err = host.twinwall("confirm")
    assert rc == 0, err
    assert (host.tmp / "root/etc/iptables/rules.v6").exists()
    assert ping(hold, "three") == "ECHO three"
    after = json.loads(host.twinwall("audit", "--format", "json")[1])
    st = agree(topo, after, [("udp", 123)])
    assert st[("udp", 123, IPV6)] == "filtered"
    assert not {("TW-FAMILY-GAP", IPV6), ("TW-NO-RULE", IPV6)} & set(finding_ids(after))
    rc, out, err = host.twinwall(*args)
    assert rc == 0 and "nothing to fix" in out, out


def test_block_ipv6_over_an_ipv6_session_is_refused_and_over_ipv4_rolled_back(host: Host) -> None:
    topo = host.topo
    topo.load_iptables(SEED_000_V4)
    before = host.saves()
    hold6 = host.session(IPV6)
    rc, out, err = host.twinwall("fix", "--strategy", "block-ipv6", "--apply", "--confirm-timeout", "120")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("twinwall: "), err
    assert "cut" in lines[0]
    assert host.saves() == before, "a refused plan changed the rules"
    assert ping(hold6, "still") == "ECHO still"
    hold6.stdin.close()
    hold4 = subprocess.Popen(["ip", "netns", "exec", topo.client("inside").ns, sys.executable, str(HELPER), "hold",
                              topo.server_address("inside", IPV4), "22"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    host.procs.append(hold4)
    assert hold4.stdout.readline().startswith("CONNECTED")
    harness.netns_exec(topo.server, "ss", "-K", "dst", topo.client_address("inside", IPV6), check=False)
    rc, out, err = host.twinwall("fix", "--strategy", "block-ipv6", "--apply", "--confirm-timeout", "120")
    assert rc == 1, err
    assert ping(hold4, "v4") == "ECHO v4"
    assert any(l.startswith(":INPUT DROP") for l in host.saves()[IPV6])
    assert host.twinwall("rollback")[0] == 0
    assert host.saves() == before
