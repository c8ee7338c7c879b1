"""Output of ``twinwall scan``: the side-by-side table, the JSON document, the progress bar."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from twinwall.model import IPV4, IPV6
from twinwall.scan.compare import FAMILY_LABEL, Row
from twinwall.scan.engine import CLOSED, FILTERED, OPEN, OPEN_FILTERED, UNREACHABLE, ProbeResult
from twinwall.scan.targets import Target

SCHEMA = "twinwall.scan/1"

_COLOURS = {
    OPEN: "\033[32m",
    FILTERED: "\033[33m",
    OPEN_FILTERED: "\033[33m",
    CLOSED: "\033[2m",
    UNREACHABLE: "\033[2m",
    "gap": "\033[1;31m",
    "dis": "\033[1;35m",
}
_RESET = "\033[0m"


def to_json(
    targets: Sequence[Target],
    rows: Sequence[Row],
    disagreements: Optional[List[Dict[str, Any]]],
    options: Dict[str, Any],
    elapsed: float,
    snapshot_file: Optional[str] = None,
) -> Dict[str, Any]:
    gaps = sum(1 for r in rows if r.gap)
    return {
        "schema": SCHEMA,
        "targets": [t.to_dict() for t in targets],
        "options": options,
        "snapshot": snapshot_file,
        "results": [r.to_dict() for r in rows],
        "disagreements": list(disagreements or []),
        "summary": {
            "results": len(rows),
            "gaps": gaps,
            "exposures": sum(1 for r in rows if r.exposed),
            "disagreements": len(disagreements or []),
            "elapsed_seconds": round(elapsed, 3),
        },
    }


def _cell(result: Optional[ProbeResult], show_address: bool) -> str:
    if result is None:
        return "-"
    text = result.state
    if result.state in (CLOSED, FILTERED) and result.reason not in ("conn-refused", "no-response"):
        text += f" ({result.reason})"
    if result.state == UNREACHABLE:
        text = "no route"
    if show_address:
        text += f"  {result.address}"
    return text


def _interesting(row: Row) -> bool:
    if row.gap:
        return True
    if any(v.get("agrees") is False for v in row.audit.values()):
        return True
    return any(r is not None and r.state == OPEN for r in (row.ipv4, row.ipv6))


def _note(row: Row) -> List[Tuple[str, str]]:
    """(paint key, text) of each note on a row."""
    notes: List[Tuple[str, str]] = []
    if row.gap:
        s4 = row.ipv4.state if row.ipv4 else "-"
        s6 = row.ipv6.state if row.ipv6 else "-"
        notes.append(("gap", f"GAP: {s4} over IPv4, {s6} over IPv6"))
    for family in (IPV4, IPV6):
        a = row.audit.get(family)
        if not a:
            continue
        result = row.result(family)
        if a.get("agrees") is False and result is not None:
            notes.append(
                (
                    "dis",
                    f"DISAGREES ({FAMILY_LABEL[family]}): audit said {a['status']}, "
                    f"scan saw {result.state}",
                )
            )
        elif a.get("note") and a["status"] == "restricted":
            notes.append(("", f"{FAMILY_LABEL[family]} {a['note']}"))
    return notes


def render_table(
    targets: Sequence[Target],
    rows: Sequence[Row],
    disagreements: Optional[List[Dict[str, Any]]],
    elapsed: float,
    colour: bool = False,
    show_all: bool = False,
) -> str:
    def paint(text: str, key: str) -> str:
        if not colour or key not in _COLOURS:
            return text
        return f"{_COLOURS[key]}{text}{_RESET}"

    out: List[str] = []
    compared = disagreements is not None
    for target in targets:
        mine = [r for r in rows if r.host == target.host]
        addrs4 = target.of_family(IPV4)
        addrs6 = target.of_family(IPV6)
        multi = len(addrs4) > 1 or len(addrs6) > 1
        out.append(f"Host {target.host}")
        for a in target.addresses:
            extra = "" if a.reachable else f"  (not scanned: {a.error or 'no route'})"
            out.append(f"  {FAMILY_LABEL[a.family]} {a.address}{extra}")
        shown = mine if show_all else [r for r in mine if _interesting(r)]
        # ports, not rows: a host with two address pairs has two rows per port
        hidden = len({(r.protocol, r.port) for r in mine} - {(r.protocol, r.port) for r in shown})
        h4 = "IPv4" if multi or not addrs4 else f"IPv4 {addrs4[0].address}"
        h6 = "IPv6" if multi or not addrs6 else f"IPv6 {addrs6[0].address}"
        cells = [
            (
                f"{r.protocol}/{r.port}",
                _cell(r.ipv4, multi),
                _cell(r.ipv6, multi),
                (
                    "/".join(
                        (r.audit.get(f) or {}).get("status", "-") for f in (IPV4, IPV6)
                    )
                    if compared
                    else None
                ),
                r,
            )
            for r in shown
        ]
        w0 = max([len("SERVICE")] + [len(c[0]) for c in cells])
        w1 = max([len(h4)] + [len(c[1]) for c in cells])
        w2 = max([len(h6)] + [len(c[2]) for c in cells])
        w3 = max([len("AUDIT v4/v6")] + [len(c[3] or "") for c in cells]) if compared else 0
        out.append("")
        header = f"  {'SERVICE':<{w0}}  {h4:<{w1}}  {h6:<{w2}}"
        if compared:
            header += f"  {'AUDIT v4/v6':<{w3}}"
        out.append(header + "  NOTE")
        for service, c4, c6, audit_cell, r in cells:
            k4 = r.ipv4.state if r.ipv4 else ""
            k6 = r.ipv6.state if r.ipv6 else ""
            line = f"  {service:<{w0}}  {paint(f'{c4:<{w1}}', k4)}  {paint(f'{c6:<{w2}}', k6)}"
            if compared:
                line += f"  {audit_cell:<{w3}}"
            notes = _note(r)
            if notes:
                line += "  " + "; ".join(paint(text, key) for key, text in notes)
            out.append(line.rstrip())
        if not cells:
            out.append("  (no open port and no difference between the families)")
        if hidden:
            out.append(
                f"  Not shown: {hidden} port(s) closed or filtered alike over both families"
                " (--all shows them)"
            )
        out.append("")
    gaps = sum(1 for r in rows if r.gap)
    exposures = sum(1 for r in rows if r.exposed)
    summary = f"{gaps} family gap(s)"
    if gaps:
        summary += f" ({exposures} with a service open over one family only)"
    if compared:
        summary += f", {len(disagreements or [])} disagreement(s) with the audit"
    summary += f"; {len(rows)} result(s) in {elapsed:.1f}s"
    out.append(paint(summary, "gap") if (gaps or disagreements) else summary)
    return "\n".join(out) + "\n"


class Progress:
    """A one-line progress bar on stderr, only for a TTY and a scan long enough to need it."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: Optional[bool] = None,
                 min_total: int = 300, delay: float = 1.0):
        if enabled is None:
            isatty = getattr(stream, "isatty", None)
            enabled = bool(isatty and isatty()) and total >= min_total
        self.enabled = enabled
        self.stream = stream
        self.total = total
        self.start = time.monotonic()
        self.delay = delay
        self.last = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < self.delay or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        width = 30
        frac = done / total if total else 1.0
        bar = "#" * int(frac * width)
        elapsed = now - self.start
        eta = (elapsed / done * (total - done)) if done else 0.0
        self.stream.write(
            f"\r[{bar:<{width}}] {done}/{total} probes  {elapsed:.0f}s elapsed, ~{eta:.0f}s left "
        )
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
