"""What the evaluator needs to know about a host, per family: the parsed rulesets, the interface
universe, the host's own addresses and which interfaces remote packets can arrive on."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import (
    iv_normalize,
    iv_or,
    iv_sub,
    loopback_addresses,
    prefix_interval,
)
from twinwall.model import FAMILIES, WILDCARD_ADDRESSES, HostSnapshot, InterfaceAddress, is_loopback_address
from twinwall.netfilter.ruleset import NAMED_DESTINATIONS, LocalRoutes, NamedDestination, Ruleset

if TYPE_CHECKING:
    from twinwall.analysis.evaluator import Evaluator


@dataclass
class FamilyContext:
    family: str
    rulesets: List[Ruleset]
    universe: InterfaceUniverse
    # every address of the host in this family, loopback included (routing: "is it for us?")
    local: tuple
    # the addresses a remote client can target (host addresses minus loopback); offline, see
    # offline_host_addresses
    remote_targets: tuple
    addresses_known: bool
    # interface classes remote packets can arrive on
    remote_ifaces: int
    rules_known: bool  # False: no ruleset at all was collected for this family
    # offline, host addresses unknown: the addresses taken as the host's because the input
    # base chains name them as a destination (see assumed_from_rules); and whether the rules
    # name more than were taken
    assumed: Sequence[NamedDestination] = ()
    assumed_more: bool = False

    def evaluator(self, trace=None, compact: bool = False) -> Evaluator:
        """``compact``: see Evaluator (runs of drops end as one outcome each)."""
        # (imported here: the diff builds contexts for its role walker and never evaluates packets)
        from twinwall.analysis.evaluator import Evaluator

        return Evaluator(self.rulesets, self.family, self.universe, self.local, trace=trace, compact=compact)


def build_contexts(
    snapshot: HostSnapshot, rulesets: Dict[str, List[Ruleset]], extra_specs: Iterable[str] = (),
    assume_named: bool = False,
) -> Dict[str, FamilyContext]:
    """``extra_specs``: interface names or patterns the universe must tell apart beyond those of
    the host and its rules (an interface asked about; another snapshot's names, so that the
    masks of both mean the same). ``assume_named``: offline, without the host's addresses,
    take those the input rules name as the host's (assumed_from_rules: the audit's and
    explain's questions about the host's services; the diff's roles read every global address
    as possibly the host's instead)."""
    specs = set(snapshot.interfaces) | set(extra_specs)
    # a socket bound to a device (SO_BINDTODEVICE, "%eth0" in ss) is asked about that device
    specs.update(s.interface for s in snapshot.sockets if s.interface)
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
            targets = offline_host_addresses(snapshot, family)
            local = iv_or(targets, loopback_addresses(family))
        assumed: List[NamedDestination] = []
        more = False
        if assume_named and (not snapshot.addresses_known or _stand_in_only(own, family)):
            assumed, more = assumed_from_rules(rulesets.get(family, []))
            named = iv_normalize(prefix_interval(d.address, family) for d in assumed)
            targets, local = iv_or(targets, named), iv_or(local, named)
        ifaces = remote_ifaces
        if family == "ipv6" and snapshot.ipv6.disabled_interfaces:
            # the kernel drops IPv6 arriving on an interface with disable_ipv6=1
            ifaces &= ~universe.of_names(snapshot.ipv6.disabled_interfaces)
        routes = local_routes(own, family) if snapshot.addresses_known else None
        for rs in rulesets.get(family, []):
            rs.local_routes = routes
        contexts[family] = FamilyContext(
            family=family,
            rulesets=rulesets.get(family, []),
            universe=universe,
            local=local,
            remote_targets=targets,
            addresses_known=snapshot.addresses_known,
            remote_ifaces=ifaces,
            rules_known=bool(rulesets.get(family)),
            assumed=assumed,
            assumed_more=more,
        )
    return contexts


def _stand_in_only(own: Sequence[InterfaceAddress], family: str) -> bool:
    """Whether a family's addresses are the offline assumption (commands.inputs gives it to a
    family no --address names): the stand-in among them."""
    return any(a.interface == "?" and a.address == OFFLINE_STAND_IN[family] for a in own)


# How many addresses named by the input chains are taken as the host's: a hand-written host
# firewall names the host's few addresses; past this, what the rules name is more likely a
# service's (kube-proxy's load-balancer IPs) and each address taken costs the walk a region.
ASSUMED_ADDRESSES = NAMED_DESTINATIONS - 1


def assumed_from_rules(rulesets: Sequence[Ruleset]) -> Tuple[List[NamedDestination], bool]:
    """Offline, without the host's addresses: the single destination addresses the rules of
    the input base chains name (``-A INPUT -d 192.0.2.1/32 -p tcp --dport 22 -j ACCEPT``). The
    INPUT hook sees only packets for the host, so such an address is the host's (or the rule
    never matches): taken as the host's, a rule written for it is read as the admin meant it,
    not as a rule for some other host (whose verdict, "filtered", would be a false finding).
    Returns (at most ASSUMED_ADDRESSES of them, first named first; whether there are more)."""
    out: List[NamedDestination] = []
    seen = set()
    for rs in rulesets:
        for d in rs.input_destinations:
            if d.address not in seen:
                seen.add(d.address)
                out.append(d)
    return out[:ASSUMED_ADDRESSES], len(out) > ASSUMED_ADDRESSES


def local_routes(own, family: str) -> LocalRoutes:
    """What the kernel's local table holds for a family's addresses (fib_add_ifaddr): a local
    route per address (on a loopback device, for its whole prefix) and, for an IPv4 address with
    a prefix shorter than /31, the subnet's broadcast address."""
    local: Dict[str, list] = {}
    broadcast: Dict[str, list] = {}
    primary: Dict[str, tuple] = {}
    for a in own:
        if a.scope != "host" and a.interface not in primary and a.interface != "lo":
            try:
                primary[a.interface] = (prefix_interval(a.address.split("%")[0], family),)
            except ValueError:
                pass
        addr = a.address.split("%")[0]
        try:
            net = ipaddress.ip_interface(f"{addr}/{a.prefixlen}").network
            host = prefix_interval(addr, family)
        except ValueError:
            continue
        if a.interface == "lo" and family == "ipv4":
            host = prefix_interval(str(net), family)
        local.setdefault(a.interface, []).append(host)
        if family == "ipv4" and a.prefixlen < 31:
            b = int(net.broadcast_address)
            broadcast.setdefault(a.interface, []).append((b, b))
    if family == "ipv4":
        local.setdefault("lo", []).extend(loopback_addresses(family))
    bcast = {k: iv_normalize(v) for k, v in broadcast.items()}
    return LocalRoutes(
        {k: iv_sub(iv_normalize(v), bcast.get(k, ())) for k, v in local.items()},
        bcast,
        primary,
    )


# Offline, the host's own addresses are unknown. Treating "any address" as the host's would make
# every rule naming a destination (a kube-proxy cluster IP, another host) look like it is about
# this host, which is both wrong and explosive. So the host gets its socket-bound addresses plus
# one stand-in address from a reserved range that no ruleset names; `--address` names real ones.
OFFLINE_STAND_IN = {"ipv4": "240.0.0.1", "ipv6": "100::1"}


def offline_host_addresses(snapshot: HostSnapshot, family: str) -> tuple:
    out = []
    for a in [OFFLINE_STAND_IN[family]] + offline_socket_addresses(snapshot, family):
        try:
            out.append(prefix_interval(a, family))
        except ValueError:
            continue
    return iv_normalize(out)


def offline_socket_addresses(snapshot: HostSnapshot, family: str) -> List[str]:
    """The addresses of ``family`` the snapshot's sockets are bound to, taken to be the host's
    (not wildcards or loopback; link-local ones are: a neighbour reaches them)."""
    found = []
    for sock in snapshot.sockets:
        addr = _bound_address(sock.address, family)
        if addr is None or (":" in addr) != (family == "ipv6") or is_loopback_address(addr):
            continue
        found.append(addr)
    return found


def _bound_address(address: str, family: str) -> Optional[str]:
    """The address a socket is bound to, as ``family`` sees it: None for the wildcard, no zone,
    and for IPv4 an IPv4-mapped bind's IPv4 address (it takes that address's connections)."""
    addr = address.split("%")[0]
    if addr in WILDCARD_ADDRESSES:
        return None
    if family == "ipv4" and addr.startswith("::ffff:"):
        return addr[7:]
    return addr


def socket_destinations(ctx: FamilyContext, address: str) -> Optional[tuple]:
    """Destination addresses a remote client can use to reach a socket bound to ``address``."""
    addr = _bound_address(address, ctx.family)
    if addr is None:
        return ctx.remote_targets
    try:
        return (prefix_interval(addr, ctx.family),)
    except ValueError:
        return None
