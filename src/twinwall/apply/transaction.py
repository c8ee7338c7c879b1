"""One firewall change as a transaction that knows how to undo itself.

``apply(candidate)`` validates the candidate, refuses it if it would cut the admin's own
connections (``lockout``), saves the current rules and arms a rollback *before* anything changes
(a transient systemd timer when systemd is PID 1 and can reach the network namespace, else a
detached watchdog in its own session that ignores SIGHUP), loads the candidate atomically (one
restore per family, both or none; one ``nft -f``), and returns the transaction *pending*.
``confirm`` stops the rollback and only then persists (``persist``); ``rollback`` reverts at
once; an unconfirmed transaction reverts itself at its deadline, whatever happened to the
process or the terminal that started it.

State lives in ``state_dir`` (``$TWINWALL_STATE_DIR`` or /var/lib/twinwall): ``last`` names the
newest transaction, ``tx/<id>/`` holds its ``transaction.json``, the candidate and the backups.
One transaction may be pending at a time; every state change happens under ``lock`` (flock).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from twinwall.apply.candidate import Candidate
from twinwall.errors import InputError, TwinwallError

PENDING, CONFIRMED, ROLLED_BACK, FAILED = "pending", "confirmed", "rolled-back", "failed"
STATES = (PENDING, CONFIRMED, ROLLED_BACK, FAILED)
DEFAULT_STATE_DIR = "/var/lib/twinwall"


class LockoutRefused(InputError):
    """The candidate would cut one of the admin's connections (the message names it)."""


class TransactionError(TwinwallError):
    """The transaction could not be carried out (a restore failed, a pending one exists)."""


@dataclass
class Transaction:
    id: str
    state: str
    created: float  # unix time
    deadline: Optional[float]  # unix time the rollback fires at; None when nothing was armed
    families: List[str]
    summary: str
    backend: str = "iptables"
    backups: Dict[str, str] = field(default_factory=dict)  # "ipv4"/"ipv6"/"nft" -> path
    rollback_by: str = ""  # "systemd:<unit>" or "watchdog:<pid>" or ""
    changed: bool = True  # False: the candidate was already loaded (nothing done, nothing armed)
    persisted: List[str] = field(default_factory=list)  # files written on confirm
    message: str = ""  # why it failed / was rolled back

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Transaction":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def default_state_dir(state_dir: Optional[str] = None) -> str:
    return state_dir or os.environ.get("TWINWALL_STATE_DIR") or DEFAULT_STATE_DIR


def default_root(root: Optional[str] = None) -> str:
    return root or os.environ.get("TWINWALL_ROOT") or "/"


def apply(candidate: Candidate, *, confirm_timeout: float = 60.0, allow_lockout: bool = False,
          state_dir: Optional[str] = None, root: Optional[str] = None,
          persist: bool = True) -> Transaction:
    """Validate, guard, arm the rollback, load; returns the transaction pending (or, when the
    candidate is already what is loaded, ``changed=False`` and confirmed at once)."""
    raise NotImplementedError("twinwall.apply.transaction.apply: in progress on h/apply")


def confirm(txid: Optional[str] = None, *, state_dir: Optional[str] = None,
            root: Optional[str] = None) -> Transaction:
    """Mark the pending transaction confirmed, stop its rollback, then persist."""
    raise NotImplementedError("twinwall.apply.transaction.confirm: in progress on h/apply")


def rollback(txid: Optional[str] = None, *, state_dir: Optional[str] = None) -> Transaction:
    """Revert the pending transaction now."""
    raise NotImplementedError("twinwall.apply.transaction.rollback: in progress on h/apply")


def status(*, state_dir: Optional[str] = None) -> Optional[Transaction]:
    """The pending or last transaction (None when there has been none)."""
    raise NotImplementedError("twinwall.apply.transaction.status: in progress on h/apply")
