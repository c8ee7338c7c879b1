"""twinwall fleet"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Any, Dict, List, Tuple

from twinwall.report.output import add_format_arguments, emit, emit_json
from twinwall.report.formats import RenderOptions
from twinwall.report.registry import FLEET, render

DESCRIPTION = """\
Audit many hosts at once from their 'twinwall collect' snapshots (files, or directories: every
*.json below them), each exactly as 'twinwall audit --snapshot FILE' would, side by side on
every core. Prints, for the whole fleet:
  - hosts x findings: each host's findings by severity and by id;
  - the services exposed over IPv6 only: open or restricted over IPv6 while filtered, not
    bound or loopback-only over IPv4 (the ip6tables nobody wrote);
  - the hosts that could not be read, each with the one-line reason.
--format json writes {"schema": "twinwall.fleet/1", "hosts": [AUDIT, ...], "unreadable":
[{"path", "error"}], "summary": {...}}, where each AUDIT is what 'twinwall audit --format json'
prints for that host plus its "source" path (with --verbose: 'twinwall audit --verbose'). Collect snapshots with Ansible (integrations/
ansible), or with the single-file twinwall.pyz over SSH: see docs/fleet.md."""

EPILOG = """\
examples:
  twinwall fleet snapshots/
  twinwall fleet web1.json db1.json --fail-on high
  twinwall fleet snapshots/ --format json > fleet.json

exit codes: 0 no finding at or above --fail-on, 1 findings (a host that could not be read
counts as one), 2 no host could be read"""

SEVERITY_CHOICES = ("info", "low", "medium", "high", "critical", "never")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshots", nargs="+", metavar="SNAPSHOT",
                   help="a snapshot file from 'twinwall collect', or a directory of them (*.json, recursively)")
    add_format_arguments(p, FLEET)
    p.add_argument("--fail-on", choices=SEVERITY_CHOICES, default="medium",
                   help="exit 1 when a host has a finding of this severity or worse, or could not be "
                   "read (default: medium)")
    p.add_argument("--jobs", "-j", type=_positive, default=None, metavar="N",
                   help="audit N hosts at a time (default: one per core)")
    p.add_argument("--verbose", action="store_true",
                   help="JSON: each host's audit in the twinwall.audit/1 form (as 'twinwall audit "
                        "--verbose' prints it)")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return n


def audit_one(path: str, verbose: bool = False):
    """One host, as `twinwall audit --snapshot PATH --format json` (``verbose``: and
    ``--verbose``) sees it (run in a worker)."""
    from twinwall.analysis.audit import audit_snapshot
    from twinwall.analysis.fleet import HostResult
    from twinwall.analysis.parallel import FORK_MIN_RULES, estimated_rules
    from twinwall.commands.inputs import unreadable_rulesets
    from twinwall.errors import TwinwallError
    from twinwall.sources.snapshot import read_snapshot

    try:
        snapshot = read_snapshot(path)
    except TwinwallError as exc:
        return HostResult(path, error=str(exc))
    # the audit itself ends with exit 2 on such a snapshot: no verdict there can be trusted
    unreadable = unreadable_rulesets(snapshot, argparse.Namespace(snapshot=path), "audit")
    if unreadable:
        return HostResult(path, error=unreadable)
    try:
        doc = audit_snapshot(snapshot, keep_text=estimated_rules(snapshot) < FORK_MIN_RULES, jobs=1).to_json(verbose)
    except TwinwallError as exc:
        return HostResult(path, error=f"{path}: {exc}")
    doc["source"] = path
    return HostResult(path, document=doc)


def run(args: argparse.Namespace) -> int:
    import gc

    from twinwall.analysis.fleet import at_least, audit_hosts, default_workers, fleet_document, snapshot_files
    from twinwall.errors import InputError

    gc.disable()  # as in audit: many small objects, no cycles, a short-lived process
    if args.snapshots.count("-") > 1:
        raise InputError("only one snapshot can be read from standard input ('-')")
    files, missing = snapshot_files(args.snapshots)
    results = audit_hosts(files, partial(audit_one, verbose=args.verbose), args.jobs or default_workers())
    doc = fleet_document(results, missing)
    if args.format == "table":
        emit(render_table(doc), args.output)
    elif args.format == "json":
        emit_json(doc, args.output)
    else:
        emit(render(args.format, doc, RenderOptions(fail_on=args.fail_on)), args.output)
    if not doc["hosts"]:
        print(f"twinwall: no host could be read ({len(doc['unreadable'])} given)", file=sys.stderr)
        return 2
    return 1 if at_least(doc, args.fail_on) else 0


# ---------------------------------------------------------------------------------------------
# the table


def _table(headers, rows) -> List[str]:
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(str(c).ljust(widths[i]) for i, c in enumerate(cells)).rstrip()  # noqa: E731
    return [line(headers)] + [line(r) for r in rows]


def render_table(doc: Dict[str, Any]) -> str:
    from twinwall.analysis.verdicts import display_address

    summary = doc["summary"]
    out = [f"twinwall fleet: {summary['hosts']} hosts audited, {summary['unreadable']} could not be read", ""]
    rows: List[Tuple[Any, ...]]
    if summary["per_host"]:
        rows = []
        for h in summary["per_host"]:
            sev = h["by_severity"]
            ids = ", ".join(f"{i} x{n}" if n > 1 else i for i, n in sorted(h["findings"].items()))
            rows.append((h["host"], h["source"] or "", h["services"], sev.get("high", 0) + sev.get("critical", 0),
                         sev.get("medium", 0), sev.get("low", 0), sev.get("info", 0), ids or "-"))
        out += _table(("HOST", "SNAPSHOT", "SERVICES", "HIGH", "MEDIUM", "LOW", "INFO", "FINDINGS"), rows)
        out.append("")
    by = summary["findings_by_severity"]
    out.append("Findings in the fleet: " + ", ".join(f"{n} {s}" for s, n in reversed(list(by.items())) if n)
               if any(by.values()) else "No findings in the fleet.")
    out.append("")
    if summary["ipv6_only"]:
        out.append("Exposed over IPv6 only (open/restricted over IPv6, not reachable over IPv4):")
        rows = [(s["host"], s["protocol"], f"{display_address(s['address'], s['v6only'], s['interface'])}:{s['port']}",
                 s["process"] or "-", s["ipv4"], s["ipv6"]) for s in summary["ipv6_only"]]
        out += ["  " + line for line in _table(("HOST", "PROTO", "ADDRESS:PORT", "PROCESS", "IPv4", "IPv6"), rows)]
    else:
        out.append("No service is exposed over IPv6 only.")
    if doc["unreadable"]:
        out.append("")
        out.append("Could not be read (each counts as a finding for the exit code):")
        out += [f"  {u['error']}" for u in doc["unreadable"]]
    out.append("")
    out.append("One host in detail: twinwall audit --snapshot FILE   |   everything: --format json")
    return "\n".join(out) + "\n"
