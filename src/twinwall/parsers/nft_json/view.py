"""Pass 2: one family's view of the tables: base chains in hook and priority order, user chains
whose rules compile on their first walk, named sets converted when a rule refers to them.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

# (the socket module's constants, without the enum classes importing socket builds)
from _socket import AF_INET, AF_INET6

from twinwall.errors import InputError
from twinwall.netfilter.packetset import (
    address_space,
)
from twinwall.netfilter.ruleset import (
    DROP,
    BaseChain,
    Chain,
    NAMED_DESTINATIONS,
    NamedDestination,
    Rule,
    Ruleset,
    Table,
    host_unicast,
)
from twinwall.parsers.nft_json.expressions import _iface_spec, _strings
from twinwall.parsers.nft_json.rules import _RuleCompiler, address_rule, unmatched_rule
from twinwall.parsers.nft_json.selectors import _left_sel
from twinwall.parsers.nft_json.vocabulary import _Unknown
from twinwall.parsers.nft_json.tables import _TableData
from twinwall.parsers.nft_json.text import rule_text
from twinwall.parsers.nft_json.vocabulary import (
    CHAIN_KINDS,
    FAMILY_OF_VIEW,
    INGRESS_OFFSET,
    NAMED_PRIORITIES,
    VIEW_FAMILIES,
)


# the start of a rule as nft -j prints it whose first statement is a match on an IP header
# field: ``{"rule": {"family": F, "table": T, "chain": C, "handle": N, "expr": [{"match": {"op":
# OP, "left": {"payload": {"protocol": "ip6", "field": "saddr"}}``, and when the rule is nothing
# but that match of a plain string or a prefix and accept or drop, the rest: ``, "right":
# "2001:db8::1"}}, {"drop": null}]}}`` or ``, "right": {"prefix": {"addr": "2001:db8::", "len":
# 32}}}}, {"drop": null}]}}`` (groups: handle, op, protocol, field, string, prefix address,
# prefix length, verdict)
_GATED_FIRST_MATCH = re.compile(
    r'\{"rule": \{"family": "[^"\\]*", "table": "[^"\\]*", "chain": "[^"\\]*", "handle": (\d+), '
    r'"expr": \[\{"match": \{"op": "([^"\\]*)", "left": \{"payload": \{"protocol": "(ip6?)", "field": "([a-z]+)"\}\}'
    r'(?:, "right": (?:"([^"\\@][^"\\]*)"|\{"prefix": \{"addr": "([^"\\]*)", "len": (\d+)\}\})\}\}, '
    r'\{"(accept|drop)": null\}\]\}\})?'
)


def _field_of(protocol: str, field: str, family: str) -> Tuple[bool, Optional[int]]:
    """For a first match on the header field ``protocol`` ``field`` (``ip6 saddr``), seen from
    ``family``: whether it is a field of the other family (no packet of this view meets the
    rule), and the address dimension it is when it is one of this family's (None: another
    field, or one the compiler then names as not understood)."""
    try:
        sel = _left_sel({"payload": {"protocol": protocol, "field": field}})
    except _Unknown:
        return False, None
    own_address = sel.gate == family and sel.kind == "addr" and not sel.implied
    return sel.gate not in (None, family), sel.dim if own_address else None


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


class _View:
    def __init__(self, ruleset: Ruleset, tables: Dict[Tuple[str, str], _TableData]):
        self.rs = ruleset
        self.family = ruleset.family
        self.nfamily = FAMILY_OF_VIEW[self.family]
        self.tables = tables
        self.by_label: Dict[str, _TableData] = {}
        self.addr_full = address_space(self.family)
        self.af = AF_INET if self.family == "ipv4" else AF_INET6
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
                if hook == "input" and kind != "nat" and rules:
                    self._input_destinations(t, chain, rules)
        for cname in t.rules:
            if cname not in table.chains:
                raise InputError(f"{self.rs.source}: rules for chain {label} {cname}, which is not declared")

    def _input_destinations(self, t: _TableData, chain: Chain, entries: List[Any]) -> None:
        """Add the single addresses the rules of ``chain`` (an input base chain) test their
        destination against (``ip daddr ADDR``, or a set of such) to the ruleset's
        input_destinations: only the rules whose text holds "daddr" are decoded."""
        if not isinstance(entries[0], dict) and t.text.find('"daddr"', entries[0][0], entries[-1][1]) < 0:
            return  # (no rule of the chain's run of the dump tests a destination address)
        found = self.rs.input_destinations
        seen = {d.address for d in found}
        protocol = "ip" if self.family == "ipv4" else "ip6"
        full = 32 if self.family == "ipv4" else 128
        for n, entry in enumerate(entries, 1):
            if not isinstance(entry, dict) and t.text.find('"daddr"', entry[0], entry[1]) < 0:
                continue
            r = t.rule_dict(entry)
            exprs = r.get("expr") if isinstance(r, dict) else None
            if not isinstance(exprs, list):
                continue  # (refused when the chain is compiled, with the rule's place)
            for e in exprs:
                m = e.get("match") if isinstance(e, dict) else None
                if not isinstance(m, dict) or m.get("op") not in ("==", "in"):
                    continue
                left = m.get("left")
                p = left.get("payload") if isinstance(left, dict) else None
                if not isinstance(p, dict) or p.get("protocol") != protocol or p.get("field") != "daddr":
                    continue
                right = m.get("right")
                if isinstance(right, dict) and isinstance(right.get("set"), list):
                    values = right["set"]
                else:
                    values = [right]
                for v in values:
                    if isinstance(v, dict) and isinstance(v.get("prefix"), dict) and v["prefix"].get("len") == full:
                        v = v["prefix"].get("addr")
                    if not isinstance(v, str) or v in seen or not host_unicast(self.af, v):
                        continue
                    seen.add(v)
                    handle = r.get("handle")
                    found.append(NamedDestination(v, chain.table, chain.name, n, None,
                                                  handle if isinstance(handle, int) else None, rule_text(r)))
                    if len(seen) >= NAMED_DESTINATIONS:
                        return

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
        entries = rules
        may_log = t.may_log(entries)
        read = self._rules_read_off_text(t, chain, entries, may_log)
        if read:
            # those rules are not decoded
            dicts = iter(t.rule_dicts([e for i, e in enumerate(entries) if i not in read]))
        else:
            dicts = iter(t.rule_dicts(entries))
        for n, entry in enumerate(entries, 1):
            done = read.get(n - 1) if read else None
            if done is not None:
                out.append(done)
                continue
            r = next(dicts)
            compiler = _RuleCompiler(self, t, chain, n, r, entry)
            try:
                compiled = compiler.compile()
                # where the rule is (its handle) and whether it logs, for findings and fixes
                handle = r.get("handle")
                if not isinstance(handle, int):
                    handle = None
                logs = may_log and any(isinstance(e, dict) and "log" in e for e in r.get("expr") or ())
                for rule in compiled:
                    rule.handle = handle
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

    def _rules_read_off_text(self, t: _TableData, chain: Chain, entries: List[Any], may_log: bool) -> Dict[int, Rule]:
        """The rules of ``entries`` (still spans of nft's text) read off the text by one
        pattern, without decoding them, their position -> the rule the compiler would make:

        * a rule whose first statement matches a header of the other family (``ip6 saddr ...``
          seen from IPv4, in an inet table): no packet of this view meets it, whatever follows
          (the compiler gates it the same way). One that may log is left to the compiler,
          which records it.
        * a rule that is nothing but ``ip saddr ADDRESS drop`` (or a prefix, accept, daddr) of
          this view's family: a blocklist's form, and most rules of a large ruleset
          (rules.address_rule). Where nft's hidden ``meta nfproto`` tests are known (the
          netlink dump), the compiler reads them instead."""
        if not entries or isinstance(entries[0], dict):
            return {}
        text, found = t.text, {}
        match = _GATED_FIRST_MATCH.match
        log_at = text.find if may_log else None
        family = self.family
        own_rules = self.nfproto is None
        # (protocol, field) -> (of the other family, the address dimension of this family's)
        fields: Dict[Tuple[str, str], Tuple[bool, Optional[int]]] = {}
        for i, (a, b) in enumerate(entries):
            m = match(text, a, b)
            if m is None:
                continue
            handle, op, protocol, name, address, prefix, length, verdict = m.groups()
            field = fields.get((protocol, name))
            if field is None:
                field = fields[(protocol, name)] = _field_of(protocol, name, family)
            other, dim = field
            if other:
                if log_at is None or log_at('"log"', a, b) < 0:
                    found[i] = unmatched_rule(t, chain, i + 1, (a, b), handle=int(handle))
            elif dim is not None and own_rules and verdict and op == "==" and m.end() == b:
                try:
                    if address is None:
                        address = f"{prefix}/{length}"  # (as the compiler reads a prefix)
                    found[i] = address_rule(t, chain, i + 1, (a, b), int(handle), family, dim, address, verdict)
                except _Unknown:
                    pass  # not an address: the compiler names it (or refuses a bad prefix)
        return found

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
