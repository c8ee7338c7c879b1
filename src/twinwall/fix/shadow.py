"""Dead rules: a rule a plan would write where an earlier rule of the chain already decides every
packet it matches (seed 000 as a new user ran it: baseline's ``--dport 8080 NEW ACCEPT`` after
mirror's DROP of the same traffic). The owner leaves such a rule out and says so.

Only simple iptables-save lines are read (addresses, interfaces, protocol, ports, conntrack
state, ICMP type, hop limit, a LOG's rate limit); a rule with any other match is never called
dead, and never taken as deciding for another: the check can only miss a dead rule, never drop a
live one.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, replace
from typing import FrozenSet, List, Optional, Sequence

TERMINAL = ("ACCEPT", "DROP", "REJECT")
_ANY = {4: "0.0.0.0/0", 6: "::/0"}
_ICMP = {"icmp": "icmp", "1": "icmp", "ipv6-icmp": "icmpv6", "icmpv6": "icmpv6", "58": "icmpv6"}
# matches that only name the protocol's own module (-m tcp) or leave who matches unchanged
_MODULES = ("tcp", "udp", "icmp", "icmp6", "conntrack", "state", "limit", "hl")
_VALUED = {"-s": "source", "--source": "source", "-d": "destination", "--destination": "destination",
           "-i": "iif", "--in-interface": "iif", "-o": "oif", "--out-interface": "oif", "-p": "protocol",
           "--protocol": "protocol", "--dport": "dport", "--destination-port": "dport", "--sport": "sport",
           "--source-port": "sport", "--icmp-type": "icmp", "--icmpv6-type": "icmp", "--hl-eq": "hop_limit"}


@dataclass(frozen=True)
class Match:
    """What one rule line matches, and its target."""

    target: str
    protocol: Optional[str] = None
    dport: Optional[str] = None
    sport: Optional[str] = None
    source: Optional[str] = None
    destination: Optional[str] = None
    iif: Optional[str] = None
    oif: Optional[str] = None
    not_iif: Optional[str] = None
    not_oif: Optional[str] = None
    states: Optional[FrozenSet[str]] = None
    icmp: Optional[str] = None
    hop_limit: Optional[str] = None
    limited: bool = False  # -m limit: it matches only some of its packets


def parse(line: str) -> Optional[Match]:
    """``-A CHAIN ...`` as a Match; None for anything this module does not read."""
    try:
        toks = shlex.split(line)
    except ValueError:
        return None
    if len(toks) < 4 or toks[0] != "-A":
        return None
    fields: dict = {}
    i = 2
    while i < len(toks):
        tok = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if tok == "-j" and nxt is not None:
            return Match(target=nxt, **fields)
        if nxt is None:
            return None
        if tok == "!" and nxt in ("-i", "-o") and i + 2 < len(toks):
            fields["not_" + _VALUED[nxt]] = toks[i + 2]
            i += 3
            continue
        if tok == "-m" and nxt in _MODULES:
            fields["limited"] = fields.get("limited", False) or nxt == "limit"
        elif tok in ("--ctstate", "--state"):
            fields["states"] = frozenset(nxt.upper().split(","))
        elif tok in ("--limit", "--limit-burst"):
            pass
        elif tok in _VALUED:
            fields[_VALUED[tok]] = _ICMP.get(nxt, nxt) if tok in ("-p", "--protocol") else nxt
        else:
            return None
        i += 2
    return None


def _net(text: Optional[str], version: int):
    return ipaddress.ip_network(text or _ANY[version], strict=False)


def _contains(outer: Optional[str], inner: Optional[str]) -> bool:
    if outer is None:
        return True
    a = ipaddress.ip_network(outer, strict=False)
    b = _net(inner, a.version)
    return a.version == b.version and b.subnet_of(a)


def _excluded_is_elsewhere(excluded: str, own: Optional[str], own_not: Optional[str]) -> bool:
    """A rule that excludes interface ``excluded`` still covers a rule on ``own`` (or excluding
    the same one): the later rule never sees that interface."""
    if own_not == excluded:
        return True
    return own is not None and "+" not in own and "+" not in excluded and own != excluded


def covers(e: Match, l: Match, earlier: Sequence[Match]) -> bool:
    """Whether ``e`` (with, for the interface it excludes, the rules ``earlier``) decides every
    packet ``l`` matches."""
    if e.target not in TERMINAL or e.limited:
        return False
    if e.protocol is not None and e.protocol != l.protocol:
        return False
    for name in ("dport", "sport", "icmp", "hop_limit", "iif", "oif"):
        if getattr(e, name) is not None and getattr(e, name) != getattr(l, name):
            return False
    if not (_contains(e.source, l.source) and _contains(e.destination, l.destination)):
        return False
    if e.states is not None and (l.states is None or not l.states <= e.states):
        return False
    for side in ("iif", "oif"):
        excluded = getattr(e, "not_" + side)
        if excluded is None or _excluded_is_elsewhere(excluded, getattr(l, side), getattr(l, "not_" + side)):
            continue
        # what ``e`` leaves to others: ``l``'s packets on the excluded interface
        rest = replace(l, **{side: excluded, "not_" + side: None})
        if not shadowed(rest, earlier):
            return False
    return True


def shadowed(l: Match, earlier: Sequence[Match]) -> Optional[Match]:
    """The earlier rule that decides every packet of ``l`` (None: ``l`` is live)."""
    for n, e in enumerate(earlier):
        if covers(e, l, earlier[:n]):
            return e
    return None


def dead_rules(lines: Sequence[str], new: Sequence[bool]) -> List[Optional[int]]:
    """For each line of a chain: the index of the earlier line that shadows it, for the ones
    ``new`` marks (a plan's own); None for live rules and for every rule already there."""
    out: List[Optional[int]] = []
    kept: List[Match] = []
    kept_at: List[int] = []
    for n, (line, mine) in enumerate(zip(lines, new)):
        m = parse(line)
        by = shadowed(m, kept) if (mine and m is not None) else None
        if by is not None:
            out.append(kept_at[kept.index(by)])
            continue
        out.append(None)
        if m is not None:
            kept.append(m)
            kept_at.append(n)
    return out
