"""`twinwall collect`: gather this host's facts into a snapshot file."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Gather this host's listening sockets (with their v6only flag and process), addresses, IPv6
state and iptables/ip6tables rulesets into a snapshot JSON file (format: docs/snapshot.md).
Audit it later, on any machine, with 'twinwall audit --snapshot FILE'.
Run as root: without it, process names and the rulesets cannot be read; the snapshot is still
written, says so in its "missing" list, and collect exits 2.

exit codes: 0 collected, 2 error (including: not run as root, the snapshot is incomplete)"""

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
    refused = needs_root(snap)
    if refused:
        # the snapshot is written (what was readable is worth keeping) but is not the host's
        # whole story: a script must not take it for one
        where = f" -o {args.output}" if args.output != "-" else ""
        print(f"twinwall: incomplete snapshot, not run as root ({refused}): run sudo twinwall collect{where}",
              file=sys.stderr)
        return 2
    return 0


def needs_root(snap) -> str:
    """What the snapshot lacks for want of root, in a few words ("" when nothing)."""
    refused = [m.split(":", 1)[0] for m in snap.missing if "Permission denied" in m or "without root" in m]
    return ", ".join(refused) + " not readable" if refused else ""
