"""Left-hand sides of nft matches: which packet field (dimension, offset, width) a match looks at.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

from twinwall.netfilter.packetset import (
    DPORT,
    DST,
    GID,
    HOPLIMIT,
    ICMP,
    IIF,
    OIF,
    PROTO,
    SPORT,
    SRC,
    STATE,
    UID,
)
from twinwall.parsers.nft_json.expressions import _IFACE_KEYS, by_left_form
from twinwall.parsers.nft_json.text import _fmt
from twinwall.parsers.nft_json.vocabulary import _Unknown
from twinwall.parsers.protocols import PORT_PROTOCOLS


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


# per form of a left side (expressions._left_key): its selector, or why it cannot be decided
_SELECTORS: Dict[tuple, Union[_Sel, str]] = {}


def _left_sel(left: Any) -> _Sel:
    """The packet field a match's left side looks at (raises _Unknown when undecidable);
    selectors are immutable, so one per form serves every rule that uses it."""
    found = by_left_form(_SELECTORS, left, _selector_or_why)
    if isinstance(found, str):
        raise _Unknown(found)
    return found


def _selector_or_why(left: Any) -> Union[_Sel, str]:
    try:
        return _decode_left(left)
    except _Unknown as exc:
        return str(exc)


def _decode_left(left: Any) -> _Sel:
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
