"""Interface names as a finite universe of classes.

Rules name interfaces exactly (``eth0``) or by prefix (``eth+``: ``+`` is a wildcard only at the
end). Every possible interface name falls into exactly one *class*: an exact name that some rule
or the host mentions, the names under one prefix that no longer prefix or exact name claims, or
"any other name". Two names in one class are matched alike by every rule, so a set of interface
names is a bit mask over the classes and the evaluator stays exact.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

OTHER = "*other*"


class InterfaceUniverse:
    def __init__(self, names: Iterable[str] = (), patterns: Iterable[str] = ()):
        exact = {"lo"}
        prefixes = set()
        for item in list(names) + list(patterns):
            if not item:
                continue
            if item.endswith("+"):
                prefixes.add(item[:-1])
            else:
                exact.add(item)
        # "+" alone is the empty prefix: every name. It needs no class of its own.
        prefixes.discard("")
        self.exact: Tuple[str, ...] = tuple(sorted(exact))
        self.prefixes: Tuple[str, ...] = tuple(sorted(prefixes))
        # class labels: exact names as they are, prefix classes as "eth+", then OTHER
        self.labels: List[str] = list(self.exact) + [p + "+" for p in self.prefixes] + [OTHER]
        self.all_mask = (1 << len(self.labels)) - 1
        self._cache: Dict[str, int] = {}

    def mask(self, spec: str) -> int:
        """The classes an iptables/nftables interface spec ("eth0", "eth+", "+") matches."""
        cached = self._cache.get(spec)
        if cached is not None:
            return cached
        m = 0
        if spec.endswith(("+", "*")):
            p = spec[:-1]
            for i, name in enumerate(self.exact):
                if name.startswith(p):
                    m |= 1 << i
            base = len(self.exact)
            for j, q in enumerate(self.prefixes):
                # the class of prefix q holds names starting with q that no longer prefix claims
                if q.startswith(p):
                    m |= 1 << (base + j)
            if p == "":
                m = self.all_mask
        else:
            if spec in self.exact:
                m = 1 << self.exact.index(spec)
            # an exact name not in the universe matches no class; universes are built from every
            # name the rules mention, so that only happens for names added after the fact
        self._cache[spec] = m
        return m

    def label_list(self, mask: int) -> List[str]:
        return [label for i, label in enumerate(self.labels) if mask >> i & 1]

    def non_loopback(self) -> int:
        return self.all_mask & ~self.mask("lo")

    def of_names(self, names: Iterable[str]) -> int:
        m = 0
        for n in names:
            m |= self.mask(n)
        return m

    def specs(self) -> List[str]:
        """The names and patterns this universe was built from ("lo" included)."""
        return list(self.exact) + [p + "+" for p in self.prefixes]

    def class_of(self, name: str) -> int:
        """The class index of one interface name: its exact class, else the class of the
        longest prefix it starts with, else "any other name"."""
        if name in self.exact:
            return self.exact.index(name)
        return self._prefix_class_of(name)

    def refine(self, finer: "InterfaceUniverse") -> "MaskTranslation":
        """How masks over this universe read in ``finer``, a universe built from a superset of
        its names and patterns (both families' rules, where this one saw one family's)."""
        table = [0] * len(self.labels)
        n_exact = len(finer.exact)
        for k, label in enumerate(finer.labels):
            if k < n_exact:
                mine = self.class_of(label)
            elif label == OTHER:
                mine = len(self.labels) - 1  # a name no pattern of finer claims: none of ours either
            else:
                # the names under prefix p that no longer pattern of finer claims fall in our
                # class of the longest of our prefixes that p starts with (ours are finer's too)
                mine = self._prefix_class_of(label[:-1])
            table[mine] |= 1 << k
        return MaskTranslation(table)

    def _prefix_class_of(self, name: str) -> int:
        best = -1
        for j, q in enumerate(self.prefixes):
            if name.startswith(q) and (best < 0 or len(q) > len(self.prefixes[best])):
                best = j
        return len(self.exact) + best if best >= 0 else len(self.labels) - 1


class MaskTranslation:
    """Maps interface masks of one universe onto a finer one (see InterfaceUniverse.refine)."""

    def __init__(self, table: List[int]):
        self.table = table
        self._cache: Dict[int, int] = {}

    def __call__(self, mask: int) -> int:
        out = self._cache.get(mask)
        if out is None:
            out = 0
            i = 0
            m = mask
            while m:
                if m & 1:
                    out |= self.table[i]
                m >>= 1
                i += 1
            self._cache[mask] = out
        return out
