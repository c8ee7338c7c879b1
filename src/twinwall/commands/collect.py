"""`twinwall collect`: gather this host's facts into a snapshot file."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Gather this host's listening sockets (with their v6only flag and process), addresses, IPv6
state and iptables/ip6tables rulesets into a snapshot JSON file (format: docs/snapshot.md).
Audit it later, on any machine, with 'twinwall audit --snapshot FILE'.
Run as root: without it, process names and the rulesets cannot be read, and the snapshot says
so in its "missing" list."""

NO_RULES_NOTE = "rulesets: not collected (twinwall collect --no-rules)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", metavar="FILE", default="-",
        help="write the snapshot to FILE (default: - for stdout)",
    )
    p.add_argument(
        "--no-rules", action="store_true",
        help="do not read the firewall rulesets (sockets, addresses and IPv6 state only)",
    )


def summary(snap) -> str:
    """One line: what was collected and what is missing."""
    rulesets = ", ".join(f"{r.source} ({r.family}, {r.backend})" for r in snap.rulesets) or "none"
    sockets = f"{len(snap.sockets)} sockets" if snap.sockets_known else "no sockets (unknown)"
    addresses = f"{len(snap.addresses)} addresses" if snap.addresses_known else "no addresses (unknown)"
    missing = "; ".join(snap.missing) if snap.missing else "nothing"
    return f"collected {sockets}, {addresses}, rulesets: {rulesets}; missing: {missing}"


def run(args: argparse.Namespace) -> int:
    from twinwall.sources.host import collect_host
    from twinwall.sources.snapshot import write_snapshot

    snap = collect_host(include_rules=not args.no_rules)
    if args.no_rules:
        snap.missing.append(NO_RULES_NOTE)
    write_snapshot(snap, args.output)
    if args.output != "-":
        print(f"twinwall: {summary(snap)}", file=sys.stderr)
    return 0
