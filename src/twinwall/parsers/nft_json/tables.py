"""Pass 1: an ``nft -j list ruleset`` document split into tables, chains and sets in one cheap
pass (a scan of nft's own layout, or ``json.loads`` of any other); a table's rules stay JSON
until a family's view compiles them.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from typing import Any, Dict, List, Optional, Tuple

from twinwall.errors import InputError
from twinwall.parsers.nft_json.expressions import iface_strings_of


class _TableData:
    """One nft table as found in the dump. Rules and sets may still be undecoded: a rule is a
    dict, or a (start, end) span of the dump's text decoded when its chain is compiled; a set
    is a dict or a span decoded on first use."""

    __slots__ = ("family", "name", "chains", "rules", "sets", "xt", "text", "source", "ifnames")

    def __init__(self, family: str, name: str, text: str = "", source: str = ""):
        self.family = family
        self.name = name
        self.chains: Dict[str, Dict[str, Any]] = {}
        self.rules: Dict[str, List[Any]] = {}
        self.sets: Dict[str, Any] = {}
        self.xt = False
        self.text = text
        self.source = source  # (the dump's name, for what is wrong in a span decoded late)
        self.ifnames: set = set()  # interface names the rules mention (filled by the splitter)

    @property
    def label(self) -> str:
        return f"{self.family} {self.name}"

    def rule_dicts(self, entries: List[Any]) -> List[Dict[str, Any]]:
        if not entries or isinstance(entries[0], dict):
            return entries
        # a chain's rules are one run of the dump in nft's output: decode them in one call
        first, last = entries[0][0], entries[-1][1]
        if all(entries[i + 1][0] == entries[i][1] + 2 for i in range(len(entries) - 1)):
            items = self._decoded("[" + self.text[first:last] + "]")
        else:
            items = self._decoded("[" + ", ".join(self.text[a:b] for a, b in entries) + "]")
        if len(items) == len(entries):
            return [item["rule"] for item in items]  # (each span one item: a rule, by its start)
        return self._bodies(items, "rule", len(entries))

    def may_log(self, entries: List[Any]) -> bool:
        """Whether a rule of ``entries`` may hold a log statement: False when their text has no
        ``"log"`` (nor a backslash, which could spell the key otherwise)."""
        if not entries or isinstance(entries[0], dict):
            return True
        text, first, last = self.text, entries[0][0], entries[-1][1]
        return text.find('"log"', first, last) >= 0 or text.find("\\", first, last) >= 0

    def rule_dict(self, entry: Any) -> Dict[str, Any]:
        """One rule of ``rules`` as a dict (a span of the text decoded again)."""
        if isinstance(entry, dict):
            return entry
        a, b = entry
        return self._body(a, b, "rule")

    def set_body(self, name: str) -> Optional[Dict[str, Any]]:
        s = self.sets.get(name)
        if isinstance(s, tuple):
            kind, a, b = s
            s = self._body(a, b, kind)
            s["_kind"] = kind
            self.sets[name] = s
        return s

    def _body(self, a: int, b: int, kind: str) -> Dict[str, Any]:
        """The body of the item of ``kind`` that the span ``a:b`` of the dump starts with."""
        try:
            return json.loads(self.text[a:b])[kind]
        except ValueError:  # ("extra data": the span holds another item too)
            return self._bodies(self._decoded("[" + self.text[a:b] + "]"), kind, 1)[0]

    def _decoded(self, piece: str) -> List[Any]:
        """A span of the dump decoded when first used: the fast reading checks the layout of the
        whole dump but decodes only its tables, chains and set headers, so a dump cut short or
        damaged inside a rule or a set is found here, and refused as the general reading
        refuses a document that is no JSON."""
        try:
            return json.loads(piece)
        except ValueError as exc:
            raise InputError(f"{self.source}: not 'nft -j list ruleset' output: invalid JSON in table "
                             f"{self.label} ({exc})") from None

    def _bodies(self, items: List[Any], kind: str, count: int) -> List[Dict[str, Any]]:
        """The bodies of the ``count`` items of ``kind`` decoded from spans of the dump that hold
        other items too (ones _split_fast does not search for): those the general reading of the
        document ignores are left out, and one it would read or refuse (a rule, table, chain or
        set not laid out as nft prints one; no object) is refused here, never read as part of
        the item before it."""
        bodies: List[Dict[str, Any]] = []
        for item in items:
            if type(item) is dict and len(item) != 1:
                continue  # (no item nft writes: _split ignores it too)
            its_kind, body = next(iter(item.items())) if type(item) is dict else ("", None)
            if its_kind == kind and type(body) is dict and len(bodies) < count:
                bodies.append(body)
            elif type(item) is not dict or its_kind in _ITEM_KINDS:
                raise InputError(f"{self.source}: table {self.label}: an item not laid out as nft prints it, "
                                 f"among the {kind} items: {json.dumps(item)[:80]}")
        if len(bodies) != count:
            raise InputError(f"{self.source}: table {self.label}: {count - len(bodies)} {kind} "
                             "item(s) not laid out as nft prints them")
        return bodies

    def set_header(self, name: str) -> str:
        """The start of a set's text (its type and flags come before the elements)."""
        s = self.sets.get(name)
        if isinstance(s, tuple):
            head = self.text[s[1]:s[2]]
            cut = head.find('"elem":')
            return head if cut < 0 else head[:cut]
        return json.dumps({k: v for k, v in (s or {}).items() if k != "elem"})


# the items of a dump that _split reads (any other holds nothing to evaluate)
_ITEM_KINDS = ("rule", "table", "chain", "set", "map")


def _load(text: str, source: str) -> List[Any]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{source}: not 'nft -j list ruleset' output: invalid JSON ({exc})") from None
    if isinstance(doc, dict) and "nftables" in doc:
        items = doc["nftables"]
    elif isinstance(doc, list):  # the bare list some tools write
        items = doc
    else:
        raise InputError(
            f'{source}: not \'nft -j list ruleset\' output: expected an object with an "nftables" list'
        )
    if not isinstance(items, list):
        raise InputError(f'{source}: "nftables" is not a list')
    return items


def _split(items: List[Any], source: str) -> Dict[Tuple[str, str], _TableData]:
    """Pass 1 on a decoded document (any JSON layout)."""
    tables: Dict[Tuple[str, str], _TableData] = {}
    last_key: Optional[Tuple[str, str]] = None
    last_t = _TableData("", "")  # (a placeholder: the first rule's key differs from None)
    last_chain: Optional[str] = None
    last_rules: List[Dict[str, Any]] = []
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise InputError(f"{source}: nftables[{i}] is not an object")
        r = obj.get("rule")
        if r is not None:
            try:
                key = (r["family"], r["table"])
                chain = r["chain"]
            except (KeyError, TypeError):
                raise InputError(f"{source}: nftables[{i}]: a rule without family, table or chain") from None
            if type(key[0]) is not str or type(key[1]) is not str or type(chain) is not str:
                raise InputError(f"{source}: nftables[{i}]: a rule whose family, table or chain is not a string")
            if key != last_key:
                found = tables.get(key)
                if found is None:
                    found = tables[key] = _TableData(*key)
                last_t = found
                last_key, last_chain = key, None
            if chain != last_chain:
                last_rules = last_t.rules.setdefault(chain, [])
                last_chain = chain
            last_rules.append(r)
            continue
        if len(obj) != 1:
            continue
        kind, body = next(iter(obj.items()))
        if kind in ("table", "chain", "set", "map"):
            _add_item(tables, kind, body, source, i)
        # metainfo, flowtable, counter, quota, ct helper, limit, element...: nothing to evaluate
    for t in tables.values():
        for rules in t.rules.values():
            for r in rules:
                exprs = r.get("expr")
                if not isinstance(exprs, list):
                    continue  # refused when the chain is compiled, with the rule named
                for e in exprs:
                    if isinstance(e, dict):
                        if "xt" in e:
                            t.xt = True
                        else:
                            iface_strings_of(e, t.ifnames)
    return tables


def _add_item(tables, kind: str, body: Any, source: str, where: Any) -> _TableData:
    if not isinstance(body, dict) or "family" not in body:
        raise InputError(f"{source}: nftables[{where}]: a {kind} without a family")
    name: Any = body.get("name") if kind == "table" else body.get("table")
    if type(body["family"]) is not str or type(name) is not str or kind != "table" and type(body.get("name")) is not str:
        raise InputError(f"{source}: nftables[{where}]: a {kind} whose family, table or name is not a string")
    key = (body["family"], name)
    t = tables.get(key)
    if t is None:
        t = tables[key] = _TableData(body["family"], name)
    if kind == "chain":
        t.chains[body.get("name")] = body
    elif kind in ("set", "map"):
        body = dict(body)
        body["_kind"] = kind
        t.sets[body.get("name")] = body
    return t


# Top-level items of nft's own output (a string cannot hold an unescaped quote, so none of these
# occurs inside one). nft prints "family" first, then for rules table and chain. Every
# '{"rule": ', '{"table": ' and '{"chain": ' is an item's start (no statement or expression of a
# rule has these names): a rule not laid out as nft prints one is found where its header is
# read (the whole document is then decoded), a table or chain is decoded whole in any order of
# its keys; neither is held as part of the item before it. A set's or map's name is also a
# statement's: it is told apart by its "family" first (one laid out otherwise is held, and told
# when its span is decoded: _TableData._bodies).
_RULE_START_RE = re.compile(r'\{"rule": ')
_RULE_RE = re.compile(r'\{"rule": \{"family": "([^"\\]*)", "table": "([^"\\]*)", "chain": "([^"\\]*)", ')
_OTHER_RE = re.compile(
    r'\{"(table|chain|set|map|flowtable|counter|quota|limit|ct helper|ct timeout|ct expectation|secmark'
    r'|synproxy|tunnel)": \{'
)
_ANY_ORDER = ("table", "chain")  # (the kinds of _OTHER_RE read in any order of their keys)
_IFACE_RE = re.compile(r'\{"meta": \{"key": "(?:iifname|oifname|iif|oif)"\}\}')


def _split_fast(text: str, source: str) -> Optional[Dict[Tuple[str, str], _TableData]]:
    """Pass 1 straight on nft's text, decoding only tables, chains and set headers; rules and
    sets stay spans of the text until used. None when the text is not laid out as nft prints
    it (the caller then decodes the whole document)."""
    head = text[:64].lstrip()
    if not head.startswith('{"nftables": ['):
        return None
    end = len(text)
    while end and text[end - 1] in " \t\r\n":
        end -= 1
    if not text.endswith("]}", 0, end):
        return None  # (not the end of a document: one cut short, or followed by more)
    end_all = end - 2
    rule_starts = [m.start() for m in _RULE_START_RE.finditer(text)]
    others = [(m.start(), m.group(1)) for m in _OTHER_RE.finditer(text)
              if m.group(1) in _ANY_ORDER or text.startswith('"family": ', m.end())]
    starts = sorted(rule_starts + [o[0] for o in others])
    ends = [b - 2 for b in starts[1:]] + [end_all]
    # each span one item: nft's items are objects of one object ('{"KIND": {...}}'), so a span
    # that ends otherwise holds another item too (one of a kind not searched for, or no object),
    # which the general path reads or refuses by itself
    for b in ends[:-1]:
        if text[b - 2:b + 2] != "}}, ":
            return None
    if text[end_all - 2:end_all] != "}}":
        return None
    end_of = dict(zip(starts, ends))
    tables: Dict[Tuple[str, str], _TableData] = {}
    for a, kind in others:
        b = end_of[a]
        if kind in ("set", "map"):
            cut = text.find(', "elem": ', a, b)
            h = json.loads(text[a:cut] + "}}" if cut >= 0 else text[a:b])[kind]
            t = _add_item(tables, kind, h, source, a)
            t.sets[h.get("name")] = (kind, a, b)
        elif kind in ("table", "chain"):
            t = _add_item(tables, kind, json.loads(text[a:b])[kind], source, a)
        else:
            continue
        t.text, t.source = text, source
    # a chain's rules follow one another and share their header ('{"rule": {"family": "ip",
    # "table": "t", "chain": "c", '): decode a header only where it changes
    header = ""
    last_t = _TableData("", "")  # (a placeholder: the first rule has no header yet)
    last_rules: List[Any] = []
    rule_table: List[_TableData] = []
    for a in rule_starts:
        if not header or not text.startswith(header, a):
            m = _RULE_RE.match(text, a)
            if m is None:
                return None  # a name with an escaped character: not worth a fast path
            header = m.group(0)
            fam, table, chain = m.groups()
            found = tables.get((fam, table))
            if found is None:
                found = tables[(fam, table)] = _TableData(fam, table, text, source)
            last_t = found
            last_rules = last_t.rules.setdefault(chain, [])
        last_rules.append((a, end_of[a]))
        rule_table.append(last_t)
    # xt expressions and interface names: look only at the rules that hold them

    def owner(pos: int) -> Optional[int]:
        i = bisect_right(rule_starts, pos) - 1
        if i < 0 or pos >= end_of[rule_starts[i]]:
            return None
        return i

    pos = text.find('{"xt": ')
    while pos >= 0:
        i = owner(pos)
        if i is not None:
            rule_table[i].xt = True
        pos = text.find('{"xt": ', pos + 6)
    seen = set()
    for m in _IFACE_RE.finditer(text):
        i = owner(m.start())
        if i is None or i in seen:
            continue
        seen.add(i)
        a = rule_starts[i]
        rule = json.loads(text[a:end_of[a]])["rule"]
        t = rule_table[i]
        for e in rule.get("expr") or ():
            if isinstance(e, dict):
                iface_strings_of(e, t.ifnames)
    return tables


def xt_tables(text: str, source: str = "nft -j list ruleset") -> List[str]:
    """Tables ("ip filter", ...) holding iptables-nft xt expressions: not readable from nft -j."""
    if '"xt"' not in text:
        return []
    return sorted(t.label for t in split_tables(text, source).values() if t.xt)


def split_tables(text: str, source: str) -> Dict[Tuple[str, str], _TableData]:
    """Pass 1: _split_fast where the text is laid out as nft prints it, _split of the decoded
    document otherwise (which words what is wrong with it)."""
    try:
        tables = _split_fast(text, source)
    except (InputError, ValueError, KeyError, TypeError, IndexError, AttributeError, StopIteration):
        tables = None  # not nft's own layout after all
    return _split(_load(text, source), source) if tables is None else tables
