"""twinwall report"""

from __future__ import annotations

import argparse
import json

from twinwall.errors import InputError
from twinwall.report.output import emit

DESCRIPTION = """\
Render a saved twinwall document (audit --format json, fleet --format json) in another
format: sarif, junit, prometheus, html, json. The table needs the live analysis: run the
command again for it."""

EPILOG = """\
examples:
  twinwall audit --snapshot host.json --format json --output audit.json
  twinwall report audit.json --format sarif --output twinwall.sarif
  twinwall report fleet.json --format html --output fleet.html

exit codes: 0 no finding at or above --fail-on, 1 findings, 2 error"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from twinwall.report import registry

    p.add_argument("document", metavar="FILE.json", help="a saved twinwall JSON document ('-': standard input)")
    names = [n for n in registry.names()]
    p.add_argument("--format", choices=names, required=True, help=f"output format: {', '.join(names)}")
    p.add_argument("--output", metavar="FILE", help="write to FILE atomically (temp file, fsync, rename)")
    p.add_argument("--fail-on", choices=("info", "low", "medium", "high", "critical", "never"), default="medium",
                   help="junit failures and the exit code: findings of this severity or worse (default: medium)")
    p.add_argument("--location", metavar="PATH", help="sarif: the file results point at when no rules file and line is known")


def _read(path: str):
    import sys

    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str):
        raise InputError(f"{path}: not a twinwall document (no \"schema\" field)")
    return doc


def run(args: argparse.Namespace) -> int:
    from twinwall.report.documents import at_least, host_documents
    from twinwall.report.formats import RenderOptions
    from twinwall.report.registry import render

    doc = _read(args.document)
    try:
        rendered = render(args.format, doc, RenderOptions(fail_on=args.fail_on, location=args.location))
        findings = [f for h in host_documents(doc) for f in h.get("findings", [])]
        failed = any(at_least(f.get("severity", ""), args.fail_on) for f in findings)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        # (the formats read the document as twinwall writes it: one edited by hand, or cut
        # short, is refused where a format found it wanting, not rendered half)
        raise InputError(
            f"{args.document}: a {doc['schema']} document with a field missing or of the wrong kind "
            f"({type(exc).__name__}: {exc}); render the document a twinwall command wrote, unedited"
        ) from None
    emit(rendered, args.output)
    return 1 if failed or doc.get("unreadable") else 0
