"""What the evaluator needs to know about a host, per family: the parsed rulesets, the interface
universe, the host's own addresses and which interfaces remote packets can arrive on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from twinwall.analysis.evaluator import Evaluator
from twinwall.analysis.interfaces import InterfaceUniverse
from twinwall.analysis.packetset import (
    iv_normalize,
    iv_or,
    loopback_addresses,
    prefix_interval,
    unicast_destinations,
)
from twinwall.model import FAMILIES, HostSnapshot
from twinwall.ruleset import Ruleset


@dataclass
class FamilyContext:
    family: str
    rulesets: List[Ruleset]
    universe: InterfaceUniverse
    # every address of the host in this family, loopback included (routing: "is it for us?")
    local: tuple
    # the addresses a remote client can target (host addresses minus loopback), or every unicast
    # address when the host's addresses are unknown (offline audit of a dump)
    remote_targets: tuple
    addresses_known: bool
    # interface classes remote packets can arrive on
    remote_ifaces: int
    rules_known: bool  # False: no ruleset at all was collected for this family

    def evaluator(self, trace=None) -> Evaluator:
        return Evaluator(self.rulesets, self.family, self.universe, self.local, trace=trace)


def build_contexts(snapshot: HostSnapshot, rulesets: Dict[str, List[Ruleset]]) -> Dict[str, FamilyContext]:
    specs = set(snapshot.interfaces)
    for rss in rulesets.values():
        for rs in rss:
            specs.update(rs.interface_specs)
    universe = InterfaceUniverse(specs)
    if snapshot.interfaces:
        remote_ifaces = universe.of_names(i for i in snapshot.interfaces if i != "lo")
    else:
        remote_ifaces = universe.non_loopback()
    contexts = {}
    for family in FAMILIES:
        own = [a for a in snapshot.addresses if a.family == family]
        if snapshot.addresses_known:
            targets = iv_normalize(
                prefix_interval(a.address.split("%")[0], family) for a in own if a.scope != "host"
            )
            # addresses on lo other than the loopback range (e.g. a service IP on lo) are still
            # addresses of the host that remote packets may target
            local = iv_or(iv_normalize(prefix_interval(a.address.split("%")[0], family) for a in own), loopback_addresses(family))
            targets = tuple(t for t in targets)
        else:
            targets = unicast_destinations(family)
            local = iv_or(targets, loopback_addresses(family))
        contexts[family] = FamilyContext(
            family=family,
            rulesets=rulesets.get(family, []),
            universe=universe,
            local=local,
            remote_targets=targets,
            addresses_known=snapshot.addresses_known,
            remote_ifaces=remote_ifaces,
            rules_known=bool(rulesets.get(family)),
        )
    return contexts


def socket_destinations(ctx: FamilyContext, address: str) -> Optional[tuple]:
    """Destination addresses a remote client can use to reach a socket bound to ``address``."""
    if address in ("0.0.0.0", "::", "*", ""):
        return ctx.remote_targets
    addr = address.split("%")[0]
    if ctx.family == "ipv4" and addr.startswith("::ffff:"):
        addr = addr[7:]
    try:
        return (prefix_interval(addr, ctx.family),)
    except ValueError:
        return None
