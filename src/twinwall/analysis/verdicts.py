"""What the audit says of one service in one family, and who gets through to it.

The audit (``audit.py``) and the published-service walk (``published.py``) both build these
verdicts; this module imports neither, so each can use it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from twinwall.analysis.address_sets import ALLOWED_ADDRESS_FIELDS, VERDICT_ADDRESS_FIELDS, AddressSets
from twinwall.analysis.context import FamilyContext
from twinwall.analysis.evaluator import Outcome
from twinwall.netfilter.packetset import (
    Box,
    IIF,
    PORT_ALL,
    SPORT,
    SRC,
    address_space,
    cidr_count,
    cidr_count_over,
    covers,
    iv_normalize,
    iv_or,
    iv_sub,
    iv_union,
    merge_boxes,
    ranges_text,
    remembered_by_identity,
    remote_sources,
    iv_touching,
    to_cidrs,
)
from twinwall.model import IPV4, IPV6, ListeningSocket
from twinwall.netfilter.ruleset import Decision
from twinwall.vocabulary import Status

# A service's status in one family (twinwall.vocabulary.Status)
OPEN = Status.OPEN
RESTRICTED = Status.RESTRICTED
FILTERED = Status.FILTERED
LOCAL_ONLY = Status.LOCAL_ONLY
NOT_BOUND = Status.NOT_BOUND
DISABLED = Status.DISABLED
UNKNOWN = Status.UNKNOWN
REACH_RANK: Dict[str, int] = {FILTERED: 0, RESTRICTED: 1, OPEN: 2}
# statuses under which no remote client reaches the service, whatever the reason
UNREACHED = (FILTERED, LOCAL_ONLY, NOT_BOUND, DISABLED)


def reach_rank(status: str) -> Optional[int]:
    """How widely a status lets remote clients in (REACH_RANK, with every status no remote
    client gets through ranked as filtered); None for a status that says nothing about reach
    (unknown, or a service that is not there)."""
    if status in UNREACHED:
        return REACH_RANK[FILTERED]
    return REACH_RANK.get(status)


MAX_DECIDED_BY = 12
CLIENT_PORTS = ((1024, 65535),)  # source ports any unprivileged client can choose


@dataclass(frozen=True)
class Allowed:
    """One combination of clients that gets through: these sources, arriving over these
    interfaces (``*``: every remote one), from these source ports (``*``: any). A verdict's
    combinations together are exactly the clients it accepts; they may overlap."""

    sources: Tuple[str, ...]
    interfaces: Tuple[str, ...]
    source_ports: Tuple[str, ...]
    # the sources as a table cell says them: "all", "all except 2001:db8::1", "192.0.2.0/24,..."
    sources_text: str = ""
    # when set, ``sources`` is the whole address space and the clients are those not in these
    # (see :func:`source_cidrs`: "everyone but a blocklist" is shorter said that way)
    sources_except: Tuple[str, ...] = ()

    def to_json(self, sets: Optional[AddressSets] = None) -> Dict:
        """With ``sets`` (a compact document's table) its address lists are indexes into it."""
        d: Dict = {"sources": self.sources, "interfaces": list(self.interfaces),
                   "source_ports": list(self.source_ports)}
        if self.sources_except:
            d["sources_except"] = self.sources_except
        if sets is not None:  # (the tuples themselves: every verdict of the same set shares them)
            return sets.refs(d, ALLOWED_ADDRESS_FIELDS)
        return d | {k: list(d[k]) for k in ALLOWED_ADDRESS_FIELDS if k in d}

    def text(self) -> str:
        """``"192.0.2.0/24 via eth0"``, ``"all except 2001:db8::1"``, ``"source port 3000"``."""
        parts = [] if self.sources_text == "all" else [self.sources_text]
        if self.interfaces != ("*",):
            parts.append("via " + _first(self.interfaces, 2))
        if self.source_ports != ("*",):
            parts.append("source port " + _first(self.source_ports, 3))
        return " ".join(parts) or "all"


def _first(items: Sequence[str], n: int) -> str:
    return ",".join(items[:n]) + (",..." if len(items) > n else "")


@dataclass
class FamilyVerdict:
    status: str
    decided_by: List[Decision] = field(default_factory=list)
    allowed_sources: List[str] = field(default_factory=list)
    denied_sources: List[str] = field(default_factory=list)
    allowed_interfaces: List[str] = field(default_factory=list)
    # set only when acceptance depends on the client's source port ("7001", "1024-2000")
    allowed_source_ports: List[str] = field(default_factory=list)
    uncertain: List[str] = field(default_factory=list)
    by_policy: bool = False  # accepted because a chain's policy is ACCEPT, not by a rule
    reason: str = ""
    # exactly who gets through, as combinations the three lists above cannot express (a source
    # allowed on one interface only): empty when nothing is accepted
    allowed: List[Allowed] = field(default_factory=list)
    # a wildcard socket accepted from every remote source at some of the host's addresses only
    # (a rule with -d drops it at the others): those addresses; empty otherwise
    allowed_addresses: List[str] = field(default_factory=list)
    # when set, ``allowed_sources`` is the whole address space and the allowed sources are those
    # not in these CIDRs (a blocklist: see :func:`source_cidrs`); empty otherwise
    allowed_sources_except: List[str] = field(default_factory=list)
    # set when the outcomes cited more rules than ``decided_by`` names (it names MAX_DECIDED_BY)
    decided_by_more: bool = False

    def to_json(self, sets: Optional[AddressSets] = None) -> Dict:
        """The verdict's JSON; with ``sets`` (a compact document's table, see
        ``analysis.address_sets``) each address list is its index in that table."""
        out = {
            "status": self.status,
            "reason": self.reason,
            "decided_by": [d.to_dict() for d in self.decided_by],
            "allowed_sources": self.allowed_sources,
            "denied_sources": self.denied_sources,
            "allowed_interfaces": self.allowed_interfaces,
            "allowed_source_ports": self.allowed_source_ports,
            "allowed": [a.to_json(sets) for a in self.allowed],
            "allowed_addresses": self.allowed_addresses,
            "uncertain": self.uncertain,
            "by_policy": self.by_policy,
        } | ({"allowed_sources_except": self.allowed_sources_except} if self.allowed_sources_except else {}) | (
            {"decided_by_more": True} if self.decided_by_more else {})
        return out if sets is None else sets.refs(out, VERDICT_ADDRESS_FIELDS)

    def summary(self) -> str:
        """The status with who gets through when it is restricted, as the table and the
        findings say it: ``restricted (all except 2001:db8::1)``, ``restricted (source port
        3000)``, ``restricted (192.0.2.0/24 via eth0; via eth1)``."""
        if self.status != RESTRICTED:
            return self.status
        if self.allowed_addresses:
            return f"{RESTRICTED} (only at {_first(self.allowed_addresses, 2)})"
        if self.allowed:
            shown = "; ".join(a.text() for a in self.allowed[:2])
            more = f"; +{len(self.allowed) - 2} more" if len(self.allowed) > 2 else ""
            return f"{RESTRICTED} ({shown}{more})"
        # a verdict built without combinations (a published service's interface-only answer)
        what = self.allowed_sources[:2] if self.allowed_sources != ["*"] and not self.allowed_sources_except else []
        if self.allowed_interfaces and self.allowed_interfaces != ["*"]:
            what = what + ["via " + ",".join(self.allowed_interfaces[:2])]
        more = "" if len(self.allowed_sources) <= 2 else ",..."
        return f"{RESTRICTED} ({','.join(what)}{more})" if what else RESTRICTED


DNAT_ARROW = "dnat \u2192 "


@dataclass(frozen=True)
class DnatLabel:
    """How a published service is named: the frontend that wrote the DNAT rule (``docker``),
    where the rule sends the connections (one text per family that publishes it), and the
    port range when one DNAT rule covers several ports."""

    frontend: Optional[str]
    targets: Tuple[str, ...]
    ports: Tuple[int, int]

    def text(self) -> str:
        """``"docker: dnat → 172.17.0.2:80, [fd00::2]:80 (ports 80-81)"``."""
        lo, hi = self.ports
        label = (f"{self.frontend}: " if self.frontend else "") + DNAT_ARROW + ", ".join(self.targets)
        return label + (f" (ports {lo}-{hi})" if lo != hi else "")


@dataclass
class ServiceReport:
    socket: ListeningSocket
    verdicts: Dict[str, FamilyVerdict]
    # a published service (a port DNAT forwards): what its label (``socket.process``) says
    dnat: Optional[DnatLabel] = None

    @property
    def name(self) -> str:
        return f"{self.socket.protocol}/{self.socket.port}"

    def label(self) -> str:
        s = self.socket
        addr = display_address(s.address, s.v6only, s.interface)
        return f"{s.protocol} {addr}:{s.port}" + (f" ({s.process})" if s.process else "")

    def to_json(self, sets: Optional[AddressSets] = None, written: Optional["VerdictsWritten"] = None) -> Dict:
        """The service's JSON (``sets``: as :meth:`FamilyVerdict.to_json`). ``written``: the
        JSON of the verdicts shared with services still to come, converted once (interned
        verdicts, see :func:`intern_verdicts`)."""
        s = self.socket
        return {
            "protocol": s.protocol,
            "address": s.address,
            "port": s.port,
            "family": s.family,
            "v6only": s.v6only,
            "interface": s.interface,
            "process": s.process,
            "pid": s.pid,
            "unit": s.unit,
            "ipv4": self.verdicts[IPV4].to_json(sets) if written is None else written.of(self.verdicts[IPV4], sets),
            "ipv6": self.verdicts[IPV6].to_json(sets) if written is None else written.of(self.verdicts[IPV6], sets),
        }


class VerdictsWritten:
    """The JSON of a document's verdicts that several of its services share, each converted
    once and kept only until its last service is written (a streamed document's other
    verdicts go as their service is written, as before)."""

    def __init__(self, services: Sequence["ServiceReport"]):
        self._left: Dict[int, int] = {}  # id(verdict) -> services still to write it
        for svc in services:
            for v in svc.verdicts.values():
                self._left[id(v)] = self._left.get(id(v), 0) + 1
        self._json: Dict[int, Dict] = {}

    def of(self, verdict: FamilyVerdict, sets: Optional[AddressSets]) -> Dict:
        key = id(verdict)
        left = self._left.get(key, 1) - 1
        self._left[key] = left
        known = self._json.pop(key, None) if left <= 0 else self._json.get(key)
        if known is None:
            # (the same dict for every service of the verdict: the writer only reads it)
            known = verdict.to_json(sets)
            if left > 0:
                self._json[key] = known
        return known


def intern_verdicts(verdicts: List[FamilyVerdict]) -> List[FamilyVerdict]:
    """``verdicts`` with equal ones the very same object: of 2,000 sockets, those whose ports
    meet the same rules the same way (a kube node's 2,000 sockets have ~200 distinct verdicts,
    a blocklisted host's 5) then cross the pipe from a forked family once, and are converted to
    JSON once (ServiceReport.to_json). Verdicts are not changed once made: sharing is safe."""
    seen: Dict[tuple, FamilyVerdict] = {}
    return [seen.setdefault(_verdict_key(v), v) for v in verdicts]


def _verdict_key(v: FamilyVerdict) -> tuple:
    """Every field of a verdict, hashable and cheap: a long list by its object (the verdicts of
    sockets that share their accepted regions hold the very same lists; an equal copy only
    goes unshared), so that 100,000 addresses are not hashed per socket."""
    return (v.status, v.reason, tuple(v.decided_by), _list_key(v.allowed_sources), _list_key(v.denied_sources),
            _list_key(v.allowed_interfaces), _list_key(v.allowed_source_ports), _list_key(v.uncertain), v.by_policy,
            tuple([(_list_key(a.sources), _list_key(a.interfaces), _list_key(a.source_ports), a.sources_text,
                    _list_key(a.sources_except)) for a in v.allowed]),
            _list_key(v.allowed_addresses), _list_key(v.allowed_sources_except), v.decided_by_more)


def _list_key(items: Sequence[str]) -> tuple:
    # (a list of strings, or the identity of a long one: never equal to each other)
    return tuple(items) if len(items) <= _SHORT_KEY else (id(items),)


_SHORT_KEY = 16


def cite(decisions: Sequence[Decision]) -> List[str]:
    """Evidence lines for decisions, each named by its ruleset when they come from several
    (legacy and nft tables of one family both number their rules from 1)."""
    many = len({d.source for d in decisions}) > 1
    return [f"{d.source}: {d.describe()}" if many and d.source else d.describe() for d in decisions]


def display_address(address: str, v6only, interface: Optional[str] = None) -> str:
    """As ss prints it: '*' for a dual-stack wildcard socket, brackets around IPv6, '%eth0'
    for a socket bound to a device."""
    dev = f"%{interface}" if interface else ""
    if address in ("::", "*") and v6only is not True:
        return "*" + dev
    return (f"[{address}]" if ":" in address else address) + dev


class Reach:
    """Who gets through, from the accepted regions of one service: the costly part of a verdict.

    ``ref``: the input interfaces remote clients count from (default: every remote one; a
    published service leaves out the one its target sits behind). Sockets whose accepted regions
    are the very same (source, interface, source port) sets, most of them on a big host, share
    one computation: the evaluator hands the same set objects to every socket it did not split,
    so their identities make a cheap memo key (``key``)."""

    __slots__ = ("covered", "src", "sports", "ifaces", "ref", "boxes", "family", "_sources", "_allowed")

    def __init__(self, ctx: FamilyContext, boxes: List[Box], ref: Optional[int] = None):
        self.boxes = boxes  # keeps the keyed objects alive while the memo lives
        self.ref = ctx.remote_ifaces if ref is None else ref
        target = list(boxes[0])
        target[SRC] = remote_sources(ctx.family)
        target[IIF] = self.ref
        # a client picks its source port: "open" must not depend on one (multiport --ports, --sport)
        target[SPORT] = CLIENT_PORTS
        self.covered = covers(boxes, tuple(target), (SRC, IIF, SPORT))
        srcs = list({id(b[SRC]): b[SRC] for b in boxes}.values())
        self.src = iv_union(srcs)
        self.sports = iv_normalize(p for b in boxes for p in b[SPORT])
        ifaces = 0
        for b in boxes:
            ifaces |= b[IIF]
        self.ifaces = ifaces
        self.family = ctx.family
        self._sources: Optional[Tuple[List[str], List[str], List[str]]] = None
        self._allowed: Optional[List[Allowed]] = None

    def combinations(self, universe) -> List[Allowed]:
        """Exactly who gets through, as (sources, interfaces, source ports) combinations: the
        accepted regions on those three dimensions, merged where they differ in one, each
        widened where the others already cover the difference (a rule that took source port
        3000 first leaves the later ones "every port but 3000"), those inside another left
        out. Computed once per shared reach."""
        if self._allowed is None:
            regions = _regions(self.boxes, self.ref, self.family)
            ref, family = self.ref, self.family
            self._allowed = []
            for r in regions:
                sources, except_ = source_cidrs(r[SRC], family)
                self._allowed.append(Allowed(
                    sources,
                    ("*",) if r[IIF] == ref else tuple(universe.label_list(r[IIF])),
                    ("*",) if r[SPORT] == PORT_ALL else tuple(ranges_text((p,)) for p in r[SPORT]),
                    _sources_text(r[SRC], family),
                    except_,
                ))
        return self._allowed

    def sources(self) -> Tuple[List[str], List[str], List[str]]:
        """(allowed, denied, allowed except) source CIDRs (see :func:`source_cidrs`), computed
        once per shared reach."""
        if self._sources is None:
            denied = iv_sub(remote_sources(self.family), self.src)
            allowed, except_ = source_cidrs(self.src, self.family)
            self._sources = (list(allowed), cidrs(denied, self.family) if denied else [], list(except_))
        return self._sources

    @staticmethod
    def key(boxes: List[Box]) -> tuple:
        return tuple(sorted((id(b[SRC]), b[IIF], id(b[SPORT])) for b in boxes))

    def verdict(
        self,
        universe,
        accepted: Sequence,
        denied: Sequence,
        uncertain: List[str],
        by_policy: bool,
        open_reason: str,
        restricted_reason: str,
    ) -> FamilyVerdict:
        """``open`` or ``restricted``, from the outcomes that accepted the service (and those
        that denied it some clients, cited when it is restricted)."""
        if self.covered:
            return FamilyVerdict(
                OPEN,
                **decided_fields(accepted),
                allowed_sources=["0.0.0.0/0" if self.family == IPV4 else "::/0"],
                allowed_interfaces=["*"],
                uncertain=uncertain,
                by_policy=by_policy,
                reason=open_reason,
                allowed=self.combinations(universe),
            )
        allowed_sources, denied_sources, allowed_except = self.sources()
        ifaces, ref = self.ifaces, self.ref
        return FamilyVerdict(
            RESTRICTED,
            **decided_fields(list(accepted) + list(denied)),
            # (the shared reach's own lists: a compact document finds them by the object)
            allowed_sources=allowed_sources,
            denied_sources=denied_sources,
            allowed_sources_except=allowed_except,
            allowed_interfaces=["*"] if ifaces & ref == ref else universe.label_list(ifaces & ref),
            allowed_source_ports=[] if not iv_sub(CLIENT_PORTS, self.sports) else [ranges_text(self.sports)],
            uncertain=uncertain,
            by_policy=by_policy,
            reason=restricted_reason,
            allowed=self.combinations(universe),
        )


def cidrs(a: tuple, family: str) -> List[str]:
    """Every CIDR of an address set (exact: a consumer can test an address against them),
    martian ranges folded in where that makes the list shorter (no packet carries those)."""
    return list(_cidrs_cached(a, family))


def _cidrs_cached_of(a: tuple, family: str) -> Tuple[str, ...]:
    return tuple(to_cidrs(_spelled_set(a, family), family))


_cidrs_cached = remembered_by_identity(_cidrs_cached_of)


def _spelled_set(a: tuple, family: str) -> tuple:
    """The set whose CIDRs say ``a``: ``a``, or ``a`` with the martian ranges put back where that
    is shorter ("everything but 203.0.113.0/24"; no packet carries a martian source)."""
    if cidr_count_over(a, 4) and _folding_shortens(a, family):
        return iv_or(a, _martians(family))
    return a


def _folding_shortens(a: tuple, family: str) -> bool:
    """Whether ``a`` with the martian ranges put back has fewer CIDR blocks than ``a``, counted
    where they differ only: the intervals of ``a`` that overlap or touch a martian range (the
    others are the same blocks either way). A set cut by a blocklist has hundreds of thousands
    of blocks, counted twice per verdict before."""
    martians = _martians(family)
    near = iv_touching(a, martians)
    return cidr_count(iv_or(near, martians)) < cidr_count(near)


# "Everyone but a blocklist" is hundreds of thousands of CIDRs (~30 per blocked IPv4 address,
# ~128 per IPv6 one): from this many on, a source set whose complement is shorter is said as the
# whole address space except the complement (below it, a few blocked addresses, as before).
COMPACT_SOURCES = 1024


def source_cidrs(a: tuple, family: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(sources, except): ``cidrs(a)`` and (), or, when ``a`` needs more than COMPACT_SOURCES
    blocks and the rest of the address space fewer, (the whole space, the CIDRs of that rest:
    exact but for martian sources, which no packet carries)."""
    return _source_cidrs_cached(a, family)


def _source_cidrs_cached_of(a: tuple, family: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    if cidr_count_over(a, COMPACT_SOURCES):
        rest = iv_sub(remote_sources(family), a)
        if cidr_count_over(a, cidr_count(rest)):
            whole = address_space(family)
            return tuple(to_cidrs(whole, family)), _cidrs_cached(rest, family)
    return _cidrs_cached(a, family), ()


_source_cidrs_cached = remembered_by_identity(_source_cidrs_cached_of)


@lru_cache(maxsize=None)
def _martians(family: str) -> tuple:
    return iv_sub(address_space(family), remote_sources(family))


def _sources_text_of(src: tuple, family: str) -> str:
    """A source set in a few words: ``all``, ``all except 2001:db8::1``, ``192.0.2.0/24,...``."""
    denied = iv_sub(remote_sources(family), src)
    if not denied:
        return "all"
    first = _first_cidrs(src, family, 3)  # (only these are spelled: a set cut by a blocklist
    if len(first) > 2:                      # has 100,000s of blocks)
        except_ = cidrs(denied, family) if len(denied) <= 8 else ()
        if except_ and len(except_) <= 2:
            return "all except " + ",".join(_host(c) for c in except_)
        if cidr_count_over(src, cidr_count(denied)):
            # everyone but a list (a blocklist): the first few left out, not the first
            # blocks of what is left ("0.0.0.0/1,128.0.0.0/2,..." says nothing)
            return "all except " + _first([_host(c) for c in to_cidrs(denied[:3], family)], 2)
    return _first([_host(c) for c in first], 2)


_sources_text = remembered_by_identity(_sources_text_of)


def _first_cidrs_of(a: tuple, family: str, n: int) -> Tuple[str, ...]:
    """``cidrs(a, family)[:n]``, without spelling the rest."""
    return tuple(to_cidrs(_spelled_set(a, family)[:n], family)[:n])


_first_cidrs = remembered_by_identity(_first_cidrs_of)


def _host(cidr: str) -> str:
    """A one-address CIDR as the address alone."""
    address, _, length = cidr.partition("/")
    return address if length == ("128" if ":" in address else "32") else cidr


_WIDE_DIMS = (SPORT, IIF, SRC)
_MAX_WIDENED = 64  # regions beyond this are listed as the evaluator left them (exact still)


def _regions(boxes: Sequence[Box], ref: int, family: str) -> List[Box]:
    """The accepted boxes reduced to their (source, interface, source port) parts, in as few
    and as wide regions as cover exactly the same clients; widest first."""
    template = list(boxes[0])
    seen: Dict[tuple, Box] = {}
    for b in boxes:
        key = (id(b[SRC]), b[IIF] & ref, id(b[SPORT]))
        if key[1] and b[SRC] and b[SPORT] and key not in seen:
            # every other dimension is the same in all regions, so only these three tell apart
            template[SRC], template[IIF], template[SPORT] = b[SRC], key[1], b[SPORT]
            seen[key] = tuple(template)
    regions = merge_boxes(list(seen.values()), rounds=3)
    if len(regions) <= _MAX_WIDENED:
        full = {SPORT: PORT_ALL, IIF: ref, SRC: remote_sources(family)}
        for i, r in enumerate(regions):
            for dim in _WIDE_DIMS:
                if r[dim] != full[dim]:
                    wider = r[:dim] + (full[dim],) + r[dim + 1:]
                    if covers(regions, wider, _WIDE_DIMS):
                        regions[i] = r = wider
        regions = [a for i, a in enumerate(regions)
                   if not any(j != i and _inside(a, b) and (a != b or j < i) for j, b in enumerate(regions))]
    if len(regions) > 1:  # (sized only to be ordered: a blocklist's one region is 100,000 intervals)
        regions.sort(key=lambda r: (r[IIF] != ref, r[SPORT] != PORT_ALL, -_size(r[SRC]), r[SRC]))
    return regions


def _size(a: tuple) -> int:
    return sum(hi - lo for lo, hi in a)


def _inside(a: tuple, b: tuple) -> bool:
    """Whether region ``a`` lies inside ``b`` on the (source, interface, source port) dimensions."""
    return not (a[IIF] & ~b[IIF]) and not iv_sub(a[SRC], b[SRC]) and not iv_sub(a[SPORT], b[SPORT])


class _Decided(Protocol):
    """What :func:`decisions` reads of an outcome (an Outcome, or a part of one)."""

    @property
    def decided_by(self) -> List[Decision]: ...


def decisions(outcomes: Sequence[_Decided]) -> List[Decision]:
    """The rules (and policies) the outcomes cite, the first MAX_DECIDED_BY of them."""
    return _cited(outcomes, MAX_DECIDED_BY)


def decided_fields(outcomes: Sequence[_Decided]) -> Dict[str, Any]:
    """A FamilyVerdict's ``decided_by`` (:func:`decisions`) and ``decided_by_more`` (whether the
    outcomes cite more rules than it names: its JSON says the list was cut), from one pass."""
    cited = _cited(outcomes, MAX_DECIDED_BY + 1)
    return {"decided_by": cited[:MAX_DECIDED_BY], "decided_by_more": len(cited) > MAX_DECIDED_BY}


def _cited(outcomes: Sequence[_Decided], limit: int) -> List[Decision]:
    seen: Dict[Decision, None] = {}
    for o in outcomes:
        # (an Outcome of a compact walk makes its run's decisions as they are read: a dozen
        # are cited, not the 100,000 of a blocklist)
        for d in o.cited() if isinstance(o, Outcome) else o.decided_by:
            seen.setdefault(d, None)
            if len(seen) >= limit:
                return list(seen)
    return list(seen)
