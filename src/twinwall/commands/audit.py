"""twinwall audit"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional

from twinwall.commands.inputs import add_input_arguments, snapshot_from_args, unreadable_rulesets
from twinwall.report.output import add_format_arguments, emit, emit_json
from twinwall.report.registry import AUDIT
from twinwall.report.tty import use_colour

DESCRIPTION = """\
For every listening TCP/UDP socket: can a new connection from another host reach it over IPv4,
and over IPv6? The answer comes from evaluating the loaded rules the way netfilter does (tables
in hook order, user chains, RETURN, goto, policies, negations, conntrack state...), not from
grepping 'dpt:22'. Each verdict cites the rule or policy that decided it.

Statuses:
  open        a new connection from every remote source is accepted
  restricted  accepted only from some sources or interfaces (listed)
  filtered    dropped or rejected for every remote source
  local-only  bound to a loopback address only
  not-bound   the socket does not accept this family (IPv4 socket, or IPv6-only)
  disabled    IPv6 is off on the host
  unknown     no ruleset was readable for this family
A '?' after a status: some rule's match (rate limit, recent list, mark...) cannot be decided
statically; twinwall assumed it may go either way and reports the wider result."""

EPILOG = """\
examples:
  sudo twinwall audit
  twinwall audit --iptables v4.rules --ip6tables v6.rules --sockets ss.txt --format json
  twinwall audit --snapshot host.json --fail-on high
  twinwall audit --snapshot host.json --format sarif --output twinwall.sarif
  twinwall audit --format prometheus --output /var/lib/prometheus/node-exporter/twinwall.prom

exit codes: 0 no finding at or above --fail-on, 1 findings, 2 error"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    add_format_arguments(p, AUDIT)
    p.add_argument("--verbose", action="store_true",
                   help="JSON: the twinwall.audit/1 form, every address list inline in the verdict "
                        "that has it (not once in a shared table)")
    p.add_argument(
        "--fail-on",
        choices=("info", "low", "medium", "high", "critical", "never"),
        default="medium",
        help="exit 1 when a finding of this severity or worse exists (default: medium)",
    )
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="colour the table (default: auto, on a TTY unless NO_COLOR is set)")
    p.add_argument(
        "--location",
        metavar="PATH",
        help="sarif: the file results point at when the audit knows no rules file and line "
        "(default: the --snapshot file; a live audit: give the snapshot you keep in the repository)",
    )


def _small(snapshot) -> bool:
    from twinwall.analysis.parallel import FORK_MIN_RULES, estimated_rules

    return estimated_rules(snapshot) < FORK_MIN_RULES


def run(args: argparse.Namespace) -> int:
    import gc

    # An audit builds millions of small tuples and leaves no reference cycles behind: the
    # cyclic collector would only rescan them again and again (a third of the run on a large
    # host; a sixth of the imports below, which create thousands of functions and classes).
    # Reference counting still frees everything; the process ends right after.
    gc.disable()
    from twinwall.analysis.audit import audit_snapshot
    from twinwall.report.text import render_audit, severity_at_least

    snapshot = snapshot_from_args(args)
    # keeping the dumps' text alive would only raise peak memory on a large host; the small
    # ones are parsed a second time to compare their output and forward hooks
    meanwhile: Optional[Callable[[], object]] = None
    if args.format == "json":
        from twinwall.report.json_out import load_encoders

        meanwhile = load_encoders  # (imported while a forked half is still working, not after)
    report = audit_snapshot(snapshot, keep_text=_small(snapshot), meanwhile=meanwhile)
    if args.format == "json":
        emit_json(report.to_json(verbose=args.verbose, stream=True), args.output)
    elif args.format == "table":
        color = args.color == "always" or (args.color == "auto" and args.output is None and use_colour(sys.stdout))
        emit(render_audit(report, color=color), args.output)
    else:
        from twinwall.report.formats import RenderOptions
        from twinwall.report.registry import render

        options = RenderOptions(fail_on=args.fail_on, location=args.location or args.snapshot)
        emit(render(args.format, report.to_json(), options), args.output)
    unreadable = unreadable_rulesets(snapshot, args, "audit")
    if unreadable:
        # what was readable is printed above; without a ruleset there is no verdict to trust
        print(f"twinwall: {unreadable}", file=sys.stderr)
        return 2
    return 1 if severity_at_least(report.findings, args.fail_on) else 0
