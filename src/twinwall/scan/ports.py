"""Port specifications for ``twinwall scan --ports``.

A spec is a comma-separated list of items; each item is ``N``, ``N-M``, ``top`` or
``from-snapshot``, optionally prefixed with a protocol: ``tcp/22``, ``udp/53``, ``udp/top``.
Items without a prefix are TCP, and also UDP when ``--udp`` is given. ``from-snapshot`` takes the
exact (protocol, port) pairs the snapshot lists as listening.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Set, Tuple

from twinwall.errors import InputError

TCP = "tcp"
UDP = "udp"
PROTOCOLS = (TCP, UDP)

Probe = Tuple[str, int]  # (protocol, port)

# nmap's 100 most frequent TCP ports (nmap-services frequency order, sorted here).
TOP_TCP: Tuple[int, ...] = (
    7, 9, 13, 21, 22, 23, 25, 26, 37, 53, 79, 80, 81, 88, 106, 110, 111, 113, 119, 135, 139, 143,
    144, 179, 199, 389, 427, 443, 444, 445, 465, 513, 514, 515, 543, 544, 548, 554, 587, 631, 646,
    873, 990, 993, 995, 1025, 1026, 1027, 1028, 1029, 1110, 1433, 1720, 1723, 1755, 1900, 2000,
    2001, 2049, 2121, 2717, 3000, 3128, 3306, 3389, 3986, 4899, 5000, 5009, 5051, 5060, 5101,
    5190, 5357, 5432, 5631, 5666, 5800, 5900, 6000, 6001, 6646, 7070, 8000, 8008, 8009, 8080,
    8081, 8443, 8888, 9100, 9999, 10000, 32768, 49152, 49153, 49154, 49155, 49156, 49157,
)

# Common UDP services (the ones worth a probe on a server).
TOP_UDP: Tuple[int, ...] = (
    53, 67, 68, 69, 111, 123, 135, 137, 138, 161, 162, 443, 500, 514, 520, 623, 631, 1194, 1434,
    1900, 2049, 4500, 5060, 5353, 11211, 51820,
)

TOP = "top"
FROM_SNAPSHOT = "from-snapshot"


def _parse_port(text: str, item: str) -> int:
    if not text.isdigit():
        raise InputError(f"bad port spec {item!r}: {text!r} is not a port number")
    value = int(text)
    if not 1 <= value <= 65535:
        raise InputError(f"bad port spec {item!r}: port {value} is outside 1-65535")
    return value


def parse_port_spec(
    spec: str,
    udp: bool = False,
    snapshot_ports: Optional[Iterable[Probe]] = None,
) -> List[Probe]:
    """Return the sorted (protocol, port) pairs a spec names.

    ``udp``: unprefixed items also cover UDP. ``snapshot_ports``: what ``from-snapshot`` expands
    to (None when no snapshot was given, which makes ``from-snapshot`` an error).
    """
    if spec is None or not spec.strip():
        raise InputError("bad port spec: empty")
    result: Set[Probe] = set()
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise InputError(f"bad port spec {spec!r}: empty item")
        protocols: Sequence[str] = (TCP, UDP) if udp else (TCP,)
        body = item
        if "/" in item:
            prefix, body = item.split("/", 1)
            prefix = prefix.strip().lower()
            if prefix not in PROTOCOLS:
                raise InputError(f"bad port spec {item!r}: protocol must be tcp or udp")
            protocols = (prefix,)
            body = body.strip()
        lowered = body.lower()
        if lowered == TOP:
            for proto in protocols:
                result.update((proto, p) for p in (TOP_TCP if proto == TCP else TOP_UDP))
        elif lowered == FROM_SNAPSHOT:
            if snapshot_ports is None:
                raise InputError("--ports from-snapshot needs --snapshot FILE")
            wanted = set(protocols) if "/" in item else set(PROTOCOLS)
            result.update((proto, port) for proto, port in snapshot_ports if proto in wanted)
        elif "-" in body:
            lo_text, hi_text = body.split("-", 1)
            lo = _parse_port(lo_text.strip(), item)
            hi = _parse_port(hi_text.strip(), item)
            if lo > hi:
                raise InputError(f"bad port spec {item!r}: range goes backwards")
            for proto in protocols:
                result.update((proto, p) for p in range(lo, hi + 1))
        else:
            port = _parse_port(body, item)
            for proto in protocols:
                result.add((proto, port))
    if not result:
        raise InputError(f"port spec {spec!r} selects no ports")
    return sorted(result, key=lambda pp: (pp[0] != TCP, pp[1]))


def snapshot_ports(snapshot) -> List[Probe]:
    """The (protocol, port) pairs of a HostSnapshot's listening sockets."""
    pairs = {
        (s.protocol.lower(), int(s.port))
        for s in snapshot.sockets
        if s.protocol and s.protocol.lower() in PROTOCOLS and s.port
    }
    return sorted(pairs, key=lambda pp: (pp[0] != TCP, pp[1]))
