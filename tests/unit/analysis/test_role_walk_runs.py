"""The role walk's runs of indistinguishable rules (role_walk._lift_collapsed, analysis.labels).

A run of consecutive "may" rules with the same constraints at role level and the same terminal
action is walked as its first rule, its label a RuleRun: expanded, the labels must be exactly
those of the rule-by-rule walk, and every report the same.
"""

from __future__ import annotations

import io
import json
import pickle
from contextlib import redirect_stdout
from typing import Dict, List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from test_diff_properties import SETTINGS, contexts, nat_policies, policies, render, render_nat
from twinwall import cli
from twinwall.analysis.diff import compare as D
from twinwall.analysis.labels import RuleRun, expanded_label, label_decisions, label_size, same_rules, share_rules
from twinwall.analysis.role_walk import RoleWalker
from twinwall.netfilter.ruleset import Decision

HOOKS = ("input", "forward", "output")


def filt(rules: List[str], input_policy: str = "ACCEPT") -> str:
    return (f"*filter\n:INPUT {input_policy} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:LOGDROP - [0:0]\n"
            + "".join(r + "\n" for r in rules) + "-A LOGDROP -j DROP\nCOMMIT\n")


def walked(v4: str, v6: str, collapse: bool, monkeypatch) -> Tuple[Dict, Dict]:
    """Each family's projected outcomes per hook: {hook: {(box, verdict): label}}, labels
    expanded, and the same unexpanded."""
    monkeypatch.setattr(RoleWalker, "collapse_runs", collapse)
    ctxs = contexts(v4, v6)
    sides = [ctxs["ipv4"], ctxs["ipv6"]]
    roles_filter, _ = D.common_roles(sides, HOOKS)
    expanded: Dict = {}
    raw: Dict = {}
    for ctx in sides:
        out = D.evaluate_family(ctx, HOOKS, roles_filter)
        for hook, items in out.items():
            e = expanded.setdefault((ctx.family, hook), {})
            r = raw.setdefault((ctx.family, hook), {})
            for box, verdict, label in items:
                assert (box, verdict) not in e
                e[(box, verdict)] = expanded_label(label)
                r[(box, verdict)] = label
    return expanded, raw


BLOCK = [f"-A INPUT -s 198.51.100.{i}/32 -j DROP" for i in range(1, 41)]
BLOCK6 = [f"-A INPUT -s 2001:db8::{i:x}/128 -j DROP" for i in range(1, 41)]
TAIL = ["-A INPUT -p tcp --dport 22 -j ACCEPT", "-A INPUT -p icmp -j ACCEPT"]
TAIL6 = ["-A INPUT -p tcp --dport 22 -j ACCEPT", "-A INPUT -p ipv6-icmp -j ACCEPT"]


def test_a_run_of_drops_expands_to_exactly_the_rule_by_rule_decisions(monkeypatch):
    v4, v6 = filt(BLOCK + TAIL, "DROP"), filt(BLOCK6 + TAIL6, "DROP")
    rule_by_rule, plain = walked(v4, v6, False, monkeypatch)
    runs, raw = walked(v4, v6, True, monkeypatch)
    assert runs == rule_by_rule
    # the run was walked as one: a drop's label is one RuleRun of the 40 rules ...
    drops = [label for (family, hook), items in raw.items() if family == "ipv4" and hook == "input"
             for (box, verdict), label in items.items() if verdict == "drop" and label_size(label) >= 40]
    assert drops
    for label in drops:
        (run,) = [d for d in label if isinstance(d, RuleRun)]
        assert (run.first_number, run.count) == (1, 40)
    # ... which stands for exactly the rules' own Decisions, in order
    assert list(run.decisions()) == [Decision("filter", "INPUT", i, BLOCK[i - 1], None, "v4", "DROP")
                                     for i in range(1, 41)]
    # and the rule-by-rule walk holds no run
    assert not any(isinstance(d, RuleRun) for items in plain.values() for label in items.values() for d in label)


def run_spans(v4: str, monkeypatch) -> List[Tuple[int, int]]:
    """(first rule number, rules) of each lifted rule of filter INPUT (IPv4), a run counted whole."""
    monkeypatch.setattr(RoleWalker, "collapse_runs", True)
    ctx = contexts(v4, filt([]))["ipv4"]
    (rs,) = ctx.rulesets
    walker = RoleWalker(ctx.rulesets, D.family_roles(ctx), ctx.universe, ctx.local)
    out = []
    for xr in walker.lifted(rs, rs.chain("filter", "INPUT")):
        d = xr._decision
        out.append((d.first_number, d.count) if isinstance(d, RuleRun) else (xr.rule.number, 1))
    return out


MIXED = [
    "-A INPUT -s 198.51.100.1/32 -j DROP",  # 1  run 1-3
    "-A INPUT -s 198.51.100.2/32 -j DROP",
    "-A INPUT -s 198.51.100.3/32 -j DROP",
    "-A INPUT -s 198.51.100.4/32 -j LOG",  # 4  goes on: not part of a run
    "-A INPUT -s 198.51.100.5/32 -j DROP",  # 5  run 5-6
    "-A INPUT -s 198.51.100.6/32 -j DROP",
    "-A INPUT -s 198.51.100.7/32 -j REJECT",  # 7  another action: run 7-8
    "-A INPUT -s 198.51.100.8/32 -j REJECT --reject-with tcp-reset",
    "-A INPUT -d 198.51.100.9/32 -j REJECT",  # 9  another constraint (-d)
    "-A INPUT -s 198.51.100.10/32 -j ACCEPT",  # 10 run 10-11
    "-A INPUT -s 198.51.100.11/32 -j ACCEPT",
    "-A INPUT -s 198.51.100.12/32 -j LOGDROP",  # 12 a jump
    "-A INPUT -s 198.51.100.13/32 -j LOGDROP",  # 13
    "-A INPUT -s 198.51.100.14/32 -m limit --limit 1/s -j DROP",  # 14 an undecidable match
    "-A INPUT -s 198.51.100.15/32 -m limit --limit 1/s -j DROP",  # 15
    "-A INPUT -s 198.51.100.16/32 -j DROP",  # 16 run 16-17
    "-A INPUT -s 198.51.100.17/32 -j DROP",
    "-A INPUT -p tcp -j DROP",  # 18 must match: the next sees none of its packets
    "-A INPUT -p tcp -j DROP",  # 19
    "-A INPUT -s 198.51.100.0/24 -p udp -j DROP",  # 20 run 20-21 (two constraints, the same)
    "-A INPUT -s 198.51.100.0/25 -p udp -j DROP",
    "-A INPUT -s 198.51.100.22/32 -j DROP",  # 22
]


def test_runs_are_broken_by_logs_other_actions_constraints_jumps_and_must_matches(monkeypatch):
    assert run_spans(filt(MIXED), monkeypatch) == [
        (1, 3), (4, 1), (5, 2), (7, 2), (9, 1), (10, 2), (12, 1), (13, 1), (14, 1), (15, 1), (16, 2), (18, 1),
        (19, 1), (20, 2), (22, 1)]


def test_broken_runs_expand_to_the_rule_by_rule_walk(monkeypatch):
    v6 = filt(["-A INPUT -s 2001:db8::1/128 -j DROP", "-A INPUT -s 2001:db8::2/128 -j ACCEPT"] + TAIL6, "DROP")
    v4 = filt(MIXED + TAIL, "DROP")
    assert walked(v4, v6, True, monkeypatch)[0] == walked(v4, v6, False, monkeypatch)[0]


def cli_outputs(v4: str, v6: str, tmp_path) -> List[str]:
    (tmp_path / "v4").write_text(v4)
    (tmp_path / "v6").write_text(v6)
    outs = []
    for extra in (["--format", "json"], ["--format", "json", "--verbose"], ["--format", "table"]):
        buf = io.StringIO()
        with redirect_stdout(buf):
            cli.main(["diff", "--iptables", str(tmp_path / "v4"), "--ip6tables", str(tmp_path / "v6")] + extra)
        outs.append(buf.getvalue())
    return outs


@pytest.mark.parametrize("v4, v6", [
    (filt(BLOCK + TAIL, "DROP"), filt(TAIL6, "DROP")),
    (filt(BLOCK + TAIL, "DROP"), filt(BLOCK6 + TAIL6, "DROP")),
    (filt(MIXED + TAIL), filt(BLOCK6[:2] + ["-A INPUT -s 2001:db8::9/128 -j LOG"] + BLOCK6[2:5] + TAIL6)),
    (filt(BLOCK[:2] + TAIL), filt(BLOCK6[:2] + TAIL6)),  # a run of two: cited rule by rule
])
def test_every_report_is_the_same_with_and_without_runs(v4, v6, tmp_path, monkeypatch):
    monkeypatch.setattr(RoleWalker, "collapse_runs", False)
    before = cli_outputs(v4, v6, tmp_path)
    monkeypatch.setattr(RoleWalker, "collapse_runs", True)
    assert cli_outputs(v4, v6, tmp_path) == before
    assert json.loads(before[0])["differences"] or json.loads(before[0])["not_comparable"]


def _repeated(pol, k: int):
    """Every rule of a random policy k times in a row (identical rules: a run where they only
    may match)."""
    rs, p = pol
    return [r for r in rs for _ in range(k)], p


def _assert_same_with_and_without_runs(v4: str, v6: str) -> None:
    """The diff's document, compact and verbose, walked rule by rule and with runs."""
    docs = []
    for collapse in (False, True):
        RoleWalker.collapse_runs = collapse
        try:
            result = D.diff_contexts(contexts(v4, v6))
            docs.append((result.to_json(), result.to_json(verbose=True)))
        finally:
            RoleWalker.collapse_runs = True
    assert docs[0] == docs[1]


@SETTINGS
@given(policies(exact=False), policies(exact=False), st.integers(2, 4))
def test_random_rulesets_give_the_same_document_with_and_without_runs(pol4, pol6, k):
    v4, v6 = render(*_repeated(pol4, k), "ipv4"), render(*_repeated(pol6, k), "ipv6")
    _assert_same_with_and_without_runs(v4, v6)


@SETTINGS
@given(nat_policies(), nat_policies(), st.integers(2, 3))
def test_random_rulesets_after_nat_give_the_same_document_with_and_without_runs(pol4, pol6, k):
    # (filter rules after DNAT/REDIRECT, each k times: runs of rewritten flows)
    def text(pol, family):
        nat, filt_rules, p = pol
        return render_nat(nat, [r for r in filt_rules for _ in range(k)], p, family)

    v4, v6 = text(pol4, "ipv4"), text(pol6, "ipv6")
    _assert_same_with_and_without_runs(v4, v6)


def _run(first: int, count: int, source: str = "v4") -> RuleRun:
    texts = tuple(f"-A INPUT -s 198.51.100.{i}/32 -j DROP" for i in range(first, first + count))
    return RuleRun("filter", "INPUT", source, "DROP", first, texts=texts)


def test_a_rule_run_pickles_to_an_equal_run_of_the_same_decisions():
    run = _run(1, 5)
    back = pickle.loads(pickle.dumps(run))
    assert back == run and hash(back) == hash(run) and list(back.decisions()) == list(run.decisions())
    assert (back.first.rule_number, back.last.rule_number, len(back)) == (1, 5, 5)
    assert _run(1, 5, "v6") != run and _run(2, 4) != run
    assert frozenset([run]) == frozenset([back])
    # (sent as one string: its first and last rule read without splitting it, equal to another
    # sent copy, and split into the same rules)
    a, b = pickle.loads(pickle.dumps(run)), pickle.loads(pickle.dumps(run))
    assert (a.first, a.last) == (run.first, run.last) and a._joined is not None and a == b
    assert a == run and list(b.decisions()) == list(run.decisions())
    other = RuleRun("filter", "INPUT", "v4", "DROP", 1, texts=run.texts()[:4] + ("-A INPUT -j DROP",))
    assert pickle.loads(pickle.dumps(other)) != a
    odd = RuleRun("nft", "input", "nft", "DROP", 3, texts=("a\nb", "c"))
    assert list(pickle.loads(pickle.dumps(odd)).decisions()) == list(odd.decisions())


def test_labels_of_two_walks_cut_into_different_runs_are_compared_rule_by_rule():
    six = _run(1, 6)
    five_and_one = [_run(1, 5), next(iter(label_decisions([_run(6, 1)])))]
    assert six != five_and_one[0]
    assert same_rules([six], five_and_one)
    assert not same_rules([six], [_run(1, 5)])
    assert share_rules({six}, [_run(3, 1)])
    assert share_rules({next(iter(label_decisions([_run(4, 1)])))}, [six])
    assert not share_rules({six}, [_run(7, 3)])
    assert not share_rules({six}, [_run(1, 6, "v6")])
    assert label_size([six, _run(10, 2)]) == 8


@given(st.sampled_from(["ipv4", "ipv6"]), st.booleans(), st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1),
       st.integers(0, 2**128 - 1), st.integers(0, 40))
def test_an_interval_inside_a_pieces_role_classifies_as_the_piece_says(family, known, a, b, c, width):
    # (what _lift_collapsed tells a rule continuing a run by, instead of classifying it)
    from twinwall.analysis.roles import AddressRoles
    from twinwall.netfilter.packetset import prefix_interval

    bits = 32 if family == "ipv4" else 128
    host = prefix_interval("192.0.2.1" if family == "ipv4" else "2001:db8::1", family)
    roles = AddressRoles(family, (host,), known)
    # values near the roles' edges as often as anywhere
    edges = sorted({x for lo, hi, _ in roles._segs for x in (lo, hi)})
    first = [a % (1 << bits), edges[a % len(edges)]][b % 2]
    head = ((first, min(first + (c % 4), (1 << bits) - 1)),)
    piece = roles.segment(head)
    if piece is None:
        return
    lo = edges[b % len(edges)] if c % 3 == 0 else piece[0] + b % (piece[1] - piece[0] + 1)
    value = ((lo, min(lo + (1 << width) - 1, (1 << bits) - 1)),)
    v_lo, v_hi = value[0]
    if piece[0] <= v_lo and v_hi <= piece[1] and not (v_lo <= piece[2] and piece[3] <= v_hi):
        if not (head[0][0] <= piece[2] and piece[3] <= head[0][1]):
            assert roles.classify(value) == roles.classify(head)


@pytest.mark.parametrize("seed", range(6))
def test_a_long_chains_stretches_give_the_diff_of_its_rules_read_one_by_one(seed, monkeypatch):
    """The diff reads a long chain's stretches (ruleset.RuleStretch) as their values and
    texts (_lift_collapsed): the same document, compact and verbose, as the chain compiled rule
    by rule, with no stretch's every Rule made (the point: a blocklist's 100,000 Rules)."""
    import random

    from test_iptables_stretches import _dump
    from twinwall.model import HostSnapshot, RulesetText
    from twinwall.netfilter.ruleset import RuleList, RuleStretch
    from twinwall.parsers import iptables_save

    rng = random.Random(seed)
    texts = {f: _dump(rng, f, rng.choice((1100, 2600))) for f in ("ipv4", "ipv6")}
    if seed % 2:  # the blocklist in a chain of its own, jumped to (InertChains asks what it holds)
        block = "".join(f"-A BLOCK -s 198.51.100.{k % 250}/32 -j DROP\n" for k in range(1200))
        texts["ipv4"] = texts["ipv4"].replace("-A BLOCK -j DROP\n", block + "-A BLOCK -j RETURN\n")
    made = []
    every = RuleList.every
    monkeypatch.setattr(RuleList, "every", lambda self: made.append(len(self)) or every(self))
    rule = RuleStretch.rule
    # (of a stretch whose rules may make a run: those of other targets are lifted one by one)
    monkeypatch.setattr(RuleStretch, "rule",
                        lambda self, *a: self.action in ("DROP", "ACCEPT", "REJECT") and made.append(1) or rule(self, *a))
    spelled = []  # the texts of a stretch's rules read off it
    text = RuleStretch.text
    monkeypatch.setattr(RuleStretch, "text", lambda self, k: spelled.append(k) or text(self, k))
    docs = []
    for stretch_min in (iptables_save.STRETCH_MIN_CHAIN, 1 << 30):
        monkeypatch.setattr(iptables_save, "STRETCH_MIN_CHAIN", stretch_min)
        snap = HostSnapshot(sockets_known=False, interfaces=["lo", "eth0", "eth1"])
        snap.rulesets = [RulesetText(f, "iptables-save", "unknown", f, t) for f, t in texts.items()]
        result = D.diff_snapshot(snap, parallel=False)
        docs.append((result.to_json(), result.to_json(verbose=True)))
        if stretch_min != 1 << 30:
            # (a Rule here and there, a run's first: no every())
            sources = sum(t.count(" -j DROP\n") + t.count(" -j ACCEPT\n") + t.count(" -j REJECT\n") for t in texts.values())
            assert len(made) < sources / 4 and all(m == 1 for m in made)
            assert len(spelled) > 100
    assert docs[0] == docs[1]
