"""twinwall confirm"""

from __future__ import annotations

import argparse

from twinwall.commands.transaction import add_state_dir, print_transaction

DESCRIPTION = """\
Keep the pending transaction: stop its rollback, then write the confirmed rules where the
host loads them at boot (/etc/iptables/rules.v4 and rules.v6, /etc/sysconfig/iptables and
ip6tables, /etc/nftables.conf; the old file kept as FILE.bak). Run it from a NEW connection:
that proves the new rules still let you in."""

EPILOG = """\
persistence paths are under $TWINWALL_ROOT (default /).

exit codes: 0 confirmed, 2 error (no pending transaction, persisting failed)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", nargs="?", metavar="ID", help="the transaction (default: the pending one)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    add_state_dir(p)


def run(args: argparse.Namespace) -> int:
    from twinwall.apply.transaction import confirm

    print_transaction(confirm(args.id, state_dir=args.state_dir), args.format)
    return 0
