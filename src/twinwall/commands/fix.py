"""twinwall fix"""

from __future__ import annotations

import argparse
import sys

from twinwall.commands.inputs import add_input_arguments, snapshot_from_args, unreadable_rulesets
from twinwall.errors import InputError

DESCRIPTION = """\
A remediation plan for the audit's findings, written for whoever owns the rules (plain
iptables-nft/legacy: the ip(6)tables-restore text with the new rules inserted where they decide;
native nftables: rules in a table of twinwall's own, 'table inet twinwall'; ufw: ufw commands;
firewalld: rich rules with family=), and its proof: the candidate ruleset audited and diffed by
twinwall before anything is touched - the targeted findings gone, nothing opened that was
closed. A change whose proof fails is refused, with the reason. Nothing changes on the host
unless --apply is given.

Strategies (default: each finding's own remedy):
  mirror      family gaps: the wider family gets the twin of the narrower one's restriction;
              addresses translated by role (any, loopback, link-local, multicast) and --map;
              a prefix with no twin is refused, never guessed or dropped
  accept-new  services reachable only through an ACCEPT policy get an explicit accept (CIS)
  close       family gaps: drop the port in the wider family
  block-ipv6  ip6tables INPUT/FORWARD/OUTPUT policy DROP, loopback accepted, drops logged
  baseline    loopback, spoofed loopback, ICMPv6 (RFC 4890) before any conntrack rule,
              established, log before drop (never loopback), default deny
  egress      OUTPUT/FORWARD rules of one family twinned into the other (tcp/25 story)"""

EPILOG = """\
examples:
  sudo twinwall fix
  twinwall fix --iptables v4.rules --ip6tables v6.rules --sockets ss.txt --format script
  twinwall fix --snapshot host.json --finding TW-FAMILY-GAP --map 192.0.2.0/24=2001:db8:1::/64
  sudo twinwall fix --strategy block-ipv6 --apply --confirm-timeout 120
  sudo twinwall confirm

exit codes: 0 nothing to fix, 1 a plan (or refusals), 2 error"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    from twinwall.fix.strategies import NAMES

    g = p.add_argument_group("plan")
    g.add_argument("--finding", metavar="ID[:FAMILY]", action="append", default=[],
                   help="fix only these findings (repeat; e.g. TW-FAMILY-GAP or TW-NO-RULE:ipv6)")
    g.add_argument("--strategy", choices=NAMES, help="use this strategy for every finding it addresses")
    g.add_argument("--map", metavar="V4=V6", action="append", default=[],
                   help="an IPv4 prefix and its IPv6 twin, e.g. 192.0.2.0/24=2001:db8:1::/64 (repeat)")
    g.add_argument("--format", choices=("table", "json", "script"), default="table",
                   help="table (default), json (twinwall.fix/1) or a reviewable shell script")
    g.add_argument("--output", "-o", metavar="FILE", help="write the plan to FILE (atomically)")
    a = p.add_argument_group("apply (changes the host)")
    a.add_argument("--apply", action="store_true",
                   help="load the proved plan as one transaction: validated, guarded against locking "
                   "out the admin's connection, rolled back unless 'twinwall confirm' follows")
    a.add_argument("--confirm-timeout", metavar="SECONDS", type=float, default=60.0,
                   help="with --apply: roll back after this long without 'twinwall confirm' (default 60)")
    a.add_argument("--allow-lockout", action="store_true",
                   help="with --apply: load even when the lockout guard says the admin's connection would be cut")


def run(args: argparse.Namespace) -> int:
    from twinwall.fix.planner import make_plan
    from twinwall.fix.render import render_script, render_table
    from twinwall.report.output import emit, emit_json

    if args.confirm_timeout <= 0:
        raise InputError("--confirm-timeout must be positive")
    snapshot = snapshot_from_args(args)
    unreadable = unreadable_rulesets(snapshot, args, "fix")
    if unreadable:
        raise InputError(unreadable)
    plan = make_plan(snapshot, findings=args.finding, strategy_name=args.strategy, maps=args.map)
    if args.format == "json":
        emit_json(plan.to_json(), args.output)
    elif args.format == "script":
        emit(render_script(plan), args.output)
    else:
        emit(render_table(plan), args.output)
    if args.apply:
        if plan.candidate is None:
            print("twinwall: nothing proved to apply", file=sys.stderr)
            return 1 if plan.refused else 0
        live = not (args.snapshot or args.iptables or args.ip6tables or args.nft or args.iptables_legacy
                    or args.ip6tables_legacy)
        if not live:
            raise InputError("--apply changes the live host: it cannot be combined with --snapshot or saved dumps")
        from twinwall.apply.transaction import apply  # (helper apply's module: loaded only here)

        tx = apply(plan.candidate, confirm_timeout=args.confirm_timeout, allow_lockout=args.allow_lockout)
        txid = getattr(tx, "id", None) or getattr(tx, "txid", "")
        print(f"twinwall: applied as transaction {txid}: run 'twinwall confirm' within "
              f"{args.confirm_timeout:g}s (from a new connection) or it is rolled back", file=sys.stderr)
    return 1 if (plan.changes or plan.refused) else 0
