"""The typed ruleset model every parser produces and the evaluator walks.

One ``Ruleset`` is what one family's packets meet from one rule source (an ``iptables-save`` dump,
the native nftables tables, ...). Its ``base_chains`` say where packets enter (hook, priority);
tables hold chains; chains hold rules. A rule is already *compiled*: its matches are packet-set
constraints (see ``netfilter.packetset``) plus the names of matches that cannot be decided
statically. The evaluator knows nothing of iptables or nftables syntax; the original rule text
is kept only to explain verdicts.

Parsing is lazy per chain: a chain keeps its source lines and compiles them the first time it is
walked, so a 100k-rule ruleset costs only what a question actually visits.
"""

from __future__ import annotations

import sys
from itertools import repeat
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from twinwall.vocabulary import Action

# Rule actions (what the evaluator does with the packets a rule matches): twinwall.vocabulary's
# Action, by the names the evaluator and parsers use.
ACCEPT = Action.ACCEPT
DROP = Action.DROP
REJECT = Action.REJECT
RETURN = Action.RETURN
JUMP = Action.JUMP
GOTO = Action.GOTO
CONTINUE = Action.CONTINUE
DNAT = Action.DNAT
REDIRECT = Action.REDIRECT
NAT_DONE = Action.NAT_DONE
NOTRACK = Action.NOTRACK
QUEUE = Action.QUEUE
UNKNOWN = Action.UNKNOWN

LOG_TARGETS = frozenset(("LOG", "NFLOG", "ULOG"))  # iptables targets that log and go on

NO_TABLE = "(none)"  # Decision.table when no table hooks the path at all

# (slots: a 100k-rule ruleset holds 100k of them, 85 bytes each smaller without a dict;
# dataclass(slots=) needs Python 3.10)
@dataclass(**({"slots": True} if sys.version_info >= (3, 10) else {}))
class Rule:
    table: str
    chain: str
    number: int  # 1-based position in its chain
    # the rule as the source printed it (read it as ``text``), or a function of no arguments
    # that spells it when first asked: a parser may leave rules no walk can cite (an nft inet
    # rule that matches nothing in one family's view) unspelled
    spelling: Union[str, Callable[[], str]]
    # Disjunction of constraints; ((),) matches every packet, () matches none.
    alternatives: Tuple = ((),)
    # Matches that cannot be decided from the ruleset alone (limit, recent, mark, set...).
    unknown: Tuple[str, ...] = ()
    action: str = CONTINUE
    target: str = ""  # chain for JUMP/GOTO; the source's target name otherwise
    # DNAT/REDIRECT: (destination interval set or None for "local", port interval set or None)
    nat_to: Optional[Tuple] = None
    # where the rule sits in its dump, for findings, SARIF locations and fix positions: the
    # 1-based line of an iptables-save dump; an nft rule's handle (nft -j prints one line)
    line: Optional[int] = None
    handle: Optional[int] = None
    logs: bool = False  # the rule logs what it matches (nft's log statement; see rule_logs)
    # nft `ct status dnat` (True) / `ct status != dnat` (False): whether NAT rewrote the
    # connection's destination, decided per packet by the evaluator; None: no such test
    ct_dnat: Optional[bool] = None

    @property
    def text(self) -> str:
        """The rule as the source printed it."""
        spelling = self.spelling
        if not isinstance(spelling, str):
            spelling = self.spelling = spelling()
        return spelling

    @text.setter
    def text(self, value: str) -> None:
        self.spelling = value

    def __getstate__(self) -> Dict[str, Any]:
        # a pickled rule (sent back from a forked process) carries its text, not the function
        # (fields by name: with slots there is no __dict__)
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["spelling"] = self.text
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def rule_logs(self) -> bool:
        """Whether the packets this rule matches are logged (-j LOG/NFLOG/ULOG, nft log)."""
        return self.logs or (self.action == CONTINUE and self.target in LOG_TARGETS)


class Decision(NamedTuple):
    """One step of an explanation: a rule, or a chain's policy when ``policy`` is set.

    A named tuple: hashable, compact, and cheap to pickle back from the forked IPv6 half."""

    table: str
    chain: str
    rule_number: Optional[int]
    rule: Optional[str]
    policy: Optional[str]
    source: str = ""  # which ruleset (e.g. "iptables-save (nft)"), filled by the evaluator
    action: str = ""  # the rule's action (ACCEPT, JUMP, ...) or the policy, when known
    line: Optional[int] = None  # the rule's line in its iptables-save dump (Rule.line)
    handle: Optional[int] = None  # the nft rule's handle (Rule.handle)

    def to_dict(self) -> Dict:
        d: Dict = {"table": self.table, "chain": self.chain}
        if self.policy is not None:
            d["policy"] = self.policy
        else:
            d["rule_number"] = self.rule_number
            d["rule"] = self.rule
        if self.source:
            d["source"] = self.source
        return d

    def describe(self) -> str:
        if self.table == NO_TABLE:
            return self.source
        where = f"{self.table} {self.chain}"
        if self.policy is not None:
            return f"{where} policy {self.policy}"
        return f"{where} #{self.rule_number}: {self.rule}"


def describe_run(first: Decision, last: Decision, count: int, texts: bool = True) -> str:
    """``count`` rules of one chain, ``first`` to ``last``, in a few words: 'filter INPUT #5-#25
    (21 rules: FIRST ... LAST)', or without ``texts`` '... (21 rules)'; one rule as it describes
    itself."""
    if count == 1:
        return first.describe()
    where = f"{first.table} {first.chain} #{first.rule_number}-#{last.rule_number} ({count} rules"
    return f"{where}: {first.rule} ... {last.rule})" if texts else where + ")"


# the alternatives of a rule that matches every packet (its constraints let go: see
# RuleStretch.let_values_go)
MATCHES_ANY: Tuple = ((),)


class RuleStretch:
    """Consecutive rules of one chain that each test one value on one dimension and nothing else,
    with one action and target: a blocklist's "-A C -s ADDR -j DROP" x 100,000. Kept as their
    values, texts and line numbers (a RuleList makes a rule's Rule when it is read): the walk
    reads such a stretch as its values (analysis.chain_index.find_runs) and cites a few of its
    rules, so 100,000 Rule objects and their constraint tuples are never made."""

    __slots__ = ("start", "end", "dim", "values", "texts", "blocks", "head", "ending", "lines", "action", "target", "_words")

    # the rules of a stretch read as a whole whose words are kept in one string (``blocks``)
    BLOCK = 4096

    def __init__(self, start: int, dim: int, action: str, target: str):
        self.start = self.end = start  # positions start..end-1 of the chain (0-based)
        self.dim = dim
        self.values: List[Any] = []  # each rule's interval set on ``dim``
        # each rule's text; or none, and each rule's text is ``head`` + its own word + ``ending``,
        # the words of BLOCK rules at a time joined by newlines in ``blocks`` (a blocklist's
        # addresses: ~35 bytes a rule, not a 90-byte string of the whole line)
        self.texts: List[str] = []
        self.blocks: List[str] = []
        self.head = self.ending = ""
        self.lines: Sequence[int] = []  # each rule's line in its dump
        self.action, self.target = action, target
        self._words: Tuple[int, List[str]] = (-1, [])  # the block last split, and its words

    def text(self, k: int) -> str:
        """The text of the stretch's rule ``k`` (0-based)."""
        if not self.blocks:
            return self.texts[k]
        b = k // self.BLOCK
        if self._words[0] != b:  # (a reader of rule after rule splits each block once)
            self._words = (b, self.blocks[b].split("\n"))
        return self.head + self._words[1][k % self.BLOCK] + self.ending

    def taken_texts(self) -> Iterator[str]:
        """The texts of all its rules, in order, each block of words let go once spelled: for a
        reader that makes every Rule and then drops the stretch (RuleList.every), whose peak
        would otherwise hold both."""
        if not self.blocks:
            yield from self.texts
            return
        head, ending, blocks = self.head, self.ending, self.blocks
        for b, block in enumerate(blocks):
            blocks[b] = ""
            yield from [head + word + ending for word in block.split("\n")]

    def rule(self, table: str, chain: str, position: int) -> Rule:
        """The Rule at ``position`` of the chain (start <= position < end): what a rule-by-rule
        compile makes of its line (once the values are let go, see let_values_go, a rule that
        matches: whether it can is all such a reader still asks)."""
        k = position - self.start
        alts = (((self.dim, self.values[k]),),) if self.values is not None else MATCHES_ANY
        rule = Rule(table, chain, position + 1, self.text(k), alts, (), self.action, self.target)
        rule.line = self.lines[k]
        return rule

    def let_values_go(self) -> None:
        """For a reader that has read every value and keeps what it made of them (the role walk
        lifts a chain once): the values go (a blocklist's 100,000 interval sets, ~18 MB)."""
        self.values = None  # type: ignore[assignment]


class RuleList(Sequence):
    """A chain's rules, where long stretches of them are RuleStretches: each Rule is made when
    first read (and then kept: a rule read twice is the same object), every one once the list
    is iterated. Reads like the list of the chain's Rules.

    Not subclassed: the walks ask ``type(rules) is RuleList`` of every chain they read (as a
    Sequence, isinstance goes through ABCMeta: ~0.3 us a call, five a chain, for the 33,000
    small chains of a 100k-rule pair)."""

    __slots__ = ("table", "chain", "stretches", "_rules", "_whole")

    def __init__(self, table: str, chain: str, rules: List[Optional[Rule]], stretches: List[RuleStretch]):
        """``rules``: the chain's Rules, None at the positions of the ``stretches`` (in order)."""
        self.table, self.chain = table, chain
        self.stretches = stretches
        self._rules = rules
        self._whole = False  # whether every Rule has been made

    def __len__(self) -> int:
        return len(self._rules)

    def __getitem__(self, index):
        if isinstance(index, slice):
            if not self._whole:
                for i in range(*index.indices(len(self._rules))):
                    if self._rules[i] is None:
                        self._make(i)
            return self._rules[index]
        rule = self._rules[index]
        if rule is None:
            rule = self._make(index if index >= 0 else index + len(self._rules))
        return rule

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.every())

    def every(self) -> List[Rule]:
        """The list of every Rule (each made now that was not yet)."""
        if not self._whole:
            rules, table, chain = self._rules, self.table, self.chain
            for s in self.stretches:
                dim, action, target, start = s.dim, s.action, s.target, s.start
                # one int object for a position and the line number equal to it, as a compile
                # rule by rule shares them (a stretch of one block: two ints a rule otherwise)
                lines = s.lines
                low = min(start + 1, lines[0]) if lines else start + 1
                ints = list(range(low, max(s.end, lines[-1] if lines else 0) + 1))
                values = s.values if s.values is not None else repeat(None, s.end - s.start)
                for k, (text, value) in enumerate(zip(s.taken_texts(), values)):
                    if rules[start + k] is None:
                        alts = (((dim, value),),) if value is not None else MATCHES_ANY
                        rule = rules[start + k] = Rule(table, chain, ints[start + k + 1 - low], text, alts, (),
                                                       action, target)
                        line = lines[k]
                        rule.line = ints[line - low] if low <= line < low + len(ints) else line
            # (the Rules are all there is to read now: the stretches' lists would only keep
            # alive what a reader of the Rules replaces, e.g. the role walk their constraints)
            self.stretches = []
            self._whole = True
        return self._rules  # type: ignore[return-value]

    def made(self) -> List[Rule]:
        """The Rules made so far (every one, once iterated)."""
        return [r for r in self._rules if r is not None]

    def representatives(self) -> Iterator[Rule]:
        """The chain's rules in order, each stretch by its first rule alone (its rules all have
        its action and target, and each can match): for a reader that asks only what kinds of
        rules a chain has."""
        at = 0
        for s in self.stretches:
            yield from self[at:s.start]
            yield self[s.start]
            at = s.end
        yield from self[at:]

    def actions(self, start: int, end: int) -> set:
        """The actions of the rules at positions start..end-1 that can match (a stretch's by
        the stretch: its rules' values are never empty)."""
        out = set()
        others: List[Optional[Rule]] = []  # the rules between the stretches
        at = start
        for s in self.stretches:
            if s.start < end and start < s.end:
                out.add(s.action)
                others += self._rules[at:s.start]
                at = s.end
        others += self._rules[at:end]
        out.update(r.action for r in others if r is not None and r.alternatives)
        return out

    def _make(self, position: int) -> Rule:
        for s in self.stretches:
            if s.start <= position < s.end:
                rule = self._rules[position] = s.rule(self.table, self.chain, position)
                return rule
        raise IndexError(position)  # pragma: no cover - every None is in a stretch


class Chain:
    __slots__ = ("table", "name", "policy", "_rules", "_source", "_count", "_compile", "index", "runs", "dispatches", "plain",
                 "line")

    def __init__(self, table: str, name: str, policy: Optional[str] = None):
        self.table = table
        self.name = name
        self.policy = policy  # "ACCEPT"/"DROP" for base chains, None for user chains
        self._rules: Optional[Sequence[Rule]] = []
        self._source: List = []
        self._count = 0
        self._compile: Optional[Callable[["Chain", List], Sequence[Rule]]] = None
        # the evaluator's index of a long chain's rules (analysis.chain_index), built on its
        # first walk; False when the chain is not worth one
        self.index: Any = None
        # the exact walk's runs of one-dimension terminal rules (analysis.chain_index.find_runs),
        # found on its first walk of the whole chain
        self.runs: Any = None
        # the exact walk's dispatch runs of jumps told apart by one dimension
        # (analysis.chain_index.find_dispatches), found on its first walk of the whole chain
        self.dispatches: Any = None
        # whether the exact walk may walk the chain as a plain one (short, rules that only end,
        # return or log what they match: analysis.evaluator), found on its first walk
        self.plain: Optional[bool] = None
        self.line: Optional[int] = None  # the chain's declaration line in an iptables-save dump

    def set_source(self, source: List, compile_fn: Callable[["Chain", List], Sequence[Rule]], count: Optional[int] = None) -> None:
        """Defer compiling: ``compile_fn(chain, source)`` runs on first access to ``rules``.

        ``source`` is whatever the parser keeps of the chain (lines, blocks of lines, JSON
        rules); ``count`` is how many rules it holds (default: its length)."""
        self._source = source
        self._count = len(source) if count is None else count
        self._compile = compile_fn
        self._rules = None

    @property
    def source(self) -> List:
        """The uncompiled source given to ``set_source`` (empty once compiled)."""
        return self._source if self._rules is None else []

    @property
    def rules(self) -> Sequence[Rule]:
        """The chain's Rules: a list, or a RuleList that reads like one."""
        if self._rules is None:
            assert self._compile is not None  # set_source set both
            self._rules = self._compile(self, self._source)
            self._source = []
            # the compile function holds the parser, and through it the ruleset that holds this
            # chain: dropped once used, so that a ruleset whose chains are all compiled is no
            # reference cycle (the audit and the diff pause the cyclic collector: a cycle would
            # keep the IPv4 half in memory while the IPv6 half is walked)
            self._compile = None
        return self._rules

    def __len__(self) -> int:
        return len(self._rules) if self._rules is not None else self._count


@dataclass
class Table:
    name: str
    chains: Dict[str, Chain] = field(default_factory=dict)


@dataclass
class BaseChain:
    """Where packets enter: a chain attached to a hook at a priority.

    ``kind`` is "filter" (accept/drop), "nat" (may rewrite the destination; only NEW packets
    traverse it) or "route" (mangle output)."""

    hook: str
    priority: int
    table: str
    chain: str
    kind: str = "filter"


@dataclass(frozen=True)
class LocalRoutes:
    """The host's local routing table as xt_addrtype reads it with --limit-iface-in/out, for one
    family: per interface name, the addresses whose local route is on it (type LOCAL; on
    loopback an IPv4 address's whole prefix) and, IPv4 only, its subnet broadcast addresses
    (type BROADCAST)."""

    local: Dict[str, Tuple]
    broadcast: Dict[str, Tuple]
    # per interface its primary address (the first the kernel lists), where REDIRECT sends
    # what arrives there (nf_nat_redirect: the incoming interface's first address)
    primary: Optional[Dict[str, Tuple]] = None

    def all_broadcast(self) -> Tuple:
        out: List = []
        for value in self.broadcast.values():
            out.extend(value)
        return tuple(sorted(out))


class NamedDestination(NamedTuple):
    """A rule of an input-hook base chain whose destination is one address: INPUT sees only
    packets for the host, so the address is the host's (or the rule is dead). Offline, without
    the host's addresses, the analysis takes such addresses as the host's (analysis.context)."""

    address: str  # as the rule spells it, without a /32 or /128
    table: str
    chain: str
    rule_number: int
    line: Optional[int]  # in an iptables-save dump
    handle: Optional[int]  # an nft rule's
    rule: str


# how many distinct addresses the input base chains' rules are read for (one over: "and more")
NAMED_DESTINATIONS = 65


def host_unicast(af: int, address: str) -> bool:
    """Whether ``address`` (of address family ``af``) is one unicast address a host may have:
    not multicast, loopback, the unspecified or a broadcast address (an IPv4 address ending in
    .255: a /24's or shorter subnet's broadcast, which INPUT rules name for broadcast UDP; as
    its own address a host seldom has one)."""
    import ipaddress
    from _socket import inet_pton

    try:
        inet_pton(af, address)
        a = ipaddress.ip_address(address)
    except (OSError, ValueError):
        return False
    return not (a.is_multicast or a.is_loopback or a.is_unspecified or (a.version == 4 and address.endswith(".255")))


@dataclass
class Ruleset:
    family: str  # "ipv4" | "ipv6"
    source: str  # human label: "iptables-save (nft)", "nft list ruleset", a file name...
    tables: Dict[str, Table] = field(default_factory=dict)
    base_chains: List[BaseChain] = field(default_factory=list)
    # interface names and "prefix+" patterns the rules mention (for the interface universe)
    interface_specs: Sequence[str] = ()
    # bound before evaluation; lazily compiled rules need it for interface masks
    universe: Any = None  # an InterfaceUniverse (netfilter.interfaces), bound by the analysis
    # the host's own addresses, loopback included (for addrtype LOCAL / fib daddr type local),
    # bound with the universe; None: unknown
    local_addresses: Optional[Tuple] = None
    # the same per interface (addrtype --limit-iface-in/out, subnet broadcasts), bound with the
    # contexts; None: which interface holds which address is unknown (offline)
    local_routes: Optional[LocalRoutes] = None
    # what the source is: "iptables" or "nftables", and front-ends recognised in it
    kind: str = "iptables"
    # ipset's sets by name (parsers.ipset_save.IpSet), for -m set; None: not collected
    ipsets: Optional[Dict] = None
    frontends: List[str] = field(default_factory=list)
    # the single destination addresses the rules of input-hook base chains name (nat's aside),
    # found by the parser without compiling them
    input_destinations: List[NamedDestination] = field(default_factory=list)

    def chain(self, table: str, name: str) -> Optional[Chain]:
        t = self.tables.get(table)
        return t.chains.get(name) if t else None

    def rule_count(self) -> int:
        return sum(len(c) for t in self.tables.values() for c in t.chains.values())
