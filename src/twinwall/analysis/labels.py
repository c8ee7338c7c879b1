"""What the role walk's labels hold: the rules that decided a region, as ``Decision`` items and
``RuleRun`` items, each a run of consecutive rules of one chain that the walk cannot tell apart.

A blocklist's 100,000 ``-s ADDR/32 -j DROP`` are, with addresses as roles, one rule 100,000
times over: the same "may" constraint, the same action. The role walk (``analysis.role_walk``)
walks such a run as its first rule, and the label of what the run decided holds one
``RuleRun`` standing for every rule of it, in rule order. Whoever needs single rules expands
it (``label_decisions``); the comparison and the JSON's compact citations (chain, first, last,
count) read a run as it is.

Within one walk every rule of a run is cited through its run only, never on its own (runs are
found once per chain): two labels of one walk hold the same rules exactly when they hold the
same items. Labels of two walks (IPv4 and IPv6 of one inet table, before and after a change)
may cut the same rules into different runs: compare them with ``same_rules``.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Collection, FrozenSet, Iterable, Iterator, List, Optional, Set, Tuple

from twinwall.netfilter.ruleset import Decision


class RuleRun:
    """The ``count`` consecutive rules of one chain, numbers ``first_number`` on, that decided a
    region alike (the same action, the same constraints at role level): their texts, and their
    Decisions made when asked. Pickled (what the forked IPv6 walk sends back) as one string of
    the texts, a line each, split again only where single rules are asked for: 100,000 texts
    are one object to send and to receive, not 100,000."""

    __slots__ = ("table", "chain", "source", "action", "first_number", "count", "_texts", "_joined", "_hash",
                 "_first", "_last")

    def __init__(self, table: str, chain: str, source: str, action: str, first_number: int,
                 texts: Tuple[str, ...] = (), joined: Optional[str] = None, count: Optional[int] = None):
        self.table = table
        self.chain = chain
        self.source = source
        self.action = action
        self.first_number = first_number
        # the texts, or (unpickled) all of them joined by newlines, split when first asked
        self._texts: Optional[Tuple[str, ...]] = texts if joined is None else None
        self._joined = joined
        n = len(texts) if joined is None else count
        assert n is not None
        self.count = n
        self._hash = hash((table, chain, source, first_number, n))
        self._first: Optional[Decision] = None
        self._last: Optional[Decision] = None

    def texts(self) -> Tuple[str, ...]:
        t = self._texts
        if t is None:
            assert self._joined is not None
            t = self._texts = tuple(self._joined.split("\n"))
            self._joined = None
        return t

    def _text(self, k: int) -> str:
        joined = self._joined
        if joined is None:
            return self.texts()[k]
        if k == 0:
            end = joined.find("\n")
            return joined if end < 0 else joined[:end]
        if k == self.count - 1:
            return joined[joined.rfind("\n") + 1:]
        return self.texts()[k]

    def _decision(self, k: int, text: str) -> Decision:
        # (as role_walk._XRule.decision spells a single rule's)
        return Decision(self.table, self.chain, self.first_number + k, text, None, self.source, self.action)

    @property
    def first(self) -> Decision:
        d = self._first
        if d is None:
            d = self._first = self._decision(0, self._text(0))
        return d

    @property
    def last(self) -> Decision:
        d = self._last
        if d is None:
            d = self._last = self._decision(self.count - 1, self._text(self.count - 1))
        return d

    def decisions(self) -> Iterator[Decision]:
        """Every rule's Decision, in rule order."""
        for k, text in enumerate(self.texts()):
            yield self._decision(k, text)

    def __len__(self) -> int:
        return self.count

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if type(other) is not RuleRun:
            return NotImplemented
        if not (self._hash == other._hash and self.first_number == other.first_number and self.count == other.count
                and self.table == other.table and self.chain == other.chain and self.source == other.source
                and self.action == other.action):
            return False
        if self._joined is not None and other._joined is not None:
            return self._joined == other._joined
        return self.texts() == other.texts()

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __reduce__(self) -> Tuple:
        joined = self._joined
        if joined is None:
            texts = self.texts()
            joined = "\n".join(texts)
            if joined.count("\n") != len(texts) - 1:
                # a text holds a newline (never a dump's line): the texts are sent as they are
                return (RuleRun, (self.table, self.chain, self.source, self.action, self.first_number, texts))
        return (RuleRun, (self.table, self.chain, self.source, self.action, self.first_number, (), joined,
                          self.count))

    def __repr__(self) -> str:
        return f"RuleRun({self.table} {self.chain} #{self.first_number}-#{self.first_number + self.count - 1})"


def has_runs(items: Iterable[Any]) -> bool:
    for d in items:
        if type(d) is RuleRun:
            return True
    return False


def label_decisions(label: Iterable[Any]) -> Iterator[Decision]:
    """The Decisions of a label, each run's expanded in rule order."""
    for d in label:
        if type(d) is RuleRun:
            yield from d.decisions()
        else:
            yield d


def label_size(label: Collection[Any]) -> int:
    """How many rules (and policies) a label holds, a run counted rule by rule."""
    n = len(label)
    for d in label:
        if type(d) is RuleRun:
            n += d.count - 1
    return n


def expanded_label(label: FrozenSet[Any]) -> FrozenSet[Decision]:
    """The label with its runs expanded (the label itself when it holds none)."""
    if not has_runs(label):
        return label
    return frozenset(label_decisions(label))


# (source, table, chain) of a Decision or a RuleRun (in C: share_rules asks it of every item of
# two labels, 33,000 of many small chains)
chain_key = attrgetter("source", "table", "chain")


def same_rules(a: Collection[Any], b: Collection[Any]) -> bool:
    """Whether two collections of label items (of any walks) hold the same rules."""
    if a == b:
        return True
    if not has_runs(a) and not has_runs(b):
        return set(a) == set(b)
    return set(label_decisions(a)) == set(label_decisions(b))


def share_rules(a: Set[Any], b: Iterable[Any]) -> bool:
    """Whether two collections of label items (of any walks) hold a rule in common."""
    bs: List[Any] = list(b)
    if any(d in a for d in bs):
        return True
    if not has_runs(a) and not has_runs(bs):
        return False
    # (runs of different walks may cut one chain's rules differently: only chains in common
    # can share a rule)
    chains = {chain_key(d) for d in a}
    common = [d for d in bs if chain_key(d) in chains]
    if not common:
        return False
    common_chains = {chain_key(d) for d in common}
    mine = set(label_decisions(d for d in a if chain_key(d) in common_chains))
    return any(d in mine for d in label_decisions(common))
