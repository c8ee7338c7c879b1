"""twinwall transaction (and what confirm and rollback print)"""

from __future__ import annotations

import argparse
import json
import time

DESCRIPTION = """\
Show the pending transaction, or the last one: its id, state (pending, confirmed,
rolled-back, failed), when its rollback fires, the families it changed, the backups it keeps
and what happened last. A transaction is made by 'twinwall fix --apply' or 'twinwall policy
apply'; 'twinwall confirm' keeps it, 'twinwall rollback' reverts it."""

EPILOG = """\
state lives in $TWINWALL_STATE_DIR (default /var/lib/twinwall).

exit codes: 0 shown (or none yet), 1 a transaction is pending, 2 error"""


def add_state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", metavar="DIR", help="transaction state (default: $TWINWALL_STATE_DIR or /var/lib/twinwall)")


def add_arguments(p: argparse.ArgumentParser, with_id: bool = False) -> None:
    if with_id:  # (confirm, rollback)
        p.add_argument("id", nargs="?", metavar="ID", help="the transaction (default: the pending one)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    add_state_dir(p)


def describe(tx) -> str:
    def when(t):
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "-"

    lines = [f"transaction {tx.id}: {tx.state}"]
    if tx.summary:
        lines.append(f"  summary:   {tx.summary}")
    lines.append(f"  backend:   {tx.backend} ({', '.join(tx.families)})")
    lines.append(f"  created:   {when(tx.created)}")
    if tx.state == "pending" and tx.deadline:
        left = max(0.0, tx.deadline - time.time())
        lines.append(f"  rollback:  at {when(tx.deadline)} (in {left:.0f} s) by {tx.rollback_by or '?'}")
    for name, path in sorted(tx.backups.items()):
        lines.append(f"  backup:    {name} {path}")
    for c in tx.connections:
        lines.append(f"  kept:      {c}")
    for path in tx.persisted:
        lines.append(f"  persisted: {path}")
    if tx.message:
        lines.append(f"  {tx.message}")
    return "\n".join(lines)


def print_transaction(tx, fmt: str = "table") -> None:
    if fmt == "json":
        print(json.dumps({"schema": "twinwall.transaction/1", "transaction": tx.to_dict() if tx else None}, indent=2))
    else:
        print(describe(tx) if tx else "no transaction yet")


def run(args: argparse.Namespace) -> int:
    from twinwall.apply.transaction import PENDING, status

    tx = status(state_dir=args.state_dir)
    print_transaction(tx, args.format)
    return 1 if tx is not None and tx.state == PENDING else 0
