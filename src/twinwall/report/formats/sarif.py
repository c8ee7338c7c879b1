"""--format sarif: SARIF 2.1.0 for code scanning (GitHub, DefectDojo...).

One run per host, each with its own ``automationDetails`` category (``twinwall/HOST/``), so a
fleet's hosts are separate analyses whose alerts close on their own. Every result has a physical
location, because GitHub rejects a whole file when one result lacks it: the rules file and line
of the rule that decided the finding when the audit knows them (an offline audit of saved
dumps), else the ``--location`` path (a live audit: the snapshot), else the file the finding's
family was read from, line 1. Rule metadata (descriptions, the fix) comes from the findings
catalogue; ``security-severity`` follows trivy's scale so dashboards rank twinwall's alerts with
their other scanners'.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote

from twinwall import __version__
from twinwall.findings import CATALOGUE, FindingKind
from twinwall.report.documents import Doc, family_label, finding_decisions, host_documents, host_name, severity_rank
from twinwall.report.json_out import dumps
from twinwall.report.formats import Format, RenderOptions
from twinwall.report.registry import FLEET, HOSTS

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
# trivy's pkg/report/sarif.go scale; GitHub reads >= 9.0 as critical, 7.0-8.9 high, 4.0-6.9
# medium, 0.1-3.9 low. An info finding has no security severity: it is a note.
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "2.0"}
LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
FINGERPRINT = "twinwallFinding/v1"
_BACKEND_SUFFIX = re.compile(r" \((nft|legacy)\)$")


def _uri(path: str) -> str:
    """A path as a URI reference (spaces and other characters a URI cannot hold escaped)."""
    return quote(_BACKEND_SUFFIX.sub("", path), safe="/:@._-~+=,")


def _rule(kind: FindingKind, severity: str) -> Dict[str, Any]:
    # the catalogue's remedy strategy: each result's message carries its own filled-in fix line
    fix = f"\n\nFix: twinwall fix --strategy {kind.remedy}" if kind.remedy else ""
    fix_md = f"\n\nFix: `twinwall fix --strategy {kind.remedy}`" if kind.remedy else ""
    full = kind.title + "." + (f" Severity: {kind.severity_rule}." if kind.severity_rule else "")
    props: Dict[str, Any] = {"tags": ["security", "firewall", "ipv6"], "precision": "very-high"}
    if kind.cis_topic:
        props["tags"].append("cis")
    if severity in SECURITY_SEVERITY:
        props["security-severity"] = SECURITY_SEVERITY[severity]
    return {
        "id": kind.id,
        "name": "".join(w.capitalize() for w in kind.id.lower().split("-")),
        "shortDescription": {"text": kind.title},
        "fullDescription": {"text": full},
        "help": {"text": kind.help + fix, "markdown": f"**{kind.title}**\n\n{kind.help}" + fix_md},
        "defaultConfiguration": {"level": LEVEL.get(kind.severity, "warning")},
        "properties": props,
    }


def _location(doc: Doc, finding: Doc, options: RenderOptions) -> Tuple[str, int, Optional[str]]:
    """(path, line, rule text) for a finding's physical location; the rule text only where the
    line is known (a snippet beside line 1 would show the wrong line)."""
    decisions = finding_decisions(doc, finding)
    # a live audit's or a snapshot's decisions name the command the rules came from
    # (iptables-save): the snapshot file kept in the repository is the better place to point at
    if options.location:
        return options.location, 1, None
    if doc.get("source"):  # a fleet host: the snapshot it was audited from
        return doc["source"], 1, None
    for _, d in decisions:  # an offline audit: the dump file and the deciding rule's line
        path = d.get("file") or d.get("path")
        if path:
            line = d.get("line")
            return path, max(int(line or 1), 1), d.get("rule") if line else None
    for _, d in decisions:
        if d.get("source"):
            return d["source"], 1, None
    family = finding.get("family")
    rulesets = (doc.get("host") or {}).get("rulesets") or []
    for rs in sorted(rulesets, key=lambda r: r.get("family") != family):
        if rs.get("source"):
            return rs["source"], 1, None
    return "twinwall-audit", 1, None


def _fingerprint(host: str, finding: Doc, occurrence: int) -> str:
    key = "|".join(str(finding.get(k) or "") for k in ("id", "family", "service"))
    key = f"{host}|{key}" + (f"|{occurrence}" if occurrence else "")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _result(doc: Doc, host: str, finding: Doc, rule_index: int, occurrence: int,
            options: RenderOptions) -> Dict[str, Any]:
    path, line, rule_text = _location(doc, finding, options)
    region: Dict[str, Any] = {"startLine": line}
    if rule_text:
        region["snippet"] = {"text": rule_text}
    fam = family_label(finding.get("family"))
    fallback: str = finding.get("id", "")
    message = (f"{fam}: " if fam else "") + finding.get("message", fallback)
    evidence = [e for e in finding.get("evidence") or [] if isinstance(e, str)]
    if evidence:
        message += "\nDecided by: " + "; ".join(evidence)
    if finding.get("fix"):
        message += f"\nFix: {finding['fix']}"
    severity = finding.get("severity", "medium")
    props: Dict[str, Any] = {
        "host": host,
        "severity": severity,
        "family": finding.get("family"),
        "service": finding.get("service"),
        "cis": finding.get("cis"),
        "frontend": finding.get("frontend"),
        "evidence": evidence,
        "fix": finding.get("fix"),
        "remedy": finding.get("remedy"),
    }
    if severity in SECURITY_SEVERITY:
        props["security-severity"] = SECURITY_SEVERITY[severity]
    logical = f"{host}/{finding.get('family') or 'host'}/{finding.get('service') or 'host'}"
    return {
        "ruleId": finding["id"],
        "ruleIndex": rule_index,
        "kind": "fail",
        "level": LEVEL.get(severity, "warning"),
        "message": {"text": message},
        "locations": [
            {
                "physicalLocation": {"artifactLocation": {"uri": _uri(path)}, "region": region},
                "logicalLocations": [{"name": finding.get("service") or "host", "fullyQualifiedName": logical}],
            }
        ],
        "partialFingerprints": {FINGERPRINT: _fingerprint(host, finding, occurrence)},
        "properties": props,
    }


def _rules(findings: List[Doc]) -> Tuple[List[Dict[str, Any]], Dict[str, int]]:
    """The whole catalogue (stable rule indexes), plus any id it lacks; each rule's security
    severity is the worst its results reach in this run (GitHub reads it from the rule)."""
    worst: Dict[str, str] = {}
    for f in findings:
        if f["id"] not in worst or severity_rank(f["severity"]) > severity_rank(worst[f["id"]]):
            worst[f["id"]] = f["severity"]
    kinds = list(CATALOGUE.values())
    for fid in worst:
        if fid not in CATALOGUE:
            kinds.append(FindingKind(fid, worst[fid], fid, "See the finding's message."))
    rules = [_rule(k, worst.get(k.id, k.severity)) for k in kinds]
    return rules, {k.id: i for i, k in enumerate(kinds)}


def _run(doc: Doc, options: RenderOptions) -> Dict[str, Any]:
    host = host_name(doc)
    findings = [f for f in doc.get("findings", []) if f.get("id")]
    rules, index = _rules(findings)
    seen: Dict[str, int] = {}
    results = []
    for f in findings:
        key = "|".join(str(f.get(k) or "") for k in ("id", "family", "service"))
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        results.append(_result(doc, host, f, index[f["id"]], occurrence, options))
    return {
        "tool": {
            "driver": {
                "name": "twinwall",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": rules,
            }
        },
        "automationDetails": {"id": f"twinwall/{host}/"},
        "invocations": [{"executionSuccessful": True}],
        "results": results,
        "properties": {"host": host, "ipv6": (doc.get("ipv6") or {}).get("enabled")},
    }


def _unreadable_run(entry: Doc) -> Dict[str, Any]:
    """A fleet host that could not be read: a failed invocation, no results."""
    path = str(entry.get("path") or "?")
    return {
        "tool": {"driver": {"name": "twinwall", "version": __version__, "semanticVersion": __version__}},
        "automationDetails": {"id": f"twinwall/{path}/"},
        "invocations": [
            {
                "executionSuccessful": False,
                "toolExecutionNotifications": [
                    {
                        "level": "error",
                        "message": {"text": str(entry.get("error") or "could not be read")},
                        "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(path)}}}],
                    }
                ],
            }
        ],
        "results": [],
    }


def render_sarif(document: Doc, options: RenderOptions) -> Dict[str, Any]:
    runs = [_run(doc, options) for doc in host_documents(document)]
    if document.get("schema") == FLEET:
        runs += [_unreadable_run(e) for e in document.get("unreadable") or []]
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": runs}


def _render(document: Doc, options: RenderOptions) -> str:
    return dumps(render_sarif(document, options), pretty=True).decode("utf-8") + "\n"


FORMAT = Format("sarif", "SARIF 2.1.0 for code scanning (one run per host)", HOSTS, _render)
