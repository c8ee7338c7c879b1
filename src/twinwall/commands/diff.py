"""twinwall diff"""

from __future__ import annotations

import argparse
from typing import Callable, Optional

from twinwall.commands.inputs import add_input_arguments, dump_options, snapshot_from_args
from twinwall.errors import InputError
from twinwall.report.output import add_format_arguments, emit, emit_json
from twinwall.report.registry import DIFF

DESCRIPTION = """\
List every region of traffic that the IPv4 and the IPv6 firewall treat differently, for the
input, forward and output hooks: protocol, port ranges, conntrack state, interfaces, owner
uid/gid (output) and ICMP type (ICMP and ICMPv6 types mapped to each other), with each family's
verdict and the rule that decided it. Listening sockets cannot show an egress or forwarding gap;
comparing the two policies can.

Addresses exist in one family only, so they are compared by role: global, loopback,
link-local, multicast and the host's own addresses. Where a role's verdict depends on a
prefix (-s 198.51.100.0/24) or on a match twinwall cannot decide (limit, recent...), its verdict
is 'mixed' and the rules are named; where both families are mixed the region is listed as not
comparable. ICMPv6 without an IPv4 twin (neighbour discovery, MLD) is listed separately, not as
a gap.

With --before/--after: what a change between two snapshots of one host (from 'twinwall
collect') opened or closed, per family."""

EPILOG = """\
examples:
  sudo twinwall diff
  twinwall diff --iptables v4.rules --ip6tables v6.rules --hook output
  twinwall diff --snapshot host.json --format json
  twinwall diff --before monday.json --after tuesday.json

exit codes: 0 no differences, 1 differences, 2 error"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hook", choices=("input", "forward", "output", "all"), default="all", help="which hook to compare (default: all)")
    add_format_arguments(p, DIFF)
    p.add_argument("--verbose", action="store_true",
                   help="JSON: the twinwall.diff/1 form, every rule of a region cited in full in it (not "
                        "once in a shared table, a run of consecutive rules not as one entry)")
    g = p.add_argument_group("change between two snapshots of one host")
    g.add_argument("--before", metavar="OLD.json", help="snapshot before the change ('twinwall collect')")
    g.add_argument("--after", metavar="NEW.json", help="snapshot after the change")
    add_input_arguments(p)


def _hooks(args) -> tuple:
    from twinwall.analysis.diff.compare import HOOKS

    return HOOKS if args.hook == "all" else (args.hook,)


def run(args: argparse.Namespace) -> int:
    if args.before or args.after:
        return _run_change(args)

    from twinwall.gc_pause import gc_paused

    # the imports create thousands of functions and classes and no garbage, and the document
    # is millions of small dicts, lists and strings built over the walk's results (also no
    # cycles): with the collector on, its full passes over everything the walk left alive
    # cost the document a tenth of the run on many small chains
    with gc_paused():
        from twinwall.analysis.diff.compare import diff_snapshot
        from twinwall.report.diff_text import render_diff

        snapshot = snapshot_from_args(args)
        meanwhile: Optional[Callable[[], object]] = None
        if args.format != "table":
            from twinwall.report.json_out import load_encoders

            meanwhile = load_encoders  # (imported while the forked family's walk is still at work, not after)
        result = diff_snapshot(snapshot, _hooks(args), keep_text=False, meanwhile=meanwhile)
        if snapshot.ipv6.enabled is False:
            result.notes.append("IPv6 is disabled on this host: the IPv6 rules are compared but carry no traffic")
        _emit(args, lambda: result.to_json(verbose=args.verbose), lambda: render_diff(result))
    return 1 if result.differences else 0


def _emit(args, document, table) -> None:
    """The table or the JSON document, to standard output or --output."""
    if args.format == "table":
        emit(table(), args.output)
    else:
        emit_json(document(), args.output)


def _run_change(args: argparse.Namespace) -> int:
    from twinwall.analysis.diff.change import compare_snapshots
    from twinwall.report.diff_text import render_change
    from twinwall.sources.snapshot import read_snapshot

    if not (args.before and args.after):
        raise InputError("--before and --after go together: give both snapshots")
    if args.snapshot or any(path for _, path in dump_options(args)) or args.address:
        raise InputError("--before/--after cannot be combined with --snapshot/--iptables/--ip6tables/--nft/--sockets")
    before = read_snapshot(args.before)
    after = read_snapshot(args.after)
    result = compare_snapshots(before, after, _hooks(args))
    _emit(args, result.to_json, lambda: render_change(result, args.before, args.after))
    return 1 if result.has_changes() else 0
