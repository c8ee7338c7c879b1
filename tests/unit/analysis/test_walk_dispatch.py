"""A dispatch run of jumps (chain_index.find_dispatches, Evaluator.walk_dispatch) gives the very
outcomes, in the very order, of the walk rule by rule (and of the general walk of the plain
chains it jumps to: Evaluator._walk_plain), on random rulesets: jumps that overlap
in port (no run), ranges and multiport, negations, rules between the jumps that match some
flows, RETURNs, GOTOs, a chain jumped to twice, chains that jump on, inert chains, NAT in
front (rewritten flows) and flows of several protocols, sources and states."""

import random

import pytest

from twinwall.analysis.chain_index import MIN_RUN, ChainIndex, find_dispatches
from twinwall.analysis.evaluator import Evaluator
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import CT_ESTABLISHED, CT_NEW, DPORT, IIF, PROTO, SPORT, SRC, STATE, prefix_interval
from twinwall.netfilter.ruleset import JUMP
from twinwall.parsers.iptables_save import parse_iptables_save

HOST = "192.0.2.1"


def ip(a):
    return prefix_interval(a, "ipv4")[0]


def _port_match(rng, port):
    """(a match of destination ports from ``port`` on, the highest port it takes)."""
    kind = rng.random()
    if kind < 0.6:
        return f"--dport {port}", port
    if kind < 0.75:
        top = port + rng.randint(1, 2)
        return f"--dport {port}:{top}", top
    if kind < 0.97:
        top = port + rng.randint(1, 3)
        return f"-m multiport --dports {port},{top}", top
    return f"! --dport {port}", port  # (two intervals, meeting every other rule's: the run ends)


def dispatch_text(rng):
    """A filter table whose INPUT holds runs of '-p PROTO --dport P -j C' (and a nat table in
    front, now and then, rewriting some ports), with small chains of every kind behind."""
    chains = [f"svc{k}" for k in range(12)]
    lines = []
    for name in chains:
        for _ in range(rng.randint(0, 4)):
            match = rng.choice([f"-s 198.51.100.{rng.randint(0, 255)}/{rng.choice([32, 28, 24])}", "-p tcp --sport 1000:1005",
                                "", f"! -s 198.51.100.{rng.randint(0, 255)}/26", "-m conntrack --ctstate ESTABLISHED"])
            target = rng.choice(["ACCEPT", "DROP", "REJECT", "RETURN", "LOG", "ACCEPT"])
            if name != chains[-1] and rng.random() < 0.1:
                target = chains[-1]  # (a chain that jumps on: no plain chain)
            if rng.random() < 0.05:
                match += " -m limit --limit 5/s"  # (undecidable)
            lines.append(f"-A {name} {match} -j {target}".replace("  ", " "))
        if rng.random() < 0.3:
            lines.append(f"-A {name} -j RETURN")
    lines.append("-A inert -j LOG")  # (a jump to it changes nothing: walk skips it)
    lines.append("-A INPUT -m conntrack --ctstate INVALID -j DROP")
    port = 20
    for _ in range(rng.randint(40, 80)):
        kind = rng.random()
        if kind < 0.85:
            proto = "tcp" if rng.random() < 0.9 else "udp"
            extra = " -s 198.51.100.0/25" if rng.random() < 0.03 else ""  # (another constraint: the run breaks)
            target = rng.choice(chains + ["inert"] if rng.random() < 0.05 else chains)
            jump = "-g" if rng.random() < 0.03 else "-j"
            match, top = _port_match(rng, port)
            lines.append(f"-A INPUT -p {proto}{extra} -m {proto} {match} {jump} {target}")
            port = top + rng.choice([1, 1, 2, 3]) if rng.random() < 0.97 else max(1, port - 2)  # (now and then an overlap)
        elif kind < 0.92:
            # a rule between the jumps that matches some flows
            lines.append(f"-A INPUT -p tcp --dport {max(1, port + rng.randint(-5, 5))} -s 198.51.100.{rng.randint(0, 255)}/28 -j "
                         f"{rng.choice(['ACCEPT', 'DROP', 'LOG'])}")
        else:
            lines.append(f"-A INPUT -p tcp -m tcp --dport {max(1, port + rng.randint(-30, 0))} -j {rng.choice(chains)}")
    lines.append("-A INPUT -p tcp --dport 22 -j ACCEPT")
    decl = "".join(f":{c} - [0:0]\n" for c in chains + ["inert"])
    text = (f"*filter\n:INPUT {rng.choice(['ACCEPT', 'DROP'])} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{decl}"
            + "\n".join(lines) + "\nCOMMIT\n")
    if rng.random() < 0.4:
        nat = [f"-A PREROUTING -p tcp --dport {rng.randint(20, 90)} -j REDIRECT --to-ports {rng.randint(20, 90)}",
               f"-A PREROUTING -p tcp --dport {rng.randint(20, 90)}:{rng.randint(90, 120)} -j DNAT --to-destination {HOST}:{rng.randint(20, 90)}"]
        text = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
                + "\n".join(nat) + "\nCOMMIT\n" + text)
    return text


def _walk(text, rng_seed, dispatch, plain=True):
    rs = parse_iptables_save(text, "ipv4")
    universe = InterfaceUniverse(["eth0", "eth1", "lo"] + list(rs.interface_specs))
    local = tuple(sorted([prefix_interval(HOST, "ipv4"), prefix_interval("127.0.0.0/8", "ipv4")]))
    ev = Evaluator([rs], "ipv4", universe, local, compact=rng_seed % 2 == 0)
    if not dispatch:
        ev.dispatches_of = lambda chain, rules, picked: None  # type: ignore[method-assign]
    if not plain:
        ev._is_plain = lambda chain: False  # type: ignore[method-assign]
    rng = random.Random(rng_seed)
    q = [None] * 11
    q[SRC] = ((ip("198.51.100.0"), ip("198.51.100.255")), (ip("203.0.113.0"), ip("203.0.113.255")))
    q[1] = local
    q[PROTO] = rng.choice([((0, 255),), ((6, 6),), ((6, 6), (17, 17))])
    q[SPORT] = ((990, 1020),) if rng.random() < 0.5 else ((0, 65535),)
    q[DPORT] = rng.choice([((0, 65535),), ((15, 60),), ((25, 25), (40, 200))])
    q[5], q[6], q[7] = ((0, 0xFFFF),), ((0, 0xFFFFFFFF),), ((0, 0xFFFFFFFF),)
    q[IIF] = universe.non_loopback()
    q[9] = universe.all_mask
    q[STATE] = CT_NEW | CT_ESTABLISHED if rng.random() < 0.5 else CT_NEW
    boxes = [tuple(q)]
    if rng.random() < 0.3:  # a second box, of other sources
        b = list(q)
        b[SRC] = ((ip("10.0.0.0"), ip("10.0.0.255")),)
        boxes.append(tuple(b))
    outcomes = ev.local_input(boxes)
    return [(o.box, o.origin, o.verdict, tuple(o.decided_by), o.uncertain) for o in outcomes]


def _lower_next_meeting(monkeypatch):
    """ChainIndex.next_meeting, now and then lower (as it may be: a lower bound), the same way
    on both walks: what jumps in a dispatch run send back then rejoins, or is parked, inside it."""
    real = ChainIndex.next_meeting

    def lower(self, boxes, after):
        got = real(self, boxes, after)
        return min(got, after + 1 + after % 3) if after % 4 == 0 else got

    monkeypatch.setattr(ChainIndex, "next_meeting", lower)


def _spy(monkeypatch):
    """The list each walk_dispatch appends to: whether it walked its run to the end."""
    ran = []
    real = Evaluator.walk_dispatch

    def spying(self, *args):
        got = real(self, *args)
        ran.append(got[1] == args[3].end)
        return got

    monkeypatch.setattr(Evaluator, "walk_dispatch", spying)
    return ran


@pytest.mark.parametrize("lower", [False, True])
@pytest.mark.parametrize("seed", range(100))
def test_a_dispatch_run_walks_as_the_rules_one_by_one(seed, lower, monkeypatch):
    if lower:
        _lower_next_meeting(monkeypatch)
    text = dispatch_text(random.Random(seed))
    got = _walk(text, seed, True)
    assert got == _walk(text, seed, False), text
    # (and the plain chains behind, which mostly see one flow each from a dispatch run, as the
    # general walk walks them)
    assert got == _walk(text, seed, False, plain=False), text


def test_dispatch_runs_are_walked_and_cut_short(monkeypatch):
    """The test above reaches the fast path, both to a run's end and cut short (a jump whose
    returns walk would take back inside the run)."""
    ran = _spy(monkeypatch)
    for seed in range(60):
        _walk(dispatch_text(random.Random(seed)), seed, True)
    assert ran.count(True) > 20 and ran.count(False) == 0, ran
    _lower_next_meeting(monkeypatch)
    del ran[:]
    for seed in range(60):
        _walk(dispatch_text(random.Random(seed)), seed, True)
    assert ran.count(True) > 5 and ran.count(False) > 20, ran


def test_find_dispatches_takes_only_disjoint_jumps_told_apart_by_one_dimension():
    clean = [f"-A INPUT -p tcp -m tcp --dport {1000 + k} -j c{k % 3}" for k in range(MIN_RUN + 2)]
    udp = [f"-A INPUT -p udp -m udp --dport {2000 + k} -j c1" for k in range(MIN_RUN)]
    # a value that meets the rule before it's ends a run there (4 rules: too short) and starts
    # the next, here on to the rules after it of the same constraint
    overlapping = [f"-A INPUT -p tcp -m tcp --dport {3000 + k} -j c2" for k in range(MIN_RUN + 1)]
    overlapping.insert(4, "-A INPUT -p tcp -m tcp --dport 3003 -j c0")
    more = [f"-A INPUT -p tcp --dport {4000 + k} -j c2" for k in range(3)]
    short = ["-A INPUT -j LOG"] + [f"-A INPUT -p tcp --dport {5000 + k} -j c2" for k in range(MIN_RUN - 1)]
    others = ["-A INPUT -s 10.0.0.1 -p tcp --dport 1 -j c0", "-A INPUT -s 10.0.0.2 -p tcp --dport 2 -j c0"] * MIN_RUN
    text = ("*filter\n:INPUT ACCEPT [0:0]\n:c0 - [0:0]\n:c1 - [0:0]\n:c2 - [0:0]\n"
            + "\n".join(clean + udp + overlapping + more + short + others) + "\nCOMMIT\n")
    rules = parse_iptables_save(text, "ipv4").chain("filter", "INPUT").rules
    found = find_dispatches(rules, JUMP)
    n = MIN_RUN + 2
    assert sorted((d.start, d.end, d.dim) for d in found.values()) == [(0, n, DPORT), (n, n + MIN_RUN, DPORT), (22, 31, DPORT)]
    assert found[0].common == ((PROTO, ((6, 6),)),) and found[n].common == ((PROTO, ((17, 17),)),)
