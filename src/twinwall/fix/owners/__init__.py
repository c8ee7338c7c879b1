"""Owners: who writes the rules of a family, and how a change is written for them.

Each module exposes ``OWNER`` with ``render(snapshot, changes) -> Candidate``: it fills every
change's ``commands`` (what an admin would type) and ``rules_text`` (the rules as the owner
spells them) and returns the candidate the proof evaluates and the transaction loads.
"""

from __future__ import annotations

import importlib
from typing import Dict, List, Sequence

from twinwall.analysis.audit import AuditReport
from twinwall.fix.model import Change
from twinwall.model import HostSnapshot

MODULES: Dict[str, str] = {
    "iptables": "twinwall.fix.owners.iptables",
    "nft": "twinwall.fix.owners.nft",
    "ufw": "twinwall.fix.owners.ufw",
    "firewalld": "twinwall.fix.owners.firewalld",
    "docker": "twinwall.fix.owners.docker",
}


def owner(name: str):
    return importlib.import_module(MODULES[name]).OWNER


def owner_of(snapshot: HostSnapshot, report: AuditReport, family: str, chain: str = "INPUT") -> str:
    """Which owner a change of ``family`` is written for: the front-end that wrote the rules
    (ufw, firewalld; Docker for its DOCKER-USER chain), else whoever holds the family's rules
    (iptables-save dumps: plain iptables; only native nft tables: nft). A family with no rules
    at all follows the other family."""
    fronts = " ".join(report.frontends.get(family, []))
    if chain == "DOCKER-USER":
        return "docker"
    if "firewalld" in fronts:
        return "firewalld"
    if "ufw" in fronts:
        return "ufw"
    kinds = _kinds(snapshot, family)
    if not kinds:
        kinds = _kinds(snapshot, "ipv4" if family == "ipv6" else "ipv6")
    if "iptables" in kinds or not kinds:
        return "iptables"
    return "nft"


def _kinds(snapshot: HostSnapshot, family: str) -> List[str]:
    out = []
    for t in snapshot.rulesets:
        if t.format == "iptables-save" and t.family == family and "*" in t.text:
            out.append("iptables")
        elif t.format == "nft-json":
            from twinwall.parsers.nft_json import rule_families

            if family in rule_families(t.text):
                out.append("nft")
    return out


def variant(snapshot: HostSnapshot, families: Sequence[str]) -> str:
    backends = {t.backend for t in snapshot.rulesets if t.format == "iptables-save" and t.family in families}
    if backends == {"legacy"}:
        return "legacy"
    if backends == {"nft"}:
        return "nft"
    return ""
