"""``nft -j list ruleset`` (libnftables JSON) -> one ``Ruleset`` per family.

Tables of family ``ip`` go into the IPv4 ruleset, ``ip6`` into the IPv6 one and ``inet`` into
both: an inet table's rules are compiled once per family, and a match that only exists in the
other family (``ip saddr``, ``meta nfproto ipv6``, ``icmpv6 type``...) makes the rule match
nothing there. Table names in the model carry their family ("inet filter", "ip nat"), so
explanations say which table decided.

The document is split into tables, chains and sets in one cheap pass; a chain's rules are
compiled into packet-set constraints only when the evaluator first walks that chain (see
``ruleset.Chain``), and a named set's elements are converted only when a compiled rule refers to
it. ``json.loads`` (C) is the only whole-document cost.

What needs care:

* iptables-nft tables. ``nft -j`` prints iptables-nft's xt matches and targets without their
  parameters (``{"xt": {"type": "match", "name": "conntrack"}}``), so a table holding any xt
  expression cannot be evaluated from this dump. Such tables are left out (their rules come from
  ``iptables-nft-save``); :func:`xt_tables` names them and every returned ruleset lists them in
  ``excluded_tables`` / ``notes``.
* ``reject with icmp type ...`` in an inet (or bridge/netdev) table: nft inserts a hidden
  ``meta nfproto ipv4`` dependency in front of the rule (checked with ``nft --debug=netlink``:
  the kernel's ``nft_reject_inet`` would otherwise send the IPv4 code to IPv6 packets too), so the
  whole rule matches IPv4 packets only; an IPv6 packet is neither rejected nor dropped by it and
  goes on to the next rule. ``reject with icmpv6 type ...`` likewise applies to IPv6 only;
  ``icmpx`` and ``tcp reset`` serve both families (``tcp reset`` only tcp packets).
* Verdict maps (``tcp dport vmap { 22 : accept, 80 : jump web }``) become one pseudo-rule per
  verdict, in order, each citing the original rule; ``dnat to ... map { ... }`` one per target.
* Anything twinwall cannot decide (``limit``, ``meta mark``, ``ct status``, dynamic sets, ``fib``
  forms other than ``fib daddr type``, unknown expressions) is named in ``Rule.unknown``: the
  evaluator then follows the packets both ways and the result is uncertain, never silently
  assumed.
* arp and bridge tables are ignored (they do not filter IP packets at the ip/ip6 hooks); a
  netdev table with ingress rules can drop packets before any IP hook, so it is represented by a
  pseudo-chain whose single "may drop" rule makes every result uncertain and names the chain.
"""

from __future__ import annotations

import json
import re
import socket
from bisect import bisect_right
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from twinwall.analysis.packetset import (
    CT_ALL,
    CT_NAMES,
    DPORT,
    DST,
    GID,
    HOPLIMIT,
    ICMP,
    IIF,
    MASK_DIMS,
    OIF,
    PROTO,
    SPORT,
    SRC,
    STATE,
    UID,
    address_space,
    complement as value_complement,
    conjoin,
    domain,
    iv_and,
    iv_normalize,
    iv_sub,
    multicast_addresses,
    prefix_interval,
    tcp_flag_states,
)
from twinwall.errors import InputError
from twinwall.parsers.protocols import IP_PROTOCOLS, PORT_PROTOCOLS
from twinwall.ruleset import (
    ACCEPT,
    CONTINUE,
    DNAT,
    DROP,
    GOTO,
    JUMP,
    NAT_DONE,
    NOTRACK,
    QUEUE,
    REDIRECT,
    REJECT,
    RETURN,
    UNKNOWN,
    BaseChain,
    Chain,
    Rule,
    Ruleset,
    Table,
)

__all__ = ["parse_nft_json", "xt_tables", "rule_families", "netlink_nfproto", "NAMED_PRIORITIES"]

VIEW_FAMILIES = {"ipv4": ("ip", "inet"), "ipv6": ("ip6", "inet")}
FAMILY_OF_VIEW = {"ipv4": "ip", "ipv6": "ip6"}

# nft's named chain priorities for the ip, ip6 and inet families
NAMED_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
# inet/netdev ingress runs before every prerouting chain, whatever its priority
INGRESS_OFFSET = -(1 << 31)

CHAIN_KINDS = {"nat": "nat", "route": "route"}

ICMP4_TYPES = {
    "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10, "time-exceeded": 11,
    "parameter-problem": 12, "timestamp-request": 13, "timestamp-reply": 14, "info-request": 15,
    "info-reply": 16, "address-mask-request": 17, "address-mask-reply": 18,
}
ICMP6_TYPES = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
    "parameter-problem": 4, "echo-request": 128, "echo-reply": 129, "mld-listener-query": 130,
    "mld-listener-report": 131, "mld-listener-done": 132, "mld-listener-reduction": 132,
    "nd-router-solicit": 133, "nd-router-advert": 134, "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136, "nd-redirect": 137, "router-renumbering": 138,
    "ind-neighbor-solicit": 141, "ind-neighbor-advert": 142, "mld2-listener-report": 143,
}
ICMP4_CODES = {
    "net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2, "port-unreachable": 3,
    "frag-needed": 4, "net-prohibited": 9, "host-prohibited": 10, "admin-prohibited": 13,
}
ICMP6_CODES = {
    "no-route": 0, "admin-prohibited": 1, "addr-unreachable": 3, "port-unreachable": 4,
    "policy-fail": 5, "reject-route": 6,
}
TCP_FLAGS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64, "cwr": 128}

_VERDICTS = ("accept", "drop", "return", "continue", "jump", "goto")
# statements that neither decide nor hide a decision: evaluation goes on
_CONTINUE_STATEMENTS = {
    "counter", "log", "mangle", "notrack", "set", "map", "flow", "dup", "ct helper",
    "ct timeout", "ct expectation", "secmark", "ct zone",
}
# statements that behave like a match (the rule goes on only for some packets): undecidable
_MATCH_LIKE_STATEMENTS = {"limit", "quota", "ct count", "meter", "synproxy", "last"}


class _Unknown(Exception):
    """A match or value twinwall cannot decide; the message names it."""


# ---------------------------------------------------------------------------------------------
# pass 1: tables, chains, sets


class _TableData:
    """One nft table as found in the dump. Rules and sets may still be undecoded: a rule is a
    dict, or a (start, end) span of the dump's text decoded when its chain is compiled; a set
    is a dict or a span decoded on first use."""

    __slots__ = ("family", "name", "chains", "rules", "sets", "xt", "text", "ifnames")

    def __init__(self, family: str, name: str, text: str = ""):
        self.family = family
        self.name = name
        self.chains: Dict[str, Dict[str, Any]] = {}
        self.rules: Dict[str, List[Any]] = {}
        self.sets: Dict[str, Any] = {}
        self.xt = False
        self.text = text
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
            items = json.loads("[" + self.text[first:last] + "]")
        else:
            items = json.loads("[" + ", ".join(self.text[a:b] for a, b in entries) + "]")
        return [item["rule"] for item in items]

    def set_body(self, name: str) -> Optional[Dict[str, Any]]:
        s = self.sets.get(name)
        if isinstance(s, tuple):
            kind, a, b = s
            s = next(iter(json.loads(self.text[a:b]).values()))
            s["_kind"] = kind
            self.sets[name] = s
        return s

    def set_header(self, name: str) -> str:
        """The start of a set's text (its type and flags come before the elements)."""
        s = self.sets.get(name)
        if isinstance(s, tuple):
            head = self.text[s[1]:s[2]]
            cut = head.find('"elem":')
            return head if cut < 0 else head[:cut]
        return json.dumps({k: v for k, v in s.items() if k != "elem"})


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
    last_t: Optional[_TableData] = None
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
            if key != last_key:
                last_t = tables.get(key)
                if last_t is None:
                    last_t = tables[key] = _TableData(*key)
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
                        elif _mentions_iface(e):
                            _iface_strings(e, t.ifnames)
    return tables


def _add_item(tables, kind: str, body: Any, source: str, where: Any) -> _TableData:
    if not isinstance(body, dict) or "family" not in body:
        raise InputError(f"{source}: nftables[{where}]: a {kind} without a family")
    name = body.get("name") if kind == "table" else body.get("table")
    key = (body["family"], name)
    t = tables.get(key)
    if t is None:
        t = tables[key] = _TableData(*key)
    if kind == "chain":
        t.chains[body.get("name")] = body
    elif kind in ("set", "map"):
        body = dict(body)
        body["_kind"] = kind
        t.sets[body.get("name")] = body
    return t


# Top-level items of nft's own output: '{"KIND": {"family": ...' occurs nowhere else (a string
# cannot hold an unescaped quote), and nft prints "family" first, then for rules table and chain.
_RULE_RE = re.compile(r'\{"rule": \{"family": "([^"\\]*)", "table": "([^"\\]*)", "chain": "([^"\\]*)", ')
_RULE_START_RE = re.compile(r'\{"rule": \{"family": "')
_OTHER_RE = re.compile(
    r'\{"(table|chain|set|map|flowtable|counter|quota|limit|ct helper|ct timeout|ct expectation|secmark'
    r'|synproxy|tunnel)": \{"family": '
)
_IFACE_RE = re.compile(r'\{"meta": \{"key": "(?:iifname|oifname|iif|oif)"\}\}')


def _split_fast(text: str, source: str) -> Optional[Dict[Tuple[str, str], _TableData]]:
    """Pass 1 straight on nft's text, decoding only tables, chains and set headers; rules and
    sets stay spans of the text until used. None when the text is not laid out as nft prints
    it (the caller then decodes the whole document)."""
    head = text[:64].lstrip()
    if not head.startswith('{"nftables": ['):
        return None
    end_all = text.rindex("]}")
    rule_starts = [m.start() for m in _RULE_START_RE.finditer(text)]
    others = [(m.start(), m.group(1)) for m in _OTHER_RE.finditer(text)]
    starts = sorted(rule_starts + [o[0] for o in others])
    ends = [b - 2 for b in starts[1:]] + [end_all]
    for b in ends[:-1]:
        if text[b:b + 2] != ", ":
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
        t.text = text
    # a chain's rules follow one another and share their header ('{"rule": {"family": "ip",
    # "table": "t", "chain": "c", '): decode a header only where it changes
    header = ""
    last_t: Optional[_TableData] = None
    last_rules: List[Any] = []
    rule_table: List[_TableData] = []
    for a in rule_starts:
        if not header or not text.startswith(header, a):
            m = _RULE_RE.match(text, a)
            if m is None:
                return None  # a name with an escaped character: not worth a fast path
            header = m.group(0)
            fam, table, chain = m.groups()
            last_t = tables.get((fam, table))
            if last_t is None:
                last_t = tables[(fam, table)] = _TableData(fam, table, text)
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
            if isinstance(e, dict) and _mentions_iface(e):
                _iface_strings(e, t.ifnames)
    return tables


def xt_tables(text: str, source: str = "nft -j list ruleset") -> List[str]:
    """Tables ("ip filter", ...) holding iptables-nft xt expressions: not readable from nft -j."""
    if '"xt"' not in text:
        return []
    tables = _split_fast(text, source)
    if tables is None:
        tables = _split(_load(text, source), source)
    return sorted(t.label for t in tables.values() if t.xt)


# ---------------------------------------------------------------------------------------------
# entry point


_RULE_FAMILY_RE = re.compile(r'"rule"\s*:\s*\{\s*"family"\s*:\s*"(\w+)"')
_FAMILIES_OF_TABLE = {"ip": ("ipv4",), "ip6": ("ipv6",), "inet": ("ipv4", "ipv6")}


def rule_families(text: str) -> set:
    """The families ("ipv4", "ipv6") whose packets some rule of an ``nft -j`` dump can see (a
    rule in an ip, ip6 or inet table, iptables-nft's included): a cheap scan, no parsing."""
    found = set(_RULE_FAMILY_RE.findall(text))
    if not found and '"rule"' in text:  # not nft's own key order: read the document
        try:
            items = json.loads(text).get("nftables") or []
            found = {str(o["rule"].get("family")) for o in items
                     if isinstance(o, dict) and isinstance(o.get("rule"), dict)}
        except (ValueError, AttributeError, TypeError):
            return set()
    return {f for fam in found for f in _FAMILIES_OF_TABLE.get(fam, ())}


_NETLINK_RULE_RE = re.compile(r"^(\w+) (\S+) (\S+) (\d+)(?: \d+)?$")
_NETLINK_LOAD_RE = re.compile(r"^\s*\[ meta load nfproto => reg (\d+) \]")
_NETLINK_CMP_RE = re.compile(r"^\s*\[ cmp (eq|neq) reg (\d+) 0x0*([0-9a-f]+) \]")
# NFPROTO_IPV4 = 2, NFPROTO_IPV6 = 10: one byte, printed as the register's 32-bit word (on a
# big-endian host the byte is the word's top one: 0x0a000000)
_NFPROTO_NUMBERS = {"2": "ipv4", "a": "ipv6", "2000000": "ipv4", "a000000": "ipv6"}


def netlink_nfproto(text: str) -> Dict[Tuple[str, str, str, int], List[Tuple[str, str]]]:
    """``(family, table, chain, handle) -> [(op, family), ...]``: the ``meta nfproto`` tests the
    kernel holds for each rule, from ``nft --debug=netlink list ruleset``. nft 1.0.6 prints
    ``meta nfproto ipv6 tcp dport 3000 reject with tcp reset`` (and ``meta nfproto ipv4 meta
    l4proto icmp``) without the nfproto in both ``list`` and ``-j``; the netlink form keeps it::

        inet t input 3
          [ meta load nfproto => reg 1 ]
          [ cmp eq reg 1 0x0000000a ]

    Every rule of the dump gets an entry (an empty list: no nfproto test)."""
    out: Dict[Tuple[str, str, str, int], List[Tuple[str, str]]] = {}
    current: Optional[List[Tuple[str, str]]] = None
    regs: set = set()
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            m = _NETLINK_RULE_RE.match(line)
            current, regs = None, set()
            if m:
                current = out.setdefault((m.group(1), m.group(2), m.group(3), int(m.group(4))), [])
            continue
        if current is None:
            continue
        m = _NETLINK_LOAD_RE.match(line)
        if m:
            regs.add(m.group(1))
            continue
        m = _NETLINK_CMP_RE.match(line)
        if m and m.group(2) in regs and m.group(3) in _NFPROTO_NUMBERS:
            current.append((m.group(1), _NFPROTO_NUMBERS[m.group(3)]))
        if "=> reg" in line and not _NETLINK_LOAD_RE.match(line):
            # another load overwrites its register
            r = re.search(r"=> reg (\d+)", line)
            if r:
                regs.discard(r.group(1))
    return out


def parse_nft_json(text: str, source: str = "nft -j list ruleset",
                   netlink: Optional[str] = None) -> List[Ruleset]:
    """The IPv4 and the IPv6 ``Ruleset`` (kind "nftables") of an ``nft -j list ruleset`` dump.

    ``netlink``: the ``nft --debug=netlink list ruleset`` output of the same ruleset, when known;
    it restores the ``meta nfproto`` tests nft hides (:func:`netlink_nfproto`). Without it, the
    inet rules whose form nft 1.0.6 prints without their nfproto are uncertain.

    Each returned ruleset has two extra attributes: ``excluded_tables`` (iptables-nft tables
    left to iptables-nft-save) and ``notes`` (one sentence per table left out or ignored)."""
    nfproto = netlink_nfproto(netlink) if netlink else None
    tables = None
    try:
        tables = _split_fast(text, source)
    except (ValueError, KeyError, TypeError, IndexError, StopIteration):
        tables = None  # not nft's own layout after all: decode the whole document instead
    if tables is None:
        tables = _split(_load(text, source), source)
    notes: List[str] = []
    excluded: List[str] = []
    for t in tables.values():
        if t.xt:
            excluded.append(t.label)
            notes.append(
                f"table {t.label} holds iptables-nft (xt) expressions, which nft -j prints without "
                "their parameters: it is read from iptables-nft-save instead"
            )
        elif t.family in ("arp", "bridge"):
            if t.rules:
                notes.append(f"table {t.label} ignored: {t.family} tables do not filter IP packets at the ip/ip6 hooks")
    out = []
    for family in ("ipv4", "ipv6"):
        rs = Ruleset(family=family, source=source, kind="nftables")
        rs.excluded_tables = list(excluded)  # type: ignore[attr-defined]
        rs.notes = list(notes)  # type: ignore[attr-defined]
        view = _View(rs, tables)
        view.nfproto = nfproto
        for t in tables.values():
            if t.xt:
                continue
            if t.family in VIEW_FAMILIES[family]:
                view.add_table(t)
            elif t.family == "netdev":
                view.add_netdev(t)
        rs.interface_specs = sorted(view.interface_names(t for t in tables.values() if not t.xt))
        out.append(rs)
    return out


# ---------------------------------------------------------------------------------------------
# pass 2: one family's view of the tables


def _policy(body: Dict[str, Any], where: str) -> str:
    """A base chain's policy, "accept" (nft's default) or "drop": the only two nft accepts.
    Anything else means a damaged or hand-edited dump; reading it as accept would hide that."""
    value = body.get("policy", "accept")
    policy = value.lower() if isinstance(value, str) else value
    if policy not in ("accept", "drop"):
        raise InputError(f"{where}: unknown chain policy {value!r} (nft allows accept or drop)")
    return policy


def _priority(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{where}: bad chain priority {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        for op in ("+", "-"):
            name, sep, num = text.partition(f" {op} ")
            if sep and name in NAMED_PRIORITIES and num.strip().isdigit():
                n = int(num)
                return NAMED_PRIORITIES[name] + (n if op == "+" else -n)
        if text in NAMED_PRIORITIES:
            return NAMED_PRIORITIES[text]
        try:
            return int(text)
        except ValueError:
            pass
    raise InputError(f"{where}: unknown chain priority {value!r}")


def _iface_spec(name: str) -> str:
    """nft's "eth*" wildcard as the interface universe's "eth+" pattern."""
    if name.endswith("*") and not name.endswith("\\*"):
        return name[:-1] + "+"
    return name.replace("\\*", "*")


class _View:
    def __init__(self, ruleset: Ruleset, tables: Dict[Tuple[str, str], _TableData]):
        self.rs = ruleset
        self.family = ruleset.family
        self.nfamily = FAMILY_OF_VIEW[self.family]
        self.tables = tables
        self.by_label: Dict[str, _TableData] = {}
        self.addr_full = address_space(self.family)
        self.af = socket.AF_INET if self.family == "ipv4" else socket.AF_INET6
        self._set_cache: Dict[Tuple, Any] = {}
        self.nfproto: Optional[Dict[Tuple[str, str, str, int], List[Tuple[str, str]]]] = None

    # -- structure -----------------------------------------------------------------------------

    def add_table(self, t: _TableData) -> None:
        label = t.label
        self.by_label[label] = t
        table = Table(label)
        self.rs.tables[label] = table
        for cname, body in t.chains.items():
            hook = body.get("hook")
            policy = None
            if hook:
                policy = _policy(body, f"{self.rs.source}: chain {label} {cname}").upper()
            chain = Chain(label, cname, policy)
            table.chains[cname] = chain
            rules = t.rules.get(cname)
            if rules:
                chain.set_source(rules, self.compile_chain)
            if hook:
                prio = _priority(body.get("prio", 0), f"{self.rs.source}: chain {label} {cname}")
                if hook == "ingress":
                    hook, prio = "prerouting", INGRESS_OFFSET + prio
                kind = CHAIN_KINDS.get(str(body.get("type", "filter")), "filter")
                self.rs.base_chains.append(BaseChain(hook, prio, label, cname, kind))
        for cname in t.rules:
            if cname not in table.chains:
                raise InputError(f"{self.rs.source}: rules for chain {label} {cname}, which is not declared")

    def add_netdev(self, t: _TableData) -> None:
        """netdev ingress: may drop before any IP hook; not evaluated, made visible."""
        label = t.label
        for cname, body in t.chains.items():
            if body.get("hook") != "ingress":
                continue
            n = len(t.rules.get(cname, ()))
            policy = _policy(body, f"{self.rs.source}: chain {label} {cname}")
            if not n and policy != "drop":
                continue
            dev = body.get("dev") or body.get("devices") or "?"
            if isinstance(dev, list):
                dev = ",".join(str(d) for d in dev)
            what = f"netdev table {t.name} ingress chain {cname} (device {dev}, {n} rules, policy {policy}) is not evaluated"
            table = self.rs.tables.setdefault(label, Table(label))
            chain = Chain(label, cname, "ACCEPT")
            chain._rules = [
                Rule(label, cname, 1, f"(ingress chain: {n} rules, policy {policy}; not evaluated)",
                     ((),), (what,), DROP, "")
            ]
            table.chains[cname] = chain
            prio = _priority(body.get("prio", 0), f"{self.rs.source}: chain {label} {cname}")
            self.rs.base_chains.append(BaseChain("prerouting", INGRESS_OFFSET - 1 + prio, label, cname, "filter"))
            note = f"table {label} chain {cname}: {what}; results are uncertain"
            notes = self.rs.notes  # type: ignore[attr-defined]
            if note not in notes:
                notes.append(note)

    def interface_names(self, tables: Iterable[_TableData]) -> set:
        """Every interface name or wildcard the rules and sets mention (for the universe)."""
        names: set = set()
        for t in tables:
            if t.family not in VIEW_FAMILIES[self.family]:
                continue
            for name in t.sets:
                head = t.set_header(name)
                if '"ifname"' in head or '"iface_index"' in head:
                    s = t.set_body(name) or {}
                    elems = s.get("elem") or ()
                    if s.get("_kind") == "map":
                        elems = [pair[0] for pair in elems if isinstance(pair, list) and pair]
                    _strings(elems, names)
            names.update(t.ifnames)
        return {_iface_spec(n) for n in names if n}

    # -- compiling --------------------------------------------------------------------------------

    def compile_chain(self, chain: Chain, rules: List[Dict[str, Any]]) -> List[Rule]:
        out: List[Rule] = []
        t = self.by_label[chain.table]
        rules = t.rule_dicts(rules)
        for n, r in enumerate(rules, 1):
            compiler = _RuleCompiler(self, t, chain, n, r)
            try:
                compiled = compiler.compile()
                # where the rule is (its handle) and whether it logs, for findings and fixes
                handle = r.get("handle")
                logs = any(isinstance(e, dict) and "log" in e for e in r.get("expr") or ())
                for rule in compiled:
                    rule.handle = handle if isinstance(handle, int) else None
                    rule.logs = logs
                out.extend(compiled)
            except InputError:
                raise
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                raise InputError(
                    f"{compiler.where()}: not understood ({type(exc).__name__}: {exc}): "
                    f"{json.dumps(r.get('expr'))[:200]}"
                ) from None
        return out

    def hooks_reaching(self, t: _TableData, chain: str) -> set:
        """The hooks whose base chains reach ``chain`` by jumps, gotos and verdict maps
        (decodes the table's rules; only asked for rare matches such as meta skuid)."""
        cache = self._set_cache.setdefault(("hooks", t.label), {})
        if not cache:
            edges: Dict[str, set] = {}
            for cname, entries in t.rules.items():
                targets: set = set()
                for r in t.rule_dicts(entries):
                    _jump_targets(r.get("expr"), t, targets)
                edges[cname] = targets
            for cname, body in t.chains.items():
                hook = body.get("hook")
                if not hook:
                    continue
                hook = "prerouting" if hook == "ingress" else hook
                todo = [cname]
                seen = set()
                while todo:
                    c = todo.pop()
                    if c in seen:
                        continue
                    seen.add(c)
                    cache.setdefault(c, set()).add(hook)
                    todo.extend(edges.get(c, ()))
            cache.setdefault("", set())  # mark as computed
        return cache.get(chain, set())

    def named_set(self, t: _TableData, ref: str) -> Dict[str, Any]:
        s = t.set_body(ref[1:])
        if s is None:
            raise InputError(f"{self.rs.source}: table {t.label}: reference to unknown set {ref}")
        return s


def _jump_targets(v: Any, t: _TableData, out: set) -> None:
    if isinstance(v, list):
        for x in v:
            _jump_targets(x, t, out)
    elif isinstance(v, dict):
        for key, body in v.items():
            if key in ("jump", "goto") and isinstance(body, dict) and "target" in body:
                out.add(body["target"])
            elif key == "vmap" and isinstance(body, dict) and isinstance(body.get("data"), str):
                ref = body["data"]
                s = t.set_body(ref[1:]) if ref.startswith("@") else None
                _jump_targets((s or {}).get("elem"), t, out)
            else:
                _jump_targets(body, t, out)


def _mentions_iface(e: Dict[str, Any]) -> bool:
    # cheap pre-filter before the recursive walk
    m = e.get("match")
    if m is not None:
        left = m.get("left")
        return isinstance(left, dict) and ("meta" in left or "concat" in left)
    return "vmap" in e


_IFACE_KEYS = {"iifname", "oifname", "iif", "oif"}


def _is_iface_left(left: Any) -> bool:
    return isinstance(left, dict) and "meta" in left and left["meta"].get("key") in _IFACE_KEYS


def _iface_strings(e: Dict[str, Any], out: set) -> None:
    m = e.get("match")
    if m is not None:
        left, right = m.get("left"), m.get("right")
        if _is_iface_left(left):
            if not (isinstance(right, str) and right.startswith("@")):
                _strings(right, out)
        elif isinstance(left, dict) and "concat" in left:
            idx = [i for i, c in enumerate(left["concat"]) if _is_iface_left(c)]
            if idx and isinstance(right, dict) and "set" in right:
                for el in right["set"]:
                    el = _unwrap(el)
                    if isinstance(el, dict) and "concat" in el:
                        for i in idx:
                            if i < len(el["concat"]):
                                _strings(el["concat"][i], out)
        return
    v = e.get("vmap")
    if v is not None and _is_iface_left(v.get("key")):
        data = v.get("data")
        if isinstance(data, dict) and "set" in data:
            for pair in data["set"]:
                if isinstance(pair, list) and pair:
                    _strings(pair[0], out)


def _strings(v: Any, out: set) -> None:
    if isinstance(v, str):
        out.add(v)
    elif isinstance(v, list):
        for x in v:
            _strings(x, out)
    elif isinstance(v, dict):
        for x in v.values():
            _strings(x, out)


def _unwrap(el: Any) -> Any:
    """A set element with options ({"elem": {"val": X, "timeout": ...}}) -> X."""
    while isinstance(el, dict) and "elem" in el and isinstance(el["elem"], dict):
        el = el["elem"].get("val")
    return el


# ---------------------------------------------------------------------------------------------
# left-hand sides: what a match looks at


class _Sel:
    """One packet field: its dimension, value kind, the family it needs, implied constraints."""

    __slots__ = ("dim", "kind", "gate", "implied", "text")

    def __init__(self, dim: Optional[int], kind: str, gate: Optional[str], implied: Tuple, text: str):
        self.dim = dim
        self.kind = kind
        self.gate = gate
        self.implied = implied
        self.text = text


def _payload_sel(p: Dict[str, Any]) -> _Sel:
    proto, field = p.get("protocol"), p.get("field")
    text = f"{proto} {field}" if proto else f"@{p.get('base')},{p.get('offset')},{p.get('len')}"
    if proto in ("ip", "ip6"):
        gate = "ipv4" if proto == "ip" else "ipv6"
        if field == "saddr":
            return _Sel(SRC, "addr", gate, (), text)
        if field == "daddr":
            return _Sel(DST, "addr", gate, (), text)
        if field in ("protocol", "nexthdr"):
            return _Sel(PROTO, "proto", gate, (), text)
        if field in ("hoplimit", "ttl"):
            return _Sel(HOPLIMIT, "hoplimit", gate, (), text)
        raise _Unknown(text)
    if proto in PORT_PROTOCOLS or proto == "th":
        implied = ((PROTO, ((PORT_PROTOCOLS[proto],) * 2,)),) if proto != "th" else ()
        if field == "sport":
            return _Sel(SPORT, "port", None, implied, text)
        if field == "dport":
            return _Sel(DPORT, "port", None, implied, text)
        if proto == "tcp" and field == "flags":
            return _Sel(STATE, "tcpflags", None, implied, text)
        raise _Unknown(text)
    if proto in ("icmp", "icmpv6"):
        v4 = proto == "icmp"
        implied = ((PROTO, ((1, 1),) if v4 else ((58, 58),)),)
        gate = "ipv4" if v4 else "ipv6"
        if field == "type":
            return _Sel(ICMP, "icmp4t" if v4 else "icmp6t", gate, implied, text)
        if field == "code":
            return _Sel(ICMP, "icmp4c" if v4 else "icmp6c", gate, implied, text)
        raise _Unknown(text)
    raise _Unknown(text)


_META = {
    "l4proto": (PROTO, "proto"), "nfproto": (None, "nfproto"), "protocol": (None, "ethertype"),
    "iifname": (IIF, "iface"), "iif": (IIF, "iface"), "oifname": (OIF, "iface"), "oif": (OIF, "iface"),
    "skuid": (UID, "id"), "skgid": (GID, "id"), "pkttype": (DST, "pkttype"),
}


def _ct_status_dnat(left: Any, op: str, right: Any) -> bool:
    """``ct status dnat`` / ``ct status != dnat`` (firewalld's ``ct status dnat accept``)."""
    ct = left.get("ct") if isinstance(left, dict) and len(left) == 1 else None
    return (isinstance(ct, dict) and ct.get("key") == "status" and not ct.get("dir")
            and right == "dnat" and op in ("in", "==", "!="))


def _rpfilter(left: Any, op: str, right: Any) -> Optional[bool]:
    """Whether ``fib saddr [. mark] . iif oif`` compared with ``right`` holds for a remote
    client whose source routes back through its incoming interface (None: not that form)."""
    fib = left.get("fib") if isinstance(left, dict) and len(left) == 1 else None
    if not isinstance(fib, dict) or fib.get("result") != "oif":
        return None
    flags = fib.get("flags") or []
    flags = set(flags if isinstance(flags, list) else [flags])
    if not {"saddr", "iif"} <= flags <= {"saddr", "iif", "mark"}:
        return None
    if right in (False, "0", 0):  # "missing"
        exists = False
    elif right is True:  # "exists"
        exists = True
    else:
        return None
    if op not in ("==", "!="):
        return None
    # the client's route back exists: `== exists` holds, `== missing` does not
    return exists == (op == "==")


def _left_sel(left: Any) -> _Sel:
    if not isinstance(left, dict) or len(left) != 1:
        raise _Unknown(f"match on {_fmt(left)}")
    key, body = next(iter(left.items()))
    if key == "payload":
        return _payload_sel(body)
    if key == "meta":
        k = body.get("key")
        spec = _META.get(k)
        if spec is None:
            raise _Unknown(f"meta {k}")
        return _Sel(spec[0], spec[1], None, (), k if k in _IFACE_KEYS else f"meta {k}")
    if key == "socket":
        raise _Unknown(f"socket {body.get('key')}")
    if key in ("numgen", "jhash", "symhash") and isinstance(body, dict):
        raise _Unknown(f"{key} {body.get('mode', '')} mod {body.get('mod')}".replace("  ", " "))
    if key == "ct":
        k = body.get("key")
        if k == "state" and not body.get("dir"):
            return _Sel(STATE, "ctstate", None, (), "ct state")
        raise _Unknown(_fmt(left))
    if key == "fib":
        flags = body.get("flags") or []
        flags = flags if isinstance(flags, list) else [flags]
        if body.get("result") == "type" and flags == ["daddr"]:
            return _Sel(DST, "fibtype", None, (), "fib daddr type")
        raise _Unknown(_fmt(left))
    if key == "&":
        inner = body[0] if isinstance(body, list) and body else None
        if isinstance(inner, dict) and inner.get("payload", {}).get("protocol") == "tcp" and inner["payload"].get("field") == "flags":
            sel = _payload_sel(inner["payload"])
            return _Sel(sel.dim, "tcpflags&", None, sel.implied, sel.text)
        raise _Unknown(_fmt(left))
    raise _Unknown(_fmt(left))


# ---------------------------------------------------------------------------------------------
# one rule


class _RuleCompiler:
    def __init__(self, view: _View, t: _TableData, chain: Chain, number: int, rule: Dict[str, Any]):
        self.view = view
        self.t = t
        self.chain = chain
        self.number = number
        self.rule = rule
        self.family = view.family
        self.conj: Dict[int, Any] = {}
        self.disj: List[List[Dict[int, Any]]] = []  # from concatenations: AND of ORs
        self.never = False
        self.unknown: List[str] = []
        self.ct_dnat: Optional[bool] = None  # `ct status dnat` (True) / `!= dnat` (False)

    # -- constraints --------------------------------------------------------------------------

    def add(self, dim: int, value: Any) -> None:
        old = self.conj.get(dim)
        if old is None:
            new = value
        elif dim in MASK_DIMS:
            new = old & value
        else:
            new = iv_and(old, value)
        self.conj[dim] = new
        if not new:
            self.never = True

    def gate(self, gate: Optional[str]) -> None:
        if gate is not None and gate != self.family:
            self.never = True

    def complement(self, dim: int, value: Any) -> Any:
        ifaces = self.view.rs.universe.all_mask if dim == IIF or dim == OIF else 0
        return value_complement(dim, value, self.family, ifaces)

    # -- the rule -----------------------------------------------------------------------------

    def where(self) -> str:
        return (f"{self.view.rs.source}: {self.chain.table} {self.chain.name} rule {self.number} "
                f"(handle {self.rule.get('handle')})")

    def compile(self) -> List[Rule]:
        r = self.rule
        exprs = r.get("expr", [])
        if not isinstance(exprs, list):
            # nft itself refuses it ("must be an array"); read as no statements, the rule would
            # silently vanish from the audit
            raise InputError(f'{self.where()}: "expr" is not a list: {json.dumps(exprs)[:80]}')
        text = rule_text(r)
        action = CONTINUE
        target = ""
        nat_to = None
        expand: Optional[Tuple[str, Any]] = None  # ("vmap", body) / ("natmap", (kind, body))
        unknown_stmt = ""
        for e in exprs:
            if not isinstance(e, dict) or len(e) != 1:
                self.unknown.append(f"nft expression {_fmt(e)[:40]}")
                continue
            key, body = next(iter(e.items()))
            if key == "match":
                self.match(body)
                continue
            if action != CONTINUE or expand is not None:
                break  # after a verdict nothing runs
            if key in ("accept", "drop", "return"):
                action = {"accept": ACCEPT, "drop": DROP, "return": RETURN}[key]
            elif key == "continue":
                continue
            elif key in ("jump", "goto"):
                action = JUMP if key == "jump" else GOTO
                target = body["target"]
            elif key == "reject":
                action = self.reject(body)
            elif key == "vmap":
                expand = ("vmap", body)
            elif key in ("dnat", "redirect"):
                fam = (body or {}).get("family")
                if fam and self.t.family == "inet" and fam != self.view.nfamily:
                    continue  # nft_nat_inet: a nat statement of the other family does nothing
                addr = (body or {}).get("addr")
                if isinstance(addr, dict) and "map" in addr:
                    expand = ("natmap", body)
                    action = DNAT
                    continue
                action = DNAT if key == "dnat" else REDIRECT
                try:
                    nat_to = self.nat_target(body or {}, key)
                except _Unknown as exc:
                    nat_to = (None, None)
                    self.unknown.append(str(exc))
            elif key in ("snat", "masquerade"):
                fam = (body or {}).get("family")
                if fam and self.t.family == "inet" and fam != self.view.nfamily:
                    continue
                action = NAT_DONE
            elif key == "queue":
                action = QUEUE
            elif key == "notrack":
                action = NOTRACK
            elif key in _CONTINUE_STATEMENTS:
                continue
            elif key in _MATCH_LIKE_STATEMENTS:
                self.unknown.append(_stmt_text(key, body))
            elif key == "xt":
                name = f"nft expression 'xt' ({(body or {}).get('type', '?')} {(body or {}).get('name', '?')})"
                if (body or {}).get("type") == "target":
                    unknown_stmt = name
                else:
                    self.unknown.append(name)
            else:
                unknown_stmt = f"nft expression {key!r}"
        if self.t.family == "inet":
            text += self.hidden_nfproto(exprs, action)
        if unknown_stmt:
            if action == CONTINUE and expand is None:
                action, target = UNKNOWN, unknown_stmt
            else:
                self.unknown.append(unknown_stmt)
        if self.never:
            return [Rule(self.chain.table, self.chain.name, self.number, text, (), (), CONTINUE, "")]
        if expand is not None and self.ct_dnat is not None:
            self.unknown.append("ct status")
        unknown = tuple(dict.fromkeys(self.unknown))
        base_alts = self.alternatives([])
        if expand is not None:
            return self.expand(expand, base_alts, unknown, text)
        rule = Rule(self.chain.table, self.chain.name, self.number, text, base_alts, unknown, action, target, nat_to)
        rule.ct_dnat = self.ct_dnat
        return [rule]

    def hidden_nfproto(self, exprs: List[Any], action: str) -> str:
        """The ``meta nfproto`` tests nft may not print (see :func:`netlink_nfproto`): from the
        netlink dump when it has this rule; otherwise, for the forms nft 1.0.6 prints without
        it (``reject with tcp reset``; ``meta l4proto icmp``/``ipv6-icmp`` seen from the other
        family), the rule is uncertain: it may or may not apply to this family."""
        tests = None
        if self.view.nfproto is not None:
            tests = self.view.nfproto.get((self.t.family, self.t.name, self.chain.name, self.rule.get("handle")))
        if tests is not None:
            for op, fam in tests:
                if (fam == self.family) == (op == "neq"):
                    self.never = True
            if tests and not self.never and not any(_is_nfproto_match(e) for e in exprs):
                # the citation says why the rule holds for this family only (nft -j hides it)
                shown = " ".join(f"meta nfproto {'!= ' if op == 'neq' else ''}{fam}" for op, fam in tests)
                return f" ({shown}: nft --debug=netlink)"
            return ""
        if self.never or any(_is_nfproto_match(e) for e in exprs):
            return ""
        hidden = ""
        for e in exprs:
            if not isinstance(e, dict) or len(e) != 1:
                continue
            key, body = next(iter(e.items()))
            if key == "reject" and isinstance(body, dict) and body.get("type") == "tcp reset":
                hidden = "reject with tcp reset"
            elif key == "match" and _l4proto_of_other_family(body, self.family):
                hidden = f"meta l4proto {_fmt(body.get('right'))}"
        if hidden:
            self.unknown.append(
                f"meta nfproto: nft prints '{hidden}' rules without a 'meta nfproto' test they may "
                "hold (no nft --debug=netlink dump to tell; twinwall collect records one)")
        return ""

    def alternatives(self, extra: List[List[Dict[int, Any]]]) -> Tuple:
        """conj AND each disjunction (from concatenations and map keys) -> tuple of constraints."""
        alts: List[Dict[int, Any]] = [dict(self.conj)]
        for group in self.disj + extra:
            nxt = []
            for a in alts:
                for g in group:
                    merged = conjoin(a, g)
                    if merged is not None:
                        nxt.append(merged)
            alts = nxt
            if not alts:
                break
        return tuple(tuple(a.items()) for a in alts)

    # -- matches ------------------------------------------------------------------------------

    def match(self, m: Dict[str, Any]) -> None:
        op = m.get("op", "==")
        left, right = m.get("left"), m.get("right")
        if isinstance(left, dict) and "concat" in left:
            self.concat_match(op, left["concat"], right)
            return
        if _ct_status_dnat(left, op, right):
            # decided per packet by the evaluator (Rule.ct_dnat): was it NATed on the way in?
            self.ct_dnat = op != "!="
            return
        rp = _rpfilter(left, op, right)
        if rp is not None:
            # a reverse-path test (firewalld's IPv6_rpfilter): a remote client's address routes
            # back through the interface it came in on, as the iptables rpfilter match reads it
            self.never = self.never or not rp
            return
        try:
            sel = _left_sel(left)
        except _Unknown as exc:
            self.unknown.append(str(exc))
            return
        self.gate(sel.gate)
        if self.never:
            return
        for dim, value in sel.implied:
            self.add(dim, value)
        if sel.kind == "id":
            # only locally generated packets have a socket owner: on the incoming hooks
            # (prerouting, input, forward) meta skuid/skgid never match a new connection
            reach = self.view.hooks_reaching(self.t, self.chain.name)
            if reach and not reach & {"output", "postrouting"}:
                self.never = True
                return
            if reach & {"prerouting", "input", "forward", "postrouting"}:
                self.unknown.append(f"{sel.text} (only locally generated packets have an owner)")
        try:
            if sel.kind in ("nfproto", "ethertype"):
                fams = self.family_values(right)
                hit = self.family in fams
                if hit == (op == "!="):
                    self.never = True
                return
            if sel.kind in ("tcpflags", "tcpflags&"):
                self.tcp_flags(sel, op, left, right)
                return
            value = self.values(sel, right, op)
        except _Unknown as exc:
            self.unknown.append(str(exc))
            return
        if value is None:  # "may match": named already
            return
        if op == "!=":
            value = self.complement(sel.dim, value)
        self.add(sel.dim, value)

    def values(self, sel: _Sel, right: Any, op: str) -> Any:
        """The value set a right-hand side stands for, in the selector's dimension."""
        if op in ("<", ">", "<=", ">="):
            if sel.dim in MASK_DIMS or sel.kind in ("pkttype", "fibtype"):
                raise _Unknown(f"{sel.text} {op} {_fmt(right)}")
            v = self.one(sel, right)
            if len(v) != 1 or v[0][0] != v[0][1]:
                raise _Unknown(f"{sel.text} {op} {_fmt(right)}")
            x = v[0][0]
            top = self.domain_top(sel.dim)
            lo, hi = {"<": (0, x - 1), "<=": (0, x), ">": (x + 1, top), ">=": (x, top)}[op]
            return ((lo, hi),) if lo <= hi else ()
        if op not in ("==", "!=", "in"):
            raise _Unknown(f"{sel.text} {op} {_fmt(right)}")
        if isinstance(right, str) and right.startswith("@"):
            return self.set_values(sel, right)
        if isinstance(right, dict) and "set" in right:
            return self.union(sel, right["set"])
        if isinstance(right, list):  # flag lists: ct state { established, related }
            return self.union(sel, right)
        return self.one(sel, right)

    def domain_top(self, dim: int) -> int:
        return domain(dim, self.family)[-1][1]

    def union(self, sel: _Sel, elems: Sequence[Any]) -> Any:
        if sel.dim in MASK_DIMS:
            mask = 0
            for el in elems:
                mask |= self.one(sel, el)
            return mask
        if sel.kind == "addr":
            return self.addr_bulk(elems)
        pairs: List[Tuple[int, int]] = []
        for el in elems:
            pairs.extend(self.one(sel, el))
        return iv_normalize(pairs)

    def set_values(self, sel: _Sel, ref: str) -> Any:
        s = self.view.named_set(self.t, ref)
        if _dynamic(s):
            self.unknown.append(f"set {ref} changes at run time (flags {','.join(s.get('flags') or [])})")
            return None
        key = (self.t.label, ref, sel.kind, sel.dim)
        cache = self.view._set_cache
        if key not in cache:
            elems = s.get("elem") or []
            if s.get("_kind") == "map":
                elems = [pair[0] for pair in elems]
            cache[key] = self.union(sel, elems)
        return cache[key]

    def addr_bulk(self, elems: Sequence[Any]) -> tuple:
        """Addresses, prefixes and ranges in bulk (sets of 100k elements)."""
        pton = socket.inet_pton
        af = self.view.af
        frombytes = int.from_bytes
        pairs: List[Tuple[int, int]] = []
        append = pairs.append
        bits = 32 if self.family == "ipv4" else 128
        for el in elems:
            if type(el) is str:
                try:
                    v = frombytes(pton(af, el), "big")
                except OSError:
                    pairs.extend(self.addr_one(el))
                    continue
                append((v, v))
            elif type(el) is dict and "prefix" in el:
                p = el["prefix"]
                try:
                    v = frombytes(pton(af, p["addr"]), "big")
                except (OSError, TypeError):
                    pairs.extend(self.addr_one(el))
                    continue
                host = (1 << (bits - p["len"])) - 1
                append((v & ~host, v | host))
            else:
                pairs.extend(self.addr_one(el))
        return iv_normalize(pairs)

    def addr_one(self, el: Any) -> tuple:
        el = _unwrap(el)
        fam = self.family
        if isinstance(el, str):
            try:
                return (prefix_interval(el, fam),)
            except ValueError:
                raise _Unknown(f"address {el!r} (a host name?)") from None
        if isinstance(el, dict):
            if "prefix" in el:
                p = el["prefix"]
                return (prefix_interval(f"{p['addr']}/{p['len']}", fam),)
            if "range" in el:
                a, b = el["range"]
                lo = self.addr_one(a)[0][0]
                hi = self.addr_one(b)[0][1]
                return ((min(lo, hi), max(lo, hi)),)
            if "set" in el:
                return self.addr_bulk(el["set"])
        raise _Unknown(f"address {_fmt(el)}")

    def one(self, sel: _Sel, el: Any) -> Any:
        """One element (value, prefix, range) in the selector's dimension."""
        el = _unwrap(el)
        kind = sel.kind
        if isinstance(el, dict):
            if "range" in el and kind not in ("iface",) and sel.dim not in MASK_DIMS:
                a, b = el["range"]
                lo = self.one(sel, a)[0][0]
                hi = self.one(sel, b)[-1][1]
                return ((min(lo, hi), max(lo, hi)),)
            if "set" in el:
                return self.union(sel, el["set"])
        if kind == "addr":
            return self.addr_one(el)
        if kind == "port":
            return ((self.port_number(el),) * 2,)
        if kind == "proto":
            return ((self.number_of(el, _protocol),) * 2,)
        if kind == "id":
            v = self.number_of(el, _user if sel.dim == UID else _group)
            return ((v, v),)
        if kind == "hoplimit":
            v = self.number_of(el, lambda name: None)
            return ((v, v),) if 0 <= v <= 255 else ()
        if kind in ("icmp4t", "icmp6t"):
            table = ICMP4_TYPES if kind == "icmp4t" else ICMP6_TYPES
            t = self.number_of(el, lambda s: table.get(s))
            return ((t << 8, (t << 8) | 0xFF),)
        if kind in ("icmp4c", "icmp6c"):
            table = ICMP4_CODES if kind == "icmp4c" else ICMP6_CODES
            c = self.number_of(el, lambda s: table.get(s))
            return tuple((t << 8 | c, t << 8 | c) for t in range(256))
        if kind == "iface":
            if not isinstance(el, str):
                raise _Unknown(f"{sel.text} {_fmt(el)}")
            return self.view.rs.universe.mask(_iface_spec(el))
        if kind == "ctstate":
            names = el if isinstance(el, list) else [el]
            mask = 0
            for name in names:
                bit = CT_NAMES.get(str(name).upper())
                if bit is None:
                    raise _Unknown(f"ct state {name}")
                mask |= bit
            return mask
        if kind == "pkttype":
            return self.pkttype(el)
        if kind == "fibtype":
            return self.fibtype(el)
        raise _Unknown(f"{sel.text} {_fmt(el)}")

    @staticmethod
    def number_of(el: Any, by_name) -> int:
        if isinstance(el, bool):
            raise _Unknown(f"value {el!r}")
        if isinstance(el, int):
            return el
        if isinstance(el, str):
            if el.isdigit():
                return int(el)
            if el.startswith("0x"):
                try:
                    return int(el, 16)
                except ValueError:
                    pass
            v = by_name(el)
            if v is not None:
                return v
        raise _Unknown(f"value {_fmt(el)}")

    def pkttype(self, el: Any) -> tuple:
        mcast = multicast_addresses(self.family)
        bcast = ((0xFFFFFFFF, 0xFFFFFFFF),) if self.family == "ipv4" else ()
        if el in ("host", "unicast"):
            return iv_sub(iv_sub(self.view.addr_full, mcast), bcast)
        if el == "multicast":
            return mcast
        if el == "broadcast":
            return bcast
        if el == "other":
            return ()
        raise _Unknown(f"meta pkttype {el}")

    def fibtype(self, el: Any) -> tuple:
        if el == "local":
            local = self.view.rs.local_addresses
            if local is None:
                raise _Unknown("fib daddr type local (the host's addresses are unknown)")
            return local
        if el == "multicast":
            return multicast_addresses(self.family)
        if el == "broadcast":
            return ((0xFFFFFFFF, 0xFFFFFFFF),) if self.family == "ipv4" else ()
        raise _Unknown(f"fib daddr type {el}")

    def family_values(self, right: Any) -> set:
        names = {"ipv4": "ipv4", "ip": "ipv4", "ipv6": "ipv6", "ip6": "ipv6", 2: "ipv4", 10: "ipv6",
                 0x0800: "ipv4", 0x86DD: "ipv6"}
        if isinstance(right, dict) and "set" in right:
            elems = right["set"]
        elif isinstance(right, list):
            elems = right
        else:
            elems = [right]
        out = set()
        for el in elems:
            el = _unwrap(el)
            fam = names.get(el) if isinstance(el, (str, int)) else None
            if fam is None and not (isinstance(el, str) and el in ("arp", "bridge", "netdev", "inet")):
                raise _Unknown(f"meta nfproto {_fmt(el)}")
            if fam:
                out.add(fam)
        return out

    def tcp_flags(self, sel: _Sel, op: str, left: Any, right: Any) -> None:
        """Like iptables' --tcp-flags: over the flags each conntrack state's packets carry
        (packetset.TCP_FLAGS_OF_STATE: a connection's first packet carries SYN alone)."""
        mask = 0xFF
        if sel.kind == "tcpflags&":
            mask = _flags_value(left["&"][1])
        if isinstance(right, dict) and "set" in right:
            values = [_flags_value(v) for v in right["set"]]
            inside = op != "!="
            test = lambda flags: (flags & mask in values) == inside  # noqa: E731
        else:
            v = _flags_value(right)
            if op == "in":
                test = lambda flags: bool(flags & mask & v)  # noqa: E731
            elif op == "==":
                test = lambda flags: flags & mask == v  # noqa: E731
            elif op == "!=":
                test = lambda flags: flags & mask != v  # noqa: E731
            else:
                raise _Unknown(f"tcp flags {op} {_fmt(right)}")
        self.add(STATE, tcp_flag_states(test))

    # -- concatenations -------------------------------------------------------------------------

    def concat_match(self, op: str, parts: List[Any], right: Any) -> None:
        try:
            sels = [_left_sel(p) for p in parts]
        except _Unknown as exc:
            self.unknown.append(f"{exc} (in a concatenation)")
            return
        for s in sels:
            self.gate(s.gate)
            for dim, value in s.implied:
                self.add(dim, value)
        if self.never:
            return
        if op == "!=":
            self.unknown.append(f"{' . '.join(s.text for s in sels)} != ... (negated concatenation)")
            return
        if op not in ("==", "in"):
            self.unknown.append(f"{' . '.join(s.text for s in sels)} {op} ...")
            return
        try:
            if isinstance(right, str) and right.startswith("@"):
                s = self.view.named_set(self.t, right)
                if _dynamic(s):
                    self.unknown.append(f"set {right} changes at run time")
                    return
                key = (self.t.label, right, tuple((x.kind, x.dim) for x in sels))
                cache = self.view._set_cache
                if key not in cache:
                    elems = s.get("elem") or []
                    if s.get("_kind") == "map":
                        elems = [pair[0] for pair in elems]
                    cache[key] = self.concat_alternatives(sels, elems)
                alts = cache[key]
            elif isinstance(right, dict) and "set" in right:
                alts = self.concat_alternatives(sels, right["set"])
            else:
                alts = self.concat_alternatives(sels, [right])
        except _Unknown as exc:
            self.unknown.append(str(exc))
            return
        if not alts:
            self.never = True
            return
        self.disj.append(alts)

    def concat_key(self, sels: List[_Sel], el: Any) -> Optional[Dict[int, Any]]:
        el = _unwrap(el)
        if not (isinstance(el, dict) and "concat" in el) or len(el["concat"]) != len(sels):
            raise _Unknown(f"element {_fmt(el)} of a concatenation")
        out: Dict[int, Any] = {}
        for s, v in zip(sels, el["concat"]):
            if s.kind in ("nfproto", "ethertype"):
                if self.family not in self.family_values(v):
                    return None
                continue
            if s.kind.startswith("tcpflags"):
                raise _Unknown("tcp flags in a concatenation")
            value = self.one(s, v)
            if s.dim in out:
                old = out[s.dim]
                value = (old & value) if s.dim in MASK_DIMS else iv_and(old, value)
            if not value:
                return None
            out[s.dim] = value
        return out

    def concat_alternatives(self, sels: List[_Sel], elems: Sequence[Any]) -> List[Dict[int, Any]]:
        """One constraint per element, elements equal but in the last field merged."""
        groups: Dict[tuple, Tuple[Dict[int, Any], int, Any]] = {}
        for el in elems:
            c = self.concat_key(sels, el)
            if c is None:
                continue
            items = list(c.items())
            if not items:
                groups[()] = ({}, -1, None)
                continue
            last_dim, last_val = items[-1]
            key = tuple(items[:-1]) + (last_dim,)
            g = groups.get(key)
            if g is None:
                groups[key] = (c, last_dim, [last_val])
            else:
                g[2].append(last_val)
        out = []
        for c, last_dim, vals in groups.values():
            if last_dim < 0:
                return [{}]
            c = dict(c)
            if last_dim in MASK_DIMS:
                m = 0
                for v in vals:
                    m |= v
                c[last_dim] = m
            else:
                c[last_dim] = iv_normalize(p for v in vals for p in v) if len(vals) > 1 else vals[0]
            out.append(c)
        return out

    # -- statements ---------------------------------------------------------------------------

    def reject(self, body: Any) -> str:
        rtype = (body or {}).get("type") if isinstance(body, dict) else None
        if self.t.family in ("inet", "bridge", "netdev"):
            # nft adds a hidden "meta nfproto ipv4/ipv6" dependency for family-specific codes
            if rtype == "icmp":
                self.gate("ipv4")
            elif rtype == "icmpv6":
                self.gate("ipv6")
        if rtype == "tcp reset":
            self.add(PROTO, ((6, 6),))
        return REJECT

    def nat_target(self, body: Dict[str, Any], key: str) -> tuple:
        port = body.get("port")
        ports = None
        if port is not None:
            ports = self.port_value(port)
        if key == "redirect":
            return (None, ports)
        addr = body.get("addr")
        dst = None
        if addr is not None:
            dst = self.addr_one(addr)
            dst = iv_normalize(dst)
        return (dst, ports)

    def port_value(self, port: Any) -> tuple:
        port = _unwrap(port)
        if isinstance(port, dict) and "range" in port:
            a, b = port["range"]
            return ((self.port_number(a), self.port_number(b)),)
        v = self.port_number(port)
        return ((v, v),)

    def port_number(self, el: Any) -> int:
        """A port number or service name. nft refuses values outside 0-65535 for a 16-bit port
        field, so one here is a damaged dump, not a rule that never matches."""
        v = self.number_of(el, _service)
        if not 0 <= v <= 65535:
            raise InputError(f"{self.where()}: port out of range: {v}: {rule_text(self.rule)[:120]}")
        return v

    def expand(self, expand: Tuple[str, Any], base_alts: Tuple, unknown: Tuple, text: str) -> List[Rule]:
        kind, body = expand
        table, cname, n = self.chain.table, self.chain.name, self.number
        if kind == "vmap":
            keyexpr, data = body.get("key"), body.get("data")
            pairs = self.map_pairs(data)
        else:
            m = body["addr"]["map"]
            keyexpr, data = m.get("key"), m.get("data")
            pairs = self.map_pairs(data)
        try:
            groups = self.map_groups(keyexpr, pairs, kind)
        except _Unknown as exc:
            # the key cannot be decided (numgen, jhash, meta mark...): the packet may get any of
            # the map's results; one "may match" pseudo-rule per result, in order
            why = f"{exc} (map key)"
            results = list(dict.fromkeys(_verdict_of(v) if kind == "vmap" else _freeze(v) for _, v in pairs))
            # "numgen random mod 3 vmap { 0 : ..., 1 : ..., 2 : ... }" always picks one: the
            # packets no earlier result took certainly take the last one (no false fall-through)
            complete = _covers_modulus(keyexpr, [k for k, _ in pairs])
            out = []
            for i, res in enumerate(results):
                tag = () if complete and i == len(results) - 1 else (why,)
                if kind == "vmap":
                    if res[0] == "continue":
                        continue
                    out.append(Rule(table, cname, n, text, base_alts, unknown + tag, res[0], res[1]))
                else:
                    try:
                        nat_to, unk = self.nat_map_value(_thaw(res), body), unknown + tag
                    except _Unknown as exc2:
                        nat_to, unk = (None, None), unknown + tag + (str(exc2),)
                    out.append(Rule(table, cname, n, text, base_alts, unk, DNAT, "dnat", nat_to))
            return out or [Rule(table, cname, n, text, (), (), CONTINUE, "")]
        out: List[Rule] = []
        for result, alternatives in groups:
            if not alternatives:
                continue
            alts = self.merge(base_alts, alternatives)
            if not alts:
                continue
            if kind == "vmap":
                action, target = result
                if action == "continue":
                    continue
                out.append(Rule(table, cname, n, text, alts, unknown, action, target))
            else:
                try:
                    nat_to = self.nat_map_value(result, body)
                    unk = unknown
                except _Unknown as exc:
                    nat_to, unk = (None, None), unknown + (str(exc),)
                out.append(Rule(table, cname, n, text, alts, unk, DNAT, "dnat", nat_to))
        if not out:
            out.append(Rule(table, cname, n, text, (), (), CONTINUE, ""))
        return out

    def map_pairs(self, data: Any) -> List[Tuple[Any, Any]]:
        if isinstance(data, str) and data.startswith("@"):
            s = self.view.named_set(self.t, data)
            if _dynamic(s):
                raise InputError(f"{self.view.rs.source}: dynamic map {data} used as a verdict map")
            elems = s.get("elem") or []
        elif isinstance(data, dict) and "set" in data:
            elems = data["set"]
        else:
            raise _UnknownData(data)
        return [(pair[0], pair[1]) for pair in elems]

    def map_groups(self, keyexpr: Any, pairs: List[Tuple[Any, Any]], kind: str):
        """[(result, alternatives)] in order of first appearance; results are verdicts
        ((action, target)) for vmaps, the mapped value for nat maps."""
        if isinstance(keyexpr, dict) and "concat" in keyexpr:
            sels = [_left_sel(p) for p in keyexpr["concat"]]
            for s in sels:
                if s.gate is not None and s.gate != self.family:
                    return []
            implied = [(d, v) for s in sels for d, v in s.implied]
        else:
            sels = [_left_sel(keyexpr)]
            if sels[0].gate is not None and sels[0].gate != self.family:
                return []
            implied = list(sels[0].implied)
        concat = len(sels) > 1 or (isinstance(keyexpr, dict) and "concat" in keyexpr)
        sel = sels[0]
        order: List[Any] = []
        keys: Dict[Any, List[Any]] = {}
        for k, v in pairs:
            res = _verdict_of(v) if kind == "vmap" else _freeze(v)
            if res not in keys:
                keys[res] = []
                order.append(res)
            keys[res].append(k)
        out = []
        for res in order:
            elems = keys[res]
            if concat:
                alts = self.concat_alternatives(sels, elems)
            elif sel.kind in ("nfproto", "ethertype"):
                alts = [{}] if self.family in self.family_values({"set": elems}) else []
            elif sel.kind.startswith("tcpflags"):
                raise _Unknown("a map on tcp flags")
            else:
                value = self.union(sel, elems)
                alts = [{sel.dim: value}] if value else []
            if implied:
                alts = [_with(a, implied) for a in alts]
                alts = [a for a in alts if a is not None]
            out.append((res if kind == "vmap" else _thaw(res), alts))
        return out

    def merge(self, base_alts: Tuple, extra: List[Dict[int, Any]]) -> Tuple:
        out = []
        for b in base_alts:
            for e in extra:
                merged = conjoin(dict(b), e)
                if merged is not None:
                    out.append(tuple(merged.items()))
        return tuple(out)

    def nat_map_value(self, value: Any, body: Dict[str, Any]) -> tuple:
        value = _unwrap(value)
        port = body.get("port")
        ports = self.port_value(port) if port is not None else None
        if isinstance(value, dict) and "concat" in value:
            addr, p = value["concat"][0], value["concat"][1]
            return (iv_normalize(self.addr_one(addr)), self.port_value(p))
        return (iv_normalize(self.addr_one(value)), ports)


class _UnknownData(InputError):
    def __init__(self, data: Any):
        super().__init__(f"map data {_fmt(data)[:80]} not understood")


def _with(constraint: Optional[Dict[int, Any]], implied: List[Tuple[int, Any]]) -> Optional[Dict[int, Any]]:
    """``constraint`` and every implied (dimension, value) pair (a dimension may repeat)."""
    for dim, value in implied:
        if constraint is None:
            break
        constraint = conjoin(constraint, {dim: value})
    return constraint


def _freeze(v: Any) -> Any:
    return json.dumps(v, sort_keys=True)


def _thaw(v: Any) -> Any:
    return json.loads(v)


def _verdict_of(v: Any) -> Tuple[str, str]:
    v = _unwrap(v)
    if isinstance(v, dict) and len(v) == 1:
        key, body = next(iter(v.items()))
        if key == "accept":
            return (ACCEPT, "")
        if key == "drop":
            return (DROP, "")
        if key == "return":
            return (RETURN, "")
        if key == "continue":
            return ("continue", "")
        if key in ("jump", "goto"):
            return (JUMP if key == "jump" else GOTO, body["target"])
    if isinstance(v, str) and v in ("accept", "drop", "return", "continue"):
        return _verdict_of({v: None})
    raise InputError(f"verdict map value {_fmt(v)} is not a verdict")


def _covers_modulus(keyexpr: Any, keys: List[Any]) -> bool:
    """Whether a map on ``numgen``/``jhash``/``symhash ... mod N [offset K]`` has an element for
    every value the key can take."""
    if not isinstance(keyexpr, dict) or len(keyexpr) != 1:
        return False
    kind, body = next(iter(keyexpr.items()))
    if kind not in ("numgen", "jhash", "symhash") or not isinstance(body, dict):
        return False
    mod, offset = body.get("mod"), body.get("offset", 0) or 0
    if not isinstance(mod, int) or not isinstance(offset, int) or mod <= 0 or mod > 1 << 16:
        return False
    values = set()
    for k in keys:
        k = _unwrap(k)
        if isinstance(k, int) and not isinstance(k, bool):
            values.add(k)
        elif isinstance(k, dict) and "range" in k and all(isinstance(x, int) for x in k["range"]):
            values.update(range(k["range"][0], k["range"][1] + 1))
    return values >= set(range(offset, offset + mod))


def _is_nfproto_match(e: Any) -> bool:
    if not isinstance(e, dict) or not isinstance(e.get("match"), dict):
        return False
    left = e["match"].get("left")
    return isinstance(left, dict) and isinstance(left.get("meta"), dict) and left["meta"].get("key") == "nfproto"


_L4_OF_FAMILY = {"ipv4": ("ipv6-icmp", 58, "icmpv6"), "ipv6": ("icmp", 1)}


def _l4proto_of_other_family(m: Any, family: str) -> bool:
    """``meta l4proto icmp`` (seen from IPv6) / ``ipv6-icmp`` (from IPv4): nft hides a preceding
    ``meta nfproto`` of the protocol's own family."""
    if not isinstance(m, dict):
        return False
    left = m.get("left")
    if not (isinstance(left, dict) and isinstance(left.get("meta"), dict) and left["meta"].get("key") == "l4proto"):
        return False
    right = m.get("right")
    values = right["set"] if isinstance(right, dict) and "set" in right else [right]
    return any(_unwrap(v) in _L4_OF_FAMILY[family] for v in values if isinstance(_unwrap(v), (str, int)))


def _dynamic(s: Dict[str, Any]) -> bool:
    flags = s.get("flags") or []
    flags = flags if isinstance(flags, list) else [flags]
    return "dynamic" in flags or "timeout" in flags


def _flags_value(v: Any) -> int:
    v = _unwrap(v)
    if isinstance(v, bool):
        raise _Unknown(f"tcp flags {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        if v in TCP_FLAGS:
            return TCP_FLAGS[v]
        raise _Unknown(f"tcp flag {v!r}")
    if isinstance(v, list):
        out = 0
        for x in v:
            out |= _flags_value(x)
        return out
    if isinstance(v, dict) and "|" in v:
        return _flags_value(v["|"])
    raise _Unknown(f"tcp flags {_fmt(v)}")


def _service(name: str) -> Optional[int]:
    try:
        return socket.getservbyname(name)
    except OSError:
        return None


def _protocol(name: str) -> Optional[int]:
    if name in IP_PROTOCOLS:
        return IP_PROTOCOLS[name]
    try:
        return socket.getprotobyname(name)
    except OSError:
        return None


def _user(name: str) -> Optional[int]:
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _group(name: str) -> Optional[int]:
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


# ---------------------------------------------------------------------------------------------
# readable rule text (for explanations)

_SET_SHOW = 6


def rule_text(r: Dict[str, Any]) -> str:
    """A compact nft-like text of a rule: ``tcp dport 22 ct state new accept # handle 7``."""
    parts = []
    for e in r.get("expr") or ():
        parts.append(_expr_text(e))
    text = " ".join(p for p in parts if p)
    if r.get("comment"):
        text += f' comment "{r["comment"]}"'
    if r.get("handle") is not None:
        text += f" # handle {r['handle']}"
    return text


def _expr_text(e: Any) -> str:
    if not isinstance(e, dict) or len(e) != 1:
        return _fmt(e)
    key, body = next(iter(e.items()))
    if key == "match":
        left = _fmt(body.get("left"))
        op = body.get("op", "==")
        quote = _is_iface_left(body.get("left"))
        right = _fmt(body.get("right"), quote)
        bitwise = isinstance(body.get("left"), dict) and any(k in body["left"] for k in ("&", "|", "^"))
        if op == "in" or (op == "==" and not bitwise):
            return f"{left} {right}"
        return f"{left} {op} {right}"
    return _stmt_text(key, body)


def _stmt_text(key: str, body: Any) -> str:
    b = body if isinstance(body, dict) else {}
    if key in ("accept", "drop", "return", "continue", "notrack", "masquerade") and not b:
        return key
    if key in ("jump", "goto"):
        return f"{key} {b.get('target')}"
    if key == "counter":
        return "counter"
    if key == "log":
        return f'log prefix "{b["prefix"]}"' if b.get("prefix") else "log"
    if key == "limit":
        over = "over " if b.get("inv") else ""
        return f"limit rate {over}{b.get('rate')}/{b.get('per', 'second')}"
    if key == "reject":
        if not b:
            return "reject"
        rtype = b.get("type")
        if rtype == "tcp reset":
            return "reject with tcp reset"
        return f"reject with {rtype} {b.get('expr', '')}".rstrip()
    if key in ("dnat", "snat"):
        fam = f" {b['family']}" if b.get("family") else ""
        addr = b.get("addr")
        if isinstance(addr, dict) and "map" in addr:
            m = addr["map"]
            return f"{key}{fam} to {_fmt(m.get('key'))} map {_fmt(m.get('data'))}"
        a = _fmt(addr) if addr is not None else ""
        if b.get("port") is not None:
            a = (f"[{a}]" if ":" in a else a) + f":{_fmt(b['port'])}"
        return f"{key}{fam} to {a}"
    if key == "redirect":
        return f"redirect to :{_fmt(b['port'])}" if b.get("port") is not None else "redirect"
    if key == "masquerade":
        return "masquerade"
    if key == "queue":
        return f"queue num {_fmt(b.get('num', 0))}"
    if key == "mangle":
        return f"{_fmt(b.get('key'))} set {_fmt(b.get('value'))}"
    if key == "vmap":
        return f"{_fmt(b.get('key'))} vmap {_fmt(b.get('data'))}"
    if key == "xt":
        return f"xt {b.get('type', '')} {b.get('name', '')}".rstrip()
    if key in ("set", "map"):
        return f"{b.get('op', 'add')} {b.get('set', '')} {{ {_fmt(b.get('elem'))} }}"
    return key


def _fmt(v: Any, quote: bool = False) -> str:
    if isinstance(v, bool):
        return "exists" if v else "missing"
    if isinstance(v, str):
        return f'"{v}"' if quote and not v.startswith("@") else v
    if isinstance(v, (int, float)) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, list):
        return ",".join(_fmt(x, quote) for x in v)
    if isinstance(v, dict):
        if len(v) != 1:
            return "{...}"
        key, body = next(iter(v.items()))
        if key == "payload":
            if body.get("protocol"):
                return f"{body['protocol']} {body.get('field')}"
            return f"@{body.get('base')},{body.get('offset')},{body.get('len')}"
        if key == "meta":
            k = body.get("key")
            return k if k in _IFACE_KEYS else f"meta {k}"
        if key == "ct":
            d = f" {body['dir']}" if body.get("dir") else ""
            return f"ct{d} {body.get('key')}"
        if key == "fib":
            flags = body.get("flags") or []
            flags = flags if isinstance(flags, list) else [flags]
            return f"fib {' . '.join(flags)} {body.get('result')}"
        if key == "concat":
            return " . ".join(_fmt(x, quote) for x in body)
        if key == "prefix":
            return f"{body.get('addr')}/{body.get('len')}"
        if key == "range":
            return f"{_fmt(body[0], quote)}-{_fmt(body[1], quote)}"
        if key == "set":
            elems = body if isinstance(body, list) else [body]
            shown = [_fmt_elem(x, quote) for x in elems[:_SET_SHOW]]
            more = f", ... ({len(elems) - _SET_SHOW} more)" if len(elems) > _SET_SHOW else ""
            return "{ " + ", ".join(shown) + more + " }"
        if key == "elem":
            return _fmt(body.get("val"), quote)
        if key in ("&", "|", "^", "<<", ">>"):
            parts = [f"({' | '.join(_fmt(y) for y in x)})" if isinstance(x, list) else _fmt(x, quote) for x in body]
            return f" {key} ".join(parts)
        if key in ("accept", "drop", "return", "continue", "jump", "goto"):
            return _stmt_text(key, body)
        if key == "map":
            return f"{_fmt(body.get('key'))} map {_fmt(body.get('data'))}"
        return key
    return str(v)


def _fmt_elem(x: Any, quote: bool) -> str:
    if isinstance(x, list) and len(x) == 2:  # map element: key : value
        return f"{_fmt(x[0], quote)} : {_fmt(x[1])}"
    return _fmt(x, quote)
