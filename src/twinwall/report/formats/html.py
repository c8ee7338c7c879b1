"""--format html: one self-contained page a person would rather look at.

No JavaScript and no external request: the page carries its style inline, allowed by the
Content-Security-Policy ``default-src 'none'; style-src 'sha256-...'`` (the hash of that one
style block, so nothing injected could add style either), and draws its chart as inline SVG
coloured through the same stylesheet. Everything from the host (process names, rule text with its
comments, hostnames) is escaped. Summary first (hosts, services per status and family, findings
per severity), then each host's services with IPv4/IPv6 cells coloured by status, then its
findings, each with the rules that decided it and the fix in ``<details>``.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Dict, List

from twinwall import __version__
from twinwall.findings import CATALOGUE, SEVERITIES
from twinwall.model import FAMILIES
from twinwall.report.documents import (
    STATUSES,
    Doc,
    decision_text,
    family_label,
    finding_decisions,
    host_documents,
    host_name,
    iter_verdicts,
    service_key,
    severity_rank,
)
from twinwall.analysis.verdicts import display_address
from twinwall.report.formats import Format, RenderOptions
from twinwall.report.registry import FLEET, HOSTS

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#1d2330;background:#fff}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.25em;margin:1.6em 0 .4em;border-bottom:1px solid #d8dce4}
h3{font-size:1.05em;margin:1.2em 0 .3em}.meta{color:#5a6273}
table{border-collapse:collapse;margin:.4em 0;width:100%}th,td{border:1px solid #d8dce4;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f1f3f7}td.num{text-align:right}code,.rule{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.92em}
.cards{display:flex;flex-wrap:wrap;gap:1em;margin:.6em 0}.card{border:1px solid #d8dce4;border-radius:6px;padding:.6em 1em;min-width:10em}
.card b{display:block;font-size:1.6em}
.st-open{background:#f8d0cc}.st-restricted{background:#fbe7b5}.st-filtered{background:#d3efd6}.st-local-only{background:#dcefe0}
.st-not-bound{background:#eef0f4;color:#5a6273}.st-disabled{background:#eef0f4;color:#5a6273}.st-unknown{background:#e4dcf3}
.sev-critical,.sev-high{color:#a4161a;font-weight:bold}.sev-medium{color:#9a5b00;font-weight:bold}.sev-low{color:#34568b}.sev-info{color:#5a6273}
svg .open{fill:#d9534f}svg .restricted{fill:#e9a23b}svg .filtered{fill:#4caf50}svg .local-only{fill:#81c784}
svg .not-bound{fill:#b0b6c2}svg .disabled{fill:#8a90a0}svg .unknown{fill:#9575cd}svg text{font-size:12px;fill:#1d2330}
details{border:1px solid #d8dce4;border-radius:4px;margin:.3em 0;padding:.3em .6em}summary{cursor:pointer}
details ul{margin:.3em 0}.fix{background:#f4f8ff;border-left:3px solid #34568b;padding:.3em .6em;margin:.4em 0}
.legend span{display:inline-block;margin-right:1em}
""".strip()

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")
CSP = f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; form-action 'none'; base-uri 'none'"


def _e(value) -> str:
    return escape("" if value is None else str(value), quote=True)


def _status_counts(hosts: List[Doc]) -> Dict[str, Dict[str, int]]:
    counts = {fam: {s: 0 for s in STATUSES} for fam in FAMILIES}
    for doc in hosts:
        for _, fam, verdict in iter_verdicts(doc):
            status = verdict.get("status", "unknown")
            counts[fam][status if status in counts[fam] else "unknown"] += 1
    return counts


def _chart(counts: Dict[str, Dict[str, int]]) -> str:
    """Services per status, one stacked bar per family, as inline SVG."""
    width, bar, left = 560, 26, 60
    rows = []
    for i, fam in enumerate(FAMILIES):
        total = sum(counts[fam].values())
        y = 10 + i * (bar + 14)
        rows.append(f'<text x="0" y="{y + bar * 0.68:.0f}">{family_label(fam)}</text>')
        x = float(left)
        for status in STATUSES:
            n = counts[fam][status]
            if not n:
                continue
            w = (width - left - 10) * n / total
            rows.append(f'<rect class="{status}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}">'
                        f"<title>{family_label(fam)} {status}: {n}</title></rect>")
            if w > 22:
                rows.append(f'<text x="{x + 4:.1f}" y="{y + bar * 0.68:.0f}">{n}</text>')
            x += w
        if not total:
            rows.append(f'<text x="{left}" y="{y + bar * 0.68:.0f}">no services</text>')
    height = 10 + len(FAMILIES) * (bar + 14)
    legend = "".join(
        f'<span><svg width="12" height="12" aria-hidden="true"><rect class="{s}" width="12" height="12"/></svg> {s}</span>'
        for s in STATUSES
    )
    return (f'<svg role="img" aria-label="services per status and family" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">' + "".join(rows) + "</svg>"
            f'<div class="legend">{legend}</div>')


def _severity_counts(hosts: List[Doc]) -> Dict[str, int]:
    counts = {s: 0 for s in reversed(SEVERITIES)}
    for doc in hosts:
        for f in doc.get("findings", []):
            counts[f.get("severity", "info")] = counts.get(f.get("severity", "info"), 0) + 1
    return counts


def _verdict_cell(verdict: Doc) -> str:
    status = verdict.get("status", "unknown")
    text = status
    allowed = [s for s in verdict.get("allowed_sources") or [] if s != "*"]
    except_ = verdict.get("allowed_sources_except") or []
    if except_:  # everyone but these (a blocklist): allowed_sources is the whole address space
        allowed = [f"all except {', '.join(except_[:2])}" + (f" and {len(except_) - 2} more" if len(except_) > 2 else "")]
    if status == "restricted" and allowed:
        text += " (" + ", ".join(allowed[:3]) + (", ..." if len(allowed) > 3 else "") + ")"
    ifaces = [i for i in verdict.get("allowed_interfaces") or [] if i != "*"]
    if status == "restricted" and ifaces:
        text += " via " + ", ".join(ifaces[:3])
    if verdict.get("uncertain"):
        text += " ?"
    return f'<td class="st-{_e(status)}" data-status="{_e(status)}">{_e(text)}</td>'


def _services(doc: Doc) -> str:
    services = doc.get("services", [])
    if not services:
        known = (doc.get("host") or {}).get("sockets_known", True)
        return "<p>" + ("No listening sockets." if known else "No socket list given: only host-level checks were made.") + "</p>"
    worst: Dict[str, Doc] = {}
    for f in doc.get("findings", []):
        name = f.get("service")
        if name and f.get("severity") != "info":
            if name not in worst or severity_rank(f["severity"]) > severity_rank(worst[name]["severity"]):
                worst[name] = f
    rows = []
    for svc in services:
        addr = display_address(svc["address"], svc.get("v6only"), svc.get("interface"))
        process = (svc.get("process") or "-") + (f"[{svc['pid']}]" if svc.get("pid") else "")
        f = worst.get(f"{svc['protocol']}/{svc['port']}")
        finding = f'<span class="sev-{_e(f["severity"])}">{_e(f["severity"])}: {_e(f["id"])}</span>' if f else ""
        rows.append(
            f'<tr class="service" data-service="{_e(service_key(svc))}"><td>{_e(svc["protocol"])}</td>'
            f"<td><code>{_e(addr)}:{_e(svc['port'])}</code></td><td>{_e(process)}</td>"
            + _verdict_cell(svc.get("ipv4") or {}) + _verdict_cell(svc.get("ipv6") or {})
            + f"<td>{finding}</td></tr>"
        )
    return ("<table><thead><tr><th>proto</th><th>address:port</th><th>process</th><th>IPv4</th><th>IPv6</th>"
            "<th>finding</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _cited(family: str, decision: Doc) -> str:
    """``IPv6: filter INPUT #3: -A INPUT ... (v6.rules line 7)``."""
    text = decision_text(dict(decision, source=None))
    label = family_label(family)
    if decision.get("file") and decision.get("line"):
        where = f" ({decision['file']} line {decision['line']})"
    elif decision.get("handle") is not None:
        where = f" ({decision.get('file') or 'nft'} handle {decision['handle']})"
    else:
        where = f" ({decision['file']})" if decision.get("file") else ""
    return (f"{label}: " if label else "") + text + where


def _findings(doc: Doc) -> str:
    findings = sorted(doc.get("findings", []), key=lambda f: -severity_rank(f.get("severity", "")))
    if not findings:
        return "<p>No findings.</p>"
    out = []
    for f in findings:
        sev = f.get("severity", "")
        fam = family_label(f.get("family"))
        parts = [f'<details class="finding" data-id="{_e(f.get("id"))}" data-severity="{_e(sev)}">',
                 f'<summary><span class="sev-{_e(sev)}">{_e(sev.upper())}</span> <b>{_e(f.get("id"))}</b>'
                 f'{" " + _e(fam) if fam else ""}: {_e(f.get("message"))}</summary>']
        if f.get("cis"):
            parts.append(f"<p>{_e(f['cis'])}</p>")
        if f.get("frontend"):
            parts.append(f"<p>Rules written by: {_e(f['frontend'])}</p>")
        evidence = [e for e in f.get("evidence") or [] if isinstance(e, str)]
        decisions = [(fam, d) for fam, d in finding_decisions(doc, f)]
        if decisions:
            # the deciding rules with where they were read (dump file and line, or nft handle),
            # then the evidence that is not one of them (sysctls, notes)
            parts.append("<p>Decided by:</p><ul>")
            parts += [f'<li class="rule">{_e(_cited(fam, d))}</li>' for fam, d in decisions]
            parts.append("</ul>")
            texts = [decision_text(dict(d, source=None)) for _, d in decisions]
            evidence = [e for e in evidence if not any(t in e for t in texts)]
        if evidence:
            parts.append(f"<p>{'Also' if decisions else 'Decided by'}:</p><ul>")
            parts += [f'<li class="rule">{_e(line)}</li>' for line in evidence]
            parts.append("</ul>")
        kind = CATALOGUE.get(f.get("id", ""))
        # the finding's own one-line fix (filled with its ports and chains), then why, from the catalogue
        fix = _e(f["fix"]) if f.get("fix") else (_e(kind.help) if kind is not None else "")
        if fix:
            parts.append(f'<div class="fix"><b>Fix.</b> {fix}</div>')
        if f.get("fix") and kind is not None:
            parts.append(f'<p class="why">{_e(kind.help)}</p>')
        parts.append("</details>")
        out.append("".join(parts))
    return "".join(out)


def _assumed(ruleset: Dict) -> str:
    """The addresses an offline audit took as the host's because the ruleset's INPUT rules name
    them (analysis.context.assumed_from_rules), each with its rule."""
    assumed = ruleset.get("assumed_addresses") or []
    if not assumed:
        return ""
    items = "".join(
        f"<li><code>{_e(a.get('address'))}</code>: {_e(a.get('table'))} {_e(a.get('chain'))} "
        f"#{_e(a.get('rule_number'))} <code>{_e(a.get('rule'))}</code></li>" for a in assumed)
    more = " (and more)" if ruleset.get("assumed_more") else ""
    return f"<br>taken as the host's addresses, as its INPUT rules name them{more}:<ul>{items}</ul>"


def _host_section(doc: Doc, index: int) -> str:
    host = doc.get("host") or {}
    ipv6 = {True: "enabled", False: "disabled", None: "unknown"}.get((doc.get("ipv6") or {}).get("enabled"), "unknown")
    rulesets = "".join(
        f"<li>{_e(rs.get('family'))}: {_e(rs.get('source'))}, {_e(rs.get('rules'))} rules in "
        f"{_e(', '.join(rs.get('tables') or []) or 'no tables')}{_assumed(rs)}</li>"
        for rs in host.get("rulesets") or []
    )
    missing = "".join(f"<li>{_e(m)}</li>" for m in host.get("missing") or [])
    return (
        f'<section class="host" id="host-{index}"><h2>{_e(host_name(doc))}</h2>'
        f'<p class="meta">IPv6 {_e(ipv6)}{" · collected " + _e(host.get("collected_at")) if host.get("collected_at") else ""}</p>'
        + (f"<ul>{rulesets}</ul>" if rulesets else "")
        + (f"<p>Not collected:</p><ul>{missing}</ul>" if missing else "")
        + "<h3>Services</h3>" + _services(doc) + "<h3>Findings</h3>" + _findings(doc) + "</section>"
    )


def _fleet_table(hosts: List[Doc]) -> str:
    heads = "".join(f"<th>{_e(s)}</th>" for s in reversed(SEVERITIES))
    rows = []
    for doc in hosts:
        counts = {s: 0 for s in SEVERITIES}
        for f in doc.get("findings", []):
            counts[f.get("severity", "info")] = counts.get(f.get("severity", "info"), 0) + 1
        cells = "".join(f'<td class="num">{counts[s]}</td>' for s in reversed(SEVERITIES))
        rows.append(f'<tr><td>{_e(host_name(doc))}</td><td class="num">{len(doc.get("services", []))}</td>{cells}</tr>')
    return f"<table><thead><tr><th>host</th><th>services</th>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(document: Doc, options: RenderOptions) -> str:
    hosts = host_documents(document)
    fleet = document.get("schema") == FLEET
    unreadable = document.get("unreadable") or [] if fleet else []
    title = f"twinwall fleet: {len(hosts)} hosts" if fleet else f"twinwall audit: {host_name(hosts[0]) if hosts else '?'}"
    severities = _severity_counts(hosts)
    cards = [f'<div class="card"><b>{len(hosts)}</b>host{"s" if len(hosts) != 1 else ""}</div>',
             f'<div class="card"><b>{sum(len(d.get("services", [])) for d in hosts)}</b>services</div>']
    cards += [f'<div class="card sev-{s}"><b>{n}</b>{s}</div>' for s, n in severities.items()]
    if unreadable:
        cards.append(f'<div class="card"><b>{len(unreadable)}</b>unreadable</div>')
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">twinwall {_e(__version__)} · for every listening service: can a new connection '
        "from elsewhere reach it over IPv4? over IPv6?</p>",
        '<section id="summary"><h2>Summary</h2><div class="cards">' + "".join(cards) + "</div>",
        "<h3>Services per status and family</h3>" + _chart(_status_counts(hosts)),
    ]
    if fleet:
        body.append("<h3>Hosts</h3>" + _fleet_table(hosts))
    if unreadable:
        body.append("<h3>Hosts that could not be read</h3><ul>"
                    + "".join(f'<li class="unreadable"><code>{_e(u.get("path"))}</code>: {_e(u.get("error"))}</li>'
                              for u in unreadable) + "</ul>")
    body.append("</section>")
    body += [_host_section(doc, i) for i, doc in enumerate(hosts)]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="twinwall {_e(__version__)}">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )


def _render(document: Doc, options: RenderOptions) -> str:
    return render_html(document, options)


FORMAT = Format("html", "one self-contained HTML page (no script, no external request)", HOSTS, _render)
