"""Many hosts at once: find the snapshots, audit each in a pool of processes, sum them up.

A fleet is a list of `twinwall collect` snapshots (files, or directories holding them). Each host
is audited exactly as `twinwall audit --snapshot FILE --format json` would, and its audit document
is kept whole; the fleet document adds what only the whole fleet shows:

* ``findings``: hosts x finding ids (how many of each, per host) and the worst severity per host;
* ``ipv6_only``: services exposed over IPv6 only - accepted (open or restricted) over IPv6 while
  no socket of the same service is reachable over IPv4 (filtered, not bound to IPv4, or bound to
  loopback only). The firewall a colleague forgot;
* ``unreadable``: hosts whose snapshot could not be read or audited, with the one-line reason.

Hosts are independent questions: they are audited side by side in forked worker processes (one
per core by default). A worker returns plain JSON-shaped data (the audit document), so nothing
but dicts crosses the process boundary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from twinwall.analysis.verdicts import FILTERED, LOCAL_ONLY, NOT_BOUND, OPEN, RESTRICTED
from twinwall.findings import SEVERITIES

SCHEMA = "twinwall.fleet/1"

# a service counts as reachable over a family in these statuses...
REACHABLE = (OPEN, RESTRICTED)
# ...and as not reachable from elsewhere in these (unknown / disabled say nothing either way)
NOT_REACHABLE = (FILTERED, LOCAL_ONLY, NOT_BOUND)

# what a directory contributes: its snapshot files, found recursively
SNAPSHOT_SUFFIX = ".json"


@dataclass(frozen=True)
class HostResult:
    """One host's outcome: its audit document, or why it could not be read."""

    path: str
    document: Optional[Dict[str, Any]] = None
    error: Optional[str] = None


def snapshot_files(paths: Sequence[str]) -> Tuple[List[str], List[Dict[str, str]]]:
    """The snapshot files named by ``paths`` (a directory: every ``*.json`` below it, sorted), in
    order and without repeats, and the paths that name nothing readable (``{"path", "error"}``)."""
    files: List[str] = []
    missing: List[Dict[str, str]] = []
    seen = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for path in paths:
        if os.path.isdir(path):
            found: List[str] = []
            for root, dirs, names in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(root, n) for n in names if n.endswith(SNAPSHOT_SUFFIX))
            if not found:
                missing.append({"path": path, "error": f"{path}: a directory with no *{SNAPSHOT_SUFFIX} snapshot in it"})
            for f in sorted(found):
                add(f)
        elif os.path.exists(path) or path == "-":
            add(path)
        else:
            missing.append({"path": path, "error": f"{path}: no such file or directory"})
    return files, missing


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def audit_hosts(paths: Sequence[str], audit_one: Callable[[str], HostResult], workers: int) -> List[HostResult]:
    """``[audit_one(p) for p in paths]``, in that order, on up to ``workers`` forked processes.

    ``audit_one`` must catch what it can explain and return it as ``HostResult.error``; a worker
    that fails otherwise costs only its host (reported as an internal error), not the fleet."""
    from twinwall.analysis.parallel import can_fork

    workers = min(workers, len(paths))
    if workers < 2 or not can_fork() or "-" in paths:
        return [_guarded(audit_one, p) for p in paths]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # futures, not multiprocessing.Pool: a worker killed outright (the OOM killer on a huge
    # host) breaks the pool with an error here instead of leaving its task waiting forever
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    with pool:
        futures = [pool.submit(_guarded, audit_one, p) for p in paths]
        results = []
        for path, future in zip(paths, futures):
            try:
                results.append(future.result())
            except BrokenProcessPool:
                results.append(HostResult(path, error=f"{path}: the worker process auditing it was killed "
                                          "(out of memory?); audit it alone: twinwall audit --snapshot FILE"))
    return results


def _guarded(audit_one: Callable[[str], HostResult], path: str) -> HostResult:
    try:
        return audit_one(path)
    except Exception as exc:  # a defect in twinwall: say which host met it, keep the others
        return HostResult(path, error=f"{path}: internal error while auditing: {type(exc).__name__}: {exc}")


def fleet_document(results: Iterable[HostResult], unreadable: Sequence[Dict[str, str]] = ()) -> Dict[str, Any]:
    """The ``twinwall.fleet/1`` document of the hosts' results (and paths already found unreadable)."""
    hosts: List[Dict[str, Any]] = []
    bad: List[Dict[str, str]] = list(unreadable)
    for r in results:
        if r.document is not None:
            hosts.append(r.document)
        else:
            bad.append({"path": r.path, "error": r.error or f"{r.path}: could not be read"})
    return {"schema": SCHEMA, "hosts": hosts, "unreadable": bad, "summary": summarize(hosts, bad)}


def host_name(doc: Dict[str, Any]) -> str:
    """How the fleet names a host: its hostname, else its snapshot path."""
    return (doc.get("host") or {}).get("hostname") or doc.get("source") or "?"


def summarize(hosts: Sequence[Dict[str, Any]], unreadable: Sequence[Dict[str, str]]) -> Dict[str, Any]:
    by_severity = {s: 0 for s in SEVERITIES}
    per_host = []
    ids: Dict[str, int] = {}
    ipv6_only: List[Dict[str, Any]] = []
    for doc in hosts:
        counts: Dict[str, int] = {}
        sev = {s: 0 for s in SEVERITIES}
        for f in doc.get("findings", []):
            counts[f["id"]] = counts.get(f["id"], 0) + 1
            sev[f["severity"]] = sev.get(f["severity"], 0) + 1
            by_severity[f["severity"]] = by_severity.get(f["severity"], 0) + 1
            ids[f["id"]] = ids.get(f["id"], 0) + 1
        worst = max((s for s, n in sev.items() if n), key=SEVERITIES.index, default=None)
        per_host.append({
            "host": host_name(doc),
            "source": doc.get("source"),
            "services": len(doc.get("services", [])),
            "findings": counts,
            "by_severity": sev,
            "worst": worst,
        })
        ipv6_only.extend(
            dict(svc, host=host_name(doc), source=doc.get("source")) for svc in ipv6_only_services(doc)
        )
    return {
        "hosts": len(hosts),
        "unreadable": len(unreadable),
        "findings_by_severity": by_severity,
        "findings_by_id": dict(sorted(ids.items())),
        "per_host": per_host,
        "ipv6_only": ipv6_only,
    }


def ipv6_only_services(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """A host's services accepted over IPv6 while not reachable over IPv4.

    A service is its (protocol, port): `0.0.0.0:22` open and `[::]:22` (v6only) open are one
    service reachable over both families, whereas the IPv4 half of the `[::]` socket alone is
    only "not bound". Each IPv6-reachable socket of a service whose every socket is unreachable
    over IPv4 is listed, with its IPv6 status and the service's IPv4 one (filtered before
    local-only before not-bound: the one that says most about an IPv4 socket first)."""
    services = doc.get("services", [])
    v4_status: Dict[Tuple[str, Any], List[str]] = {}
    for svc in services:
        v4_status.setdefault((svc["protocol"], svc["port"]), []).append(svc["ipv4"]["status"])
    out = []
    for svc in services:
        if svc["ipv6"]["status"] not in REACHABLE:
            continue
        if not all(s in NOT_REACHABLE for s in v4_status[(svc["protocol"], svc["port"])]):
            continue
        out.append({
            "protocol": svc["protocol"],
            "address": svc["address"],
            "port": svc["port"],
            "v6only": svc.get("v6only"),
            "interface": svc.get("interface"),
            "process": svc.get("process"),
            # the service's IPv4 side: filtered when some IPv4 socket is, not its own "not-bound"
            "ipv4": min(v4_status[(svc["protocol"], svc["port"])], key=NOT_REACHABLE.index),
            "ipv6": svc["ipv6"]["status"],
        })
    return out


def at_least(doc: Dict[str, Any], threshold: str) -> bool:
    """Whether the fleet has a finding at or above ``threshold`` ("never": no), an unreadable host
    counting as one: a host nobody could audit is not a host known to be fine."""
    if threshold == "never":
        return False
    if doc["unreadable"]:
        return True
    t = SEVERITIES.index(threshold)
    return any(SEVERITIES.index(s) >= t and n for s, n in doc["summary"]["findings_by_severity"].items())
