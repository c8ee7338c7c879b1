"""Turn probe results into side-by-side rows (one per host, protocol, port and address pair),
find family gaps, and join the rows with the audit's prediction for the host.

Family gap: the two families of one port behave differently seen from the scanner. Each state is
reduced to what it says about reachability:

- ``open``: a service answered;
- ``closed``: the packet reached the host and nothing listens (a TCP RST, a UDP port
  unreachable);
- ``blocked``: filtered, or for TCP an ICMP port unreachable (a TCP stack answers a closed port
  with a RST, so an ICMP error for TCP comes from a firewall REJECT);
- ``unknown``: UDP ``open|filtered`` (silence: open, or dropped).

Two known classes that differ are a gap; ``unknown`` against ``open`` is a gap too (the same
request drew a reply over one family and silence over the other).

Audit join: the audit's JSON (``{"services": [{"protocol", "address", "port", "ipv4":
{"status"}, "ipv6": {"status"}}]}``) predicts, per family, open / restricted / filtered /
local-only / not-bound / disabled. For a scanned address the prediction is the widest status of
the services on that protocol and port whose bound address covers it (a wildcard or that very
address); no such service means nothing listens (``not-bound``), when the snapshot knew its
sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from twinwall.analysis.address_sets import inline_address_sets
from twinwall.model import FAMILY_LABEL, IPV4, IPV6
from twinwall.scan.engine import (
    CLOSED,
    OPEN,
    OPEN_FILTERED,
    UNREACHABLE,
    ProbeResult,
)
from twinwall.scan.ports import TCP, UDP
from twinwall.scan.targets import Target, TargetAddress, parse_ip


# Audit statuses, widest first.
AUDIT_ORDER = ("open", "restricted", "filtered", "local-only", "not-bound", "disabled")
_WILDCARDS = {"", "*", "0.0.0.0", "::", "[::]"}


def reach_class(result: Optional[ProbeResult]) -> Optional[str]:
    if result is None or result.state == UNREACHABLE:
        return None
    if result.state == OPEN:
        return "open"
    if result.state == CLOSED:
        if result.protocol == TCP and result.reason == "port-unreach":
            return "blocked"
        return "closed"
    if result.state == OPEN_FILTERED:
        return "unknown"
    return "blocked"


def is_gap(r4: Optional[ProbeResult], r6: Optional[ProbeResult]) -> bool:
    a, b = reach_class(r4), reach_class(r6)
    if a is None or b is None or a == b:
        return False
    if "unknown" in (a, b):
        return "open" in (a, b)
    return True


def is_exposure(r4: Optional[ProbeResult], r6: Optional[ProbeResult]) -> bool:
    """A gap where one family reaches a listening service."""
    return is_gap(r4, r6) and "open" in (reach_class(r4), reach_class(r6))


@dataclass
class Row:
    host: str
    protocol: str
    port: int
    ipv4: Optional[ProbeResult]
    ipv6: Optional[ProbeResult]
    gap: bool = False
    exposed: bool = False
    # family -> {"status", "address", "agrees", "note"} when a snapshot was compared
    audit: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def result(self, family: str) -> Optional[ProbeResult]:
        return self.ipv4 if family == IPV4 else self.ipv6

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"host": self.host, "protocol": self.protocol, "port": self.port}
        for family in (IPV4, IPV6):
            r = self.result(family)
            if r is None:
                d[family] = None
                continue
            entry = r.to_dict()
            if family in self.audit:
                entry["audit"] = dict(self.audit[family])
            d[family] = entry
        d["gap"] = self.gap
        d["exposed"] = self.exposed
        return d


def pair_addresses(
    v4: Sequence[TargetAddress], v6: Sequence[TargetAddress]
) -> List[Tuple[Optional[TargetAddress], Optional[TargetAddress]]]:
    """Pair each IPv4 address with an IPv6 address: same interface first, then in order."""
    pairs: List[Tuple[Optional[TargetAddress], Optional[TargetAddress]]] = []
    left6 = list(v6)
    left4: List[TargetAddress] = []
    for a in v4:
        match = next((b for b in left6 if a.interface and b.interface == a.interface), None)
        if match is not None:
            left6.remove(match)
            pairs.append((a, match))
        else:
            left4.append(a)
    for i in range(max(len(left4), len(left6))):
        pairs.append(
            (left4[i] if i < len(left4) else None, left6[i] if i < len(left6) else None)
        )
    return pairs


def build_rows(
    targets: Sequence[Target],
    probes: Sequence[Tuple[str, int]],
    results: Iterable[ProbeResult],
) -> List[Row]:
    index: Dict[Tuple[str, str, int], ProbeResult] = {}
    for r in results:
        index[(r.address, r.protocol, r.port)] = r
    rows: List[Row] = []
    for target in targets:
        pairs = pair_addresses(target.of_family(IPV4), target.of_family(IPV6))
        for protocol, port in probes:
            for a4, a6 in pairs:
                r4 = index.get((a4.address, protocol, port)) if a4 else None
                r6 = index.get((a6.address, protocol, port)) if a6 else None
                row = Row(target.host, protocol, port, r4, r6)
                row.gap = is_gap(r4, r6)
                row.exposed = is_exposure(r4, r6)
                rows.append(row)
    return rows


# ---------------------------------------------------------------- audit join


def _ip(text: Any):
    return parse_ip(text)[0] if isinstance(text, str) else None


def service_covers(service_address: Any, scanned: str) -> bool:
    """Whether a socket bound to ``service_address`` receives connections for ``scanned``."""
    if service_address is None or str(service_address).strip() in _WILDCARDS:
        return True
    ip = _ip(service_address)
    return ip is not None and ip == _ip(scanned)


def _status(service: Dict[str, Any], family: str) -> Optional[str]:
    entry = service.get(family)
    if isinstance(entry, dict):
        status = entry.get("status")
        return status if isinstance(status, str) else None
    return None


def _service_port(service: Dict[str, Any]) -> Optional[Tuple[str, int]]:
    try:
        return str(service.get("protocol", "")).lower(), int(service.get("port", -1))
    except (TypeError, ValueError):
        return None


def predict(
    services: Sequence[Dict[str, Any]],
    family: str,
    address: str,
    protocol: str,
    port: int,
    sockets_known: bool = True,
) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """(audit status, the service that decided it) for one scanned address and port."""
    best: Tuple[Optional[str], Optional[Dict[str, Any]]] = (None, None)
    best_rank = len(AUDIT_ORDER) + 1
    for service in services:
        if _service_port(service) != (protocol, port):
            continue
        if not service_covers(service.get("address"), address):
            continue
        status = _status(service, family)
        if status is None:
            continue
        rank = AUDIT_ORDER.index(status) if status in AUDIT_ORDER else len(AUDIT_ORDER)
        if rank < best_rank:
            best, best_rank = (status, service), rank
    if best[0] is None and sockets_known:
        return "not-bound", None
    return best


def agrees(protocol: str, status: str, state: str) -> Optional[bool]:
    """Whether a scan state is consistent with an audit status; None: nothing to compare."""
    if state == UNREACHABLE or status is None:
        return None
    if status == "restricted":
        # Depends on whether the scanner's source is among the allowed ones; a REJECT for the
        # others shows as closed.
        return True
    if status == "open":
        if state == OPEN:
            return True
        if protocol == UDP and state == OPEN_FILTERED:
            return True  # UDP services may stay silent to an unknown request
        return False
    if status in ("filtered", "local-only", "not-bound", "disabled"):
        return state != OPEN
    return None  # a status this version does not know


def describe(status: str, state: str) -> str:
    return f"audit said {status}, scan saw {state}"


def join_audit(
    rows: Sequence[Row],
    audit_json: Dict[str, Any],
    sockets_known: bool = True,
) -> List[Dict[str, Any]]:
    """Annotate rows with the audit's prediction (an audit document in either form, or its
    ``services`` alone); return the disagreements."""
    audit_json = inline_address_sets(audit_json)
    # the services of each (protocol, port): a row looks only at its own, not at every service
    by_port: Dict[Tuple[str, int], List[Dict[str, Any]]] = {}
    for s in audit_json.get("services", []):
        key = _service_port(s) if isinstance(s, dict) else None
        if key is not None:
            by_port.setdefault(key, []).append(s)
    disagreements: List[Dict[str, Any]] = []
    for row in rows:
        _join_row(row, by_port, sockets_known, disagreements)
        if row.gap and _nothing_listens_over_one_family(row):
            # a socket bound to 0.0.0.0 or ::1 only: the families differ because of where it
            # listens, not because one firewall lets through what the other stops
            row.gap = row.exposed = False
            for family in (IPV4, IPV6):
                if row.audit.get(family, {}).get("status") in NOT_LISTENING:
                    row.audit[family]["note"] = NOT_A_GAP_NOTE[row.audit[family]["status"]]
    return disagreements


# audit statuses that say no socket takes this family's connections from elsewhere
NOT_LISTENING = ("local-only", "not-bound", "disabled")
NOT_A_GAP_NOTE = {
    "local-only": "not a family gap: the socket listens on loopback only",
    "not-bound": "not a family gap: no socket listens over this family",
    "disabled": "not a family gap: IPv6 is disabled",
}


def _nothing_listens_over_one_family(row: Row) -> bool:
    """The audit says that, for one family, nothing listens for remote clients on this port,
    and the scan agrees (it did not find it open)."""
    for family in (IPV4, IPV6):
        audit = row.audit.get(family) or {}
        if audit.get("status") in NOT_LISTENING and audit.get("agrees") is True:
            return True
    return False


def _join_row(row: Row, by_port, sockets_known: bool, disagreements: List[Dict[str, Any]]) -> None:
    """Annotate one row with the audit's prediction for each family; add its disagreements."""
    for family in (IPV4, IPV6):
        result = row.result(family)
        if result is None:
            continue
        status, service = predict(
            by_port.get((row.protocol, row.port), []), family, result.address, row.protocol, row.port, sockets_known
        )
        if status is None:
            continue
        ok = agrees(row.protocol, status, result.state)
        note = None
        if status == "restricted":
            note = "restricted (depends on source)"
        elif status == "not-bound" and service is None:
            note = "no listening socket in the snapshot"
        row.audit[family] = {
            "status": status,
            "address": service.get("address") if service else None,
            "agrees": ok,
            "note": note,
        }
        if status == "restricted" and service is not None:
            verdict = service.get(family) or {}
            row.audit[family]["allowed_sources"] = list(verdict.get("allowed_sources") or [])
            if verdict.get("allowed_sources_except"):  # (the whole space but these)
                row.audit[family]["allowed_sources_except"] = list(verdict["allowed_sources_except"])
            row.audit[family]["allowed_interfaces"] = list(
                verdict.get("allowed_interfaces") or []
            )
        if ok is False:
            disagreements.append(
                {
                    "host": row.host,
                    "protocol": row.protocol,
                    "address": service.get("address") if service else None,
                    "port": row.port,
                    "family": family,
                    "target": result.address,
                    "audit": status,
                    "scan": result.state,
                    "reason": result.reason,
                    "message": f"{describe(status, result.state)} over "
                    f"{FAMILY_LABEL[family]} ({result.address})",
                }
            )
