"""twinwall confirm"""

from __future__ import annotations

import argparse

from twinwall.commands.transaction import add_arguments as transaction_arguments
from twinwall.commands.transaction import print_transaction

DESCRIPTION = """\
Keep the pending transaction: stop its rollback, then write the confirmed rules where the
host loads them at boot (/etc/iptables/rules.v4 and rules.v6, /etc/sysconfig/iptables and
ip6tables, /etc/nftables.conf; the old file kept as FILE.bak). Run it from a NEW connection:
that proves the new rules still let you in."""

EPILOG = """\
persistence paths are under $TWINWALL_ROOT (default /).

exit codes: 0 confirmed, 2 error (no pending transaction, persisting failed)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    transaction_arguments(p, with_id=True)


def run(args: argparse.Namespace) -> int:
    from twinwall.apply.transaction import confirm

    print_transaction(confirm(args.id, state_dir=args.state_dir), args.format)
    return 0
