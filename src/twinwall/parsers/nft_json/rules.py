"""One nft rule compiled into packet-set constraints, a verdict, NAT, and the matches twinwall
cannot decide (named in ``Rule.unknown``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, cast

# (the socket module's C functions, without the enum classes importing socket builds)
from _socket import getprotobyname, getservbyname, inet_pton

from twinwall.errors import InputError
from twinwall.netfilter.packetset import (
    CT_NAMES,
    IIF,
    MASK_DIMS,
    OIF,
    PROTO,
    STATE,
    UID,
    conjoin,
    domain,
    iv_and,
    iv_normalize,
    iv_sub,
    multicast_addresses,
    plain_prefix,
    prefix_interval,
    ct_state_match,
    tcp_flag_states,
)
from twinwall.netfilter.packetset import complement as value_complement
from twinwall.netfilter.ruleset import (
    Chain,
    Rule,
)
from twinwall.parsers.nft_json.expressions import _iface_spec, _unwrap
from twinwall.parsers.nft_json.selectors import _ct_status_dnat, _left_sel, _rpfilter, _Sel
from twinwall.parsers.nft_json.tables import _TableData
from twinwall.parsers.nft_json.text import _fmt, _stmt_text, rule_text
from twinwall.parsers.nft_json.vocabulary import (
    _CONTINUE_STATEMENTS,
    _MATCH_LIKE_STATEMENTS,
    ICMP4_CODES,
    ICMP4_TYPES,
    ICMP6_CODES,
    ICMP6_TYPES,
    TCP_FLAGS,
    _Unknown,
)
from twinwall.parsers.protocols import IP_PROTOCOLS
from twinwall.vocabulary import Action

if TYPE_CHECKING:  # annotations only: the view compiles rules with this module
    from twinwall.parsers.nft_json.view import _View


_SIMPLE_VERDICTS = {"accept": Action.ACCEPT, "drop": Action.DROP, "return": Action.RETURN}


class _RuleCompiler:
    def __init__(self, view: _View, t: _TableData, chain: Chain, number: int, rule: Dict[str, Any], entry: Any = None):
        self.view = view
        self.t = t
        self.chain = chain
        self.entry = entry  # the rule as the table keeps it (tables._TableData.rules), for _Spelled
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
        action = Action.CONTINUE
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
            if action != Action.CONTINUE or expand is not None:
                break  # after a verdict nothing runs
            if key in _SIMPLE_VERDICTS:
                action = _SIMPLE_VERDICTS[key]
            elif key == "continue":
                continue
            elif key in ("jump", "goto"):
                action = Action.JUMP if key == "jump" else Action.GOTO
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
                    action = Action.DNAT
                    continue
                action = Action.DNAT if key == "dnat" else Action.REDIRECT
                try:
                    nat_to = self.nat_target(body or {}, key)
                except _Unknown as exc:
                    nat_to = (None, None)
                    self.unknown.append(str(exc))
            elif key in ("snat", "masquerade"):
                fam = (body or {}).get("family")
                if fam and self.t.family == "inet" and fam != self.view.nfamily:
                    continue
                action = Action.NAT_DONE
            elif key == "queue":
                action = Action.QUEUE
            elif key == "notrack":
                action = Action.NOTRACK
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
        suffix = self.hidden_nfproto(exprs, action) if self.t.family == "inet" else ""
        if unknown_stmt:
            if action == Action.CONTINUE and expand is None:
                action, target = Action.UNKNOWN, unknown_stmt
            else:
                self.unknown.append(unknown_stmt)
        if self.never:
            # no packet of this family meets it (an inet rule of the other family, mostly): no
            # walk cites it (the suffix is empty for such a rule)
            return [unmatched_rule(self.t, self.chain, self.number, self.entry, r)]
        # a walk cites few of a chain's rules: each is spelled when first cited (decoded again
        # from the dump's text where the table keeps it as a span of it), not here
        text = _Spelled(self.t, r if self.entry is None else self.entry, suffix)
        if expand is not None and self.ct_dnat is not None:
            self.unknown.append("ct status")
        unknown = tuple(dict.fromkeys(self.unknown)) if self.unknown else ()
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
            tests = self.view.nfproto.get((self.t.family, self.t.name, self.chain.name, cast(int, self.rule.get("handle"))))
        if tests is not None:
            for op, fam in tests:
                if (fam == self.family) == (op == "neq"):
                    self.never = True
            if tests and not self.never and not any(_is_nfproto_match(e) for e in exprs):
                # the citation says why the rule holds for this family only (nft -j hides it)
                shown = " ".join(f"meta nfproto {'!= ' if op == 'neq' else ''}{fam}" for op, fam in tests)
                return f" ({shown}: nft --debug=netlink)"
            return ""
        if self.never:
            return ""
        # one pass: a rule with a meta nfproto match of its own says which family it is for
        hidden: Any = None  # the last form printed without its nfproto: a text, or the match
        for e in exprs:
            if not isinstance(e, dict):
                continue
            m = e.get("match")
            if m is not None:
                left = m.get("left") if isinstance(m, dict) else None
                if isinstance(left, dict) and "meta" in left:
                    if _is_nfproto_match(e):
                        return ""
                    if len(e) == 1 and _l4proto_of_other_family(m, self.family):
                        hidden = m
                continue
            if len(e) != 1:
                continue
            key, body = next(iter(e.items()))
            if key == "reject" and isinstance(body, dict) and body.get("type") == "tcp reset":
                hidden = "reject with tcp reset"
        if hidden is not None:
            if not isinstance(hidden, str):
                hidden = f"meta l4proto {_fmt(hidden.get('right'))}"
            self.unknown.append(
                f"meta nfproto: nft prints '{hidden}' rules without a 'meta nfproto' test they may "
                "hold (no nft --debug=netlink dump to tell; twinwall collect records one)")
        return ""

    def alternatives(self, extra: List[List[Dict[int, Any]]]) -> Tuple:
        """conj AND each disjunction (from concatenations and map keys) -> tuple of constraints."""
        if not self.disj and not extra:
            return (tuple(self.conj.items()),)
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
        if isinstance(left, dict):
            if "concat" in left:
                self.concat_match(op, left["concat"], right)
                return
            if "ct" in left and _ct_status_dnat(left, op, right):
                # decided per packet by the evaluator (Rule.ct_dnat): was it NATed on the way in?
                self.ct_dnat = op != "!="
                return
            rp = _rpfilter(left, op, right) if "fib" in left else None
            if rp is not None:
                # a reverse-path test (firewalld's IPv6_rpfilter): a remote client's address
                # routes back through the interface it came in on, as the iptables rpfilter
                # match reads it
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
        dim = cast(int, sel.dim)  # a selector that reaches here names a dimension
        if op == "!=":
            value = self.complement(dim, value)
        self.add(dim, value)

    def values(self, sel: _Sel, right: Any, op: str) -> Any:
        """The value set a right-hand side stands for, in the selector's dimension."""
        if op in ("<", ">", "<=", ">="):
            if sel.dim in MASK_DIMS or sel.kind in ("pkttype", "fibtype"):
                raise _Unknown(f"{sel.text} {op} {_fmt(right)}")
            v = self.one(sel, right)
            if len(v) != 1 or v[0][0] != v[0][1]:
                raise _Unknown(f"{sel.text} {op} {_fmt(right)}")
            x = v[0][0]
            top = self.domain_top(cast(int, sel.dim))
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
        pton = inet_pton
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
                addr, length = (p.get("addr"), p.get("len")) if type(p) is dict else (None, None)
                plain = plain_prefix(addr, length, bits) if type(addr) is str and type(length) is int else None
                if plain is None:
                    pairs.extend(self.addr_one(el))  # (it reads or words what plain_prefix does not)
                    continue
                append(plain)
            else:
                pairs.extend(self.addr_one(el))
        return iv_normalize(pairs)

    def addr_one(self, el: Any) -> tuple:
        el = _unwrap(el)
        fam = self.family
        if isinstance(el, str):
            return address_value(el, fam)
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
            return ct_state_match(mask)
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
                nset = self.view.named_set(self.t, right)
                if _dynamic(nset):
                    self.unknown.append(f"set {right} changes at run time")
                    return
                key = (self.t.label, right, tuple((x.kind, x.dim) for x in sels))
                cache = self.view._set_cache
                if key not in cache:
                    elems = nset.get("elem") or []
                    if nset.get("_kind") == "map":
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
            dim = cast(int, s.dim)
            if dim in out:
                old = out[dim]
                value = (old & value) if dim in MASK_DIMS else iv_and(old, value)
            if not value:
                return None
            out[dim] = value
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

    def reject(self, body: Any) -> Action:
        rtype = (body or {}).get("type") if isinstance(body, dict) else None
        if self.t.family in ("inet", "bridge", "netdev"):
            # nft adds a hidden "meta nfproto ipv4/ipv6" dependency for family-specific codes
            if rtype == "icmp":
                self.gate("ipv4")
            elif rtype == "icmpv6":
                self.gate("ipv6")
        if rtype == "tcp reset":
            self.add(PROTO, ((6, 6),))
        return Action.REJECT

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

    def expand(self, expand: Tuple[str, Any], base_alts: Tuple, unknown: Tuple, text: "_Spelled") -> List[Rule]:
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
            out: List[Rule] = []
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
                    out.append(Rule(table, cname, n, text, base_alts, unk, Action.DNAT, "dnat", nat_to))
            return out or [Rule(table, cname, n, text, (), (), Action.CONTINUE, "")]
        out = []
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
                out.append(Rule(table, cname, n, text, alts, unk, Action.DNAT, "dnat", nat_to))
        if not out:
            out.append(Rule(table, cname, n, text, (), (), Action.CONTINUE, ""))
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
                alts = [{cast(int, sel.dim): value}] if value else []
            if implied:
                alts = [w for w in (_with(a, implied) for a in alts) if w is not None]
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


def address_value(el: str, family: str) -> tuple:
    """An address or prefix written as a string, as the interval set it stands for."""
    try:
        return (prefix_interval(el, family),)
    except ValueError:
        raise _Unknown(f"address {el!r} (a host name?)") from None


def address_rule(t: _TableData, chain: Chain, number: int, entry: Any, handle: int, family: str,
                 dim: int, address: str, verdict: str) -> Rule:
    """The rule ``ip saddr ADDRESS drop`` (nothing but one ``==`` match of an address or prefix
    on an address field ``dim`` of the view's ``family``, then ``verdict``, accept or drop) as
    ``_RuleCompiler.compile`` makes it, without decoding it: the same constraint, no unknowns,
    no log, its text spelled only if something asks. Raises _Unknown where ``address`` is not
    one (the compiler then names it)."""
    rule = Rule(chain.table, chain.name, number, _Spelled(t, entry), (((dim, address_value(address, family)),),),
                (), _SIMPLE_VERDICTS[verdict], "", None)
    rule.handle = handle
    return rule


def unmatched_rule(t: _TableData, chain: Chain, number: int, entry: Any, rule: Any = None,
                   handle: Optional[int] = None) -> Rule:
    """A rule no packet of the view meets (an inet rule of the other family, mostly), spelled
    only if something asks (from ``entry``, the rule as the table keeps it, or else the decoded
    ``rule``)."""
    spelling = _Spelled(t, rule if entry is None else entry)
    unmatched = Rule(chain.table, chain.name, number, spelling, (), (), Action.CONTINUE, "")
    unmatched.handle = handle
    return unmatched


class _Spelled:
    """A rule's text (``Rule.spelling``), spelled when first asked: from the rule's JSON,
    decoded again from the dump's text where ``entry`` is still a span of it (so no decoded rule
    stays in memory for its text's sake), then ``suffix`` (see ``hidden_nfproto``)."""

    __slots__ = ("t", "entry", "suffix")

    def __init__(self, t: _TableData, entry: Any, suffix: str = ""):
        self.t = t
        self.entry = entry
        self.suffix = suffix

    def __call__(self) -> str:
        r = self.t.rule_dict(self.entry)
        try:
            return rule_text(r) + self.suffix
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise InputError(
                f"table {self.t.label} rule (handle {r.get('handle')}): not understood "
                f"({type(exc).__name__}: {exc}): {json.dumps(r.get('expr'))[:200]}"
            ) from None


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
            return (Action.ACCEPT, "")
        if key == "drop":
            return (Action.DROP, "")
        if key == "return":
            return (Action.RETURN, "")
        if key == "continue":
            return ("continue", "")
        if key in ("jump", "goto"):
            return (Action.JUMP if key == "jump" else Action.GOTO, body["target"])
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
        return getservbyname(name)
    except OSError:
        return None


def _protocol(name: str) -> Optional[int]:
    if name in IP_PROTOCOLS:
        return IP_PROTOCOLS[name]
    try:
        return getprotobyname(name)
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
