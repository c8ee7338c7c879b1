"""Random-ruleset differential against the kernel (see tests/netns/diffhost.py, rulegen.py).

Each seed's ruleset is loaded with the real tools into one namespace host; every listening
socket is probed from two clients on separate links, from several source addresses and ports;
twinwall's answer for every probe's exact packet and every (socket, family) status must agree
with what the probes saw. ``scripts/differential.py --seeds N`` runs any number of seeds.
"""

from __future__ import annotations

import os

import pytest

import diffhost
import rulegen

# a few dozen seeds here (about a second each); TWINWALL_DIFF_SEEDS=N runs more
SEEDS = int(os.environ.get("TWINWALL_DIFF_SEEDS", "50"))


@pytest.fixture(scope="module")
def host():
    with diffhost.DiffHost() as h:
        yield h


def test_random_rulesets_agree_with_the_kernel(host):
    results = [host.run_seed(seed) for seed in range(SEEDS)]
    failed = [r for r in results if not r.agrees]
    assert sum(r.verdicts for r in results) >= SEEDS * 10  # the statuses were compared
    assert not failed, "\n\n".join(r.report() for r in failed[:3]) + \
        f"\n{len(failed)}/{len(results)} seeds disagree: {[r.seed for r in failed]}"


def test_generator_is_reproducible_and_covers_the_forms():
    plan = diffhost.plan()
    assert rulegen.generate(7, plan).text() == rulegen.generate(7, plan).text()
    text = "\n".join(rulegen.generate(s, plan).text() for s in range(200))
    for form in ("*raw", "*mangle", "*nat", "-g U", "-j RETURN", "! -s", "-i et+", "-i eth-+", "-i vb+",
                 "--ports", "--ctstate", "--state", "--src-range", "--icmpv6-type", "--reject-with tcp-reset",
                 "-j LOG", "CT --notrack", "-j NOTRACK", "-j DNAT", "-j REDIRECT",
                 "table inet", "table ip ", "table ip6 ", "priority filter - 5", "set src4", "@svc",
                 "vmap {", "meta l4proto", "th dport", "ip saddr", "reject with icmpx", "notrack",
                 "dnat ip to", "redirect to", 'iifname "et*"', "ct state untracked", "--match-set",
                 "# ipset restore", "hash:net"):
        assert form in text, form


def test_a_wrong_answer_is_a_disagreement(host):
    """The comparison can fail: a probe twinwall calls reachable that the kernel turned away."""
    probe = diffhost.plan_probes(0)[0]
    host.load(rulegen.GeneratedRuleset(0, "nft", nft="flush ruleset\n"))  # no rules: all open
    snap = host.collect()
    host.load(rulegen.GeneratedRuleset(0, "iptables", v4="*filter\n:INPUT DROP [0:0]\nCOMMIT\n",
                                       v6="*filter\n:INPUT DROP [0:0]\nCOMMIT\n"))
    observed = host._probe([probe], diffhost.PROBE_TIMEOUT)
    out = diffhost.SeedResult(0, rulegen.GeneratedRuleset(0, "iptables"))
    # judged against the snapshot taken before the DROP policy was loaded (everything open)
    host._compare(out, snap, [probe], observed)
    assert observed == ["filtered"]
    assert any(d.what == "probe" for d in out.disagreements), out.disagreements
