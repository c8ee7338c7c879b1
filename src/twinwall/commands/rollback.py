"""twinwall rollback"""

from __future__ import annotations

import argparse

from twinwall.commands.transaction import add_arguments as transaction_arguments
from twinwall.commands.transaction import print_transaction

DESCRIPTION = """\
Revert the pending transaction now: the rules saved before it was applied are loaded back
(every family and table it changed). Without it, an unconfirmed transaction reverts itself
at its deadline."""

EPILOG = """\
exit codes: 0 rolled back, 2 error (no pending transaction, the restore failed)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    transaction_arguments(p, with_id=True)


def run(args: argparse.Namespace) -> int:
    from twinwall.apply.transaction import rollback

    print_transaction(rollback(args.id, state_dir=args.state_dir), args.format)
    return 0
