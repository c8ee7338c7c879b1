"""`twinwall fix` on a ufw host: real ufw in a test namespace with a private copy of its
configuration (see test_ufw_netns.py); the plan is ufw commands, predicted by ufw itself in a
scratch namespace; run with ufw in the test namespace, real clients agree with the audit after."""

from __future__ import annotations

import json
import sys

import pytest

import harness
from harness import IPV4, IPV6, ListenerSpec, Topology, netns_exec
from test_fix_netns import agree
from test_ufw_netns import _PRIVATE_UFW, MACHINE_FILES, PrivateUfw, _digest, _skip_reason


def in_private_ufw(ufw: PrivateUfw, *argv: str):
    assert ufw.tmp is not None
    return netns_exec(ufw.ns, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _PRIVATE_UFW, "sh",
                      str(ufw.tmp / "etc-ufw"), str(ufw.tmp / "default-ufw"), str(ufw.tmp / "lib-ufw"), *argv,
                      check=False, timeout=300, env=harness._twinwall_env())


def fix(ufw: PrivateUfw, *args: str):
    res = in_private_ufw(ufw, sys.executable, "-m", "twinwall", "fix", "--format", "json", *args)
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout)


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_ufw_gap_mirrored_with_ufw_commands(topology: Topology) -> None:
    machine = _digest(MACHINE_FILES)
    with PrivateUfw(topology.server, ipv6=True) as ufw:
        ufw("--force", "enable")
        ufw("allow", "from", "192.0.2.0/24", "to", "any", "port", "22", "proto", "tcp")
        ufw("allow", "proto", "tcp", "from", "::/0", "to", "any", "port", "22")
        topology.start_listeners([ListenerSpec("tcp", "::", 22, v6only=False)])
        before = topology.audit_json()
        assert any(f["id"] == "TW-FAMILY-GAP" and f["family"] == IPV6 for f in before["findings"])
        args = ("--finding", "TW-FAMILY-GAP", "--map", "192.0.2.0/24=2001:db8:a::/64")
        rc, doc = fix(ufw, *args)
        assert rc == 1 and not doc["refused"], doc["refused"]
        assert {c["owner"] for c in doc["changes"]} == {"ufw"}
        cmds = doc["candidate"]["commands"]
        assert cmds and all(c[0] == "ufw" for c in cmds)
        assert any("2001:db8:a::/64" in c for c in cmds) and not any("192.0.2.0/24" in c for c in cmds)
        for c in cmds:
            ufw(*c[1:])
        after = topology.audit_json()
        st = agree(topology, after, [("tcp", 22)])
        assert st[("tcp", 22, IPV6)] == "restricted" and st[("tcp", 22, IPV4)] == "restricted"
        assert not any(f["id"] == "TW-FAMILY-GAP" for f in after["findings"])
        rc, again = fix(ufw, *args)
        assert rc == 0 and not again["changes"]
    assert _digest(MACHINE_FILES) == machine, "the machine's own ufw files changed"


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_ufw_ipv6_no_refuses_ipv6_changes(topology: Topology) -> None:
    with PrivateUfw(topology.server, ipv6=False) as ufw:
        ufw("--force", "enable")
        ufw("allow", "80/tcp")
        topology.start_listeners([ListenerSpec("tcp", "::", 80, v6only=False)])
        # the gap is IPv4-wide here (IPv6 dropped by ufw): mirror would close IPv4; accept-new has nothing
        rc, doc = fix(ufw, "--finding", "TW-FAMILY-GAP", "--strategy", "close")
        assert all(c["family"] == IPV4 for c in doc["changes"])
