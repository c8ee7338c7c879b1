"""--format junit: JUnit XML for CI dashboards (the kube-bench / goss layout).

One ``<testsuite>`` per host. A testcase per (service, family): it fails when a finding about
that service in that family reaches ``--fail-on``; a finding below the threshold marks it
skipped with the finding as the reason (kube-bench's WARN). A testcase per host-level check
(each catalogue finding that is not about one service, per family): it passes when the audit
did not raise it. A failure is ``<failure type="SEVERITY" message="ID: message">`` with the
evidence (the rules that decided) as its text.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Tuple

from twinwall.findings import CATALOGUE
from twinwall.model import FAMILIES
from twinwall.report.documents import (
    Doc,
    at_least,
    decision_text,
    family_label,
    finding_services,
    host_documents,
    host_name,
    service_key,
)
from twinwall.report.formats import Format, RenderOptions
from twinwall.report.registry import FLEET, HOSTS

# findings about one service (they carry "service"); every other catalogue entry is a host check
SERVICE_FINDINGS = frozenset({"TW-FAMILY-GAP", "TW-NO-RULE", "TW-UNCERTAIN"})


class _Case:
    def __init__(self, classname: str, name: str, out: str = ""):
        self.classname = classname
        self.name = name
        self.out = out
        self.findings: List[Doc] = []


def _outcome(case: _Case, options: RenderOptions) -> Tuple[str, Optional[Doc]]:
    """``("failure" | "skipped" | "pass", worst finding)``."""
    failing = [f for f in case.findings if at_least(f.get("severity", ""), options.fail_on)]
    if failing:
        return "failure", failing[0]
    return ("skipped", case.findings[0]) if case.findings else ("pass", None)


def _finding_text(f: Doc) -> str:
    lines = [f"{f['id']} ({f.get('severity')}){' ' + family_label(f.get('family')) if f.get('family') else ''}: "
             f"{f.get('message', '')}"]
    if f.get("cis"):
        lines.append(f"  {f['cis']}")
    lines += [f"  - {e}" for e in f.get("evidence") or []]
    kind = CATALOGUE.get(f["id"])
    if f.get("fix"):  # the finding's own one-line remedy, filled with its subject
        lines.append(f"  fix: {f['fix']}")
    elif kind is not None:
        lines.append(f"  fix: {kind.help}")
    return "\n".join(lines)


def _cases(doc: Doc) -> List[_Case]:
    host = host_name(doc)
    cases: List[_Case] = []
    by_service: Dict[Tuple[int, str], _Case] = {}
    for i, svc in enumerate(doc.get("services", [])):
        for fam in FAMILIES:
            verdict = svc.get(fam) or {}
            status = verdict.get("status", "unknown")
            out = [f"{family_label(fam)}: {status} ({verdict.get('reason', '')})"]
            out += [f"  - {decision_text(d)}" for d in verdict.get("decided_by", [])]
            # the name stays the same from run to run (no status, no pid): dashboards keep a
            # test's history by its name
            process = f" ({svc['process']})" if svc.get("process") else ""
            case = _Case(f"{host}.services", f"{service_key(svc)}{process} {family_label(fam)}", "\n".join(out))
            by_service[(i, fam)] = case
            cases.append(case)
    host_cases: Dict[Tuple[str, str], _Case] = {}
    for fid, kind in CATALOGUE.items():
        if fid in SERVICE_FINDINGS:
            continue
        for fam in FAMILIES:
            case = _Case(f"{host}.checks", f"{fid} {family_label(fam)}: {kind.title}")
            host_cases[(fid, fam)] = case
            cases.append(case)
    index = {id(s): i for i, s in enumerate(doc.get("services", []))}
    for f in doc.get("findings", []):
        fam = f.get("family") or ""
        targets = [by_service[(index[id(s)], fam)] for s in finding_services(doc, f) if (index[id(s)], fam) in by_service]
        if not targets:
            key = (f["id"], fam)
            if key not in host_cases:
                known = CATALOGUE.get(f["id"])
                title = known.title if known else f["id"]
                host_cases[key] = _Case(f"{host}.checks", f"{f['id']}{' ' + family_label(fam) if fam else ''}: {title}")
                cases.append(host_cases[key])
            targets = [host_cases[key]]
        for case in targets:
            case.findings.append(f)
    return cases


def _suite(doc: Doc, options: RenderOptions) -> ET.Element:
    cases = _cases(doc)
    suite = ET.Element("testsuite", name=f"twinwall audit {host_name(doc)}")
    counts = {"failure": 0, "skipped": 0, "pass": 0}
    collected = doc.get("host", {}).get("collected_at")
    if collected:
        suite.set("timestamp", str(collected))
    for case in cases:
        outcome, worst = _outcome(case, options)
        counts[outcome] += 1
        el = ET.SubElement(suite, "testcase", classname=case.classname, name=case.name, time="0")
        if outcome == "failure" and worst is not None:
            failure = ET.SubElement(el, "failure", type=worst.get("severity", ""),
                                    message=f"{worst['id']}: {worst.get('message', '')}")
            failure.text = "\n\n".join(_finding_text(f) for f in case.findings)
        elif outcome == "skipped" and worst is not None:
            ET.SubElement(el, "skipped", message=f"{worst['id']} ({worst.get('severity')}, below --fail-on "
                          f"{options.fail_on}): {worst.get('message', '')}")
        if case.out or case.findings:
            text = case.out
            if outcome == "skipped":
                text += ("\n" if text else "") + "\n".join(_finding_text(f) for f in case.findings)
            ET.SubElement(el, "system-out").text = text
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(counts["failure"]))
    suite.set("errors", "0")
    suite.set("skipped", str(counts["skipped"]))
    suite.set("time", "0")
    return suite


def _unreadable_suite(entry: Doc) -> ET.Element:
    """A fleet host that could not be read: one testcase in error."""
    path = str(entry.get("path") or "?")
    suite = ET.Element("testsuite", name=f"twinwall audit {path}", tests="1", failures="0", errors="1",
                       skipped="0", time="0")
    case = ET.SubElement(suite, "testcase", classname=f"{path}.checks", name="snapshot readable", time="0")
    ET.SubElement(case, "error", type="unreadable", message=str(entry.get("error") or "could not be read"))
    return suite


def render_junit(document: Doc, options: RenderOptions) -> ET.Element:
    root = ET.Element("testsuites", name="twinwall")
    for doc in host_documents(document):
        root.append(_suite(doc, options))
    if document.get("schema") == FLEET:
        for entry in document.get("unreadable") or []:
            root.append(_unreadable_suite(entry))
    for attr in ("tests", "failures", "errors", "skipped"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in root)))
    return root


def _render(document: Dict[str, Any], options: RenderOptions) -> str:
    root = render_junit(document, options)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


FORMAT = Format("junit", "JUnit XML: a testsuite per host, a testcase per service and family and per "
                "host check, failures gated by --fail-on", HOSTS, _render)
