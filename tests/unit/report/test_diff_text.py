"""The diff's table: the rules that decided a verdict, a run of one chain's rules as one entry."""

from __future__ import annotations

from twinwall.analysis.context import build_contexts
from twinwall.analysis.diff.compare import diff_contexts
from twinwall.loader import load_rulesets
from twinwall.model import HostSnapshot, RulesetText
from twinwall.report.diff_text import render_diff


def _table(v4: str, v6: str) -> str:
    snap = HostSnapshot(sockets_known=False, interfaces=["lo", "eth0"])
    snap.rulesets = [
        RulesetText("ipv4", "iptables-save", "unknown", "v4", v4),
        RulesetText("ipv6", "iptables-save", "unknown", "v6", v6),
    ]
    return render_diff(diff_contexts(build_contexts(snap, load_rulesets(snap)), hooks=("input",)))


def _filter(rules: str) -> str:
    return f"*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n{rules}COMMIT\n"


def test_a_blocklist_is_one_entry_with_its_first_and_last_rule():
    drops = "".join(f"-A INPUT -s 203.0.113.{k}/32 -j DROP\n" for k in range(1, 26))
    accept = "-A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT\n"
    out = _table(_filter(drops + accept), _filter(accept))
    line = next(x for x in out.splitlines() if "dport 8080" in x and "from global" in x)
    assert ("drop by filter INPUT #1-#25 (25 rules: -A INPUT -s 203.0.113.1/32 -j DROP ... "
            "-A INPUT -s 203.0.113.25/32 -j DROP)") in line, line
    assert "accept by filter INPUT #26: -A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT" in line
    assert "more" not in line  # every rule of both verdicts is named (a run counts as one)
    # the IPv6 side: the accept alone
    assert line.endswith("IPv6: accept (filter INPUT #1: -A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT)")


def test_rules_past_the_third_entry_are_counted():
    # one address dropped in each of four chains: four entries for "drop", three named
    chains = "".join(f":{c} - [0:0]\n" for c in "ABCD")
    rules = "".join(f"-A INPUT -j {c}\n" for c in "ABCD")
    rules += "".join(f"-A {c} -s 198.51.100.{k}/32 -j DROP\n" for k, c in enumerate("ABCD", 1))
    accept = "-A INPUT -p tcp -j ACCEPT\n"
    out = _table(_filter(chains + rules + accept), _filter(accept))
    line = next(x for x in out.splitlines() if x.lstrip().startswith("tcp ") and "from global" in x)
    assert ("drop by filter A #1: -A A -s 198.51.100.1/32 -j DROP; filter B #1: -A B -s 198.51.100.2/32 -j DROP; "
            "filter C #1: -A C -s 198.51.100.3/32 -j DROP; ... 1 more") in line, line
