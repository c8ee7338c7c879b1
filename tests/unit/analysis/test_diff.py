"""twinwall diff: regions where IPv4 and IPv6 verdicts differ, on hand-written rulesets."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from typing import Dict, List, Optional

from _snapshots import dump_snapshot
from twinwall import cli
from twinwall.analysis.context import build_contexts
from twinwall.analysis.diff.compare import diff_contexts, egress_forward_differences
from twinwall.analysis.diff.describe import inline_citations
from twinwall.loader import load_rulesets
from twinwall.model import HostSnapshot, InterfaceAddress, ListeningSocket, RulesetText
from twinwall.sources.snapshot import write_snapshot

EMPTY_FILTER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"""


def filt(rules: str, input_policy: str = "ACCEPT", forward: str = "ACCEPT", output: str = "ACCEPT") -> str:
    body = "\n".join(line.strip() for line in rules.strip().splitlines() if line.strip())
    return (
        f"*filter\n:INPUT {input_policy} [0:0]\n:FORWARD {forward} [0:0]\n:OUTPUT {output} [0:0]\n"
        + (body + "\n" if body else "")
        + "COMMIT\n"
    )


def snapshot(v4: str, v6: str, addresses: Optional[List[InterfaceAddress]] = None) -> HostSnapshot:
    return dump_snapshot(v4, v6, addresses=addresses or None, ipv6=None, backend="unknown")


def diff(v4: str, v6: str, hooks=("input", "forward", "output"), addresses=None) -> Dict:
    """The diff document, its citations inlined (each region's decided_by spelled in full)."""
    snap = snapshot(v4, v6, addresses)
    contexts = build_contexts(snap, load_rulesets(snap))
    return inline_citations(diff_contexts(contexts, hooks).to_json())


def cited(region: Dict, side: str) -> str:
    """The texts of the rules a side of an (inlined) region cites."""
    return "; ".join(str(c.get("rule") or c.get("policy")) for c in region[f"{side}_decided_by"])


def inside(ranges, value: int) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


def run_cli(args: List[str], tmp_path, v4: Optional[str] = None, v6: Optional[str] = None):
    argv = ["diff"]
    if v4 is not None:
        p = tmp_path / "v4.rules"
        p.write_text(v4)
        argv += ["--iptables", str(p)]
    if v6 is not None:
        p = tmp_path / "v6.rules"
        p.write_text(v6)
        argv += ["--ip6tables", str(p)]
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli.main(argv + args)
    return rc, out.getvalue()


SEED_V4 = filt(
    """
    -A OUTPUT -p tcp -m tcp --dport 25 -m owner --uid-owner 1000 -j ACCEPT
    -A OUTPUT -p tcp -m tcp --dport 25 -j DROP
    """
)


def test_seed_story_reports_exactly_the_uncovered_region():
    doc = diff(SEED_V4, EMPTY_FILTER)
    assert len(doc["differences"]) == 1, doc["differences"]
    d = doc["differences"][0]
    assert d["hook"] == "output"
    assert d["protocol"] == "tcp"
    assert d["dports"] == [[25, 25]]
    assert d["sports"] == [[0, 65535]]
    assert d["uid"] == [[0, 999], [1001, 4294967295]]
    assert d["ipv4"] == "drop" and d["ipv6"] == "accept"
    assert "--dport 25 -j DROP" in d["ipv4_rule"]
    assert "policy ACCEPT" in d["ipv6_rule"]
    assert d["src"] == ["*"] and d["dst"] == ["*"]
    assert doc["not_comparable"] == []


def test_seed_story_with_default_drop_egress():
    # the blog's actual rules: everything else dropped too, over IPv4 only
    v4 = filt(
        """
        -A OUTPUT -p tcp -m tcp --dport 25 -m owner --uid-owner 1000 -j ACCEPT
        -A OUTPUT -j DROP
        """
    )
    doc = diff(v4, EMPTY_FILTER, hooks=("output",))
    diffs = doc["differences"]
    # everything but (tcp/25 as uid 1000) differs: tcp/25 other uids, tcp other ports, other protocols
    assert all(d["ipv4"] == "drop" and d["ipv6"] == "accept" for d in diffs)
    def hit(port: int, uid: int) -> bool:
        return any(
            d["protocol"] in ("tcp", "any") and inside(d["dports"], port) and inside(d["uid"], uid) for d in diffs
        )

    assert hit(25, 33) and hit(80, 1000) and hit(80, 0)
    assert not hit(25, 1000)  # the one thing IPv4 lets out
    assert any(d["protocol"] == "any but tcp" for d in diffs)
    # merged into few regions, not one per port
    assert len(diffs) == 3, diffs


def test_identical_twins_have_no_difference():
    v4 = filt(
        """
        -A INPUT -i lo -j ACCEPT
        -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
        -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT
        -A INPUT -p icmp -m icmp --icmp-type echo-request -j ACCEPT
        -A OUTPUT -p tcp --dport 25 -m owner --uid-owner 1000 -j ACCEPT
        -A OUTPUT -p tcp --dport 25 -j REJECT
        """,
        input_policy="DROP",
    )
    v6 = filt(
        """
        -A INPUT -i lo -j ACCEPT
        -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
        -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT
        -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -j ACCEPT
        -A OUTPUT -p tcp --dport 25 -m owner --uid-owner 1000 -j ACCEPT
        -A OUTPUT -p tcp --dport 25 -j REJECT
        """,
        input_policy="DROP",
    )
    doc = diff(v4, v6)
    assert doc["differences"] == []
    assert doc["not_comparable"] == []


def test_icmp_types_are_mapped_between_families():
    v4 = filt(
        """
        -A INPUT -p icmp --icmp-type echo-request -j ACCEPT
        -A INPUT -p icmp --icmp-type destination-unreachable -j ACCEPT
        -A INPUT -p icmp --icmp-type time-exceeded -j ACCEPT
        -A INPUT -p icmp --icmp-type parameter-problem -j ACCEPT
        """,
        input_policy="DROP",
    )
    v6 = filt(
        """
        -A INPUT -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT
        -A INPUT -p ipv6-icmp --icmpv6-type destination-unreachable -j ACCEPT
        -A INPUT -p ipv6-icmp --icmpv6-type packet-too-big -j ACCEPT
        -A INPUT -p ipv6-icmp --icmpv6-type time-exceeded -j ACCEPT
        -A INPUT -p ipv6-icmp --icmpv6-type neighbour-solicitation -j ACCEPT
        -A INPUT -p ipv6-icmp --icmpv6-type neighbour-advertisement -j ACCEPT
        """,
        input_policy="DROP",
    )
    doc = diff(v4, v6, hooks=("input",))
    types = {t for d in doc["differences"] for t in d["icmp_type"]}
    # parameter-problem: accepted over IPv4 only; echo, unreachable, time-exceeded are twins.
    # packet-too-big is the twin of IPv4's fragmentation-needed (3/4), which the
    # destination-unreachable rule accepts: no difference either.
    assert types == {"parameter-problem"}, doc["differences"]
    d = doc["differences"][0]
    assert d["protocol"] == "icmp" and d["ipv4"] == "accept" and d["ipv6"] == "drop"
    # neighbour discovery is classified, not a gap
    ndp = [o for o in doc["ipv6_only"] if o["class"] == "ndp"]
    assert ndp
    accepted = {t for o in ndp if o["ipv6"] == "accept" for t in o["icmp_type"]}
    assert accepted == {"ipv6:neighbour-solicitation", "ipv6:neighbour-advertisement"}


def test_fragmentation_needed_twins_packet_too_big():
    v4 = filt("-A INPUT -p icmp --icmp-type fragmentation-needed -j ACCEPT", input_policy="DROP")
    v6 = filt("", input_policy="DROP")
    doc = diff(v4, v6, hooks=("input",))
    assert [d["icmp_type"] for d in doc["differences"]] == [["fragmentation-needed/packet-too-big"]]
    v6 = filt("-A INPUT -p ipv6-icmp --icmpv6-type packet-too-big -j ACCEPT", input_policy="DROP")
    assert diff(v4, v6, hooks=("input",))["differences"] == []


def test_address_specific_rule_is_mixed_and_named():
    v4 = filt("-A INPUT -s 198.51.100.0/24 -p tcp --dport 22 -j ACCEPT", input_policy="DROP")
    v6 = filt("", input_policy="DROP")
    doc = diff(v4, v6, hooks=("input",))
    d = [x for x in doc["differences"] if x["dports"] == [[22, 22]]]
    assert len(d) == 1
    assert d[0]["ipv4"] == "mixed" and d[0]["ipv6"] == "drop"
    assert d[0]["ipv4_verdicts"] == ["accept", "drop"]
    assert "-s 198.51.100.0/24" in cited(d[0], "ipv4")
    assert d[0]["src"] == ["global"]


def test_prefixes_on_both_sides_are_not_comparable_never_dropped():
    v4 = filt("-A INPUT -s 198.51.100.0/24 -p tcp --dport 22 -j ACCEPT", input_policy="DROP")
    v6 = filt("-A INPUT -s 2001:db8:b::/64 -p tcp --dport 22 -j ACCEPT", input_policy="DROP")
    doc = diff(v4, v6, hooks=("input",))
    assert doc["differences"] == []
    nc = doc["not_comparable"]
    assert len(nc) == 1
    assert nc[0]["dports"] == [[22, 22]]
    assert "198.51.100.0/24" in cited(nc[0], "ipv4") and "2001:db8:b::/64" in cited(nc[0], "ipv6")


def test_loopback_role_is_compared_exactly():
    v4 = filt("-A INPUT -s 127.0.0.0/8 -j ACCEPT", input_policy="DROP")
    v6 = filt("-A INPUT -s ::1/128 -j ACCEPT", input_policy="DROP")
    assert diff(v4, v6, hooks=("input",))["differences"] == []
    v6 = filt("", input_policy="DROP")
    diffs = diff(v4, v6, hooks=("input",))["differences"]
    assert diffs and all(d["src"] == ["loopback"] for d in diffs)
    assert all(d["ipv4"] == "accept" and d["ipv6"] == "drop" for d in diffs)


def test_port_ranges_are_merged_per_rule():
    v4 = filt(
        """
        -A INPUT -p tcp --dport 1000:1500 -j DROP
        -A INPUT -p tcp --dport 1501:2000 -j DROP
        -A INPUT -p udp -m multiport --dports 53,123,5353 -j DROP
        """
    )
    doc = diff(v4, EMPTY_FILTER, hooks=("input",))
    by_proto = {}
    for d in doc["differences"]:
        by_proto.setdefault(d["protocol"], []).append(d["dports"])
    assert sorted(by_proto["tcp"]) == [[[1000, 1500]], [[1501, 2000]]]  # two rules, two regions
    assert by_proto["udp"] == [[[53, 53], [123, 123], [5353, 5353]]]  # one rule, one region


def test_nat_redirect_changes_what_input_sees():
    v4 = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        "-A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 80\nCOMMIT\n"
        + filt("-A INPUT -p tcp --dport 80 -j ACCEPT", input_policy="DROP")
    )
    v6 = filt("-A INPUT -p tcp --dport 80 -j ACCEPT", input_policy="DROP")
    doc = diff(v4, v6, hooks=("input",))
    tcp = [d for d in doc["differences"] if d["protocol"] == "tcp"]
    assert len(tcp) == 1
    assert tcp[0]["dports"] == [[8080, 8080]]
    assert tcp[0]["state"] == ["NEW"]  # nat sees only a connection's first packet
    assert tcp[0]["ipv4"] == "accept" and tcp[0]["ipv6"] == "drop"


def test_notrack_keeps_the_state_packets_were_sent_in():
    v4 = (
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p udp --dport 53 -j NOTRACK\nCOMMIT\n"
        + filt(
            """
            -A INPUT -m state --state ESTABLISHED,RELATED,UNTRACKED -j ACCEPT
            """,
            input_policy="DROP",
        )
    )
    v6 = filt("-A INPUT -m state --state ESTABLISHED,RELATED,UNTRACKED -j ACCEPT", input_policy="DROP")
    doc = diff(v4, v6, hooks=("input",))
    assert len(doc["differences"]) == 1
    d = doc["differences"][0]
    assert d["protocol"] == "udp" and d["dports"] == [[53, 53]]
    # sent as NEW (or as what conntrack would call INVALID), untracked by raw: accepted over
    # IPv4 only (a packet NOTRACK untracked gets no INVALID state either; the ESTABLISHED ones
    # are untracked too, and accepted by both)
    assert d["state"] == ["NEW", "INVALID"]
    assert d["ipv4"] == "accept" and d["ipv6"] == "drop"


def test_raw_chains_see_every_packet_invalid():
    # before conntrack (raw) every packet's state is INVALID: this rule drops all udp/53
    v4 = (
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        "-A PREROUTING -p udp --dport 53 -m state --state INVALID -j DROP\nCOMMIT\n"
        + filt("-A INPUT -p udp --dport 53 -j ACCEPT", input_policy="DROP")
    )
    v6 = filt("-A INPUT -p udp --dport 53 -j ACCEPT", input_policy="DROP")
    doc = diff(v4, v6, hooks=("input",))
    (d,) = doc["differences"]
    assert d["protocol"] == "udp" and d["dports"] == [[53, 53]]
    assert d["state"] == ["NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED"]  # (not only INVALID)
    assert d["ipv4"] == "drop" and d["ipv6"] == "accept"
    assert d["ipv4_rule"].startswith("raw PREROUTING #1")


def test_forward_and_interfaces():
    v4 = filt("-A FORWARD -i eth0 -o eth1 -j ACCEPT", forward="DROP")
    v6 = filt("", forward="DROP")
    doc = diff(v4, v6, hooks=("forward",))
    assert len(doc["differences"]) == 1
    d = doc["differences"][0]
    assert d["iif"] == ["eth0"] and d["oif"] == ["eth1"]
    assert d["ipv4"] == "accept" and d["ipv6"] == "drop"


def test_host_addresses_role_when_known():
    addrs = [
        InterfaceAddress("lo", "ipv4", "127.0.0.1", 8, "host"),
        InterfaceAddress("lo", "ipv6", "::1", 128, "host"),
        InterfaceAddress("eth0", "ipv4", "192.0.2.1", 24, "global"),
        InterfaceAddress("eth0", "ipv6", "2001:db8:a::1", 64, "global"),
    ]
    v4 = filt("-A INPUT -d 192.0.2.1 -p tcp --dport 80 -j ACCEPT", input_policy="DROP")
    v6 = filt("-A INPUT -d 2001:db8:a::1 -p tcp --dport 80 -j ACCEPT", input_policy="DROP")
    # the host's own address is a role: the rules are twins
    assert diff(v4, v6, hooks=("input",), addresses=addrs)["differences"] == []
    v6 = filt("", input_policy="DROP")
    diffs = diff(v4, v6, hooks=("input",), addresses=addrs)["differences"]
    assert len(diffs) == 1 and diffs[0]["dst"] == ["host"] and diffs[0]["ipv4"] == "accept"


def test_undecidable_match_gives_mixed():
    v4 = filt("-A INPUT -p tcp --dport 22 -m recent --update --seconds 60 --hitcount 4 -j DROP")
    doc = diff(v4, EMPTY_FILTER, hooks=("input",))
    assert len(doc["differences"]) == 1
    assert doc["differences"][0]["ipv4"] == "mixed"
    assert doc["differences"][0]["ipv4_verdicts"] == ["accept", "drop"]


def test_egress_forward_differences_summary():
    snap = snapshot(SEED_V4, EMPTY_FILTER)
    contexts = build_contexts(snap, load_rulesets(snap))
    lines = egress_forward_differences(contexts)
    assert len(lines) == 1
    assert lines[0].startswith("output") and "dport 25" in lines[0] and "IPv4 drop" in lines[0]
    snap = snapshot(EMPTY_FILTER, EMPTY_FILTER)
    assert egress_forward_differences(build_contexts(snap, load_rulesets(snap))) == []
    # a family without rules: nothing to compare
    snap = snapshot(SEED_V4, EMPTY_FILTER)
    snap.rulesets = snap.rulesets[:1]
    assert egress_forward_differences(build_contexts(snap, load_rulesets(snap))) == []


def test_egress_forward_differences_do_the_callers_work_alongside_once():
    calls = []
    snap = snapshot(SEED_V4, EMPTY_FILTER)
    contexts = build_contexts(snap, load_rulesets(snap))
    assert egress_forward_differences(contexts, alongside=lambda: calls.append("work")) == egress_forward_differences(contexts)
    assert calls == ["work"]
    # nothing to compare: the work is done all the same
    snap.rulesets = snap.rulesets[:1]
    assert egress_forward_differences(build_contexts(snap, load_rulesets(snap)), alongside=lambda: calls.append("again")) == []
    assert calls == ["work", "again"]


# ---------------------------------------------------------------------------------------------
# the command


def test_cli_exit_codes_and_table(tmp_path):
    rc, out = run_cli([], tmp_path, SEED_V4, EMPTY_FILTER)
    assert rc == 1
    assert "output:" in out and "tcp dport 25 uid !1000" in out
    assert "IPv4: drop (filter OUTPUT #2:" in out and "IPv6: accept (filter OUTPUT policy ACCEPT)" in out
    rc, out = run_cli([], tmp_path, EMPTY_FILTER, EMPTY_FILTER)
    assert rc == 0 and "alike" in out


def test_cli_json_contract(tmp_path):
    rc, out = run_cli(["--format", "json", "--hook", "output"], tmp_path, SEED_V4, EMPTY_FILTER)
    assert rc == 1
    doc = json.loads(out)
    assert set(doc) >= {"differences", "not_comparable"}
    d = doc["differences"][0]
    for key in ("hook", "protocol", "dports", "sports", "state", "iif", "oif", "uid", "icmp_type", "ipv4", "ipv6",
                "ipv4_rule", "ipv6_rule"):
        assert key in d
    assert d["ipv4"] in ("accept", "drop", "reject", "mixed")


def test_cli_hook_filter(tmp_path):
    rc, out = run_cli(["--format", "json", "--hook", "input"], tmp_path, SEED_V4, EMPTY_FILTER)
    assert rc == 0 and json.loads(out)["differences"] == []


def test_cli_errors(tmp_path, capsys):
    rc, _ = run_cli([], tmp_path, SEED_V4, None)
    assert rc == 2
    assert "ip6tables" in capsys.readouterr().err
    rc, _ = run_cli(["--iptables", str(tmp_path / "missing.rules")], tmp_path, None, EMPTY_FILTER)
    assert rc == 2
    rc, _ = run_cli([], tmp_path, "*filter\n-A INPUT -p tcp --dport 99999 -j DROP\nCOMMIT\n", EMPTY_FILTER)
    assert rc == 2
    assert "twinwall:" in capsys.readouterr().err
    rc, _ = run_cli(["--before", str(tmp_path / "a.json")], tmp_path)
    assert rc == 2


def _snap_file(tmp_path, name: str, v6: str, sockets) -> str:
    snap = snapshot(EMPTY_FILTER, v6)
    snap.hostname = "web1"
    snap.sockets = sockets
    snap.sockets_known = True
    path = tmp_path / name
    write_snapshot(snap, str(path))
    return str(path)


def test_before_after(tmp_path):
    sockets = [ListeningSocket("tcp", "ipv6", "::", 80, v6only=False), ListeningSocket("tcp", "ipv6", "::", 22, v6only=False)]
    ndp = "-A INPUT -p ipv6-icmp -j ACCEPT\n"  # without it no IPv6 connection works at all
    before = _snap_file(tmp_path, "before.json", filt(ndp + "-A INPUT -p tcp --dport 22 -j ACCEPT", input_policy="DROP"), sockets)
    after = _snap_file(
        tmp_path, "after.json",
        filt(ndp + "-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -p tcp --dport 80 -j ACCEPT", input_policy="DROP"),
        sockets,
    )
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli.main(["diff", "--before", before, "--after", after, "--format", "json"])
    assert rc == 1
    doc = json.loads(out.getvalue())
    assert doc["services"] == [
        {"protocol": "tcp", "address": "::", "port": 80, "family": "ipv6", "before": "filtered", "after": "open",
         "change": "opened"}
    ]
    assert doc["families"]["ipv4"] == {"opened": [], "closed": [], "changed": []}
    opened = doc["families"]["ipv6"]["opened"]
    assert len(opened) == 1 and opened[0]["dports"] == [[80, 80]] and opened[0]["hook"] == "input"
    assert opened[0]["before"] == "drop" and opened[0]["after"] == "accept"
    # the same snapshot twice: nothing changed
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli.main(["diff", "--before", before, "--after", before])
    assert rc == 0 and "nothing changed" in out.getvalue()


def test_parallel_workers_give_the_same_result(monkeypatch):
    from twinwall.analysis.diff import compare

    monkeypatch.setattr(compare, "COMPARE_FORK_MIN", 0)  # (the hooks forked however small)
    v4 = filt(
        """
        -A INPUT -s 198.51.100.0/24 -p tcp --dport 22 -j ACCEPT
        -A INPUT -p udp -m multiport --dports 53,123 -j ACCEPT
        -A OUTPUT -p tcp --dport 25 -m owner --uid-owner 1000 -j ACCEPT
        -A OUTPUT -p tcp --dport 25 -j DROP
        """,
        input_policy="DROP",
    )
    snap = snapshot(v4, EMPTY_FILTER)
    contexts = build_contexts(snap, load_rulesets(snap))
    serial = diff_contexts(contexts, parallel=False).to_json()
    parallel = diff_contexts(contexts, parallel=True).to_json()  # both families and hooks forked
    assert parallel == serial
    assert serial["differences"]


def test_each_family_parsed_in_its_own_worker_gives_the_joint_result():
    """diff_snapshot walks each family with only its own interface names; the masks read in
    the joint universe must give exactly what one joint walk gives."""
    from twinwall.analysis.diff.compare import diff_snapshot

    v4 = filt(
        """
        -A INPUT -i eth+ -p tcp --dport 22 -j ACCEPT
        -A INPUT -i docker0 -j DROP
        -A FORWARD -i br-+ -o eth0 -j ACCEPT
        -A OUTPUT -o wg0 -p udp --dport 51820 -j DROP
        """,
        input_policy="DROP",
    )
    v6 = filt(
        """
        -A INPUT -i eth0 -p tcp --dport 22 -j ACCEPT
        -A INPUT -i eth1+ -p tcp --dport 22 -j DROP
        -A FORWARD -i br-1 -j ACCEPT
        -A OUTPUT -o wg+ -p udp --dport 51820 -j DROP
        """,
        input_policy="DROP",
    )
    for v6_text in (v6, ""):  # "": ip6tables-save on a host where nobody loaded IPv6 rules
        snap = snapshot(v4, v6_text)
        joint = diff_contexts(build_contexts(snap, load_rulesets(snap)), parallel=False).to_json()
        assert joint["differences"]
        for parallel in (False, True):
            assert diff_snapshot(snapshot(v4, v6_text), parallel=parallel).to_json() == joint


def test_diff_snapshot_names_the_missing_family():
    import pytest

    from twinwall.analysis.diff.compare import diff_snapshot
    from twinwall.errors import InputError

    snap = snapshot(EMPTY_FILTER, EMPTY_FILTER)
    snap.rulesets = snap.rulesets[:1]
    with pytest.raises(InputError, match="no ip6tables ruleset"):
        diff_snapshot(snap)


def test_interface_masks_read_in_a_finer_universe_keep_their_names():
    """Every name is in a mask of the coarse universe exactly when its class in the finer one
    is in the translated mask (the universe of one family's rules, then of both)."""
    from twinwall.netfilter.interfaces import InterfaceUniverse

    coarse = InterfaceUniverse(["eth0", "lo"], ["eth+", "br-+", "veth+"])
    fine = InterfaceUniverse(["eth0", "eth", "lo", "br-1", "wg0", "veth1"], ["eth+", "eth0+", "eth1+", "br-+", "veth+", "wg+", "e+"])
    tr = coarse.refine(fine)
    names = ["eth0", "eth0x", "eth", "eth1", "eth12", "eth2", "br-1", "br-2", "br-", "wg0", "wg1", "veth1", "veth9", "lo",
             "em1", "e", "tun0", "x"]
    for spec in coarse.specs() + ["+", "e+", "eth1+", "nope"]:
        m = coarse.mask(spec)
        for n in names:
            in_coarse = bool(m >> coarse.class_of(n) & 1)
            in_fine = bool(tr(m) >> fine.class_of(n) & 1)
            assert in_coarse == in_fine, (spec, n)
    assert tr(coarse.all_mask) == fine.all_mask


def test_forward_verdict_cites_the_forward_rule_not_a_later_chains_accept_policy():
    # an nft filter chain on postrouting with policy accept only lets packets pass by: the
    # region accepted by FORWARD must cite FORWARD's rule, as the audit's evaluator does
    def chain(fam, table, name, hook, policy):
        return {"chain": {"family": fam, "table": table, "name": name, "handle": 1, "type": "filter",
                          "hook": hook, "prio": 0, "policy": policy}}

    items = [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]
    for fam in ("ip", "ip6"):
        items += [{"table": {"family": fam, "name": "t", "handle": 1}},
                  chain(fam, "t", "fwd", "forward", "drop"), chain(fam, "t", "post", "postrouting", "accept")]
    items.append({"rule": {"family": "ip", "table": "t", "chain": "fwd", "handle": 5, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},
        {"accept": None}]}})
    snap = HostSnapshot(sockets_known=False)
    snap.rulesets = [RulesetText("inet", "nft-json", "nft", "ruleset.json", json.dumps({"nftables": items}))]
    result = diff_contexts(build_contexts(snap, load_rulesets(snap)), ("forward",)).to_json()
    (region,) = [d for d in result["differences"] if d["ipv4"] == "accept"]
    assert region["dports"] == [[80, 80]] and region["ipv6"] == "drop"
    cited = json.dumps(region)
    assert "fwd" in cited and "tcp dport 80 accept" in cited
    assert "post" not in cited


def test_a_run_of_rules_of_one_chain_is_cited_once_and_verbose_lists_them(tmp_path):
    # five source drops (the fourth a LOG between them, which decides nothing): one region,
    # IPv4 mixed by source, cited as one run of four rules; --verbose cites each
    drops = [f"-A OUTPUT -d 192.0.2.{i} -j DROP" for i in (1, 2, 3)] + [
        "-A OUTPUT -d 192.0.2.9 -j LOG", "-A OUTPUT -d 192.0.2.4 -j DROP"]
    v4 = filt("\n".join(drops))
    doc = diff(v4, EMPTY_FILTER, hooks=("output",))
    (d,) = doc["differences"]
    drop = [c for c in d["ipv4_decided_by"] if c["verdict"] == "drop"]
    assert len(drop) == 1, d["ipv4_decided_by"]
    run = drop[0]
    assert (run["chain"], run["rule_number"], run["last_rule_number"], run["count"]) == ("OUTPUT", 1, 5, 4)
    assert run["rule"] == drops[0] and run["last_rule"] == drops[4]
    assert "filter OUTPUT #1-#5 (4 rules)" in d["ipv4_rule"]
    rc, out = run_cli(["--hook", "output", "--format", "json", "--verbose"], tmp_path, v4, EMPTY_FILTER)
    (full,) = json.loads(out)["differences"]
    numbers = sorted(c["rule_number"] for c in full["ipv4_decided_by"] if c["verdict"] == "drop")
    assert rc == 1 and numbers == [1, 2, 3, 5]
    assert all("count" not in c for c in full["ipv4_decided_by"])


def test_the_chain_index_changes_no_difference(monkeypatch):
    from twinwall.analysis.chain_index import ChainIndex
    from twinwall.analysis.role_walk import RoleWalker

    picked = []

    def spying_candidates(self, boxes, _orig=ChainIndex.candidates):
        got = _orig(self, boxes)
        picked.append(got)
        return got

    monkeypatch.setattr(ChainIndex, "candidates", spying_candidates)
    web = "\n".join(f"-A WEB -p tcp --dport {8000 + i} -j {'ACCEPT' if i % 3 else 'DROP'}" for i in range(60))
    web += "\n-A WEB -p tcp --dport 8005 -s 192.0.2.0/25 -j ACCEPT\n-A WEB -j RETURN"
    v4 = filt("-A INPUT -p tcp --dport 8000:8009 -j WEB\n-A INPUT -p tcp --dport 8050:8070 -j WEB", input_policy="DROP")
    v4 = v4.replace("COMMIT", ":WEB - [0:0]\n" + web + "\nCOMMIT", 1)
    v6 = filt("-A INPUT -p tcp --dport 8000:8070 -j ACCEPT", input_policy="DROP")
    with_index = diff(v4, v6)
    assert any(p is not None and len(p) < 20 for p in picked)  # the index picked a few rules
    monkeypatch.setattr(RoleWalker, "index_of", lambda self, chain, rules: False)
    assert diff(v4, v6) == with_index
    assert with_index["differences"]


def test_the_document_cites_each_rule_once_and_verbose_is_the_inline_form(tmp_path):
    # twinwall.diff/2: a shared table of citations, regions refer to it by index; a side decided
    # by several rules names them by place in *_rule, one rule is spelled out; --verbose is the
    # /1 form, every rule cited in full in each region
    v4 = filt("-A INPUT -s 198.51.100.0/24 -p tcp --dport 22 -j ACCEPT\n"
              "-A INPUT -s 198.51.100.0/24 -p tcp --dport 23 -j ACCEPT\n"
              "-A INPUT -p tcp --dport 80 -j ACCEPT", input_policy="DROP")
    v6 = filt("", input_policy="DROP")
    snap = snapshot(v4, v6)
    result = diff_contexts(build_contexts(snap, load_rulesets(snap)), ("input",))
    doc = result.to_json()
    assert doc["schema"] == "twinwall.diff/2"
    table = doc["citations"]
    refs = [i for d in doc["differences"] for side in ("ipv4", "ipv6") for i in d[f"{side}_decided_by"]]
    assert all(isinstance(i, int) for i in refs) and sorted(set(refs)) == list(range(len(table)))
    spelled = [json.dumps(c, sort_keys=True) for c in table]
    assert len(spelled) == len(set(spelled))  # each once
    ssh, telnet, web = doc["differences"]
    assert ssh["ipv4_rule"] == "accept: filter INPUT #1; drop: filter INPUT policy DROP"
    assert web["ipv4_rule"] == "filter INPUT #3: -A INPUT -p tcp --dport 80 -j ACCEPT"
    # the policy's drop, cited by both source regions, is spelled once
    assert ssh["ipv4_decided_by"][1] == telnet["ipv4_decided_by"][1]
    assert table[ssh["ipv4_decided_by"][1]]["policy"] == "DROP"
    # the rulesets' names once too, cited by index
    assert doc["sources"] == ["v4", "v6"] and {c["source"] for c in table} == {0, 1}
    full = result.to_json(verbose=True)
    assert full["schema"] == "twinwall.diff/1" and "citations" not in full
    inlined = inline_citations(doc)
    assert "citations" not in inlined
    for compact, verbose in zip(inlined["differences"], full["differences"]):
        for side in ("ipv4", "ipv6"):
            assert compact[f"{side}_decided_by"] == verbose[f"{side}_decided_by"]
    assert "-s 198.51.100.0/24" in full["differences"][0]["ipv4_rule"]


def test_a_compact_rule_text_names_ten_rules_of_a_verdict_and_counts_the_others():
    from twinwall.analysis.diff.describe import side_rule
    from twinwall.netfilter.ruleset import Decision

    decs = frozenset(Decision("filter", f"C{i:02}", 1, f"-A C{i:02} -j ACCEPT", None, "v4", "ACCEPT") for i in range(12))
    side = {"accept": decs, "drop": frozenset([Decision("filter", "INPUT", None, None, "DROP", "v4", "DROP")])}
    text = side_rule(side, verbose=False, texts=False)
    assert text == ("accept: " + "; ".join(f"filter C{i:02} #1" for i in range(10)) + "; ... 2 more; "
                    "drop: filter INPUT policy DROP")
    assert side_rule(side).count("-j ACCEPT") == 12  # the full form names them all
