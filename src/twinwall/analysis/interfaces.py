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
        if spec.endswith("+") or spec.endswith("*"):
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
