"""``ipset save`` text -> the members of each address set, for ``-m set --match-set``.

Only sets whose membership is a set of addresses are read: ``hash:ip``, ``hash:net`` and
``bitmap:ip`` (entries are addresses, CIDRs or ``a-b`` ranges; a ``nomatch`` entry of a hash:net
takes its range out again, as the kernel's more specific nomatch entry does). Any other type
(``hash:ip,port``, ``list:set``...) keeps its matches undecidable. The contents are what the set
held when it was saved: entries with a timeout may expire later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from twinwall.netfilter.packetset import iv_normalize, iv_sub, prefix_interval

ADDRESS_TYPES = ("hash:ip", "hash:net", "bitmap:ip")
_FAMILY = {"inet": "ipv4", "inet6": "ipv6"}


@dataclass
class IpSet:
    name: str
    type: str
    family: str  # "ipv4" | "ipv6"
    members: Optional[Tuple]  # interval set of addresses; None: a type twinwall does not read


def parse_ipset_save(text: str) -> Dict[str, IpSet]:
    """Every set of an ``ipset save`` dump by name. A line that cannot be read leaves its set
    unreadable (its matches stay undecidable) rather than failing the audit."""
    created: Dict[str, Tuple[str, str]] = {}
    adds: Dict[str, List[tuple]] = {}
    removes: Dict[str, List[tuple]] = {}
    bad = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        verb, name = parts[0], parts[1]
        if verb in ("create", "-N"):
            fam = "ipv4"
            if "family" in parts:
                i = parts.index("family")
                fam = _FAMILY.get(parts[i + 1] if i + 1 < len(parts) else "", "")
            created[name] = (parts[2], fam)
        elif verb in ("add", "-A") and name in created:
            if created[name][0] not in ADDRESS_TYPES:
                continue
            try:
                iv = _entry(parts[2], created[name][1])
            except ValueError:
                bad.add(name)
                continue
            (removes if "nomatch" in parts[3:] else adds).setdefault(name, []).append(iv)
    out = {}
    for name, (typ, fam) in created.items():
        members = None
        if typ in ADDRESS_TYPES and fam and name not in bad:
            members = iv_sub(iv_normalize(adds.get(name, ())), iv_normalize(removes.get(name, ())))
        out[name] = IpSet(name, typ, fam or "ipv4", members)
    return out


def _entry(spec: str, family: str) -> tuple:
    if "-" in spec and "/" not in spec:
        lo, hi = spec.split("-", 1)
        return (prefix_interval(lo, family)[0], prefix_interval(hi, family)[1])
    return prefix_interval(spec, family)
