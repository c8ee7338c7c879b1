"""``nft -j list ruleset`` (libnftables JSON) -> one ``Ruleset`` per family.

Tables of family ``ip`` go into the IPv4 ruleset, ``ip6`` into the IPv6 one and ``inet`` into
both: an inet table's rules are compiled once per family, and a match that only exists in the
other family (``ip saddr``, ``meta nfproto ipv6``, ``icmpv6 type``...) makes the rule match
nothing there. Table names in the model carry their family ("inet filter", "ip nat"), so
explanations say which table decided.

The document is split into tables, chains and sets in one cheap pass; a chain's rules are
compiled into packet-set constraints only when the evaluator first walks that chain (see
``ruleset.Chain``), and a named set's elements are converted only when a compiled rule refers to
it. ``json.loads`` (C) is the only whole-document cost. What depends on a match's left side
alone (its selector, its text) is worked out once per form, and a rule is spelled only if
something asks for its text (``Rule.spelling``: a walk cites few rules). Two forms are read off
nft's text by one pattern, neither decoded nor compiled (``view._rules_read_off_text``): an inet
rule whose first match is on the other family's header (it matches nothing in this view), and a
rule that is nothing but ``ip saddr ADDRESS drop`` (a blocklist's).

The parts, in the order a dump goes through them: ``tables`` (pass 1: the document split into
tables, chains and sets), ``view`` (pass 2: one family's view of the tables, base chains in
priority order), ``rules`` (one rule compiled), ``selectors`` (what a match's left-hand side looks
at), ``expressions`` (walking JSON expressions without compiling them), ``text`` (readable rule
text), ``vocabulary`` (the names nft prints). This module is the entry point.

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
from typing import Dict, List, Optional, Tuple

from twinwall.netfilter.ruleset import Ruleset
from twinwall.parsers.nft_json.tables import split_tables, xt_tables
from twinwall.parsers.nft_json.text import rule_text
from twinwall.parsers.nft_json.view import _View
from twinwall.parsers.nft_json.vocabulary import NAMED_PRIORITIES, VIEW_FAMILIES

__all__ = ["parse_nft_json", "xt_tables", "rule_families", "netlink_nfproto", "rule_text", "NAMED_PRIORITIES"]


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
    tables = split_tables(text, source)
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
