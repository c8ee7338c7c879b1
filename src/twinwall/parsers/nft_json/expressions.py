"""Walking nft JSON expressions without compiling them: the interface names a rule mentions, set
elements with options, nft's interface wildcards.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, TypeVar

T = TypeVar("T")


def _iface_spec(name: str) -> str:
    """nft's "eth*" wildcard as the interface universe's "eth+" pattern."""
    if name.endswith("*") and not name.endswith("\\*"):
        return name[:-1] + "+"
    return name.replace("\\*", "*")


def _mentions_iface(e: Dict[str, Any]) -> bool:
    # cheap pre-filter before the recursive walk
    m = e.get("match")
    if m is not None:
        left = m.get("left")
        return isinstance(left, dict) and ("meta" in left or "concat" in left)
    return "vmap" in e


_IFACE_KEYS = {"iifname", "oifname", "iif", "oif"}


def _is_iface_left(left: Any) -> bool:
    meta = left.get("meta") if isinstance(left, dict) else None
    key = meta.get("key") if isinstance(meta, dict) else None
    return type(key) is str and key in _IFACE_KEYS


def iface_strings_of(e: Dict[str, Any], out: set) -> None:
    """The interface names an expression mentions (_iface_strings, where _mentions_iface), added
    to ``out``; none of a damaged one, which its chain's compile refuses with the rule named."""
    try:
        if _mentions_iface(e):
            _iface_strings(e, out)
    except (AttributeError, TypeError, KeyError, IndexError):
        pass


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


def _left_key(left: Any) -> Optional[tuple]:
    """A hashable stand-in for a match's left-hand side of one flat object (``{"payload":
    {"protocol": "ip", "field": "saddr"}}``, ``{"meta": {"key": "iifname"}}``): what depends on
    the left side alone (its selector, its text) is worked out once per form, not once per rule.
    The values' types are part of it (``1 == True``). None for other forms; a key may still be
    unhashable (a list inside), which by_left_form's lookup answers with TypeError."""
    if type(left) is dict and len(left) == 1:
        for key, body in left.items():
            if type(body) is dict:
                return (key, tuple(body.items()), tuple(map(type, body.values())))
    return None


def by_left_form(memo: Dict[tuple, T], left: Any, compute: Callable[[Any], T]) -> T:
    """``compute(left)``, remembered in ``memo`` per form of the left side (``_left_key``), for
    what depends on the left side alone: one per form, not one per rule."""
    key = _left_key(left)
    if key is not None:
        try:
            return memo[key]
        except KeyError:
            pass
        except TypeError:  # a list inside: not a key
            key = None
    value = compute(left)
    if key is not None:
        memo[key] = value
    return value
