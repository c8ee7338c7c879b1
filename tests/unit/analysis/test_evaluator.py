"""The set-of-packets evaluator against netfilter semantics and against a packet-by-packet walk."""

import json
import random
from array import array

import pytest

from twinwall.analysis.evaluator import Evaluator
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import (
    CT_ESTABLISHED,
    CT_NEW,
    CT_UNTRACKED,
    CT_UNTRACKED_LATER,
    DPORT,
    DST,
    IIF,
    MASK_DIMS,
    NDIMS,
    PROTO,
    SPORT,
    SRC,
    STATE,
    iv_contains,
    iv_normalize,
    prefix_interval,
)
from twinwall.errors import InputError
from twinwall.parsers.iptables_save import parse_iptables_save, tokenize
from twinwall.parsers.nft_json import parse_nft_json
from twinwall.netfilter.ruleset import ACCEPT, CONTINUE, DROP, GOTO, JUMP, REJECT, RETURN

HOST = "192.0.2.1"


def ip(a):
    return prefix_interval(a, "ipv4")[0]


def evaluator(text, family="ipv4", ifaces=("eth0", "eth1", "lo"), local=(HOST,)):
    rs = parse_iptables_save(text, family)
    universe = InterfaceUniverse(list(ifaces) + list(rs.interface_specs))
    loc = tuple(sorted(prefix_interval(a, family) for a in local)) + (prefix_interval("127.0.0.0/8", "ipv4"),)
    return Evaluator([rs], family, universe, tuple(sorted(loc))), universe


def packet_box(universe, src="198.51.100.7", dst=HOST, proto=6, sport=40000, dport=22, iif="eth0", state=CT_NEW):
    a, b = ip(src), ip(dst)
    return (
        ((a, a),),
        ((b, b),),
        ((proto, proto),),
        ((sport, sport),),
        ((dport, dport),),
        ((0, 0xFFFF),),
        ((0, 0xFFFFFFFF),),
        ((0, 0xFFFFFFFF),),
        universe.mask(iif),
        universe.all_mask,
        state,
    )


def verdict(text, **packet):
    ev, universe = evaluator(text)
    outcomes = ev.local_input([packet_box(universe, **packet)])
    assert len({o.verdict for o in outcomes}) == 1, outcomes
    return outcomes[0]


def table(body, policy="DROP", name="filter", chains=()):
    decl = "".join(f":{c} - [0:0]\n" for c in chains)
    base = {
        "filter": ":INPUT {p} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        "raw": ":PREROUTING {p} [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        "nat": ":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
    }[name].format(p=policy)
    return f"*{name}\n{base}{decl}{body}\nCOMMIT\n"


# --------------------------------------------------------------------------------------------
# parsing


def test_tokenize_quoted_arguments_and_drops_comments():
    toks = tokenize('-A INPUT -m comment --comment "a \\"b\\" c" -j LOG --log-prefix "x \\"y\\""')
    assert toks == ["-A", "INPUT", "-j", "LOG", "--log-prefix", 'x "y"']


def test_rule_compiles_targets_and_counts():
    rs = parse_iptables_save(
        table(
            "-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -j LOG\n-A INPUT -j x\n-A INPUT -g x\n"
            "-A INPUT -j REJECT --reject-with tcp-reset\n-A x -j RETURN\n-A x -j DROP",
            chains=("x",),
        ),
        "ipv4",
    )
    rs.universe = InterfaceUniverse([])
    actions = [r.action for r in rs.chain("filter", "INPUT").rules]
    assert actions == [ACCEPT, CONTINUE, JUMP, GOTO, REJECT]
    assert [r.action for r in rs.chain("filter", "x").rules] == [RETURN, DROP]
    assert rs.rule_count() == 7


# lines the compiler's fast path (_SIMPLE) takes or must refuse; each must compile exactly as
# the general tokenizing path does, errors included
FAST_PATH_LINES = [
    "-A INPUT ! -s 0.0.0.0/0 -j x",
    "-A INPUT -s 0.0.0.0/0 -j x",
    '-A INPUT ! -s 192.0.2.0/24 ! -d 198.51.100.7 -i eth0 ! -o eth+ -p tcp -m comment --comment "a \\"b\\" -j DROP"'
    " -m tcp --dport 080 -j ACCEPT",
    "-A INPUT -p tcp -m tcp --dport 70000 -j ACCEPT",
    "-A INPUT -s 192.0.2.300 -j ACCEPT",
    "-A INPUT -s 2001:db8::1 -j ACCEPT",
    "-A INPUT -s 192.0.2.0/255.255.255.0 -j ACCEPT",
    "-A INPUT -s 192.0.2.1,198.51.100.0/24 -j ACCEPT",
    "-A INPUT -s 192.0.2.5/16 -j ACCEPT",
    '-A INPUT -s 198.51.100.0/24 -m comment --comment "ns/svc:web loadbalancer IP" -j x',
    '-A INPUT -p tcp -m comment --comment "x" -m tcp -j DNAT --to-destination 203.0.113.4:80',
    '-A INPUT -p tcp -m comment --comment "x" -m tcp -j DNAT --to-destination bogus',
    '-A INPUT -p tcp -m comment --comment "x" -m tcp -j LOG -m comment --comment y',
    "-A INPUT -p udp -m tcp --dport 53 -j ACCEPT",
    '-A INPUT -m comment --comment "\\\\" -j x',
    "-A INPUT -m comment --comment unquoted -j x",
    "-A INPUT -j",
    "-A INPUT -j -X",
    "-A INPUT -j x extra args",
    "-A INPUT -j CT --notrack",
    "-A INPUT -j REDIRECT --to-ports 8080-8090",
    "-A INPUT -s 192.0.2.0/24  -j x",
    "-A INPUT\t-s 192.0.2.0/24 -j x",
    "-A INPUT ! -i lo -j ACCEPT",
    "-A INPUT ! -i + -j ACCEPT",
    "-A INPUT -j NOSUCH",
    "-A INPUT -g x",
    "-A INPUT -p tcp -m tcp --dport 22 -j x",
    "-A INPUT -p udp -m udp --dport 53 -j ACCEPT",
    "-A INPUT -p tcp -m udp --dport 0 -j DROP",
    "-A INPUT -p tcp -m tcp --dport 65536 -j x",
    "-A INPUT -p tcp -m tcp --dport 0022 -j RETURN",
    "-A INPUT -p tcp -m tcp --dport \uff12\uff12 -j ACCEPT",
    "-A INPUT -p tcp -m tcp --dport 22 -j -x",
    "-A INPUT -p tcp -m tcp --dport 22 -j !x",
    "-A INPUT -p tcp -m tcp --dport 22 -j DNAT",
    "-A INPUT -p tcp -m tcp --dport 22 -j REDIRECT",
    "-A INPUT -p tcp -m tcp --dport 22 -j CT",
    "-A INPUT -p tcp -m tcp --dport 22 -j NOSUCH",
    "-A INPUT -p icmp -m tcp --dport 22 -j ACCEPT",
    "-A INPUT -p tcp -m tcp --sport 22 -j ACCEPT",
    "-A INPUT -p tcp -m tcp --dport 22:80 -j ACCEPT",
    '-A INPUT -p tcp -m tcp --dport 22 -j "x"',
    "-A INPUT -p tcp -m tcp --dport 22 -j x\x0b",
    "-A INPUT -p tcp -m tcp --dport 22 -j x\u00a0",
    "-A  -p tcp -m tcp --dport 22 -j x",
    "-A INPUT\u2003-p tcp -m tcp --dport 22 -j x",
    "-A INPUT -p TCP -m tcp --dport 22 -j x",
    "-A INPUT -d 192.0.2.1 -j x",
    "-A INPUT",
    "-A INPUT -m comment --comment z -j x",
]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_fast_path_compiles_as_the_general_path(family, monkeypatch):
    from dataclasses import asdict

    import twinwall.parsers.iptables_save as parser

    rs = parse_iptables_save(table("", chains=("x",)), family)
    rs.universe = InterfaceUniverse(["eth0", "lo", "eth+"])
    compiler = parser._Compiler(rs)
    chain = rs.chain("filter", "INPUT")

    def compiled(line):
        try:
            return asdict(compiler.compile_rule(chain, 1, line))
        except (ValueError, IndexError) as exc:
            return (type(exc), str(exc))

    def chain_compiled(line):
        try:
            return [asdict(r) for r in compiler.compile_chain(chain, [(1, line), (2, line)])]
        except InputError as exc:
            return str(exc)

    fast = [compiled(line) for line in FAST_PATH_LINES]
    fast_chain = [chain_compiled(line) for line in FAST_PATH_LINES]
    taken = sum(parser._SIMPLE.fullmatch(line) is not None for line in FAST_PATH_LINES)
    assert taken >= 15  # the test exercises the fast paths
    assert sum(parser._SOURCE_JUMP.fullmatch(line) is not None for line in FAST_PATH_LINES) >= 5
    no_match = type("NoMatch", (), {"fullmatch": staticmethod(lambda line: None)})
    monkeypatch.setattr(parser, "_SIMPLE", no_match)
    monkeypatch.setattr(parser, "_SOURCE_JUMP", no_match)
    monkeypatch.setattr(parser, "_BY_WORDS", False)
    for line, got, got_chain in zip(FAST_PATH_LINES, fast, fast_chain):
        assert got == compiled(line), line
        assert got_chain == chain_compiled(line), line


def test_source_jump_is_tried_only_where_it_may_match():
    # compile_chain skips _SOURCE_JUMP on a line whose word after the chain's name is none of
    # _SOURCE_JUMP_NEXT: no such line matches it
    import twinwall.parsers.iptables_save as parser

    skipped = 0
    for line in FAST_PATH_LINES + ["-A x -j RETURN", "-A x", "-Ax -j y", "-A x -s 10.0.0.1 -j y", "-A x -p tcp -j y"]:
        if not line.startswith(parser._SOURCE_JUMP_NEXT, line.find(" ", 3) + 1):
            skipped += 1
            assert parser._SOURCE_JUMP.fullmatch(line) is None, line
    assert skipped >= 20


def test_chain_rules_are_the_dump_lines_in_order_however_they_are_laid_out():
    # runs of one chain's rules are read as blocks; everything else line by line: interleaved
    # chains, counters (iptables-save -c), indentation, CRLF, trailing blanks, a last line
    # without its newline and a table given twice must all give the same rules, in order
    text = (
        "# generated\r\n*filter\r\n:INPUT DROP [0:0]\r\n:x - [0:0]\r\n"
        "-A INPUT -i lo -j ACCEPT\r\n"
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT   \n"
        "-A x -s 192.0.2.0/24 -j RETURN\n"
        "[5:300] -A INPUT -j x\n"
        "-A INPUT -p udp -m udp --dport 53 -j ACCEPT\n"
        "   -A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\n"
        "-A x -j DROP\n"
        "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n"
        "COMMIT\n"
        "*filter\n-A INPUT -j REJECT\nCOMMIT"
    )
    expected = {
        "INPUT": [
            "-A INPUT -i lo -j ACCEPT",
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
            "-A INPUT -j x",
            "-A INPUT -p udp -m udp --dport 53 -j ACCEPT",
            "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT",
            "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT",
            "-A INPUT -j REJECT",
        ],
        "x": ["-A x -s 192.0.2.0/24 -j RETURN", "-A x -j DROP"],
    }
    rs = parse_iptables_save(text, "ipv4")
    assert rs.rule_count() == 9  # counted before any chain is compiled
    rs.universe = InterfaceUniverse(["lo"])
    for name, lines in expected.items():
        rules = rs.chain("filter", name).rules
        assert [r.text for r in rules] == lines
        assert [r.number for r in rules] == list(range(1, len(lines) + 1))
    assert rs.rule_count() == 9
    with pytest.raises(InputError, match="line 5: rule outside a table"):
        parse_iptables_save("*filter\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n-A INPUT -j DROP\n", "ipv4")


def test_bad_input_is_a_one_line_error():
    with pytest.raises(InputError, match="line 2"):
        parse_iptables_save("*filter\nhello world\nCOMMIT\n", "ipv4")
    rs = parse_iptables_save(table("-A INPUT -p tcp --dport 99999 -j ACCEPT"), "ipv4")
    rs.universe = InterfaceUniverse([])
    with pytest.raises(InputError, match="port out of range"):
        _ = rs.chain("filter", "INPUT").rules


def test_undecidable_matches_are_named():
    rs = parse_iptables_save(
        table("-A INPUT -p tcp -m limit --limit 5/s -j ACCEPT\n-A INPUT -m recent --set --name x\n-A INPUT -m foo --bar 1 -j ACCEPT"),
        "ipv4",
    )
    rs.universe = InterfaceUniverse([])
    rules = rs.chain("filter", "INPUT").rules
    assert rules[0].unknown == ("limit",)
    assert rules[1].unknown == ()  # recent --set only records: it always matches
    assert rules[2].unknown and "foo" in rules[2].unknown[0]


# --------------------------------------------------------------------------------------------
# semantics, one packet at a time


def test_2222_is_not_22():
    t = table("-A INPUT -p tcp --dport 2222 -j ACCEPT")
    assert verdict(t, dport=22).verdict == "drop"
    assert verdict(t, dport=2222).verdict == "accept"


def test_drop_rule_is_not_coverage_and_udp_is_not_tcp():
    t = table("-A INPUT -p tcp --dport 22 -j DROP\n-A INPUT -p udp --dport 53 -j ACCEPT", policy="ACCEPT")
    assert verdict(t, dport=22).verdict == "drop"
    assert verdict(t, dport=53).verdict == "accept"  # tcp/53: policy
    assert verdict(t, dport=53, proto=17).decided_by[-1].rule_number == 2


def test_user_chain_return_and_goto():
    t = table(
        "-A INPUT -j svc\n-A INPUT -p tcp --dport 80 -j ACCEPT\n"
        "-A svc -s 198.51.100.0/24 -j RETURN\n-A svc -p tcp --dport 80 -j DROP\n"
        "-A INPUT -g gone\n-A gone -p tcp --dport 81 -j ACCEPT",
        chains=("svc", "gone"),
    )
    # RETURN from svc: back in INPUT, rule 2 accepts
    assert verdict(t, dport=80).verdict == "accept"
    # not returned: svc drops
    assert verdict(t, dport=80, src="203.0.113.9").verdict == "drop"
    # goto: the end of 'gone' returns to INPUT's caller, i.e. the policy
    o = verdict(t, dport=82, src="203.0.113.9")
    assert o.verdict == "drop" and o.decided_by[-1].policy == "DROP"
    assert verdict(t, dport=81, src="203.0.113.9").verdict == "accept"


def test_log_does_not_end_evaluation_and_reject_is_deny():
    t = table("-A INPUT -j LOG --log-prefix x\n-A INPUT -p tcp --dport 22 -j REJECT\n-A INPUT -j ACCEPT")
    assert verdict(t, dport=22).verdict == "reject"
    assert verdict(t, dport=23).verdict == "accept"


def test_multiport_ports_is_source_or_destination():
    t = table("-A INPUT -p tcp -m multiport --ports 7001 -j ACCEPT")
    assert verdict(t, dport=7001).verdict == "accept"
    assert verdict(t, dport=7000, sport=7001).verdict == "accept"
    assert verdict(t, dport=7000, sport=40000).verdict == "drop"


def test_interface_wildcard_and_negation():
    t = table("-A INPUT -i eth+ -p tcp --dport 22 -j ACCEPT\n-A INPUT ! -s 198.51.100.0/24 -p tcp --dport 23 -j ACCEPT")
    assert verdict(t, dport=22, iif="eth1").verdict == "accept"
    assert verdict(t, dport=23, src="198.51.100.7").verdict == "drop"
    assert verdict(t, dport=23, src="203.0.113.7").verdict == "accept"


def test_conntrack_state_new_only():
    t = table("-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
    assert verdict(t, state=CT_NEW).verdict == "drop"
    assert verdict(t, state=CT_ESTABLISHED).verdict == "accept"
    syn = table("-A INPUT -p tcp ! --syn -m state --state NEW -j DROP\n-A INPUT -j ACCEPT")
    assert verdict(syn).verdict == "accept"  # a new connection's first packet is a SYN


def test_raw_table_can_drop_and_notrack_changes_state():
    t = table("-A PREROUTING -p tcp --dport 22 -j DROP\n-A PREROUTING -p tcp --dport 23 -j CT --notrack", policy="ACCEPT", name="raw")
    t += table("-A INPUT -m state --state UNTRACKED -j ACCEPT", policy="DROP")
    assert verdict(t, dport=22).verdict == "drop"
    o = verdict(t, dport=23)
    assert o.verdict == "accept" and o.box[STATE] == CT_UNTRACKED


def test_notrack_untracks_every_packet_and_the_origin_keeps_the_state_it_was_sent_in():
    # before conntrack has run, xt_CT's notrack makes every packet untracked, a packet of an
    # established connection too (its entry is never looked up): the origin keeps what was sent
    t = table("-A PREROUTING -j CT --notrack", policy="ACCEPT", name="raw")
    t += table("-A INPUT -m state --state ESTABLISHED -j ACCEPT", policy="DROP")
    ev, u = evaluator(t)
    box = list(packet_box(u))
    box[STATE] = CT_NEW | CT_ESTABLISHED
    outcomes = ev.local_input([tuple(box)])
    assert [o.verdict for o in outcomes] == ["drop"]
    assert outcomes[0].box[STATE] == CT_UNTRACKED | CT_UNTRACKED_LATER
    assert outcomes[0].origin[STATE] == CT_NEW | CT_ESTABLISHED


def test_state_matches_before_conntrack_see_every_packet_invalid():
    # raw PREROUTING runs before conntrack (priority -300 < -200): no entry yet, so --ctstate
    # sees INVALID (xt_conntrack: no ct, not untracked); after a NOTRACK it sees UNTRACKED
    t = table("-A PREROUTING -p tcp --dport 22 -m conntrack --ctstate INVALID -j DROP\n"
              "-A PREROUTING -p tcp --dport 23 -m conntrack --ctstate NEW -j DROP\n"
              "-A PREROUTING -p tcp --dport 24 -m conntrack ! --ctstate NEW -j DROP\n"
              "-A PREROUTING -p tcp --dport 25 -j NOTRACK\n"
              "-A PREROUTING -p tcp --dport 25 -m state --state UNTRACKED -j DROP\n"
              "-A PREROUTING -p tcp --dport 26 --syn -j DROP", policy="ACCEPT", name="raw")
    t += table("-A INPUT -m conntrack --ctstate NEW -j ACCEPT", policy="DROP")
    assert verdict(t, dport=22).verdict == "drop"
    o = verdict(t, dport=23)
    assert o.verdict == "accept" and o.box[STATE] == CT_NEW  # conntrack ran: NEW after raw
    assert verdict(t, dport=24).verdict == "drop"
    assert verdict(t, dport=25).verdict == "drop"
    assert verdict(t, dport=26).verdict == "drop"  # the TCP flags are there before conntrack


def test_notrack_after_conntrack_does_nothing():
    # nft's notrack in a prerouting chain at priority 0: the packet has its entry already
    rs = parse_nft_json(json.dumps({"nftables": [
        {"table": {"family": "ip", "name": "t"}},
        {"chain": {"family": "ip", "table": "t", "name": "pre", "type": "filter", "hook": "prerouting",
                   "prio": 0, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "t", "chain": "pre", "expr": [{"notrack": None}]}},
        {"chain": {"family": "ip", "table": "t", "name": "in", "type": "filter", "hook": "input",
                   "prio": 0, "policy": "drop"}},
        {"rule": {"family": "ip", "table": "t", "chain": "in", "expr": [
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"accept": None}]}},
    ]}), "test")
    v4 = [r for r in rs if r.family == "ipv4"]
    universe = InterfaceUniverse(["eth0", "eth1", "lo"])
    local = (prefix_interval(HOST, "ipv4"),)
    ev = Evaluator(v4, "ipv4", universe, local)
    o = ev.local_input([packet_box(universe)])
    assert [x.verdict for x in o] == ["accept"] and o[0].box[STATE] == CT_NEW


def test_dnat_to_another_host_leaves_input():
    t = table("-A PREROUTING -p tcp --dport 8080 -j DNAT --to-destination 203.0.113.5:80", name="nat")
    t += table("", policy="ACCEPT")
    o = verdict(t, dport=8080)
    assert o.verdict == "forward"
    assert o.box[DPORT] == ((80, 80),) and o.origin[DPORT] == ((8080, 8080),)
    r = table("-A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080", name="nat") + table(
        "-A INPUT -p tcp --dport 8080 -j ACCEPT"
    )
    o = verdict(r, dport=80)
    assert o.verdict == "accept" and o.box[DPORT] == ((8080, 8080),)


def test_every_ruleset_must_accept():
    """Legacy and nft tables loaded together: a packet must pass both."""
    a = parse_iptables_save(table("-A INPUT -j ACCEPT"), "ipv4", "nft")
    b = parse_iptables_save(table("-A INPUT -p tcp --dport 22 -j ACCEPT"), "ipv4", "legacy")
    u = InterfaceUniverse(["eth0", "lo"])
    ev = Evaluator([a, b], "ipv4", u, ((ip(HOST), ip(HOST)),))
    out = ev.local_input([packet_box(u, dport=23)])
    assert [o.verdict for o in out] == ["drop"] and out[0].decided_by[-1].source == "legacy"


def test_undecidable_match_follows_both_ways():
    t = table("-A INPUT -p tcp --dport 22 -m recent --update --hitcount 4 -j DROP\n-A INPUT -p tcp --dport 22 -j ACCEPT")
    ev, u = evaluator(t)
    out = ev.local_input([packet_box(u, dport=22)])
    assert sorted(o.verdict for o in out) == ["accept", "drop"]
    assert all(o.uncertain for o in out)


# --------------------------------------------------------------------------------------------
# the whole set at once agrees with a packet-by-packet walk on random rulesets


def concrete_walk(rs, chain, pkt, depth=0):
    """Reference: one packet through one chain. Returns a verdict string or None (fell off)."""
    for rule in rs.chain("filter", chain).rules:
        if not any(all(_has(pkt, d, v) for d, v in alt) for alt in rule.alternatives):
            continue
        if rule.action in (ACCEPT, DROP, REJECT):
            return rule.action.lower()
        if rule.action == RETURN:
            return None
        if rule.action in (JUMP, GOTO):
            v = concrete_walk(rs, rule.target, pkt, depth + 1)
            if v is not None or rule.action == GOTO:
                return v
    return None


def _has(pkt, dim, value):
    if dim in MASK_DIMS:
        return bool(pkt[dim] & value)
    return iv_contains(value, pkt[dim])


def random_ruleset(rng):
    chains = ["c1", "c2", "c3"]
    lines = []
    for owner in ["INPUT"] + chains:
        for _ in range(rng.randint(0, 6)):
            parts = []
            if rng.random() < 0.4:
                parts.append(("! " if rng.random() < 0.2 else "") + f"-s 198.51.100.{rng.choice([0, 64, 128])}/{rng.choice([24, 25, 26])}")
            if rng.random() < 0.5:
                proto = rng.choice(["tcp", "udp"])
                parts.append(f"-p {proto}")
                if rng.random() < 0.7:
                    lo = rng.randint(20, 30)
                    parts.append(f"--dport {lo}:{lo + rng.randint(0, 5)}" if rng.random() < 0.5 else f"-m multiport --ports {lo},{lo + 3}")
            if rng.random() < 0.3:
                parts.append(("! " if rng.random() < 0.3 else "") + f"-i {rng.choice(['eth0', 'eth+', 'eth1'])}")
            later = chains[chains.index(owner) + 1 :] if owner in chains else chains
            targets = ["ACCEPT", "DROP", "REJECT", "LOG"] + (["RETURN"] if owner != "INPUT" else [])
            if later:
                targets += [f"{later[0]}", f"{rng.choice(later)}"]
            t = rng.choice(targets)
            jump = "-g" if t in chains and rng.random() < 0.3 else "-j"
            lines.append(f"-A {owner} {' '.join(parts)} {jump} {t}".replace("  ", " "))
    return table("\n".join(lines), policy=rng.choice(["ACCEPT", "DROP"]), chains=chains)


@pytest.mark.parametrize("seed", range(60))
def test_set_walk_agrees_with_packet_walk(seed):
    rng = random.Random(seed)
    text = random_ruleset(rng)
    ev, u = evaluator(text, ifaces=("eth0", "eth1", "lo", "wlan0"))
    rs = ev.rulesets[0]
    query = list(packet_box(u))
    query[SRC] = ((ip("198.51.100.0"), ip("198.51.100.255")), (ip("203.0.113.0"), ip("203.0.113.3")))
    query[PROTO] = ((6, 6), (17, 17))
    query[SPORT] = ((20, 35),)
    query[DPORT] = ((18, 36),)
    query[IIF] = u.non_loopback()
    outcomes = ev.local_input([tuple(query)])
    policy = rs.chain("filter", "INPUT").policy.lower()
    for _ in range(150):
        pkt = [None] * NDIMS
        pkt[SRC] = rng.choice([ip("198.51.100.0") + rng.randint(0, 255), ip("203.0.113.0") + rng.randint(0, 3)])
        pkt[DST] = ip(HOST)
        pkt[PROTO] = rng.choice([6, 17])
        pkt[SPORT] = rng.randint(20, 35)
        pkt[DPORT] = rng.randint(18, 36)
        pkt[IIF] = 1 << rng.choice([i for i in range(len(u.labels)) if u.non_loopback() >> i & 1])
        pkt[STATE] = CT_NEW
        want = concrete_walk(rs, "INPUT", pkt) or policy
        got = [
            o.verdict
            for o in outcomes
            if all(_has(pkt, d, o.box[d]) for d in (SRC, PROTO, SPORT, DPORT, IIF))
        ]
        assert got == [want], (text, pkt, got, want)


def test_extension_header_and_rpfilter_matches_are_decided():
    t = table(
        "-A INPUT -m rt --rt-type 0 -j DROP\n-A INPUT -m rpfilter --invert -j DROP\n"
        "-A INPUT -m rpfilter -p tcp --dport 22 -j ACCEPT"
    )
    ev, u = evaluator(t)
    out = ev.local_input([packet_box(u, dport=22)])
    assert [o.verdict for o in out] == ["accept"] and not out[0].uncertain


# --------------------------------------------------------------------------------------------
# long chains: the rule index skips only rules the packets cannot meet


def dispatch_ruleset(rng, n=80):
    """A kube-proxy-like dispatch chain: most rules keyed on one destination address or port,
    a few broad or unkeyed ones, jumps to small chains that return or decide."""
    lines = []
    for _ in range(n):
        parts = []
        kind = rng.random()
        if kind < 0.7:
            parts.append(f"-d 198.51.100.{rng.randint(0, 40)}/{rng.choice([32, 32, 32, 30])}")
        elif kind < 0.75:
            parts.append("-d 198.51.100.0/24")  # a broad one
        elif kind < 0.8:
            parts.append("! -d 198.51.100.7/32")
        if rng.random() < 0.5:
            parts.append(f"-p tcp --dport {rng.randint(20, 30)}")
        if rng.random() < 0.1:
            parts.append("-m limit --limit 5/sec")  # may match
        t = rng.choice(["ACCEPT", "DROP", "REJECT", "LOG", "c1", "c2"])
        lines.append(f"-A INPUT {' '.join(parts)} -j {t}".replace("  ", " "))
    lines += ["-A c1 -p tcp --dport 22 -j RETURN", "-A c1 -j ACCEPT", "-A c2 -s 203.0.113.0/30 -j DROP"]
    return table("\n".join(lines), policy=rng.choice(["ACCEPT", "DROP"]), chains=("c1", "c2"))


def _outcome_key(outcomes):
    return sorted((o.box, o.verdict, tuple(o.decided_by), o.uncertain) for o in outcomes)


def _spy_on_candidates(monkeypatch):
    """(the index's real build, the list every candidates() call appends the number of rules it
    picked to: the index's size where it picked none out)."""
    import twinwall.analysis.chain_index as chain_index

    picked: list = []

    def spying_candidates(self, boxes, _orig=chain_index.ChainIndex.candidates):
        got = _orig(self, boxes)
        picked.append(self.size if got is None else len(got))
        return got

    monkeypatch.setattr(chain_index.ChainIndex, "candidates", spying_candidates)
    return chain_index.ChainIndex.build, picked


def test_rule_index_changes_no_outcome(monkeypatch):
    import twinwall.analysis.chain_index as chain_index

    build, picked = _spy_on_candidates(monkeypatch)
    skipped = 0
    for seed in range(25):
        rng = random.Random(seed)
        text = dispatch_ruleset(rng)
        dsts = sorted({rng.randint(0, 40) for _ in range(rng.randint(1, 4))})
        results = []
        picked.clear()
        for use_index in (True, False):
            monkeypatch.setattr(
                chain_index.ChainIndex, "build", build if use_index else classmethod(lambda cls, rules, gates=(): None)
            )
            ev, u = evaluator(text, local=[f"198.51.100.{d}" for d in dsts])
            q = list(packet_box(u))
            q[SRC] = ((ip("198.51.100.0"), ip("198.51.100.255")), (ip("203.0.113.0"), ip("203.0.113.3")))
            q[DST] = tuple((ip(f"198.51.100.{d}"), ip(f"198.51.100.{d}")) for d in dsts)
            q[PROTO] = ((6, 6), (17, 17))
            q[DPORT] = ((18, 32),)
            results.append(_outcome_key(ev.local_input([tuple(q)])))
        assert results[0] == results[1], (seed, text)
        assert picked, seed  # the index was consulted
        skipped += min(picked) < 80
    assert skipped >= 15  # and most rulesets let it skip rules


def test_rule_index_picks_the_rules_of_the_packets_addresses():
    from twinwall.analysis.chain_index import ChainIndex

    body = "\n".join(f"-A INPUT -d 10.96.0.{i}/32 -p tcp --dport 80 -j ACCEPT" for i in range(100))
    body += "\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -d 10.0.0.0/8 -j DROP"
    ev, u = evaluator(table(body))
    rules = ev.rulesets[0].chain("filter", "INPUT").rules
    index = ChainIndex.build(rules)
    box = list(packet_box(u))
    box[DST] = ((ip("10.96.0.7"), ip("10.96.0.8")),)
    assert index.candidates([tuple(box)]) == [7, 8, 100, 101]
    box[DST] = ((ip(HOST), ip(HOST)),)
    assert index.candidates([tuple(box)]) == [100]


def test_rule_index_intersects_the_dimensions_it_keys_on():
    from twinwall.analysis.chain_index import ChainIndex

    body = "\n".join(f"-A INPUT -d 10.96.0.{i % 10}/32 -p tcp --dport {8000 + i} -j ACCEPT" for i in range(100))
    ev, u = evaluator(table(body))
    index = ChainIndex.build(ev.rulesets[0].chain("filter", "INPUT").rules)
    box = list(packet_box(u))
    box[DST] = ((ip("10.96.0.3"), ip("10.96.0.3")),)
    box[DPORT] = ((8010, 8019),)
    assert index.candidates([tuple(box)]) == [13]
    box[DPORT] = ((0, 65535),)  # every port: the addresses alone decide
    assert index.candidates([tuple(box)]) == list(range(3, 100, 10))


def test_rule_index_gates_on_the_protocol_every_rule_shares():
    # a dispatch table's "-p tcp --dport P" rules all share tcp: ICMP or UDP packets of every
    # port meet none of them, which the port index alone cannot tell
    from twinwall.analysis.chain_index import GATE_DIMS, ChainIndex

    body = "\n".join(f"-A INPUT -p tcp --dport {8000 + i} -j ACCEPT" for i in range(100))
    body += "\n-A INPUT -p udp --dport 53 -j ACCEPT\n-A INPUT -j DROP"
    ev, u = evaluator(table(body))
    rules = ev.rulesets[0].chain("filter", "INPUT").rules
    index = ChainIndex.build(rules, GATE_DIMS)
    box = list(packet_box(u))
    box[DPORT] = ((0, 65535),)
    box[PROTO] = ((1, 1),)
    assert index.candidates([tuple(box)]) == [101]
    box[PROTO] = ((17, 17),)
    assert index.candidates([tuple(box)]) == [100, 101]
    box[PROTO] = ((6, 6),)
    assert index.candidates([tuple(box)]) is None  # (nearly) every rule
    box[PROTO] = ((1, 1),)
    assert ChainIndex.build(rules).candidates([tuple(box)]) is None  # no gate: every port meets
    # the gate alone, where no dimension of INDEXED_DIMS is worth an index
    same = "\n".join("-A INPUT -p tcp --dport 80 -j LOG" for _ in range(40)) + "\n-A INPUT -j DROP"
    ev, u = evaluator(table(same))
    gated = ChainIndex.build(ev.rulesets[0].chain("filter", "INPUT").rules, GATE_DIMS)
    assert ChainIndex.build(ev.rulesets[0].chain("filter", "INPUT").rules) is None
    assert gated.candidates([tuple(box)]) == [40]
    assert gated.next_meeting([tuple(box)], 3) == 4  # (gates do not park: nothing skipped)


def test_protocol_gate_changes_no_outcome(monkeypatch):
    import twinwall.analysis.chain_index as chain_index

    build, picked = _spy_on_candidates(monkeypatch)
    gated = 0
    for seed in range(12):
        rng = random.Random(seed)
        text = small_chains_ruleset(rng)
        proto = rng.choice([((1, 1),), ((17, 17),), ((1, 1), (17, 17)), ((0, 255),)])
        results = []
        for gate in (True, False):
            picked.clear()
            monkeypatch.setattr(chain_index.ChainIndex, "build", classmethod(
                lambda cls, rules, gates=(), _g=gate: build(rules, gates if _g else ())))
            ev, u = evaluator(text)
            q = list(packet_box(u))
            q[SRC] = ((ip("198.51.100.0"), ip("198.51.100.255")),)
            q[PROTO] = proto
            q[DPORT] = ((0, 65535),)
            q[STATE] = CT_NEW | CT_ESTABLISHED
            results.append(_outcome_key(ev.local_input([tuple(q)])))
            if gate:
                gated += bool(picked) and min(picked) < 10
        assert results[0] == results[1], (seed, text)
    assert gated >= 3  # and the gate let most non-tcp walks skip the tcp rules


def test_redirect_goes_to_the_incoming_interfaces_primary_address():
    # nf_nat_redirect: the destination becomes the first address of the interface the packet
    # came in on, not the host address it was sent to (differential seed 165: a REDIRECT to a
    # socket bound to the other link's address never reached it)
    from twinwall.netfilter.ruleset import LocalRoutes

    t = table("-A PREROUTING -p udp --dport 53 -j REDIRECT --to-ports 5353", name="nat") + table("", policy="ACCEPT")
    rs = parse_iptables_save(t, "ipv4")
    universe = InterfaceUniverse(["eth0", "eth1", "lo"])
    a0, a1 = ip("192.0.2.1"), ip("198.51.100.1")
    rs.local_routes = LocalRoutes({}, {}, {"eth0": ((a0, a0),), "eth1": ((a1, a1),)})
    ev = Evaluator([rs], "ipv4", universe, ((a0, a0), (a1, a1)))
    for iif, want in (("eth0", a0), ("eth1", a1)):
        o = ev.local_input([packet_box(universe, dst="198.51.100.1", proto=17, dport=53, iif=iif)])
        assert [x.verdict for x in o] == ["accept"]
        assert o[0].box[DST] == ((want, want),) and o[0].box[DPORT] == ((5353, 5353),), iif


def small_chains_ruleset(rng, n=40):
    """Many small chains (bench shape "chains" in miniature): INPUT jumps per port to a chain of
    a few source accepts that returns the rest, with unkeyed rules among and after them."""
    lines, chains = [], []
    for k in range(n):
        name = f"svc{k}"
        chains.append(name)
        for _ in range(rng.randint(1, 3)):
            lines.append(f"-A {name} -s 198.51.100.{rng.randint(0, 255)}/{rng.choice([32, 30, 28])} -j {rng.choice(['ACCEPT', 'DROP'])}")
        if rng.random() < 0.3:
            lines.append(f"-A {name} -p tcp --sport {rng.randint(1000, 1010)} -j RETURN")
        lines.append(f"-A INPUT -p tcp --dport {20 + k} -j {name}")
        if rng.random() < 0.1:
            lines.append("-A INPUT -p udp -j LOG")  # unkeyed on the port: no skipping past it
        if k == n // 2 and rng.random() < 0.5:
            # a run of one-dimension rules (walked at once) among the jumps
            lines += [f"-A INPUT -s 198.51.100.{a}/32 -j DROP" for a in rng.sample(range(256), 12)]
    lines += ["-A INPUT -s 198.51.100.0/26 -j ACCEPT", "-A INPUT -p tcp --dport 25 -j REJECT"]
    return table("\n".join(lines), policy=rng.choice(["ACCEPT", "DROP"]), chains=chains)


def test_flows_back_from_small_chains_skip_the_rules_they_cannot_meet(monkeypatch):
    import twinwall.analysis.chain_index as chain_index
    from twinwall.analysis.netfilter_walk import NetfilterWalk

    skips = []

    def spying_next(self, boxes, after, _orig=chain_index.ChainIndex.next_meeting):
        got = _orig(self, boxes, after)
        skips.append(got - after - 1)
        return got

    monkeypatch.setattr(chain_index.ChainIndex, "next_meeting", spying_next)
    for seed in range(12):
        rng = random.Random(seed)
        text = small_chains_ruleset(rng)
        results = []
        for park in (True, False):
            monkeypatch.setattr(NetfilterWalk, "PARK", park)
            ev, u = evaluator(text)
            q = list(packet_box(u))
            q[SRC] = ((ip("198.51.100.0"), ip("198.51.100.255")),)
            q[PROTO] = ((6, 6), (17, 17))
            q[SPORT] = ((990, 1020),)
            q[DPORT] = ((0, 65535),)
            q[STATE] = CT_NEW | CT_ESTABLISHED
            results.append(_outcome_key(ev.local_input([tuple(q)])))
        assert results[0] == results[1], (seed, text)
    assert max(skips) > 10  # flows were parked past many rules


def test_next_meeting_is_the_next_rule_the_packets_may_meet():
    from twinwall.analysis.chain_index import ChainIndex

    body = "\n".join(f"-A INPUT -p tcp --dport {8000 + i} -j ACCEPT" for i in range(50))
    body += "\n-A INPUT -p udp -j DROP\n" + "\n".join(f"-A INPUT -p tcp --dport {9000 + i} -j ACCEPT" for i in range(10))
    ev, u = evaluator(table(body))
    index = ChainIndex.build(ev.rulesets[0].chain("filter", "INPUT").rules)
    box = list(packet_box(u))
    box[DPORT] = ((8003, 8003),)
    assert index.next_meeting([tuple(box)], 3) == 50  # the unkeyed udp rule
    box[DPORT] = ((8003, 8003), (9005, 9005))
    assert index.next_meeting([tuple(box)], 0) == 3
    assert index.next_meeting([tuple(box)], 50) == 56
    assert index.next_meeting([tuple(box)], 56) == 61  # none left: the size of the chain


def blocklist_ruleset(rng, n=60):
    """Blocklist-like chains (bench shape "blocklist" in miniature): runs of single-source (or
    small range, or port) terminal rules, broken by the odd rule a run cannot hold (a LOG, an
    undecidable match, a two-dimension rule, an overlapping value)."""
    lines = ["-A INPUT -i lo -j ACCEPT", "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    used = set()
    for _ in range(n):
        kind = rng.random()
        action = rng.choice(["DROP", "DROP", "DROP", "REJECT", "ACCEPT"])
        if kind < 0.8:
            a = rng.randint(0, 250)
            if a in used and rng.random() < 0.7:
                continue
            used.add(a)
            width = rng.choice([32, 32, 32, 31, 30])
            lines.append(f"-A INPUT -s 198.51.100.{a}/{width} -j {action}")
        elif kind < 0.85:
            lines.append(f"-A INPUT -p tcp --dport {rng.randint(20, 30)} -j {action}")
        elif kind < 0.9:
            lines.append(f"-A INPUT -s 198.51.100.{rng.randint(0, 250)}/32 -j LOG")
        elif kind < 0.95:
            lines.append(f"-A INPUT -s 198.51.100.{rng.randint(0, 250)}/32 -m limit --limit 5/sec -j DROP")
        else:
            lines.append(f"-A INPUT -s 198.51.100.{rng.randint(0, 250)}/32 -p udp -j DROP")
    lines.append("-A INPUT -p tcp --dport 22 -j ACCEPT")
    return table("\n".join(lines), policy=rng.choice(["ACCEPT", "DROP"]))


def _ordered_outcomes(outcomes):
    return [(o.box, o.origin, o.verdict, tuple(o.decided_by), o.uncertain) for o in outcomes]


def test_runs_and_a_logging_trace_change_no_outcome_nor_its_order(monkeypatch):
    """A run of one-dimension rules walked at once (walk_run, chain not indexed) gives the very
    outcomes, in the very order, of the rule-by-rule walk; a trace that follows logging rules
    only sees what it sees rule by rule."""
    import twinwall.analysis.chain_index as chain_index
    from twinwall.analysis.audit import _LogSeen

    ran = 0
    for seed in range(40):
        rng = random.Random(seed)
        text = blocklist_ruleset(rng)
        results, seen = [], []
        for runs in (True, False):
            ev, u = evaluator(text)
            if not runs:
                monkeypatch.setattr(ev, "runs_of", lambda chain, rules, picked: None)
                monkeypatch.setattr(chain_index.ChainIndex, "build", classmethod(lambda cls, rules, gates=(): None))
            else:
                monkeypatch.undo()
            q = list(packet_box(u))
            q[SRC] = ((ip("198.51.100.0"), ip("198.51.100.255")), (ip("203.0.113.0"), ip("203.0.113.3")))
            q[PROTO] = ((6, 6), (17, 17))
            q[DPORT] = ((18, 32),)
            boxes = [tuple(q), packet_box(u, src="198.51.100.9"), packet_box(u, src="127.0.0.1", iif="lo")]
            results.append(_ordered_outcomes(ev.local_input(boxes)))
            logged = _LogSeen()
            ev.trace = logged
            results.append(_ordered_outcomes(ev.local_input(boxes)))
            seen.append((sorted(logged.boxes), sorted(r.number for r in logged.rules.values())))
            if runs:
                rules = ev.rulesets[0].chain("filter", "INPUT").rules
                ran += bool(ev.runs_of(ev.rulesets[0].chain("filter", "INPUT"), rules, None))
        monkeypatch.undo()
        assert results[0] == results[1] == results[2] == results[3], (seed, text)
        assert seen[0] == seen[1], (seed, text)
    assert ran >= 20  # most rulesets hold a run


def _uniform_blocklist(rng, action, where):
    """A blocklist whose source rules all have one deny action, in filter INPUT, in raw
    PREROUTING (before conntrack), or in a user chain INPUT jumps to."""
    rules = [f"-s 198.51.100.{a}/{rng.choice([32, 32, 31])} -j {action}" for a in sorted(rng.sample(range(0, 250, 2), 30))]
    rules.insert(rng.randrange(len(rules)), "-s 198.51.100.1/32 -p udp -j DROP")  # (breaks the run in two)
    filter_head = ["-A INPUT -i lo -j ACCEPT", "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    filter_tail = ["-A INPUT -p tcp --dport 22 -j ACCEPT"]
    if where == "raw":
        return table("\n".join(f"-A PREROUTING {r}" for r in rules), policy="ACCEPT", name="raw") + table(
            "\n".join(filter_head + filter_tail), policy=rng.choice(["ACCEPT", "DROP"]))
    if where == "chain":
        body = filter_head + ["-A INPUT -j BLOCK"] + [f"-A BLOCK {r}" for r in rules] + filter_tail
        return table("\n".join(body), policy=rng.choice(["ACCEPT", "DROP"]), chains=("BLOCK",))
    return table("\n".join(filter_head + [f"-A INPUT {r}" for r in rules] + filter_tail), policy=rng.choice(["ACCEPT", "DROP"]))


def test_a_compact_walk_ends_a_run_of_drops_as_one_outcome_that_splits_into_the_rule_by_rule_ones():
    """Evaluator(compact=True): a flow that holds every value of a run whose rules all drop (or
    all reject) ends as one RunOutcome whose parts (split, ends), decisions and regions are
    those of the walk rule by rule; a flow that holds only some, and runs of mixed actions, are
    walked as before."""
    from twinwall.analysis.evaluator import RunOutcome

    compacted = 0
    for seed in range(30):
        rng = random.Random(seed)
        kind = seed % 4
        text = blocklist_ruleset(rng) if kind == 3 else _uniform_blocklist(rng, rng.choice(["DROP", "REJECT"]), ("filter", "raw", "chain")[kind])
        walks = []
        for compact in (False, True):
            ev, u = evaluator(text)
            ev.compact = compact
            q = list(packet_box(u))
            q[SRC] = ((ip("198.51.100.0"), ip("198.51.100.255")), (ip("203.0.113.0"), ip("203.0.113.3")))
            q[PROTO] = ((6, 6), (17, 17))
            q[DPORT] = ((18, 32),)
            walks.append([ev.local_input(boxes) for boxes in ([tuple(q)], [tuple(q), packet_box(u, src="198.51.100.9")])])
        for exact, compact_outcomes in zip(*walks):
            runs = [o for o in compact_outcomes if isinstance(o, RunOutcome)]
            compacted += bool(runs)
            for o in runs:
                parts = o.split()
                assert len(parts) >= 8 and all(type(p) is not RunOutcome and p.verdict == o.verdict for p in parts)
                assert list(o.ends()) == [(p.box, p.decided_by[-1]) for p in parts]
                assert list(o.cited()) == o.path + [p.decided_by[-1] for p in parts] == o.decided_by
                assert iv_normalize(x for p in parts for x in p.box[SRC]) == o.box[SRC]
            split = [p for o in compact_outcomes for p in o.split()]
            assert sorted(map(repr, _ordered_outcomes(split))) == sorted(map(repr, _ordered_outcomes(exact))), (seed, text)
            if not runs:
                assert _ordered_outcomes(compact_outcomes) == _ordered_outcomes(exact)
    assert compacted >= 40  # most uniform blocklists compact, in both walks


def test_the_runs_of_rules_an_index_picked_are_the_runs_find_runs_makes_of_them():
    """runs_within: each run of a chain, cut to the rules picked, is the run find_runs makes of
    those rules (same values, sorted the same, same owners), at its position among them."""
    from twinwall.analysis.chain_index import MIN_RUN, find_runs, runs_within

    terminal = frozenset((ACCEPT, DROP, REJECT))
    checked = 0
    for seed in range(30):
        rng = random.Random(seed)
        ev, _ = evaluator(blocklist_ruleset(rng, n=120))
        rules = ev.rulesets[0].chain("filter", "INPUT").rules
        full = find_runs(rules, terminal)
        for keep in (1.0, 0.9, 0.6):
            picked = sorted(i for i in range(len(rules)) if rng.random() < keep)
            mine = [rules[i] for i in picked]
            for at, run in runs_within(full, picked).items():
                alone = find_runs(mine[at:run.end], terminal)[0]
                assert (run.start, run.end - run.start) == (at, alone.end)
                assert (run.los, run.his, run.owner, run.values, run.union) == (alone.los, alone.his, alone.owner, alone.values, alone.union)
                checked += run.end - run.start >= MIN_RUN
    assert checked >= 30


def test_a_run_of_one_interval_values_is_the_run_the_general_path_makes():
    """chain_index._run: values of one interval each (a blocklist's) are sorted as pairs and
    their union made of those pairs; the same run (or the same refusal) as the general path's,
    which reads every value interval by interval."""
    from twinwall.analysis import chain_index
    from twinwall.netfilter.packetset import iv_normalize

    made = refused = 0
    for seed in range(300):
        rng = random.Random(seed)
        n = rng.randint(8, 60)
        width = rng.choice((0, 0, 1, 3))
        top = rng.choice((n * 2, n * 8, 1 << 32, 1 << 128))
        values = [((lo, lo + rng.randint(0, width)),) for lo in (rng.randrange(0, top) for _ in range(n))]
        fast = chain_index._run(0, n, SRC, values)
        # the general path: the same values with an empty one (a rule that never matches) after
        general = chain_index._run(0, n + 1, SRC, values + [()])
        if general is None:
            refused += 1
            assert fast is None
            continue
        made += 1
        assert fast is not None
        assert (fast.los, fast.his, fast.owner, fast.values[:n], fast.union) == (
            general.los, general.his, general.owner, general.values[:n], general.union)
        assert fast.union == iv_normalize(p for v in values for p in v)
        if len(fast.union) == n:  # (none adjacent: the union is the values' own pairs)
            assert {id(p) for p in fast.union} == {id(v[0]) for v in values}
        given = {v[0]: v[0] for v in values}
        assert all(p is given[p] for p in fast.union if p in given)  # (what nothing joined is kept)
        assert isinstance(fast.owner, array) and list(fast.owner) == list(general.owner)
    assert made >= 50 and refused >= 20


def test_merge_flows_keeps_a_flow_alone_on_its_path_and_merges_the_others():
    from twinwall.analysis.evaluator import Flow, merge_flows
    from twinwall.netfilter.ruleset import Decision

    u = InterfaceUniverse([])
    a, b, c = (packet_box(u, dport=p) for p in (80, 81, 443))
    one = Decision("filter", "INPUT", 1, "-A INPUT -j ACCEPT", None, "t", ACCEPT)
    other = Decision("filter", "INPUT", 2, "-A INPUT -j DROP", None, "t", DROP)
    alone = Flow(c, (other, None), (), c)
    nated = Flow(a, (one, None), (), b)  # (NAT-rewritten: left as it is)
    out = merge_flows([Flow(a, (one, None), (), a), alone, Flow(b, (one, None), (), b), nated])
    assert out[0] is nated and out[2] is alone  # the very flow, not a copy of it
    merged = out[1]
    assert merged.box[DPORT] == ((80, 81),) and merged.origin is merged.box and merged.trail == (one, None)
    assert len(out) == 3


def test_the_union_of_sorted_disjoint_intervals_joins_exactly_the_adjacent_ones():
    """chain_index._union_sorted (a run's union): iv_normalize of the intervals, those nothing
    joined kept as the very pairs given."""
    from twinwall.analysis.chain_index import _union_sorted
    from twinwall.netfilter.packetset import iv_normalize

    for seed in range(300):
        rng = random.Random(seed)
        pairs, at = [], rng.randrange(0, 50)
        for _ in range(rng.randint(1, 80)):
            lo = at + rng.choice((0, 0, 1, 2, 7))  # (0: right after the last one, adjacent)
            hi = lo + rng.choice((0, 0, 3))
            pairs.append((lo, hi))
            at = hi + 1
        los, his = [p[0] for p in pairs], [p[1] for p in pairs]
        union = _union_sorted(los, his, pairs)
        assert union == iv_normalize(pairs) == _union_sorted(los, his)
        given = {id(p) for p in pairs}
        assert all(id(p) in given for p in union if p in set(pairs))


def test_a_runs_owners_are_found_when_asked_and_parts_of_values_it_misses_are_none():
    from twinwall.analysis import chain_index

    rng = random.Random(4)
    values = [((v, v),) for v in rng.sample(range(10, 10_000, 3), 200)]
    run = chain_index._run(0, len(values), SRC, values)
    assert run is not None and run._owner is None
    assert run.parts(((0, 9),)) == {} and run.parts(((10_001, 20_000),)) == {} and run._owner is None
    owner = list(run.owner)
    assert [values[k][0][0] for k in owner] == run.los == sorted(v[0][0] for v in values)
    lo = run.los[7]
    assert run.parts(((lo, lo),)) == {owner[7]: values[owner[7]]}


def plain_chains_ruleset(rng, n=30):
    """Small chains of every kind of rule a plain chain (Evaluator._walk_plain) holds - ends,
    returns, logs, rules that match nothing - and some that are not plain (a jump, a match
    twinwall cannot decide), jumped to from INPUT and from one another."""
    lines, chains = [], []
    for k in range(n):
        name = f"svc{k}"
        chains.append(name)
        for _ in range(rng.randint(0, 6)):
            match = rng.choice([f"-s 198.51.100.{rng.randint(0, 255)}/{rng.choice([32, 28, 24])}",
                                f"! -s 198.51.100.{rng.randint(0, 255)}/{rng.choice([30, 26])}",
                                f"-p tcp --sport {rng.randint(1000, 1010)}", "-p udp", "",
                                "-m conntrack --ctstate ESTABLISHED",
                                "-s 198.51.100.0/24 ! -s 198.51.100.0/24"])  # (the last: matches nothing)
            target = rng.choice(["ACCEPT", "DROP", "REJECT", "RETURN", "LOG"])
            if rng.random() < 0.08:
                match += " -m limit --limit 5/s"  # (undecidable: the chain is not plain)
            if k and rng.random() < 0.08:
                target = f"svc{rng.randrange(k)}"  # (a jump: not plain)
            lines.append(f"-A {name} {match} -j {target}".replace("  ", " "))
        lines.append(f"-A INPUT -p {rng.choice(['tcp', 'udp'])} --dport {20 + k % 12} -j {name}")
    return table("\n".join(lines), policy=rng.choice(["ACCEPT", "DROP"]), chains=chains)


def test_plain_chains_walk_as_the_general_walk(monkeypatch):
    plain_walks = []
    real = Evaluator._walk_plain

    def spying(self, *args):
        plain_walks.append(1)
        return real(self, *args)

    monkeypatch.setattr(Evaluator, "_walk_plain", spying)
    for seed in range(30):
        rng = random.Random(seed)
        text = plain_chains_ruleset(rng)
        results = []
        for plain in (True, False):
            if not plain:
                monkeypatch.setattr(Evaluator, "_is_plain", lambda self, chain: False)
            ev, u = evaluator(text)
            q = list(packet_box(u))
            q[SRC] = ((ip("198.51.100.0"), ip("198.51.100.255")), (ip("203.0.113.0"), ip("203.0.113.255")))
            q[PROTO] = ((6, 6), (17, 17))
            q[SPORT] = ((990, 1020),)
            q[DPORT] = ((0, 65535),)
            q[STATE] = CT_NEW | CT_ESTABLISHED
            for compact in (False, True):
                ev.compact = compact
                results.append(_ordered_outcomes(ev.local_input([tuple(q)])))
        monkeypatch.undo()
        monkeypatch.setattr(Evaluator, "_walk_plain", spying)
        assert results[:2] == results[2:], (seed, text)
    assert len(plain_walks) > 100
