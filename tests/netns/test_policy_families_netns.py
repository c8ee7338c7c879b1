"""`twinwall policy apply` of a file that governs IPv4 only ([defaults] families = ["ipv4"]),
on a namespace host that has ip6tables rules of its own: the transaction changes IPv4 only, and
the host's IPv6 rules stay as they were, rule for rule, through apply, confirm and rollback;
the lockout guard still runs on the governed family."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness import IPV4, IPV6, ListenerSpec, Topology, netns_exec

HELPER = Path(__file__).resolve().parent / "apply_helper.py"

BEFORE_V4 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 2323 -j DROP
COMMIT
"""
# the host's own IPv6 rules, which the file never read
BEFORE_V6 = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -s 2001:db8:ffff::/48 -j DROP
-A INPUT -p tcp -m tcp --dport 2323 -j REJECT --reject-with tcp-reset
COMMIT
"""


def policy_text(admitted_v4: str) -> str:
    return f"""[defaults]
families = ["ipv4"]
input = "drop"

[[rule]]
direction = "in"
proto = "tcp"
ports = [22, 80]
from = "{admitted_v4}"
action = "accept"
"""


def saved(ns: str, tool: str) -> str:
    """The rules as the tool prints them: without its dated header comment and the counters."""
    text = netns_exec(ns, tool).stdout
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[-]", line) for line in text.splitlines() if not line.startswith("#"))


def twinwall(ns, env, *args):
    res = netns_exec(ns, sys.executable, "-m", "twinwall", *args, check=False, env=env, timeout=180)
    return res.returncode, res.stdout, res.stderr


def hold(topo: Topology, client: str, family: str) -> subprocess.Popen:
    """An admin session from ``client`` to the server's port 22 (an established TCP connection
    the lockout guard finds)."""
    proc = subprocess.Popen(["ip", "netns", "exec", topo.clients[client].ns, sys.executable, str(HELPER), "hold",
                             topo.server_address(client, family), "22"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdout is not None and proc.stdout.readline().startswith("CONNECTED")
    return proc


def ping(proc: subprocess.Popen, word: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(word + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


@pytest.mark.parametrize("target", ["iptables", "nft"])
def test_ipv4_only_policy_leaves_the_hosts_ipv6_rules_alone(tmp_path, target):
    env = harness._twinwall_env()
    env.update(TWINWALL_STATE_DIR=str(tmp_path / "state"), TWINWALL_ROOT=str(tmp_path / "root"))
    env.pop("SSH_CONNECTION", None)
    procs = []
    with Topology() as topo:
        ns = topo.server
        topo.load_iptables(BEFORE_V4, BEFORE_V6)
        v4_before, v6_before = saved(ns, "iptables-save"), saved(ns, "ip6tables-save")
        echo = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(HELPER), "echo", "::", "22", "0"],
                                stdout=subprocess.PIPE, text=True)
        procs.append(echo)
        topo.start_listeners([ListenerSpec("tcp", "::", 80, v6only=False)])
        try:
            assert echo.stdout is not None and echo.stdout.readline().strip() == "READY"
            # the admin's sessions come from inside, over both families
            v4_session, v6_session = hold(topo, "inside", IPV4), hold(topo, "inside", IPV6)
            procs += [v4_session, v6_session]
            path = tmp_path / "v4only.toml"
            # the guard runs on IPv4: a file admitting only outside to tcp/22 locks the admin out
            path.write_text(policy_text(topo.client_address("outside", IPV4)))
            rc, out, err = twinwall(ns, env, "policy", "apply", str(path), "--target", target,
                                    "--confirm-timeout", "120")
            assert rc == 2 and "would cut the admin's connection" in err and "(ipv4;" in err, err
            assert saved(ns, "iptables-save") == v4_before and saved(ns, "ip6tables-save") == v6_before
            assert ping(v4_session, "a") == "ECHO a"

            path.write_text(policy_text(topo.client_address("inside", IPV4)))
            rc, out, err = twinwall(ns, env, "policy", "apply", str(path), "--target", target,
                                    "--confirm-timeout", "120")
            assert rc == 0, err
            assert "pending" in out and "IPv6 is left as the host has it" in err
            assert saved(ns, "ip6tables-save") == v6_before
            assert (saved(ns, "iptables-save") != v4_before) == (target == "iptables")
            # IPv4 is the file's: only inside reaches tcp/80 afresh; both sessions live on
            assert topo.probe("outside", topo.server_address("outside", IPV4), 80, "tcp", timeout=2).result == "filtered"
            assert topo.probe("inside", topo.server_address("inside", IPV4), 80, "tcp", timeout=3).result == "open"
            # IPv6 is the host's: its rules decide (2323 reset), the file's drop does not
            assert topo.probe("outside", topo.server_address("outside", IPV6), 80, "tcp", timeout=3).result == "open"
            assert topo.probe("outside", topo.server_address("outside", IPV6), 2323, "tcp",
                              timeout=3).result == "closed"
            assert ping(v4_session, "b") == "ECHO b" and ping(v6_session, "c") == "ECHO c"

            rc, out, err = twinwall(ns, env, "rollback")
            assert rc == 0, err
            assert saved(ns, "iptables-save") == v4_before and saved(ns, "ip6tables-save") == v6_before
            assert topo.probe("outside", topo.server_address("outside", IPV4), 80, "tcp", timeout=3).result == "open"

            rc, out, err = twinwall(ns, env, "policy", "apply", str(path), "--target", target,
                                    "--confirm-timeout", "120")
            assert rc == 0, err
            rc, out, err = twinwall(ns, env, "confirm")
            assert rc == 0, err
            rc, out, _ = twinwall(ns, env, "transaction", "--format", "json")
            tx = json.loads(out)["transaction"]
            assert tx["state"] == "confirmed"
            assert not any(p.endswith(("rules.v6", "ip6tables")) for p in tx["persisted"]), tx["persisted"]
            assert saved(ns, "ip6tables-save") == v6_before
        finally:
            twinwall(ns, env, "rollback")
            for p in procs:
                p.kill()
                p.wait(timeout=10)
