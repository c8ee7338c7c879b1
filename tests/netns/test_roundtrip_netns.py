"""What iptables-save prints back means to twinwall what was loaded (issue 10).

1. Round trip: every hand form of tests/unit/parsers/_iptables_forms.py is loaded with iptables-restore
   / ip6tables-restore (nft, and legacy where present) into a throw-away namespace, read back
   with iptables-save, and twinwall must give the printed form the meaning of the hand form; the
   nft forms must be the ones pinned in the table (iptables 1.8.9).
2. Real clients agree with the audit on the canonical --syn forms and on addrtype over a
   host's own addresses (LOCAL, not UNICAST).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import IPV4, IPV6, ListenerSpec, Topology, netns_exec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit" / "parsers"))
from _iptables_forms import FORMS, difference, restore_text, saved_rules

TOOLS = {IPV4: "iptables", IPV6: "ip6tables"}
VARIANTS = [v for v in ("nft", "legacy") if shutil.which(f"iptables-{v}-restore")]


def _pinned_version() -> bool:
    out = subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout
    return "v1.8.9" in out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("family", [IPV4, IPV6])
def test_saved_forms_mean_what_was_loaded(variant, family):
    ns = f"tw-rt-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        forms = [(n, f) for n, f in enumerate(FORMS) if f.family == family]
        tool = TOOLS[family]
        netns_exec(ns, f"{tool}-{variant}-restore", input=restore_text(family, forms))
        saved = saved_rules(netns_exec(ns, f"{tool}-{variant}-save").stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=30)
    problems = []
    for n, form in forms:
        printed = tuple(saved.get(n, ()))
        if not printed:
            problems.append(f"{form.hand}: nothing printed back")
            continue
        diff = difference(form, (form.hand,), printed)
        if diff:
            problems.append(f"{form.hand} -> {printed}: {diff}")
        if variant == "nft" and _pinned_version() and printed != form.canonical:
            problems.append(f"{form.hand}: printed {printed}, pinned {form.canonical}")
    assert not problems, "\n".join(problems)


V4 = """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp ! --syn -m conntrack --ctstate NEW -j DROP
-A INPUT -p tcp --dport 443 --syn -j DROP
-A INPUT -m addrtype --dst-type UNICAST -j DROP
-A INPUT -m addrtype ! --dst-type LOCAL --limit-iface-in -j DROP
-A INPUT -p tcp -j ACCEPT
COMMIT
"""
V6 = """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p ipv6-icmp -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp ! --syn -m conntrack --ctstate NEW -j DROP
-A INPUT -p tcp --dport 443 --syn -j DROP
-A INPUT -m addrtype ! --dst-type LOCAL --limit-iface-in -j DROP
-A INPUT -p tcp -j ACCEPT
COMMIT
"""
# what netfilter makes of them: "! --syn NEW" and "UNICAST" never match a new connection to the
# host's own address; "--syn" on 443 drops every one
EXPECTED = {22: "open", 443: "filtered"}


def test_clients_agree_on_syn_and_addrtype():
    with Topology() as topo:
        topo.load_iptables(v4_text=V4, v6_text=V6)
        topo.start_listeners([ListenerSpec("tcp", "::", p, v6only=False) for p in EXPECTED])
        for port, want in EXPECTED.items():
            for family in (IPV4, IPV6):
                for client in ("inside", "outside"):
                    r = topo.probe(client, topo.server_address(client, family), port, "tcp", timeout=3.0)
                    assert r.reachable == (want == "open"), (port, family, client, r)
        report = topo.audit_json()
        for port, want in EXPECTED.items():
            (svc,) = [s for s in report["services"] if s["protocol"] == "tcp" and s["port"] == port]
            for family in (IPV4, IPV6):
                assert svc[family]["status"] == want, (port, family, svc[family])
                assert not svc[family].get("uncertain"), svc[family]
