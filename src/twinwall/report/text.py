"""Human-readable audit report: one row per service, then the host-level findings."""

from __future__ import annotations

from typing import Dict, List, Sequence

from twinwall.analysis.audit import AuditReport, Finding
from twinwall.findings import SEVERITIES
from twinwall.analysis.verdicts import FILTERED, LOCAL_ONLY, OPEN, RESTRICTED, display_address
from twinwall.model import FAMILY_LABEL

MAX_EVIDENCE = 4  # evidence lines per finding in the text (the JSON has the finding's whole list)

_COLORS = {
    OPEN: "\033[31m",  # red: reachable from everywhere
    RESTRICTED: "\033[33m",
    FILTERED: "\033[32m",
    LOCAL_ONLY: "\033[32m",
    "high": "\033[1;31m",
    "critical": "\033[1;31m",
    "medium": "\033[33m",
}
_RESET = "\033[0m"


class Style:
    def __init__(self, color: bool):
        self.color = color

    def paint(self, text: str, key: str, width: int = 0) -> str:
        padded = text.ljust(width) if width else text
        if not self.color or key not in _COLORS:
            return padded
        return f"{_COLORS[key]}{padded}{_RESET}"


def _status_cell(verdict) -> str:
    return verdict.summary() + (" ?" if verdict.uncertain else "")


def render_audit(report: AuditReport, color: bool = False) -> str:
    st = Style(color)
    out: List[str] = []
    snap = report.snapshot
    head = snap.hostname or "(offline input)"
    # (whether the host has IPv6 on, which a saved dump does not say: not whether rules were read)
    v6 = {True: "enabled", False: "disabled", None: "on the host: unknown"}[snap.ipv6.enabled]
    out.append(f"twinwall audit: {head}  (IPv6 {v6})")
    for rs in report.rulesets:
        where = f"{rs['rules']} rules in {', '.join(rs['tables'])}" if rs["tables"] else "no tables loaded"
        out.append(f"  ruleset {rs['family']}: {rs['source']}, {where}")
        assumed = rs.get("assumed_addresses")
        if assumed:
            # (offline, no --address: say which addresses the verdicts take as the host's)
            named = ", ".join(
                f"{a['address']} ({a['table']} {a['chain']} #{a['rule_number']}"
                + (f", line {a['line']}" if a.get("line") else "") + ")"
                for a in assumed
            )
            more = " and more" if rs.get("assumed_more") else ""
            out.append(f"    taken as the host's addresses, as its INPUT rules name them: {named}{more}"
                       " (give --address to name the host's own)")
    out.append("")
    by_row: Dict[int, List[Finding]] = {}
    for f in report.findings:
        for row in f.table_rows():
            by_row.setdefault(row, []).append(f)
    rows = []
    for i, svc in enumerate(report.services):
        s = svc.socket
        addr = display_address(s.address, s.v6only, s.interface)
        fs = [f for f in by_row.get(i, []) if f.severity != "info"]
        worst = max(fs, key=lambda f: SEVERITIES.index(f.severity)) if fs else None
        rows.append(
            (
                s.protocol,
                f"{addr}:{s.port}",
                (s.process or "-") + (f"[{s.pid}]" if s.pid else ""),
                _status_cell(svc.verdicts["ipv4"]),
                _status_cell(svc.verdicts["ipv6"]),
                f"{worst.severity}: {worst.id}" if worst else "",
                svc.verdicts["ipv4"].status,
                svc.verdicts["ipv6"].status,
                worst.severity if worst else "",
            )
        )
    if rows:
        headers = ("PROTO", "ADDRESS:PORT", "PROCESS", "IPv4", "IPv6", "FINDING")
        widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) for i in range(6)]
        out.append("  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip())
        for r in rows:
            cells = [
                r[0].ljust(widths[0]),
                r[1].ljust(widths[1]),
                r[2].ljust(widths[2]),
                st.paint(r[3], r[6], widths[3]),
                st.paint(r[4], r[7], widths[4]),
                st.paint(r[5], r[8]),
            ]
            out.append("  ".join(cells).rstrip())
    elif snap.sockets_known:
        out.append("no listening sockets")
    else:
        out.append("no socket list given (--sockets): only host-level checks were made")
    out.append("")
    if report.findings:
        out.append("Findings:")
        for f in report.findings:
            fam = FAMILY_LABEL.get(f.family or "", "")
            tag = st.paint(f.severity.upper(), f.severity)
            out.append(f"  {tag} {f.id}{' ' + fam if fam else ''}: {f.message}")
            if f.cis:
                out.append(f"      {f.cis}")
            for e in f.evidence[:MAX_EVIDENCE]:
                out.append(f"      - {e}")
            if len(f.evidence) > MAX_EVIDENCE:
                out.append(f"      - ... {len(f.evidence) - MAX_EVIDENCE} more (--format json)")
            if f.fix:
                out.append(f"      fix: {f.fix}")
    else:
        out.append("No findings.")
    if snap.missing:
        out.append("")
        out.append("Not collected:")
        out.extend(f"  - {m}" for m in snap.missing)
    out.append("")
    out.append("Explain a verdict: twinwall explain tcp/PORT --family ipv6   |   details: --format json")
    return "\n".join(out) + "\n"


def severity_at_least(findings: Sequence[Finding], threshold: str) -> bool:
    if threshold == "never":
        return False
    t = SEVERITIES.index(threshold)
    return any(SEVERITIES.index(f.severity) >= t for f in findings)
