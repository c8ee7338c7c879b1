"""The compact audit document, ``twinwall.audit/2``: each distinct address list written once.

A blocklist host's restricted services each list the ~100,000 blocked addresses three times per
family (``denied_sources``, ``allowed_sources_except``, each ``allowed`` combination's
``sources_except``): 55 MB of JSON from 10 MB of rules, most of the writing an audit does. The
compact document holds each distinct list once, in its ``address_sets`` table, and every address
list of a verdict is an index into it (docs/reports.md). Every list, not only the long ones: a
field has one type, so a reader never tests which form it got (a threshold would leave a
consumer written against a small host's output wrong on the one host with a blocklist), and a
short list costs about as much either way.

``twinwall audit --verbose`` writes the ``twinwall.audit/1`` form, every list inline;
:func:`inline_address_sets` turns a /2 document into exactly that form, for the readers of
saved documents (the report formats, the scan join).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from twinwall.model import FAMILIES

AUDIT_SCHEMA = "twinwall.audit/2"
AUDIT_SCHEMA_VERBOSE = "twinwall.audit/1"  # (every address list inline; --verbose)

# the fields of a service's verdict, and of each of its ``allowed`` combinations, that are
# address lists (an index into ``address_sets`` in a /2 document)
VERDICT_ADDRESS_FIELDS = ("allowed_sources", "denied_sources", "allowed_addresses", "allowed_sources_except")
ALLOWED_ADDRESS_FIELDS = ("sources", "sources_except")


# a list longer than this is looked up by the object, then by its length and ends, before its
# whole value (hashing it is the cost)
_BY_OBJECT = 16


class AddressSets:
    """The ``address_sets`` table of one document being written: each distinct list once, in
    the order first cited. A long list is found by the object first (the verdicts of sockets
    that share their accepted regions hold the very same lists), then among the lists of its
    length and ends, compared whole (a blocklist's three lists of ~100,000 addresses per family
    are copies of one another: hashing each was ~2 ms; compared, their strings are the same
    objects)."""

    def __init__(self) -> None:
        self.lists: List[List[str]] = []
        self._by_id: Dict[int, int] = {}
        self._by_value: Dict[Tuple[str, ...], int] = {}
        self._by_ends: Dict[Tuple[int, str, str], List[int]] = {}  # (the long lists)
        self._kept: List[Sequence[str]] = []  # (an id is a key only while its object lives)

    def ref(self, addresses: Sequence[str]) -> int:
        """The index of ``addresses`` in the table (added when new)."""
        if len(addresses) <= _BY_OBJECT:
            value = tuple(addresses)
            i = self._by_value.get(value)
            if i is None:
                i = self._by_value[value] = len(self.lists)
                self.lists.append(addresses if isinstance(addresses, list) else list(addresses))
            return i
        i = self._by_id.get(id(addresses))
        if i is not None:
            return i
        listed = addresses if isinstance(addresses, list) else list(addresses)
        same = self._by_ends.setdefault((len(listed), listed[0], listed[-1]), [])
        for i in same:
            if self.lists[i] == listed:
                break
        else:
            i = len(self.lists)
            same.append(i)
            self.lists.append(listed)
        self._by_id[id(addresses)] = i
        self._kept.append(addresses)
        return i

    def refs(self, d: Dict[str, Any], fields: Sequence[str]) -> Dict[str, Any]:
        """``d`` with each of its ``fields`` (address lists) replaced by its index."""
        for name in fields:
            if name in d:
                d[name] = self.ref(d[name])
        return d


def inline_address_sets(document: Dict[str, Any]) -> Dict[str, Any]:
    """A ``twinwall.audit/2`` document in the ``twinwall.audit/1`` form, as ``--verbose`` writes
    it: a copy with every index replaced by the list it stands for (shared, not copied: readers
    only read), no ``address_sets``; any other document as it is."""
    table = document.get("address_sets")
    if table is None or document.get("schema") != AUDIT_SCHEMA:
        return document
    out = {k: v for k, v in document.items() if k != "address_sets"}
    out["schema"] = AUDIT_SCHEMA_VERBOSE
    out["services"] = [_inline_service(s, table) for s in document.get("services", [])]
    return out


def _inline_service(service: Any, table: List[List[str]]) -> Any:
    if not isinstance(service, dict):
        return service
    return {k: _inline_verdict(v, table) if k in FAMILIES and isinstance(v, dict) else v
            for k, v in service.items()}


def _inline_verdict(verdict: Dict[str, Any], table: List[List[str]]) -> Dict[str, Any]:
    out = _inlined(verdict, VERDICT_ADDRESS_FIELDS, table)
    if isinstance(out.get("allowed"), list):
        out["allowed"] = [_inlined(a, ALLOWED_ADDRESS_FIELDS, table) if isinstance(a, dict) else a
                          for a in out["allowed"]]
    return out


def _inlined(d: Dict[str, Any], fields: Sequence[str], table: List[List[str]]) -> Dict[str, Any]:
    return {k: table[v] if k in fields and isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in d.items()}
