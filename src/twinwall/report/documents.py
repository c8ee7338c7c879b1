"""Reading audit documents (``twinwall.audit/2`` or ``/1``, and the fleet document holding one
per host) for the report formats: which hosts, what a finding is about, which rules decided it.

Formats render saved JSON as well as a fresh run, so they read the document, never analysis
objects; this module is what they share about its shape.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from twinwall.analysis.address_sets import inline_address_sets
from twinwall.analysis.verdicts import display_address
from twinwall.findings import SEVERITIES
from twinwall.model import FAMILIES, FAMILY_LABEL
from twinwall.report.registry import AUDIT, AUDIT_VERBOSE, FLEET

Doc = Dict[str, Any]
STATUSES = ("open", "restricted", "filtered", "local-only", "not-bound", "disabled", "unknown")


def host_documents(document: Doc) -> List[Doc]:
    """The audit documents a document holds (itself, or a fleet's hosts), each in the
    ``twinwall.audit/1`` form: a verdict's address lists inline, whichever form was written."""
    if document.get("schema") == FLEET:
        return [inline_address_sets(h) for h in document.get("hosts") or []]
    if document.get("schema") in (AUDIT, AUDIT_VERBOSE):
        return [inline_address_sets(document)]
    return []


def host_name(doc: Doc) -> str:
    """How reports name a host: its hostname, else the snapshot it came from (a fleet's hosts
    carry ``source``), else ``offline`` (an audit of saved dumps knows no hostname)."""
    return (doc.get("host") or {}).get("hostname") or doc.get("source") or "offline"


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def at_least(severity: str, threshold: str) -> bool:
    """``severity`` reaches ``--fail-on threshold`` (``never``: nothing does)."""
    return threshold != "never" and severity_rank(severity) >= severity_rank(threshold)


def service_label(svc: Doc) -> str:
    """``tcp *:22 (sshd)``, as the table shows a socket (no pid: it changes at each restart)."""
    addr = display_address(svc["address"], svc.get("v6only"), svc.get("interface"))
    process = f" ({svc['process']})" if svc.get("process") else ""
    return f"{svc['protocol']} {addr}:{svc['port']}{process}"


def service_key(svc: Doc) -> str:
    """A service's stable identity within its host: ``tcp/[::]:22`` (protocol, bound address,
    port, device), without the process id."""
    addr = display_address(svc["address"], svc.get("v6only"), svc.get("interface"))
    return f"{svc['protocol']}/{addr}:{svc['port']}"


def finding_services(doc: Doc, finding: Doc) -> List[Doc]:
    """The services a finding is about: those its ``services`` list names (one cause may cover
    several), else every socket on the port ``"service": "tcp/22"`` names."""
    services = doc.get("services", [])
    named = [s for s in finding.get("services") or [] if isinstance(s, dict)]
    if named:
        keys = {(s.get("protocol"), s.get("address"), s.get("port"), s.get("interface")) for s in named}
        return [s for s in services if (s.get("protocol"), s.get("address"), s.get("port"), s.get("interface")) in keys]
    name = finding.get("service")
    if not name or "/" not in name:
        return []
    protocol, _, port = name.partition("/")
    return [s for s in services if s.get("protocol") == protocol and str(s.get("port")) == port]


def finding_decisions(doc: Doc, finding: Doc) -> List[Tuple[str, Doc]]:
    """(family, decision) pairs that decided a finding, the deciding family first: the
    finding's own ``decisions`` when the audit wrote them, else the decided_by of the services
    it names, in the finding's family and then the other."""
    own = finding.get("decided_by") or finding.get("decisions")
    if own:
        return [(d.get("family") or finding.get("family") or "", d) for d in own if isinstance(d, dict)]
    family = finding.get("family")
    order = [family] + [f for f in FAMILIES if f != family] if family in FAMILIES else list(FAMILIES)
    out: List[Tuple[str, Doc]] = []
    services = finding_services(doc, finding)
    for fam in order:
        for svc in services:
            for d in (svc.get(fam) or {}).get("decided_by", []):
                out.append((fam, d))
    return out


def family_label(family: Optional[str]) -> str:
    return FAMILY_LABEL.get(family or "", "")


def iter_verdicts(doc: Doc) -> Iterator[Tuple[Doc, str, Doc]]:
    """(service, family, verdict) for every service of a host, IPv4 first."""
    for svc in doc.get("services", []):
        for fam in FAMILIES:
            verdict = svc.get(fam)
            if verdict:
                yield svc, fam, verdict


def decision_text(decision: Doc) -> str:
    """One line for a decision, as the text report cites it."""
    where = f"{decision.get('table', '')} {decision.get('chain', '')}".strip()
    if "policy" in decision:
        text = f"{where} policy {decision['policy']}"
    else:
        text = f"{where} #{decision.get('rule_number')}: {decision.get('rule', '')}"
    source = decision.get("source")
    return f"{source}: {text}" if source else text
