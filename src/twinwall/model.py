"""Plain-data host facts shared by collectors, the snapshot file and the analysis.

Collectors (``twinwall.sources``) produce these; the analysis (``twinwall.analysis``) consumes
them; nothing here knows how they were obtained. Every class round-trips through ``to_dict`` /
``from_dict`` so a snapshot is plain JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

IPV4 = "ipv4"
IPV6 = "ipv6"
FAMILIES = (IPV4, IPV6)
FAMILY_LABEL = {IPV4: "IPv4", IPV6: "IPv6"}
# the protocols of the sockets twinwall audits, by IP protocol number
PROTO_NUM = {"tcp": 6, "udp": 17}
# how a socket bound to every address of the host shows its address ("*": older ss)
WILDCARD_ADDRESSES = frozenset(("0.0.0.0", "::", "*", ""))


# the sysctls a snapshot records: global switches by name, per-interface ones (the '*' stands
# for all, default and each interface; a '.' in an interface name is written '/', as sysctl does)
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv6.conf.*.forwarding",
    "net.ipv4.conf.*.rp_filter",
    "net.ipv4.conf.*.route_localnet",
)
FORWARDING_SYSCTL = {IPV4: "net.ipv4.ip_forward", IPV6: "net.ipv6.conf.all.forwarding"}


def is_loopback_address(address: str) -> bool:
    """127.0.0.0/8, ::1 or an IPv4-mapped 127.x address (a zone suffix allowed)."""
    a = address.split("%")[0]
    return a == "::1" or a.startswith(("127.", "::ffff:127."))


@dataclass(frozen=True)
class ListeningSocket:
    """One listening TCP socket or bound UDP socket.

    ``family`` is the socket's own address family. An ``ipv6`` socket bound to ``::`` with
    ``v6only`` False also accepts IPv4 (ss prints it as ``*:port``).
    """

    protocol: str  # "tcp" | "udp"
    family: str  # IPV4 | IPV6
    address: str  # "0.0.0.0", "::", "192.0.2.1", "::1", ...
    port: int
    v6only: Optional[bool] = None  # None for ipv4 sockets or when unknown
    interface: Optional[str] = None  # SO_BINDTODEVICE ("%eth0" in ss)
    process: Optional[str] = None
    pid: Optional[int] = None
    unit: Optional[str] = None  # systemd unit, from the socket's cgroup
    uid: Optional[int] = None

    def accepts_family(self, family: str) -> bool:
        """Whether this socket can receive connections of the given address family."""
        if self.family == IPV4:
            return family == IPV4
        if self.address.startswith("::ffff:"):
            # bound to an IPv4-mapped address: only that IPv4 address's connections reach it
            return family == IPV4
        if family == IPV6:
            return True
        # An AF_INET6 socket takes IPv4 only when bound to the wildcard without IPV6_V6ONLY.
        # Unknown v6only on '::' is treated as dual-stack: Linux's default is bindv6only=0.
        return self.address in ("::", "*") and self.v6only is not True

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ListeningSocket":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def identity(self) -> Tuple[str, str, str, int, Optional[str]]:
        """What makes two rows the same socket (ss may list one socket twice, once per thread
        or process that holds it; a hand-made snapshot may repeat it)."""
        return (self.protocol, self.family, self.address, self.port, self.interface)


_SOCKET_DETAILS = ("v6only", "process", "pid", "unit", "uid")


def merge_same_sockets(sockets: Iterable[ListeningSocket]) -> List[ListeningSocket]:
    """One row per socket (:meth:`ListeningSocket.identity`), in first-seen order: the row with
    the most details wins, its gaps filled from the others."""
    result: List[ListeningSocket] = []
    index: Dict[Tuple, int] = {}
    for sock in sockets:
        key = sock.identity()
        at = index.get(key)
        if at is None:
            index[key] = len(result)
            result.append(sock)
        else:
            result[at] = _richer(result[at], sock)
    return result


def _richness(s: ListeningSocket) -> int:
    return sum(getattr(s, name) is not None for name in _SOCKET_DETAILS)


def _richer(a: ListeningSocket, b: ListeningSocket) -> ListeningSocket:
    best, other = (b, a) if _richness(b) > _richness(a) else (a, b)
    fill = {
        name: getattr(other, name)
        for name in _SOCKET_DETAILS
        if getattr(best, name) is None and getattr(other, name) is not None
    }
    if not fill:
        return best
    d = best.to_dict()
    d.update(fill)
    return ListeningSocket(**d)


@dataclass
class InterfaceAddress:
    interface: str
    family: str  # IPV4 | IPV6
    address: str  # without prefix length
    prefixlen: int
    scope: str = "global"  # "global" | "link" | "host"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "InterfaceAddress":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Ipv6State:
    """Whether IPv6 is usable on the host, with the facts that decided it."""

    enabled: Optional[bool]  # None: could not tell
    evidence: List[str] = field(default_factory=list)
    # interfaces with net.ipv6.conf.IFACE.disable_ipv6=1 while IPv6 is on elsewhere
    disabled_interfaces: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Ipv6State":
        return cls(
            enabled=d.get("enabled"),
            evidence=list(d.get("evidence", [])),
            disabled_interfaces=[str(n) for n in d.get("disabled_interfaces", []) or []],
        )


@dataclass
class RulesetText:
    """One ruleset dump exactly as a tool printed it.

    ``format`` names the parser: "iptables-save" (for either family) or "nft-json".
    ``backend`` says which kernel side it came from: "nft" (iptables-nft / native nftables) or
    "legacy" (x_tables). Several dumps of one family are all evaluated: a packet must pass each.
    """

    family: str  # IPV4 | IPV6 | "inet" (nft-json holds every family)
    format: str  # "iptables-save" | "nft-json"
    backend: str  # "nft" | "legacy" | "unknown"
    source: str  # the command or file it came from
    text: str
    # nft-json only: `nft --debug=netlink list ruleset` of the same ruleset, inet tables' rules
    # only; it holds the `meta nfproto` tests nft does not print (None: not collected)
    netlink: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        if d["netlink"] is None:
            del d["netlink"]  # (older snapshots have no such field; keep them byte-identical)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RulesetText":
        # (the snapshot format allows both to be null or left out)
        return cls(d["family"], d["format"], d.get("backend") or "unknown", d.get("source") or "", d["text"],
                   d.get("netlink"))


@dataclass
class HostSnapshot:
    """Everything twinwall knows about one host at one moment."""

    hostname: str = ""
    collected_at: str = ""
    kernel: str = ""
    sockets: List[ListeningSocket] = field(default_factory=list)
    # None: the socket list was not available (offline audit without --sockets)
    sockets_known: bool = True
    addresses: List[InterfaceAddress] = field(default_factory=list)
    addresses_known: bool = False
    interfaces: List[str] = field(default_factory=list)
    ipv6: Ipv6State = field(default_factory=lambda: Ipv6State(enabled=None))
    rulesets: List[RulesetText] = field(default_factory=list)
    # What could not be read, one human sentence each ("iptables-save: permission denied").
    missing: List[str] = field(default_factory=list)
    # Which dump is authoritative for which kernel table, one entry per table:
    # {"table": "ip filter", "source": "iptables-save", "reason": "..."} (see docs/snapshot.md)
    table_sources: List[Dict[str, str]] = field(default_factory=list)
    # kernel settings that decide what the rules mean, as read from /proc/sys, by sysctl name
    # ("net.ipv4.ip_forward": "1"; see SYSCTLS); empty: not collected (an offline input)
    sysctls: Dict[str, str] = field(default_factory=dict)
    # `ipset save` output: the contents of the sets `-m set` matches read ("": none, or not
    # collected: those matches stay undecidable)
    ipsets: str = ""

    def to_dict(self) -> Dict[str, Any]:
        d = self._dict()
        if self.ipsets:
            d["ipsets"] = self.ipsets  # (older snapshots have no such field; keep them byte-identical)
        return d

    def _dict(self) -> Dict[str, Any]:
        return {
            "hostname": self.hostname,
            "collected_at": self.collected_at,
            "kernel": self.kernel,
            "sockets": [s.to_dict() for s in self.sockets],
            "sockets_known": self.sockets_known,
            "addresses": [a.to_dict() for a in self.addresses],
            "addresses_known": self.addresses_known,
            "interfaces": list(self.interfaces),
            "ipv6": self.ipv6.to_dict(),
            "rulesets": [r.to_dict() for r in self.rulesets],
            "missing": list(self.missing),
            "table_sources": [dict(t) for t in self.table_sources],
            "sysctls": dict(self.sysctls),
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "HostSnapshot":
        return cls(
            hostname=d.get("hostname", ""),
            collected_at=d.get("collected_at", ""),
            kernel=d.get("kernel", ""),
            sockets=[ListeningSocket.from_dict(s) for s in d.get("sockets", [])],
            sockets_known=d.get("sockets_known", True),
            addresses=[InterfaceAddress.from_dict(a) for a in d.get("addresses", [])],
            addresses_known=d.get("addresses_known", bool(d.get("addresses"))),
            interfaces=list(d.get("interfaces", [])),
            ipv6=Ipv6State.from_dict(d.get("ipv6", {})),
            rulesets=[RulesetText.from_dict(r) for r in d.get("rulesets", [])],
            missing=list(d.get("missing", [])),
            table_sources=[dict(t) for t in d.get("table_sources", [])],
            sysctls=dict(d.get("sysctls") or {}),
            ipsets=d.get("ipsets") or "",
        )

    def forwarding(self, family: str) -> Optional[bool]:
        """Whether the host forwards ``family``'s packets (net.ipv4.ip_forward,
        net.ipv6.conf.all.forwarding); None when the sysctls were not collected."""
        value = self.sysctls.get(FORWARDING_SYSCTL[family])
        if value is None:
            return None
        return value.strip() not in ("0", "")

    def rulesets_for(self, family: str) -> List[RulesetText]:
        return [r for r in self.rulesets if r.family in (family, "inet")]
