"""twinwall explain: the walk's verdict lines, --sport, --format json, the exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

FILTER = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n{}\nCOMMIT\n"
V4 = FILTER.format("-A INPUT -p tcp -m multiport --ports 3000 -j ACCEPT")
V6 = FILTER.format("-A INPUT -p tcp --dport 22 -j ACCEPT")
NAT = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
       "-A PREROUTING -p tcp --dport 2222 -j REDIRECT --to-ports 22\nCOMMIT\n") + FILTER.format(
    "-A INPUT -p tcp --dport 22 -j ACCEPT")


def explain(tmp_path, *args, v4=V4, v6=V6):
    (tmp_path / "v4").write_text(v4)
    (tmp_path / "v6").write_text(v6)
    return subprocess.run([sys.executable, "-m", "twinwall", "explain", *args, "--iptables", str(tmp_path / "v4"),
                           "--ip6tables", str(tmp_path / "v6")], capture_output=True, text=True)


def test_verdict_lines_name_the_source_port(tmp_path):
    proc = explain(tmp_path, "tcp/22", "--family", "ipv4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip("\n").splitlines()
    assert "    ACCEPT  any remote source from source port 3000" in lines
    assert "    DROP    any remote source from source port 0-2999,3001-65535" in lines
    assert lines[-1] == "  => tcp/22 is restricted over IPv4 for the packets asked about"


def test_sport_asks_about_one_source_port(tmp_path):
    proc = explain(tmp_path, "tcp/22", "--family", "ipv4", "--sport", "3000")
    assert "from any remote source, source port 3000" in proc.stdout.splitlines()[0]
    assert "=> tcp/22 is open over IPv4" in proc.stdout and "DROP" not in proc.stdout
    proc = explain(tmp_path, "tcp/22", "--family", "ipv4", "--sport", "3001")
    assert "=> tcp/22 is filtered over IPv4" in proc.stdout and "ACCEPT" not in proc.stdout.split("verdict:")[1]
    bad = explain(tmp_path, "tcp/22", "--sport", "70000")
    assert bad.returncode == 2 and "not a port number" in bad.stderr


def test_redirected_port_says_where_it_goes(tmp_path):
    proc = explain(tmp_path, "tcp/2222", "--family", "ipv4", v4=NAT)
    assert "    ACCEPT  any remote source (redirected to port 22)" in proc.stdout.splitlines()


def test_exit_1_when_the_families_differ(tmp_path):
    assert explain(tmp_path, "tcp/22").returncode == 1  # restricted over IPv4, open over IPv6
    assert explain(tmp_path, "tcp/22", "--sport", "3000").returncode == 0  # open over both
    assert explain(tmp_path, "tcp/80").returncode == 1  # restricted (source port 3000) / filtered
    assert explain(tmp_path, "tcp/80", "--sport", "1234").returncode == 0  # filtered over both
    assert explain(tmp_path, "tcp/22", "--family", "ipv4").returncode == 0


def test_json(tmp_path):
    proc = explain(tmp_path, "tcp/22", "--format", "json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert doc["schema"] == "twinwall.explain/1" and doc["protocol"] == "tcp" and doc["port"] == 22
    assert doc["families_differ"] is True
    v4, v6 = doc["families"]["ipv4"], doc["families"]["ipv6"]
    assert (v4["status"], v6["status"]) == ("restricted", "open")
    accept = next(r for r in v4["verdicts"] if r["verdict"] == "accept")
    assert accept["source_ports"] == "3000" and accept["port"] == "22" and accept["sources"] == ["0.0.0.0/0"]
    assert accept["decided_by"][0]["rule"] == "-A INPUT -p tcp -m multiport --ports 3000 -j ACCEPT"
    assert [s["rule_number"] for s in v4["steps"] if "rule_number" in s] == [2]
    assert v6["verdicts"][0]["source_ports"] == "*"


def test_a_blocklists_drops_read_as_one_verdict_group(tmp_path):
    # (the walk lists every drop the question matched; the verdict section names them as one run)
    drops = [f"-A INPUT -s 203.0.113.{n}/32 -j DROP" for n in range(1, 5)] + ["-A INPUT -s 198.51.100.10/32 -j DROP"]
    v4 = FILTER.format("\n".join(drops + ["-A INPUT -p tcp --dport 8080 -j ACCEPT"]))
    proc = explain(tmp_path, "tcp/8080", "--family", "ipv4", v4=v4)
    assert proc.returncode == 0, proc.stderr
    walk, verdicts = proc.stdout.split("  verdict:\n")
    assert all(d in walk for d in drops)
    assert verdicts.splitlines()[:2] == [
        "    DROP    198.51.100.10/32, 203.0.113.1/32, 203.0.113.2/31, 203.0.113.4/32 (5 sources)",
        "             by filter INPUT #2-#6 (5 rules: -A INPUT -s 203.0.113.1/32 -j DROP"
        " ... -A INPUT -s 198.51.100.10/32 -j DROP)"]
    assert verdicts.count("DROP  ") == 1 and "#3:" not in verdicts
    # two drops are two groups, as before; the JSON keeps one verdict per group
    two = explain(tmp_path, "tcp/8080", "--family", "ipv4", v4=FILTER.format("\n".join(
        drops[:2] + ["-A INPUT -p tcp --dport 8080 -j ACCEPT"]))).stdout.split("  verdict:\n")[1]
    assert "by filter INPUT #2: -A INPUT -s 203.0.113.1/32 -j DROP" in two and "#2-#3" not in two
    doc = json.loads(explain(tmp_path, "tcp/8080", "--family", "ipv4", "--format", "json", v4=v4).stdout)
    assert [r["decided_by"][0]["rule_number"] for r in doc["families"]["ipv4"]["verdicts"]] == [2, 3, 4, 5, 6, 7]
