"""`twinwall collect` on a real host: a network namespace with real listeners, addresses,
sysctls and rulesets loaded by the real restore tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

try:
    from . import _collect_helpers as h
except ImportError:  # tests/netns is not a package: pytest put this directory on sys.path
    import _collect_helpers as h

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="twinwall collect namespace tests need root (ip netns add)"
)

V4_RULES = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -s 203.0.113.0/24 -j DROP
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 8080 -m comment --comment tw-collect-v4 -j ACCEPT
-A INPUT -p udp -m udp --dport 5353 -j ACCEPT
COMMIT
"""

V6_RULES = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 8081 -m comment --comment tw-collect-v6 -j ACCEPT
COMMIT
"""

LEGACY_V4_RULES = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 8443 -m comment --comment tw-collect-legacy -j DROP
COMMIT
"""


def rule_lines(text: str) -> set:
    """Tables, chains with their policies, and rules; packet counters left out (the namespace
    itself may send a packet, e.g. an IPv6 router solicitation, before the dump)."""
    return {re.sub(r" \[\d+:\d+\]$", "", line) for line in text.splitlines() if line.startswith(("-A ", ":", "*"))}


def main_backend() -> str:
    out = subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout
    return "nft" if "(nf_tables)" in out else "legacy" if "(legacy)" in out else "unknown"


@pytest.fixture(scope="module")
def lab():
    with h.Lab() as lab:
        pids = {
            "dual": lab.listen("tcp", "::", 8080, v6only=0),
            "v6only": lab.listen("tcp", "::", 8081, v6only=1),
            "udp4": lab.listen("udp", "0.0.0.0", 5353),
            "loop6": lab.listen("tcp", "::1", 2525),
            "v4addr": lab.listen("tcp", "192.0.2.1", 8443),
        }
        lab.pids = pids
        lab.restore("iptables-restore", V4_RULES)
        lab.restore("ip6tables-restore", V6_RULES)
        yield lab


def test_collect_live_namespace(lab, tmp_path):
    doc = lab.collect(tmp_path / "host.json")
    assert doc["schema"] == "twinwall.snapshot/1"
    assert doc["missing"] == []
    assert doc["hostname"] and doc["kernel"] == os.uname().release
    assert doc["collected_at"].endswith("Z")

    # exactly the five listeners, with family / address / v6only / process / pid as bound
    got = {
        (s["protocol"], s["family"], s["address"], s["port"], s["v6only"], s["pid"])
        for s in doc["sockets"]
    }
    p = lab.pids
    assert got == {
        ("tcp", "ipv6", "::", 8080, False, p["dual"]),
        ("tcp", "ipv6", "::", 8081, True, p["v6only"]),
        ("udp", "ipv4", "0.0.0.0", 5353, None, p["udp4"]),
        # IPV6_V6ONLY was left at 0, but binding a specific IPv6 address sets it (inet6_bind)
        ("tcp", "ipv6", "::1", 2525, True, p["loop6"]),
        ("tcp", "ipv4", "192.0.2.1", 8443, None, p["v4addr"]),
    }
    for s in doc["sockets"]:
        assert s["process"] == h.comm(s["pid"]), s
        assert s["uid"] == 0 and s["interface"] is None

    # addresses and interfaces
    addrs = {(a["interface"], a["family"], a["address"], a["prefixlen"], a["scope"])
             for a in doc["addresses"]}
    assert {
        ("lo", "ipv4", "127.0.0.1", 8, "host"),
        ("lo", "ipv6", "::1", 128, "host"),
        (lab.dev, "ipv4", "192.0.2.1", 24, "global"),
        (lab.dev, "ipv6", "2001:db8:1::1", 64, "global"),
    } <= addrs
    assert all(a[4] == "link" for a in addrs if a[2].startswith("fe80:"))
    assert doc["addresses_known"] is True
    assert sorted(doc["interfaces"]) == sorted(["lo", lab.dev])

    # IPv6 on, with the evidence
    ev = doc["ipv6"]["evidence"]
    assert doc["ipv6"]["enabled"] is True
    for fact in ("net.ipv6.conf.all.disable_ipv6 = 0", "net.ipv6.conf.default.disable_ipv6 = 0",
                 f"net.ipv6.conf.{lab.dev}.disable_ipv6 = 0", "net.ipv6.conf.lo.disable_ipv6 = 0"):
        assert fact in ev
    assert any(line.startswith("ipv6.disable = 0") for line in ev)
    assert any(f"2001:db8:1::1 ({lab.dev})" in line for line in ev)

    # both rulesets, as loaded, from the main backend; no legacy dump when none is loaded
    backend = main_backend()
    rs = {(r["family"], r["source"]): r for r in doc["rulesets"]}
    assert set(rs) == {("ipv4", "iptables-save"), ("ipv6", "ip6tables-save")}
    for r in rs.values():
        assert r["format"] == "iptables-save" and r["backend"] == backend
    assert rule_lines(V4_RULES) <= rule_lines(rs[("ipv4", "iptables-save")]["text"])
    assert rule_lines(V6_RULES) <= rule_lines(rs[("ipv6", "ip6tables-save")]["text"])
    assert "tw-collect-v6" not in rs[("ipv4", "iptables-save")]["text"]


def test_snapshot_reads_back(lab, tmp_path):
    from twinwall.sources.snapshot import read_snapshot

    path = tmp_path / "host.json"
    doc = lab.collect(path)
    snap = read_snapshot(str(path))
    assert len(snap.sockets) == len(doc["sockets"]) == 5
    dual = [s for s in snap.sockets if s.port == 8080][0]
    assert dual.accepts_family("ipv4") and dual.accepts_family("ipv6")
    only6 = [s for s in snap.sockets if s.port == 8081][0]
    assert not only6.accepts_family("ipv4")


def test_collect_no_rules_to_stdout(lab):
    res = lab.twinwall("collect", "--no-rules")
    assert res.stderr == ""  # no summary when writing to stdout
    doc = json.loads(res.stdout)
    assert doc["rulesets"] == []
    assert doc["missing"] == ["rulesets: not collected (twinwall collect --no-rules)"]
    assert len(doc["sockets"]) == 5


def _nobody_python(lab):
    """An interpreter + environment that uid 65534 can run twinwall with, or skip."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run collect as a non-root user")
    for python, env in ((os.path.realpath(sys.executable), h.env_with_src()),
                        ("/usr/bin/python3", h.env_with_src())):
        probe = subprocess.run(["ip", "netns", "exec", lab.ns] + prefix + [python, "-c", "import twinwall"],
                               capture_output=True, text=True, env=env)
        if probe.returncode == 0:
            return prefix, python, env
    pytest.skip("no Python interpreter and twinwall source readable by uid 65534 here")


def test_collect_without_root_says_what_is_missing(lab):
    prefix, python, env = _nobody_python(lab)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        out = Path(tmp) / "host.json"
        res = lab.twinwall("collect", "-o", str(out), prefix=prefix, python=python, env=env, check=False)
        doc = json.loads(out.read_text())
    # the snapshot is written, but a script must not take it for the host's whole story
    assert res.returncode == 2, res.stderr
    reason = res.stderr.strip().splitlines()[-1]
    assert reason.startswith("twinwall: incomplete snapshot, not run as root (") and "sudo twinwall collect" in reason
    assert "Traceback" not in res.stderr
    missing = doc["missing"]
    assert "iptables-save: Permission denied (you need root to read the ruleset)" in missing
    assert "ip6tables-save: Permission denied (you need root to read the ruleset)" in missing
    assert "process names: not visible without root (ss -p shows only your own processes)" in missing
    assert doc["rulesets"] == []
    # what is readable is still there: every socket (without the root-owned process), addresses, IPv6
    assert {s["port"] for s in doc["sockets"]} == {8080, 8081, 5353, 2525, 8443}
    assert all(s["process"] is None and s["pid"] is None for s in doc["sockets"])
    assert ("twc0", "ipv4", "192.0.2.1") in {(a["interface"], a["family"], a["address"]) for a in doc["addresses"]}
    assert doc["ipv6"]["enabled"] is True
    assert "iptables-save: Permission denied" in res.stderr


def test_ipv6_disabled_by_sysctl_in_namespace(tmp_path):
    with h.Lab() as lab:
        h.nsexec(lab.ns, "sysctl", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        h.nsexec(lab.ns, "sysctl", "-w", "net.ipv6.conf.default.disable_ipv6=1")
        doc = lab.collect(tmp_path / "host.json")
    ipv6 = doc["ipv6"]
    assert ipv6["enabled"] is False
    assert "net.ipv6.conf.all.disable_ipv6 = 1" in ipv6["evidence"]
    assert "net.ipv6.conf.default.disable_ipv6 = 1" in ipv6["evidence"]
    assert all(a["family"] == "ipv4" or a["scope"] != "global" for a in doc["addresses"])
    assert "no IPv6 address other than loopback and link-local" in ipv6["evidence"]


def test_only_all_disabled_is_not_disabled(tmp_path):
    """The CIS check needs both all and default at 1: all alone leaves IPv6 enabled."""
    with h.Lab() as lab:
        h.nsexec(lab.ns, "sysctl", "-w", "net.ipv6.conf.default.disable_ipv6=1")
        doc = lab.collect(tmp_path / "host.json")
    assert doc["ipv6"]["enabled"] is True
    assert "net.ipv6.conf.default.disable_ipv6 = 1" in doc["ipv6"]["evidence"]
    assert "net.ipv6.conf.all.disable_ipv6 = 0" in doc["ipv6"]["evidence"]


def test_legacy_tables_loaded_next_to_nft(tmp_path):
    if main_backend() != "nft" or shutil.which("iptables-legacy-restore") is None:
        pytest.skip("needs iptables-nft as the main iptables and iptables-legacy-restore")
    with h.Lab() as lab:
        lab.restore("iptables-restore", V4_RULES)
        lab.restore("iptables-legacy-restore", LEGACY_V4_RULES)
        doc = lab.collect(tmp_path / "host.json")
    v4 = [r for r in doc["rulesets"] if r["family"] == "ipv4"]
    assert [(r["source"], r["backend"]) for r in v4] == [
        ("iptables-save", "nft"), ("iptables-legacy-save", "legacy")]
    assert rule_lines(V4_RULES) <= rule_lines(v4[0]["text"])
    assert "tw-collect-legacy" not in v4[0]["text"]
    assert rule_lines(LEGACY_V4_RULES) <= rule_lines(v4[1]["text"])
    # no ip6tables legacy tables were loaded: none collected
    assert [(r["source"], r["backend"]) for r in doc["rulesets"] if r["family"] == "ipv6"] == [
        ("ip6tables-save", "nft")]


FORWARD_ACCEPT = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n"


@pytest.mark.parametrize("forward", [0, 1])
def test_forwarding_sysctls_are_collected_and_decide_the_forward_findings(tmp_path, forward):
    """An empty FORWARD with policy ACCEPT matters only where the namespace forwards."""
    with h.Lab() as lab:
        h.nsexec(lab.ns, "sysctl", "-q", "-w", f"net.ipv4.ip_forward={forward}",
                 f"net.ipv6.conf.all.forwarding={forward}", f"net.ipv4.conf.{lab.dev}.route_localnet=1")
        lab.restore("iptables-restore", FORWARD_ACCEPT)
        lab.restore("ip6tables-restore", FORWARD_ACCEPT)
        doc = lab.collect(tmp_path / "host.json")
        res = lab.twinwall("audit", "--snapshot", str(tmp_path / "host.json"), "--format", "json", check=False)
    sysctls = doc["sysctls"]
    assert sysctls["net.ipv4.ip_forward"] == str(forward)
    assert sysctls["net.ipv6.conf.all.forwarding"] == str(forward)
    assert sysctls[f"net.ipv4.conf.{lab.dev}.route_localnet"] == "1"
    assert "net.ipv4.conf.all.rp_filter" in sysctls
    findings = json.loads(res.stdout)["findings"]
    forward_findings = [f for f in findings if f["id"] == "TW-NO-DEFAULT-DENY" and f["hook"] == "forward"]
    assert sorted(f["family"] for f in forward_findings) == (["ipv4", "ipv6"] if forward else [])
    spoof = [f for f in findings if f["id"] == "TW-SPOOFED-LOOPBACK" and f["family"] == "ipv4"]
    # INPUT DROP turns loopback sources away anyway: no finding, whatever route_localnet says
    assert spoof == []
