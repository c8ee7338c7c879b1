"""The plain walk's one-interval match (evaluator.match_one_interval) gives exactly the flows of
Evaluator.match, on random flows (short and long interval sets, rewritten origins) and rules."""

import random

from twinwall.analysis.evaluator import Evaluator, Flow, match_one_interval, one_interval
from twinwall.netfilter.packetset import DPORT, DST, IIF, SRC, iv_normalize, make_box
from twinwall.netfilter.ruleset import ACCEPT, Rule


def _set(rng, size, top):
    pairs = []
    for _ in range(size):
        lo = rng.randint(0, top)
        pairs.append((lo, min(top, lo + rng.randint(0, top // 50))))
    return iv_normalize(pairs)


def _flow(rng):
    top = 1 << 16
    src = _set(rng, rng.choice([1, 2, 5, 70, 200]), top) or ((0, top),)
    box = make_box(src, ((0, top),), 3, 3, dport=_set(rng, 3, top) or ((1, 1),))
    if rng.random() < 0.3:  # NAT rewrote the destination: the origin differs
        origin = box[:DST] + (((5, 5),),) + box[DST + 1:]
        return Flow(box, None, (), origin)
    return Flow(box, None, (), box)


def _view(flows):
    return [(f.box, f.origin, f.box is f.origin) for f in flows]


def test_match_one_interval_is_evaluator_match():
    rng = random.Random(7)
    evaluator = Evaluator.__new__(Evaluator)  # (match reads nothing of the evaluator)
    checked = 0
    for _ in range(3000):
        flows = [_flow(rng) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            flows.append(flows[0])  # (the same flow twice)
        dim = rng.choice([SRC, DPORT])
        lo = rng.randint(0, 1 << 16)
        value = ((lo, min(1 << 16, lo + rng.choice([0, 3, 300, 1 << 14]))),)
        if rng.random() < 0.1:
            value = flows[0].box[dim][:1]  # (the very interval the flow holds)
        rule = Rule("filter", "c", 1, "-A c", (((dim, value),),), (), ACCEPT, "ACCEPT")
        assert one_interval(rule) == (dim, value)
        want = evaluator.match(rule, flows)
        got = match_one_interval(dim, value, flows)
        assert _view(got[0]) == _view(want[0]) and _view(got[1]) == _view(want[1])
        # the flows that pass unchanged are the flows themselves, as match gives them
        assert [a is f for a in got[1] for f in flows] == [b is f for b in want[1] for f in flows]
        assert [a is f for a in got[0] for f in flows] == [b is f for b in want[0] for f in flows]
        checked += 1
    assert checked == 3000


def test_one_interval_refuses_other_rules():
    assert one_interval(Rule("filter", "c", 1, "-A c", ((),), (), ACCEPT, "ACCEPT")) is None
    assert one_interval(Rule("filter", "c", 1, "-A c", (((IIF, 3),),), (), ACCEPT, "ACCEPT")) is None
    two = ((SRC, ((1, 2),)), (DPORT, ((3, 3),)))
    assert one_interval(Rule("filter", "c", 1, "-A c", (two,), (), ACCEPT, "ACCEPT")) is None
    assert one_interval(Rule("filter", "c", 1, "-A c", (((SRC, ((1, 2), (5, 6))),),), (), ACCEPT, "ACCEPT")) is None
    assert one_interval(Rule("filter", "c", 1, "-A c", (((SRC, ((1, 2),)),), ((DST, ((1, 2),)),)), (), ACCEPT, "ACCEPT")) is None


def test_shared_values_changes_no_flow():
    # the plain walk's returned flows with equal values made one object: the same boxes by
    # value, the same trails, a flow whose values were all seen already or new kept as it is
    rng = random.Random(3)
    evaluator = Evaluator.__new__(Evaluator)
    evaluator._values = {}
    for _ in range(300):
        flows = [_flow(rng) for _ in range(rng.randint(1, 5))]
        flows += [Flow(tuple(f.box), f.trail, f.uncertain, f.origin) for f in flows[:2]]  # (equal, not the same)
        got = evaluator._shared_values(flows, {SRC, DPORT})
        assert [(g.box, g.origin, g.trail, g.uncertain) for g in got] == [(f.box, f.origin, f.trail, f.uncertain) for f in flows]
        for g, f in zip(got, flows):
            assert (g.origin is g.box) == (f.origin is f.box)
            if f.origin is not f.box:
                assert g is f  # (NAT rewrote it: left alone)
            elif g is not f:
                assert any(g.box[d] is not f.box[d] for d in (SRC, DPORT))
        seen = {}
        for g in got:
            if g.origin is g.box:
                for d in (SRC, DPORT):
                    assert seen.setdefault(g.box[d], g.box[d]) is g.box[d]  # one object per value
