from __future__ import annotations

import io
import json

import pytest

from twinwall.cli import main
from twinwall.scan.compare import build_rows, join_audit
from twinwall.scan.engine import ProbeResult
from twinwall.scan.render import Progress, render_table, to_json
from twinwall.scan.targets import Target, TargetAddress

A4, A6 = "192.0.2.1", "2001:db8:5::1"


def scan_of(states):
    t = Target("web1", [TargetAddress("ipv4", A4, "literal"), TargetAddress("ipv6", A6, "literal")])
    results, probes = [], []
    for (proto, port), (s4, s6) in states.items():
        probes.append((proto, port))
        results.append(ProbeResult(proto, port, "ipv4", A4, s4, "r"))
        results.append(ProbeResult(proto, port, "ipv6", A6, s6, "r"))
    return [t], build_rows([t], probes, results)


STATES = {
    ("tcp", 22): ("open", "open"),
    ("tcp", 23): ("closed", "closed"),
    ("tcp", 24): ("filtered", "filtered"),
    ("tcp", 8080): ("filtered", "open"),
}


def test_json_document_shape():
    targets, rows = scan_of(STATES)
    doc = to_json(targets, rows, None, {"ports": "x"}, 1.5)
    assert doc["schema"] == "twinwall.scan/1"
    assert doc["targets"][0]["host"] == "web1"
    assert len(doc["results"]) == 4 and doc["disagreements"] == []
    assert doc["summary"]["gaps"] == 1 and doc["summary"]["exposures"] == 1
    first = doc["results"][0]
    assert set(first) == {"host", "protocol", "port", "ipv4", "ipv6", "gap", "exposed"}
    assert set(first["ipv4"]) == {"address", "state", "reason"}
    json.dumps(doc)


def test_table_hides_quiet_ports_and_marks_gaps():
    targets, rows = scan_of(STATES)
    text = render_table(targets, rows, None, 1.0)
    lines = [ln for ln in text.splitlines() if ln.startswith("  tcp/")]
    assert [ln.split()[0] for ln in lines] == ["tcp/22", "tcp/8080"]
    assert "GAP: filtered over IPv4, open over IPv6" in lines[1]
    assert "Not shown: 2 port(s)" in text
    assert f"IPv4 {A4}" in text and f"IPv6 {A6}" in text
    assert "\033[" not in text
    assert "1 family gap(s)" in text
    everything = render_table(targets, rows, None, 1.0, show_all=True)
    assert "tcp/23" in everything and "Not shown" not in everything


def test_not_shown_counts_ports_not_address_pairs():
    t = Target("web1", [TargetAddress("ipv4", A4, "literal"), TargetAddress("ipv4", "192.0.2.2", "literal"),
                        TargetAddress("ipv6", A6, "literal"), TargetAddress("ipv6", "2001:db8:5::2", "literal")])
    probes = [("tcp", 23), ("tcp", 24), ("tcp", 25)]
    results = [ProbeResult(p, port, a.family, a.address, "closed", "r") for p, port in probes for a in t.addresses]
    # tcp/25 differs on one pair only: shown, so not counted among the hidden
    results = [r for r in results if not (r.port == 25 and r.address == A6)]
    results.append(ProbeResult("tcp", 25, "ipv6", A6, "open", "syn-ack"))
    text = render_table([t], build_rows([t], probes, results), None, 1.0)
    assert "Not shown: 2 port(s) closed or filtered alike" in text, text


def test_table_colours_only_when_asked():
    targets, rows = scan_of(STATES)
    assert "\033[32m" in render_table(targets, rows, None, 1.0, colour=True)


def test_table_with_audit_column_and_disagreements():
    targets, rows = scan_of(STATES)
    audit = {"services": [{"protocol": "tcp", "address": "::", "port": 8080,
                           "ipv4": {"status": "filtered"}, "ipv6": {"status": "filtered"}},
                          {"protocol": "tcp", "address": "::", "port": 22,
                           "ipv4": {"status": "restricted"}, "ipv6": {"status": "open"}}]}
    dis = join_audit(rows, audit)
    text = render_table(targets, rows, dis, 1.0)
    line = next(ln for ln in text.splitlines() if ln.startswith("  tcp/8080"))
    assert "filtered/filtered" in line
    assert "DISAGREES (IPv6): audit said filtered, scan saw open" in line
    line22 = next(ln for ln in text.splitlines() if ln.startswith("  tcp/22"))
    assert "IPv4 restricted (depends on source)" in line22
    assert "1 disagreement(s) with the audit" in text


def test_progress_only_on_a_tty():
    quiet = io.StringIO()
    p = Progress(10000, stream=quiet)
    assert not p.enabled
    p(5000, 10000)
    p.finish()
    assert quiet.getvalue() == ""
    forced = io.StringIO()
    p = Progress(10000, stream=forced, enabled=True, delay=0.0)
    p(5000, 10000)
    p.finish()
    assert "5000/10000" in forced.getvalue()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["scan", "192.0.2.0/24"], "CIDR"),
        (["scan", "192.0.2.1", "--ports", "22,99999"], "outside 1-65535"),
        (["scan", "192.0.2.1", "--syn"], "not implemented"),
        (["scan", "192.0.2.1", "--ports", "from-snapshot"], "needs --snapshot"),
        (["scan"], "at least one HOST"),
        (["scan", "--snapshot", "/nonexistent/host.json"], "no such file"),
    ],
)
def test_cli_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("twinwall: ") and message in err and len(err.strip().splitlines()) == 1


def test_help_says_syn_is_not_implemented(capsys):
    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    out = capsys.readouterr().out
    assert "--syn" in out and "NOT IMPLEMENTED" in out and "exit codes" in out
