"""--format prometheus: node_exporter's textfile collector format.

Written by a timer into the collector's directory (``--output`` replaces the file atomically,
so a scrape never reads half of it; see docs/reports.md). Series:

- ``twinwall_service_status{protocol,address,port,family,status} 1``: each listening service's
  status per family. ``address`` keeps a service's two sockets (``0.0.0.0:22`` and ``[::]:22``)
  apart; no pid or process label, which would start a new series at every restart.
- ``twinwall_findings{severity}``: findings per severity (every severity, 0 included).
- ``twinwall_last_run_success``, ``twinwall_last_run_timestamp_seconds``, ``twinwall_info{version}``.

A fleet document gives the same series with a ``host`` label, and ``twinwall_last_run_success 0``
for each host that could not be read.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Dict, List, Optional, Tuple

from twinwall import __version__
from twinwall.analysis.verdicts import display_address
from twinwall.findings import SEVERITIES
from twinwall.report.documents import Doc, host_documents, host_name, iter_verdicts
from twinwall.report.formats import Format, RenderOptions
from twinwall.report.registry import FLEET, HOSTS

_HELP = {
    "twinwall_service_status": "Status of a listening service for one IP family (1 for the status it has).",
    "twinwall_findings": "Findings of the last audit, per severity.",
    "twinwall_last_run_success": "1 when the last audit ran, 0 when the host could not be read.",
    "twinwall_last_run_timestamp_seconds": "When the audited facts were collected (Unix time; else when the report was written).",
    "twinwall_info": "twinwall's version.",
}

Labels = Tuple[Tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(name: str, labels: Labels, value: float) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    number = repr(float(value)) if isinstance(value, float) and not float(value).is_integer() else str(int(value))
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


def _collected(doc: Doc, now: float) -> float:
    """When a host's facts were collected (``host.collected_at``, UTC ISO 8601 as ``collect``
    writes it), else ``now`` (an audit of saved dumps knows no time). A report rendered later from
    saved JSON (``twinwall report``, a fleet of snapshots a day old) must not claim the host was
    checked just now: an alert on a stale timestamp is what catches a collector that stopped."""
    text = str((doc.get("host") or {}).get("collected_at") or "")
    if not text:
        return now
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return now
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def render_metrics(document: Doc, options: RenderOptions, now: Optional[float] = None) -> str:
    fleet = document.get("schema") == FLEET
    stamp = time.time() if now is None else now
    metrics: Dict[str, List[str]] = {name: [] for name in _HELP}
    for doc in host_documents(document):
        host: Labels = (("host", host_name(doc)),) if fleet else ()
        seen = set()
        for svc, fam, verdict in iter_verdicts(doc):
            labels = host + (
                ("protocol", str(svc["protocol"])),
                ("address", display_address(svc["address"], svc.get("v6only"), svc.get("interface"))),
                ("port", str(svc["port"])),
                ("family", fam),
                ("status", str(verdict.get("status", "unknown"))),
            )
            key = labels[:-1]
            if key in seen:  # one series per socket and family: a repeated row adds nothing
                continue
            seen.add(key)
            metrics["twinwall_service_status"].append(_series("twinwall_service_status", labels, 1))
        counts = {s: 0 for s in SEVERITIES}
        for f in doc.get("findings", []):
            counts[f.get("severity", "info")] = counts.get(f.get("severity", "info"), 0) + 1
        for severity, n in counts.items():
            metrics["twinwall_findings"].append(_series("twinwall_findings", host + (("severity", severity),), n))
        metrics["twinwall_last_run_success"].append(_series("twinwall_last_run_success", host, 1))
        metrics["twinwall_last_run_timestamp_seconds"].append(
            _series("twinwall_last_run_timestamp_seconds", host, round(_collected(doc, stamp), 3)))
    if fleet:
        for entry in document.get("unreadable") or []:
            host = (("host", str(entry.get("path") or "?")),)
            metrics["twinwall_last_run_success"].append(_series("twinwall_last_run_success", host, 0))
            metrics["twinwall_last_run_timestamp_seconds"].append(
                _series("twinwall_last_run_timestamp_seconds", host, round(stamp, 3)))
    metrics["twinwall_info"].append(_series("twinwall_info", (("version", __version__),), 1))
    out: List[str] = []
    for name, lines in metrics.items():
        if not lines:
            continue
        out.append(f"# HELP {name} {_HELP[name]}")
        out.append(f"# TYPE {name} gauge")
        out.extend(lines)
    return "\n".join(out) + "\n"


def _render(document: Doc, options: RenderOptions) -> str:
    return render_metrics(document, options)


FORMAT = Format("prometheus", "node_exporter textfile metrics", HOSTS, _render)
