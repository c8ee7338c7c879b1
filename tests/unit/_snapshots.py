"""Host snapshots built from dump texts, for the unit tests (each test file keeps its own
defaults in a thin wrapper)."""

from __future__ import annotations

from typing import Optional, Sequence

from twinwall.model import HostSnapshot, InterfaceAddress, Ipv6State, RulesetText
from twinwall.sources.sockets import parse_ss


def dump_snapshot(
    v4: Optional[str],
    v6: Optional[str],
    ss: Optional[str] = None,
    *,
    addresses: Optional[Sequence[InterfaceAddress]] = None,
    interfaces: Optional[Sequence[str]] = None,
    ipv6: Optional[bool] = True,
    backend: str = "nft",
) -> HostSnapshot:
    """A snapshot of iptables-save / ip6tables-save texts (None: that family was not read).

    ``ss``: saved ss output (None: the sockets are not known). ``addresses``: the host's
    addresses, known when given; ``interfaces`` default to theirs."""
    snap = HostSnapshot(hostname="t", sockets=parse_ss(ss) if ss is not None else [],
                        sockets_known=ss is not None)
    if addresses is not None:
        snap.addresses = list(addresses)
        snap.addresses_known = True
        snap.interfaces = list(interfaces) if interfaces is not None else sorted({a.interface for a in addresses})
    if v4 is not None:
        snap.rulesets.append(RulesetText("ipv4", "iptables-save", backend, "v4", v4))
    if v6 is not None:
        snap.rulesets.append(RulesetText("ipv6", "iptables-save", backend, "v6", v6))
    if ipv6 is not None:
        snap.ipv6 = Ipv6State(ipv6, ["test"])
    return snap
