"""twinwall rollback"""

from __future__ import annotations

import argparse

from twinwall.commands.transaction import add_state_dir, print_transaction

DESCRIPTION = """\
Revert the pending transaction now: the rules saved before it was applied are loaded back
(every family and table it changed). Without it, an unconfirmed transaction reverts itself
at its deadline."""

EPILOG = """\
exit codes: 0 rolled back, 2 error (no pending transaction, the restore failed)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", nargs="?", metavar="ID", help="the transaction (default: the pending one)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    add_state_dir(p)


def run(args: argparse.Namespace) -> int:
    from twinwall.apply.transaction import rollback

    print_transaction(rollback(args.id, state_dir=args.state_dir), args.format)
    return 0
