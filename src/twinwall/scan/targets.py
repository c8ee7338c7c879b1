"""Scan targets: only the hosts the user named, each with its IPv4 and IPv6 addresses.

A HOST is an IPv4 or IPv6 literal or a name (resolved to every A and AAAA record), or several of
those joined with commas when they are one machine (``192.0.2.1,2001:db8::1``). Ranges, CIDR
blocks and wildcards are refused: ``twinwall scan`` never probes an address it was not given.
With ``--snapshot`` the snapshot's global addresses are added to the host it describes.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

from twinwall.errors import InputError
from twinwall.model import IPV4, IPV6

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

FAMILY_CHOICES = ("ipv4", "ipv6", "both")

_IPV4_RANGE = re.compile(r"^[0-9.*,\-]+$")


@dataclass
class TargetAddress:
    family: str  # IPV4 | IPV6
    address: str  # as given to connect(); a link-local IPv6 keeps its %zone
    source: str  # "literal" | "dns" | "snapshot"
    interface: Optional[str] = None  # from the snapshot, used to pair v4 and v6 rows
    reachable: bool = True
    error: Optional[str] = None  # why not reachable ("no route to host")

    def to_dict(self):
        return {
            "family": self.family,
            "address": self.address,
            "source": self.source,
            "interface": self.interface,
            "reachable": self.reachable,
            "error": self.error,
        }


@dataclass
class Target:
    host: str  # what the user typed (or the snapshot's hostname)
    addresses: List[TargetAddress] = field(default_factory=list)

    def of_family(self, family: str) -> List[TargetAddress]:
        return [a for a in self.addresses if a.family == family]

    def add(self, addr: TargetAddress) -> None:
        key = _normal(addr.address)
        for existing in self.addresses:
            if _normal(existing.address) == key:
                if existing.interface is None and addr.interface is not None:
                    existing.interface = addr.interface
                return
        self.addresses.append(addr)

    def to_dict(self):
        return {"host": self.host, "addresses": [a.to_dict() for a in self.addresses]}


def parse_ip(text: str) -> Tuple[Optional[IPAddress], str]:
    """(address, ``"%zone"`` or ``""``) of an address literal, brackets allowed; (None, "")
    when the text is not one. An IPv4-mapped IPv6 address is read as the IPv4 address it maps:
    connections to it are IPv4 connections."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    base, sep, zone = text.partition("%")
    try:
        ip = ipaddress.ip_address(base)
    except ValueError:
        return None, ""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, ""
    return ip, sep + zone


def _normal(address: str) -> str:
    ip, zone = parse_ip(address)
    return address if ip is None else str(ip) + zone


def _literal(host: str) -> Optional[TargetAddress]:
    ip, zone = parse_ip(host)
    if ip is None:
        return None
    return TargetAddress(IPV4 if ip.version == 4 else IPV6, str(ip) + zone, "literal")


def check_host_syntax(host: str) -> None:
    """Refuse anything that names more than the addresses written (or resolved from a name).

    One HOST may join the addresses of one machine with commas: ``192.0.2.1,2001:db8::1``.
    """
    if not host or not host.strip():
        raise InputError("empty host name")
    for part in host.split(","):
        part = part.strip()
        if not part:
            raise InputError(f"{host}: empty address in the list")
        if "/" in part:
            raise InputError(
                f"{part}: CIDR blocks are not scanned; give single addresses or host names"
            )
        if "*" in part:
            raise InputError(f"{part}: wildcards are not scanned; give single addresses")
        if _literal(part) is None and _IPV4_RANGE.match(part) and "-" in part:
            raise InputError(f"{part}: address ranges are not scanned; give single addresses")
        if any(c.isspace() for c in part):
            raise InputError(f"{part!r}: not a host name or address")


Resolver = Callable[[str], Sequence[Tuple[int, str]]]


def system_resolver(name: str) -> List[Tuple[int, str]]:
    """(socket family, address) for every A and AAAA record of a name."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {name}: {exc.strerror or exc}") from None
    except UnicodeError as exc:
        raise InputError(f"cannot resolve {name}: {exc}") from None
    out: List[Tuple[int, str]] = []
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam in (socket.AF_INET, socket.AF_INET6):
            addr = str(sockaddr[0])  # an address string for AF_INET/AF_INET6 (typeshed allows int)
            if fam == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
                if "%" not in addr:
                    addr = f"{addr}%{sockaddr[3]}"
            out.append((fam, addr))
    return out


def resolve_host(host: str, resolver: Resolver = system_resolver) -> Target:
    """One target: a literal, a name (all its A and AAAA records), or a comma-joined list of
    those that together are one machine."""
    check_host_syntax(host)
    target = Target(host=host)
    for part in (p.strip() for p in host.split(",")):
        literal = _literal(part)
        if literal is not None:
            target.add(literal)
            continue
        found = False
        for fam, addr in resolver(part):
            family = IPV4 if fam == socket.AF_INET else IPV6
            target.add(TargetAddress(family, addr, "dns"))
            found = True
        if not found:
            raise InputError(f"cannot resolve {part}: no IPv4 or IPv6 address")
    return target


def snapshot_addresses(snapshot) -> List[TargetAddress]:
    """The snapshot's global unicast addresses (no loopback, link-local or multicast)."""
    out = []
    for a in snapshot.addresses:
        if getattr(a, "scope", "global") not in ("global", "", None):
            continue
        ip, _zone = parse_ip(a.address)
        if ip is None or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            continue
        family = IPV4 if ip.version == 4 else IPV6
        out.append(TargetAddress(family, str(ip), "snapshot", interface=a.interface))
    return out


def build_targets(
    hosts: Sequence[str],
    family: str = "both",
    snapshot=None,
    resolver: Resolver = system_resolver,
) -> List[Target]:
    """Resolve the HOST arguments (plus the snapshot's addresses) into targets."""
    if family not in FAMILY_CHOICES:
        raise InputError(f"--family must be one of {', '.join(FAMILY_CHOICES)}")
    for host in hosts:
        check_host_syntax(host)
    if snapshot is not None and len(hosts) > 1:
        raise InputError("--snapshot describes one host: give at most one HOST with it")
    targets: List[Target] = []
    seen = set()
    for host in hosts:
        if host in seen:
            continue
        seen.add(host)
        targets.append(resolve_host(host, resolver))
    if snapshot is not None:
        extra = snapshot_addresses(snapshot)
        if targets:
            target = targets[0]
        else:
            target = Target(host=snapshot.hostname or "snapshot")
            targets.append(target)
        for addr in extra:
            target.add(addr)
        if not target.addresses:
            raise InputError(
                "the snapshot lists no global address for its host: give the HOST to scan"
            )
    if not targets:
        raise InputError("give at least one HOST to scan (or --snapshot FILE)")
    wanted = {"ipv4": (IPV4,), "ipv6": (IPV6,), "both": (IPV4, IPV6)}[family]
    for target in targets:
        target.addresses = [a for a in target.addresses if a.family in wanted]
        if not target.addresses:
            raise InputError(f"{target.host} has no {family} address to scan")
        target.addresses.sort(key=lambda a: (a.family != IPV4, a.interface or "", 0))
    return targets


def sockaddr_for(addr: TargetAddress, port: int) -> Tuple[int, tuple]:
    """(socket family, sockaddr) for connect()."""
    if addr.family == IPV4:
        return socket.AF_INET, (addr.address, port)
    host, _, zone = addr.address.partition("%")
    scope = 0
    if zone:
        scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
    return socket.AF_INET6, (host, port, 0, scope)


def check_routes(targets: Iterable[Target]) -> None:
    """Mark addresses the scanner has no route to (a UDP connect sends nothing)."""
    for target in targets:
        for addr in target.addresses:
            try:
                fam, sa = sockaddr_for(addr, 9)
            except OSError as exc:
                addr.reachable, addr.error = False, str(exc.strerror or exc)
                continue
            s = socket.socket(fam, socket.SOCK_DGRAM)
            try:
                s.connect(sa)
            except OSError as exc:
                addr.reachable, addr.error = False, exc.strerror or str(exc)
            finally:
                s.close()
