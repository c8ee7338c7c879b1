"""Readable rule text of an nft JSON rule, for explanations (the form ``nft list ruleset`` prints).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Tuple

from twinwall.parsers.nft_json.expressions import _IFACE_KEYS, _is_iface_left, by_left_form

_SET_SHOW = 6
_BITWISE = ("&", "|", "^")
# per form of a match's left side (expressions._left_key): its text, whether its strings are
# quoted (interface names), whether it is a bitwise expression (its "==" is printed)
_LEFT_TEXT: Dict[tuple, Tuple[str, bool, bool]] = {}


def rule_text(r: Dict[str, Any]) -> str:
    """A compact nft-like text of a rule: ``tcp dport 22 ct state new accept # handle 7``."""
    parts = []
    exprs = r.get("expr")
    for e in exprs if isinstance(exprs, list) else ():
        try:
            parts.append(_expr_text(e))
        except (AttributeError, TypeError, KeyError, IndexError):
            parts.append(json.dumps(e)[:80])  # (a damaged expression, cited as it is written)
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
        left, quote, bitwise = _left_text(body.get("left"))
        op = body.get("op", "==")
        right = _fmt(body.get("right"), quote)
        if op == "in" or (op == "==" and not bitwise):
            return f"{left} {right}"
        return f"{left} {op} {right}"
    return _stmt_text(key, body)


def _left_text(left: Any) -> Tuple[str, bool, bool]:
    return by_left_form(_LEFT_TEXT, left, _left_info)


def _left_info(left: Any) -> Tuple[str, bool, bool]:
    return _fmt(left), _is_iface_left(left), isinstance(left, dict) and any(k in left for k in _BITWISE)


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
