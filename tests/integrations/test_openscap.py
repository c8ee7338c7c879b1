"""OpenSCAP runs twinwall: `oscap xccdf eval --results-arf --report` with integrations/openscap's
benchmark, inside a namespace host whose IPv4 firewall denies by default and whose IPv6 one
does not. CIS 4.4.2.1 (iptables default deny) must pass, 4.4.3.1 (ip6tables default deny) must
fail, and the ARF results and HTML report must carry twinwall's finding and the deciding policy."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import require_tools
from fleet_lab import FleetLab
from harness import ListenerSpec

REPO = Path(__file__).resolve().parents[2]
BENCHMARK = REPO / "integrations" / "openscap" / "twinwall-xccdf.xml"
XCCDF = "{http://checklists.nist.gov/xccdf/1.2}"

V4 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -s 127.0.0.0/8 ! -i lo -j DROP
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -m conntrack --ctstate NEW,RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""
V6 = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n"

TAILORING = """<?xml version="1.0" encoding="UTF-8"?>
<xccdf:Tailoring xmlns:xccdf="http://checklists.nist.gov/xccdf/1.2" id="xccdf_org.twinwall_tailoring_test">
  <xccdf:version time="2026-01-01T00:00:00">1</xccdf:version>
  <xccdf:Profile id="xccdf_org.twinwall_profile_test" extends="xccdf_org.twinwall_profile_cis">
    <xccdf:title>twinwall test</xccdf:title>
    <xccdf:set-value idref="xccdf_org.twinwall_value_command">{command}</xccdf:set-value>
  </xccdf:Profile>
</xccdf:Tailoring>
"""


def test_benchmark_is_current_and_valid() -> None:
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "build_openscap.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    require_tools("oscap")
    valid = subprocess.run(["oscap", "xccdf", "validate", str(BENCHMARK)], capture_output=True, text=True)
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_oscap_eval_includes_twinwalls_results(tmp_path: Path) -> None:
    require_tools("oscap")
    tailoring = tmp_path / "tailoring.xml"
    # oscap gives the check a bare environment: twinwall by absolute path
    tailoring.write_text(TAILORING.format(command=f"{sys.executable} -m twinwall"))
    arf, report = tmp_path / "arf.xml", tmp_path / "report.html"
    with FleetLab(["scap"]) as lab:
        lab.load_iptables("scap", V4, V6)
        lab.listen("scap", [ListenerSpec("tcp", "::", 22, v6only=False)])
        run = subprocess.run(
            ["ip", "netns", "exec", lab.ns["scap"], "oscap", "xccdf", "eval", "--tailoring-file", str(tailoring),
             "--profile", "xccdf_org.twinwall_profile_test", "--results-arf", str(arf), "--report", str(report),
             str(BENCHMARK)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr  # 2: evaluated, some rule failed
    results = {}
    outputs = {}
    for rr in ET.parse(arf).iter(f"{XCCDF}rule-result"):
        control = rr.get("idref").rsplit("_", 1)[1]
        results[control] = rr.find(f"{XCCDF}result").text
        outputs[control] = "".join(e.text or "" for e in rr.iter(f"{XCCDF}check-import"))
    assert results["4.4.2.1"] == "pass", outputs["4.4.2.1"]
    assert results["4.4.3.1"] == "fail", outputs["4.4.3.1"]
    assert results["4.4.3.4"] == "fail"  # [::]:22 reachable over IPv6 only by the ACCEPT policy
    assert results["4.4.2.4"] == "pass"
    assert "TW-NO-DEFAULT-DENY IPv6" in outputs["4.4.3.1"] and "INPUT policy ACCEPT" in outputs["4.4.3.1"]
    assert len(results) == 8 and set(results.values()) <= {"pass", "fail"}, results
    html = report.read_text()
    assert "CIS 4.4.3.1 Ensure ip6tables default deny firewall policy" in html and "TW-NO-DEFAULT-DENY" in html
