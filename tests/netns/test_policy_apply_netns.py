"""`twinwall policy apply` end to end on a namespace host, through the transaction (h/apply):
the proved policy is loaded for the chosen target, pending until `twinwall confirm` (which
persists it under a throw-away root); `twinwall rollback` restores what was there before."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import harness
from harness import IPV4, IPV6, ListenerSpec, Topology, netns_exec

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "tests" / "fixtures" / "policy" / "seed002" / "policy.toml"


def twinwall(ns, env, *args):
    res = netns_exec(ns, sys.executable, "-m", "twinwall", *args, check=False, env=env, timeout=180)
    return res.returncode, res.stdout, res.stderr


def rules(ns: str) -> str:
    return netns_exec(ns, "iptables-save").stdout + netns_exec(ns, "ip6tables-save").stdout + \
        netns_exec(ns, "nft", "list", "ruleset").stdout


@pytest.mark.parametrize("target", ["iptables", "nft"])
def test_policy_apply_confirm_and_rollback(tmp_path, target):
    env = harness._twinwall_env()
    env.update(TWINWALL_STATE_DIR=str(tmp_path / "state"), TWINWALL_ROOT=str(tmp_path / "root"))
    env.pop("SSH_CONNECTION", None)
    with Topology() as topo:
        ns = topo.server
        topo.start_listeners([ListenerSpec("tcp", "::", 22, v6only=False)])
        try:
            rc, out, err = twinwall(ns, env, "policy", "apply", str(POLICY), "--target", target,
                                    "--confirm-timeout", "120")
            assert rc == 0, err
            assert "pending" in out
            assert "rule #1 (line 11)" in rules(ns)
            for family in (IPV4, IPV6):
                assert topo.probe("outside", topo.server_address("outside", family), 22, "tcp",
                                  timeout=2).result == "filtered"
                assert topo.probe("inside", topo.server_address("inside", family), 22, "tcp",
                                  timeout=3).result == "open"
            rc, out, err = twinwall(ns, env, "confirm")
            assert rc == 0, err
            rc, out, _ = twinwall(ns, env, "transaction", "--format", "json")
            tx = json.loads(out)["transaction"]
            assert tx["state"] == "confirmed" and tx["persisted"]
            assert all(Path(p).resolve().is_relative_to(tmp_path) for p in tx["persisted"])
            # a second transaction, rolled back: the first one's rules come back
            policy2 = tmp_path / "open.toml"
            policy2.write_text('[defaults]\ninput = "accept"\n')
            rc, _, err = twinwall(ns, env, "policy", "apply", str(policy2), "--target", target,
                                  "--confirm-timeout", "120")
            assert rc == 0, err
            assert topo.probe("outside", topo.server_address("outside", IPV6), 22, "tcp", timeout=3).result == "open"
            rc, _, err = twinwall(ns, env, "rollback")
            assert rc == 0, err
            assert topo.probe("outside", topo.server_address("outside", IPV6), 22, "tcp",
                              timeout=2).result == "filtered"
        finally:
            twinwall(ns, env, "rollback")  # nothing pending: refused; pending: reverted, watchdog gone
