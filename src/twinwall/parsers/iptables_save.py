"""``iptables-save`` / ``ip6tables-save`` text -> ``Ruleset``.

The whole file is split into tables and chains in one cheap pass; each chain's rules are compiled
into packet-set constraints only when the evaluator first walks that chain (see
``ruleset.Chain``). Compiling follows iptables' own option grammar: ``!`` negates the option after
it, ``-m NAME`` opens a match whose ``--options`` follow, ``-p tcp`` implicitly loads the tcp
match, ``-j``/``-g`` end the matches and the target's own options follow.

Matches that cannot be decided from the ruleset (rate limits, recent lists, marks, ipsets...) are
kept by name in ``Rule.unknown``: the evaluator then treats the rule as "may match".
"""

from __future__ import annotations

import re
from _socket import AF_INET, AF_INET6, inet_pton
from functools import lru_cache
from itertools import repeat
from sys import intern
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union, cast

from twinwall.netfilter.packetset import (
    CT_NAMES,
    DPORT,
    DST,
    GID,
    HOPLIMIT,
    ICMP,
    IIF,
    OIF,
    PROTO,
    SPORT,
    SRC,
    STATE,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    UID,
    Interval,
    IntervalSet,
    address_space,
    complement as value_complement,
    conjoin,
    iv_and,
    iv_normalize,
    iv_or,
    iv_sub,
    multicast_addresses,
    plain_prefix,
    prefix_interval,
    ct_state_match,
    tcp_flag_states,
)
from twinwall.errors import InputError
from twinwall.parsers.protocols import IP_PROTOCOLS, PORT_PROTOCOLS
from twinwall.netfilter.ruleset import (
    BaseChain,
    Chain,
    NAMED_DESTINATIONS,
    NamedDestination,
    Rule,
    RuleList,
    RuleStretch,
    Ruleset,
    Table,
    host_unicast,
)
from twinwall.vocabulary import Action

# the value of one dimension of a constraint: an interface/state bit mask or an interval set
DimValue = Union[int, IntervalSet]
# an ICMP type, or (type, code); None: any
IcmpCode = Optional[Tuple[int, ...]]
# one "-m addrtype" option: its argument (None when missing) and whether it was negated
AddrtypeOption = Tuple[Optional[str], bool]

# Built-in chains and where they hook, with the kernel's priorities (NF_IP_PRI_*).
BUILTIN_CHAINS: Dict[str, Dict[str, Tuple[str, int, str]]] = {
    "raw": {"PREROUTING": ("prerouting", -300, "filter"), "OUTPUT": ("output", -300, "filter")},
    "mangle": {
        "PREROUTING": ("prerouting", -150, "filter"),
        "INPUT": ("input", -150, "filter"),
        "FORWARD": ("forward", -150, "filter"),
        "OUTPUT": ("output", -150, "route"),
        "POSTROUTING": ("postrouting", -150, "filter"),
    },
    "nat": {
        "PREROUTING": ("prerouting", -100, "nat"),
        "INPUT": ("input", 100, "nat"),
        "OUTPUT": ("output", -100, "nat"),
        "POSTROUTING": ("postrouting", 100, "nat"),
    },
    "filter": {
        "INPUT": ("input", 0, "filter"),
        "FORWARD": ("forward", 0, "filter"),
        "OUTPUT": ("output", 0, "filter"),
    },
    "security": {
        "INPUT": ("input", 50, "filter"),
        "FORWARD": ("forward", 50, "filter"),
        "OUTPUT": ("output", 50, "filter"),
    },
}

# "-p all" (or 0) is every protocol
PROTOCOLS = {"all": None, "0": None, **IP_PROTOCOLS}

ICMP_TYPES: Dict[str, IcmpCode] = {
    "any": None, "echo-reply": (0,), "pong": (0,), "destination-unreachable": (3,),
    "network-unreachable": (3, 0), "host-unreachable": (3, 1), "protocol-unreachable": (3, 2),
    "port-unreachable": (3, 3), "fragmentation-needed": (3, 4), "source-route-failed": (3, 5),
    "network-unknown": (3, 6), "host-unknown": (3, 7), "network-prohibited": (3, 9),
    "host-prohibited": (3, 10), "TOS-network-unreachable": (3, 11),
    "TOS-host-unreachable": (3, 12), "communication-prohibited": (3, 13),
    "host-precedence-violation": (3, 14), "precedence-cutoff": (3, 15), "source-quench": (4,),
    "redirect": (5,), "network-redirect": (5, 0), "host-redirect": (5, 1),
    "TOS-network-redirect": (5, 2), "TOS-host-redirect": (5, 3), "echo-request": (8,),
    "ping": (8,), "router-advertisement": (9,), "router-solicitation": (10,),
    "time-exceeded": (11,), "ttl-exceeded": (11,), "ttl-zero-during-transit": (11, 0),
    "ttl-zero-during-reassembly": (11, 1), "parameter-problem": (12,),
    "ip-header-bad": (12, 0), "required-option-missing": (12, 1), "timestamp-request": (13,),
    "timestamp-reply": (14,), "address-mask-request": (17,), "address-mask-reply": (18,),
}
ICMPV6_TYPES: Dict[str, IcmpCode] = {
    "any": None, "destination-unreachable": (1,), "no-route": (1, 0),
    "communication-prohibited": (1, 1), "beyond-scope": (1, 2), "address-unreachable": (1, 3),
    "port-unreachable": (1, 4), "failed-policy": (1, 5), "reject-route": (1, 6),
    "packet-too-big": (2,), "time-exceeded": (3,), "ttl-exceeded": (3,),
    "ttl-zero-during-transit": (3, 0), "ttl-zero-during-reassembly": (3, 1),
    "parameter-problem": (4,), "bad-header": (4, 0), "unknown-header-type": (4, 1),
    "unknown-option": (4, 2), "echo-request": (128,), "ping": (128,), "echo-reply": (129,),
    "pong": (129,), "mld-listener-query": (130,), "mld-listener-report": (131,),
    "mld-listener-done": (132,), "mld-listener-reduction": (132,), "router-solicitation": (133,),
    "router-advertisement": (134,), "neighbour-solicitation": (135,),
    "neighbor-solicitation": (135,), "neighbour-advertisement": (136,),
    "neighbor-advertisement": (136,), "redirect": (137,), "mld2-listener-report": (143,),
}

# Targets that never end evaluation and do not change what later rules see.
CONTINUE_TARGETS = {
    "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "TRACE", "CLASSIFY", "DSCP", "TOS", "TCPMSS",
    "TTL", "HL", "SECMARK", "CONNSECMARK", "AUDIT", "CHECKSUM", "SET", "IDLETIMER", "LED",
    "RATEEST", "TEE", "ECN", "IPV4OPTSSTRIP", "TCPOPTSTRIP", "HMARK", "SNPT", "DNPT", "CT",
}
NAT_DONE_TARGETS = {"SNAT", "MASQUERADE"}

# Matches whose outcome depends on run-time state or packet details twinwall does not model.
# A rule using one "may match"; the evaluator names it in the explanation.
UNDECIDABLE_MATCHES = {
    "limit", "hashlimit", "recent", "connlimit", "mark", "connmark", "statistic", "time",
    "string", "u32", "length", "tos", "dscp", "ecn", "physdev", "policy",
    "socket", "helper", "connbytes", "ipv6header", "ah", "esp", "mh",
    "devgroup", "cgroup", "bpf", "realm", "quota", "nfacct", "cpu", "cluster", "osf", "geoip",
    "tcpmss", "mac", "ipvs", "condition", "account", "connlabel", "ipcomp", "l2tp", "srh",
    "eui64", "quota2", "nth", "random",
}

# -m hl (IPv6 hop limit) and -m ttl (IPv4 TTL): one dimension, the value the packet arrived with
HOPLIMIT_OPTIONS = {"--hl-eq": "eq", "--hl-lt": "lt", "--hl-gt": "gt", "--ttl-eq": "eq", "--ttl-lt": "lt", "--ttl-gt": "gt"}


def hop_limit(opt: str, value: str) -> IntervalSet:
    try:
        n = int(value)
    except ValueError:
        raise RuleSyntaxError(f"{opt} wants a number, got {value!r}") from None
    if not 0 <= n <= 255:
        raise RuleSyntaxError(f"{opt} {value}: out of range 0-255")
    op = HOPLIMIT_OPTIONS[opt]
    if op == "eq":
        return ((n, n),)
    if op == "lt":
        return ((0, n - 1),) if n > 0 else ()
    return ((n + 1, 255),) if n < 255 else ()


# IPv6 extension-header matches: a connection's plain first packet has no such header.
EXTENSION_HEADER_MATCHES = {"rt", "frag", "hbh", "dst"}

# matches compile_rule decides as a whole, whatever their options
_DECIDED_WHOLE = frozenset({"rpfilter"} | EXTENSION_HEADER_MATCHES)

# Matches twinwall decides exactly (their options are handled in _Compiler.match_option).
DECIDABLE_MATCHES = {
    "tcp", "udp", "udplite", "dccp", "sctp", "icmp", "icmp6", "icmpv6", "multiport", "state",
    "conntrack", "comment", "addrtype", "iprange", "owner", "pkttype", "rpfilter", "hl", "ttl",
    "set",  # decided where the snapshot holds the set's contents (ipset save), else undecidable
}

# xt_addrtype's IPv4 addresses that are BROADCAST whatever the routes say, and the types only
# routes other than local and broadcast ones give
_IPV4_BROADCAST = iv_normalize([prefix_interval("0.0.0.0/8", "ipv4"), prefix_interval("255.255.255.255", "ipv4")])
_ROUTE_TYPES = ("ANYCAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE")

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
_IFACE_SCAN = re.compile(r" (?:-i|-o|--in-interface|--out-interface) (\S+)")


class Quoted(str):
    """A token that was quoted in the source: always an argument, never an option."""


_COMMENT = re.compile(r' -m comment --comment (?:"(?:[^"\\]|\\.)*"|\S+)')


def tokenize(line: str) -> List[str]:
    if '"' not in line:
        return line.split()
    if " --comment " in line:
        # comments never change a verdict (kube-proxy puts one on every rule): drop them first
        # so the common line takes the fast path
        line = _COMMENT.sub("", line)
        if '"' not in line:
            return line.split()
    out: List[str] = []
    for m in _QUOTED.finditer(line):
        if m.group(1) is not None:
            out.append(Quoted(m.group(1).replace('\\"', '"').replace("\\\\", "\\")))
        else:
            out.append(m.group(2))
    return out


def _simple_matches_only(line: str) -> bool:
    """Whether every "-m" of the line loads tcp, udp or comment, the only matches _SIMPLE and
    _SOURCE_JUMP read (a hint: a quoted " -m " only sends the line to the general path)."""
    i = line.find(" -m ")
    while i >= 0:
        if not line.startswith(("tcp ", "udp ", "comment "), i + 4):
            return False
        i = line.find(" -m ", i + 4)
    return True


# the general path's built-in options (compile_general), each to what it is
_OPT_TARGET, _OPT_PROTOCOL, _OPT_SRC, _OPT_DST, _OPT_IIF, _OPT_OIF, _OPT_FRAGMENT, _OPT_MATCH, _OPT_COUNTERS = range(9)
_OPTION_CODE = {
    "-j": _OPT_TARGET, "--jump": _OPT_TARGET, "-g": _OPT_TARGET, "--goto": _OPT_TARGET,
    "-p": _OPT_PROTOCOL, "--protocol": _OPT_PROTOCOL,
    "-s": _OPT_SRC, "--source": _OPT_SRC, "--src": _OPT_SRC,
    "-d": _OPT_DST, "--destination": _OPT_DST, "--dst": _OPT_DST,
    "-i": _OPT_IIF, "--in-interface": _OPT_IIF, "-o": _OPT_OIF, "--out-interface": _OPT_OIF,
    "-f": _OPT_FRAGMENT, "--fragment": _OPT_FRAGMENT,
    "-m": _OPT_MATCH, "--match": _OPT_MATCH,
    "-c": _OPT_COUNTERS, "--set-counters": _OPT_COUNTERS,
}


class RuleSyntaxError(ValueError):
    pass


# The matches whose options are a closed set twinwall knows in full: any other option after one
# of them is a typo iptables-restore refuses ("-m tcp --dpot 22"), not a "may match". Like
# iptables (getopt_long), an unambiguous abbreviation is that option ("--dpo" is "--dport").
_CLOSED_MATCH_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "tcp": ("--sport", "--source-port", "--dport", "--destination-port", "--syn", "--tcp-flags",
            "--tcp-option"),
    "udp": ("--sport", "--source-port", "--dport", "--destination-port"),
    "icmp": ("--icmp-type",),
    "icmp6": ("--icmpv6-type",),
    "icmpv6": ("--icmpv6-type",),
    "multiport": ("--sports", "--source-ports", "--dports", "--destination-ports", "--ports"),
    "state": ("--state",),
    "comment": ("--comment",),
}
_BUILTIN_LONG_OPTIONS = tuple(o for o in _OPTION_CODE if o.startswith("--"))


@lru_cache(maxsize=4096)  # a ruleset repeats a few (matches, option) pairs
def _closed_match_option(loaded: Tuple[str, ...], opt: str) -> str:
    """The option *opt* spells when every match the rule loaded so far (*loaded*, "-p tcp"
    loading tcp) has a closed option set: the option in full, or RuleSyntaxError when it is none
    of theirs. Left as typed where another match may own it or an abbreviation is ambiguous."""
    if not loaded or any(m not in _CLOSED_MATCH_OPTIONS for m in loaded):
        return opt
    options = tuple(dict.fromkeys(o for m in loaded for o in _CLOSED_MATCH_OPTIONS[m]))
    if opt in options or any(o.startswith(opt) for o in _BUILTIN_LONG_OPTIONS):
        return opt
    spelled = [o for o in options if o.startswith(opt)]
    if len(spelled) == 1:
        return spelled[0]
    if not spelled:
        matches = " ".join(f"-m {m}" for m in dict.fromkeys(loaded))
        raise RuleSyntaxError(f"{matches}: no option {opt} (iptables-restore refuses the rule; "
                              f"the options: {', '.join(options)})")
    return opt


# The line shapes that make up nearly all of a big ruleset (kube-proxy's), in the order
# iptables-save prints their parts: addresses, interfaces, "-p tcp|udp", one quoted comment,
# "-m tcp|udp [--dport N]", a target and its options. _Compiler.compile_simple builds their
# Rule directly, with exactly what the general path (tokenize + compile_rule) makes of them;
# anything else (other matches, unquoted or misplaced comments, odd spacing) takes that path.
# (every word is followed by a space or the end: "(?![^ ])" says so, which stops the engine
# from trying every shorter prefix of a word against each optional part on a line that does not
# match, e.g. a router's "-s A -d B -p tcp -m state ...": 10 us a line, 4x less with it)
_ARG = r'[^\s"!-][^\s"]*(?![^ ])'
_SIMPLE = re.compile(
    r'-A [^\s"]+(?![^ ])'
    rf"(?:( !)? -s ({_ARG}))?"
    rf"(?:( !)? -d ({_ARG}))?"
    rf"(?:( !)? -i ({_ARG}))?"
    rf"(?:( !)? -o ({_ARG}))?"
    r"(?: -p (tcp|udp))?"
    r'(?: -m comment --comment "[^"\\]*(?:\\.[^"\\]*)*")?'
    r"(?: -m (?:tcp|udp)(?: --dport ([0-9]+))?)?"
    rf" -j ({_ARG})"
    r'((?: [^\s"]+)*)'
)
# the commonest of them by far (kube-proxy's loadBalancerSourceRanges, per-source accepts):
# "[-s PREFIX] [comment] -j T", and a chain's closing "-j RETURN"
_SOURCE_JUMP = re.compile(rf'-A [^\s"]+(?![^ ])(?: -s ({_ARG}))?(?: -m comment --comment "[^"\\]*(?:\\.[^"\\]*)*")? -j ({_ARG})')
# the words _SOURCE_JUMP allows right after the chain's name (which ends at the line's first
# space, wherever it matches): a line without one of them is not tried
_SOURCE_JUMP_NEXT = ("-s ", "-m ", "-j ")
# the words compile_addressed reads right after the chain's name
_ADDRESSES_FIRST = ("-s ", "-d ")
_SIMPLE_PROTO = {"tcp": ((6, 6),), "udp": ((17, 17),)}
_TCP_UDP = frozenset(_SIMPLE_PROTO)
# whether compile_chain reads the port dispatch's lines word by word (tests turn it off: the
# regular expressions then decide)
_BY_WORDS = True
# the constraints a simple line's "-p tcp|udp" and "--dport N" make, each built once (a chain
# per port repeats them in thousands of rules), and the alternatives of a line without matches
_SIMPLE_PROTO_CONSTRAINT = {name: (PROTO, value) for name, value in _SIMPLE_PROTO.items()}
_MATCH_ALL = ((),)
# the constraint of "--dport N" by the number's word, for the dispatch lines compile_chain reads
# by their words (at most one per port number a dump spells)
_DPORT_CONSTRAINTS: Dict[str, Tuple[int, IntervalSet]] = {}
# a word _ARG refuses to start with, or the empty word
_NOT_ARG_START = frozenset(("", "!", "-"))
# a short chain of source jumps only ("-A NAME [-s ADDRESS] -j TARGET" each, one block of the
# dump: the many small chains of a chain per service), read in one pass over its lines' words
# (_Compiler._source_chain) in place of the rule-by-rule path's checks line by line: the same
# words that path's word-by-word and _SOURCE_JUMP readings take, without a comment (a line it
# does not take sends the whole chain there). Tests turn it off to compare the two.
_SOURCE_CHAINS = True
# the lines it reads, as one regular expression: a block of more than _SOURCE_CHAIN_SPLIT lines
# whose first line it does not match is left to the rule-by-rule path at once, without a split
# of the block (a router's chains of hundreds of other rules; the shorter blocks of many small
# chains are split at once: the match would cost them ~20 ms of ~250 a family at 100k rules)
_SOURCE_CHAIN_LINE = re.compile(r'-A [^\s"]+(?: -s [^\s"!-][^\s"]*)? -j [^\s"!-][^\s"]*$', re.M)
_SOURCE_CHAIN_SPLIT = 16
# the sources whose rules' alternatives are shared (_Compiler._source_alternatives) at most
_SOURCES_REMEMBERED = 4096
# a chain of this many rules keeps its stretches of source jumps ("-s ADDR -j T", consecutive,
# one target) of STRETCH_MIN_RULES or more as RuleStretches (ruleset.RuleList), where the caller
# asks for them (parse_iptables_save): a blocklist's Rules are made only where read. Shorter
# chains and stretches are compiled rule by rule.
STRETCH_MIN_CHAIN = 1024
STRETCH_MIN_RULES = 64
# a run of rules of one chain, as iptables-save prints them: "-A NAME ..." lines, each ending in
# a newline, all naming the same chain; at most 4,096 lines a match (the engine keeps state per
# repetition: one match of a 100,000-rule chain held 15 MB, 180 MB at 1M, and took 3x as long),
# a longer run is the next match's, the chain's next piece
_RULE_BLOCK = re.compile(r"-A (\S+) [^\n]*\n(?:-A \1 [^\n]*\n){0,4095}")


# ---------------------------------------------------------------------------------------------
# pass 1: tables and chains


def parse_iptables_save(text: str, family: str, source: str = "iptables-save",
                        stretches: Union[bool, FrozenSet[str]] = False) -> Ruleset:
    """Split a saved ruleset into tables and chains; rules compile lazily per chain.

    iptables-save prints each chain's rules one after another: one regular-expression match
    takes a whole run of "-A <chain> ..." lines as one block of text, which is split into lines
    only if the chain is ever compiled. Every other line (tables, chain declarations, COMMIT,
    comments, counters, odd spacing) is read one by one.

    ``stretches``: a long chain's stretches of source jumps are kept as RuleStretches (see
    STRETCH_MIN_CHAIN), for a reader that reads such a chain as its runs and a few of its rules
    (the audit's walk); a set of actions: only the stretches of those (the diff's role walk
    lifts the stretches of terminal rules from their values, and reads every rule of any
    other: a jump's stretch would be made Rules after all, on top of itself)."""
    if family not in ("ipv4", "ipv6"):
        raise ValueError(family)
    ruleset = Ruleset(family=family, source=source)
    compiler = _Compiler(ruleset, stretches)
    table: Optional[Table] = None
    # chain -> pieces of its source: (first line number, a block of "-A" lines each ending in a
    # newline, or one line on its own); and chain -> how many rules they hold
    pending: Dict[str, List[Tuple[int, str]]] = {}
    counts: Dict[str, int] = {}
    block = _RULE_BLOCK.match
    size = len(text)
    pos = 0
    lineno = 0
    while pos < size:
        if table is not None:
            m = block(text, pos)
            if m is not None:
                name = m.group(1)
                piece = m.group()
                n = piece.count("\n")
                pieces = pending.get(name)
                if pieces is None:
                    pieces = _new_pending(table, pending, counts, name)
                pieces.append((lineno + 1, piece))
                counts[name] += n
                lineno += n
                pos = m.end()
                continue
        nl = text.find("\n", pos)
        if nl < 0:
            nl = size
        line = text[pos:nl].strip()
        pos = nl + 1
        lineno += 1
        if not line or line[0] == "#":
            continue
        c = line[0]
        if c == "[":  # "[packets:bytes] -A ..." from iptables-save -c
            end = line.find("]")
            line = line[end + 1 :].lstrip()
            c = line[:1]
        if c == "-":
            if table is None:
                raise InputError(f"{source}: line {lineno}: rule outside a table (no '*table' line before it)")
            if not line.startswith("-A ") and not line.startswith("--append "):
                raise InputError(
                    f"{source}: line {lineno}: expected '-A CHAIN ...', got {line[:60]!r}"
                    " (is this an iptables-save dump?)"
                )
            start = line.index(" ") + 1
            end = line.find(" ", start)
            name = line[start:] if end < 0 else line[start:end]
            pieces = pending.get(name)
            if pieces is None:
                pieces = _new_pending(table, pending, counts, name)
            pieces.append((lineno, line))
            counts[name] += 1
        elif c == ":":
            if table is None:
                raise InputError(f"{source}: line {lineno}: chain declared outside a table")
            parts = line[1:].split()
            if not parts:
                raise InputError(f"{source}: line {lineno}: empty chain declaration")
            policy = parts[1] if len(parts) > 1 and parts[1] != "-" else None
            if policy is not None and policy not in ("ACCEPT", "DROP"):
                raise InputError(f"{source}: line {lineno}: unknown chain policy {policy!r}")
            chain = table.chains[parts[0]] = Chain(table.name, parts[0], policy)
            chain.line = lineno  # where the policy is written, for findings about it
        elif c == "*":
            name = line[1:].strip()
            if table is not None:
                # iptables-restore refuses a table opened before the last one is committed
                raise InputError(
                    f"{source}: line {lineno}: table {table.name} has no COMMIT before '*{name}'"
                    " (truncated dump?)"
                )
            table = ruleset.tables.get(name) or Table(name)
            ruleset.tables[name] = table
            pending, counts = {}, {}
        elif line == "COMMIT":
            _finish_table(table, pending, counts, compiler)
            table = None
            pending, counts = {}, {}
        else:
            raise InputError(
                f"{source}: line {lineno}: not iptables-save syntax: {line[:60]!r}"
            )
    if table is not None:
        # iptables-restore applies nothing without it ("COMMIT expected"): the dump was cut short
        raise InputError(f"{source}: table {table.name} has no COMMIT (truncated dump?)")
    for tname, table in ruleset.tables.items():
        hooks = BUILTIN_CHAINS.get(tname, {})
        for cname, chain in table.chains.items():
            if cname in hooks:
                hook, prio, kind = hooks[cname]
                if chain.policy is None:
                    chain.policy = "ACCEPT"
                ruleset.base_chains.append(BaseChain(hook, prio, tname, cname, kind))
                if hook == "input" and kind != "nat":
                    _input_destinations(ruleset, chain)
    ruleset.interface_specs = sorted(set(_IFACE_SCAN.findall(text)))
    return ruleset


_DST_OPTIONS = ("-d", "--destination", "--dst")
_DST_OPTION = re.compile(r" (?:-d|--destination|--dst) ")
_SINGLE = {"ipv4": ("32", "255.255.255.255"), "ipv6": ("128",)}


def _input_destinations(ruleset: Ruleset, chain: Chain) -> None:
    """Add the single addresses ``chain``'s rules name as their destination (``-d ADDR``, not
    negated) to ``ruleset.input_destinations``, from its source: only the lines that hold such
    an option are split (a blocklist's 100,000 "-s" lines are searched, not read)."""
    found = ruleset.input_destinations
    seen = {d.address for d in found}
    af = AF_INET if ruleset.family == "ipv4" else AF_INET6
    single = _SINGLE[ruleset.family]
    number = 0
    for first, piece in chain.source:
        block = "\n" in piece
        if _DST_OPTION.search(piece) is None:  # (one search: three substring searches took twice as long)
            number += piece.count("\n") if block else 1
            continue
        for k, line in enumerate(piece.split("\n") if block else [piece]):
            if not line:
                continue
            number += 1
            if " -d " not in line and " --destination " not in line and " --dst " not in line:
                continue
            words = tokenize(line)  # (a quoted comment's " -d " is no option)
            for i, word in enumerate(words[:-1]):
                # (negated: "! -d ADDR", or the old "-d ! ADDR")
                if type(word) is Quoted or word not in _DST_OPTIONS or words[i - 1] == "!" or words[i + 1] == "!":
                    continue
                for spelled in words[i + 1].split(","):
                    address, _, mask = spelled.partition("/")
                    if (mask and mask not in single) or address in seen or not host_unicast(af, address):
                        continue
                    seen.add(address)
                    found.append(NamedDestination(address, chain.table, chain.name, number, first + k, None, line.strip()))
                    if len(seen) >= NAMED_DESTINATIONS:
                        return


def _new_pending(table: Table, pending: Dict[str, List[Tuple[int, str]]], counts: Dict[str, int], name: str) -> List[Tuple[int, str]]:
    if name not in table.chains:
        # iptables-restore would refuse this; a missing declaration is unambiguous
        table.chains[name] = Chain(table.name, name)
    counts[name] = 0
    pieces = pending[name] = []
    return pieces


def _finish_table(
    table: Optional[Table], pending: Dict[str, List[Tuple[int, str]]], counts: Dict[str, int], compiler: "_Compiler"
) -> None:
    if table is None:
        return
    compile_chain = compiler.compile_chain
    for name, pieces in pending.items():
        chain = table.chains[name]
        count = counts[name]
        if chain._rules is None:  # a table given twice: keep appending
            pieces = chain.source + pieces
            count += len(chain)
        elif chain._rules:
            raise InputError(f"chain {table.name} {name} given twice")
        chain.set_source(pieces, compile_chain, count)


def _source_lines(pieces: List[Tuple[int, str]]) -> Tuple[List[str], List[int]]:
    """A chain's rule lines from its source pieces (blocks of lines, or single lines), and the
    line of the dump each one is on."""
    lines: List[str] = []
    numbers: List[int] = []
    for first, piece in pieces:
        if "\n" in piece:
            block = [line.rstrip() for line in piece.split("\n") if line]
            lines.extend(block)
            numbers.extend(range(first, first + len(block)))
        else:
            lines.append(piece)
            numbers.append(first)
    return lines, numbers


def _positions(numbers: List[int]) -> List[int]:
    """1, 2, ... len(numbers): the rules' positions in their chain, as the very int objects of
    their line ``numbers`` where those are equal (the lines of one block, numbered on from its
    first): a 100,000-rule chain holds one int per rule for both, not two."""
    count = len(numbers)
    first = numbers[0] if numbers else 0
    if 1 <= first <= count and numbers[-1] - first == count - 1:
        shared = numbers[:count - first + 1]
        if shared == list(range(first, count + 1)):  # (numbered on, one by one)
            return list(range(1, first)) + shared
    return list(range(1, count + 1))


def _segments(pieces: List[Tuple[int, str]], count: int, chain: str, long_chain: bool) -> List[Tuple[int, int, Optional[str]]]:
    """The ``count`` lines of a chain (named ``chain``) whose source is ``pieces`` (as
    _source_lines reads them) as consecutive spans (first, last, target): the spans of
    STRETCH_MIN_RULES or more "-A CHAIN -s ADDRESS -j TARGET" lines of one target in a long
    chain (no quote, no whitespace but the single spaces, no word that starts with "!" or "-":
    lines the rule-by-rule path reads word by word, and as they are in the dump), with that
    target; every other span with None. The blocks of the dump are searched as they are (a
    line in one is a line of the chain, in order), not the chain's lines joined again."""
    if not long_chain:
        return [(0, count, None)]
    name = re.escape(chain)
    # (a match holds at most 1,024 lines: the engine keeps a little state per repetition;
    # matches that follow one another with the same target are joined below)
    spans = re.compile(rf'^-A {name} -s [^\s"!-][^\s"]* -j ([^\s"!-][^\s"]*)\n'
                       rf'(?:-A {name} -s [^\s"!-][^\s"]* -j \1\n){{0,1023}}', re.M)
    found: List[List] = []  # [first line, last line, target] of each span
    line = 0  # the first line of the piece
    for _, piece in pieces:
        if "\n" not in piece:  # (a line of its own)
            line += 1
            continue
        at = line  # the line the piece's offset ``pos`` starts
        pos = 0
        for m in spans.finditer(piece):
            start, end = m.span()
            at += piece.count("\n", pos, start)
            n = piece.count("\n", start, end)
            if found and found[-1][1] == at and found[-1][2] == m.group(1):
                found[-1][1] += n
            else:
                found.append([at, at + n, m.group(1)])
            at += n
            pos = end
        line += piece.count("\n")
    out: List[Tuple[int, int, Optional[str]]] = []
    done = 0  # lines[:done] are in ``out``
    for first, last, target in found:
        if last - first >= STRETCH_MIN_RULES:
            if first > done:
                out.append((done, first, None))
            out.append((first, last, target))
            done = last
    if done < count or not out:
        out.append((done, count, None))
    return out


def _one_prefix(spec: str, af: int, one: str) -> Optional[IntervalSet]:
    """What parse_addresses makes of ``spec`` where it is one address with its full prefix
    length (``one``: "/32", "/128") or one ADDRESS/LENGTH, in the plain form iptables-save
    prints a source in and inet_pton reads; None otherwise (the general reading decides, and
    words what is wrong). kube-proxy's "-s PREFIX" name 70,000-80,000 distinct prefixes a family:
    ~1 us each here, ~1.7 us through parse_addresses and prefix."""
    if spec.endswith(one):
        try:
            v = int.from_bytes(inet_pton(af, spec[:-len(one)]), "big")
        except OSError:
            return None
        return ((v, v),)
    addr, sep, length = spec.partition("/")
    if sep and length.isdigit():
        plain = plain_prefix(addr, int(length), 32 if af == AF_INET else 128)
        if plain is not None:
            return (plain,)
    return None


# (int.from_bytes as map calls it: bytes and byte order)
_from_bytes = cast(Callable[[bytes, str], int], int.from_bytes)


def _single_addresses(lines: List[str], first: int, last: int, head: int, tail: str, af: int,
                      one: str) -> Optional[Tuple[List[IntervalSet], List[str]]]:
    """The values of the "-A CHAIN -s ADDRESS/LEN -j TARGET" lines ``lines[first:last]`` (the
    address from ``head`` characters in, up to ``tail``, " -j TARGET") where each is one address
    (``one``: "/32", "/128") that inet_pton reads and every line is printable (as the
    rule-by-rule path asks), and their addresses RuleStretch.BLOCK at a time, joined by
    newlines (RuleStretch.blocks); None otherwise."""
    cut = len(one) + len(tail)
    ending = one + tail
    values: List[IntervalSet] = []
    blocks: List[str] = []
    for start in range(first, last, RuleStretch.BLOCK):
        chunk = lines[start:min(start + RuleStretch.BLOCK, last)]
        if not all(map(str.isprintable, chunk)) or not all(map(str.endswith, chunk, repeat(ending))):
            return None
        addresses = [line[head:-cut] for line in chunk]
        try:
            packed = list(map(inet_pton, repeat(af), addresses))
        except OSError:
            return None
        values += [((v, v),) for v in map(_from_bytes, packed, repeat("big"))]
        blocks.append("\n".join(addresses))
    return values, blocks


# ---------------------------------------------------------------------------------------------
# pass 2: compiling one chain's rules


class _Compiler:
    def __init__(self, ruleset: Ruleset, stretches: Union[bool, FrozenSet[str]] = False):
        self.ruleset = ruleset
        self.stretches = stretches  # (see parse_iptables_save)
        self.family = ruleset.family
        self.addr_full = address_space(self.family)
        self._addr_cache: Dict[str, IntervalSet] = {}
        # (table, JUMP|GOTO, target) -> action, for the targets whose action needs nothing
        # else (see set_target); compiling starts after parsing, when every chain is known
        self._actions: Dict[Tuple[str, str, str], str] = {}
        # "-s PREFIX" -> the alternatives of a rule that matches only that: one tuple for every
        # rule of the same source (per-source accepts repeat a few hundred); in place of the
        # _addr_cache entry, which is left to the other paths
        self._source_alternatives: Dict[str, Tuple] = {}
        # (table, the words after "-s A -d B") -> the Rule the general path makes of those
        # words alone: a router's per-host rules repeat a few hundred of them with other
        # addresses (compile_addressed)
        self._templates: Dict[Tuple[str, str], Rule] = {}
        # table -> {target: (its one string, its action)} of the targets a source jump's fast
        # path has read the action of (kept across chains: many small chains all end in the
        # same ACCEPT and RETURN); a target whose action the fast path cannot tell is asked
        # again, as _actions learns it
        self._source_jumps: Dict[str, Dict[str, Tuple[str, str]]] = {}

    def compile_chain(self, chain: Chain, pieces: List[Tuple[int, str]]) -> Sequence[Rule]:
        if len(pieces) == 1 and _SOURCE_CHAINS:
            quick = self._source_chain(chain, pieces[0])
            if quick is not None:
                return quick
        lines, numbers = _source_lines(pieces)
        rules: List[Optional[Rule]] = []
        # the stretches of source jumps (a long chain's only; see STRETCH_MIN_CHAIN), their
        # rules None in ``rules``
        stretches: List[RuleStretch] = []
        stretch: Optional[RuleStretch] = None
        long_chain = bool(self.stretches) and len(lines) >= STRETCH_MIN_CHAIN
        # the actions a stretch may have (None: any)
        kept_actions = self.stretches if isinstance(self.stretches, frozenset) else None
        simple = _SIMPLE.fullmatch
        source_jump = _SOURCE_JUMP.fullmatch
        source_alternatives = self._source_alternatives
        table, name = chain.table, chain.name
        jumps = self._source_jumps.get(table)
        if jumps is None:
            jumps = self._source_jumps[table] = {}
        af = AF_INET if self.family == "ipv4" else AF_INET6
        one = "/32" if self.family == "ipv4" else "/128"  # (a single address's prefix length)
        by_words = _BY_WORDS
        positions = _positions(numbers)
        actions = self._actions
        table_chains = self.ruleset.tables[table].chains
        for first, last, bulk in _segments(pieces, len(lines), name, long_chain):
            if bulk is not None:
                # a span of "-A CHAIN -s ADDRESS -j TARGET" lines, one target (_segments): read
                # as a whole where every address is one the rule-by-rule path reads with
                # inet_pton (the same values), each rule then a stretch's as that path makes it
                known = jumps.get(bulk)
                target, action = known if known is not None else self._jump_target(table, jumps, bulk)
                tail = " -j " + target
                read = (_single_addresses(lines, first, last, len(name) + 7, tail, af, one)
                        if action and (kept_actions is None or action in kept_actions) else None)
                if read is not None and action is not None:
                    # (a stretch of its own, its texts the addresses between the words all share)
                    stretch = RuleStretch(len(rules), SRC, action, target)
                    stretches.append(stretch)
                    stretch.values, stretch.blocks = read
                    stretch.head, stretch.ending = f"-A {name} -s ", one + tail
                    stretch.end += last - first
                    rules.extend(repeat(None, last - first))
                    continue
            for n, line in (zip(positions, lines) if first == 0 and last == len(lines)
                            else zip(positions[first:last], lines[first:last])):
                try:
                    spaces = line.count(" ")
                    parts: Sequence[str] = line.split(" ") if spaces == 5 or (spaces == 9 and by_words) else ()  # (others: no list)
                    if (len(parts) == 10 and parts[2] == "-p" and parts[6] == "--dport" and parts[8] == "-j"
                            and parts[0] == "-A" and parts[1] and parts[3] in _TCP_UDP and parts[4] == "-m"
                            and parts[5] in _TCP_UDP and parts[7].isascii() and parts[7].isdigit()
                            and parts[9][:1] not in _NOT_ARG_START and '"' not in line and line.isprintable()):
                        # "-A CHAIN -p tcp -m tcp --dport N -j TARGET" (a dispatch by port, a chain per
                        # service): _SIMPLE's groups of it, without the regex (the same words, as
                        # for the source jumps below)
                        target, port = parts[9], parts[7]
                        action = actions.get((table, Action.JUMP, target)) or self._chain_jump(table, target)
                        dport = _DPORT_CONSTRAINTS.get(port)
                        if dport is None and int(port) <= 65535:
                            # (ports' value of a number, remembered: a chain per port names
                            # thousands of them once each, a kube-proxy dump a few thousands of times)
                            number = int(port)
                            dport = _DPORT_CONSTRAINTS[port] = (DPORT, ((number, number),))
                        if action is not None and dport is not None:
                            # (a target whose action is known: the Rule compile_groups makes of the
                            # groups, without their tuple and _simple_alternatives' loop over the
                            # four address and interface dimensions the line has none of)
                            if action == Action.JUMP:
                                jumped = table_chains.get(target)
                                if jumped is not None:
                                    target = jumped.name
                            rules.append(Rule(table, name, n, line, ((_SIMPLE_PROTO_CONSTRAINT[parts[3]], dport),), (), action,
                                              target))
                            continue
                        rule = self.compile_groups(chain, n, line, (None, None, None, None, None, None, None, None,
                                                                    parts[3], parts[7], target, ""))
                        rules.append(rule if rule is not None else self.compile_general(chain, n, line))
                        continue
                    if (len(parts) == 6 and parts[2] == "-s" and parts[4] == "-j" and parts[0] == "-A" and parts[1]
                            and parts[3][:1] not in _NOT_ARG_START and parts[5][:1] not in _NOT_ARG_START
                            and '"' not in line and line.isprintable()):
                        # "-A CHAIN -s ADDRESS -j TARGET" (a blocklist's 100,000 lines): what
                        # _SOURCE_JUMP reads of it, without the regex (no empty word, no quote, no
                        # whitespace but the spaces: every other one is unprintable; exactly the
                        # lines it matches with both parts)
                        src, target = parts[3], parts[5]
                        found = True
                    elif ('"' not in line and line.startswith(_ADDRESSES_FIRST, line.find(" ", 3) + 1)
                          and not _simple_matches_only(line)):
                        # (addresses, then a match neither regular expression reads: a router's
                        # per-host "-s A -d B -p tcp -m state ...", "-s A -m mac ..."; a line with a
                        # comment, kube-proxy's, takes the regular expressions first)
                        rule = self.compile_addressed(chain, n, line)
                        rules.append(rule if rule is not None else self.compile_general(chain, n, line))
                        continue
                    elif line.startswith(_SOURCE_JUMP_NEXT, line.find(" ", 3) + 1):
                        sj = source_jump(line)
                        found = sj is not None
                        if sj is not None:
                            src, target = sj.groups()
                    else:
                        # (the word after the chain's name is none _SOURCE_JUMP allows there)
                        found = False
                    if found:
                        # what compile_simple makes of it, without the general regex
                        known = jumps.get(target)
                        if known is not None:
                            target, action = known
                        else:
                            target, action = self._jump_target(table, jumps, target)
                        if action is not None and long_chain and src is not None \
                                and (kept_actions is None or action in kept_actions):
                            # a rule of a stretch: its value, no Rule nor constraint tuples
                            value = _one_prefix(src, af, one)
                            if (stretch is None or stretch.end != len(rules) or stretch.target is not target
                                    or stretch.action != action or stretch.blocks):
                                stretch = RuleStretch(len(rules), SRC, action, target)
                                stretches.append(stretch)
                            stretch.values.append(value or self.addresses(src))
                            stretch.texts.append(line)
                            stretch.end += 1
                            rules.append(None)
                            continue
                        if action is not None:
                            alternatives = source_alternatives.get(src) if src is not None else _MATCH_ALL
                            if alternatives is None:
                                alternatives = self._new_source_alternatives(src, af, one)
                            rules.append(Rule(table, name, n, line, alternatives, (), action, target))
                            continue
                    m = simple(line)
                    rule = self.compile_simple(chain, n, line, m) if m is not None else self.compile_addressed(chain, n, line)
                    rules.append(rule if rule is not None else self.compile_general(chain, n, line))
                except (RuleSyntaxError, ValueError, IndexError) as exc:
                    raise InputError(
                        f"{self.ruleset.source}: {chain.table} {chain.name} rule {n}: {exc}: {line[:120]}"
                    ) from None
        kept: List[RuleStretch] = []
        for stretch in stretches:
            start = stretch.start
            # (line numbers only grow: consecutive ones when the first and last are as far apart
            # as the rules, as in one block of the dump)
            first, last = numbers[start], numbers[stretch.end - 1]
            count = stretch.end - start
            stretch.lines = range(first, first + count) if last - first == count - 1 else numbers[start:stretch.end]
            if count < STRETCH_MIN_RULES:
                # (too short to be worth it: the Rules a rule-by-rule compile makes)
                for position in range(start, stretch.end):
                    rules[position] = stretch.rule(table, name, position)
                continue
            kept.append(stretch)
        for rule, lineno in zip(rules, numbers):
            if rule is not None:
                rule.line = lineno
        if kept:
            return RuleList(table, name, rules, kept)
        return rules  # type: ignore[return-value]  # (no stretch left: no None in it)

    def _new_source_alternatives(self, src: str, af: int, one: str) -> Tuple:
        """The alternatives of a source jump's "-s ``src``" (not in _source_alternatives yet),
        remembered there for the rules of the same source."""
        value = _one_prefix(src, af, one) or self._addr_cache.get(src) or self.parse_addresses(src)
        if len(self._source_alternatives) >= _SOURCES_REMEMBERED:
            self._source_alternatives.clear()  # (a blocklist's never repeat)
        alternatives = self._source_alternatives[src] = (((SRC, value),),)
        return alternatives

    def _jump_target(self, table: str, jumps: Dict[str, Tuple[str, str]], target: str) -> Tuple[str, Optional[str]]:
        """A source jump's target not in ``jumps`` yet: (its one string, its action or None),
        remembered in ``jumps`` when known. (One string per target, not per rule jumping to it;
        a target whose action is not known yet is asked again: the general path of the rule
        learns a built-in one, a chain's first "-s A -j DROP" for the 100,000 after it; the ones
        known are kept for the table's other chains.)"""
        target = intern(target)
        action = self._actions.get((table, Action.JUMP, target)) or self._chain_jump(table, target)
        if action is not None:
            jumps[target] = (target, action)
        return target, action

    def _source_chain(self, chain: Chain, piece: Tuple[int, str]) -> Optional[List[Rule]]:
        """compile_chain of a chain whose source is one block of source jumps (see
        _SOURCE_CHAINS), each line's Rule as the rule-by-rule path makes it (the same
        alternatives, action and interned target); None where a line is no such jump, is not
        printable, or jumps to a target whose action is not known yet (that path learns it).
        (One pass: the words split and checked, then the Rule made, line by line; the regular
        expression's search of the block then a loop over what it found cost ~12% more, 25-35
        ms of many small chains' 100k-rule compile a family.)"""
        first, block = piece
        if '"' in block:
            return None  # (a kube-proxy service chain's "-m comment" lines, told at once)
        count = block.count("\n")  # (a block's lines each end in one: _RULE_BLOCK)
        if not count or count >= STRETCH_MIN_CHAIN:
            return None  # (a line on its own; a long chain, which may keep stretches)
        if count > _SOURCE_CHAIN_SPLIT and _SOURCE_CHAIN_LINE.match(block) is None:
            return None  # (a longer block whose first line is no source jump: not split)
        lines = block.split("\n")
        lines.pop()  # (the empty string after the last newline)
        if not block.replace("\n", "").isprintable():
            return None  # (an unprintable character)
        table, name = chain.table, chain.name
        jumps = self._source_jumps.get(table)
        if jumps is None:
            jumps = self._source_jumps[table] = {}
        source_alternatives = self._source_alternatives
        af = AF_INET if self.family == "ipv4" else AF_INET6
        one = "/32" if self.family == "ipv4" else "/128"
        rules: List[Rule] = []
        n = 0
        try:
            for n, line in enumerate(lines, 1):
                # "-A NAME [-s ADDRESS] -j TARGET", read from its words: no empty word, no quote,
                # no whitespace but the spaces (the block is printable), an address and target
                # that start as _ARG's words do
                p = line.split(" ")
                k = len(p)
                if k == 6 and p[2] == "-s" and p[4] == "-j":
                    src, target = p[3], p[5]
                    if src[:1] in _NOT_ARG_START:
                        return None
                elif k == 4 and p[2] == "-j":
                    src, target = "", p[3]
                else:
                    return None
                if p[0] != "-A" or not p[1] or target[:1] in _NOT_ARG_START:
                    return None
                known = jumps.get(target)
                if known is not None:
                    target, action = known
                else:
                    target, learnt = self._jump_target(table, jumps, target)
                    if learnt is None:
                        return None
                    action = learnt
                if src:
                    alternatives = source_alternatives.get(src) or self._new_source_alternatives(src, af, one)
                else:
                    alternatives = _MATCH_ALL
                rules.append(Rule(table, name, n, line, alternatives, (), action, target, None, first + n - 1))
        except (RuleSyntaxError, ValueError, IndexError) as exc:
            raise InputError(
                f"{self.ruleset.source}: {chain.table} {chain.name} rule {n}: {exc}: {lines[n - 1][:120]}"
            ) from None
        return rules

    # -- values ------------------------------------------------------------------------------

    def addresses(self, spec: str) -> IntervalSet:
        cached = self._addr_cache.get(spec)
        if cached is None:
            cached = self._addr_cache[spec] = self.parse_addresses(spec)
        return cached

    def parse_addresses(self, spec: str) -> IntervalSet:
        """``addresses`` without the memo (for a caller that remembers the result its own way)."""
        if "," in spec:
            return iv_normalize(self.prefix(p) for p in spec.split(","))
        return (tuple(self.prefix(spec)),)  # one prefix: what iv_normalize makes of its single pair

    def prefix(self, spec: str):
        """One address or prefix; over IPv4, as iptables reads it, an address of fewer than four
        parts is completed with zeros ("0/0", "10/8")."""
        if self.family == "ipv4" and spec.count(".") < 3:
            addr, sep, length = spec.partition("/")
            parts = addr.split(".")
            if all(p.isdigit() for p in parts):
                spec = ".".join(parts + ["0"] * (4 - len(parts))) + sep + length
        return prefix_interval(spec, self.family)

    def address_range(self, spec: str) -> IntervalSet:
        lo, _, hi = spec.partition("-")
        a = prefix_interval(lo, self.family)[0]
        b = prefix_interval(hi or lo, self.family)[0]
        return ((min(a, b), max(a, b)),)

    def iface(self, spec: str) -> int:
        return self.ruleset.universe.mask(spec)

    # -- one rule ----------------------------------------------------------------------------

    def compile_simple(self, chain: Chain, number: int, line: str, m) -> Optional[Rule]:
        """The Rule of a line matching _SIMPLE (None: let the general path decide)."""
        return self.compile_groups(chain, number, line, m.groups())

    def compile_groups(self, chain: Chain, number: int, line: str, groups: tuple) -> Optional[Rule]:
        """compile_simple of _SIMPLE's groups of the line."""
        neg_s, src, neg_d, dst, neg_i, iif, neg_o, oif, proto, dport, target, rest = groups
        if rest:
            if "--comment" in rest:
                return None  # tokenize would drop it from the target's options
            if target == "DNAT" or target == "REDIRECT" or target == "CT":
                return self._compile_simple(chain, number, line, groups)
        action = self._actions.get((chain.table, Action.JUMP, target)) or self._chain_jump(chain.table, target)
        if action is None:
            return self._compile_simple(chain, number, line, groups)
        alternatives = self._simple_alternatives(groups)
        if action == Action.JUMP:
            # the chain's own name, not the word cut from this line (a dispatch table's
            # thousands of jumps, each to a chain of its own: a string each fewer)
            jumped = self.ruleset.tables[chain.table].chains.get(target)
            if jumped is not None:
                target = jumped.name
        return Rule(chain.table, chain.name, number, line, alternatives, (), action, target)

    def _chain_jump(self, table: str, target: str) -> Optional[str]:
        """JUMP when ``target`` is a chain of ``table`` (as _set_target decides, which tries the
        built-in verdicts first), remembered in _actions; None otherwise."""
        if target in (Action.ACCEPT, Action.DROP, Action.REJECT, Action.RETURN):
            return None
        t = self.ruleset.tables.get(table)
        if t is None or target not in t.chains:
            return None
        self._actions[(table, Action.JUMP, target)] = Action.JUMP
        return Action.JUMP

    def _compile_simple(self, chain: Chain, number: int, line: str, groups) -> Rule:
        target, rest = groups[10], groups[11]
        rule = Rule(chain.table, chain.name, number, line)
        rule.alternatives = self._simple_alternatives(groups)
        rule.unknown = ()
        self.set_target(rule, chain, Action.JUMP, target, rest.split() if rest else [])
        return rule

    def _simple_alternatives(self, groups) -> Tuple:
        neg_s, src, neg_d, dst, neg_i, iif, neg_o, oif, proto, dport, target, rest = groups
        conj = []
        never = False
        # in the order of the general path, so errors and constraint order are the same (an
        # empty value does not stop the later ones from being checked)
        addr_cache = self._addr_cache
        for dim, spec, neg in ((SRC, src, neg_s), (DST, dst, neg_d), (IIF, iif, neg_i), (OIF, oif, neg_o)):
            if spec is None:
                continue
            value: DimValue
            if dim == SRC or dim == DST:
                value = addr_cache.get(spec) or self.addresses(spec)
            else:
                value = self.iface(spec)
            if neg:
                value = self.complement(dim, value)
            never = never or not value
            conj.append((dim, value))
        if proto is not None:
            conj.append(_SIMPLE_PROTO_CONSTRAINT[proto])
        if dport is not None:
            conj.append(_dport_constraint(dport))
        if never:
            return ()
        return (tuple(conj),) if conj else _MATCH_ALL

    def compile_rule(self, chain: Chain, number: int, line: str) -> Rule:
        m = _SIMPLE.fullmatch(line)
        if m is not None:
            rule = self.compile_simple(chain, number, line, m)
            if rule is not None:
                return rule
        return self.compile_general(chain, number, line)

    def compile_addressed(self, chain: Chain, number: int, line: str) -> Optional[Rule]:
        """The Rule of "-A CHAIN [-s A] [-d B] WORDS" (at least one of them, neither negated):
        the addresses joined to what the general path makes of WORDS, compiled once per table
        (None: let the general path decide; WORDS that constrain an address themselves)."""
        head, _, rest = line.partition(" ")
        _, _, rest = rest.partition(" ")  # (the chain's name)
        if not rest.startswith(("-s ", "-d ")):
            return None
        src: Optional[str] = None
        dst: Optional[str] = None
        if rest.startswith("-s "):
            _, src, rest = rest.split(" ", 2) if rest.count(" ") >= 2 else (None, None, "")
        if rest.startswith("-d "):
            _, dst, rest = rest.split(" ", 2) if rest.count(" ") >= 2 else (None, None, "")
        if (head != "-A" or not rest.startswith("-") or src is None and dst is None
                or src is not None and (src[:1] in _NOT_ARG_START or '"' in src)
                or dst is not None and (dst[:1] in _NOT_ARG_START or '"' in dst)):
            return None
        # (the addresses first: the general path reads them, and finds their errors, first)
        addresses: Tuple[Tuple[int, DimValue], ...]
        if src is not None and dst is not None:
            addresses = ((SRC, self.addresses(src)), (DST, self.addresses(dst)))
        elif src is not None:
            addresses = ((SRC, self.addresses(src)),)
        elif dst is not None:
            addresses = ((DST, self.addresses(dst)),)
        else:
            return None  # (never: one of them is there)
        key = (chain.table, rest)
        template = self._templates.get(key)
        if template is None:
            template = self.compile_general(chain, number, f"-A {chain.name} {rest}")
            if any(dim == SRC or dim == DST for alt in template.alternatives for dim, _ in alt):
                return None  # (the words match an address too: the general path intersects them)
            if len(self._templates) >= _SOURCES_REMEMBERED:
                self._templates.clear()
            self._templates[key] = template
        # the general path's constraints in its order: the addresses (read first), then the
        # words' (a match's alternatives never name an address, checked above)
        alts = template.alternatives
        alternatives = (addresses + alts[0],) if len(alts) == 1 else tuple(addresses + alt for alt in alts)
        return Rule(chain.table, chain.name, number, line, alternatives, template.unknown, template.action,
                    template.target, template.nat_to)

    def compile_general(self, chain: Chain, number: int, line: str) -> Rule:
        tokens = tokenize(line)
        rule = Rule(chain.table, chain.name, number, line)
        conj: Dict[int, DimValue] = {}
        # constraints some of which must hold, one list per match (multiport --ports,
        # addrtype per interface)
        disjunctions: List[List[Dict[int, object]]] = []
        addrtypes: List[Dict[str, AddrtypeOption]] = []  # one per "-m addrtype": its options
        unknown: List[str] = []
        never = False
        negate = False
        module = ""
        loaded: Tuple[str, ...] = ()  # the matches loaded so far, "-p tcp" loading tcp
        proto_name = ""
        i = 2  # skip "-A CHAIN"
        n = len(tokens)
        target = ""
        target_args: List[str] = []
        kind = Action.JUMP
        rpfilter = False

        def add(dim: int, value, neg: bool) -> None:
            nonlocal never
            if neg:
                value = self.complement(dim, value)
            old = conj.get(dim)
            if old is None:
                conj[dim] = value
            elif isinstance(value, int):  # a mask dimension: the old value is a mask too
                conj[dim] = cast(int, old) & value
            else:
                conj[dim] = iv_and(cast(IntervalSet, old), value)
            if not conj[dim]:
                never = True

        opt_code = _OPTION_CODE.get
        while i < n:
            tok = tokens[i]
            i += 1
            if tok == "!":
                negate = True
                continue
            # the option's arguments: the tokens up to the next option or "!" (a quoted token is
            # always an argument; an unquoted one is never empty)
            j = i
            while j < n:
                t = tokens[j]
                if t.__class__ is str and ((t[0] == "-" and len(t) > 1) or t == "!"):
                    break
                j += 1
            args: List[str] = tokens[i:j]
            i = j
            neg, negate = negate, False
            code = opt_code(tok)
            if code is None:
                pass
            elif code == _OPT_SRC or code == _OPT_DST:
                add(SRC if code == _OPT_SRC else DST, self.addresses(args[0]), neg)
                continue
            elif code == _OPT_MATCH:
                module = args[0]
                loaded += (module,)
                if module == "addrtype":
                    addrtypes.append({})
                if module in EXTENSION_HEADER_MATCHES:
                    # needs an IPv6 extension header; a plain connection packet carries none
                    never = True
                elif module == "rpfilter":
                    rpfilter = True
                elif module in UNDECIDABLE_MATCHES or module not in DECIDABLE_MATCHES:
                    unknown.append(module)
                continue
            elif code == _OPT_TARGET:
                if not args:
                    raise RuleSyntaxError("target missing")
                kind = Action.GOTO if tok in ("-g", "--goto") else Action.JUMP
                target = args[0]
                # everything after the target belongs to it
                target_args = tokens[i:]
                break
            elif code == _OPT_PROTOCOL:
                proto_name = args[0].lower()
                value = self.protocol(proto_name)
                if value is not None:
                    add(PROTO, value, neg)
                if proto_name in PORT_PROTOCOLS or proto_name in ("icmp", "icmpv6", "ipv6-icmp"):
                    module = proto_name
                    loaded += ("icmp6" if proto_name == "ipv6-icmp" else proto_name,)
                continue
            elif code == _OPT_IIF or code == _OPT_OIF:
                add(IIF if code == _OPT_IIF else OIF, self.iface(args[0]), neg)
                continue
            elif code == _OPT_FRAGMENT:
                # Only non-first fragments match -f; a connection's first packet never does.
                if not neg:
                    never = True
                continue
            else:  # _OPT_COUNTERS
                continue
            if not tok.startswith("--"):
                raise RuleSyntaxError(f"unexpected {tok!r}")
            if module == "addrtype" and addrtypes:
                addrtypes[-1][tok] = (args[0] if args else None, neg)
                continue
            tok = _closed_match_option(loaded, tok)
            self.match_option(module, tok, args, neg, add, unknown, disjunctions)
        for options in addrtypes:
            self.addrtype(options, add, unknown, disjunctions)
        if rpfilter and "--invert" in tokens[: tokens.index("-j") if "-j" in tokens else len(tokens)]:
            # rpfilter passes a remote client whose address routes back through the interface
            # it came in on (the legitimate connections this audit is about); --invert then
            # never matches them
            never = True
        if never:
            rule.alternatives = ()
        elif disjunctions:
            merged = [conj]
            for choices in disjunctions:
                merged = [m for m in (conjoin(a, b) for a in merged for b in choices) if m is not None]
            rule.alternatives = tuple(tuple(m.items()) for m in merged)
        else:
            rule.alternatives = (tuple(conj.items()),)
        rule.unknown = tuple(dict.fromkeys(unknown))
        self.set_target(rule, chain, kind, target, target_args)
        return rule

    def protocol(self, name: str) -> Optional[Tuple]:
        if name in PROTOCOLS:
            num = PROTOCOLS[name]
        elif name.isdigit():
            num = int(name)
            if num == 0:
                return None
        else:
            raise RuleSyntaxError(f"unknown protocol {name!r}")
        if num is None:
            return None
        return ((num, num),)

    def complement(self, dim: int, value):
        ifaces = self.ruleset.universe.all_mask if dim == IIF or dim == OIF else 0
        return value_complement(dim, value, self.family, ifaces)

    # -- match options -----------------------------------------------------------------------

    def set_match(self, opt, args, neg, add, unknown) -> None:
        """``-m set --match-set NAME src|dst``: the set's addresses, read from ``ipset save``
        (parsers.ipset_save). Unknown contents, a set of ports or pairs, several flags (a pair
        of dimensions), counter matches: undecidable."""
        if opt in ("--update-counters", "--update-subcounters"):
            return  # ("! --update-counters": bookkeeping only)
        if opt != "--match-set" or len(args) < 2:
            unknown.append(f"set {opt}")
            return
        name, flags = args[0], args[1].split(",")
        ipset = (self.ruleset.ipsets or {}).get(name)
        if ipset is None or ipset.members is None or ipset.family != self.family or len(flags) != 1 \
                or flags[0] not in ("src", "dst"):
            unknown.append(f"set {name}")
            return
        add(SRC if flags[0] == "src" else DST, ipset.members, neg)

    def match_option(self, module, opt, args, neg, add, unknown, disjunctions) -> None:
        if module in _DECIDED_WHOLE:
            return  # decided as a whole in compile_rule
        if module in UNDECIDABLE_MATCHES:
            if module == "recent" and opt == "--set" and not neg and "recent" in unknown:
                # "--set" only records the source: it always matches
                unknown.remove("recent")
            return
        if module == "set":
            self.set_match(opt, args, neg, add, unknown)
            return
        # (the values below are remembered by their text: a ruleset repeats a few of them)
        if opt in ("--dport", "--destination-port"):
            add(DPORT, _port(args[0]), neg)
        elif opt in ("--sport", "--source-port"):
            add(SPORT, _port(args[0]), neg)
        elif opt in ("--dports", "--destination-ports"):
            add(DPORT, _port_list(args[0]), neg)
        elif opt in ("--sports", "--source-ports"):
            add(SPORT, _port_list(args[0]), neg)
        elif opt == "--ports":
            p = _port_list(args[0])
            if neg:  # neither port in the list
                add(SPORT, p, True)
                add(DPORT, p, True)
            else:  # source OR destination port in the list
                disjunctions.append([{SPORT: p}, {DPORT: p}])
        elif opt in ("--state", "--ctstate"):
            add(STATE, _ct_states(args[0]), neg)
        elif opt == "--syn":  # what iptables-save prints as --tcp-flags FIN,SYN,RST,ACK SYN
            add(STATE, tcp_flags_match(_SYN_MASK, TCP_SYN), neg)
        elif opt == "--tcp-flags":
            add(STATE, _tcp_flags_states(args[0], args[1]), neg)
        elif opt == "--tcp-option":
            unknown.append("tcp-option")
        elif opt in ("--icmp-type", "--icmpv6-type"):
            add(ICMP, icmp_type(args[0], opt == "--icmpv6-type"), neg)
        elif opt == "--src-range":
            add(SRC, self.address_range(args[0]), neg)
        elif opt == "--dst-range":
            add(DST, self.address_range(args[0]), neg)
        elif opt in ("--comment",):
            pass
        elif opt == "--uid-owner":
            add(UID, id_range(args[0], "user"), neg)
        elif opt == "--gid-owner":
            add(GID, id_range(args[0], "group"), neg)
        elif opt in ("--socket-exists", "--suppl-groups"):
            unknown.append("owner " + opt)
        elif opt in HOPLIMIT_OPTIONS:
            add(HOPLIMIT, hop_limit(opt, args[0]), neg)
        elif opt == "--pkt-type":
            self.pkttype(args[0], neg, add)
        elif module in ("conntrack", "state"):
            # --ctstatus, --ctproto, --ctorigdst, --ctexpire, ... : run-time conntrack details
            unknown.append(f"conntrack {opt}")
        else:
            unknown.append(f"{module or 'match'} {opt}")

    def addrtype(self, options: Dict[str, AddrtypeOption], add, unknown, disjunctions) -> None:
        """One ``-m addrtype`` match (xt_addrtype revision 1): --src-type / --dst-type, each
        negatable, both read on the interface --limit-iface-in / --limit-iface-out names."""
        tests = [(dim, options[opt]) for dim, opt in ((SRC, "--src-type"), (DST, "--dst-type")) if opt in options]
        limit_in, limit_out = "--limit-iface-in" in options, "--limit-iface-out" in options
        if limit_in and limit_out:
            raise RuleSyntaxError("addrtype cannot limit to both the incoming and the outgoing interface")
        given: List[Tuple[int, Tuple[str, bool]]] = []  # the tests, each with its type given
        for dim, (spec, neg) in tests:
            if not spec:
                raise RuleSyntaxError("addrtype: address type missing")
            given.append((dim, (spec, neg)))
        if not (limit_in or limit_out):
            for dim, (spec, neg) in given:
                value = self.address_types(spec, None)
                if value is None:
                    unknown.append(f"addrtype {'--src-type' if dim == SRC else '--dst-type'} {spec}")
                else:
                    add(dim, value, neg)
            return
        limit = "--limit-iface-in" if limit_in else "--limit-iface-out"
        routes = self.ruleset.local_routes
        if routes is None:
            unknown.append(f"addrtype {limit} (which interface holds which address is unknown)")
            return
        # The type is read from the local routes on that interface: host interfaces are exact
        # classes of the universe; every other class holds no address of the host.
        universe = self.ruleset.universe
        classes: List[Tuple[int, str]] = []
        rest = universe.all_mask
        for name in sorted(set(routes.local) | set(routes.broadcast)):
            m = universe.mask(name) & rest
            if m:
                classes.append((m, name))
                rest &= ~m
        if rest:
            classes.append((rest, ""))
        by_value: Dict[tuple, int] = {}
        for m, name in classes:
            key = []
            for dim, (spec, neg) in given:
                value = self.address_types(spec, name)
                if value is None:
                    unknown.append(f"addrtype {limit} {spec}")
                    return
                key.append((dim, iv_sub(self.addr_full, value) if neg else value))
            by_value[tuple(key)] = by_value.get(tuple(key), 0) | m
        iface_dim = IIF if limit_in else OIF
        disjunctions.append([{**dict(key), iface_dim: m} for key, m in by_value.items()])

    def address_types(self, spec: str, dev: Optional[str]) -> Optional[IntervalSet]:
        """The addresses of the given xt_addrtype types (``dev``: read on that interface's local
        routes, "" for an interface with none; None: on the whole local table). None when they
        depend on routes twinwall does not read."""
        family = self.family
        mcast = multicast_addresses(family)
        routes = self.ruleset.local_routes
        if dev is None:
            local = self.ruleset.local_addresses
            bcast = routes.all_broadcast() if routes is not None else ()
        else:
            assert routes is not None  # an interface is only given when the routes are known
            local = routes.local.get(dev, ())
            bcast = routes.broadcast.get(dev, ())
        types = spec.upper().split(",")
        if family == "ipv4":
            # inet_dev_addr_type: 0.0.0.0/8 and 255.255.255.255 are BROADCAST, 224/4 MULTICAST
            # whatever the routes; then the local table (local and subnet broadcast routes);
            # every other address, or one whose local route is on another interface, UNICAST
            value: IntervalSet = ()
            for t in types:
                if t == "BROADCAST":
                    part = iv_or(_IPV4_BROADCAST, iv_sub(bcast, mcast))
                elif t == "MULTICAST":
                    part = mcast
                elif t == "UNSPEC":
                    part = ()  # no IPv4 route has that type
                elif t in ("LOCAL", "UNICAST"):
                    if local is None:
                        return None
                    special = iv_or(_IPV4_BROADCAST, mcast)
                    if t == "LOCAL":
                        part = iv_sub(local, special)
                    else:
                        part = iv_sub(self.addr_full, iv_or(special, iv_or(local, bcast)))
                elif t in _ROUTE_TYPES:
                    return None  # routing-table facts twinwall does not read
                else:
                    raise RuleSyntaxError(f"unknown address type {t!r}")
                value = iv_or(value, part)
            return value
        # addrtype_mt6: every one of MULTICAST, UNICAST (loopback included), UNSPEC named must
        # hold, then LOCAL: an address of the host (with an interface: one on that interface)
        value = self.addr_full
        want_local = False
        for t in types:
            if t == "MULTICAST":
                value = iv_and(value, mcast)
            elif t == "UNICAST":
                value = iv_sub(value, iv_or(mcast, ((0, 0),)))
            elif t == "UNSPEC":
                value = iv_and(value, ((0, 0),))
            elif t == "LOCAL":
                want_local = True
            elif t in ("ANYCAST", "UNREACHABLE"):
                return None  # routing-table facts twinwall does not read
            elif t in _ROUTE_TYPES or t == "BROADCAST":
                raise RuleSyntaxError(f"addrtype {t} does not exist for IPv6 (ip6tables refuses it)")
            else:
                raise RuleSyntaxError(f"unknown address type {t!r}")
        if want_local:
            if local is None:
                return None
            value = iv_and(value, local)
        return value

    def pkttype(self, spec: str, neg: bool, add) -> None:
        mcast = multicast_addresses(self.family)
        spec = spec.lower()
        if spec == "unicast":
            value = iv_sub(self.addr_full, mcast)
            if self.family == "ipv4":
                value = iv_sub(value, ((0xFFFFFFFF, 0xFFFFFFFF),))
        elif spec == "multicast":
            value = mcast
        elif spec == "broadcast":
            value = ((0xFFFFFFFF, 0xFFFFFFFF),) if self.family == "ipv4" else ()
        else:
            raise RuleSyntaxError(f"unknown packet type {spec!r}")
        add(DST, value, neg)

    # -- targets -----------------------------------------------------------------------------

    def set_target(self, rule: Rule, chain: Chain, kind: str, target: str, args: List[str]) -> None:
        rule.target = target
        if target != "DNAT" and target != "REDIRECT" and target != "CT":
            key = (chain.table, kind, target)
            action = self._actions.get(key)
            if action is None:
                self._set_target(rule, chain, kind, target, args)
                self._actions[key] = rule.action
            else:
                rule.action = action
            return
        self._set_target(rule, chain, kind, target, args)

    def _set_target(self, rule: Rule, chain: Chain, kind: str, target: str, args: List[str]) -> None:
        if not target:
            rule.action = Action.CONTINUE
            return
        table = self.ruleset.tables.get(chain.table)
        if target in (Action.ACCEPT, Action.DROP, Action.REJECT, Action.RETURN):
            rule.action = target
        elif table is not None and target in table.chains:
            rule.action = kind
        elif target in CONTINUE_TARGETS:
            rule.action = Action.NOTRACK if target == "CT" and "--notrack" in args else Action.CONTINUE
        elif target == "NOTRACK":
            rule.action = Action.NOTRACK
        elif target in NAT_DONE_TARGETS:
            rule.action = Action.NAT_DONE
        elif target == "DNAT":
            rule.action = Action.DNAT
            rule.nat_to = self.dnat_target(_opt(args, "--to-destination"))
        elif target == "REDIRECT":
            rule.action = Action.REDIRECT
            spec = _opt(args, "--to-ports")
            rule.nat_to = (None, ports(spec.replace("-", ":")) if spec else None)
        elif target in ("QUEUE", "NFQUEUE"):
            rule.action = Action.QUEUE
        else:
            rule.action = Action.UNKNOWN

    def dnat_target(self, spec: Optional[str]):
        if not spec:
            return (None, None)
        addr, port = spec, None
        if spec.startswith("["):  # [2001:db8::1]:80
            end = spec.index("]")
            addr, rest = spec[1:end], spec[end + 1 :]
            port = rest[1:] if rest.startswith(":") else None
        elif self.family == "ipv4" and ":" in spec:
            addr, port = spec.split(":", 1)
        if port and "/" in port:
            port = port.split("/")[0]
        dst = None
        if addr:
            dst = self.address_range(addr)
        return (dst, ports(port.replace("-", ":")) if port else None)


def _opt(args: List[str], name: str) -> Optional[str]:
    """A target option's value; like iptables (getopt_long), a prefix of the name will do
    ("--to" for --to-destination)."""
    for k, v in zip(args, args[1:]):
        if k == name or (len(k) > 3 and k.startswith("--") and name.startswith(k)):
            return v
    return None


# ---------------------------------------------------------------------------------------------
# value parsers


@lru_cache(maxsize=4096)
def _port(spec: str) -> IntervalSet:
    """``ports`` of a port or range, remembered (a big ruleset names the same few)."""
    return ports(spec)


@lru_cache(maxsize=4096)
def _dport_constraint(spec: str) -> Tuple[int, IntervalSet]:
    """The constraint of "--dport N" (a plain number), remembered as _port."""
    return (DPORT, _port(spec))


@lru_cache(maxsize=4096)
def _port_list(spec: str) -> IntervalSet:
    return port_list(spec)


@lru_cache(maxsize=256)
def _ct_states(spec: str) -> int:
    return ct_states(spec)


@lru_cache(maxsize=256)
def _tcp_flags_states(mask: str, comp: str) -> int:
    """The states of ``--tcp-flags MASK COMP`` (a ruleset spells the same one on every rule)."""
    return tcp_flags_match(tcp_flags(mask), tcp_flags(comp))


def ports(spec: str) -> IntervalSet:
    lo, sep, hi = spec.partition(":")
    a = _port_number(lo) if lo else 0
    b = (_port_number(hi) if hi else 65535) if sep else a
    if not (0 <= a <= 65535 and 0 <= b <= 65535):
        raise RuleSyntaxError(f"port out of range: {spec}")
    if a > b:
        a, b = b, a
    return ((a, b),)


def _port_number(spec: str) -> int:
    """A port by number or, as iptables takes it, by service name (iptables-save prints the
    number)."""
    if spec.isdigit():
        return int(spec)
    import socket  # (a service name is rare: iptables-save prints numbers)

    try:
        return socket.getservbyname(spec)
    except OSError:
        raise RuleSyntaxError(f"unknown port or service {spec!r}") from None


def port_list(spec: str) -> IntervalSet:
    out: List[Interval] = []
    for part in spec.split(","):
        out.extend(ports(part))
    return iv_normalize(out)


def ct_states(spec: str) -> int:
    mask = 0
    for s in spec.upper().split(","):
        if s in CT_NAMES:
            mask |= CT_NAMES[s]
        elif s in ("SNAT", "DNAT"):
            # NAT status of the connection: not a state of a brand-new remote connection
            continue
        else:
            raise RuleSyntaxError(f"unknown conntrack state {s!r}")
    return ct_state_match(mask)


# libxt_tcp's flag names; its ALL is these six (ECE and CWR are tolerated, iptables has no name
# for them)
_TCP_FLAGS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128}
_TCP_ALL = 0x3F
_SYN_MASK = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK


def tcp_flags_match(mask: int, comp: int) -> int:
    """The conntrack states whose packets pass ``--tcp-flags MASK COMP`` (the flags in MASK
    are examined; those in COMP must be set, the rest of MASK clear)."""
    return tcp_flag_states(lambda flags: flags & mask == comp)


def tcp_flags(spec: str) -> int:
    mask = 0
    for f in spec.upper().split(","):
        if f == "ALL":
            mask |= _TCP_ALL
        elif f == "NONE":
            continue
        elif f in _TCP_FLAGS:
            mask |= _TCP_FLAGS[f]
        else:
            raise RuleSyntaxError(f"unknown tcp flag {f!r}")
    return mask


def icmp_type(spec: str, v6: bool) -> IntervalSet:
    names = ICMPV6_TYPES if v6 else ICMP_TYPES
    if spec in names:
        t = names[spec]
        if t is None:
            return ((0, 0xFFFF),)
    else:
        parts = spec.split("/")
        try:
            t = tuple(int(p) for p in parts)
        except ValueError:
            raise RuleSyntaxError(f"unknown icmp type {spec!r}") from None
    if len(t) == 1:
        return ((t[0] << 8, (t[0] << 8) | 0xFF),)
    return (((t[0] << 8) | t[1], (t[0] << 8) | t[1]),)


def id_range(spec: str, kind: str) -> IntervalSet:
    lo, _, hi = spec.partition("-")

    def one(v: str) -> int:
        if v.isdigit():
            return int(v)
        import grp
        import pwd

        try:
            return pwd.getpwnam(v).pw_uid if kind == "user" else grp.getgrnam(v).gr_gid
        except KeyError:
            raise RuleSyntaxError(f"unknown {kind} {v!r}") from None

    a = one(lo)
    b = one(hi) if hi else a
    return ((a, b),)
